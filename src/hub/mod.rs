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

pub use engine::{Engine, HistoryRead, MemoryEngine, Message, PubMeta};

/// Why a channel name was refused.
pub fn check_channel(name: &str) -> Result<(), String> {
    check_channel_with(name, "")
}

/// Channel names of the Centrifugo protocol may also hold `,` (user-limited channels list
/// users after `#`); they never travel in a `cid=a,b` list.
pub fn check_cf_channel(name: &str) -> Result<(), String> {
    check_channel_with(name, ",")
}

fn check_channel_with(name: &str, extra: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("channel name is empty".into());
    }
    if name.len() > 255 {
        return Err(format!("channel name is {} bytes long; the limit is 255", name.len()));
    }
    if let Some(c) =
        name.chars().find(|c| !(c.is_ascii_alphanumeric() || "_-.:@#$/".contains(*c) || extra.contains(*c)))
    {
        return Err(format!("channel name contains {c:?}; allowed are A-Z a-z 0-9 and _ - . : @ # $ /"));
    }
    Ok(())
}

/// Split and validate a `cid=a,b` list (duplicates removed, order kept).
pub fn parse_channels(list: &str, max: usize) -> Result<Vec<String>, String> {
    if list.is_empty() {
        return Err("missing channel: pass cid=CHANNEL".into());
    }
    let mut out: Vec<String> = Vec::new();
    for name in list.split(',') {
        check_channel(name)?;
        if !out.iter().any(|c| c == name) {
            out.push(name.to_string());
        }
    }
    if out.len() > max {
        return Err(format!("{} channels named; the limit is {max}", out.len()));
    }
    Ok(out)
}

/// `since` for each of `n` channels, from the query (`since=ID` for all, `since=5,7`
/// positional) or, on SSE, from `Last-Event-ID` (header, or `last_event_id` in the query for
/// polyfills), which wins: a browser reconnects with its original URL plus the header naming
/// what it actually received. Err names a malformed value.
pub fn parse_since(query: &str, last_event_id: Option<&str>, n: usize, sse: bool) -> Result<Vec<Option<u64>>, String> {
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
        return Err(format!("since has {} values for {n} channels", parts.len()));
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let p = parts[if parts.len() == 1 { 0 } else { i }].trim();
        // Digits only: `u64::from_str` would also take a leading `+`.
        if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("since: `{p}` is not a message id"));
        }
        out.push(Some(p.parse::<u64>().map_err(|_| format!("since: `{p}` is not a message id"))?));
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
        assert!(check_channel("a b").unwrap_err().contains("' '"));
        assert!(check_channel("a,b").is_err());
        assert!(check_channel("é").is_err());
        assert_eq!(parse_channels("a,b,a", 8).unwrap(), vec!["a", "b"]);
        assert!(parse_channels("a,,b", 8).is_err());
        assert!(parse_channels("a,b,c", 2).is_err());
    }

    #[test]
    fn since_forms() {
        assert_eq!(parse_since("since=5", None, 2, false).unwrap(), vec![Some(5), Some(5)]);
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
