//! TLS on the worker's own loop, through rustls's unbuffered API: certificate loading and
//! reload, and the glue between a connection's socket, its rustls state and its session.
//!
//! Owns: [`Certs`] (the current `rustls::ServerConfig`, swapped on SIGHUP and read by the
//! workers at accept only, never on delivery), [`Tls`] (one connection's rustls state and
//! the ciphertext it holds between two reads or two writes), and the two directions:
//! [`read`] decrypts what the socket gave in the worker's scratch buffer and hands the
//! plaintext to the transport; [`flush`] seals the session's out-queue, one record of at
//! most [`SEAL_CHUNK`] bytes at a time, into the worker's seal buffer and writes it to the
//! socket, so queued bytes wait in the out-queue (where they are counted) and nowhere else.
//! Encryption is per connection: it is the one place fan-out cannot share bytes.
//!
//! Memory, the rule plain connections follow: a connection owns ciphertext only while a
//! record is incomplete, the start of a record received in part (`held`) or the rest of
//! sealed records the socket did not take (`unsent`). On an idle connection both are empty
//! and own no allocation; what remains is rustls's connection state (the traffic keys and
//! the key schedule). rustls's buffered `ServerConnection` kept a 4 KiB read buffer for
//! every connection, idle or not.

use crate::config::tls::TlsConfig;
use crate::transport::outq::{Flush, OutQueue};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, InsufficientSizeError, UnbufferedStatus, WriteTraffic,
};
use std::io::{self, Read, Write};
use std::sync::{Arc, RwLock};

/// Most ciphertext a connection may hold received and not yet usable. A partial record is
/// at most 18,437 bytes (16 KiB of payload plus TLS 1.2's largest expansion and the
/// header); more is held only while one handshake message spans several records (a
/// ClientHello in fragments). Beyond it the connection is closed as a TLS error. Kept well
/// under the worker's 64 KiB scratch buffer, so a read after the held bytes always has
/// room for a whole record.
pub const MAX_HELD: usize = 48 * 1024;

/// Plaintext sealed per write: one full TLS record (rustls's largest fragment). What a
/// connection holds unsent while its socket is full is at most one such record with its
/// overhead, plus records rustls queued ahead of it (handshake, tickets, key update).
pub const SEAL_CHUNK: usize = 16 * 1024;

/// Room in the seal buffer beyond [`SEAL_CHUNK`]: the record header and tag, and small
/// records rustls queued ahead; rustls asks for more when it needs it.
const SEAL_SLACK: usize = 1024;

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
    pub fn accept(&self) -> Result<Box<Tls>, rustls::Error> {
        Ok(Box::new(Tls::new(self.current())?))
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

/// One TLS connection: rustls's state and the ciphertext held for an incomplete record.
/// Boxed in the connection's slot (plain connections pay a pointer).
pub struct Tls {
    conn: UnbufferedServerConnection,
    /// Received bytes not usable yet: the start of a record (or of a handshake message
    /// spanning records, which rustls keeps in the caller's buffer until it completes).
    /// Empty, with no allocation, when none; at most [`MAX_HELD`].
    held: Vec<u8>,
    /// Records encoded or sealed that the socket has not taken yet: the handshake flight
    /// until the next flush, or the rest of a record when the socket was full. Empty, with
    /// no allocation, when none.
    unsent: Vec<u8>,
}

impl Tls {
    /// The server side of a new connection with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Result<Tls, rustls::Error> {
        Ok(Tls { conn: UnbufferedServerConnection::new(config)?, held: Vec::new(), unsent: Vec::new() })
    }

    /// The handshake has not completed: application data waits.
    pub fn is_handshaking(&self) -> bool {
        self.conn.is_handshaking()
    }

    /// Records wait for the socket (a handshake flight, an alert, or part of a record).
    pub fn has_unsent(&self) -> bool {
        !self.unsent.is_empty()
    }

    /// The start of a record is held, waiting for the rest.
    pub fn holds_input(&self) -> bool {
        !self.held.is_empty()
    }

    /// Heap bytes this connection's own buffers own (`held` and `unsent`): 0 when idle.
    pub fn buffered_capacity(&self) -> usize {
        self.held.capacity() + self.unsent.capacity()
    }

    /// The protocol ALPN chose, once the handshake got that far.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.conn.alpn_protocol()
    }
}

/// A worker's buffers for TLS, shared by all its connections (allocated at first use):
/// one record's plaintext on the way in, plaintext gathered from several queued buffers
/// and the sealed records on the way out.
#[derive(Default)]
pub struct Scratch {
    plain: Vec<u8>,
    seal: Vec<u8>,
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

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Read the socket once into `scratch` (after the bytes `tls` held), decrypt the records
/// there in place, and hand each record's plaintext to `deliver`. Handshake records to
/// send (and alerts) are then waiting in `tls` ([`Tls::has_unsent`]); the start of a
/// record that has not fully arrived is kept in `tls`, every other byte is consumed here.
/// A TLS error is `InvalidData` (the connection goes, after [`send_alert`]); any other
/// error is the socket's.
pub fn read<S: Read>(
    tls: &mut Tls,
    sock: &mut S,
    scratch: &mut [u8],
    sc: &mut Scratch,
    mut deliver: impl FnMut(&mut [u8]),
) -> io::Result<ReadStep> {
    let held = tls.held.len();
    if held + SEAL_CHUNK > scratch.len() {
        return Err(invalid("TLS input held beyond the scratch buffer"));
    }
    scratch[..held].copy_from_slice(&tls.held);
    let n = loop {
        match sock.read(&mut scratch[held..]) {
            Ok(0) => return Ok(ReadStep::Eof),
            Ok(n) => break n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(ReadStep::WouldBlock),
            Err(e) => return Err(e),
        }
    };
    // The held bytes are in the scratch buffer now: the connection gives its copy back.
    tls.held = Vec::new();
    let Tls { conn, held: keep, unsent } = tls;
    let end = held + n;
    let mut start = 0;
    let mut closed = false;
    loop {
        let UnbufferedStatus { mut discard, state } = conn.process_tls_records(&mut scratch[start..end]);
        let mut more = true;
        match state.map_err(invalid)? {
            ConnectionState::ReadTraffic(mut records) => {
                while let Some(record) = records.next_record() {
                    let record = record.map_err(invalid)?;
                    discard += record.discard;
                    // rustls lends the plaintext read-only and the parsers unmask
                    // WebSocket payloads in place: one copy into the worker's buffer.
                    sc.plain.clear();
                    sc.plain.extend_from_slice(record.payload);
                    deliver(&mut sc.plain);
                }
            }
            ConnectionState::EncodeTlsData(mut e) => encode(unsent, |b| e.encode(b))?,
            // The records wait in `unsent` for the end-of-turn flush, in order.
            ConnectionState::TransmitTlsData(t) => t.done(),
            // All complete records are processed: the rest is an incomplete one.
            ConnectionState::BlockedHandshake | ConnectionState::WriteTraffic(_) => more = false,
            ConnectionState::PeerClosed | ConnectionState::Closed => {
                closed = true;
                more = false;
            }
            // Early data is off (`max_early_data_size` 0), so nothing else is expected.
            other => return Err(invalid(format!("unexpected TLS state {other:?}"))),
        }
        start += discard;
        if !more {
            break;
        }
    }
    if closed {
        return Ok(ReadStep::Eof);
    }
    if end - start > MAX_HELD {
        return Err(invalid(format!("more than {MAX_HELD} bytes of an incomplete TLS record or handshake message")));
    }
    if start < end {
        *keep = scratch[start..end].to_vec();
    }
    Ok(ReadStep::Data { wire: n })
}

/// Append one record rustls has ready (a handshake message or an alert) to `unsent`.
fn encode(unsent: &mut Vec<u8>, mut f: impl FnMut(&mut [u8]) -> Result<usize, EncodeError>) -> io::Result<()> {
    let need = match f(&mut []) {
        Ok(_) => return Ok(()),
        Err(EncodeError::InsufficientSize(InsufficientSizeError { required_size })) => required_size,
        Err(e) => return Err(invalid(e)),
    };
    let at = unsent.len();
    unsent.resize(at + need, 0);
    let n = f(&mut unsent[at..]).map_err(invalid)?;
    unsent.truncate(at + n);
    Ok(())
}

/// Seal with `f` (application data, or a close_notify) into `seal` once rustls allows
/// writing; the number of bytes sealed, or `None` when the connection cannot send
/// application data (handshake not done, or closed). Records rustls queued first go to
/// `unsent`, ahead of these.
fn seal_with(
    tls: &mut Tls,
    seal: &mut Vec<u8>,
    mut f: impl FnMut(&mut WriteTraffic<'_, ServerConnectionData>, &mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<Option<usize>> {
    if seal.len() < SEAL_CHUNK + SEAL_SLACK {
        seal.resize(SEAL_CHUNK + SEAL_SLACK, 0);
    }
    let Tls { conn, held, unsent } = tls;
    loop {
        // `held` is the input rustls has not consumed (at most an incomplete record): it
        // must be what rustls sees on every call, so a fragmented handshake message keeps
        // its place.
        let UnbufferedStatus { discard, state } = conn.process_tls_records(held);
        let done = match state.map_err(invalid)? {
            ConnectionState::WriteTraffic(mut w) => {
                let n = match f(&mut w, seal) {
                    Ok(n) => n,
                    Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                        seal.resize(required_size, 0);
                        f(&mut w, seal).map_err(invalid)?
                    }
                    Err(e) => return Err(invalid(e)),
                };
                Some(Some(n))
            }
            ConnectionState::EncodeTlsData(mut e) => {
                encode(unsent, |b| e.encode(b))?;
                None
            }
            ConnectionState::TransmitTlsData(t) => {
                t.done();
                None
            }
            // Reported once; the next call tells whether writing is still allowed.
            ConnectionState::PeerClosed => None,
            _ => Some(None),
        };
        if discard > 0 {
            held.drain(..discard.min(held.len()));
            if held.is_empty() {
                *held = Vec::new();
            }
        }
        if let Some(done) = done {
            return Ok(done);
        }
    }
}

/// Write `unsent` until it is empty (`true`; its allocation is given back) or the socket
/// would block (`false`; the rest stays).
fn send_unsent<S: Write>(tls: &mut Tls, sock: &mut S, written: &mut u64) -> io::Result<bool> {
    if tls.unsent.is_empty() {
        return Ok(true);
    }
    let mut off = 0;
    let r = loop {
        if off == tls.unsent.len() {
            break Ok(true);
        }
        match sock.write(&tls.unsent[off..]) {
            Ok(0) => break Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => {
                off += n;
                *written += n as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break Ok(false),
            Err(e) => break Err(e),
        }
    };
    if off == tls.unsent.len() {
        tls.unsent = Vec::new();
    } else if off > 0 {
        tls.unsent.drain(..off);
    }
    r
}

/// Seal with `f` and write the records: `true` when the socket took them all, `false`
/// when it would block (the rest is kept in `unsent`). `WouldBlock` when rustls does not
/// allow application data now.
fn seal_and_send<S: Write>(
    tls: &mut Tls,
    sock: &mut S,
    seal: &mut Vec<u8>,
    written: &mut u64,
    f: impl FnMut(&mut WriteTraffic<'_, ServerConnectionData>, &mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<bool> {
    let Some(n) = seal_with(tls, seal, f)? else {
        return Err(io::ErrorKind::WouldBlock.into());
    };
    if !tls.unsent.is_empty() {
        // Records rustls queued meanwhile go first.
        tls.unsent.extend_from_slice(&seal[..n]);
        return send_unsent(tls, sock, written);
    }
    let mut off = 0;
    while off < n {
        match sock.write(&seal[off..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                off += k;
                *written += k as u64;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                tls.unsent.extend_from_slice(&seal[off..n]);
                return Ok(false);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

/// The session's out-queue seen as plaintext into TLS: each write seals up to one record
/// and writes it to the socket; once the socket is full it is `WouldBlock`.
struct Sealer<'a, S> {
    tls: &'a mut Tls,
    sock: &'a mut S,
    sc: &'a mut Scratch,
    /// Ciphertext bytes written to the socket.
    written: &'a mut u64,
    /// The socket would block: nothing more is sealed in this flush.
    blocked: bool,
}

impl<S: Write> Sealer<'_, S> {
    /// Before sealing: the socket must have taken what was sealed before.
    fn ready(&mut self) -> io::Result<()> {
        if self.blocked || !send_unsent(self.tls, self.sock, self.written)? {
            self.blocked = true;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }
}

impl<S: Write> Write for Sealer<'_, S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.ready()?;
        let data = &buf[..buf.len().min(SEAL_CHUNK)];
        if !seal_and_send(self.tls, self.sock, &mut self.sc.seal, self.written, |w, out| w.encrypt(data, out))? {
            self.blocked = true;
        }
        Ok(data.len())
    }

    /// Several queued buffers (more than the out-queue coalesces) are gathered into one
    /// record of up to [`SEAL_CHUNK`] bytes: one record per buffer would cost a header,
    /// a tag and an encryption call each.
    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        self.ready()?;
        let Scratch { plain, seal } = &mut *self.sc;
        plain.clear();
        for b in bufs {
            let room = SEAL_CHUNK - plain.len();
            if room == 0 {
                break;
            }
            plain.extend_from_slice(&b[..b.len().min(room)]);
        }
        let data = &plain[..];
        if !seal_and_send(self.tls, self.sock, seal, self.written, |w, out| w.encrypt(data, out))? {
            self.blocked = true;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Write what `tls` holds unsent, then seal the out-queue and write it, until both are
/// empty (`Done`) or the socket would block. Adds ciphertext bytes written to `written`.
/// Application data waits in the out-queue until the handshake completes (the read side
/// marks the connection for a flush then).
pub fn flush<S: Write>(
    tls: &mut Tls,
    out: &mut OutQueue,
    sock: &mut S,
    written: &mut u64,
    coalesce: &mut Vec<u8>,
    sc: &mut Scratch,
) -> io::Result<Flush> {
    if !send_unsent(tls, sock, written)? {
        return Ok(Flush::Blocked);
    }
    if out.is_empty() {
        return Ok(Flush::Done);
    }
    if tls.is_handshaking() {
        return Ok(Flush::Blocked);
    }
    let mut sealer = Sealer { tls, sock, sc, written, blocked: false };
    let mut plain_moved = 0;
    let r = out.flush(&mut sealer, &mut plain_moved, coalesce)?;
    // Whatever the socket did not take waits in `unsent` (the socket said WouldBlock).
    Ok(if r == Flush::Done && !tls.has_unsent() { Flush::Done } else { Flush::Blocked })
}

/// Send a close_notify alert (best effort, once everything queued was written) before the
/// write side is shut.
pub fn close_notify<S: Write>(tls: &mut Tls, sock: &mut S, sc: &mut Scratch) {
    if tls.has_unsent() || tls.is_handshaking() {
        return;
    }
    let _ = seal_and_send(tls, sock, &mut sc.seal, &mut 0, |w, out| w.queue_close_notify(out));
}

/// After a TLS error: send the alert rustls prepared, best effort (the connection goes).
pub fn send_alert<S: Write>(tls: &mut Tls, sock: &mut S) {
    let Tls { conn, unsent, .. } = tls;
    for _ in 0..4 {
        let UnbufferedStatus { state, .. } = conn.process_tls_records(&mut []);
        match state {
            Ok(ConnectionState::EncodeTlsData(mut e)) => {
                if encode(unsent, |b| e.encode(b)).is_err() {
                    break;
                }
            }
            Ok(ConnectionState::TransmitTlsData(t)) => t.done(),
            _ => break,
        }
    }
    let _ = send_unsent(tls, sock, &mut 0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use rustls::pki_types::ServerName;
    use std::collections::VecDeque;

    /// An in-memory socket. Reads give at most `read_max` bytes of `input` (`WouldBlock`
    /// when empty, end of stream once `eof` is set and it is empty); writes take at most
    /// `room` bytes in all (`WouldBlock` when none is left) into `output`.
    struct Pipe {
        input: VecDeque<u8>,
        read_max: usize,
        eof: bool,
        output: Vec<u8>,
        room: usize,
    }

    impl Read for Pipe {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return if self.eof { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
            }
            let n = buf.len().min(self.read_max).min(self.input.len());
            for (d, s) in buf.iter_mut().zip(self.input.drain(..n)) {
                *d = s;
            }
            Ok(n)
        }
    }

    impl Write for Pipe {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let n = buf.len().min(self.room);
            if n == 0 && !buf.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.room -= n;
            self.output.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A rustls client and a Herald server side over a [`Pipe`], with what each received.
    struct Pair {
        client: rustls::ClientConnection,
        server: Box<Tls>,
        sock: Pipe,
        out: OutQueue,
        scratch: Vec<u8>,
        coalesce: Vec<u8>,
        sc: Scratch,
        /// Plaintext the server handed to its session.
        server_got: Vec<u8>,
        client_got: Vec<u8>,
        /// Largest `held` / `unsent` seen after a server read or flush.
        max_held: usize,
        max_unsent: usize,
        server_eof: bool,
    }

    fn pair(versions: &[&'static rustls::SupportedProtocolVersion], client_fragment: Option<usize>) -> Pair {
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut scfg = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(versions)
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        scfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ck.cert.der().clone()).unwrap();
        let mut ccfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        ccfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        ccfg.max_fragment_size = client_fragment;
        let client = rustls::ClientConnection::new(Arc::new(ccfg), ServerName::try_from("127.0.0.1").unwrap()).unwrap();
        Pair {
            client,
            server: Box::new(Tls::new(Arc::new(scfg)).unwrap()),
            sock: Pipe {
                input: VecDeque::new(),
                read_max: usize::MAX,
                eof: false,
                output: Vec::new(),
                room: usize::MAX,
            },
            out: OutQueue::default(),
            scratch: vec![0; 64 * 1024],
            coalesce: Vec::new(),
            sc: Scratch::default(),
            server_got: Vec::new(),
            client_got: Vec::new(),
            max_held: 0,
            max_unsent: 0,
            server_eof: false,
        }
    }

    impl Pair {
        /// Move bytes both ways until nothing moves; `room` is what the server's socket
        /// takes per round.
        fn pump(&mut self, room: usize) {
            for _ in 0..100_000 {
                let mut moved = false;
                while self.client.wants_write() {
                    let mut w = Vec::new();
                    self.client.write_tls(&mut w).unwrap();
                    self.sock.input.extend(w);
                    moved = true;
                }
                let Pair { server, sock, scratch, sc, server_got, .. } = self;
                loop {
                    match read(server, sock, scratch, sc, |p| server_got.extend_from_slice(p)).expect("server read") {
                        ReadStep::Data { .. } => {
                            moved = true;
                            self.max_held = self.max_held.max(server.held.len());
                        }
                        ReadStep::Eof => {
                            self.server_eof = true;
                            break;
                        }
                        ReadStep::WouldBlock => break,
                    }
                }
                self.sock.room = room;
                let mut written = 0;
                flush(&mut self.server, &mut self.out, &mut self.sock, &mut written, &mut self.coalesce, &mut self.sc)
                    .expect("server flush");
                self.max_unsent = self.max_unsent.max(self.server.unsent.len());
                let wire = std::mem::take(&mut self.sock.output);
                let mut rd = &wire[..];
                while !rd.is_empty() {
                    self.client.read_tls(&mut rd).unwrap();
                    self.client.process_new_packets().expect("client sees valid TLS");
                    moved = true;
                }
                let mut buf = [0u8; 8192];
                while let Ok(n) = self.client.reader().read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    self.client_got.extend_from_slice(&buf[..n]);
                }
                if !moved {
                    return;
                }
            }
            panic!("pump did not settle");
        }

        fn handshake(&mut self) {
            self.pump(usize::MAX);
            assert!(!self.client.is_handshaking() && !self.server.is_handshaking(), "handshake done");
            assert_eq!(self.server.alpn_protocol(), Some(&b"http/1.1"[..]));
        }

        fn assert_idle(&self) {
            assert!(!self.server.holds_input() && !self.server.has_unsent());
            assert_eq!(self.server.buffered_capacity(), 0, "an idle TLS connection owns no buffer");
        }
    }

    /// After a handshake and a request/reply, an idle connection owns no read or write
    /// buffer of its own (TLS 1.3 and 1.2): what stays is rustls's state.
    #[test]
    fn idle_after_an_exchange_owns_no_buffers() {
        for v in [&rustls::version::TLS13, &rustls::version::TLS12] {
            let mut p = pair(&[v], None);
            p.handshake();
            p.assert_idle();
            p.client.writer().write_all(&[b'q'; 200]).unwrap();
            p.pump(usize::MAX);
            assert_eq!(p.server_got, [b'q'; 200]);
            p.out.push(Bytes::from_static(&[b'r'; 150]));
            p.pump(usize::MAX);
            assert_eq!(p.client_got, [b'r'; 150]);
            assert!(p.out.is_empty());
            p.assert_idle();
        }
    }

    /// Reads that end inside records keep only the start of the record, up to one
    /// record's size, and give it back once the record is complete.
    #[test]
    fn a_partial_record_is_held_until_complete_then_freed() {
        let mut p = pair(&[&rustls::version::TLS13], None);
        p.handshake();
        p.sock.read_max = 1000;
        let data: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        p.client.writer().write_all(&data).unwrap();
        p.pump(usize::MAX);
        assert_eq!(p.server_got, data);
        assert!(p.max_held > 0 && p.max_held <= 16 * 1024 + 22, "held {} bytes at most", p.max_held);
        p.assert_idle();
    }

    /// A ClientHello cut into 64-byte records and read 50 bytes at a time: rustls keeps the
    /// handshake message's pieces in the held bytes until it is whole.
    #[test]
    fn a_fragmented_client_hello_read_in_pieces() {
        let mut p = pair(&[&rustls::version::TLS13], Some(64));
        p.sock.read_max = 50;
        p.handshake();
        p.client.writer().write_all(b"hello").unwrap();
        p.pump(usize::MAX);
        assert_eq!(p.server_got, b"hello");
        p.assert_idle();
    }

    /// A socket taking 5,000 bytes per round: a 200 KB reply goes out whole and in order,
    /// the connection holds at most one record unsent meanwhile, and nothing once drained.
    #[test]
    fn a_full_socket_holds_at_most_one_record() {
        let mut p = pair(&[&rustls::version::TLS13], None);
        p.handshake();
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
        for chunk in big.chunks(7_000) {
            p.out.push(Bytes::copy_from_slice(chunk));
        }
        p.pump(5_000);
        assert_eq!(p.client_got.len(), big.len());
        assert!(p.client_got == big, "the reply arrives in order");
        assert!(p.max_unsent > 0 && p.max_unsent <= SEAL_CHUNK + SEAL_SLACK, "unsent {} at most", p.max_unsent);
        p.assert_idle();
    }

    /// Plain HTTP on the TLS port is an error; what goes back is at most an alert.
    #[test]
    fn plain_http_is_an_error_answered_by_an_alert() {
        let mut p = pair(&[&rustls::version::TLS13], None);
        p.sock.input.extend(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        let r = read(&mut p.server, &mut p.sock, &mut p.scratch, &mut p.sc, |_| panic!("no plaintext"));
        assert!(r.is_err());
        send_alert(&mut p.server, &mut p.sock);
        assert!(!p.sock.output.is_empty() && p.sock.output.len() < 64, "{:?}", p.sock.output);
        assert_eq!(p.sock.output[0], 0x15, "an alert record");
    }

    /// close_notify both ways: ours reaches the client, the client's ends our reading.
    #[test]
    fn close_notify_both_ways() {
        let mut p = pair(&[&rustls::version::TLS13], None);
        p.handshake();
        close_notify(&mut p.server, &mut p.sock, &mut p.sc);
        let wire = std::mem::take(&mut p.sock.output);
        p.client.read_tls(&mut &wire[..]).unwrap();
        assert!(p.client.process_new_packets().unwrap().peer_has_closed(), "the client saw our close_notify");
        p.client.send_close_notify();
        p.pump(usize::MAX);
        assert!(p.server_eof, "the client's close_notify ends the stream");
    }

    /// What one TLS connection's box costs: rustls's connection and two empty buffers,
    /// within jemalloc's 1,280-byte size class (the buffered `ServerConnection` alone was
    /// 1,168 bytes, and it kept a 4 KiB read buffer besides).
    #[test]
    fn tls_state_stays_small() {
        let n = std::mem::size_of::<Tls>();
        assert!(n <= 1280, "Tls is {n} bytes");
    }
}
