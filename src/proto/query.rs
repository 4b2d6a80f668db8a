//! Query-string helpers for HTTP request targets: percent-decoding and lookup of a
//! parameter by name.
//!
//! Owns: the `application/x-www-form-urlencoded` reading of a raw query string (the part of
//! the request-target after `?`, RFC 3986 §3.4), as browsers produce it: pairs split on `&`,
//! name and value split on the first `=`, `+` standing for a space, `%XX` for one byte.
//!
//! Called by: the route handlers, with the `query` field of a parsed
//! [`Head`](super::http::Head) (for example `cid` and `since` on `/listen/?cid=CH&since=ID`).
//! The same functions are re-exported from [`super::http`].
//!
//! Never: allocates when nothing needs decoding (the result borrows the input), panics on any
//! input, or yields a string that is not valid UTF-8. It never touches IO.

use std::borrow::Cow;

/// Decodes a query component: `+` becomes a space and `%XX` (two hex digits, either case)
/// becomes the byte `0xXX`.
///
/// A `%` that is not followed by two hex digits is kept literally (as the WHATWG URL
/// standard's form-urlencoded parser does), so `"%zz"` decodes to `"%zz"`.
///
/// Returns `None` when the decoded bytes are not valid UTF-8 (for example `"%FF"`).
/// Borrows the input when it holds neither `%` nor `+`.
///
/// `+` means a space only in query strings (form encoding); do not use this on paths.
pub fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    let bytes = s.as_bytes();
    let Some(first) = bytes.iter().position(|&b| b == b'%' || b == b'+') else {
        return Some(Cow::Borrowed(s));
    };
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..first]);
    let mut i = first;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => match (hex_val(bytes.get(i + 1)), hex_val(bytes.get(i + 2))) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                }
                _ => {
                    out.push(b'%');
                    i += 1;
                }
            },
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// Returns the decoded value of the first parameter called `name` in a raw query string
/// (without the leading `?`), e.g. `query_param("cid=news&since=4", "since") == Some("4")`.
///
/// Names are compared after decoding, case-sensitively. A parameter without `=` has the
/// empty value (`"a&b"` gives `b` = `""`). Empty pairs (`"a=1&&b=2"`) are skipped.
///
/// Returns `None` when no parameter has that name, and also when the first one that does
/// has a value that is not valid UTF-8 after decoding: the caller treats both as missing.
pub fn query_param<'a>(query: &'a str, name: &str) -> Option<Cow<'a, str>> {
    for pair in query.split('&') {
        if pair.is_empty() {
            continue;
        }
        let (key, value) = match pair.find('=') {
            Some(eq) => (&pair[..eq], &pair[eq + 1..]),
            None => (pair, ""),
        };
        let matches = if key.bytes().any(|b| b == b'%' || b == b'+') {
            percent_decode(key).is_some_and(|k| k == name)
        } else {
            key == name
        };
        if matches {
            return percent_decode(value);
        }
    }
    None
}

fn hex_val(b: Option<&u8>) -> Option<u8> {
    match *b? {
        c @ b'0'..=b'9' => Some(c - b'0'),
        c @ b'a'..=b'f' => Some(c - b'a' + 10),
        c @ b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Option<String> {
        percent_decode(s).map(Cow::into_owned)
    }

    #[test]
    fn decode_plain_borrows() {
        assert!(matches!(percent_decode("abc-_.~"), Some(Cow::Borrowed("abc-_.~"))));
        assert!(matches!(percent_decode(""), Some(Cow::Borrowed(""))));
    }

    #[test]
    fn decode_plus_and_percent() {
        assert_eq!(dec("a+b"), Some("a b".into()));
        assert_eq!(dec("a%20b%2Bc"), Some("a b+c".into()));
        assert_eq!(dec("%2f%2F"), Some("//".into()));
        assert_eq!(dec("%41%42%43"), Some("ABC".into()));
    }

    #[test]
    fn decode_invalid_escapes_kept_literally() {
        assert_eq!(dec("%zz"), Some("%zz".into()));
        assert_eq!(dec("%"), Some("%".into()));
        assert_eq!(dec("%4"), Some("%4".into()));
        assert_eq!(dec("100%"), Some("100%".into()));
        assert_eq!(dec("%%41"), Some("%A".into()));
        assert_eq!(dec("%4g"), Some("%4g".into()));
    }

    #[test]
    fn decode_utf8() {
        assert_eq!(dec("caf%C3%A9"), Some("café".into()));
        assert_eq!(dec("%E2%82%AC+5"), Some("€ 5".into()));
        // Raw UTF-8 passes through untouched.
        assert_eq!(dec("café+x"), Some("café x".into()));
    }

    #[test]
    fn decode_invalid_utf8_is_none() {
        assert_eq!(dec("%FF"), None);
        assert_eq!(dec("%C3"), None);
        assert_eq!(dec("a%C3%28"), None);
        assert_eq!(dec("%ED%A0%80"), None); // a UTF-16 surrogate
    }

    #[test]
    fn param_lookup() {
        let q = "cid=news&since=42&empty=&flag&cid=other";
        assert_eq!(query_param(q, "cid").as_deref(), Some("news"));
        assert_eq!(query_param(q, "since").as_deref(), Some("42"));
        assert_eq!(query_param(q, "empty").as_deref(), Some(""));
        assert_eq!(query_param(q, "flag").as_deref(), Some(""));
        assert_eq!(query_param(q, "missing"), None);
        assert_eq!(query_param(q, "CID"), None);
        assert_eq!(query_param("", "cid"), None);
        assert_eq!(query_param("&&", "cid"), None);
    }

    #[test]
    fn param_decoding() {
        assert_eq!(query_param("cid=a%2Fb+c", "cid").as_deref(), Some("a/b c"));
        assert_eq!(query_param("c%69d=x", "cid").as_deref(), Some("x"));
        assert_eq!(query_param("my+key=v", "my key").as_deref(), Some("v"));
        assert_eq!(query_param("a=1=2", "a").as_deref(), Some("1=2"));
        assert_eq!(query_param("cid=%zz", "cid").as_deref(), Some("%zz"));
        assert_eq!(query_param("cid=%FF&cid=ok", "cid"), None);
        assert_eq!(query_param("x=%FF&cid=ok", "cid").as_deref(), Some("ok"));
        assert!(matches!(query_param("cid=plain", "cid"), Some(Cow::Borrowed("plain"))));
    }
}
