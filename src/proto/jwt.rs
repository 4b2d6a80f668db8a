//! Centrifugo v6 connection and subscription tokens: JWT verification (HMAC, RSA, ECDSA,
//! keys from a JWKS) and HS256 signing.
//!
//! Owns: parsing a JWS compact token, checking its header and signature, and
//! turning its claims into [`ConnClaims`] or [`SubClaims`] with the semantics of Centrifugo v6
//! (`internal/jwtverify` over `cristalhq/jwt/v5`). Pure: no IO, no clock (the caller passes
//! `now` in unix seconds), no logging.
//!
//! Called by: the Centrifugo transport on `connect` / `refresh` ([`Verifier::verify_connect`])
//! and `subscribe` / `sub_refresh` ([`Verifier::verify_subscribe`]); `herald gentoken`
//! ([`sign_hs256`]) and `herald checktoken` ([`decode_unverified`]).
//!
//! Must never: log or format a token or the secret (`Secret`'s `Debug` is redacted and no
//! error carries token bytes), panic on any input, or accept a token whose signature it did
//! not check. The only way to get claims for authorisation is [`Verified`], which only this
//! module can build.
//!
//! Rules, with what Centrifugo v6 does:
//! - Compact form `header.payload.signature`, each part strict unpadded base64url (as Go's
//!   `base64.RawURLEncoding`; we also reject non-canonical trailing bits). Longer than
//!   [`MAX_TOKEN_LEN`] is [`TokenError::Malformed`].
//! - Header: a JSON object whose `alg` is exactly one of `HS256`, `HS384`, `HS512` (checked
//!   with the HMAC secret), `RS256`, `RS384`, `RS512`, `ES256`, `ES384`, `ES512` (checked
//!   with a configured public key of that family and curve, see [`super::jwk`]); anything
//!   else (`none`, `EdDSA`, missing, `hs256`), or a family with no key configured, is
//!   [`TokenError::BadAlgorithm`]. An HS token is never checked with a public key nor an
//!   RS/ES token with the secret (no algorithm confusion). `typ`, if present, must be `JWT`
//!   (any case); a `crit` header is refused (RFC 7515 §4.1.11).
//! - Signature: HMAC over `header.payload` compared in constant time, RSASSA-PKCS1-v1_5 /
//!   fixed-size ECDSA on P-256 and P-384 checked by `ring`, fixed-size ECDSA on P-521 by
//!   RustCrypto's `p521`.
//! - With a JWKS ([`Verifier::with_jwks`], Centrifugo's `jwks_public_endpoint`): RS* / ES*
//!   tokens need a `kid` header (else `Malformed`, as Centrifugo's "kid is not provided")
//!   and are checked with that key only; a key of another family or curve, or whose JWK
//!   `alg` differs, is `BadAlgorithm`. A `kid` the set lacks is `UnknownKey` when the set
//!   was fetched moments ago, else `KeysUnavailable` (and a fetch is asked for): see
//!   [`super::jwks::Jwks`]. Centrifugo fetches there and then, blocking the connect;
//!   Herald's workers never wait on the network.
//! - Time: `exp` is valid while `now < exp + leeway`, so `now == exp` is expired (cristalhq:
//!   `ExpiresAt.After(now)`); `nbf` is valid once `now + leeway >= nbf` (cristalhq:
//!   `NotBefore.Before(now)` with a sub-second clock). Leeway defaults to 0, as in Centrifugo,
//!   which has none. `iat` and `jti` are type-checked only. Fractional dates are accepted
//!   (RFC 7519 NumericDate); `exp` is rounded down and `nbf` up, the safe direction.
//! - `aud` (string or array of strings) and `iss` are checked only when configured; a
//!   mismatch is `Malformed` (Centrifugo: "invalid token").
//! - A claim of the wrong JSON type is `Malformed`; `null` counts as absent. Unlike Go we
//!   accept no quoted numbers (`"exp": "123"`) and no case-insensitive claim names.
//! - Order as in Centrifugo: structure, header, signature, claim types, `aud`/`iss`, the
//!   `channel` claim rules, `exp`/`nbf`, then base64 fields (`b64info`, `b64data`, and those
//!   inside `subs`). So an expired token reports `Expired` only if its signature is good.
//!
//! Left to the caller (as Centrifugo does it in its client handler, not its verifier):
//! - subscription token `sub` must equal the connection's user ID, and `client`, if not
//!   empty, must equal the connection's client ID (both: "invalid token" / disconnect);
//! - the channels in `channels` / `subs` must exist (else "unknown channel"); when `subs`
//!   is non-empty, Centrifugo ignores `channels`;
//! - connection expiry: see [`ConnClaims::connection_expires_at`].

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::fmt;

type HmacSha256 = Hmac<Sha256>;

/// Longest token accepted, in bytes.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// `b64info` / `b64data` as Go's `base64.StdEncoding` reads them: standard alphabet, padding
/// required, non-zero trailing bits tolerated.
const STD_B64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// The HMAC key (`client.token.hmac_secret_key`). Its `Debug` never shows the key.
#[derive(Clone)]
pub struct Secret(Vec<u8>);

impl Secret {
    /// Copy `key` (the raw bytes of the configured secret string). An empty key is allowed
    /// here; [`Verifier::new`] treats it as "tokens disabled".
    pub fn new(key: &[u8]) -> Self {
        Secret(key.to_vec())
    }

    /// HMAC-SHA256 keyed with this secret. Key preparation as RFC 2104 (and `hmac`'s own
    /// `new_from_slice`): keys longer than the 64-byte block are hashed, then zero-padded.
    /// Done by hand because `KeyInit::new` on a full block is infallible.
    fn mac(&self) -> HmacSha256 {
        let mut block = [0u8; 64];
        if self.0.len() > block.len() {
            block[..32].copy_from_slice(&Sha256::digest(&self.0));
        } else {
            block[..self.0.len()].copy_from_slice(&self.0);
        }
        <HmacSha256 as Mac>::new(&block.into())
    }
}

impl Secret {
    /// Check an HMAC-SHA384/512 signature (`HS384`, `HS512`, which Centrifugo also takes;
    /// `hmac` prepares the key as RFC 2104 for these 128-byte blocks).
    fn verify_wide(&self, bits: u16, msg: &[u8], sig: &[u8]) -> bool {
        match bits {
            384 => Hmac::<sha2::Sha384>::new_from_slice(&self.0)
                .map(|mut m| {
                    m.update(msg);
                    m.verify_slice(sig).is_ok()
                })
                .unwrap_or(false),
            512 => Hmac::<sha2::Sha512>::new_from_slice(&self.0)
                .map(|mut m| {
                    m.update(msg);
                    m.verify_slice(sig).is_ok()
                })
                .unwrap_or(false),
            _ => false,
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a token was refused. Centrifugo's mapping: `Expired` and `NotYetValid` are its
/// "token expired" (client should refresh); everything else is "invalid token".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Not a well-formed token or claims of the wrong shape; the text says which rule failed
    /// (never token contents).
    Malformed(&'static str),
    /// Header `alg` is not one Herald checks, or no key of its family is configured.
    BadAlgorithm,
    /// HMAC does not match.
    BadSignature,
    /// `exp` has passed.
    Expired,
    /// `nbf` is in the future.
    NotYetValid,
    /// Subscription token for another channel than the one requested.
    WrongChannel,
    /// No (or an empty) HMAC secret is configured: tokens cannot be checked.
    Disabled,
    /// Checked against a JWKS that was fetched moments ago and has no key with the token's
    /// `kid`: refused for good ("invalid token").
    UnknownKey,
    /// Checked against a JWKS that has no key with the token's `kid` yet, and a fetch has
    /// been asked for (the endpoint was not fetched yet, has been failing, or was fetched
    /// too long ago to rule out a new key). Temporary: Centrifugo's error 100, and the
    /// client tries again.
    KeysUnavailable,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenError::Malformed(why) => write!(f, "malformed token: {why}"),
            TokenError::BadAlgorithm => {
                f.write_str("token algorithm not accepted (HS256/384/512 with hmac_secret_key; RS256/384/512 or ES256/384/512 with a public key of that family and curve)")
            }
            TokenError::BadSignature => f.write_str("bad token signature"),
            TokenError::Expired => f.write_str("token expired"),
            TokenError::NotYetValid => f.write_str("token not valid yet (nbf)"),
            TokenError::WrongChannel => f.write_str("subscription token is for another channel"),
            TokenError::Disabled => f.write_str("token authentication is not configured"),
            TokenError::UnknownKey => f.write_str("no key with the token's kid in the JWKS"),
            TokenError::KeysUnavailable => {
                f.write_str("the token's key is not loaded (yet) from the JWKS endpoint: a fetch was asked for, try again")
            }
        }
    }
}

impl std::error::Error for TokenError {}

/// Connection token claims (Centrifugo v6).
///
/// `sub`: user ID, `""` for anonymous. `exp`: token expiry (unix s). `info`: connection info
/// shown in presence, join/leave and publications; from `b64info` (standard base64, which
/// wins when non-empty, and must decode to JSON here) or `info`. `channels`: server-side
/// subscriptions. `subs`: channel -> options object, kept raw (`info`, `b64info`, `data`,
/// `b64data`, `override` with `{"value": bool}` fields); shapes and base64 are validated,
/// but the caller decodes `b64info`/`b64data` (standard base64, padded). `meta`: server-only
/// JSON, never sent to clients. `expire_at`: overrides `exp` for connection expiry, `0` =
/// never. A connection token must not carry a `channel` claim.
#[derive(Debug, Clone, Default)]
pub struct ConnClaims {
    /// User ID the connection acts as; `""` (claim absent) is the anonymous user.
    pub sub: String,
    /// Token expiry in unix seconds (fractions rounded down); already checked to be in the
    /// future. Used as the connection expiry unless `expire_at` is present.
    pub exp: Option<i64>,
    /// Connection info JSON: decoded `b64info` when that is non-empty, else `info` as given.
    pub info: Option<Value>,
    /// Channels to subscribe the connection to server-side; ignored by the caller when
    /// `subs` is non-empty.
    pub channels: Vec<String>,
    /// Server-side subscriptions: channel name to raw subscribe options (shape and base64
    /// checked, contents not decoded). When non-empty its keys replace `channels`.
    pub subs: Map<String, Value>,
    /// Server-only JSON (Centrifugo hands it to its proxies); never sent to clients. Parsed
    /// but not otherwise used by Herald at present.
    pub meta: Option<Value>,
    /// Connection expiry override in unix seconds; `<= 0` means the connection never
    /// expires (see [`ConnClaims::connection_expires_at`]).
    pub expire_at: Option<i64>,
}

impl ConnClaims {
    /// When the connection must be refreshed, as Centrifugo computes it: `expire_at` if
    /// present (`<= 0` = never), else `exp`, else never (`None`).
    pub fn connection_expires_at(&self) -> Option<i64> {
        effective_expiry(self.expire_at, self.exp)
    }
}

/// Subscription token claims (Centrifugo v6): `sub` (must equal the connection's user: the
/// caller checks), `channel` (required, equals the requested channel), `exp`, `nbf`,
/// `info`/`b64info` (channel info), `expire_at` (subscription expiry override, `0` = never).
///
/// Beyond the required API: `client` (if non-empty, the caller must check it equals the
/// connection's client ID), `data`/`b64data` (JSON sent in the subscribe reply) and
/// `override_` (the raw `override` object; `override` is a Rust keyword).
#[derive(Debug, Clone, Default)]
pub struct SubClaims {
    /// User ID the token was issued for; the caller must compare it with the connection's
    /// user (`""` = anonymous).
    pub sub: String,
    /// The channel the token grants; always non-empty and equal to the channel passed to
    /// [`Verifier::verify_subscribe`].
    pub channel: String,
    /// Token expiry in unix seconds (fractions rounded down); already checked to be in the
    /// future. Used as the subscription expiry unless `expire_at` is present.
    pub exp: Option<i64>,
    /// Channel info JSON for this subscriber (presence, join/leave, publications it sends):
    /// decoded `b64info` when that is non-empty, else `info` as given.
    pub info: Option<Value>,
    /// Subscription expiry override in unix seconds; `<= 0` means never (see
    /// [`SubClaims::subscription_expires_at`]).
    pub expire_at: Option<i64>,
    /// Client ID the token is bound to, or `""` for any client of the user.
    pub client: String,
    /// Subscribe-reply data: decoded `b64data` when non-empty, else `data`. Validated and
    /// returned, but Herald's subscribe reply does not carry it at present.
    pub data: Option<Value>,
    /// The raw `override` object (`presence`, `join_leave`, `force_push_join_leave`,
    /// `force_positioning`, `force_recovery`, each `{"value": bool}`); shape-checked only,
    /// not applied by Herald at present.
    pub override_: Option<Value>,
}

impl SubClaims {
    /// When the subscription must be refreshed: `expire_at` if present (`<= 0` = never),
    /// else `exp`, else never (`None`).
    pub fn subscription_expires_at(&self) -> Option<i64> {
        effective_expiry(self.expire_at, self.exp)
    }
}

fn effective_expiry(expire_at: Option<i64>, exp: Option<i64>) -> Option<i64> {
    match expire_at {
        Some(t) if t > 0 => Some(t),
        Some(_) => None,
        None => exp,
    }
}

/// Proof that a token was verified: only this module can build it (private field).
pub struct Verified<T> {
    claims: T,
    _private: (),
}

impl<T> Verified<T> {
    /// Borrow the verified claims.
    pub fn claims(&self) -> &T {
        &self.claims
    }

    /// Take the verified claims, giving up the proof (use once the decision is made).
    pub fn into_claims(self) -> T {
        self.claims
    }
}

impl<T: fmt::Debug> fmt::Debug for Verified<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Verified").field(&self.claims).finish()
    }
}

/// Checks tokens against one secret and the optional `aud` / `iss`. Build one per secret
/// (Centrifugo's `client.token` and, if separate, `client.subscription_token`).
#[derive(Debug, Clone)]
pub struct Verifier {
    secret: Option<Secret>,
    /// Public keys for RS* / ES* tokens (`rsa_public_key`, `ecdsa_public_key`).
    keys: Vec<super::jwk::PublicKey>,
    /// The key set of a `jwks_public_endpoint`: when set, RS* / ES* tokens are checked
    /// against it alone, by `kid`.
    jwks: Option<std::sync::Arc<super::jwks::Jwks>>,
    leeway_s: i64,
    audience: Option<String>,
    issuer: Option<String>,
}

/// Registered claims shared by both token kinds, type-checked.
struct Registered {
    sub: String,
    exp: Option<i64>,
    nbf: Option<i64>,
    iss: Option<String>,
    aud: Vec<String>,
}

impl Verifier {
    /// `None` or an empty secret: every verification is [`TokenError::Disabled`]
    /// (Centrifugo enables HMAC only for a non-empty key). Leeway 0, no `aud`/`iss` check.
    pub fn new(secret: Option<Secret>) -> Self {
        let secret = secret.filter(|s| !s.0.is_empty());
        Verifier { secret, keys: Vec::new(), jwks: None, leeway_s: 0, audience: None, issuer: None }
    }

    /// Also accept tokens signed with this public key (RS256/384/512 for an RSA key,
    /// ES256, ES384 or ES512 for a P-256, P-384 or P-521 key). Each family checks only against its own keys:
    /// an RS or ES token is never checked with the HMAC secret, nor an HS token with a
    /// public key (no algorithm confusion).
    pub fn with_public_key(mut self, key: super::jwk::PublicKey) -> Self {
        self.keys.push(key);
        self
    }

    /// Check RS* / ES* tokens against this JWKS (by the `kid` header, which is then
    /// required) instead of the configured public keys. The caller leaves out the HMAC
    /// secret and PEM keys, as Centrifugo does when `jwks_public_endpoint` is set.
    pub fn with_jwks(mut self, jwks: std::sync::Arc<super::jwks::Jwks>) -> Self {
        self.jwks = Some(jwks);
        self
    }

    /// Clock skew tolerated on `exp` and `nbf`, in seconds (negative counts as 0).
    /// Centrifugo has none; keep 0 for identical behaviour.
    pub fn with_leeway(mut self, s: i64) -> Self {
        self.leeway_s = s.max(0);
        self
    }

    /// Require `aud` to be (or contain) this string. `None` or `""`: not checked.
    pub fn with_audience(mut self, a: Option<String>) -> Self {
        self.audience = a.filter(|a| !a.is_empty());
        self
    }

    /// Require `iss` to be this string. `None` or `""`: not checked.
    pub fn with_issuer(mut self, i: Option<String>) -> Self {
        self.issuer = i.filter(|i| !i.is_empty());
        self
    }

    /// Verify a connection token. `now` in unix seconds.
    pub fn verify_connect(&self, token: &str, now: i64) -> Result<Verified<ConnClaims>, TokenError> {
        let c = self.authenticate(token, now)?;
        let reg = registered(&c)?;
        let channel = str_claim(&c, "channel", "channel must be a string")?;
        let expire_at = int_claim(&c, "expire_at", "expire_at must be an integer")?;
        let info = present(&c, "info").cloned();
        let b64info = str_claim(&c, "b64info", "b64info must be a string")?;
        let channels = match present(&c, "channels") {
            None => Vec::new(),
            Some(Value::Array(items)) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    match item {
                        Value::String(s) => out.push(s.clone()),
                        _ => return Err(TokenError::Malformed("channels must be an array of strings")),
                    }
                }
                out
            }
            Some(_) => return Err(TokenError::Malformed("channels must be an array of strings")),
        };
        let subs = match present(&c, "subs") {
            None => Map::new(),
            Some(Value::Object(m)) => {
                for opts in m.values() {
                    check_sub_options(opts)?;
                }
                m.clone()
            }
            Some(_) => return Err(TokenError::Malformed("subs must be an object")),
        };
        let meta = present(&c, "meta").cloned();

        self.check_audience_issuer(&reg)?;
        if channel.as_deref().is_some_and(|ch| !ch.is_empty()) {
            return Err(TokenError::Malformed("connection token must not have a channel claim"));
        }
        self.check_times(&reg, now)?;
        let info = pick_b64_or_raw(b64info, info, "b64info is not valid base64", "b64info is not JSON")?;
        for opts in subs.values() {
            check_sub_options_base64(opts)?;
        }

        let claims = ConnClaims { sub: reg.sub, exp: reg.exp, info, channels, subs, meta, expire_at };
        Ok(Verified { claims, _private: () })
    }

    /// Verify a subscription token for `channel`. `now` in unix seconds. The caller must
    /// still check `sub` (and a non-empty `client`) against the connection.
    pub fn verify_subscribe(&self, token: &str, channel: &str, now: i64) -> Result<Verified<SubClaims>, TokenError> {
        let c = self.authenticate(token, now)?;
        let reg = registered(&c)?;
        let token_channel = str_claim(&c, "channel", "channel must be a string")?.unwrap_or_default();
        let client = str_claim(&c, "client", "client must be a string")?.unwrap_or_default();
        let expire_at = int_claim(&c, "expire_at", "expire_at must be an integer")?;
        // The subscription options sit at the top level of a subscription token.
        check_sub_options_map(&c)?;
        let info = present(&c, "info").cloned();
        let b64info = str_claim(&c, "b64info", "b64info must be a string")?;
        let data = present(&c, "data").cloned();
        let b64data = str_claim(&c, "b64data", "b64data must be a string")?;
        let override_ = present(&c, "override").cloned();

        self.check_audience_issuer(&reg)?;
        self.check_times(&reg, now)?;
        if token_channel.is_empty() {
            return Err(TokenError::Malformed("subscription token needs a channel claim"));
        }
        let info = pick_b64_or_raw(b64info, info, "b64info is not valid base64", "b64info is not JSON")?;
        let data = pick_b64_or_raw(b64data, data, "b64data is not valid base64", "b64data is not JSON")?;
        if token_channel != channel {
            return Err(TokenError::WrongChannel);
        }

        let claims =
            SubClaims { sub: reg.sub, channel: token_channel, exp: reg.exp, info, expire_at, client, data, override_ };
        Ok(Verified { claims, _private: () })
    }

    /// Structure, header and signature; returns the claims object.
    fn authenticate(&self, token: &str, now: i64) -> Result<Map<String, Value>, TokenError> {
        if self.secret.is_none() && self.keys.is_empty() && self.jwks.is_none() {
            return Err(TokenError::Disabled);
        }
        let (h, p, s) = split_token(token)?;
        let header = json_object(&b64url(h, "header is not base64url")?, "header is not a JSON object")?;
        let alg = check_header(&header)?;
        let payload = b64url(p, "payload is not base64url")?;
        let signature = b64url(s, "signature is not base64url")?;
        // `h.p` is a prefix of `token`: h and p are its first two parts.
        let signed = &token.as_bytes()[..h.len() + 1 + p.len()];
        let good = match alg {
            Alg::Hs(256) => {
                let secret = self.secret.as_ref().ok_or(TokenError::BadAlgorithm)?;
                let mut mac = secret.mac();
                mac.update(signed);
                mac.verify_slice(&signature).is_ok()
            }
            Alg::Hs(bits) => {
                self.secret.as_ref().ok_or(TokenError::BadAlgorithm)?.verify_wide(bits, signed, &signature)
            }
            Alg::Key(scheme) if self.jwks.is_some() => {
                self.check_with_jwks(&header, scheme, now, signed, &signature)?
            }
            Alg::Key(scheme) => {
                let mut fitting = self.keys.iter().filter(|k| k.fits(scheme)).peekable();
                if fitting.peek().is_none() {
                    return Err(TokenError::BadAlgorithm);
                }
                fitting.any(|k| k.verify(scheme, signed, &signature))
            }
        };
        if !good {
            return Err(TokenError::BadSignature);
        }
        json_object(&payload, "claims are not a JSON object")
    }

    /// An RS* / ES* signature checked with the JWKS key the `kid` header names. The set is
    /// an `Arc` taken from the cell: no lock is held while the signature is checked.
    fn check_with_jwks(
        &self,
        header: &Map<String, Value>,
        scheme: super::jwk::Scheme,
        now: i64,
        signed: &[u8],
        signature: &[u8],
    ) -> Result<bool, TokenError> {
        use super::jwks::Lookup;
        let Some(jwks) = &self.jwks else { return Err(TokenError::BadAlgorithm) };
        // Centrifugo: "jwks: kid is not provided" is an invalid token.
        let kid = match present(header, "kid") {
            Some(Value::String(k)) if !k.is_empty() => k,
            Some(Value::String(_)) | None => {
                return Err(TokenError::Malformed("a token checked with a JWKS needs a kid"))
            }
            Some(_) => return Err(TokenError::Malformed("kid header must be a string")),
        };
        let set = jwks.current();
        match set.lookup(kid, scheme) {
            Lookup::Keys(keys) => Ok(keys.iter().any(|k| k.verify(scheme, signed, signature))),
            Lookup::WrongAlgorithm => Err(TokenError::BadAlgorithm),
            Lookup::Unknown if set.fresh(now) => Err(TokenError::UnknownKey),
            Lookup::Unknown => {
                jwks.request_refresh();
                Err(TokenError::KeysUnavailable)
            }
        }
    }

    fn check_audience_issuer(&self, reg: &Registered) -> Result<(), TokenError> {
        if let Some(want) = &self.audience {
            if !reg.aud.iter().any(|a| a == want) {
                return Err(TokenError::Malformed("aud does not match the configured audience"));
            }
        }
        if let Some(want) = &self.issuer {
            if reg.iss.as_deref() != Some(want.as_str()) {
                return Err(TokenError::Malformed("iss does not match the configured issuer"));
            }
        }
        Ok(())
    }

    fn check_times(&self, reg: &Registered, now: i64) -> Result<(), TokenError> {
        if let Some(exp) = reg.exp {
            if now >= exp.saturating_add(self.leeway_s) {
                return Err(TokenError::Expired);
            }
        }
        if let Some(nbf) = reg.nbf {
            if now.saturating_add(self.leeway_s) < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        Ok(())
    }
}

/// For `herald gentoken` and tests: an HS256 token (header `{"alg":"HS256","typ":"JWT"}`)
/// with the given claims, which should be a JSON object (anything else will not verify).
pub fn sign_hs256(secret: &Secret, claims: &Value) -> String {
    let mut out = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(claims.to_string()));
    let mut mac = secret.mac();
    mac.update(out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    out
}

/// Decode header and claims without verifying anything (for `herald checktoken` to show
/// what a bad token contains). Never use the result for authorisation. The signature part
/// is not decoded, so a token with a damaged signature still shows its contents.
pub fn decode_unverified(token: &str) -> Result<(Value, Value), TokenError> {
    let (h, p, _) = split_token(token)?;
    let header = serde_json::from_slice(&b64url(h, "header is not base64url")?)
        .map_err(|_| TokenError::Malformed("header is not JSON"))?;
    let claims = serde_json::from_slice(&b64url(p, "payload is not base64url")?)
        .map_err(|_| TokenError::Malformed("claims are not JSON"))?;
    Ok((header, claims))
}

fn split_token(token: &str) -> Result<(&str, &str, &str), TokenError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(TokenError::Malformed("token is longer than 16 KiB"));
    }
    let mut parts = token.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(h), Some(p), Some(s), None) => Ok((h, p, s)),
        _ => Err(TokenError::Malformed("token is not three dot-separated parts")),
    }
}

fn b64url(part: &str, why: &'static str) -> Result<Vec<u8>, TokenError> {
    URL_SAFE_NO_PAD.decode(part).map_err(|_| TokenError::Malformed(why))
}

fn json_object(bytes: &[u8], why: &'static str) -> Result<Map<String, Value>, TokenError> {
    match serde_json::from_slice(bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(TokenError::Malformed(why)),
    }
}

/// A token's signature algorithm.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    /// HMAC with SHA-256/384/512.
    Hs(u16),
    /// A public-key scheme.
    Key(super::jwk::Scheme),
}

fn check_header(header: &Map<String, Value>) -> Result<Alg, TokenError> {
    use super::jwk::Scheme;
    let alg = match header.get("alg") {
        Some(Value::String(alg)) => match alg.as_str() {
            "HS256" => Alg::Hs(256),
            "HS384" => Alg::Hs(384),
            "HS512" => Alg::Hs(512),
            other => Alg::Key(Scheme::from_alg(other).ok_or(TokenError::BadAlgorithm)?),
        },
        _ => return Err(TokenError::BadAlgorithm),
    };
    match present(header, "typ") {
        None => {}
        Some(Value::String(typ)) if typ.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(TokenError::Malformed("typ header must be JWT")),
    }
    if present(header, "crit").is_some() {
        return Err(TokenError::Malformed("crit header is not supported"));
    }
    Ok(alg)
}

/// The claim, unless absent or `null` (Go's decoder leaves the field unset for `null`).
fn present<'a>(c: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    match c.get(key) {
        None | Some(Value::Null) => None,
        Some(v) => Some(v),
    }
}

fn str_claim(c: &Map<String, Value>, key: &str, why: &'static str) -> Result<Option<String>, TokenError> {
    match present(c, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(TokenError::Malformed(why)),
    }
}

/// An integer claim (Go `*int64`: no fractions, no exponents).
fn int_claim(c: &Map<String, Value>, key: &str, why: &'static str) -> Result<Option<i64>, TokenError> {
    match present(c, key) {
        None => Ok(None),
        Some(Value::Number(n)) => n.as_i64().map(Some).ok_or(TokenError::Malformed(why)),
        Some(_) => Err(TokenError::Malformed(why)),
    }
}

/// A NumericDate (RFC 7519): seconds, possibly fractional; rounded up or down.
fn date_claim(c: &Map<String, Value>, key: &str, round_up: bool, why: &'static str) -> Result<Option<i64>, TokenError> {
    let n = match present(c, key) {
        None => return Ok(None),
        Some(Value::Number(n)) => n,
        Some(_) => return Err(TokenError::Malformed(why)),
    };
    if let Some(i) = n.as_i64() {
        return Ok(Some(i));
    }
    let f = n.as_f64().ok_or(TokenError::Malformed(why))?;
    let f = if round_up { f.ceil() } else { f.floor() };
    // i64::MAX as f64 is 2^63, itself out of range; NaN fails both comparisons.
    if f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Ok(Some(f as i64))
    } else {
        Err(TokenError::Malformed(why))
    }
}

fn registered(c: &Map<String, Value>) -> Result<Registered, TokenError> {
    let sub = str_claim(c, "sub", "sub must be a string")?.unwrap_or_default();
    let exp = date_claim(c, "exp", false, "exp must be a number")?;
    let nbf = date_claim(c, "nbf", true, "nbf must be a number")?;
    date_claim(c, "iat", false, "iat must be a number")?;
    str_claim(c, "jti", "jti must be a string")?;
    let iss = str_claim(c, "iss", "iss must be a string")?;
    let aud = match present(c, "aud") {
        None => Vec::new(),
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(a) => out.push(a.clone()),
                    _ => return Err(TokenError::Malformed("aud must be a string or an array of strings")),
                }
            }
            out
        }
        Some(_) => return Err(TokenError::Malformed("aud must be a string or an array of strings")),
    };
    Ok(Registered { sub, exp, nbf, iss, aud })
}

/// Shape of Centrifugo's `SubscribeOptions` (one `subs` entry, or the top level of a
/// subscription token): `b64info`/`b64data` strings, `override` an object of
/// `{"value": bool}`; `info`/`data` any JSON; unknown keys ignored.
fn check_sub_options(opts: &Value) -> Result<(), TokenError> {
    match opts {
        Value::Null => Ok(()),
        Value::Object(o) => check_sub_options_map(o),
        _ => Err(TokenError::Malformed("subscribe options must be an object")),
    }
}

fn check_sub_options_map(o: &Map<String, Value>) -> Result<(), TokenError> {
    str_claim(o, "b64info", "b64info must be a string")?;
    str_claim(o, "b64data", "b64data must be a string")?;
    let over = match present(o, "override") {
        None => return Ok(()),
        Some(Value::Object(over)) => over,
        Some(_) => return Err(TokenError::Malformed("override must be an object")),
    };
    for key in ["presence", "join_leave", "force_push_join_leave", "force_positioning", "force_recovery"] {
        match present(over, key) {
            None => {}
            Some(Value::Object(b)) => match present(b, "value") {
                None | Some(Value::Bool(_)) => {}
                Some(_) => return Err(TokenError::Malformed("override value must be a boolean")),
            },
            Some(_) => return Err(TokenError::Malformed("override fields must be {\"value\": bool}")),
        }
    }
    Ok(())
}

/// `b64info` / `b64data` of one `subs` entry must be valid standard base64 (Centrifugo fails
/// the connection otherwise). Contents are not required to be JSON here.
fn check_sub_options_base64(opts: &Value) -> Result<(), TokenError> {
    for (key, why) in [("b64info", "subs b64info is not valid base64"), ("b64data", "subs b64data is not valid base64")]
    {
        if let Some(Value::String(s)) = opts.get(key) {
            if !s.is_empty() && STD_B64.decode(s).is_err() {
                return Err(TokenError::Malformed(why));
            }
        }
    }
    Ok(())
}

/// Centrifugo: a non-empty base64 field wins over the raw JSON one.
fn pick_b64_or_raw(
    b64: Option<String>,
    raw: Option<Value>,
    bad_b64: &'static str,
    not_json: &'static str,
) -> Result<Option<Value>, TokenError> {
    match b64 {
        Some(s) if !s.is_empty() => {
            let bytes = STD_B64.decode(&s).map_err(|_| TokenError::Malformed(bad_b64))?;
            serde_json::from_slice(&bytes).map(Some).map_err(|_| TokenError::Malformed(not_json))
        }
        _ => Ok(raw),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_750_000_000;

    fn secret() -> Secret {
        Secret::new(b"herald-test-secret")
    }

    fn verifier() -> Verifier {
        Verifier::new(Some(secret()))
    }

    /// A token with an arbitrary header and payload, correctly signed.
    fn sign_raw(secret: &Secret, header: &str, payload: &[u8]) -> String {
        let mut out = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(payload));
        let mut mac = secret.mac();
        mac.update(out.as_bytes());
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
        out
    }

    fn conn_err(token: &str) -> TokenError {
        verifier().verify_connect(token, NOW).expect_err("token should be refused")
    }

    // Made offline with PyJWT 2.15.1, secret "herald-test-secret":
    // jwt.encode({"sub": "42", "exp": 2000000000, "info": {"name": "Alexander Emelin"},
    //   "channels": ["news", "chat:index"], "meta": {"tier": "gold"}}, s, algorithm="HS256")
    const PYJWT_CONN: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImV4cCI6MjAwMDAwMDAwMCwiaW5mbyI6eyJuYW1lIjoiQWxleGFuZGVyIEVtZWxpbiJ9LCJjaGFubmVscyI6WyJuZXdzIiwiY2hhdDppbmRleCJdLCJtZXRhIjp7InRpZXIiOiJnb2xkIn19.DOy2COo-eWLR1fNiMXkGd_U4IQokypowNp6N5qRmAjo";
    // jwt.encode({"sub": "42", "channel": "$gossips", "exp": 2000000000, "info": {"k": 1}}, s, "HS256")
    const PYJWT_SUB: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImNoYW5uZWwiOiIkZ29zc2lwcyIsImV4cCI6MjAwMDAwMDAwMCwiaW5mbyI6eyJrIjoxfX0.yXNIUH7IsvAmi4kEJ5W8uePGKmVR4m-SMaPJBOpVzq8";
    // jwt.encode({"sub": "42"}, s, algorithm="HS512")
    const PYJWT_HS512: &str = "eyJhbGciOiJIUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiJ9.Ay2ZNkSwCBPPuK6GWUBjNJrC69iEHrmgx6e1K8mEu_T_rRXVZIUfCkZBdxNh8ihUvHX-OJY8Twn7OdYWLhp0Dg";
    // jwt.encode({"sub": "42", "exp": 1700000000}, s, algorithm="HS256")
    // jwt.encode({"channel": "$gossips", "exp": 2000000000, "sub": "42"}, s, algorithm="HS256")
    const PYJWT_SORTED: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJjaGFubmVsIjoiJGdvc3NpcHMiLCJleHAiOjIwMDAwMDAwMDAsInN1YiI6IjQyIn0._B7-NqPMP-PZMnVm5Qj68VxSyefXMrnM6nkqm0ulbG4";
    const PYJWT_EXPIRED: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI0MiIsImV4cCI6MTcwMDAwMDAwMH0.v_HIYWeSLbNfxgHx38PeAPp7nvbD7ZkXKuFJP0G_8rI";

    // From centrifugal/centrifugo internal/jwtverify/token_verifier_jwt_test.go (secret "secret").
    const CF_VALID: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyNjk0IiwiaW5mbyI6eyJmaXJzdF9uYW1lIjoiQWxleGFuZGVyIiwibGFzdF9uYW1lIjoiRW1lbGluIn19.m-TaS80RxkAiP9jH_s_h2NrKS_TDuPxJ8-z6gI7UewI";
    const CF_EXPIRED: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyNjk0IiwiaW5mbyI6eyJmaXJzdF9uYW1lIjoiQWxleGFuZGVyIiwibGFzdF9uYW1lIjoiRW1lbGluIn0sImV4cCI6MTU4ODM1MTcwNH0.LTc0p5YlrwJcxXPETrjhm9qyYUBKCR5fSROmfCE4TD8";
    const CF_NOT_BEFORE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyNjk0IiwiaW5mbyI6eyJmaXJzdF9uYW1lIjoiQWxleGFuZGVyIiwibGFzdF9uYW1lIjoiRW1lbGluIn0sImV4cCI6MzE3NjgyMDU3MCwibmJmIjozMTc2ODIwNTYwfQ.gfsQeznFw6g44OEnCTSBW7AkmLy92GBfXL_Bdvzs7vc";
    const CF_BAD_SIGNATURE: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyNjk0IiwiaW5mbyI6eyJmaXJzdF9uYW1lIjoiQWxleGFuZGVyIiwibGFzdF9uYW1lIjoiRW1lbGluIn0sImV4cCI6MTU4ODQxOTY5MywibmJmIjoxNTg4NDE4NjkzfQ.05Xj9adbLukdhSJFyiVUEgbxCHTajXuotmalFgYviCo";
    const CF_ARRAY_AUD: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyNjk0IiwiaW5mbyI6eyJmaXJzdF9uYW1lIjoiQWxleGFuZGVyIiwibGFzdF9uYW1lIjoiRW1lbGluIn0sImF1ZCI6WyJmb28iLCJiYXIiXX0.iY4pCPEQwstfNmPkLr7r7DrLZDo42q3E9jMc-TefI6g";
    const CF_STRING_AUD: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIyNjk0IiwiaW5mbyI6eyJmaXJzdF9uYW1lIjoiQWxleGFuZGVyIiwibGFzdF9uYW1lIjoiRW1lbGluIn0sImF1ZCI6ImZvbyJ9.jym6CG5haHME3ZQbb9jlnV1E0hSwwEjZycBZSygRzO0";
    const CF_EMPTY_CLAIMS: &str =
        "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.e30.DMCAvRgzrcf5w0Z879BsqzcrnDFKBY_GN6c3qKOUFtQ";
    const CF_SUB_CHANNEL: &str = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.eyJ1c2VyX2lkIjoidGVzdCIsImNoYW5uZWwiOiJjaGFubmVsIn0.vMA6Ee2eq3d8ApAhbXmVv5LmArbrjFZgU2FUbK93EnQ";
    const CF_RS256: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6InRlc3Ryc2EifQ.eyJzdWIiOiIyNjk0IiwiaW5mbyI6eyJmaXJzdF9uYW1lIjoiQWxleGFuZGVyIiwibGFzdF9uYW1lIjoiRW1lbGluIn19.Kq6upfpD3WdTpupDH0PL9lgjAr5OUO0RMB_w6F6M67qWH36noeXXZ1G-_BlOow-a9Lwrdtiy5-WVXC3-wbADaNsOoMSLWWGH-9lxqQ5Df9cJoUu4Ocvm9S0vSB9G2e0yRqwKXL-UC_M1BZonHIwBPs5lCmU_1LynkGJ0uZSvVI8Ke5VQwLFeBsxjNpCbkVc0mAlES4uoD49nh0rTqXmyNoPcriFtxEyUIvdVHe8bKkEBC4yEhg7IevApD8BjY4M6btcOlZYmXxdVSHnNsShQS1WhVhTyqxYDj4ad7rNOZYz4_PE0hEKqSyNxNuJpYimc7aBImCDTgcewJh43Vygcdw";
    const CF_ES384: &str = "eyJhbGciOiJFUzM4NCIsImtpZCI6InRlc3RlYyJ9.eyJzdWIiOiIyNjk0IiwiaW5mbyI6eyJmaXJzdF9uYW1lIjoiQWxleGFuZGVyIiwibGFzdF9uYW1lIjoiRW1lbGluIn19.MFqUDsu8JjS99oROB_93JEwuGlWOnrmMK455UIjWDlSS62uwED7hE04ZcWyQClxnH88Z-oiU_qGnpTyi7zojMN9r3zBxXqdq-wyTqUH6P9NA5PIlXhh6pugLpGKwyfQG";

    fn cf_verifier() -> Verifier {
        Verifier::new(Some(Secret::new(b"secret")))
    }

    #[test]
    fn generated_token_round_trips() {
        let claims = json!({"sub": "7", "exp": NOW + 60, "info": {"n": 1}, "channels": ["a"], "meta": {"m": true}});
        let token = sign_hs256(&secret(), &claims);
        let v = verifier().verify_connect(&token, NOW).unwrap();
        let c = v.claims();
        assert_eq!(c.sub, "7");
        assert_eq!(c.exp, Some(NOW + 60));
        assert_eq!(c.info, Some(json!({"n": 1})));
        assert_eq!(c.channels, vec!["a".to_string()]);
        assert_eq!(c.meta, Some(json!({"m": true})));
        assert_eq!(c.expire_at, None);
        assert_eq!(c.connection_expires_at(), Some(NOW + 60));
        let (h, p) = decode_unverified(&token).unwrap();
        assert_eq!(h, json!({"alg": "HS256", "typ": "JWT"}));
        assert_eq!(p, claims);
    }

    #[test]
    fn pyjwt_tokens_verify() {
        let c = verifier().verify_connect(PYJWT_CONN, NOW).unwrap().into_claims();
        assert_eq!(c.sub, "42");
        assert_eq!(c.exp, Some(2_000_000_000));
        assert_eq!(c.info, Some(json!({"name": "Alexander Emelin"})));
        assert_eq!(c.channels, vec!["news".to_string(), "chat:index".to_string()]);
        assert_eq!(c.meta, Some(json!({"tier": "gold"})));

        let s = verifier().verify_subscribe(PYJWT_SUB, "$gossips", NOW).unwrap().into_claims();
        assert_eq!((s.sub.as_str(), s.channel.as_str()), ("42", "$gossips"));
        assert_eq!(s.info, Some(json!({"k": 1})));
        assert_eq!(s.subscription_expires_at(), Some(2_000_000_000));

        assert_eq!(conn_err(PYJWT_EXPIRED), TokenError::Expired);
        // HS512 (PyJWT, same secret): Centrifugo accepts it, and so does Herald.
        assert_eq!(verifier().verify_connect(PYJWT_HS512, NOW).unwrap().claims().sub, "42");
        // With keys in sorted order (serde_json's), PyJWT and sign_hs256 agree byte for byte.
        assert_eq!(
            sign_hs256(&secret(), &json!({"channel": "$gossips", "exp": 2_000_000_000i64, "sub": "42"})),
            PYJWT_SORTED
        );
        assert!(verifier().verify_subscribe(PYJWT_SORTED, "$gossips", NOW).is_ok());
        // A PyJWT token checked with the wrong secret fails.
        let other = Verifier::new(Some(Secret::new(b"other")));
        assert_eq!(other.verify_connect(PYJWT_CONN, NOW).err(), Some(TokenError::BadSignature));
    }

    #[test]
    fn centrifugo_test_vectors() {
        let v = cf_verifier();
        let c = v.verify_connect(CF_VALID, NOW).unwrap().into_claims();
        assert_eq!(c.sub, "2694");
        assert_eq!(c.info, Some(json!({"first_name": "Alexander", "last_name": "Emelin"})));
        assert_eq!(v.verify_connect(CF_EXPIRED, NOW).err(), Some(TokenError::Expired));
        assert_eq!(v.verify_connect(CF_NOT_BEFORE, NOW).err(), Some(TokenError::NotYetValid));
        assert!(v.verify_connect(CF_NOT_BEFORE, 3_176_820_565).is_ok());
        assert_eq!(v.verify_connect(CF_BAD_SIGNATURE, NOW).err(), Some(TokenError::BadSignature));
        assert_eq!(v.verify_connect(CF_RS256, NOW).err(), Some(TokenError::BadAlgorithm));
        assert_eq!(v.verify_connect(CF_ES384, NOW).err(), Some(TokenError::BadAlgorithm));
        let empty = v.verify_connect(CF_EMPTY_CLAIMS, NOW).unwrap().into_claims();
        assert_eq!(empty.sub, "");
        assert_eq!(empty.connection_expires_at(), None);

        // Subscription token with channel "channel" and no sub (anonymous).
        let s = v.verify_subscribe(CF_SUB_CHANNEL, "channel", NOW).unwrap().into_claims();
        assert_eq!((s.sub.as_str(), s.channel.as_str()), ("", "channel"));
        assert_eq!(v.verify_subscribe(CF_SUB_CHANNEL, "other", NOW).err(), Some(TokenError::WrongChannel));
        // A subscription token is not a connection token.
        assert!(matches!(v.verify_connect(CF_SUB_CHANNEL, NOW), Err(TokenError::Malformed(_))));
        // A connection token is not a subscription token.
        assert!(matches!(v.verify_subscribe(CF_VALID, "channel", NOW), Err(TokenError::Malformed(_))));

        // Audience: string or array; checked only when configured (Centrifugo tests).
        assert!(matches!(
            cf_verifier().with_audience(Some("test2".into())).verify_connect(CF_VALID, NOW),
            Err(TokenError::Malformed(_))
        ));
        for t in [CF_ARRAY_AUD, CF_STRING_AUD] {
            assert!(v.verify_connect(t, NOW).is_ok());
            assert!(cf_verifier().with_audience(Some("foo".into())).verify_connect(t, NOW).is_ok());
            assert!(cf_verifier().with_audience(Some("".into())).verify_connect(t, NOW).is_ok());
            assert!(matches!(
                cf_verifier().with_audience(Some("baz".into())).verify_connect(t, NOW),
                Err(TokenError::Malformed(_))
            ));
        }
        assert!(cf_verifier().with_audience(Some("bar".into())).verify_connect(CF_ARRAY_AUD, NOW).is_ok());
    }

    #[test]
    fn issuer_checked_only_when_configured() {
        let t = sign_hs256(&secret(), &json!({"sub": "1", "iss": "my_app"}));
        assert!(verifier().verify_connect(&t, NOW).is_ok());
        assert!(verifier().with_issuer(Some("my_app".into())).verify_connect(&t, NOW).is_ok());
        let wrong = verifier().with_issuer(Some("other".into())).verify_connect(&t, NOW);
        assert!(matches!(wrong, Err(TokenError::Malformed(_))));
        let none = sign_hs256(&secret(), &json!({"sub": "1"}));
        let missing = verifier().with_issuer(Some("my_app".into())).verify_connect(&none, NOW);
        assert!(matches!(missing, Err(TokenError::Malformed(_))));
        let bad_type = sign_hs256(&secret(), &json!({"sub": "1", "iss": 5}));
        assert!(matches!(verifier().verify_connect(&bad_type, NOW), Err(TokenError::Malformed(_))));
    }

    #[test]
    fn tampering_is_bad_signature() {
        let token = sign_hs256(&secret(), &json!({"sub": "1"}));
        let (h, rest) = token.split_once('.').unwrap();
        let (_, s) = rest.split_once('.').unwrap();
        let forged_payload = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        let forged = format!("{h}.{forged_payload}.{s}");
        assert_eq!(conn_err(&forged), TokenError::BadSignature);

        // Flip one signature byte (re-encoded canonically).
        let mut sig = URL_SAFE_NO_PAD.decode(s).unwrap();
        sig[0] ^= 1;
        let flipped = format!("{}.{}", &token[..token.rfind('.').unwrap()], URL_SAFE_NO_PAD.encode(&sig));
        assert_eq!(conn_err(&flipped), TokenError::BadSignature);

        // Truncated and empty signatures.
        let short = format!("{}.{}", &token[..token.rfind('.').unwrap()], URL_SAFE_NO_PAD.encode(&sig[..16]));
        assert_eq!(conn_err(&short), TokenError::BadSignature);
        assert_eq!(conn_err(&format!("{}.", &token[..token.rfind('.').unwrap()])), TokenError::BadSignature);

        // Wrong secret.
        let other = sign_hs256(&Secret::new(b"not-the-secret"), &json!({"sub": "1"}));
        assert_eq!(conn_err(&other), TokenError::BadSignature);
    }

    #[test]
    fn algorithms_other_than_hs256_refused() {
        let s = secret();
        let payload = br#"{"sub":"1"}"#;
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"alg":"RS256","typ":"JWT"}"#,
            r#"{"alg":"ES256"}"#,
            r#"{"alg":"hs256"}"#,
            r#"{"alg":"HS256 "}"#,
            r#"{"alg":256}"#,
            r#"{"alg":null}"#,
            r#"{"typ":"JWT"}"#,
            r#"{}"#,
        ] {
            // Signed with HMAC-SHA256 anyway: the header alone must decide.
            assert_eq!(conn_err(&sign_raw(&s, header, payload)), TokenError::BadAlgorithm, "{header}");
        }
        // HS384/HS512 are checked with their own hash: an HS256 signature does not pass.
        for header in [r#"{"alg":"HS384"}"#, r#"{"alg":"HS512"}"#] {
            assert_eq!(conn_err(&sign_raw(&s, header, payload)), TokenError::BadSignature, "{header}");
        }
        // Unsigned `alg: none` token with an empty signature part.
        let none = format!("{}.{}.", URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(payload));
        assert_eq!(conn_err(&none), TokenError::BadAlgorithm);
        assert_eq!(verifier().verify_subscribe(&none, "x", NOW).err(), Some(TokenError::BadAlgorithm));
    }

    #[test]
    fn es512_with_a_p521_key() {
        use crate::proto::jwk::tests::{OPENSSL_ES512, OPENSSL_P521_PEM};
        use crate::proto::jwk::PublicKey;
        let key = PublicKey::from_pem(OPENSSL_P521_PEM).unwrap();
        let v = Verifier::new(None).with_public_key(key.clone());
        let c = v.verify_connect(OPENSSL_ES512, NOW).unwrap().into_claims();
        assert_eq!((c.sub.as_str(), c.exp), ("521", Some(2_000_000_000)));
        assert_eq!(v.verify_connect(OPENSSL_ES512, 2_000_000_000).err(), Some(TokenError::Expired));
        // The same signature under another EC alg: no key of that curve.
        let (_, rest) = OPENSSL_ES512.split_once('.').unwrap();
        for alg in ["ES256", "ES384", "RS512", "HS512", "none", "es512"] {
            let h = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
            assert_eq!(v.verify_connect(&format!("{h}.{rest}"), NOW).err(), Some(TokenError::BadAlgorithm), "{alg}");
        }
        // A P-521 key and an HMAC secret: an ES512 token is never checked with the secret,
        // nor an HS512 token (keyed with the PEM text) with the key.
        let both = Verifier::new(Some(Secret::new(b"secret"))).with_public_key(key);
        assert!(both.verify_connect(OPENSSL_ES512, NOW).is_ok());
        let confused = sign_raw(&Secret::new(OPENSSL_P521_PEM.as_bytes()), r#"{"alg":"HS256"}"#, br#"{"sub":"1"}"#);
        assert_eq!(both.verify_connect(&confused, NOW).err(), Some(TokenError::BadSignature));
        // crit still refused, after a good signature would have passed.
        let crit = URL_SAFE_NO_PAD.encode(r#"{"alg":"ES512","crit":["exp"]}"#);
        assert!(matches!(both.verify_connect(&format!("{crit}.{rest}"), NOW), Err(TokenError::Malformed(_))));
        // A P-256 key alone does not take ES512.
        let p256 = PublicKey::Ec(256, [&[4u8][..], &[1; 64]].concat());
        assert_eq!(
            Verifier::new(None).with_public_key(p256).verify_connect(OPENSSL_ES512, NOW).err(),
            Some(TokenError::BadAlgorithm)
        );
    }

    #[test]
    fn jwks_by_kid_and_the_temporary_refusal() {
        use crate::proto::jwk::tests::{OPENSSL_ES512, OPENSSL_ES512_KID, OPENSSL_P521_X, OPENSSL_P521_Y};
        use crate::proto::jwks::{Jwks, KeySet, FRESH_S};
        let (jwks, wake) = Jwks::new();
        let v = Verifier::new(None).with_jwks(jwks.clone());
        // Nothing fetched yet: temporary, and a fetch is asked for.
        assert_eq!(v.verify_connect(OPENSSL_ES512_KID, NOW).err(), Some(TokenError::KeysUnavailable));
        assert!(wake.try_recv().is_ok());
        // An HS token never reaches the JWKS; a token without kid is invalid.
        assert_eq!(
            v.verify_connect(&sign_hs256(&secret(), &json!({"sub": "1"})), NOW).err(),
            Some(TokenError::BadAlgorithm)
        );
        assert!(matches!(v.verify_connect(OPENSSL_ES512, NOW), Err(TokenError::Malformed(_))));

        let doc = |kid: &str, alg: &str| {
            json!({"keys": [{"kty": "EC", "crv": "P-521", "kid": kid, "alg": alg, "x": OPENSSL_P521_X, "y": OPENSSL_P521_Y}]})
                .to_string()
        };
        jwks.replace(KeySet::parse(doc("k521", "ES512").as_bytes(), NOW).unwrap().0);
        assert_eq!(v.verify_connect(OPENSSL_ES512_KID, NOW).unwrap().claims().sub, "kid-user");
        // A P-521 key labelled ES384 is skipped: that set has no usable key and is refused.
        assert!(KeySet::parse(doc("k521", "ES384").as_bytes(), NOW).is_err());
        // Another kid: refused for good while the set is fresh, temporary once it is not.
        jwks.replace(KeySet::parse(doc("other", "ES512").as_bytes(), NOW).unwrap().0);
        while wake.try_recv().is_ok() {}
        assert_eq!(v.verify_connect(OPENSSL_ES512_KID, NOW + FRESH_S - 1).err(), Some(TokenError::UnknownKey));
        assert!(wake.try_recv().is_err(), "a fresh set asks for no fetch");
        assert_eq!(v.verify_connect(OPENSSL_ES512_KID, NOW + FRESH_S).err(), Some(TokenError::KeysUnavailable));
        assert!(wake.try_recv().is_ok());
        // A wrong signature under a known kid is a bad signature.
        jwks.replace(KeySet::parse(doc("k521", "ES512").as_bytes(), NOW).unwrap().0);
        let forged = format!("{}A", &OPENSSL_ES512_KID[..OPENSSL_ES512_KID.len() - 1]);
        assert_eq!(v.verify_connect(&forged, NOW).err(), Some(TokenError::BadSignature));
        // kid of the wrong type, crit, alg none: as without a JWKS.
        let (_, rest) = OPENSSL_ES512_KID.split_once('.').unwrap();
        for (h, want) in [
            (r#"{"alg":"ES512","kid":7}"#, "malformed"),
            (r#"{"alg":"ES512","kid":""}"#, "malformed"),
            (r#"{"alg":"ES512","kid":"k521","crit":["x"]}"#, "malformed"),
            (r#"{"alg":"none","kid":"k521"}"#, "alg"),
            (r#"{"alg":"ES256","kid":"k521"}"#, "alg"),
        ] {
            let t = format!("{}.{rest}", URL_SAFE_NO_PAD.encode(h));
            let e = v.verify_connect(&t, NOW).unwrap_err();
            assert_eq!(matches!(e, TokenError::Malformed(_)), want == "malformed", "{h}: {e:?}");
            assert_eq!(e == TokenError::BadAlgorithm, want == "alg", "{h}: {e:?}");
        }
    }

    #[test]
    fn header_typ_and_crit() {
        let s = secret();
        let p = br#"{"sub":"1"}"#;
        assert!(verifier().verify_connect(&sign_raw(&s, r#"{"alg":"HS256"}"#, p), NOW).is_ok());
        assert!(verifier().verify_connect(&sign_raw(&s, r#"{"alg":"HS256","typ":"jwt"}"#, p), NOW).is_ok());
        assert!(verifier().verify_connect(&sign_raw(&s, r#"{"typ":"JWT","alg":"HS256","kid":"k1"}"#, p), NOW).is_ok());
        for h in [r#"{"alg":"HS256","typ":"JOSE"}"#, r#"{"alg":"HS256","typ":1}"#, r#"{"alg":"HS256","crit":["b64"]}"#]
        {
            assert!(matches!(conn_err(&sign_raw(&s, h, p)), TokenError::Malformed(_)), "{h}");
        }
    }

    #[test]
    fn expiry_and_not_before() {
        let s = secret();
        let exp = sign_hs256(&s, &json!({"sub": "1", "exp": NOW}));
        // Centrifugo: valid while exp is after now, so now == exp is expired.
        assert!(verifier().verify_connect(&exp, NOW - 1).is_ok());
        assert_eq!(verifier().verify_connect(&exp, NOW).err(), Some(TokenError::Expired));
        assert_eq!(verifier().verify_connect(&exp, NOW + 100).err(), Some(TokenError::Expired));
        let lenient = verifier().with_leeway(5);
        assert!(lenient.verify_connect(&exp, NOW + 4).is_ok());
        assert_eq!(lenient.verify_connect(&exp, NOW + 5).err(), Some(TokenError::Expired));
        // Negative leeway is 0.
        assert_eq!(verifier().with_leeway(-100).verify_connect(&exp, NOW).err(), Some(TokenError::Expired));
        assert!(verifier().with_leeway(-100).verify_connect(&exp, NOW - 1).is_ok());

        let nbf = sign_hs256(&s, &json!({"sub": "1", "nbf": NOW + 10}));
        assert_eq!(verifier().verify_connect(&nbf, NOW).err(), Some(TokenError::NotYetValid));
        assert_eq!(verifier().verify_connect(&nbf, NOW + 9).err(), Some(TokenError::NotYetValid));
        assert!(verifier().verify_connect(&nbf, NOW + 10).is_ok());
        assert!(verifier().with_leeway(10).verify_connect(&nbf, NOW).is_ok());
        assert_eq!(verifier().with_leeway(9).verify_connect(&nbf, NOW).err(), Some(TokenError::NotYetValid));

        // exp: 0 is a real (long past) expiry, not "no expiry".
        let zero = sign_hs256(&s, &json!({"exp": 0}));
        assert_eq!(verifier().verify_connect(&zero, NOW).err(), Some(TokenError::Expired));
        // Fractional dates: exp rounds down, nbf rounds up.
        let frac = sign_hs256(&s, &json!({"exp": (NOW as f64) + 0.5, "nbf": (NOW as f64) - 0.5}));
        assert_eq!(verifier().verify_connect(&frac, NOW).err(), Some(TokenError::Expired));
        assert_eq!(verifier().verify_connect(&frac, NOW - 1).err(), Some(TokenError::NotYetValid));
        let frac_nbf = sign_hs256(&s, &json!({"nbf": (NOW as f64) + 0.5}));
        assert_eq!(verifier().verify_connect(&frac_nbf, NOW).err(), Some(TokenError::NotYetValid));
        assert!(verifier().verify_connect(&frac_nbf, NOW + 1).is_ok());
        // null is absent; huge values do not overflow.
        assert!(verifier().verify_connect(&sign_hs256(&s, &json!({"exp": null, "nbf": null})), NOW).is_ok());
        let far = sign_hs256(&s, &json!({"exp": i64::MAX, "nbf": i64::MIN}));
        assert!(verifier().with_leeway(i64::MAX).verify_connect(&far, i64::MAX).is_err());
        assert!(verifier().with_leeway(i64::MAX).verify_connect(&far, 0).is_ok());

        // Subscription tokens follow the same rules, and report expiry before channel.
        let sub_exp = sign_hs256(&s, &json!({"channel": "c", "exp": NOW}));
        assert_eq!(verifier().verify_subscribe(&sub_exp, "other", NOW).err(), Some(TokenError::Expired));
        let sub_nbf = sign_hs256(&s, &json!({"channel": "c", "nbf": NOW + 1}));
        assert_eq!(verifier().verify_subscribe(&sub_nbf, "c", NOW).err(), Some(TokenError::NotYetValid));
    }

    #[test]
    fn expire_at_semantics() {
        let s = secret();
        let c = |claims: Value| verifier().verify_connect(&sign_hs256(&s, &claims), NOW).unwrap().into_claims();
        assert_eq!(c(json!({"exp": NOW + 10})).connection_expires_at(), Some(NOW + 10));
        assert_eq!(c(json!({"exp": NOW + 10, "expire_at": NOW + 99})).connection_expires_at(), Some(NOW + 99));
        let never = c(json!({"exp": NOW + 10, "expire_at": 0}));
        assert_eq!(never.expire_at, Some(0));
        assert_eq!(never.connection_expires_at(), None);
        // expire_at does not replace the exp check of the token itself.
        let t = sign_hs256(&s, &json!({"exp": NOW - 1, "expire_at": 0}));
        assert_eq!(verifier().verify_connect(&t, NOW).err(), Some(TokenError::Expired));
        // expire_at is a Go *int64: fractions and strings are malformed.
        for bad in [json!({"expire_at": 1.5}), json!({"expire_at": "1"}), json!({"expire_at": true})] {
            assert!(matches!(conn_err(&sign_hs256(&s, &bad)), TokenError::Malformed(_)), "{bad}");
        }
        let sc = verifier()
            .verify_subscribe(&sign_hs256(&s, &json!({"channel": "c", "exp": NOW + 5, "expire_at": 0})), "c", NOW)
            .unwrap()
            .into_claims();
        assert_eq!(sc.subscription_expires_at(), None);
    }

    #[test]
    fn b64info_decoded_and_preferred() {
        let s = secret();
        let info_b64 = base64::engine::general_purpose::STANDARD.encode(br#"{"name":"bin"}"#);
        let t = sign_hs256(&s, &json!({"sub": "1", "info": {"ignored": true}, "b64info": info_b64}));
        let c = verifier().verify_connect(&t, NOW).unwrap().into_claims();
        assert_eq!(c.info, Some(json!({"name": "bin"})));
        // Empty b64info falls back to info.
        let t = sign_hs256(&s, &json!({"info": [1, 2], "b64info": ""}));
        assert_eq!(verifier().verify_connect(&t, NOW).unwrap().claims().info, Some(json!([1, 2])));
        // Go's StdEncoding: "e30=" is {}; unpadded, url-safe or non-JSON are malformed.
        let t = sign_hs256(&s, &json!({"b64info": "e30="}));
        assert_eq!(verifier().verify_connect(&t, NOW).unwrap().claims().info, Some(json!({})));
        // Non-zero trailing bits are tolerated there, as by Go's (non-strict) StdEncoding.
        let t = sign_hs256(&s, &json!({"b64info": "e31="}));
        assert_eq!(verifier().verify_connect(&t, NOW).unwrap().claims().info, Some(json!({})));
        for bad in ["e30", "e30=!", "_-8=", "aGVsbG8="] {
            let t = sign_hs256(&s, &json!({"b64info": bad}));
            assert!(matches!(conn_err(&t), TokenError::Malformed(_)), "{bad}");
        }
        // Subscription token: b64info and b64data.
        let t = sign_hs256(
            &s,
            &json!({"channel": "c", "b64info": "e30=", "b64data": "WzFd", "override": {"presence": {"value": true}}}),
        );
        let sc = verifier().verify_subscribe(&t, "c", NOW).unwrap().into_claims();
        assert_eq!(sc.info, Some(json!({})));
        assert_eq!(sc.data, Some(json!([1])));
        assert_eq!(sc.override_, Some(json!({"presence": {"value": true}})));
    }

    #[test]
    fn subs_kept_raw_and_validated() {
        let s = secret();
        let subs = json!({
            "ch1": {"data": {"welcome": "hi"}},
            "ch2": {"info": {"a": 1}, "b64data": "e30=", "override": {"presence": {"value": false}, "join_leave": null}},
            "ch3": null,
        });
        let t = sign_hs256(&s, &json!({"sub": "1", "subs": subs.clone(), "channels": ["x"]}));
        let c = verifier().verify_connect(&t, NOW).unwrap().into_claims();
        assert_eq!(Value::Object(c.subs), subs);
        assert_eq!(c.channels, vec!["x".to_string()]);
        for bad in [
            json!({"subs": []}),
            json!({"subs": {"c": 1}}),
            json!({"subs": {"c": {"b64info": 1}}}),
            json!({"subs": {"c": {"b64info": "%%%"}}}),
            json!({"subs": {"c": {"b64data": "e30"}}}),
            json!({"subs": {"c": {"override": true}}}),
            json!({"subs": {"c": {"override": {"presence": true}}}}),
            json!({"subs": {"c": {"override": {"presence": {"value": "yes"}}}}}),
        ] {
            assert!(matches!(conn_err(&sign_hs256(&s, &bad)), TokenError::Malformed(_)), "{bad}");
        }
    }

    #[test]
    fn malformed_tokens() {
        let s = secret();
        let good = sign_hs256(&s, &json!({"sub": "1"}));
        let parts: Vec<&str> = good.split('.').collect();
        let cases = [
            String::new(),
            ".".into(),
            "..".into(),
            "...".into(),
            "abc".into(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{good}.{}", parts[2]),
            format!("{}.{}.{}.", parts[0], parts[1], parts[2]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}=", parts[0], parts[1], parts[2]),
            format!("{}.{}+.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], "e30/", parts[2]),
            format!(" {good}"),
            format!("{good}\n"),
            format!("{}.{}!.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}", "x".repeat(MAX_TOKEN_LEN), good),
            sign_raw(&s, "not json", br#"{"sub":"1"}"#),
            sign_raw(&s, r#"["alg","HS256"]"#, br#"{"sub":"1"}"#),
            sign_raw(&s, r#"{"alg":"HS256"}"#, b"not json"),
            sign_raw(&s, r#"{"alg":"HS256"}"#, b""),
            sign_raw(&s, r#"{"alg":"HS256"}"#, b"[1,2]"),
            sign_raw(&s, r#"{"alg":"HS256"}"#, b"\"sub\""),
            sign_raw(&s, r#"{"alg":"HS256"}"#, b"{\"sub\":\"1\"} trailing"),
            sign_raw(&s, r#"{"alg":"HS256"}"#, b"{\"sub\":\"\xff\"}"),
            sign_hs256(&s, &json!({"exp": "2000000000"})),
            sign_hs256(&s, &json!({"exp": true})),
            sign_hs256(&s, &json!({"exp": 1e300})),
            sign_hs256(&s, &json!({"exp": u64::MAX})),
            sign_hs256(&s, &json!({"nbf": [1]})),
            sign_hs256(&s, &json!({"iat": "now"})),
            sign_hs256(&s, &json!({"jti": 5})),
            sign_hs256(&s, &json!({"sub": 42})),
            sign_hs256(&s, &json!({"aud": 1})),
            sign_hs256(&s, &json!({"aud": ["a", 1]})),
            sign_hs256(&s, &json!({"channels": "news"})),
            sign_hs256(&s, &json!({"channels": ["news", 1]})),
            sign_hs256(&s, &json!({"b64info": 1})),
            sign_hs256(&s, &json!({"channel": "c"})),
            sign_hs256(&s, &json!({"channel": 1})),
        ];
        for t in &cases {
            let err = verifier().verify_connect(t, NOW).err();
            assert!(matches!(err, Some(TokenError::Malformed(_))), "{t:?} gave {err:?}");
        }
        assert!(matches!(decode_unverified(&cases[5]), Err(TokenError::Malformed(_))));
        assert!(matches!(decode_unverified(&cases[6]), Err(TokenError::Malformed(_))));
        assert!(matches!(decode_unverified("e30.bm90IGpzb24.x"), Err(TokenError::Malformed(_))));
        // decode_unverified shows contents even with a damaged signature.
        let (h, c) = decode_unverified(&format!("{}.{}.!!", parts[0], parts[1])).unwrap();
        assert_eq!((h["alg"].as_str(), c["sub"].as_str()), (Some("HS256"), Some("1")));
        // The length cap: MAX_TOKEN_LEN bytes pass the cap (and fail later), one more does not.
        let cap = TokenError::Malformed("token is longer than 16 KiB");
        assert_ne!(conn_err(&"x".repeat(MAX_TOKEN_LEN)), cap);
        assert_eq!(conn_err(&"x".repeat(MAX_TOKEN_LEN + 1)), cap);
        assert_eq!(decode_unverified(&"x".repeat(MAX_TOKEN_LEN + 1)).err(), Some(cap.clone()));
        let long = sign_hs256(&s, &json!({"p": "x".repeat(MAX_TOKEN_LEN)}));
        assert_eq!(conn_err(&long), cap);
    }

    #[test]
    fn subscription_channel_rules() {
        let s = secret();
        let t = sign_hs256(&s, &json!({"sub": "42", "channel": "$private", "client": "c-1", "info": {"x": 1}}));
        let sc = verifier().verify_subscribe(&t, "$private", NOW).unwrap().into_claims();
        assert_eq!((sc.sub.as_str(), sc.channel.as_str(), sc.client.as_str()), ("42", "$private", "c-1"));
        assert_eq!(verifier().verify_subscribe(&t, "$other", NOW).err(), Some(TokenError::WrongChannel));
        assert_eq!(verifier().verify_subscribe(&t, "", NOW).err(), Some(TokenError::WrongChannel));
        assert_eq!(verifier().verify_subscribe(&t, "$Private", NOW).err(), Some(TokenError::WrongChannel));
        for bad in [json!({"sub": "1"}), json!({"channel": ""}), json!({"channel": null}), json!({"channel": 7})] {
            let t = sign_hs256(&s, &bad);
            assert!(matches!(verifier().verify_subscribe(&t, "", NOW), Err(TokenError::Malformed(_))), "{bad}");
        }
        let t = sign_hs256(&s, &json!({"channel": "c", "client": 1}));
        assert!(matches!(verifier().verify_subscribe(&t, "c", NOW), Err(TokenError::Malformed(_))));
        // A bad signature is reported before a wrong channel.
        let forged = sign_hs256(&Secret::new(b"x"), &json!({"channel": "c"}));
        assert_eq!(verifier().verify_subscribe(&forged, "d", NOW).err(), Some(TokenError::BadSignature));
    }

    #[test]
    fn disabled_without_secret() {
        let t = sign_hs256(&secret(), &json!({"sub": "1", "channel": "c"}));
        for v in [Verifier::new(None), Verifier::new(Some(Secret::new(b"")))] {
            assert_eq!(v.verify_connect(&t, NOW).err(), Some(TokenError::Disabled));
            assert_eq!(v.verify_subscribe(&t, "c", NOW).err(), Some(TokenError::Disabled));
            assert_eq!(v.verify_connect("garbage", NOW).err(), Some(TokenError::Disabled));
        }
    }

    #[test]
    fn secret_never_printed() {
        let s = Secret::new(b"super-secret-key");
        assert_eq!(format!("{s:?}"), "Secret(<redacted>)");
        let v = Verifier::new(Some(s)).with_audience(Some("aud".into()));
        let dbg = format!("{v:?}");
        assert!(!dbg.contains("super-secret-key") && !dbg.contains("115, 117"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }

    #[test]
    fn hmac_key_preparation_matches_rfc4231() {
        // RFC 4231 test case 1 (short key) and 6 (131-byte key, hashed first).
        let mut mac = Secret::new(&[0x0b; 20]).mac();
        mac.update(b"Hi There");
        assert_eq!(
            mac.finalize().into_bytes()[..],
            hex("b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7")[..]
        );
        let mut mac = Secret::new(&[0xaa; 131]).mac();
        mac.update(b"Test Using Larger Than Block-Size Key - Hash Key First");
        assert_eq!(
            mac.finalize().into_bytes()[..],
            hex("60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54")[..]
        );
        // And equals hmac's own key handling for lengths around the block size.
        for len in [0usize, 1, 32, 63, 64, 65, 200] {
            let key = vec![0x5c; len];
            let mut ours = Secret::new(&key).mac();
            let mut theirs = <HmacSha256 as Mac>::new_from_slice(&key).unwrap();
            ours.update(b"msg");
            theirs.update(b"msg");
            assert_eq!(ours.finalize().into_bytes(), theirs.finalize().into_bytes(), "len {len}");
        }
    }

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect()
    }

    use crate::proto::testrng::Rng;

    #[test]
    fn garbage_never_panics_and_mutations_never_verify() {
        let s = secret();
        let v = verifier();
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let alphabet: Vec<char> =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.=+/ \n{}\"é\u{0}".chars().collect();
        let json_bits = [
            "{",
            "}",
            "[",
            "]",
            ",",
            ":",
            "\"alg\"",
            "\"HS256\"",
            "\"none\"",
            "\"exp\"",
            "\"nbf\"",
            "\"sub\"",
            "\"channel\"",
            "\"subs\"",
            "\"b64info\"",
            "\"override\"",
            "1e999",
            "-1",
            "0.5",
            "null",
            "true",
            "\"e30=\"",
            "\"x\"",
            "18446744073709551616",
        ];
        let seeds = [
            sign_hs256(&s, &json!({"sub": "1", "exp": NOW + 60, "channel": "c"})),
            sign_hs256(
                &s,
                &json!({"sub": "1", "subs": {"a": {"b64info": "e30=", "override": {"presence": {"value": true}}}}}),
            ),
            PYJWT_CONN.to_string(),
        ];
        for round in 0..30_000 {
            let token = match round % 3 {
                // Random characters.
                0 => (0..rng.below(120)).map(|_| alphabet[rng.below(alphabet.len())]).collect::<String>(),
                // Random JSON-ish header and payload, signed with the right key.
                1 => {
                    let mut pick = |n: usize| (0..n).map(|_| json_bits[rng.below(json_bits.len())]).collect::<String>();
                    let h = if round % 2 == 0 { r#"{"alg":"HS256"}"#.to_string() } else { pick(6) };
                    let p = pick(12);
                    sign_raw(&s, &h, p.as_bytes())
                }
                // One-character mutation of a valid token: must never verify.
                _ => {
                    let seed = &seeds[rng.below(seeds.len())];
                    let mut bytes: Vec<char> = seed.chars().collect();
                    let i = rng.below(bytes.len());
                    let c = alphabet[rng.below(alphabet.len())];
                    match rng.below(3) {
                        0 => bytes[i] = c,
                        1 => bytes.insert(i, c),
                        _ => {
                            bytes.remove(i);
                        }
                    }
                    let t: String = bytes.into_iter().collect();
                    if t != *seed {
                        assert!(v.verify_connect(&t, NOW).is_err(), "mutation verified: {t}");
                        assert!(v.verify_subscribe(&t, "c", NOW).is_err(), "mutation verified: {t}");
                    }
                    t
                }
            };
            let _ = v.verify_connect(&token, rng.next() as i64);
            let _ = v.verify_subscribe(&token, "c", NOW);
            let _ = v.clone().with_leeway(rng.next() as i64).verify_connect(&token, i64::MAX);
            let _ = decode_unverified(&token);
        }
    }
}
