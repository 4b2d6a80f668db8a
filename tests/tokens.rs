//! Centrifugo connection tokens signed with RSA and ECDSA keys (`client.token.rsa_public_key`,
//! `client.token.ecdsa_public_key`), and HS384/HS512 with the HMAC secret, against a real
//! herald. Keys are made and tokens signed by the `openssl` command line, independently of
//! Herald's code; every refusal that holds for HS256 holds for them (wrong key, algorithm
//! confusion between HMAC and public keys, a tampered payload).

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// A file name of its own (tests run in parallel threads of one process).
fn tmp(name: &str) -> PathBuf {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    std::env::temp_dir().join(format!("herald-tokens-{}-{n}-{name}", std::process::id()))
}

fn openssl(args: &[&str]) -> Vec<u8> {
    let out = Command::new("openssl").args(args).output().expect("openssl (Debian's package)");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

/// A private key file and its public key PEM.
fn keypair(kind: &str) -> (PathBuf, String) {
    let key = tmp(&format!("{kind}.key"));
    let k = key.to_str().unwrap();
    match kind {
        "rsa" => openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k]),
        "rsa2" => openssl(&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out", k]),
        "ec256" => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256", "-out", k]),
        "ec384" => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-384", "-out", k]),
        "ec521" => openssl(&["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-521", "-out", k]),
        _ => unreachable!(),
    };
    let public = String::from_utf8(openssl(&["pkey", "-in", k, "-pubout"])).unwrap();
    (key, public)
}

/// DER `ECDSA-Sig-Value ::= SEQUENCE { r INTEGER, s INTEGER }` to JWS's fixed `r || s`.
fn ecdsa_fixed(der: &[u8], n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 2 + usize::from(der[1] & 0x80 != 0) * (der[1] & 0x7f) as usize;
    for _ in 0..2 {
        assert_eq!(der[i], 0x02);
        let len = der[i + 1] as usize;
        let v = &der[i + 2..i + 2 + len];
        let v = &v[v.len().saturating_sub(n)..];
        out.extend(std::iter::repeat_n(0u8, n - v.len()));
        out.extend_from_slice(v);
        i += 2 + len;
    }
    out
}

/// A token `header.payload.signature` signed by openssl with `key`.
fn sign(alg: &str, key: &std::path::Path, claims: &str) -> String {
    let signing = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#)),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let input = tmp(&format!("{alg}.in"));
    std::fs::write(&input, &signing).unwrap();
    let digest = format!("-sha{}", &alg[2..]);
    let sig = openssl(&["dgst", &digest, "-sign", key.to_str().unwrap(), input.to_str().unwrap()]);
    let _ = std::fs::remove_file(&input);
    let n = match alg {
        "ES256" => 32,
        "ES384" => 48,
        _ => 66,
    };
    let sig = if alg.starts_with("ES") { ecdsa_fixed(&sig, n) } else { sig };
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// HS384 / HS512 with openssl's HMAC.
fn sign_hmac(alg: &str, secret: &str, claims: &str) -> String {
    let signing =
        format!("{}.{}", URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}"}}"#)), URL_SAFE_NO_PAD.encode(claims));
    let input = tmp(&format!("{alg}.in"));
    std::fs::write(&input, &signing).unwrap();
    let digest = format!("-sha{}", &alg[2..]);
    let sig = openssl(&["dgst", &digest, "-hmac", secret, "-binary", input.to_str().unwrap()]);
    let _ = std::fs::remove_file(&input);
    format!("{signing}.{}", URL_SAFE_NO_PAD.encode(sig))
}

/// Connect to /connection/websocket with `token`: the user id, or the close/error code.
fn connect(h: &Herald, token: &str) -> Result<String, String> {
    let mut s = raw_ws(h, "/connection/websocket");
    let cmd = format!(r#"{{"id":1,"connect":{{"token":"{token}"}}}}"#);
    s.write_all(&client_frame(true, 1, cmd.as_bytes())).unwrap();
    let (_, op, p) = read_frame(&mut s).expect("an answer");
    if op == 8 {
        return Err(format!("close {}", u16::from_be_bytes([p[0], p[1]])));
    }
    let v: serde_json::Value = serde_json::from_slice(&p).unwrap();
    if let Some(e) = v.get("error") {
        return Err(format!("error {}", e["code"]));
    }
    // The user is not in the connect reply; a presence-less check: the client id is.
    assert!(v["connect"]["client"].is_string(), "{v}");
    Ok("connected".into())
}

#[test]
fn rsa_ecdsa_and_wide_hmac_tokens() {
    let (rsa, rsa_pub) = keypair("rsa");
    let (rsa2, _) = keypair("rsa2");
    let (ec, ec_pub) = keypair("ec256");
    let (ec384, ec384_pub) = keypair("ec384");
    let secret = "hmac-secret-for-tests";
    let cfg = serde_json::json!({"client": {"token": {
        "hmac_secret_key": secret, "rsa_public_key": rsa_pub, "ecdsa_public_key": ec_pub}}});
    let h = Herald::start(&cfg.to_string());
    let claims = r#"{"sub":"42","exp":4000000000}"#;
    for alg in ["RS256", "RS384", "RS512"] {
        assert_eq!(connect(&h, &sign(alg, &rsa, claims)), Ok("connected".into()), "{alg}");
        assert_eq!(connect(&h, &sign(alg, &rsa2, claims)), Err("close 3500".into()), "{alg} with another key");
    }
    assert_eq!(connect(&h, &sign("ES256", &ec, claims)), Ok("connected".into()));
    assert_eq!(connect(&h, &sign_hmac("HS384", secret, claims)), Ok("connected".into()));
    assert_eq!(connect(&h, &sign_hmac("HS512", secret, claims)), Ok("connected".into()));
    assert_eq!(connect(&h, &sign_hmac("HS512", "another-secret", claims)), Err("close 3500".into()));
    // Tampering: the payload changed after signing.
    let t = sign("RS256", &rsa, claims);
    let mut parts: Vec<&str> = t.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"1","exp":4000000000}"#);
    parts[1] = &forged;
    assert_eq!(connect(&h, &parts.join(".")), Err("close 3500".into()), "tampered payload");
    // Algorithm confusion: an HS256 token whose HMAC key is the RSA public key PEM.
    let confused = sign_hmac("HS256", &rsa_pub, claims);
    assert_eq!(connect(&h, &confused), Err("close 3500".into()), "public key used as an HMAC secret");
    // An ES384 token with only a P-256 key configured: no key of its family.
    assert_eq!(connect(&h, &sign("ES384", &ec384, claims)), Err("close 3500".into()));
    // Expired is still "token expired" (109) with a good RSA signature.
    assert_eq!(connect(&h, &sign("RS256", &rsa, r#"{"sub":"42","exp":1000}"#)), Err("error 109".into()));

    // ES384 with a P-384 key configured.
    let cfg = serde_json::json!({"client": {"token": {"ecdsa_public_key": ec384_pub}}});
    let h2 = Herald::start(&cfg.to_string());
    assert_eq!(connect(&h2, &sign("ES384", &ec384, claims)), Ok("connected".into()));
    assert_eq!(connect(&h2, &sign_hmac("HS256", "x", claims)), Err("close 3500".into()), "no HMAC secret configured");

    for f in [rsa, rsa2, ec, ec384] {
        let _ = std::fs::remove_file(f);
    }
}

/// ES512 (P-521, checked by RustCrypto's p521): a PEM key under `ecdsa_public_key`; the
/// refusals that hold for ES256 hold for it.
#[test]
fn es512_with_a_p521_pem_key() {
    let (ec521, ec521_pub) = keypair("ec521");
    let (ec, _) = keypair("ec256");
    let (rsa, _) = keypair("rsa");
    let cfg =
        serde_json::json!({"client": {"token": {"hmac_secret_key": "s3cret-s3cret", "ecdsa_public_key": ec521_pub}}});
    let h = Herald::start(&cfg.to_string());
    let claims = r#"{"sub":"42","exp":4000000000}"#;
    // Fresh signatures each time: half of OpenSSL's have a "high" s, which must pass too.
    for _ in 0..6 {
        assert_eq!(connect(&h, &sign("ES512", &ec521, claims)), Ok("connected".into()));
    }
    assert_eq!(connect(&h, &sign("ES512", &ec521, r#"{"sub":"42","exp":1000}"#)), Err("error 109".into()));
    // Another curve or family with that key, another key with that alg.
    assert_eq!(connect(&h, &sign("ES256", &ec, claims)), Err("close 3500".into()), "no P-256 key");
    assert_eq!(connect(&h, &sign("ES512", &ec, claims)), Err("close 3500".into()), "P-256 key");
    assert_eq!(connect(&h, &sign("RS512", &rsa, claims)), Err("close 3500".into()), "no RSA key");
    // Re-labelled: an ES512 signature sent as ES384.
    let t = sign("ES512", &ec521, claims);
    let (_, rest) = t.split_once('.').unwrap();
    let es384 = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES384","typ":"JWT"}"#);
    assert_eq!(connect(&h, &format!("{es384}.{rest}")), Err("close 3500".into()));
    // The signature cut short or grown by a byte.
    let (signed, sig) = t.rsplit_once('.').unwrap();
    let mut sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    sig.pop();
    assert_eq!(connect(&h, &format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig))), Err("close 3500".into()));
    sig.extend([0, 0]);
    assert_eq!(connect(&h, &format!("{signed}.{}", URL_SAFE_NO_PAD.encode(&sig))), Err("close 3500".into()));
    // Algorithm confusion: HS512 keyed with the P-521 PEM.
    assert_eq!(connect(&h, &sign_hmac("HS512", &ec521_pub, claims)), Err("close 3500".into()));
    for f in [ec521, ec, rsa] {
        let _ = std::fs::remove_file(f);
    }
}

#[test]
fn bad_public_keys_stop_start_up_naming_the_key() {
    let out = Command::new(env!("CARGO_BIN_EXE_herald"))
        .args(["checkconfig", "--config", "/dev/stdin"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(br#"{"client":{"token":{"rsa_public_key":"not a key"}}}"#)?;
            c.wait_with_output()
        })
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("client.token.rsa_public_key"), "{text}");
}
