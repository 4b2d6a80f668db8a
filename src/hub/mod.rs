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
}
