//! Public keys for token signatures: RSA (RS256/384/512) and ECDSA (ES256 on P-256, ES384 on
//! P-384, ES512 on P-521), from PEM (`-----BEGIN PUBLIC KEY-----`, Centrifugo's
//! `rsa_public_key` / `ecdsa_public_key`) or from a JWK (`{"kty":"RSA","n":..,"e":..}`,
//! `{"kty":"EC","crv":"P-256","x":..,"y":..}`, as a JWKS endpoint serves them).
//!
//! Owns: parsing keys (a minimal DER reader for SubjectPublicKeyInfo: the algorithm OID,
//! the curve, the key bits) and checking a signature: RSA, P-256 and P-384 with `ring`;
//! P-521 with RustCrypto's `p521` (`ring` has no P-521 verification). Pure: no IO, no
//! clock. Called by [`super::jwt::Verifier`] and [`super::jwks`].
//!
//! Must never: accept a signature of one family with a key of another (an RSA key never
//! checks an ES token, a P-256 key never an ES384 or ES512 one), or panic on any input.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::signature::{self, UnparsedPublicKey};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::SubjectPublicKeyInfoDer;

/// Which signature scheme a token's `alg` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    /// RSASSA-PKCS1-v1_5 with SHA-256 / 384 / 512.
    Rs(u16),
    /// ECDSA on P-256 with SHA-256 (`ES256`), P-384 with SHA-384 (`ES384`) or P-521 with
    /// SHA-512 (`ES512`); the number is the hash size.
    Es(u16),
}

impl Scheme {
    /// The scheme a JWS `alg` names (RFC 7518 §3.1), exactly as written; `None` for HMAC,
    /// `none` and anything else.
    pub fn from_alg(alg: &str) -> Option<Scheme> {
        Some(match alg {
            "RS256" => Scheme::Rs(256),
            "RS384" => Scheme::Rs(384),
            "RS512" => Scheme::Rs(512),
            "ES256" => Scheme::Es(256),
            "ES384" => Scheme::Es(384),
            "ES512" => Scheme::Es(512),
            _ => return None,
        })
    }
}

/// A public key able to check one family of signatures.
#[derive(Clone)]
pub enum PublicKey {
    /// An RSA key: its PKCS#1 `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// An EC key: the curve size (256, 384 or 521) and its uncompressed SEC1 point
    /// (`04 || x || y`, checked to be on the curve for P-521).
    Ec(u16, Vec<u8>),
}

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PublicKey::Rsa(k) => write!(f, "PublicKey::Rsa({} bytes)", k.len()),
            PublicKey::Ec(c, _) => write!(f, "PublicKey::Ec(P-{c})"),
        }
    }
}

/// Why a key could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError(pub &'static str);

impl std::fmt::Display for KeyError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for KeyError {}

const OID_RSA: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];
const OID_EC: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
const OID_P256: &[u8] = &[0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07];
const OID_P384: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x22];
const OID_P521: &[u8] = &[0x2b, 0x81, 0x04, 0x00, 0x23];

/// One DER element: (tag, contents, rest).
fn der(b: &[u8]) -> Result<(u8, &[u8], &[u8]), KeyError> {
    let bad = KeyError("public key: bad DER");
    let (&tag, rest) = b.split_first().ok_or(bad.clone())?;
    let (&l0, rest) = rest.split_first().ok_or(bad.clone())?;
    let (len, rest) = if l0 < 0x80 {
        (l0 as usize, rest)
    } else {
        let n = (l0 & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return Err(bad);
        }
        (rest[..n].iter().fold(0usize, |a, &x| (a << 8) | x as usize), &rest[n..])
    };
    if rest.len() < len {
        return Err(bad);
    }
    Ok((tag, &rest[..len], &rest[len..]))
}

impl PublicKey {
    /// A key from PEM (`-----BEGIN PUBLIC KEY-----`, SubjectPublicKeyInfo).
    pub fn from_pem(pem: &str) -> Result<PublicKey, KeyError> {
        let spki = SubjectPublicKeyInfoDer::from_pem_slice(pem.as_bytes())
            .map_err(|_| KeyError("public key: not a PEM `PUBLIC KEY` block"))?;
        PublicKey::from_spki(spki.as_ref())
    }

    /// A key from SubjectPublicKeyInfo DER.
    pub fn from_spki(spki: &[u8]) -> Result<PublicKey, KeyError> {
        let (t, seq, _) = der(spki)?;
        if t != 0x30 {
            return Err(KeyError("public key: not a SubjectPublicKeyInfo"));
        }
        let (t, alg, rest) = der(seq)?;
        if t != 0x30 {
            return Err(KeyError("public key: no algorithm"));
        }
        let (t, bits, _) = der(rest)?;
        if t != 0x03 || bits.first() != Some(&0) {
            return Err(KeyError("public key: no key bits"));
        }
        let key = bits[1..].to_vec();
        let (t, oid, params) = der(alg)?;
        if t != 0x06 {
            return Err(KeyError("public key: no algorithm OID"));
        }
        if oid == OID_RSA {
            return Ok(PublicKey::Rsa(key));
        }
        if oid == OID_EC {
            let (_, curve, _) = der(params)?;
            let size = match curve {
                c if c == OID_P256 => 256,
                c if c == OID_P384 => 384,
                c if c == OID_P521 => 521,
                _ => return Err(KeyError("public key: only P-256, P-384 and P-521 EC keys are supported")),
            };
            return ec_key(size, key);
        }
        Err(KeyError("public key: neither RSA nor EC"))
    }

    /// A key from one JWK object. RSA keys are rebuilt as PKCS#1 DER from `n` and `e`.
    pub fn from_jwk(jwk: &serde_json::Value) -> Result<PublicKey, KeyError> {
        let field = |k: &str| -> Result<Vec<u8>, KeyError> {
            let s = jwk.get(k).and_then(|v| v.as_str()).ok_or(KeyError("JWK: a field is missing"))?;
            URL_SAFE_NO_PAD.decode(s).map_err(|_| KeyError("JWK: a field is not base64url"))
        };
        match jwk.get("kty").and_then(|v| v.as_str()) {
            Some("RSA") => Ok(PublicKey::Rsa(rsa_der(&field("n")?, &field("e")?))),
            Some("EC") => {
                let size = match jwk.get("crv").and_then(|v| v.as_str()) {
                    Some("P-256") => 256,
                    Some("P-384") => 384,
                    Some("P-521") => 521,
                    _ => return Err(KeyError("JWK: only P-256, P-384 and P-521 curves are supported")),
                };
                let (x, y) = (field("x")?, field("y")?);
                // RFC 7518 §6.2.1.2: x and y are the full field size, leading zeros kept
                // (66 bytes for P-521).
                if x.len() != field_bytes(size) || y.len() != field_bytes(size) {
                    return Err(KeyError("JWK: x and y do not fit the curve"));
                }
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                ec_key(size, point)
            }
            _ => Err(KeyError("JWK: kty must be RSA or EC")),
        }
    }

    /// Whether this key checks `scheme`'s signatures (an RSA key never checks ES tokens,
    /// nor the other way round).
    pub fn fits(&self, scheme: Scheme) -> bool {
        matches!(
            (self, scheme),
            (PublicKey::Rsa(_), Scheme::Rs(_))
                | (PublicKey::Ec(256, _), Scheme::Es(256))
                | (PublicKey::Ec(384, _), Scheme::Es(384))
                | (PublicKey::Ec(521, _), Scheme::Es(512))
        )
    }

    /// Check `sig` over `msg`.
    pub fn verify(&self, scheme: Scheme, msg: &[u8], sig: &[u8]) -> bool {
        if !self.fits(scheme) {
            return false;
        }
        let alg: &'static dyn signature::VerificationAlgorithm = match scheme {
            Scheme::Rs(256) => &signature::RSA_PKCS1_2048_8192_SHA256,
            Scheme::Rs(384) => &signature::RSA_PKCS1_2048_8192_SHA384,
            Scheme::Rs(512) => &signature::RSA_PKCS1_2048_8192_SHA512,
            Scheme::Es(256) => &signature::ECDSA_P256_SHA256_FIXED,
            Scheme::Es(384) => &signature::ECDSA_P384_SHA384_FIXED,
            Scheme::Es(512) => return self.verify_p521(msg, sig),
            _ => return false,
        };
        let key = match self {
            PublicKey::Rsa(k) | PublicKey::Ec(_, k) => k,
        };
        UnparsedPublicKey::new(alg, key).verify(msg, sig).is_ok()
    }

    /// ES512: ECDSA P-521 over SHA-512, the signature being JWS's fixed `r || s` of 66
    /// bytes each (RFC 7518 §3.4; `Signature::from_slice` refuses other lengths and an `r`
    /// or `s` of zero or past the group order).
    fn verify_p521(&self, msg: &[u8], sig: &[u8]) -> bool {
        use p521::ecdsa::signature::Verifier as _;
        let PublicKey::Ec(521, point) = self else { return false };
        let (Ok(key), Ok(sig)) =
            (p521::ecdsa::VerifyingKey::from_sec1_bytes(point), p521::ecdsa::Signature::from_slice(sig))
        else {
            return false;
        };
        key.verify(msg, &sig).is_ok()
    }
}

/// Bytes of one coordinate of the curve: 32, 48 or 66.
fn field_bytes(size: u16) -> usize {
    (size as usize).div_ceil(8)
}

/// An EC key from its SEC1 point: only the uncompressed form (`04 || x || y`, what JWKs
/// and `ring` use); a P-521 point is checked to be on the curve now, so a bad key stops
/// start-up (P-256 and P-384 points are checked by `ring` at each verification).
fn ec_key(size: u16, point: Vec<u8>) -> Result<PublicKey, KeyError> {
    if point.len() != 1 + 2 * field_bytes(size) || point[0] != 0x04 {
        return Err(KeyError("public key: the EC point is not an uncompressed point of its curve"));
    }
    if size == 521 && p521::ecdsa::VerifyingKey::from_sec1_bytes(&point).is_err() {
        return Err(KeyError("public key: the P-521 point is not on the curve"));
    }
    Ok(PublicKey::Ec(size, point))
}

/// PKCS#1 `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }`.
fn rsa_der(n: &[u8], e: &[u8]) -> Vec<u8> {
    fn int(v: &[u8]) -> Vec<u8> {
        let v = {
            let first = v.iter().position(|&b| b != 0).unwrap_or(v.len().saturating_sub(1));
            &v[first..]
        };
        let mut body = Vec::with_capacity(v.len() + 1);
        if v.first().is_some_and(|&b| b & 0x80 != 0) {
            body.push(0);
        }
        body.extend_from_slice(v);
        tlv(0x02, &body)
    }
    fn tlv(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let l = body.len();
        if l < 0x80 {
            out.push(l as u8);
        } else {
            let bytes = l.to_be_bytes();
            let skip = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len() - 1);
            out.push(0x80 | (bytes.len() - skip) as u8);
            out.extend_from_slice(&bytes[skip..]);
        }
        out.extend_from_slice(body);
        out
    }
    let mut seq = int(n);
    seq.extend(int(e));
    tlv(0x30, &seq)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn der_lengths_and_garbage() {
        assert_eq!(der(&[0x30, 0x01, 0xaa]).unwrap(), (0x30, &[0xaa][..], &[][..]));
        assert!(der(&[0x30, 0x05, 0xaa]).is_err());
        assert!(der(&[0x30, 0x85, 1, 1, 1, 1, 1]).is_err());
        assert!(PublicKey::from_spki(b"not der").is_err());
        assert!(PublicKey::from_pem("-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n").is_err());
        let mut rng = crate::proto::testrng::Rng(9);
        for _ in 0..5000 {
            let n = rng.below(64);
            let b: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
            let _ = PublicKey::from_spki(&b);
        }
    }

    #[test]
    fn rsa_der_matches_pkcs1_shape() {
        let d = rsa_der(&[0x80, 0x01], &[0x01, 0x00, 0x01]);
        assert_eq!(d, vec![0x30, 0x0a, 0x02, 0x03, 0x00, 0x80, 0x01, 0x02, 0x03, 0x01, 0x00, 0x01]);
    }

    // RFC 7515 Appendix A.4: ES512 over the payload "Payload" with this P-521 key.
    const RFC_A4_JWS: &str = "eyJhbGciOiJFUzUxMiJ9.UGF5bG9hZA.AdwMgeerwtHoh-l192l60hp9wAHZFVJbLfD_UxMi70cwnZOYaRI1bKPWROc-mZZqwqT2SI-KGDKB34XO0aw_7XdtAG8GaSwFKdCAPZgoXD2YBJZCPEX3xKpRwcdOO8KpEHwJjyqOgzDO7iKvU8vcnwNrmxYbSW9ERBXukOXolLzeO_Jn";
    const RFC_A4_X: &str = "AekpBQ8ST8a8VcfVOTNl353vSrDCLLJXmPk06wTjxrrjcBpXp5EOnYG_NjFZ6OvLFV1jSfS9tsz4qUxcWceqwQGk";
    const RFC_A4_Y: &str = "ADSmRA43Z1DSNx_RvcLI87cdL07l6jQyyBXMoxVg_l2Th-x3S1WDhjDly79ajL4Kkd0AZMaZmh9ubmf63e3kyMj2";

    // Made offline with OpenSSL 3 (`genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-521`,
    // `dgst -sha512 -sign`, the DER signature turned into r || s): the public key as PEM
    // and as a JWK, and a token {"sub":"521","exp":2000000000} signed with it.
    pub(crate) const OPENSSL_P521_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIGbMBAGByqGSM49AgEGBSuBBAAjA4GGAAQA1KsH4uc8SmoNc9jzANUrzoqqZwJZ
WZy06lBNjJs+/FDQJHp6Xz2ODi4Ntukd820rZZMOgTDW2HlAt6QbsB9eGVkAlA9v
rbFIkdG5kxT6pG799On3Xji+YBGgNegtNap6eEEpVgHAa4J1YC/hMHCroFxrDZm2
W4XQcR2YjUVfn1XQng0=
-----END PUBLIC KEY-----
";
    pub(crate) const OPENSSL_P521_X: &str =
        "ANSrB-LnPEpqDXPY8wDVK86KqmcCWVmctOpQTYybPvxQ0CR6el89jg4uDbbpHfNtK2WTDoEw1th5QLekG7AfXhlZ";
    pub(crate) const OPENSSL_P521_Y: &str =
        "AJQPb62xSJHRuZMU-qRu_fTp9144vmARoDXoLTWqenhBKVYBwGuCdWAv4TBwq6Bcaw2ZtluF0HEdmI1FX59V0J4N";
    pub(crate) const OPENSSL_ES512: &str = "eyJhbGciOiJFUzUxMiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiI1MjEiLCJleHAiOjIwMDAwMDAwMDB9.AeIXkjeVnGVH9pZFS05kqrqnhFPY5eW9ITFNUvtzbLd0HUCjnno2EjyDPzlCNxgOJTfUXe-ABjmuKBEvBviBKFXaADJuGpk1JoF9g3tS0NbdpualseK-JTXf_jKhvfkoFJS3WjiQOpeTSH3nfrBpnQGh6ZamvlvedSKWmG2-tig17WP0";

    // The same key, tokens with a `kid` header: {"alg":"ES512","kid":"k521"} over
    // {"sub":"kid-user"} and {"sub":"kid-user","channel":"$private"}.
    pub(crate) const OPENSSL_ES512_KID: &str = "eyJhbGciOiJFUzUxMiIsImtpZCI6Ims1MjEifQ.eyJzdWIiOiJraWQtdXNlciJ9.ATFgsyvhkv3i_4rKqt5uPS4wTFKHpiKKDDJSMT0mBNQQDHSSgU-qsOIH8_jpNZ--JsdGqF6qFED0p2HSALgai589AVZADKdT_EVHaeykhpiVhkQ4SgU8BZuQHjOZyq81blNEI8uu9Qp3Ol-A86axAh0oiSZRLkAKYiGugOqqQG4SZiD-";
    pub(crate) const OPENSSL_ES512_KID_SUB: &str = "eyJhbGciOiJFUzUxMiIsImtpZCI6Ims1MjEifQ.eyJzdWIiOiJraWQtdXNlciIsImNoYW5uZWwiOiIkcHJpdmF0ZSJ9.ASic9XE-BPUtB9BKIES11wAamfhpF737wyL5VRrN7rQe9dwfVpcP6a1fwM-VH7_kAMUkqfz9atd3kE4ITRuFCn-nAUJV-jLWs2iDCmUl2yBGY1ccYKfB-8cqr3dLlZZ2cME4T4gVcl9LYoX7SM2Tb-BviJ3WBdaNgOHTSe3md6seBJQc";

    fn p521_jwk(x: &str, y: &str) -> serde_json::Value {
        serde_json::json!({"kty": "EC", "crv": "P-521", "x": x, "y": y})
    }

    /// (signed part, signature bytes) of a compact JWS.
    fn split(jws: &str) -> (&[u8], Vec<u8>) {
        let dot = jws.rfind('.').unwrap();
        (&jws.as_bytes()[..dot], URL_SAFE_NO_PAD.decode(&jws[dot + 1..]).unwrap())
    }

    #[test]
    fn es512_rfc7515_a4_and_openssl_vectors() {
        let rfc = PublicKey::from_jwk(&p521_jwk(RFC_A4_X, RFC_A4_Y)).unwrap();
        let (msg, sig) = split(RFC_A4_JWS);
        assert_eq!(sig.len(), 132);
        assert!(rfc.fits(Scheme::Es(512)));
        assert!(rfc.verify(Scheme::Es(512), msg, &sig));

        let pem = PublicKey::from_pem(OPENSSL_P521_PEM).unwrap();
        let jwk = PublicKey::from_jwk(&p521_jwk(OPENSSL_P521_X, OPENSSL_P521_Y)).unwrap();
        let (msg2, sig2) = split(OPENSSL_ES512);
        for k in [&pem, &jwk] {
            assert!(matches!(k, PublicKey::Ec(521, p) if p.len() == 133));
            assert!(k.verify(Scheme::Es(512), msg2, &sig2));
            // Another key's signature, another message.
            assert!(!k.verify(Scheme::Es(512), msg, &sig));
            assert!(!k.verify(Scheme::Es(512), b"eyJhbGciOiJFUzUxMiJ9.e30", &sig2));
        }
        assert!(!rfc.verify(Scheme::Es(512), msg2, &sig2));
    }

    #[test]
    fn es512_refusals() {
        let k = PublicKey::from_pem(OPENSSL_P521_PEM).unwrap();
        let (msg, sig) = split(OPENSSL_ES512);
        // Wrong curve for the algorithm, both ways.
        for scheme in [Scheme::Es(256), Scheme::Es(384), Scheme::Rs(512)] {
            assert!(!k.fits(scheme) && !k.verify(scheme, msg, &sig), "{scheme:?}");
        }
        let p256 = PublicKey::Ec(256, [&[4u8][..], &[1; 64]].concat());
        assert!(!p256.fits(Scheme::Es(512)) && !p256.verify(Scheme::Es(512), msg, &sig));
        // Signature lengths other than 132 (a DER signature included), and each bit flipped
        // in a sample of positions.
        for len in [0, 1, 64, 96, 130, 131, 133, 139, 264] {
            let mut s = sig.clone();
            s.resize(len, 0);
            assert!(!k.verify(Scheme::Es(512), msg, &s), "length {len}");
        }
        for i in (0..132).step_by(7) {
            let mut s = sig.clone();
            s[i] ^= 0x01;
            assert!(!k.verify(Scheme::Es(512), msg, &s), "byte {i}");
        }
        // r or s zero, or every bit set (past the group order).
        let (r, s) = sig.split_at(66);
        for bad in [[&[0u8; 66][..], s].concat(), [r, &[0u8; 66][..]].concat(), vec![0xff; 132]] {
            assert!(!k.verify(Scheme::Es(512), msg, &bad));
        }
        // (r, n - s) is as valid as (r, s): Go's crypto/ecdsa (Centrifugo) and OpenSSL take
        // either, so a signer that does not normalise s must not fail half of the time.
        let flipped = [r, &order_minus(s)].concat();
        assert_ne!(flipped, sig);
        assert!(k.verify(Scheme::Es(512), msg, &flipped));
    }

    /// n - v for P-521's group order n (`openssl ecparam -name secp521r1 -param_enc explicit`).
    fn order_minus(v: &[u8]) -> Vec<u8> {
        const N: &str = "01ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff\
                         fa51868783bf2f966b7fcc0148f709a5d03bb5c9b8899c47aebb6fb71e91386409";
        let n: Vec<u8> = (0..132).step_by(2).map(|i| u8::from_str_radix(&N[i..i + 2], 16).unwrap()).collect();
        let mut out = vec![0u8; 66];
        let mut borrow = 0i16;
        for i in (0..66).rev() {
            let d = n[i] as i16 - v[i] as i16 - borrow;
            borrow = i16::from(d < 0);
            out[i] = d.rem_euclid(256) as u8;
        }
        out
    }

    #[test]
    fn p521_keys_checked_at_load() {
        // A point off the curve: one bit of y flipped.
        let mut y = URL_SAFE_NO_PAD.decode(OPENSSL_P521_Y).unwrap();
        y[65] ^= 1;
        let off = p521_jwk(OPENSSL_P521_X, &URL_SAFE_NO_PAD.encode(&y));
        assert_eq!(PublicKey::from_jwk(&off).err(), Some(KeyError("public key: the P-521 point is not on the curve")));
        // x and y must be 66 bytes each (leading zeros kept), as RFC 7518 says.
        let x = URL_SAFE_NO_PAD.decode(OPENSSL_P521_X).unwrap();
        let short = p521_jwk(&URL_SAFE_NO_PAD.encode(&x[1..]), OPENSSL_P521_Y);
        assert!(PublicKey::from_jwk(&short).is_err());
        // A P-521 point given for P-384 does not fit.
        let mislabeled = serde_json::json!({"kty":"EC","crv":"P-384","x":OPENSSL_P521_X,"y":OPENSSL_P521_Y});
        assert!(PublicKey::from_jwk(&mislabeled).is_err());
        // SPKI with a compressed point: refused (only the uncompressed form is taken).
        let der = rustls::pki_types::SubjectPublicKeyInfoDer::from_pem_slice(OPENSSL_P521_PEM.as_bytes()).unwrap();
        let mut d = der.as_ref().to_vec();
        let n = d.len();
        d[n - 133] = 0x02;
        assert!(PublicKey::from_spki(&d).is_err());
        assert!(PublicKey::from_spki(&d[..n - 1]).is_err());
    }

    #[test]
    fn alg_names() {
        for (alg, s) in [("RS256", Scheme::Rs(256)), ("RS512", Scheme::Rs(512)), ("ES384", Scheme::Es(384))] {
            assert_eq!(Scheme::from_alg(alg), Some(s));
        }
        assert_eq!(Scheme::from_alg("ES512"), Some(Scheme::Es(512)));
        for bad in ["none", "HS256", "es512", "ES512 ", "EdDSA", "PS256", ""] {
            assert_eq!(Scheme::from_alg(bad), None, "{bad}");
        }
    }

    #[test]
    fn jwk_shapes() {
        let ec = serde_json::json!({"kty":"EC","crv":"P-256","x":URL_SAFE_NO_PAD.encode([1u8;32]),"y":URL_SAFE_NO_PAD.encode([2u8;32])});
        assert!(matches!(PublicKey::from_jwk(&ec), Ok(PublicKey::Ec(256, p)) if p.len() == 65 && p[0] == 4));
        let bad = serde_json::json!({"kty":"EC","crv":"P-521","x":"AA","y":"AA"});
        assert!(PublicKey::from_jwk(&bad).is_err());
        assert!(PublicKey::from_jwk(&serde_json::json!({"kty":"oct","k":"AA"})).is_err());
    }
}
