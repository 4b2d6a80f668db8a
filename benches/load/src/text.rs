//! Byte scans over message bodies: find a needle, read a decimal number, read the id at the
//! front of Herald's envelope, and build the padded JSON bodies the tools publish.
//!
//! Pure functions. `herald-load` uses them to find `seq`/`t` in whatever a server wraps a
//! message in; `herald-soak` to read envelope ids and publish answers.

/// First position of `needle` in `hay` (None for an empty needle).
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..=hay.len() - needle.len()].iter().position(|&b| b == first) {
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
            None => return None,
        }
    }
    None
}

/// The decimal number starting at `buf[at]` and the position after it; None if no digit
/// is there or it overflows a `u64`.
pub fn number_at(buf: &[u8], at: usize) -> Option<(u64, usize)> {
    let mut i = at;
    let mut v: u64 = 0;
    while i < buf.len() && buf[i].is_ascii_digit() {
        v = v.checked_mul(10)?.checked_add((buf[i] - b'0') as u64)?;
        i += 1;
    }
    (i > at).then_some((v, i))
}

/// The number right after `key` at the start of `s` (`{"id":12,...` with key `{"id":`).
pub fn leading_id(s: &[u8], key: &[u8]) -> Option<u64> {
    let rest = s.strip_prefix(key)?;
    number_at(rest, 0).map(|(v, _)| v)
}

/// A JSON body `{fields"p":"xxx…"}` padded with `x` to `size` bytes (never shorter than the
/// fields need). `fields` is the text after `{`, e.g. `"seq":1,`.
pub fn padded_body(fields: &str, size: usize) -> Vec<u8> {
    let mut m = format!("{{{fields}\"p\":\"");
    let pad = size.saturating_sub(m.len() + 2);
    m.extend(std::iter::repeat_n('x', pad));
    m.push_str("\"}");
    m.into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds() {
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"aaab", b"aab"), Some(1));
        assert_eq!(find(b"ab", b"abc"), None);
        assert_eq!(find(b"abc", b""), None);
        assert_eq!(find(b"event\n\nrest", b"\n\n"), Some(5));
    }

    #[test]
    fn numbers() {
        assert_eq!(number_at(b"x123,", 1), Some((123, 4)));
        assert_eq!(number_at(b"x,", 1), None);
        assert_eq!(number_at(b"99999999999999999999", 0), None);
        assert_eq!(leading_id(br#"{"id":42,"channel":"c"}"#, b"{\"id\":"), Some(42));
        assert_eq!(leading_id(br#"{"missed":true}"#, b"{\"id\":"), None);
    }

    #[test]
    fn bodies() {
        let b = padded_body("\"seq\":7,", 100);
        assert_eq!(b.len(), 100);
        assert!(b.starts_with(br#"{"seq":7,"p":"xx"#) && b.ends_with(b"x\"}"));
        assert_eq!(padded_body("\"seq\":7,", 0), br#"{"seq":7,"p":""}"#);
    }
}
