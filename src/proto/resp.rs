//! RESP, the Redis serialization protocol (RESP2, and the RESP3 types a RESP3 server may
//! send): commands out, replies in, as a push parser over bytes.
//!
//! Owns: encoding a command (an array of bulk strings) and decoding one reply at a time.
//! [`parse`] takes the bytes received so far and returns `Ok(None)` (consuming nothing)
//! while a reply is incomplete, or the reply and how many bytes it used; every length is
//! checked against [`Limits`] before anything is allocated, and nesting is bounded. Called
//! by the Redis engine's connection. No sockets, no clock, nothing from the rings above.
//!
//! Spec: <https://redis.io/docs/latest/develop/reference/protocol-spec/>.

use bytes::Bytes;

/// One reply (or server push).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`: a simple string.
    Simple(Bytes),
    /// `-ERR ...`: an error reply (the command failed; the connection is fine).
    Error(Bytes),
    /// `:42`: an integer.
    Int(i64),
    /// `$5\r\nhello`: a bulk string (RESP3 verbatim strings `=` decode to this too, with
    /// their 4-byte format prefix kept).
    Bulk(Bytes),
    /// `$-1`, `*-1` or RESP3 `_`: no value.
    Nil,
    /// `*N`: an array (RESP3 sets `~` and maps `%` decode to this, maps as key, value, ...).
    Array(Vec<Value>),
    /// RESP3 `>`: an out-of-band push (pub/sub messages on a RESP3 connection).
    Push(Vec<Value>),
    /// RESP3 `#t` / `#f`.
    Bool(bool),
    /// RESP3 `,` double and `(` big number, as their text.
    Number(Bytes),
}

impl Value {
    /// The bytes of a simple or bulk string.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::Simple(b) | Value::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// An integer, or a string holding one (Lua scripts return either).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Simple(b) | Value::Bulk(b) => std::str::from_utf8(b).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The elements of an array or push.
    pub fn as_array(&self) -> Option<&[Value]> {
        match self {
            Value::Array(v) | Value::Push(v) => Some(v),
            _ => None,
        }
    }
}

/// Bounds on what a reply may make the parser allocate.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest bulk string accepted.
    pub max_bulk: usize,
    /// Most elements in one array (or map entries x 2).
    pub max_elements: usize,
    /// Deepest nesting of arrays.
    pub max_depth: usize,
}

impl Default for Limits {
    fn default() -> Self {
        // A history reply is an array of publications of at most `max_body` each.
        Limits { max_bulk: 512 << 20, max_elements: 1 << 20, max_depth: 8 }
    }
}

/// Why a reply could not be parsed: the connection must be dropped (the byte stream is
/// no longer in step with the server).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RespError {
    /// An unknown type byte.
    BadType(u8),
    /// A length or integer line that is not a number.
    BadNumber,
    /// A line without its CRLF where one must be.
    BadLine,
    /// A bulk string longer than [`Limits::max_bulk`].
    BulkTooLarge(usize),
    /// An array longer than [`Limits::max_elements`].
    TooManyElements(usize),
    /// Nesting deeper than [`Limits::max_depth`].
    TooDeep,
}

impl std::fmt::Display for RespError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RespError::BadType(b) => write!(f, "unknown RESP type byte 0x{b:02x}"),
            RespError::BadNumber => f.write_str("RESP length or integer is not a number"),
            RespError::BadLine => f.write_str("RESP line without CRLF"),
            RespError::BulkTooLarge(n) => write!(f, "RESP bulk string of {n} bytes is over the limit"),
            RespError::TooManyElements(n) => write!(f, "RESP array of {n} elements is over the limit"),
            RespError::TooDeep => f.write_str("RESP nesting too deep"),
        }
    }
}

impl std::error::Error for RespError {}

/// Append a command: an array of bulk strings (`*N\r\n$len\r\narg\r\n...`).
pub fn encode<A: AsRef<[u8]>>(out: &mut Vec<u8>, args: &[A]) {
    out.push(b'*');
    push_decimal(out, args.len());
    out.extend_from_slice(b"\r\n");
    for a in args {
        let a = a.as_ref();
        out.push(b'$');
        push_decimal(out, a.len());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_decimal(out: &mut Vec<u8>, n: usize) {
    let mut b = [0u8; 20];
    let mut i = b.len();
    let mut n = n;
    loop {
        i -= 1;
        b[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&b[i..]);
}

/// Parse one reply from the start of `buf`: `Ok(Some((value, used)))`, or `Ok(None)` while
/// it is incomplete (call again with more bytes; nothing is consumed). Work per call is
/// proportional to the number of elements, not the bytes of bulk strings, until the reply
/// is complete: an incomplete reply is only scanned.
pub fn parse(buf: &[u8], limits: &Limits) -> Result<Option<(Value, usize)>, RespError> {
    match scan(buf, 0, limits, 0)? {
        None => Ok(None),
        Some(end) => {
            let (v, used) = read(buf, 0)?;
            debug_assert_eq!(used, end);
            Ok(Some((v, used)))
        }
    }
}

/// The end of the line starting at `at` (the index of its `\r`), if complete.
fn line_end(buf: &[u8], at: usize) -> Result<Option<usize>, RespError> {
    match buf[at..].iter().position(|&b| b == b'\n') {
        None => Ok(None),
        Some(p) if p > 0 && buf[at + p - 1] == b'\r' => Ok(Some(at + p - 1)),
        Some(_) => Err(RespError::BadLine),
    }
}

fn number(line: &[u8]) -> Result<i64, RespError> {
    let s = std::str::from_utf8(line).map_err(|_| RespError::BadNumber)?;
    s.parse::<i64>().map_err(|_| RespError::BadNumber)
}

/// Check a whole reply is present; its end offset.
fn scan(buf: &[u8], at: usize, limits: &Limits, depth: usize) -> Result<Option<usize>, RespError> {
    if at >= buf.len() {
        return Ok(None);
    }
    let t = buf[at];
    let Some(eol) = line_end(buf, at + 1)? else { return Ok(None) };
    let line = &buf[at + 1..eol];
    let next = eol + 2;
    match t {
        b'+' | b'-' | b':' | b'_' | b'#' | b',' | b'(' => Ok(Some(next)),
        b'$' | b'=' | b'!' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some(next));
            }
            let n = n as usize;
            if n > limits.max_bulk {
                return Err(RespError::BulkTooLarge(n));
            }
            if buf.len() < next + n + 2 {
                return Ok(None);
            }
            if &buf[next + n..next + n + 2] != b"\r\n" {
                return Err(RespError::BadLine);
            }
            Ok(Some(next + n + 2))
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number(line)?;
            if n < 0 {
                return Ok(Some(next));
            }
            let mut n = n as usize;
            if matches!(t, b'%' | b'|') {
                n = n.saturating_mul(2);
            }
            if n > limits.max_elements {
                return Err(RespError::TooManyElements(n));
            }
            if depth >= limits.max_depth {
                return Err(RespError::TooDeep);
            }
            let mut pos = next;
            for _ in 0..n {
                match scan(buf, pos, limits, depth + 1)? {
                    Some(e) => pos = e,
                    None => return Ok(None),
                }
            }
            if t == b'|' {
                // An attribute precedes the reply it describes.
                return scan(buf, pos, limits, depth);
            }
            Ok(Some(pos))
        }
        other => Err(RespError::BadType(other)),
    }
}

/// Decode a reply already known complete (and within the limits) by [`scan`].
fn read(buf: &[u8], at: usize) -> Result<(Value, usize), RespError> {
    let t = buf[at];
    let eol = line_end(buf, at + 1)?.ok_or(RespError::BadLine)?;
    let line = &buf[at + 1..eol];
    let next = eol + 2;
    let v = match t {
        b'+' => Value::Simple(Bytes::copy_from_slice(line)),
        b'-' => Value::Error(Bytes::copy_from_slice(line)),
        b':' => Value::Int(number(line)?),
        b'_' => Value::Nil,
        b'#' => Value::Bool(line == b"t"),
        b',' | b'(' => Value::Number(Bytes::copy_from_slice(line)),
        b'$' | b'=' | b'!' => {
            let n = number(line)?;
            if n < 0 {
                return Ok((Value::Nil, next));
            }
            let n = n as usize;
            let b = Bytes::copy_from_slice(&buf[next..next + n]);
            let v = if t == b'!' { Value::Error(b) } else { Value::Bulk(b) };
            return Ok((v, next + n + 2));
        }
        b'*' | b'~' | b'>' | b'%' | b'|' => {
            let n = number(line)?;
            if n < 0 {
                return Ok((Value::Nil, next));
            }
            let n = if matches!(t, b'%' | b'|') { n as usize * 2 } else { n as usize };
            let mut items = Vec::with_capacity(n.min(1024));
            let mut pos = next;
            for _ in 0..n {
                let (v, e) = read(buf, pos)?;
                items.push(v);
                pos = e;
            }
            if t == b'|' {
                return read(buf, pos);
            }
            let v = if t == b'>' { Value::Push(items) } else { Value::Array(items) };
            return Ok((v, pos));
        }
        other => return Err(RespError::BadType(other)),
    };
    Ok((v, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(b: &[u8]) -> Value {
        let (v, used) = parse(b, &Limits::default()).unwrap().expect("complete");
        assert_eq!(used, b.len());
        v
    }

    #[test]
    fn encodes_commands() {
        let mut out = Vec::new();
        encode(&mut out, &["SET", "k", ""]);
        assert_eq!(out, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n");
    }

    #[test]
    fn every_type() {
        assert_eq!(one(b"+OK\r\n"), Value::Simple(Bytes::from_static(b"OK")));
        assert_eq!(one(b"-ERR no\r\n"), Value::Error(Bytes::from_static(b"ERR no")));
        assert_eq!(one(b":-42\r\n"), Value::Int(-42));
        assert_eq!(one(b"$5\r\nhe\r\no\r\n"), Value::Bulk(Bytes::from_static(b"he\r\no")));
        assert_eq!(one(b"$-1\r\n"), Value::Nil);
        assert_eq!(one(b"*-1\r\n"), Value::Nil);
        assert_eq!(one(b"_\r\n"), Value::Nil);
        assert_eq!(one(b"#t\r\n"), Value::Bool(true));
        assert_eq!(one(b",1.5\r\n"), Value::Number(Bytes::from_static(b"1.5")));
        assert_eq!(
            one(b"*2\r\n:1\r\n*1\r\n$1\r\nx\r\n"),
            Value::Array(vec![Value::Int(1), Value::Array(vec![Value::Bulk(Bytes::from_static(b"x"))])])
        );
        assert_eq!(
            one(b">3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$1\r\np\r\n"),
            Value::Push(vec![
                Value::Bulk(Bytes::from_static(b"message")),
                Value::Bulk(Bytes::from_static(b"ch")),
                Value::Bulk(Bytes::from_static(b"p"))
            ])
        );
        assert_eq!(one(b"%1\r\n+a\r\n:1\r\n").as_array().unwrap().len(), 2);
        assert_eq!(one(b"|1\r\n+k\r\n+v\r\n:7\r\n"), Value::Int(7), "attributes are skipped");
    }

    #[test]
    fn split_at_every_byte_consumes_nothing_until_complete() {
        let msg = b"*3\r\n$7\r\nmessage\r\n$4\r\nchan\r\n*2\r\n:5\r\n$3\r\nabc\r\n+next\r\n";
        let first_len = msg.len() - b"+next\r\n".len();
        for cut in 0..first_len {
            assert_eq!(parse(&msg[..cut], &Limits::default()).unwrap(), None, "cut at {cut}");
        }
        let (_, used) = parse(msg, &Limits::default()).unwrap().unwrap();
        assert_eq!(used, first_len, "the next reply is left");
        assert_eq!(one(&msg[used..]), Value::Simple(Bytes::from_static(b"next")));
    }

    #[test]
    fn limits_and_garbage() {
        let l = Limits { max_bulk: 10, max_elements: 3, max_depth: 2 };
        assert_eq!(parse(b"$11\r\n", &l), Err(RespError::BulkTooLarge(11)), "refused from the header alone");
        assert_eq!(parse(b"*4\r\n", &l), Err(RespError::TooManyElements(4)));
        assert_eq!(parse(b"*1\r\n*1\r\n*1\r\n:1\r\n", &l), Err(RespError::TooDeep));
        assert_eq!(parse(b"?x\r\n", &l), Err(RespError::BadType(b'?')));
        assert_eq!(parse(b":x\r\n", &l), Err(RespError::BadNumber));
        assert_eq!(parse(b"+OK\n", &l), Err(RespError::BadLine));
        assert_eq!(parse(b"$2\r\nabXY", &l), Err(RespError::BadLine));
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = crate::proto::testrng::Rng(0x5eed);
        const ALPHABET: &[u8] = b"+-:$*_#,(=!~>%|\r\n0123456789-abc";
        for _ in 0..20_000 {
            let n = rng.below(40);
            let b: Vec<u8> = (0..n).map(|_| ALPHABET[rng.below(ALPHABET.len())]).collect();
            let _ = parse(&b, &Limits::default());
        }
    }
}
