//! Centrifugo v6 config files start Herald (issue #13): `centrifugo genconfig`'s output and
//! the full `centrifugo defaultconfig` (every key at its default) start with no warning;
//! keys Herald does not implement, set to something else, are named once in a warning;
//! mapped keys are applied; unknown keys still stop start-up with an error naming them.

mod common;

use common::*;
use std::time::Duration;

const DEFAULTS: &str = include_str!("../src/config/centrifugo_v6_defaults.json");

fn log_of(h: &Herald) -> Vec<String> {
    // The start-up lines are written before "listening on" returns; a moment for the rest.
    std::thread::sleep(Duration::from_millis(200));
    h.log.lock().unwrap().clone()
}

#[test]
fn genconfig_and_defaultconfig_start_without_warnings() {
    let genconfig = r#"{"client":{"token":{"hmac_secret_key":"k1"},"allowed_origins":[]},
        "admin":{"enabled":false,"password":"p-12345678","secret":"s-12345678"},"http_api":{"key":"a-123456"}}"#;
    for cfg in [genconfig, DEFAULTS] {
        let h = Herald::start(cfg);
        assert_eq!(get(&h, "/health").status, 200);
        let log = log_of(&h);
        assert!(!log.iter().any(|l| l.contains("does not implement")), "{log:#?}");
    }
}

#[test]
fn unimplemented_keys_are_named_once_and_mapped_keys_applied() {
    let mut v: serde_json::Value = serde_json::from_str(DEFAULTS).unwrap();
    v["client"]["token"]["user_id_claim"] = "uid".into();
    v["client"]["token"]["hmac_secret_key"] = "secret-123".into();
    // Proxies are implemented; their gRPC keys are not.
    v["client"]["proxy"]["connect"]["grpc_metadata"] = serde_json::json!(["x-trace"]);
    v["channel"]["namespaces"] = serde_json::json!([{"name": "chat", "presence": true, "allow_subscribe_for_client": true, "history_meta_ttl": "1h"}]);
    v["log"]["level"] = "debug".into();
    let h = Herald::start(&v.to_string());
    let log = log_of(&h);
    let warn: Vec<&String> = log.iter().filter(|l| l.contains("does not implement")).collect();
    assert_eq!(warn.len(), 1, "one warning line: {log:#?}");
    for key in
        ["client.token.user_id_claim", "client.proxy.connect.grpc_metadata", "channel.namespaces[0].history_meta_ttl"]
    {
        assert_eq!(warn[0].matches(key).count(), 1, "{key} named once: {}", warn[0]);
    }
    assert!(!warn[0].contains("hmac_secret_key"), "implemented keys are applied, not ignored");
    assert!(log.iter().any(|l| l.contains("`log.level` applied as `log_level`")), "{log:#?}");
    assert!(log.iter().any(|l| l.contains(" DEBUG ")), "log.level debug applied: {log:#?}");
}

#[test]
fn unknown_keys_and_unavailable_engines_stop_start_up() {
    for (cfg, needle) in [
        (r#"{"client":{"tokken":{}}}"#, "client.tokken"),
        (r#"{"zzz":1}"#, "zzz"),
        (r#"{"engine":{"type":"nats"}}"#, "engine.type"),
        (r#"{"engine":{"type":"redis","redis":{"address":"rediss://h:1"}}}"#, "rediss://h:1"),
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["checkconfig", "--config", "/dev/stdin"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(cfg.as_bytes())?;
                c.wait_with_output()
            })
            .unwrap();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        assert!(!out.status.success(), "{cfg}: {text}");
        assert!(text.contains(needle), "{cfg}: {text}");
    }
}
