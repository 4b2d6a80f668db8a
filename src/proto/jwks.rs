//! JSON Web Key Sets (RFC 7517 §5) from a `jwks_public_endpoint`: parsing a fetched
//! document into a [`KeySet`], finding a token's key by `kid`, and the [`Jwks`] cell that
//! workers read and the fetcher thread fills.
//!
//! Owns: the document limits ([`MAX_JWKS_BYTES`], [`MAX_JWKS_KEYS`]), which JWKs are usable
//! for token signatures, and the rule for a `kid` the set does not have (see [`Jwks`]).
//! Called by [`super::jwt::Verifier`] (lookup, at connect / subscribe) and by the fetcher
//! (`reactor::jwks`, parse and store). Pure: no IO, no clock (times are passed in); the only
//! synchronisation is the [`Jwks`] cell, whose read lock is held just long enough to clone
//! an `Arc` and whose refresh request never blocks.
//!
//! Must never: block a worker, let a fetched document replace the keys in use unless it
//! parsed and holds at least one usable key, or let a key sign another family's tokens.

use super::jwk::{PublicKey, Scheme};
use serde_json::Value;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, RwLock};

/// Largest JWKS document taken, in bytes (a set of 100 RSA-4096 keys is about 90 KiB).
pub const MAX_JWKS_BYTES: usize = 256 * 1024;

/// Most entries a JWKS may list; a longer `keys` array is refused whole.
pub const MAX_JWKS_KEYS: usize = 100;

/// Seconds after a successful fetch during which the set is taken as the endpoint's
/// current one: a `kid` it lacks is refused as unknown rather than fetched for. It is also
/// the least time between two fetches, so tokens with made-up `kid`s cause at most one
/// fetch per this many seconds.
pub const FRESH_S: i64 = 5;

/// One usable key of a set.
#[derive(Debug, Clone)]
struct Entry {
    kid: String,
    /// The JWK's `alg`, when it names one: then only tokens with that `alg` match.
    alg: Option<Scheme>,
    key: PublicKey,
}

/// The keys of one fetched JWKS (empty before the first successful fetch).
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    entries: Vec<Entry>,
    /// Unix seconds of the fetch that brought this set; `None` until one succeeded.
    fetched_at: Option<i64>,
}

/// What a set says about a token's `kid` and `alg`.
#[derive(Debug)]
pub enum Lookup<'a> {
    /// The keys under that `kid` that may check this `alg` (one, unless the set repeats
    /// a `kid`).
    Keys(Vec<&'a PublicKey>),
    /// The `kid` is there, but none of its keys is for this `alg` (another family or
    /// curve, or the JWK's own `alg` differs).
    WrongAlgorithm,
    /// No key has that `kid`.
    Unknown,
}

/// Why a JWKS document was not taken (the keys in use stay).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwksError(pub String);

impl std::fmt::Display for JwksError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for JwksError {}

impl KeySet {
    /// Parse a JWKS document fetched at `fetched_at` (unix s). Entries that cannot check
    /// token signatures are skipped, each with a note saying why (for the log): `use`
    /// other than `sig`, `key_ops` without `verify`, no `kid`, an `alg` Herald does not
    /// verify (or not of the key's family), or a key it cannot parse (`oct`, `OKP`, a curve
    /// other than P-256/384/521). The whole document is refused when it is too large, not
    /// `{"keys": [...]}`, lists more than [`MAX_JWKS_KEYS`] entries, or leaves no usable key.
    pub fn parse(doc: &[u8], fetched_at: i64) -> Result<(KeySet, Vec<String>), JwksError> {
        if doc.len() > MAX_JWKS_BYTES {
            return Err(JwksError(format!("document is larger than {MAX_JWKS_BYTES} bytes")));
        }
        let v: Value = serde_json::from_slice(doc).map_err(|e| JwksError(format!("not JSON: {e}")))?;
        let Some(Value::Array(keys)) = v.get("keys") else {
            return Err(JwksError("not a JWK set: no \"keys\" array".into()));
        };
        if keys.len() > MAX_JWKS_KEYS {
            return Err(JwksError(format!("{} keys, more than {MAX_JWKS_KEYS}", keys.len())));
        }
        let mut entries = Vec::with_capacity(keys.len());
        let mut notes = Vec::new();
        for (i, jwk) in keys.iter().enumerate() {
            match entry(jwk) {
                Ok(e) => entries.push(e),
                Err(why) => notes.push(format!("key {i}{}: {why}", shown_kid(jwk))),
            }
        }
        if entries.is_empty() {
            let why = if notes.is_empty() { "no keys".to_string() } else { notes.join("; ") };
            return Err(JwksError(format!("no usable signing key ({why})")));
        }
        Ok((KeySet { entries, fetched_at: Some(fetched_at) }, notes))
    }

    /// The keys that may check a token with this `kid` and `alg`.
    pub fn lookup(&self, kid: &str, scheme: Scheme) -> Lookup<'_> {
        let mut any = false;
        let mut keys = Vec::new();
        for e in self.entries.iter().filter(|e| e.kid == kid) {
            any = true;
            if e.alg.is_none_or(|a| a == scheme) && e.key.fits(scheme) {
                keys.push(&e.key);
            }
        }
        match (any, keys.is_empty()) {
            (false, _) => Lookup::Unknown,
            (true, true) => Lookup::WrongAlgorithm,
            (true, false) => Lookup::Keys(keys),
        }
    }

    /// Fetched successfully less than [`FRESH_S`] seconds before `now`.
    pub fn fresh(&self, now: i64) -> bool {
        self.fetched_at.is_some_and(|t| now >= t && now - t < FRESH_S)
    }

    /// When the set was fetched (unix s), `None` before the first successful fetch.
    pub fn fetched_at(&self) -> Option<i64> {
        self.fetched_at
    }

    /// How many usable keys the set holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// The set holds no key (nothing fetched yet).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `kid`s, in document order (for the log).
    pub fn kids(&self) -> Vec<&str> {
        self.entries.iter().map(|e| e.kid.as_str()).collect()
    }
}

/// ` (kid "x")` for a note, the kid cut to 40 characters; empty when it has none.
fn shown_kid(jwk: &Value) -> String {
    match jwk.get("kid").and_then(Value::as_str) {
        Some(k) => format!(" (kid {:?})", k.chars().take(40).collect::<String>()),
        None => String::new(),
    }
}

fn entry(jwk: &Value) -> Result<Entry, String> {
    if !jwk.is_object() {
        return Err("not an object".into());
    }
    let text = |k: &str| jwk.get(k).and_then(Value::as_str);
    // RFC 7517 §4.2/§4.3: `use` and `key_ops` are optional; when present they must allow
    // signature checks. (Centrifugo also skips keys without `use`; Herald takes them.)
    match jwk.get("use") {
        None | Some(Value::Null) => {}
        Some(Value::String(u)) if u == "sig" => {}
        Some(_) => return Err("`use` is not \"sig\"".into()),
    }
    match jwk.get("key_ops") {
        None | Some(Value::Null) => {}
        Some(Value::Array(ops)) if ops.iter().any(|o| o.as_str() == Some("verify")) => {}
        Some(_) => return Err("`key_ops` does not include \"verify\"".into()),
    }
    let kid = match text("kid") {
        Some(k) if !k.is_empty() => k.to_string(),
        _ => return Err("no `kid` (tokens name their key by kid)".into()),
    };
    let alg = match jwk.get("alg") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) => {
            Some(Scheme::from_alg(a).ok_or_else(|| format!("alg {a:?} is not one Herald verifies"))?)
        }
        Some(_) => return Err("`alg` is not a string".into()),
    };
    let key = PublicKey::from_jwk(jwk).map_err(|e| e.to_string())?;
    if let Some(a) = alg {
        if !key.fits(a) {
            return Err("its `alg` is not for this key's family or curve".into());
        }
    }
    Ok(Entry { kid, alg, key })
}

/// The key set of one endpoint, shared by every worker and the fetcher thread. Workers
/// take the current set ([`Jwks::current`]: an `Arc` clone under a read lock held for no
/// longer) and ask for a fetch ([`Jwks::request_refresh`]: a `try_send` on a channel of one
/// slot, which never blocks and coalesces a burst into one request).
///
/// A token whose `kid` the set lacks is refused for good (`UnknownKey`, "invalid token")
/// when the set is [fresh](KeySet::fresh); otherwise a fetch is asked for and the token gets
/// `KeysUnavailable` (Centrifugo's temporary error 100, so SDKs retry with backoff and
/// find the key once it has been fetched).
#[derive(Debug)]
pub struct Jwks {
    set: RwLock<Arc<KeySet>>,
    wake: SyncSender<()>,
}

impl Jwks {
    /// An empty cell and the receiving end of its refresh requests (for the fetcher).
    pub fn new() -> (Arc<Jwks>, Receiver<()>) {
        let (wake, rx) = std::sync::mpsc::sync_channel(1);
        (Arc::new(Jwks { set: RwLock::new(Arc::new(KeySet::default())), wake }), rx)
    }

    /// The set in use.
    pub fn current(&self) -> Arc<KeySet> {
        // A poisoned lock still holds a whole Arc: a panic cannot leave it half-written.
        self.set.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Put a newly fetched set in use.
    pub fn replace(&self, set: KeySet) {
        *self.set.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(set);
    }

    /// Ask the fetcher for a new fetch; never blocks (a request already waiting covers it).
    pub fn request_refresh(&self) {
        let _ = self.wake.try_send(());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::jwk::tests::{OPENSSL_P521_X, OPENSSL_P521_Y};
    use serde_json::json;

    fn p521(kid: &str) -> Value {
        json!({"kty": "EC", "crv": "P-521", "kid": kid, "use": "sig", "x": OPENSSL_P521_X, "y": OPENSSL_P521_Y})
    }

    fn rsa(kid: &str) -> Value {
        // A 2048-bit modulus of 0x80 then 0x01s: parses (Herald checks shape, not primality).
        let n = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            [&[0x80u8][..], &[1; 255]].concat(),
        );
        json!({"kty": "RSA", "kid": kid, "n": n, "e": "AQAB"})
    }

    fn doc(keys: Vec<Value>) -> Vec<u8> {
        json!({ "keys": keys }).to_string().into_bytes()
    }

    #[test]
    fn parse_and_lookup() {
        let mut p = p521("ec");
        p["alg"] = json!("ES512");
        let mut r = rsa("r");
        r["alg"] = json!("RS256");
        let (set, notes) = KeySet::parse(&doc(vec![p, r, rsa("r2")]), 100).unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        assert_eq!((set.len(), set.kids()), (3, vec!["ec", "r", "r2"]));
        assert!(matches!(set.lookup("ec", Scheme::Es(512)), Lookup::Keys(k) if k.len() == 1));
        assert!(matches!(set.lookup("ec", Scheme::Es(256)), Lookup::WrongAlgorithm));
        assert!(matches!(set.lookup("ec", Scheme::Rs(512)), Lookup::WrongAlgorithm));
        // A JWK's alg binds it: RS256 only, though RSA keys check RS384/512 too.
        assert!(matches!(set.lookup("r", Scheme::Rs(256)), Lookup::Keys(_)));
        assert!(matches!(set.lookup("r", Scheme::Rs(512)), Lookup::WrongAlgorithm));
        // Without alg, any alg of the key's family.
        assert!(matches!(set.lookup("r2", Scheme::Rs(512)), Lookup::Keys(_)));
        assert!(matches!(set.lookup("r2", Scheme::Es(256)), Lookup::WrongAlgorithm));
        assert!(matches!(set.lookup("nope", Scheme::Rs(256)), Lookup::Unknown));
        assert!(matches!(set.lookup("", Scheme::Rs(256)), Lookup::Unknown));
        // Kids are exact.
        assert!(matches!(set.lookup("EC", Scheme::Es(512)), Lookup::Unknown));
    }

    #[test]
    fn unusable_entries_skipped_with_a_note() {
        let mut enc = rsa("enc");
        enc["use"] = json!("enc");
        let mut ops = rsa("ops");
        ops["key_ops"] = json!(["encrypt"]);
        let mut oaep = rsa("oaep");
        oaep["alg"] = json!("RSA-OAEP");
        let mut cross = rsa("cross");
        cross["alg"] = json!("ES256");
        let mut none = rsa("none");
        none["alg"] = json!("none");
        let mut hs = rsa("hs");
        hs["alg"] = json!("HS256");
        let mut no_kid = rsa("");
        no_kid.as_object_mut().unwrap().remove("kid");
        let keys = vec![
            enc,
            ops,
            oaep,
            cross,
            none,
            hs,
            no_kid,
            rsa(""),
            json!({"kty": "oct", "kid": "o", "k": "c2VjcmV0"}),
            json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}),
            json!({"kty": "EC", "kid": "k1", "crv": "secp256k1", "x": "AA", "y": "AA"}),
            json!("a string"),
            p521("good"),
        ];
        let n = keys.len();
        let (set, notes) = KeySet::parse(&doc(keys), 7).unwrap();
        assert_eq!(set.kids(), vec!["good"]);
        assert_eq!(notes.len(), n - 1, "{notes:?}");
        assert!(notes[0].starts_with("key 0 (kid \"enc\"): `use`"), "{notes:?}");
        assert!(notes.iter().any(|n| n.contains("RSA-OAEP")), "{notes:?}");
        // A set with only unusable keys is refused whole, saying why.
        let e = KeySet::parse(&doc(vec![json!({"kty": "oct", "kid": "o", "k": "AA"})]), 7).unwrap_err();
        assert!(e.0.contains("no usable signing key") && e.0.contains("kty"), "{e}");
    }

    #[test]
    fn malformed_documents_refused() {
        let big = format!(r#"{{"keys":[],"pad":"{}"}}"#, "x".repeat(MAX_JWKS_BYTES));
        let many: Vec<Value> = (0..=MAX_JWKS_KEYS).map(|i| p521(&i.to_string())).collect();
        for (d, want) in [
            (b"".to_vec(), "not JSON"),
            (b"<html>502 Bad Gateway</html>".to_vec(), "not JSON"),
            (b"{\"keys\": [".to_vec(), "not JSON"),
            (b"[]".to_vec(), "no \"keys\""),
            (b"{\"keys\": {}}".to_vec(), "no \"keys\""),
            (b"{\"key\": []}".to_vec(), "no \"keys\""),
            (b"{\"keys\": []}".to_vec(), "no usable signing key (no keys)"),
            (big.into_bytes(), "larger than"),
            (doc(many), "more than 100"),
        ] {
            let e = KeySet::parse(&d, 1).unwrap_err();
            assert!(e.0.contains(want), "{e} / {want}");
        }
        // Exactly MAX_JWKS_KEYS is fine.
        let max: Vec<Value> = (0..MAX_JWKS_KEYS).map(|i| p521(&i.to_string())).collect();
        assert_eq!(KeySet::parse(&doc(max), 1).unwrap().0.len(), MAX_JWKS_KEYS);
    }

    #[test]
    fn freshness_and_the_cell() {
        let (set, _) = KeySet::parse(&doc(vec![p521("a")]), 1000).unwrap();
        assert!(set.fresh(1000) && set.fresh(1000 + FRESH_S - 1));
        assert!(!set.fresh(1000 + FRESH_S) && !set.fresh(999));
        assert!(!KeySet::default().fresh(0));
        assert_eq!(KeySet::default().fetched_at(), None);

        let (jwks, rx) = Jwks::new();
        assert!(jwks.current().is_empty());
        // Requests coalesce: one slot, never blocking.
        for _ in 0..1000 {
            jwks.request_refresh();
        }
        assert!(rx.try_recv().is_ok());
        assert!(rx.try_recv().is_err());
        let before = jwks.current();
        jwks.replace(set);
        assert_eq!(jwks.current().kids(), vec!["a"]);
        // A reader's Arc outlives a replacement.
        assert!(before.is_empty());
    }

    #[test]
    fn garbage_never_panics() {
        let mut rng = crate::proto::testrng::Rng(0x5eed);
        let bits = [
            "{", "}", "[", "]", ",", ":", "\"keys\"", "\"kty\"", "\"EC\"", "\"RSA\"", "\"kid\"", "\"x\"", "\"AA\"",
            "null", "1",
        ];
        for _ in 0..5000 {
            let s: String = (0..rng.below(40)).map(|_| bits[rng.below(bits.len())]).collect();
            let _ = KeySet::parse(s.as_bytes(), 0);
        }
    }
}
