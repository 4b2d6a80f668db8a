//! TLS for the load tools' subscribers (`wss://`): a rustls client (ring provider, the
//! server's rustls 0.23) driven without blocking from the tools' mio loops.
//!
//! [`Stream`] is a client socket, plain or TLS, that implements `Read` and `Write` with the
//! semantics of a non-blocking socket, so [`crate::sock::write_pending`] and
//! [`crate::sock::read_available`] drive it unchanged:
//!
//! - `write` hands plaintext to rustls (`writer()`), then pushes records out with
//!   `write_tls` until the socket would block; it answers `WouldBlock` only when rustls's
//!   plaintext buffer is full;
//! - `read` returns plaintext rustls already holds, else reads ciphertext (`read_tls`),
//!   processes it (`process_new_packets`), pushes out whatever that produced (handshake
//!   messages, alerts) and tries again; `WouldBlock` once the socket is drained;
//! - `flush` pushes out records rustls still holds (call it on every writable event: the
//!   handshake may leave records behind when the socket would block).
//!
//! A peer that closes without close_notify reads as end of stream, like a plain socket.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::io::{self, Read, Write};
use std::sync::Arc;

/// How the client checks the server's certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Trust exactly the certificates in this PEM file (a self-signed server certificate,
    /// or a test CA).
    CaFile(String),
    /// Accept any certificate (signatures of the handshake are still checked). For
    /// benchmarks against a self-signed certificate only.
    Insecure,
}

/// A client configuration: ring provider, TLS 1.3 and 1.2, ALPN `http/1.1`.
pub fn client_config(v: &Verify) -> Result<Arc<ClientConfig>, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let mut cfg = match v {
        Verify::CaFile(path) => {
            let mut roots = RootCertStore::empty();
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--ca {path}: {e}"))?
                .collect::<Result<_, _>>()
                .map_err(|e| format!("--ca {path}: {e}"))?;
            if certs.is_empty() {
                return Err(format!("--ca {path}: no CERTIFICATE in it"));
            }
            for c in certs {
                roots.add(c).map_err(|e| format!("--ca {path}: {e}"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Verify::Insecure => {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCert(provider))).with_no_client_auth()
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(cfg))
}

/// Accepts any server certificate but still checks the handshake signatures with it.
#[derive(Debug)]
struct AnyCert(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The server name to send (SNI) and verify: a DNS name or an IP address from `host[:port]`.
pub fn server_name(host: &str) -> Result<ServerName<'static>, String> {
    let h = match host.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => host.rsplit_once(':').map_or(host, |(h, _)| h),
    };
    ServerName::try_from(h.to_string()).map_err(|e| format!("`{host}`: not a server name: {e}"))
}

/// A client socket, plain or TLS; `S` is the transport (a mio `TcpStream` in the tools).
pub struct Stream<S> {
    pub sock: S,
    pub tls: Option<Box<ClientConnection>>,
}

impl<S: Read + Write> Stream<S> {
    pub fn plain(sock: S) -> Self {
        Stream { sock, tls: None }
    }

    pub fn tls(sock: S, cfg: &Arc<ClientConfig>, name: ServerName<'static>) -> Result<Self, String> {
        let c = ClientConnection::new(cfg.clone(), name).map_err(|e| format!("TLS: {e}"))?;
        Ok(Stream { sock, tls: Some(Box::new(c)) })
    }

    /// Push out the records rustls holds until the socket would block (or is still
    /// connecting).
    fn push(sock: &mut S, c: &mut ClientConnection) -> io::Result<()> {
        while c.wants_write() {
            match c.write_tls(sock) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(_) => {}
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl<S: Read + Write> Read for Stream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let Some(c) = self.tls.as_deref_mut() else { return self.sock.read(buf) };
        loop {
            match c.reader().read(buf) {
                Ok(n) => return Ok(n), // 0: close_notify received
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            match c.read_tls(&mut self.sock) {
                Ok(0) => return Ok(0),
                Ok(_) => {
                    let r = c.process_new_packets();
                    // Send what processing produced (handshake flight, alert) even on error.
                    let pushed = Self::push(&mut self.sock, c);
                    r.map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("TLS: {e}")))?;
                    pushed?;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

impl<S: Read + Write> Write for Stream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(c) = self.tls.as_deref_mut() else { return self.sock.write(buf) };
        let n = c.writer().write(buf)?;
        Self::push(&mut self.sock, c)?;
        if n == 0 && !buf.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.tls.as_deref_mut() {
            Some(c) => Self::push(&mut self.sock, c),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::PrivateKeyDer;
    use rustls::{ServerConfig, ServerConnection};
    use std::collections::VecDeque;
    use std::sync::Mutex;

    /// One direction of an in-memory non-blocking pipe: reads past the end would block.
    #[derive(Clone, Default)]
    struct Pipe(Arc<Mutex<VecDeque<u8>>>);

    /// A non-blocking socket end over two pipes; `cap` bounds what one write takes, and a
    /// write to a pipe already holding `cap` bytes would block.
    struct End {
        rx: Pipe,
        tx: Pipe,
        cap: usize,
    }

    impl Read for End {
        fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
            let mut q = self.rx.0.lock().unwrap();
            if q.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(q.len());
            for (i, x) in q.drain(..n).enumerate() {
                b[i] = x;
            }
            Ok(n)
        }
    }

    impl Write for End {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            let mut q = self.tx.0.lock().unwrap();
            let room = self.cap.saturating_sub(q.len());
            if room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(room);
            q.extend(&b[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn pair(cap: usize) -> (End, End) {
        let (a, b) = (Pipe::default(), Pipe::default());
        (End { rx: a.clone(), tx: b.clone(), cap }, End { rx: b, tx: a, cap })
    }

    fn server_config(alt: &str) -> (Arc<ServerConfig>, String) {
        let ck = rcgen::generate_simple_self_signed(vec![alt.to_string()]).unwrap();
        let key = PrivateKeyDer::try_from(ck.key_pair.serialize_der()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut cfg = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .unwrap();
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
        (Arc::new(cfg), ck.cert.pem())
    }

    /// The server side: a rustls ServerConnection pumped by hand over its pipe end.
    fn serve(s: &mut ServerConnection, end: &mut End) -> Vec<u8> {
        loop {
            match s.read_tls(end) {
                Ok(0) => break,
                Ok(_) => {
                    s.process_new_packets().unwrap();
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        while s.wants_write() {
            match s.write_tls(end) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        let mut got = Vec::new();
        let _ = s.reader().read_to_end(&mut got);
        got
    }

    /// A full exchange through the tools' own loops (write_pending, read_available), over a
    /// socket that takes at most `cap` bytes at a time, so every step meets WouldBlock.
    fn exchange(cap: usize, verify: Verify, alt: &str) -> Result<(), String> {
        let (scfg, pem) = server_config(alt);
        let dir = std::env::temp_dir().join(format!("herald-load-tls-{}-{cap}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, pem).unwrap();
        let verify = match verify {
            Verify::CaFile(_) => Verify::CaFile(ca.to_string_lossy().into_owned()),
            v => v,
        };
        let ccfg = client_config(&verify)?;
        let (cend, mut send) = pair(cap);
        let mut client = Stream::tls(cend, &ccfg, server_name("127.0.0.1:443")?)?;
        let mut server = ServerConnection::new(scfg).unwrap();
        let mut out = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec();
        let (mut scratch, mut inbuf, mut got_req) = (vec![0u8; 1000], Vec::new(), Vec::new());
        let reply: Vec<u8> = (0..50_000u32).map(|i| (i % 251) as u8).collect();
        let mut sent_reply = false;
        for _ in 0..10_000 {
            crate::sock::write_pending(&mut client, &mut out).map_err(|e| e.to_string())?;
            client.flush().map_err(|e| e.to_string())?;
            match crate::sock::read_available(&mut client, &mut scratch, &mut inbuf, usize::MAX) {
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
            got_req.extend(serve(&mut server, &mut send));
            if got_req.len() == 27 && !sent_reply {
                assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
                server.writer().write_all(&reply).unwrap();
                sent_reply = true;
            }
            if inbuf.len() == reply.len() {
                assert_eq!(inbuf, reply);
                assert!(!client.tls.as_ref().unwrap().is_handshaking());
                return Ok(());
            }
        }
        Err(format!("no progress: request {} bytes, reply {} bytes", got_req.len(), inbuf.len()))
    }

    #[test]
    fn a_request_and_a_large_reply_cross_a_socket_that_blocks_often() {
        exchange(7, Verify::CaFile(String::new()), "127.0.0.1").unwrap();
        exchange(1 << 20, Verify::CaFile(String::new()), "127.0.0.1").unwrap();
        exchange(300, Verify::Insecure, "example.org").unwrap();
    }

    #[test]
    fn a_certificate_for_another_name_is_refused_unless_insecure() {
        let e = exchange(1 << 20, Verify::CaFile(String::new()), "example.org").unwrap_err();
        assert!(e.contains("TLS") && e.to_lowercase().contains("cert"), "{e}");
    }

    #[test]
    fn server_names() {
        assert_eq!(server_name("127.0.0.1:8443").unwrap().to_str(), "127.0.0.1");
        assert_eq!(server_name("localhost:1").unwrap().to_str(), "localhost");
        assert_eq!(server_name("[::1]:443").unwrap().to_str(), "::1");
        assert_eq!(server_name("example.org").unwrap().to_str(), "example.org");
        assert!(client_config(&Verify::CaFile("/nonexistent.pem".into())).is_err());
    }
}
