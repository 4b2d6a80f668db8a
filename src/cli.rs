//! `herald genconfig`, `checkconfig`, `gentoken`, `checktoken`: Centrifugo's CLI steps.
//!
//! Owns: the text these commands print and the config file genconfig writes. Called by
//! `main`. Never prints a secret except the ones genconfig creates (into the file).

use crate::config::Config;
use crate::proto::jwt::{decode_unverified, sign_hs256, Secret};

/// Unix time in seconds (the CLI is part of the app, which may read the wall clock).
fn unix_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// 32 random bytes as hex, from the kernel's CSPRNG.
fn random_hex(n: usize) -> Result<String, String> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| format!("cannot read /dev/urandom: {e}"))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// Write a new config file with a random token secret and API key (refuses to overwrite).
pub fn genconfig(path: &str) -> Result<String, String> {
    if std::path::Path::new(path).exists() {
        return Err(format!("{path} already exists; remove it or pass another path with -c"));
    }
    let secret = random_hex(32)?;
    let key = random_hex(32)?;
    let v = serde_json::json!({
        "client": {
            "token": { "hmac_secret_key": secret },
            "allowed_origins": []
        },
        "http_api": { "key": key },
        "channel": {
            "without_namespace": {
                "allow_subscribe_for_client": true,
                "presence": false
            },
            "namespaces": []
        }
    });
    let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())? + "\n";
    // Validate what we write with the same code that reads it.
    Config::from_json(&text)?;
    std::fs::write(path, &text).map_err(|e| format!("cannot write {path}: {e}"))?;
    Ok(format!("{path} written (client.token.hmac_secret_key and http_api.key are random)"))
}

/// Check a config file.
pub fn checkconfig(path: &str) -> Result<String, String> {
    let cfg = Config::from_file(path)?;
    let mut notes = vec![format!("{path}: valid")];
    if cfg.client.token.hmac_secret_key.is_empty() && !cfg.client.allow_anonymous_connect_without_token {
        notes.push("note: no client.token.hmac_secret_key: Centrifugo clients cannot connect".into());
    }
    if cfg.http_api.key.is_empty() && !cfg.http_api.insecure {
        notes.push("note: no http_api.key: the /api endpoint refuses every request".into());
    }
    Ok(notes.join("\n"))
}

/// An HS256 connection token for `user`, valid `ttl` seconds (0 = no expiry).
pub fn gentoken(path: &str, user: &str, ttl: i64) -> Result<String, String> {
    let cfg = Config::from_file(path)?;
    let key = &cfg.client.token.hmac_secret_key;
    if key.is_empty() {
        return Err(format!("{path} has no client.token.hmac_secret_key"));
    }
    let mut claims = serde_json::json!({ "sub": user, "iat": unix_now() });
    if ttl > 0 {
        claims["exp"] = serde_json::json!(unix_now() + ttl);
    }
    let token = sign_hs256(&Secret::new(key.as_bytes()), &claims);
    let until = if ttl > 0 { format!("expires in {ttl} seconds") } else { "never expires".into() };
    eprintln!("HMAC SHA-256 token for user \"{user}\", {until}:");
    Ok(token)
}

/// Verify a connection token and show its user and expiry.
pub fn checktoken(path: &str, token: &str) -> Result<String, String> {
    let cfg = Config::from_file(path)?;
    // A JWKS is fetched here and now (a command may wait on the network; a worker never does).
    let mut cells = Vec::new();
    for (url, cell, _) in crate::transport::centrifugo::client::jwks_cells(&cfg) {
        match crate::reactor::jwks::fetch_once(&url) {
            Ok(set) => cell.replace(set),
            Err(e) => eprintln!("JWKS {url}: {e}"),
        }
        cells.push((url, cell));
    }
    let v = crate::transport::centrifugo::client::verifier(&cfg, &cells);
    match v.verify_connect(token, unix_now()) {
        Ok(ok) => {
            let c = ok.claims();
            let exp = match c.exp {
                Some(e) => format!("expires at {e} (in {} s)", e - unix_now()),
                None => "no expiry".into(),
            };
            Ok(format!("valid token for user \"{}\", {exp}", c.sub))
        }
        Err(e) => {
            let shown = decode_unverified(token)
                .map(|(_, claims)| format!("; claims say sub={} exp={}", claims["sub"], claims["exp"]))
                .unwrap_or_default();
            Err(format!("invalid token: {e}{shown}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `checktoken` explains a refusal in words, never with a Rust enum name.
    #[test]
    fn checktoken_reports_in_words() {
        let path = std::env::temp_dir().join(format!("herald-cli-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"client": {"token": {"hmac_secret_key": "right-secret-123"}}}"#).unwrap();
        let p = path.to_str().unwrap();
        let good = sign_hs256(&Secret::new(b"right-secret-123"), &serde_json::json!({"sub": "ann"}));
        let ok = checktoken(p, &good).unwrap();
        assert!(ok.contains("valid token for user \"ann\""), "{ok}");
        let bad = sign_hs256(&Secret::new(b"wrong-secret-456"), &serde_json::json!({"sub": "ann"}));
        let e = checktoken(p, &bad).unwrap_err();
        std::fs::remove_file(&path).unwrap();
        assert!(e.contains("bad token signature"), "{e}");
        assert!(!e.contains("BadSignature"), "{e}");
    }
}
