//! A handshake's headers as an open connection keeps them, for the application to read
//! (`Request.headers`) for as long as the connection lasts.
//!
//! One string and one index, rather than a `String` per name and per value: a browser's
//! dozen headers would otherwise be two dozen allocations held by every idle connection.

/// Names and values back to back in one string; `ends` has where each one ends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Headers {
    text: Box<str>,
    ends: Box<[u32]>,
}

impl Headers {
    pub fn new<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Self {
        let mut text = String::new();
        let mut ends = Vec::new();
        for (name, value) in pairs {
            for part in [name, value] {
                text.push_str(part);
                // The request head is at most `max_header_bytes`, far below u32::MAX.
                ends.push(u32::try_from(text.len()).expect("a request head fits in u32"));
            }
        }
        Headers {
            text: text.into_boxed_str(),
            ends: ends.into_boxed_slice(),
        }
    }

    /// (name, value) pairs in the order the client sent them; names are lower-case.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.ends.chunks_exact(2).scan(0usize, |start, pair| {
            let (name_end, value_end) = (pair[0] as usize, pair[1] as usize);
            let name = &self.text[*start..name_end];
            let value = &self.text[name_end..value_end];
            *start = value_end;
            Some((name, value))
        })
    }

    /// The first value of `name` (lower-case).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }

    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

impl From<&[(String, String)]> for Headers {
    fn from(pairs: &[(String, String)]) -> Self {
        Headers::new(pairs.iter().map(|(n, v)| (n.as_str(), v.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_come_back_in_order_with_empty_values_and_repeats() {
        let pairs = [
            ("host", "example.com"),
            ("x-empty", ""),
            ("cookie", "a=1"),
            ("cookie", "b=2"),
            ("user-agent", "é ü"),
        ];
        let h = Headers::new(pairs);
        assert_eq!(h.iter().collect::<Vec<_>>(), pairs);
        assert_eq!(h.len(), 5);
        assert_eq!(h.get("cookie"), Some("a=1"));
        assert_eq!(h.get("x-empty"), Some(""));
        assert_eq!(h.get("origin"), None);
        assert!(Headers::default().is_empty());
        assert_eq!(Headers::default().iter().count(), 0);
    }
}
