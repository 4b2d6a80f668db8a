//! JWKS fetchers: one background thread per `jwks_public_endpoint`, which fetches the key
//! set over HTTP or HTTPS and puts it in the [`Jwks`] cell the workers' token verifiers
//! read.
//!
//! Owns: the schedule (a fetch at start-up; every [`REFRESH`] after a success; after a
//! failure, again in 5 s, doubling up to [`RETRY_MAX`]; at once when a token names a `kid`
//! the set lacks, but never two fetches within [`FRESH_S`] seconds, however many tokens
//! ask), the HTTP client and its limits (a [`TIMEOUT`] for the whole request, status 200
//! only, a body of at most [`MAX_JWKS_BYTES`]), and the log lines. A fetch that fails or
//! brings a document that does not parse keeps the keys in use and logs why.
//!
//! Called by [`super::Server::start`] ([`start`]) and `herald checktoken` ([`fetch_once`]).
//! Must never: run on a worker thread (workers only read the cell and post a request that
//! never blocks), log a URL's credentials or query, or drop the keys in use for a failed
//! fetch.
//!
//! Why `ureq`: a small blocking client fits a thread of its own (no async runtime in
//! Herald), speaks HTTP/1.1 with chunked bodies and redirects, and does TLS with the rustls
//! and ring Herald already builds. Roots are the system's (`rustls-native-certs`, which
//! also reads `SSL_CERT_FILE` / `SSL_CERT_DIR`, as Go does for Centrifugo), or Mozilla's
//! bundled list where the system has none. No proxy, as Centrifugo's JWKS client has none.

use crate::proto::jwks::{Jwks, KeySet, FRESH_S, MAX_JWKS_BYTES};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time between fetches while they succeed (keys the endpoint dropped stop being accepted
/// within this long).
pub const REFRESH: Duration = Duration::from_secs(600);

/// Longest wait between two tries while the endpoint fails (and no token asks sooner).
pub const RETRY_MAX: Duration = Duration::from_secs(300);

/// Whole-request limit: connect, TLS, redirects and body.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// Start one fetcher thread per cell; returns the cells by URL for [`crate::transport::Shared`].
pub fn start(cells: Vec<(String, Arc<Jwks>, Receiver<()>)>) -> std::io::Result<Vec<(String, Arc<Jwks>)>> {
    let mut out = Vec::with_capacity(cells.len());
    for (i, (url, cell, wake)) in cells.into_iter().enumerate() {
        let f = Fetcher { shown: shown(&url), url: url.clone(), cell: cell.clone(), agent: agent(), wake };
        log::info!("JWKS {}: token keys are fetched from it in the background", f.shown);
        std::thread::Builder::new().name(format!("herald-jwks{i}")).spawn(move || f.run())?;
        out.push((url, cell));
    }
    Ok(out)
}

/// Fetch and parse the set once (for `herald checktoken`, which may block).
pub fn fetch_once(url: &str) -> Result<KeySet, String> {
    let (set, _) = fetch(&agent(), url)?;
    Ok(set)
}

struct Fetcher {
    url: String,
    /// The URL without credentials or query, for the log.
    shown: String,
    cell: Arc<Jwks>,
    agent: ureq::Agent,
    wake: Receiver<()>,
}

impl Fetcher {
    fn run(self) {
        let first_retry = Duration::from_secs(FRESH_S as u64);
        let mut due = Instant::now();
        let mut last: Option<Instant> = None;
        let mut retry = first_retry;
        let mut logged: Option<(Vec<String>, Vec<String>)> = None;
        loop {
            let now = Instant::now();
            if due > now {
                match self.wake.recv_timeout(due - now) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
            // The rate limit: requests that arrive meanwhile are answered by this fetch.
            if let Some(earliest) = last.map(|t| t + first_retry) {
                let now = Instant::now();
                if now < earliest {
                    std::thread::sleep(earliest - now);
                }
            }
            while self.wake.try_recv().is_ok() {}
            let started = Instant::now();
            last = Some(started);
            match fetch(&self.agent, &self.url) {
                Ok((set, notes)) => {
                    let kids: Vec<String> = set.kids().into_iter().map(String::from).collect();
                    // Said once per change, not at every refresh.
                    let seen = (kids, notes);
                    if logged.as_ref() != Some(&seen) {
                        let (kids, notes) = &seen;
                        log::info!(
                            "JWKS {}: signing keys in use: {} (kid {})",
                            self.shown,
                            kids.len(),
                            kids.join(", ")
                        );
                        for n in notes {
                            log::warn!("JWKS {}: skipped {n}", self.shown);
                        }
                    } else {
                        log::debug!("JWKS {}: refreshed, unchanged", self.shown);
                    }
                    logged = Some(seen);
                    self.cell.replace(set);
                    due = started + REFRESH;
                    retry = first_retry;
                }
                Err(e) => {
                    let held = self.cell.current();
                    let keeping = match held.fetched_at() {
                        Some(t) => format!("keeping the keys in use ({}, fetched at unix time {t})", held.len()),
                        None => "no keys yet: RS/ES tokens get the temporary error 100 until a fetch succeeds".into(),
                    };
                    log::error!("JWKS {}: {e}; {keeping}; next try in {} s", self.shown, retry.as_secs());
                    due = started + retry;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }
}

/// The system's root certificates (`SSL_CERT_FILE` / `SSL_CERT_DIR` honoured), or Mozilla's
/// bundled list when it has none: what Herald's HTTPS clients trust.
pub fn root_certs() -> ureq::tls::RootCerts {
    use ureq::tls::{Certificate, RootCerts};
    let native = rustls_native_certs::load_native_certs();
    if native.certs.is_empty() {
        log::debug!("no system root certificates ({} errors): using the bundled Mozilla roots", native.errors.len());
        RootCerts::WebPki
    } else {
        RootCerts::Specific(Arc::new(
            native.certs.iter().map(|c| Certificate::from_der(c.as_ref()).to_owned()).collect(),
        ))
    }
}

/// The HTTP client: the system's root certificates (Mozilla's when it has none), no proxy.
fn agent() -> ureq::Agent {
    use ureq::tls::TlsConfig;
    let roots = root_certs();
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .proxy(None)
        .http_status_as_error(true)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(roots).build())
        .build()
        .into()
}

/// One GET: status 200, body within [`MAX_JWKS_BYTES`], a document [`KeySet::parse`] takes.
fn fetch(agent: &ureq::Agent, url: &str) -> Result<(KeySet, Vec<String>), String> {
    let mut resp =
        agent.get(url).header("Accept", "application/json").call().map_err(|e| format!("fetch failed: {e}"))?;
    if resp.status().as_u16() != 200 {
        return Err(format!("fetch failed: status {} (200 expected)", resp.status().as_u16()));
    }
    let body = resp
        .body_mut()
        .with_config()
        .limit(MAX_JWKS_BYTES as u64)
        .read_to_vec()
        .map_err(|e| format!("fetch failed reading the body: {e}"))?;
    let now =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    KeySet::parse(&body, now).map_err(|e| format!("malformed JWKS: {e}"))
}

/// `scheme://host[:port]/path`: no user, password or query (they may hold secrets).
pub fn shown(url: &str) -> String {
    match url.parse::<ureq::http::Uri>() {
        Ok(u) => format!(
            "{}://{}{}",
            u.scheme_str().unwrap_or("?"),
            u.authority().map(|a| a.as_str().rsplit('@').next().unwrap_or("")).unwrap_or(""),
            u.path()
        ),
        Err(_) => "<bad URL>".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_shown_without_secrets() {
        assert_eq!(shown("https://user:pw@idp.example:8443/jwks.json?token=abc"), "https://idp.example:8443/jwks.json");
        assert_eq!(shown("http://127.0.0.1:9/keys"), "http://127.0.0.1:9/keys");
        assert_eq!(shown("http://h"), "http://h/");
        assert_eq!(shown("not a url"), "<bad URL>");
    }

    #[test]
    fn unreachable_endpoint_is_an_error_not_a_hang() {
        // A loopback port with no listener: refused at once, well within TIMEOUT.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let t = Instant::now();
        let e = fetch_once(&format!("http://127.0.0.1:{port}/jwks")).unwrap_err();
        assert!(e.starts_with("fetch failed"), "{e}");
        assert!(t.elapsed() < TIMEOUT + Duration::from_secs(1));
    }
}
