//! A small JSON writer: the one place where text becomes a JSON string.
//!
//! Owns: [`Writer`], which appends values to a `BytesMut`, escapes every string per RFC
//! 8259 (quote, backslash, control characters; everything else, non-ASCII included, passes
//! through as UTF-8, as `serde_json` writes it), and puts the commas between members and
//! elements itself. Already-encoded JSON (payloads, ClientInfo) goes in with
//! [`Writer::raw`]. Pure: no IO, no allocation beyond the buffer.

use bytes::{BufMut, Bytes, BytesMut};

/// Appends JSON to a buffer. Containers are opened with [`Writer::obj`] / [`Writer::arr`]
/// and closed with [`Writer::end`]; inside an object, each member is [`Writer::key`]
/// followed by one value. The writer does not check nesting: a misuse gives invalid JSON,
/// which the unit tests of each encoder catch.
#[derive(Debug, Default)]
pub struct Writer {
    buf: BytesMut,
    /// A value was just completed in the current container: the next one needs a comma.
    comma: bool,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::with_capacity(64)
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Writer {
        Writer { buf: BytesMut::with_capacity(n), comma: false }
    }

    /// Continue writing after what `buf` holds (as a fresh value position).
    pub fn from_buf(buf: BytesMut) -> Writer {
        Writer { buf, comma: false }
    }

    fn sep(&mut self) {
        if self.comma {
            self.buf.put_u8(b',');
        }
    }

    fn value(&mut self, bytes: &[u8]) -> &mut Self {
        self.sep();
        self.buf.put_slice(bytes);
        self.comma = true;
        self
    }

    /// Open an object `{`.
    pub fn obj(&mut self) -> &mut Self {
        self.sep();
        self.buf.put_u8(b'{');
        self.comma = false;
        self
    }

    /// Open an array `[`.
    pub fn arr(&mut self) -> &mut Self {
        self.sep();
        self.buf.put_u8(b'[');
        self.comma = false;
        self
    }

    /// Close the innermost object.
    pub fn end(&mut self) -> &mut Self {
        self.buf.put_u8(b'}');
        self.comma = true;
        self
    }

    /// Close the innermost array.
    pub fn end_arr(&mut self) -> &mut Self {
        self.buf.put_u8(b']');
        self.comma = true;
        self
    }

    /// A member name (escaped); the next call writes its value.
    pub fn key(&mut self, k: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.buf, k);
        self.buf.put_u8(b':');
        self.comma = false;
        self
    }

    /// A string value, escaped.
    pub fn string(&mut self, s: &str) -> &mut Self {
        self.sep();
        escape_into(&mut self.buf, s);
        self.comma = true;
        self
    }

    /// Already-valid JSON, copied as it is.
    pub fn raw(&mut self, json: &[u8]) -> &mut Self {
        self.value(json)
    }

    /// An unsigned integer.
    pub fn u64(&mut self, n: u64) -> &mut Self {
        let mut b = itoa_buf();
        let s = fmt_u64(&mut b, n);
        self.value(s)
    }

    /// A signed integer.
    pub fn i64(&mut self, n: i64) -> &mut Self {
        if n < 0 {
            self.sep();
            self.buf.put_u8(b'-');
            self.comma = false;
            return self.u64(n.unsigned_abs());
        }
        self.u64(n as u64)
    }

    /// `true` or `false`.
    pub fn bool(&mut self, b: bool) -> &mut Self {
        self.value(if b { b"true" } else { b"false" })
    }

    /// `null`.
    pub fn null(&mut self) -> &mut Self {
        self.value(b"null")
    }

    /// What has been written so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.buf
    }

    /// The buffer, to freeze or to keep appending to.
    pub fn into_buf(self) -> BytesMut {
        self.buf
    }

    /// The finished text.
    pub fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

fn fmt_u64(b: &mut [u8; 20], mut n: u64) -> &[u8] {
    let mut i = b.len();
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return &b[i..];
        }
    }
}

/// Append `s` as a JSON string literal (with its quotes): `"` and `\` are escaped with a
/// backslash, control characters U+0000..U+001F as `\b \t \n \f \r` or `\u00XX`; all else
/// is copied (the same output as `serde_json::to_string`).
pub fn escape_into(out: &mut BytesMut, s: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes = s.as_bytes();
    out.reserve(bytes.len() + 2);
    out.put_u8(b'"');
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let short = match b {
            b'"' => b'"',
            b'\\' => b'\\',
            b'\n' => b'n',
            b'\r' => b'r',
            b'\t' => b't',
            0x08 => b'b',
            0x0c => b'f',
            0..=0x1f => 0,
            _ => continue,
        };
        out.put_slice(&bytes[start..i]);
        start = i + 1;
        if short != 0 {
            out.put_slice(&[b'\\', short]);
        } else {
            out.put_slice(&[b'\\', b'u', b'0', b'0', HEX[(b >> 4) as usize], HEX[(b & 15) as usize]]);
        }
    }
    out.put_slice(&bytes[start..]);
    out.put_u8(b'"');
}

/// `s` as a JSON string literal.
pub fn quoted(s: &str) -> Bytes {
    let mut b = BytesMut::with_capacity(s.len() + 2);
    escape_into(&mut b, s);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> String {
        String::from_utf8(quoted(s).to_vec()).unwrap()
    }

    #[test]
    fn escapes_quote_backslash_and_controls() {
        assert_eq!(q(r#"a"b"#), r#""a\"b""#);
        assert_eq!(q(r"a\b"), r#""a\\b""#);
        assert_eq!(q("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(q("\u{0}\u{1}\u{1f}"), r#""\u0000\u0001\u001f""#);
        assert_eq!(q("\u{7f}"), "\"\u{7f}\"", "DEL is not a control character for JSON");
        assert_eq!(q(""), r#""""#);
    }

    #[test]
    fn non_ascii_passes_through() {
        assert_eq!(q("héllo ✓ 😀 \u{2028}"), "\"héllo ✓ 😀 \u{2028}\"");
    }

    #[test]
    fn same_as_serde_json_for_every_ascii_byte() {
        let all: String = (0u8..128).map(char::from).collect();
        assert_eq!(q(&all), serde_json::to_string(&all).unwrap());
        let s = "x\"\\\u{1}é\u{0}";
        let back: String = serde_json::from_slice(&quoted(s)).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn builder_places_commas() {
        let mut w = Writer::new();
        w.obj().key("a").u64(1).key("b").arr().i64(-2).string("x").raw(b"{}").bool(true).null().end_arr();
        w.key("c").obj().end().key("d\"").i64(0).end();
        assert_eq!(w.as_bytes(), br#"{"a":1,"b":[-2,"x",{},true,null],"c":{},"d\"":0}"#);
        let mut w = Writer::new();
        w.arr().obj().end().obj().key("k").u64(u64::MAX).end().end_arr();
        assert_eq!(&w.finish()[..], br#"[{},{"k":18446744073709551615}]"#);
        let mut w = Writer::new();
        w.i64(i64::MIN);
        assert_eq!(w.as_bytes(), b"-9223372036854775808");
    }
}
