//! The hub: channels, per-channel sequencing and history, and the engine seam.
//!
//! Owns: what a channel is (its name rules, its id sequence, its history ring) and how a
//! publish reaches the workers that have subscribers on it. Called by transports (publish,
//! subscribe, history reads) and by the reactor (inbox delivery). Must never touch a socket
//! or read the clock itself: `now_ms` is passed in.
//!
//! - [`engine`]: the [`Engine`] trait (publish + sequence, history read, subscription feed)
//!   and the embedded in-memory engine.
//! - [`local`]: one worker's subscriber sets.
//! - [`envelope`]: the message envelope and its wire encodings.

pub mod bus;
pub mod engine;
pub mod envelope;
pub mod local;
pub mod redis;

pub use engine::{Done, Engine, EngineError, HistoryRead, MemoryEngine, Message, Op, PubMeta, Reply};

/// Why a channel name or a `cid` list was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadChannel {
    /// No `cid` (or `channel`) parameter.
    Missing,
    /// An empty name (`cid=a,,b`).
    Empty,
    /// A name over 255 bytes.
    TooLong(usize),
    /// A character outside the allowed set.
    BadChar(char),
    /// More channels than `max_channels_per_conn`.
    TooMany {
        /// Channels named.
        named: usize,
        /// The limit.
        max: usize,
    },
}

impl std::fmt::Display for BadChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadChannel::Missing => f.write_str("missing channel: pass cid=CHANNEL"),
            BadChannel::Empty => f.write_str("channel name is empty"),
            BadChannel::TooLong(n) => write!(f, "channel name is {n} bytes long; the limit is 255"),
            BadChannel::BadChar(c) => {
                write!(f, "channel name contains {c:?}; allowed are A-Z a-z 0-9 and _ - . : @ # $ /")
            }
            BadChannel::TooMany { named, max } => write!(f, "{named} channels named; the limit is {max}"),
        }
    }
}

impl std::error::Error for BadChannel {}

/// Why a `since` / `Last-Event-ID` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BadSince {
    /// A positional list whose length is neither 1 nor the number of channels.
    Count {
        /// Values given.
        values: usize,
        /// Channels named.
        channels: usize,
    },
    /// A value that is not a decimal message id.
    NotAnId(String),
    /// One non-zero id for several channels: ids are per channel, so one number cannot be
    /// a position in each of them (it would replay, and report `missed`, on any channel
    /// whose last id is lower).
    Ambiguous {
        /// The single value given.
        value: u64,
        /// Channels named.
        channels: usize,
    },
}

impl std::fmt::Display for BadSince {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadSince::Count { values, channels } => write!(f, "since has {values} values for {channels} channels"),
            BadSince::NotAnId(p) => write!(f, "since: `{p}` is not a message id"),
            BadSince::Ambiguous { value, channels } => write!(
                f,
                "since={value} is ambiguous with {channels} channels: ids are per channel, so give one per channel \
                 in cid order (since=5,0,...: the last id seen on each, from last_ids), or since=0 for all"
            ),
        }
    }
}

impl std::error::Error for BadSince {}

/// Check a channel name of the seed transports.
pub fn check_channel(name: &str) -> Result<(), BadChannel> {
    check_channel_with(name, "")
}

/// Channel names of the Centrifugo protocol may also hold `,` (user-limited channels list
/// users after `#`); they never travel in a `cid=a,b` list.
pub fn check_cf_channel(name: &str) -> Result<(), BadChannel> {
    check_channel_with(name, ",")
}

fn check_channel_with(name: &str, extra: &str) -> Result<(), BadChannel> {
    if name.is_empty() {
        return Err(BadChannel::Empty);
    }
    if name.len() > 255 {
        return Err(BadChannel::TooLong(name.len()));
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-.:@#$/".contains(*c) || extra.contains(*c)))
    {
        return Err(BadChannel::BadChar(c));
    }
    Ok(())
}

/// Split and validate a `cid=a,b` list (duplicates removed, order kept).
pub fn parse_channels(list: &str, max: usize) -> Result<Vec<String>, BadChannel> {
    if list.is_empty() {
        return Err(BadChannel::Missing);
    }
    let mut out: Vec<String> = Vec::new();
    for name in list.split(',') {
        check_channel(name)?;
        if !out.iter().any(|c| c == name) {
            out.push(name.to_string());
        }
    }
    if out.len() > max {
        return Err(BadChannel::TooMany { named: out.len(), max });
    }
    Ok(out)
}

/// `since` for each of `n` channels, from the query (`since=5,7` positional, one per channel;
/// a single value only with one channel, or `0` meaning "from the start" for all) or, on SSE, from `Last-Event-ID` (header, or `last_event_id` in the query for
/// polyfills), which wins: a browser reconnects with its original URL plus the header naming
/// what it actually received. Err names a malformed value.
pub fn parse_since(
    query: &str,
    last_event_id: Option<&str>,
    n: usize,
    sse: bool,
) -> Result<Vec<Option<u64>>, BadSince> {
    use crate::proto::http::query_param;
    let from_sse = if sse {
        last_event_id
            .filter(|s| !s.is_empty())
            .map(|s| s.to_string())
            .or_else(|| query_param(query, "last_event_id").map(|v| v.into_owned()))
    } else {
        None
    };
    let raw = from_sse.or_else(|| query_param(query, "since").map(|v| v.into_owned()));
    let Some(raw) = raw.filter(|r| !r.is_empty()) else {
        return Ok(vec![None; n]);
    };
    let parts: Vec<&str> = raw.split(',').collect();
    if parts.len() != 1 && parts.len() != n {
        return Err(BadSince::Count { values: parts.len(), channels: n });
    }
    if parts.len() == 1 && n > 1 {
        let p = parts[0].trim();
        if p.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(v) = p.parse::<u64>() {
                if v > 0 {
                    return Err(BadSince::Ambiguous { value: v, channels: n });
                }
            }
        }
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let p = parts[if parts.len() == 1 { 0 } else { i }].trim();
        // Digits only: `u64::from_str` would also take a leading `+`.
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(BadSince::NotAnId(p.to_string()));
        }
        out.push(Some(p.parse::<u64>().map_err(|_| BadSince::NotAnId(p.to_string()))?));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names() {
        assert!(check_channel("chat:room-1/a@b#c$d_e.f").is_ok());
        assert!(check_channel("").is_err());
        assert!(check_channel(&"a".repeat(255)).is_ok());
        assert!(check_channel(&"a".repeat(256)).is_err());
        assert!(check_channel("a b").unwrap_err().to_string().contains("' '"));
        assert!(check_channel("a,b").is_err());
        assert!(check_channel("é").is_err());
        assert_eq!(parse_channels("a,b,a", 8).unwrap(), vec!["a", "b"]);
        assert!(parse_channels("a,,b", 8).is_err());
        assert!(parse_channels("a,b,c", 2).is_err());
    }

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("since=0", None, 2, false).unwrap(), vec![Some(0), Some(0)]);
        let e = parse_since("since=5", None, 2, false).unwrap_err();
        assert_eq!(e, BadSince::Ambiguous { value: 5, channels: 2 });
        assert!(e.to_string().contains("since=5,0"), "{e}");
        assert!(parse_since("cid=a,b", Some("5"), 2, true).is_err(), "a single Last-Event-ID too");
        assert_eq!(parse_since("", Some("5,7"), 2, true).unwrap(), vec![Some(5), Some(7)]);
        assert_eq!(parse_since("since=5,7", None, 2, false).unwrap(), vec![Some(5), Some(7)]);
        assert_eq!(parse_since("", None, 1, false).unwrap(), vec![None]);
        assert!(parse_since("since=5,7,9", None, 2, false).is_err());
        assert!(parse_since("since=x", None, 1, false).is_err());
        assert!(parse_since("since=%2B5", None, 1, false).is_err());
        assert_eq!(parse_since("since=1", Some("4"), 1, true).unwrap(), vec![Some(4)], "Last-Event-ID wins on SSE");
        assert_eq!(parse_since("since=1", Some("4"), 1, false).unwrap(), vec![Some(1)]);
        assert_eq!(parse_since("last_event_id=3", None, 1, true).unwrap(), vec![Some(3)]);
    }
}
