//! Public keys for token signatures: RSA (RS256/384/512) and ECDSA (ES256 on P-256, ES384 on
//! P-384), from PEM (`-----BEGIN PUBLIC KEY-----`, Centrifugo's `rsa_public_key` /
//! `ecdsa_public_key`) or from a JWK (`{"kty":"RSA","n":..,"e":..}`,
//! `{"kty":"EC","crv":"P-256","x":..,"y":..}`, as a JWKS endpoint serves them).
//!
//! Owns: parsing keys (a minimal DER reader for SubjectPublicKeyInfo: the algorithm OID,
//! the curve, the key bits) and checking a signature with `ring`. Pure: no IO, no clock.
//! Called by [`super::jwt::Verifier`]. ES512 (P-521) is not supported by `ring`: such keys
//! and tokens are refused with a clear error rather than accepted unchecked.

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
    /// ECDSA on P-256 with SHA-256 (`ES256`) or P-384 with SHA-384 (`ES384`).
    Es(u16),
}

/// A public key able to check one family of signatures.
#[derive(Clone)]
pub enum PublicKey {
    /// An RSA key: its PKCS#1 `RSAPublicKey` DER.
    Rsa(Vec<u8>),
    /// An EC key: the curve size (256 or 384) and its uncompressed point.
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
            return match curve {
                c if c == OID_P256 => Ok(PublicKey::Ec(256, key)),
                c if c == OID_P384 => Ok(PublicKey::Ec(384, key)),
                _ => Err(KeyError("public key: only P-256 and P-384 EC keys are supported (no P-521)")),
            };
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
                    _ => return Err(KeyError("JWK: only P-256 and P-384 curves are supported")),
                };
                let (x, y) = (field("x")?, field("y")?);
                let n = size as usize / 8;
                if x.len() != n || y.len() != n {
                    return Err(KeyError("JWK: x and y do not fit the curve"));
                }
                let mut point = vec![0x04];
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                Ok(PublicKey::Ec(size, point))
            }
            _ => Err(KeyError("JWK: kty must be RSA or EC")),
        }
    }

    /// Whether this key checks `scheme`'s signatures (an RSA key never checks ES tokens,
    /// nor the other way round).
    pub fn fits(&self, scheme: Scheme) -> bool {
        matches!((self, scheme), (PublicKey::Rsa(_), Scheme::Rs(_)) | (PublicKey::Ec(256, _), Scheme::Es(256)))
            || matches!((self, scheme), (PublicKey::Ec(384, _), Scheme::Es(384)))
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
            _ => return false,
        };
        let key = match self {
            PublicKey::Rsa(k) | PublicKey::Ec(_, k) => k,
        };
        UnparsedPublicKey::new(alg, key).verify(msg, sig).is_ok()
    }
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
mod tests {
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

    #[test]
    fn jwk_shapes() {
        let ec = serde_json::json!({"kty":"EC","crv":"P-256","x":URL_SAFE_NO_PAD.encode([1u8;32]),"y":URL_SAFE_NO_PAD.encode([2u8;32])});
        assert!(matches!(PublicKey::from_jwk(&ec), Ok(PublicKey::Ec(256, p)) if p.len() == 65 && p[0] == 4));
        let bad = serde_json::json!({"kty":"EC","crv":"P-521","x":"AA","y":"AA"});
        assert!(PublicKey::from_jwk(&bad).is_err());
        assert!(PublicKey::from_jwk(&serde_json::json!({"kty":"oct","k":"AA"})).is_err());
    }
}
