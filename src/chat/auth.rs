//! JWT auth for the chat preset: HS256 tokens signed with the `jwt_secret` setting, `exp`
//! honoured when present (no leeway), checked through the maintained `jsonwebtoken` crate.

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

pub struct Auth {
    key: DecodingKey,
    validation: Validation,
}

#[derive(Deserialize)]
struct Claims {
    // Any JSON number: some issuers write `exp` as a float.
    exp: Option<f64>,
}

/// A token that passed: when it stops being valid, as Unix seconds (`None`: never).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Grant {
    pub exp: Option<f64>,
}

impl Grant {
    pub fn expired(&self) -> bool {
        self.exp.is_some_and(|exp| exp <= unix_now())
    }

    /// Seconds left, for the timer that takes an expired connection out of its room.
    pub fn remaining(&self) -> Option<f64> {
        self.exp.map(|exp| (exp - unix_now()).max(0.0))
    }
}

pub fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl Auth {
    pub fn new(secret: &str) -> Self {
        if secret.len() < 32 {
            log::warn!(
                "jwt_secret is {} bytes; HS256 wants at least 32 (RFC 7518 section 3.2): use a long random secret",
                secret.len()
            );
        }
        let mut validation = Validation::new(Algorithm::HS256);
        // The seed's tokens carry no `exp`: accept those, but honour `exp` whenever present.
        validation.required_spec_claims.clear();
        validation.validate_exp = true;
        validation.leeway = 0;
        // Audience is the application's business; the preset does not configure one.
        validation.validate_aud = false;
        Self {
            key: DecodingKey::from_secret(secret.as_bytes()),
            validation,
        }
    }

    /// Checks a token's signature, algorithm and `exp`; the error says which failed.
    pub fn verify(&self, token: &str) -> Result<Grant, String> {
        let data = decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| format!("token refused: {e}"))?;
        let grant = Grant {
            exp: data.claims.exp,
        };
        // jsonwebtoken compares whole seconds; a fractional `exp` just passed is expired too.
        if grant.expired() {
            return Err("token refused: ExpiredSignature".into());
        }
        Ok(grant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    fn token(secret: &str, claims: serde_json::Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn valid_tokens_pass_with_their_expiry() {
        let auth = Auth::new("s3cret");
        // A fraction JSON carries exactly: serde_json's default float parsing may be off by
        // one ulp for arbitrary ones (the flake this test had).
        let exp = (unix_now() + 60.0).floor() + 0.5;
        let grant = auth
            .verify(&token("s3cret", json!({"sub": "1", "exp": exp})))
            .unwrap();
        assert_eq!(grant.exp, Some(exp));
        assert!(!grant.expired());
        // The seed's example token shape: no exp at all.
        let grant = auth
            .verify(&token("s3cret", json!({"sub": "1", "iat": 1516239022})))
            .unwrap();
        assert_eq!(grant.exp, None);
    }

    #[test]
    fn expired_forged_and_garbage_tokens_fail() {
        let auth = Auth::new("s3cret");
        let past = unix_now() - 1.0;
        assert!(auth
            .verify(&token("s3cret", json!({"exp": past})))
            .unwrap_err()
            .contains("Expired"));
        assert!(auth.verify(&token("other", json!({"sub": "1"}))).is_err());
        assert!(auth.verify("not.a.token").is_err());
        assert!(auth.verify("").is_err());
    }
}
