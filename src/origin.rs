//! The Origin allow-list: which web pages may open a WebSocket to this server. A browser sends
//! the page's origin with every WebSocket handshake and lets any site connect with the user's
//! cookies, so without a check any page on the web can act as a logged-in user (cross-site
//! WebSocket hijacking). Clients that are not browsers send no Origin (or any they like): the
//! check is for browsers, and a request without the header passes.

/// Logs, once per server, that a browser handshake carried cookies while any Origin is allowed:
/// the case the allow-list exists for, worth one line rather than one per connection.
pub fn warn_cookies_without_policy(
    warned: &std::sync::atomic::AtomicBool,
    peer: &std::net::SocketAddr,
) {
    if !warned.swap(true, std::sync::atomic::Ordering::Relaxed) {
        log::warn!(
            "{peer}: a WebSocket handshake carried cookies and allowed_origins is None: any web \
             page can open a socket with its visitors' cookies (cross-site WebSocket hijacking); \
             set allowed_origins to the pages that may connect (logged once)"
        )
    }
}

/// One allowed origin. `scheme: None` allows any scheme; `subdomains` allows any host ending
/// in `.host` (not `host` itself).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Pattern {
    scheme: Option<String>,
    host: String,
    port: Option<u16>,
    subdomains: bool,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct OriginPolicy {
    patterns: Vec<Pattern>,
    /// `"null"` listed: sandboxed frames and `file://` pages, allowed only on request.
    null: bool,
}

/// (scheme, host, port) of an origin, lowercased, with the scheme's default port made explicit.
fn split(origin: &str) -> Option<(Option<String>, String, Option<u16>)> {
    let origin = origin.trim().to_ascii_lowercase();
    let (scheme, rest) = match origin.split_once("://") {
        Some((s, r)) => (Some(s.to_owned()), r.to_owned()),
        None => (None, origin),
    };
    if rest.is_empty() || rest.contains('/') || rest.contains('@') {
        return None;
    }
    let (host, port) = match rest.rsplit_once(':') {
        // An IPv6 literal keeps its colons inside the brackets.
        Some((h, p)) if !p.contains(']') => (h.to_owned(), Some(p.parse::<u16>().ok()?)),
        _ => (rest, None),
    };
    let port = port.or(match scheme.as_deref() {
        Some("http") | Some("ws") => Some(80),
        Some("https") | Some("wss") => Some(443),
        _ => None,
    });
    Some((scheme, host, port))
}

impl OriginPolicy {
    /// Parses the patterns: `https://chat.example.com`, `http://localhost:8000`,
    /// `example.com` (any scheme), `*.example.com` or `https://*.example.com` (subdomains).
    pub fn parse(patterns: &[String]) -> Result<Self, String> {
        let mut policy = Self::default();
        for raw in patterns {
            if raw.trim().eq_ignore_ascii_case("null") {
                policy.null = true;
                continue;
            }
            let bad = || {
                format!("allowed_origins: {raw:?} is not an origin; write it as https://example.com, example.com or *.example.com")
            };
            let (scheme, host, port) = split(raw).ok_or_else(bad)?;
            let (host, subdomains) = match host.strip_prefix("*.") {
                Some(h) => (h.to_owned(), true),
                None => (host, false),
            };
            if host.is_empty() || host.contains('*') {
                return Err(bad());
            }
            policy.patterns.push(Pattern {
                port,
                scheme,
                host,
                subdomains,
            });
        }
        Ok(policy)
    }

    pub fn allows(&self, origin: &str) -> bool {
        if origin.trim().eq_ignore_ascii_case("null") {
            return self.null;
        }
        let Some((Some(scheme), host, port)) = split(origin) else {
            return false;
        };
        self.patterns.iter().any(|p| {
            let host_ok = if p.subdomains {
                host.len() > p.host.len() + 1
                    && host.ends_with(&p.host)
                    && host.as_bytes()[host.len() - p.host.len() - 1] == b'.'
            } else {
                host == p.host
            };
            let scheme_ok = p.scheme.as_deref().is_none_or(|s| s == scheme);
            let port_ok = p.port.is_none() || p.port == port;
            host_ok && scheme_ok && port_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(patterns: &[&str]) -> OriginPolicy {
        OriginPolicy::parse(&patterns.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn exact_origins_match_scheme_host_and_port() {
        let p = policy(&["https://chat.example.com", "http://localhost:8000"]);
        assert!(p.allows("https://chat.example.com"));
        assert!(p.allows("HTTPS://Chat.Example.com:443"));
        assert!(!p.allows("http://chat.example.com"));
        assert!(!p.allows("https://chat.example.com:8443"));
        assert!(!p.allows("https://evil-chat.example.com"));
        assert!(!p.allows("https://chat.example.com.evil.net"));
        assert!(p.allows("http://localhost:8000"));
        assert!(!p.allows("http://localhost"));
    }

    #[test]
    fn wildcards_match_subdomains_only() {
        let p = policy(&["*.example.com"]);
        assert!(p.allows("https://a.example.com"));
        assert!(p.allows("http://a.b.example.com:8080"));
        assert!(!p.allows("https://example.com"));
        assert!(!p.allows("https://badexample.com"));
        let p = policy(&["https://*.example.com"]);
        assert!(!p.allows("http://a.example.com"));
    }

    #[test]
    fn null_and_garbage_are_refused_unless_listed() {
        let p = policy(&["example.com"]);
        assert!(p.allows("http://example.com"));
        assert!(!p.allows("null"));
        assert!(!p.allows("not an origin"));
        assert!(!p.allows("https://example.com/path"));
        assert!(policy(&["null"]).allows("null"));
    }

    #[test]
    fn bad_patterns_are_errors_that_say_how_to_write_them() {
        for bad in [
            "https://",
            "*.",
            "https://example.com/x",
            "a*b.com",
            "example.com:99999",
        ] {
            let err = OriginPolicy::parse(&[bad.to_string()]).unwrap_err();
            assert!(err.contains("https://example.com"), "{bad}: {err}");
        }
    }
}
