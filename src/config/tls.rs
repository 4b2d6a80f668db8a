//! TLS settings: Centrifugo v6's `http_server.tls` section, plus Herald's `tls_port`.
//!
//! Owns: the keys and their validation (files named, both halves present). Loading the
//! certificate is the reactor's (`reactor::tls`), at start and on SIGHUP.

use serde::{Deserialize, Serialize};

/// `http_server`: the part of Centrifugo v6's HTTP server section Herald reads.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpServerConfig {
    /// TLS for the listeners (see [`TlsConfig`]).
    pub tls: TlsConfig,
}

/// `http_server.tls`: serve `https://` and `wss://` (rustls; TLS 1.2 and 1.3; ALPN
/// `http/1.1`). With `tls_port` 0 the main `port` speaks TLS; with `tls_port` set, `port`
/// stays plain and `tls_port` speaks TLS.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Turn TLS on.
    pub enabled: bool,
    /// PEM file with the certificate chain (leaf first).
    pub cert_pem_file: String,
    /// PEM file with the private key (PKCS#8, PKCS#1 or SEC1).
    pub key_pem_file: String,
    /// The certificate chain as PEM text, instead of `cert_pem_file`.
    pub cert_pem: String,
    /// The private key as PEM text, instead of `key_pem_file`.
    pub key_pem: String,
}

impl TlsConfig {
    /// Check that an enabled section names a certificate and a key, each once.
    pub fn validate(&self) -> Result<(), String> {
        if !self.enabled {
            return Ok(());
        }
        let one = |file: &str, inline: &str, what: &str| match (file.is_empty(), inline.is_empty()) {
            (true, true) => {
                Err(format!("key `http_server.tls`: enabled without a {what} (set {what}_pem_file or {what}_pem)"))
            }
            (false, false) => Err(format!("key `http_server.tls`: both {what}_pem_file and {what}_pem are set")),
            _ => Ok(()),
        };
        one(&self.cert_pem_file, &self.cert_pem, "cert")?;
        one(&self.key_pem_file, &self.key_pem, "key")
    }
}
