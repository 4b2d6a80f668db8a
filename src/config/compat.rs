//! Centrifugo v6 configuration files as they are: keys Herald implements are applied under
//! their Centrifugo names, keys Centrifugo knows and Herald does not are named once in a
//! start-up warning (when set to anything but Centrifugo's default), and keys neither knows
//! still stop start-up with an error naming them.
//!
//! Owns: the list of Centrifugo v6's keys with their defaults (`centrifugo_v6_defaults.json`,
//! the output of `centrifugo defaultconfig` for v6.9.1, regenerated with
//! `~/.cache/herald-centrifugo/bin/centrifugo defaultconfig -c src/config/centrifugo_v6_defaults.json`),
//! the few keys mapped to Herald's own (`http_server.port` → `port`, `http_server.address`
//! → `bind`, `log.level` → `log_level`), and the loop that sets aside what Herald does not
//! implement. Called by [`super::Config::from_json`] only.

use serde_json::{Map, Value};
use std::sync::OnceLock;

const DEFAULTS: &str = include_str!("centrifugo_v6_defaults.json");

fn defaults() -> &'static Value {
    static D: OnceLock<Value> = OnceLock::new();
    D.get_or_init(|| serde_json::from_str(DEFAULTS).unwrap_or(Value::Null))
}

/// Centrifugo's default for a key path (`["client","token","jwks_public_endpoint"]`);
/// `None` when Centrifugo has no such key. Items of `channel.namespaces` have the options of
/// `channel.without_namespace` (and a `name`), so do items of `rpc.namespaces`; items of
/// `proxies` have a proxy's keys.
pub fn centrifugo_default(path: &[String]) -> Option<&'static Value> {
    let mut path: Vec<&str> = path.iter().map(String::as_str).collect();
    if path.len() >= 3 && path[0] == "channel" && path[1] == "namespaces" {
        path = [&["channel", "without_namespace"][..], &path[3..]].concat();
    }
    // Items of `rpc.namespaces` have the options of `rpc.without_namespace`, items of
    // `proxies` the keys of any proxy.
    if path.len() >= 3 && path[0] == "rpc" && path[1] == "namespaces" {
        path = [&["rpc", "without_namespace"][..], &path[3..]].concat();
    }
    if path.len() >= 2 && path[0] == "proxies" {
        path = [&["rpc", "proxy"][..], &path[2..]].concat();
    }
    let mut v = defaults();
    for p in path {
        v = v.get(p)?;
    }
    Some(v)
}

/// Apply Centrifugo keys Herald implements under other names, and refuse values Herald
/// cannot honour rather than ignore them.
pub fn adapt(v: &mut Value, notices: &mut Vec<String>) -> Result<(), String> {
    strip_nulls(v);
    let Some(root) = v.as_object_mut() else { return Ok(()) };
    if let Some(Value::Object(hs)) = root.get_mut("http_server") {
        let port = hs.remove("port");
        let address = hs.remove("address");
        move_key(root, port, "port", "http_server.port", notices, |p| p.as_u64().map(Value::from))?;
        move_key(root, address, "bind", "http_server.address", notices, |a| {
            a.as_str().map(|s| Value::from(if s.is_empty() { "0.0.0.0" } else { s }))
        })?;
    }
    if let Some(Value::Object(log)) = root.get_mut("log") {
        let level = log.remove("level");
        move_key(root, level, "log_level", "log.level", notices, |l| {
            l.as_str().map(|s| Value::from(if s == "none" { "error" } else { s }))
        })?;
    }
    if let Some(Value::Object(prom)) = root.get_mut("prometheus") {
        if let Some(on) = prom.remove("enabled") {
            notices.push(if on == Value::Bool(false) {
                "`prometheus.enabled` false: Herald serves /metrics anyway (restrict it with metrics_allow)".into()
            } else {
                "`prometheus.enabled`: Herald always serves Prometheus metrics at /metrics (metrics_allow)".into()
            });
        }
    }
    Ok(())
}

/// Whether `v` only restates Centrifugo's defaults (every key it sets has the default's
/// value; keys it leaves out are at their default anyway).
pub fn is_default(v: &Value, default: &Value) -> bool {
    match (v, default) {
        (Value::Object(m), Value::Object(d)) => m.iter().all(|(k, x)| d.get(k).is_some_and(|dx| is_default(x, dx))),
        (x, Value::Null) => {
            x.is_null() || x.as_array().is_some_and(|a| a.is_empty()) || x.as_object().is_some_and(|o| o.is_empty())
        }
        (x, d) => x == d,
    }
}

/// `null` is Go's empty list or map in Centrifugo's files: the key's default.
fn strip_nulls(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.retain(|_, x| !x.is_null());
            m.values_mut().for_each(strip_nulls);
        }
        Value::Array(a) => a.iter_mut().for_each(strip_nulls),
        _ => {}
    }
}

fn move_key(
    root: &mut Map<String, Value>,
    value: Option<Value>,
    to: &str,
    from: &str,
    notices: &mut Vec<String>,
    convert: impl Fn(&Value) -> Option<Value>,
) -> Result<(), String> {
    let Some(value) = value else { return Ok(()) };
    let converted = convert(&value).ok_or_else(|| format!("key `{from}`: unexpected value {value}"))?;
    if let Some(own) = root.get(to) {
        if *own != converted {
            return Err(format!("keys `{from}` and `{to}` disagree ({converted} vs {own}): set one"));
        }
    }
    notices.push(format!("`{from}` applied as `{to}`"));
    root.insert(to.to_string(), converted);
    Ok(())
}

/// Remove the key at `path` (object keys; `[n]` array items) from `v`; its value.
pub fn remove(v: &mut Value, path: &[String]) -> Option<Value> {
    let (last, parents) = path.split_last()?;
    let mut cur = v;
    for p in parents {
        cur = match p.strip_prefix('[').and_then(|i| i.strip_suffix(']')).and_then(|i| i.parse::<usize>().ok()) {
            Some(i) => cur.get_mut(i)?,
            None => cur.get_mut(p.as_str())?,
        };
    }
    cur.as_object_mut()?.remove(last)
}

/// Split serde_path_to_error's path (`a.b[2].c`) and add the unknown field named in
/// `message` (``unknown field `f`, expected ...``) when the path stops short of it.
pub fn unknown_field_path(path: &str, message: &str) -> Option<Vec<String>> {
    let field = message.strip_prefix("unknown field `")?.split('`').next()?;
    let mut parts: Vec<String> = Vec::new();
    for seg in path.split('.').filter(|s| !s.is_empty() && *s != "?") {
        match seg.find('[') {
            Some(i) => {
                if i > 0 {
                    parts.push(seg[..i].to_string());
                }
                for idx in seg[i..].split_inclusive(']') {
                    parts.push(idx.to_string());
                }
            }
            None => parts.push(seg.to_string()),
        }
    }
    if parts.last().map(String::as_str) != Some(field) {
        parts.push(field.to_string());
    }
    Some(parts)
}

/// A path for messages: `a.b[2].c`.
pub fn show(path: &[String]) -> String {
    let mut s = String::new();
    for p in path {
        if !p.starts_with('[') && !s.is_empty() {
            s.push('.');
        }
        s.push_str(p);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Vec<String> {
        s.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn defaults_and_paths() {
        assert!(centrifugo_default(&p(&["client", "token", "jwks_public_endpoint"])).is_some());
        assert!(centrifugo_default(&p(&["channel", "namespaces", "[0]", "nonexistent_option"])).is_none());
        assert!(centrifugo_default(&p(&["channel", "namespaces", "[3]", "allow_history_for_client"])).is_some());
        assert!(centrifugo_default(&p(&["no_such_key"])).is_none());
        assert_eq!(
            unknown_field_path("channel.namespaces[0]", "unknown field `zz`, expected one of ..."),
            Some(p(&["channel", "namespaces", "[0]", "zz"]))
        );
        assert_eq!(
            unknown_field_path("client.token.foo", "unknown field `foo`, expected"),
            Some(p(&["client", "token", "foo"]))
        );
        assert_eq!(show(&p(&["channel", "namespaces", "[0]", "zz"])), "channel.namespaces[0].zz");
        let mut v = serde_json::json!({"a": [{"b": 1, "c": 2}]});
        assert_eq!(remove(&mut v, &p(&["a", "[0]", "b"])), Some(Value::from(1)));
        assert_eq!(v, serde_json::json!({"a": [{"c": 2}]}));
    }
}
