//! TLS on the worker's own loop (rustls is sans-IO): certificate loading and reload, and
//! the glue between a connection's socket, its rustls state and its session.
//!
//! Owns: [`Certs`] (the current `rustls::ServerConfig`, swapped on SIGHUP and read by the
//! workers at accept only, never on delivery), and the two directions: [`read`] feeds
//! ciphertext from the socket to rustls and hands the plaintext to the transport;
//! [`flush`] moves the session's out-queue into rustls (bounded by rustls's buffer limit, so
//! the out-queue stays the one place bytes wait) and writes the records to the socket.
//! Encryption is per connection: it is the one place fan-out cannot share bytes.

use crate::config::tls::TlsConfig;
use crate::transport::outq::{Flush, OutQueue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::ServerConnection;
use std::io::{self, Read, Write};
use std::sync::{Arc, RwLock};

/// Plaintext rustls may hold encrypted and unsent per connection; beyond it the rest waits
/// in the out-queue (where it is counted) until the socket drains.
pub const TLS_BUFFER: usize = 64 * 1024;

/// The certificate in use, shared by all workers.
pub struct Certs {
    cfg: TlsConfig,
    current: RwLock<Arc<rustls::ServerConfig>>,
}

/// Why the certificate could not be loaded (the message names the file).
#[derive(Debug)]
pub struct CertError(pub String);

impl std::fmt::Display for CertError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CertError {}

impl Certs {
    /// Load the certificate and key `cfg` names.
    pub fn load(cfg: &TlsConfig) -> Result<Certs, CertError> {
        let current = RwLock::new(Arc::new(server_config(cfg)?));
        Ok(Certs { cfg: cfg.clone(), current })
    }

    /// Load the files again (SIGHUP); on error the certificate in use stays. Connections
    /// open keep theirs; new ones get the new one.
    pub fn reload(&self) -> Result<(), CertError> {
        let c = Arc::new(server_config(&self.cfg)?);
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = c;
        Ok(())
    }

    /// The configuration for a new connection.
    pub fn current(&self) -> Arc<rustls::ServerConfig> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// A new server-side TLS state for an accepted connection.
    pub fn accept(&self) -> Result<Box<ServerConnection>, rustls::Error> {
        let mut c = ServerConnection::new(self.current())?;
        c.set_buffer_limit(Some(TLS_BUFFER));
        Ok(Box::new(c))
    }
}

fn server_config(cfg: &TlsConfig) -> Result<rustls::ServerConfig, CertError> {
    let certs: Vec<CertificateDer<'static>> = if cfg.cert_pem.is_empty() {
        CertificateDer::pem_file_iter(&cfg.cert_pem_file)
            .map_err(|e| CertError(format!("TLS certificate {}: {e}", cfg.cert_pem_file)))?
            .collect::<Result<_, _>>()
            .map_err(|e| CertError(format!("TLS certificate {}: {e}", cfg.cert_pem_file)))?
    } else {
        CertificateDer::pem_slice_iter(cfg.cert_pem.as_bytes())
            .collect::<Result<_, _>>()
            .map_err(|e| CertError(format!("TLS certificate (http_server.tls.cert_pem): {e}")))?
    };
    if certs.is_empty() {
        return Err(CertError(format!("TLS certificate {}: no CERTIFICATE in it", cfg.cert_pem_file)));
    }
    let key = if cfg.key_pem.is_empty() {
        PrivateKeyDer::from_pem_file(&cfg.key_pem_file)
            .map_err(|e| CertError(format!("TLS key {}: {e}", cfg.key_pem_file)))?
    } else {
        PrivateKeyDer::from_pem_slice(cfg.key_pem.as_bytes())
            .map_err(|e| CertError(format!("TLS key (http_server.tls.key_pem): {e}")))?
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut c = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| CertError(format!("TLS: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| CertError(format!("TLS certificate and key do not match or are unusable: {e}")))?;
    c.alpn_protocols = vec![b"http/1.1".to_vec()];
    // Session tickets cost a ticketer per process and nothing per idle connection.
    Ok(c)
}

/// What one read of the socket gave.
pub enum ReadStep {
    /// Ciphertext went in and its plaintext was handed over.
    Data {
        /// Bytes read from the socket.
        wire: usize,
    },
    /// The peer closed (TCP FIN or TLS close_notify).
    Eof,
    /// Nothing more now.
    WouldBlock,
}

/// Read ciphertext once from `sock`, process it, and hand every byte of plaintext to
/// `deliver` (in pieces of at most `scratch.len()`). Records rustls must answer (handshake
/// messages, alerts) are then waiting in `tls` (`wants_write`).
pub fn read<S: Read>(
    tls: &mut ServerConnection,
    sock: &mut S,
    scratch: &mut [u8],
    mut deliver: impl FnMut(&mut [u8]),
) -> io::Result<ReadStep> {
    let wire = match tls.read_tls(sock) {
        Ok(0) => return Ok(ReadStep::Eof),
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadStep::WouldBlock),
        Err(e) => return Err(e),
    };
    let state = tls.process_new_packets().map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    let mut left = state.plaintext_bytes_to_read();
    let closed = state.peer_has_closed();
    while left > 0 {
        let n = match tls.reader().read(scratch) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        };
        if n == 0 {
            break;
        }
        left = left.saturating_sub(n);
        deliver(&mut scratch[..n]);
    }
    if closed {
        return Ok(ReadStep::Eof);
    }
    Ok(ReadStep::Data { wire })
}

/// The session's out-queue seen as plaintext into rustls: a full TLS buffer is `WouldBlock`.
struct Plain<'a>(&'a mut ServerConnection);

impl Write for Plain<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.writer().write(buf)? {
            0 if !buf.is_empty() => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        match self.0.writer().write_vectored(bufs)? {
            0 if bufs.iter().any(|b| !b.is_empty()) => Err(io::ErrorKind::WouldBlock.into()),
            n => Ok(n),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write what rustls has to the socket, moving the out-queue into rustls as room appears,
/// until both are empty (`Done`) or the socket would block. Adds ciphertext bytes written
/// to `written`.
pub fn flush<S: Write>(
    tls: &mut ServerConnection,
    out: &mut OutQueue,
    sock: &mut S,
    written: &mut u64,
    coalesce: &mut Vec<u8>,
) -> io::Result<Flush> {
    loop {
        while tls.wants_write() {
            match tls.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => *written += n as u64,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(Flush::Blocked),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if out.is_empty() {
            return Ok(Flush::Done);
        }
        if tls.is_handshaking() {
            // Application data waits in the out-queue until the handshake completes (the
            // read side marks the connection for a flush then).
            return Ok(Flush::Blocked);
        }
        let mut moved = 0;
        let before = out.len();
        let r = out.flush(&mut Plain(tls), &mut moved, coalesce)?;
        if out.len() == before && r == Flush::Blocked && !tls.wants_write() {
            // rustls took nothing and has nothing to send: cannot happen with a limit
            // above zero; never spin on it.
            return Ok(Flush::Blocked);
        }
    }
}

/// Queue a close_notify alert (best effort) before the write side is shut.
pub fn close_notify<S: Write>(tls: &mut ServerConnection, sock: &mut S) {
    tls.send_close_notify();
    while tls.wants_write() {
        match tls.write_tls(sock) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}
