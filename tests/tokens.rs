//! Centrifugo connection tokens signed with RSA and ECDSA keys (`client.token.rsa_public_key`,
//! `client.token.ecdsa_public_key`, ES512 on P-521 included), HS384/HS512 with the HMAC
//! secret, and keys from a JWKS endpoint (`jwks_public_endpoint`), against a real herald.
//! Keys are made and tokens signed by the `openssl` command line, independently of
//! Herald's code; every refusal that holds for HS256 holds for them (wrong key, algorithm
//! confusion between HMAC and public keys, a tampered payload). The JWKS tests serve the
//! set from a real HTTP (and HTTPS) server thread on loopback, in `jwks_server`.

mod common;
mod jwks_server;

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
    sign_header(&format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#), alg, key, claims)
}

/// The same with a `kid` header, as a JWKS needs.
fn sign_kid(alg: &str, key: &std::path::Path, kid: &str, claims: &str) -> String {
    sign_header(&format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#), alg, key, claims)
}

/// Signed by openssl under `alg`'s hash, whatever `header` says.
fn sign_header(header: &str, alg: &str, key: &std::path::Path, claims: &str) -> String {
    let signing = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
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

// ---- JWKS (`jwks_public_endpoint`) ----

use jwks_server::{Answer, JwksServer};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

/// Herald's `FRESH_S`: a set fetched this recently is taken as current, and two fetches
/// are at least this far apart.
const FRESH: Duration = Duration::from_secs(5);

/// The public key of `key` as a JWK with `kid` (and `alg` when given), built from what
/// openssl prints, not by Herald's code.
fn jwk(kind: &str, key: &std::path::Path, kid: &str, alg: Option<&str>) -> Value {
    let k = key.to_str().unwrap();
    let mut v = if kind.starts_with("rsa") {
        let m = String::from_utf8(openssl(&["rsa", "-in", k, "-noout", "-modulus"])).unwrap();
        let hex = m.trim().strip_prefix("Modulus=").unwrap();
        let n: Vec<u8> = (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap()).collect();
        json!({"kty": "RSA", "n": URL_SAFE_NO_PAD.encode(n), "e": "AQAB"})
    } else {
        let (crv, n) = match kind {
            "ec256" => ("P-256", 32),
            "ec384" => ("P-384", 48),
            _ => ("P-521", 66),
        };
        let der = openssl(&["pkey", "-in", k, "-pubout", "-outform", "DER"]);
        let pt = &der[der.len() - (1 + 2 * n)..];
        assert_eq!(pt[0], 4, "uncompressed point");
        json!({"kty": "EC", "crv": crv, "x": URL_SAFE_NO_PAD.encode(&pt[1..1 + n]), "y": URL_SAFE_NO_PAD.encode(&pt[1 + n..])})
    };
    v["kid"] = kid.into();
    v["use"] = "sig".into();
    if let Some(a) = alg {
        v["alg"] = a.into();
    }
    v
}

/// Connect until the answer is not the temporary error 100 (keys being fetched), as an
/// SDK's reconnect loop would; the last answer.
fn connect_retrying(h: &Herald, token: &str, limit: Duration) -> Result<String, String> {
    let until = Instant::now() + limit;
    loop {
        let r = connect(h, token);
        if r != Err("error 100".into()) || Instant::now() >= until {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Wait for a herald log line containing `needle`.
fn wait_log(h: &Herald, needle: &str, limit: Duration) {
    let until = Instant::now() + limit;
    while !h.log.lock().unwrap().iter().any(|l| l.contains(needle)) {
        assert!(Instant::now() < until, "no log line with {needle:?}: {:#?}", h.log.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Sleep until the endpoint's last request is more than FRESH ago, so that Herald's set
/// is no longer fresh and an unknown kid makes it fetch again.
fn until_stale(srv: &JwksServer, path: &str) {
    let since = srv.since_last(path).unwrap_or(FRESH);
    std::thread::sleep((FRESH + Duration::from_millis(300)).saturating_sub(since));
}

const CLAIMS: &str = r#"{"sub":"42","exp":4000000000}"#;

/// Every alg through a JWKS served over HTTP (RSA with and without a JWK `alg`, P-256,
/// P-384, P-521), and every refusal that holds with PEM keys holds here too.
#[test]
fn jwks_every_algorithm_and_refusal() {
    let (rsa, rsa_pub) = keypair("rsa");
    let (ec256, _) = keypair("ec256");
    let (ec384, _) = keypair("ec384");
    let (ec521, _) = keypair("ec521");
    let srv = JwksServer::start();
    srv.keys(
        "/jwks",
        &[
            jwk("rsa", &rsa, "rsa1", None),
            jwk("rsa", &rsa, "rsa256", Some("RS256")),
            jwk("ec256", &ec256, "ec256", Some("ES256")),
            jwk("ec384", &ec384, "ec384", None),
            jwk("ec521", &ec521, "ec521", Some("ES512")),
            json!({"kty": "oct", "kid": "hmac", "k": URL_SAFE_NO_PAD.encode("hmac-secret-for-tests")}),
        ],
    );
    let secret = "hmac-secret-for-tests";
    let cfg = json!({"client": {"token": {"jwks_public_endpoint": srv.url("/jwks"), "hmac_secret_key": secret}}});
    let h = Herald::start(&cfg.to_string());
    let first = sign_kid("RS256", &rsa, "rsa1", CLAIMS);
    assert_eq!(connect_retrying(&h, &first, Duration::from_secs(10)), Ok("connected".into()));
    for (alg, key, kid) in [
        ("RS384", &rsa, "rsa1"),
        ("RS512", &rsa, "rsa1"),
        ("RS256", &rsa, "rsa256"),
        ("ES256", &ec256, "ec256"),
        ("ES384", &ec384, "ec384"),
        ("ES512", &ec521, "ec521"),
    ] {
        assert_eq!(connect(&h, &sign_kid(alg, key, kid, CLAIMS)), Ok("connected".into()), "{alg} {kid}");
    }
    // The log: the set and the skipped key named, the unused secret warned about, and the
    // endpoint key no longer among the ones Herald does not implement.
    wait_log(&h, "signing keys in use: 5 (kid rsa1, rsa256, ec256, ec384, ec521)", Duration::from_secs(1));
    wait_log(&h, r#"skipped key 5 (kid "hmac")"#, Duration::from_secs(1));
    wait_log(&h, "not used while `client.token.jwks_public_endpoint` is set", Duration::from_secs(1));
    assert!(!h.log.lock().unwrap().iter().any(|l| l.contains("does not implement")));

    let refused = |t: &str, why: &str| assert_eq!(connect(&h, t), Err("close 3500".into()), "{why}");
    refused(&sign("RS256", &rsa, CLAIMS), "no kid");
    refused(&sign_hmac("HS256", secret, CLAIMS), "HMAC secret not used with a JWKS");
    refused(&sign_hmac("HS256", &rsa_pub, CLAIMS), "public key PEM as an HMAC secret");
    let none =
        format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"rsa1"}"#), URL_SAFE_NO_PAD.encode(CLAIMS));
    refused(&none, "alg none");
    refused(&sign_kid("RS384", &rsa, "rsa256", CLAIMS), "the JWK's alg is RS256");
    refused(&sign_kid("ES384", &ec521, "ec521", CLAIMS), "ES384 under a P-521 kid");
    refused(&sign_kid("ES256", &ec384, "ec384", CLAIMS), "ES256 under a P-384 kid");
    refused(&sign_kid("RS256", &rsa, "ec256", CLAIMS), "RSA token under an EC kid");
    refused(&sign_kid("ES256", &ec256, "ec384", CLAIMS), "another key's kid");
    let t = sign_kid("ES512", &ec521, "ec521", CLAIMS);
    let mut parts: Vec<&str> = t.split('.').collect();
    let forged = URL_SAFE_NO_PAD.encode(r#"{"sub":"1","exp":4000000000}"#);
    parts[1] = &forged;
    refused(&parts.join("."), "tampered payload");
    refused(&sign_header(r#"{"alg":"ES256","kid":"ec256","crit":["exp"]}"#, "ES256", &ec256, CLAIMS), "crit header");
    let big = format!(r#"{{"sub":"42","pad":"{}"}}"#, "x".repeat(17 * 1024));
    refused(&sign_kid("ES512", &ec521, "ec521", &big), "longer than 16 KiB");
    assert_eq!(connect(&h, &sign_kid("ES512", &ec521, "ec521", r#"{"sub":"42","exp":1000}"#)), Err("error 109".into()));
    // All of this from the one fetch at start-up (and at most one more, asked for by a
    // token that came before it).
    assert!(srv.hits("/jwks") <= 2, "{} fetches", srv.hits("/jwks"));
    for f in [rsa, ec256, ec384, ec521] {
        let _ = std::fs::remove_file(f);
    }
}

/// A new kid is found by a fetch the first token with it asks for (that token gets the
/// temporary error, the retry connects); kids the endpoint never lists are refused, and
/// however many arrive Herald fetches at most once per FRESH; a key the endpoint drops
/// stops working once a fetch brings the new set.
#[test]
fn jwks_rotation_unknown_kids_and_rate_limit() {
    let (k1, _) = keypair("ec256");
    let (k2, _) = keypair("rsa");
    let srv = JwksServer::start();
    srv.keys("/keys", &[jwk("ec256", &k1, "k1", None)]);
    let h = Herald::start(&json!({"client": {"token": {"jwks_public_endpoint": srv.url("/keys")}}}).to_string());
    let t1 = sign_kid("ES256", &k1, "k1", CLAIMS);
    let t2 = sign_kid("RS256", &k2, "k2", CLAIMS);
    assert_eq!(connect_retrying(&h, &t1, Duration::from_secs(10)), Ok("connected".into()));
    let fetched = srv.hits("/keys");

    // Rotation: k2 published; once Herald's set is stale, the first k2 token asks for a
    // fetch and is told to retry; the retry connects.
    srv.keys("/keys", &[jwk("ec256", &k1, "k1", None), jwk("rsa", &k2, "k2", None)]);
    until_stale(&srv, "/keys");
    assert_eq!(connect(&h, &t2), Err("error 100".into()), "temporary while the fetch runs");
    srv.wait_hits("/keys", fetched + 1, Duration::from_secs(5));
    assert_eq!(connect_retrying(&h, &t2, Duration::from_secs(5)), Ok("connected".into()));
    assert_eq!(connect(&h, &t1), Ok("connected".into()), "k1 still listed");

    // Made-up kids, one every 100 ms for 7 s: each is refused (3500 while the set is fresh,
    // 100 while a fetch is due), and they cause at most two fetches (one per FRESH).
    let before = srv.hits("/keys");
    let start = Instant::now();
    let mut n = 0;
    while start.elapsed() < Duration::from_secs(7) {
        let r = connect(&h, &sign_kid("ES256", &k1, &format!("random-{n}"), CLAIMS));
        assert!(r == Err("close 3500".into()) || r == Err("error 100".into()), "{r:?}");
        n += 1;
        std::thread::sleep(Duration::from_millis(100));
    }
    let extra = srv.hits("/keys") - before;
    assert!(extra <= 2, "{n} unknown kids caused {extra} fetches in 7 s");

    // k1 dropped by the endpoint: the next fetch (asked for by an unknown kid once the set
    // is stale) removes it, and k1 tokens are then refused for good.
    srv.keys("/keys", &[jwk("rsa", &k2, "k2", None)]);
    until_stale(&srv, "/keys");
    let before = srv.hits("/keys");
    assert_eq!(connect(&h, &sign_kid("ES256", &k1, "nobody", CLAIMS)), Err("error 100".into()));
    srv.wait_hits("/keys", before + 1, Duration::from_secs(5));
    wait_log(&h, "signing keys in use: 1 (kid k2)", Duration::from_secs(5));
    assert_eq!(connect(&h, &t1), Err("close 3500".into()), "dropped key");
    assert_eq!(connect(&h, &t2), Ok("connected".into()));
    for f in [k1, k2] {
        let _ = std::fs::remove_file(f);
    }
}

/// An endpoint down at start-up: tokens get the temporary error until the first fetch
/// succeeds (retried by Herald on its own). Later, garbage, an oversize or over-long set,
/// an error status or a closed connection each log why and keep the keys in use; unknown
/// kids are still refused.
#[test]
fn jwks_endpoint_down_or_garbage_keeps_keys() {
    let (k1, _) = keypair("ec521");
    let srv = JwksServer::start();
    srv.set("/jwks", Answer::Close);
    let h = Herald::start(&json!({"client": {"token": {"jwks_public_endpoint": srv.url("/jwks")}}}).to_string());
    let t1 = sign_kid("ES512", &k1, "k1", CLAIMS);
    srv.wait_hits("/jwks", 1, Duration::from_secs(10));
    assert_eq!(connect(&h, &t1), Err("error 100".into()), "no keys yet");
    wait_log(&h, "no keys yet", Duration::from_secs(5));
    // Up again: Herald's own retry (or this token's request) loads the set.
    srv.keys("/jwks", &[jwk("ec521", &k1, "k1", Some("ES512"))]);
    assert_eq!(connect_retrying(&h, &t1, Duration::from_secs(15)), Ok("connected".into()));

    let many: Vec<Value> = (0..101).map(|i| jwk("ec521", &k1, &format!("k{i}"), None)).collect();
    let many = json!({ "keys": many }).to_string();
    let huge = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(300 * 1024));
    for (answer, logged) in [
        (Answer::Doc(200, "<html>502 Bad Gateway</html>".into()), "malformed JWKS: not JSON"),
        (Answer::Doc(200, many), "malformed JWKS: 101 keys, more than 100"),
        (Answer::Doc(200, huge), "fetch failed reading the body"),
        (Answer::Doc(503, "{}".into()), "503"),
        (Answer::Close, "fetch failed"),
        (Answer::Doc(200, r#"{"keys":[{"kty":"oct","kid":"x","k":"AA"}]}"#.into()), "no usable signing key"),
    ] {
        srv.set("/jwks", answer);
        until_stale(&srv, "/jwks");
        let before = srv.hits("/jwks");
        let lines = h.log.lock().unwrap().len();
        // An unknown kid asks for a fetch (the set is stale: temporary error).
        assert_eq!(connect(&h, &sign_kid("ES512", &k1, "unknown", CLAIMS)), Err("error 100".into()), "{logged}");
        srv.wait_hits("/jwks", before + 1, Duration::from_secs(5));
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let log = h.log.lock().unwrap();
            if log[lines..].iter().any(|l| l.contains(logged) && l.contains("keeping the keys in use (1,")) {
                break;
            }
            assert!(Instant::now() < until, "{logged}: {:#?}", &log[lines..]);
            drop(log);
            std::thread::sleep(Duration::from_millis(20));
        }
        assert_eq!(connect(&h, &t1), Ok("connected".into()), "keys kept after {logged}");
    }
    let _ = std::fs::remove_file(k1);
}

/// One command on an open Centrifugo WebSocket: the reply, or the close code.
fn command(s: &mut std::net::TcpStream, cmd: Value) -> Result<Value, String> {
    s.write_all(&client_frame(true, 1, cmd.to_string().as_bytes())).unwrap();
    let (_, op, p) = read_frame(s).expect("an answer");
    if op == 8 {
        return Err(format!("close {}", u16::from_be_bytes([p[0], p[1]])));
    }
    Ok(serde_json::from_slice(&p).unwrap())
}

/// HTTPS: a JWKS behind a certificate the system does not trust is fetched once
/// `SSL_CERT_FILE` names it (as Go, and so Centrifugo, would), and refused (logged, tokens
/// told to retry) when it does not. Subscription tokens from their own endpoint
/// (`client.subscription_token.jwks_public_endpoint`), connection tokens by HMAC.
#[test]
fn jwks_over_https_and_subscription_tokens() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    let ca = tmp("jwks-ca.pem");
    std::fs::write(&ca, ck.cert.pem()).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
    let tls =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
    let srv = JwksServer::start_tls(Some(std::sync::Arc::new(tls)));
    let (ec521, _) = keypair("ec521");
    srv.keys("/sub", &[jwk("ec521", &ec521, "s1", Some("ES512"))]);
    let secret = "conn-secret-123";
    let cfg = json!({"client": {
        "token": {"hmac_secret_key": secret},
        "subscription_token": {"enabled": true, "jwks_public_endpoint": srv.url("/sub")}}});
    let h = Herald::start_env(&cfg.to_string(), &[("SSL_CERT_FILE", ca.to_str().unwrap())]);
    let mut s = raw_ws(&h, "/connection/websocket");
    let conn = command(&mut s, json!({"id": 1, "connect": {"token": sign_hmac("HS256", secret, CLAIMS)}})).unwrap();
    assert!(conn["connect"]["client"].is_string(), "{conn}");
    let sub = sign_kid("ES512", &ec521, "s1", r#"{"sub":"42","channel":"$room","exp":4000000000}"#);
    // Subscribe as an SDK does: a temporary error (keys still loading) means try again.
    let until = Instant::now() + Duration::from_secs(10);
    let mut id = 2;
    let r = loop {
        let r = command(&mut s, json!({"id": id, "subscribe": {"channel": "$room", "token": sub}})).unwrap();
        id += 1;
        if r["error"]["temporary"] != json!(true) || Instant::now() > until {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(r.get("subscribe").is_some(), "{r}");
    // A signature by another key under a listed kid: permission denied (103); another
    // user's token for the channel: disconnected (3500), as Centrifugo does.
    let (other, _) = keypair("ec521");
    let r = command(&mut s, json!({"id": id, "subscribe": {"channel": "$room2", "token": sign_kid("ES512", &other, "s1", r#"{"sub":"42","channel":"$room2"}"#)}})).unwrap();
    assert_eq!(r["error"]["code"], 103, "bad signature under a known kid: {r}");
    let r = command(
        &mut s,
        json!({"id": id + 1, "subscribe": {"channel": "$room3", "token": sign_kid("ES512", &ec521, "s1", r#"{"sub":"7","channel":"$room3"}"#)}}),
    );
    assert_eq!(r, Err("close 3500".into()), "another user's subscription token");

    // The same server without SSL_CERT_FILE: the certificate is not trusted, the fetch
    // fails and says why, and tokens get the temporary error.
    srv.keys("/conn", &[jwk("ec521", &ec521, "c1", None)]);
    let h2 = Herald::start(&json!({"client": {"token": {"jwks_public_endpoint": srv.url("/conn")}}}).to_string());
    wait_log(&h2, &format!("JWKS {}: fetch failed", srv.url("/conn")), Duration::from_secs(10));
    assert!(h2
        .log
        .lock()
        .unwrap()
        .iter()
        .any(|l| l.contains("fetch failed") && l.to_lowercase().contains("certificate")));
    assert_eq!(connect(&h2, &sign_kid("ES512", &ec521, "c1", CLAIMS)), Err("error 100".into()));
    assert_eq!(srv.hits("/conn"), 0, "no request got past the TLS handshake");
    for f in [ec521, other, ca] {
        let _ = std::fs::remove_file(f);
    }
}

/// `herald checktoken` fetches the JWKS itself (a command may wait on the network).
#[test]
fn checktoken_with_a_jwks() {
    let (k, _) = keypair("ec384");
    let srv = JwksServer::start();
    srv.keys("/jwks", &[jwk("ec384", &k, "cli", None)]);
    let cfg = tmp("checktoken.json");
    std::fs::write(&cfg, json!({"client": {"token": {"jwks_public_endpoint": srv.url("/jwks")}}}).to_string()).unwrap();
    let run = |token: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_herald"))
            .args(["checktoken", "--config", cfg.to_str().unwrap(), token])
            .output()
            .unwrap();
        (
            out.status.success(),
            format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)),
        )
    };
    let (ok, text) = run(&sign_kid("ES384", &k, "cli", CLAIMS));
    assert!(ok && text.contains("valid token for user \"42\""), "{text}");
    let (ok, text) = run(&sign_kid("ES384", &k, "other", CLAIMS));
    assert!(!ok && text.contains("no key with the token's kid"), "{text}");
    let _ = std::fs::remove_file(cfg);
    let _ = std::fs::remove_file(k);
}
