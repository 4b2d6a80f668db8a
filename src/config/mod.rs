//! Configuration: every option with its default, loaded from an optional JSON file and then
//! overridden by command-line flags.
//!
//! Owns: the `Config` struct and its validation. Called by `main` once at start-up; workers
//! get an `Arc<Config>` and never re-read it. Must never panic on a bad file: every problem
//! is an `Err(String)` that names the key.

pub mod centrifugo;
pub mod compat;
pub mod engine;
pub mod proxy;
pub mod tls;

use serde::Deserialize;
use std::net::IpAddr;

/// All of Herald's settings. Field names are the JSON keys of the config file.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Address to listen on.
    pub bind: String,
    /// TCP port to listen on.
    pub port: u16,
    /// Worker threads (event loops); 0 = one per core.
    pub workers: usize,
    /// Share `bind:port` with other processes on purpose (SO_REUSEPORT, e.g. several
    /// processes behind one shared engine). When false, start-up fails if another process
    /// already listens on the address, instead of silently splitting its traffic.
    pub reuse_port: bool,
    /// The reactor backend: "epoll" (mio; the default) or "uring" (io_uring: multishot
    /// accept and receive into a shared provided-buffer ring, sends batched per loop turn).
    /// "uring" needs Linux 6.1 or later with io_uring enabled, and does not serve TLS yet.
    pub io: String,
    /// error, warn, info, debug or trace.
    pub log_level: String,

    /// A client must finish its request head within this many ms of connecting (or of
    /// starting a new request on a kept-alive connection): slowloris protection.
    pub handshake_timeout_ms: u64,
    /// An HTTP keep-alive connection with no request in flight is closed after this long.
    pub idle_timeout_ms: u64,
    /// Longest request line (414 above it).
    pub max_request_line: usize,
    /// Most request headers (431 above it).
    pub max_headers: usize,
    /// Longest request head in bytes, request line included (431 above it).
    pub max_header_bytes: usize,
    /// Largest request body in bytes (413 above it); also the largest publish.
    pub max_body: usize,
    /// Most simultaneous connections per process; beyond it HTTP gets 503. 0 = no limit
    /// other than the open-files limit.
    pub max_connections: usize,

    /// Largest WebSocket message (close 1009 above it).
    pub ws_max_message: usize,
    /// Largest single WebSocket frame (close 1009 above it).
    pub ws_max_frame: usize,
    /// Server ping interval; a peer that sends nothing for two intervals is dropped.
    pub ws_ping_interval_ms: u64,
    /// Subprotocols the server accepts, in order of preference (empty: none selected).
    pub ws_subprotocols: Vec<String>,
    /// If non-empty, WebSocket handshakes whose Origin is not listed get 403.
    pub ws_allowed_origins: Vec<String>,
    /// Negotiate permessage-deflate (RFC 7692) on every WebSocket endpoint when the client
    /// offers it (Centrifugo: `websocket.compression`). Off by default: it costs CPU per
    /// published message (once per worker, not per subscriber) and per compressed client
    /// message, and pays only for messages of a few hundred bytes or more.
    pub ws_compression: bool,
    /// Messages shorter than this go uncompressed even on a compressed connection
    /// (Centrifugo: `websocket.compression_min_size`). Below ~256 bytes DEFLATE saves a
    /// few bytes at most and can even grow a message.
    pub ws_compression_min_size: usize,
    /// zlib level 1 (fastest) to 9 (smallest) (Centrifugo: `websocket.compression_level`).
    /// 1 by default: 2.5-5x cheaper per message than 6 (which takes 1 KiB of JSON to 36%
    /// rather than 50%); a fan-out compresses once per worker, so wide fan-outs can afford
    /// more, but echoes, replies and narrow channels pay it per message.
    pub ws_compression_level: u32,

    /// Per-connection cap on queued outgoing bytes; a client that falls this far behind is
    /// dropped (WebSocket: close 1008) rather than slowing anyone else.
    pub max_out_queue: usize,
    /// On SIGINT/SIGTERM, connections get this long to close before the process exits.
    pub shutdown_timeout_ms: u64,

    /// Messages kept per channel for `since` / `Last-Event-ID` resume.
    pub history_size: usize,
    /// How long a message stays in a channel's history.
    pub history_ttl_ms: u64,
    /// How long `/listen/` holds a request with no message before answering empty.
    pub longpoll_timeout_ms: u64,
    /// Interval of keep-alive comments / padding on `/stream/` and `/sse/`.
    pub stream_keepalive_ms: u64,
    /// `retry:` sent to SSE clients (ms).
    pub sse_retry_ms: u64,
    /// Addresses (CIDR or single IP) allowed to publish; default loopback only.
    pub publish_allow: Vec<String>,
    /// If set, a request with header `X-API-Key: <key>` may publish from any address.
    pub publish_api_key: Option<String>,
    /// Whether messages WebSocket subscribers send on `/ws/` are published to the channel.
    pub ws_client_publish: bool,
    /// Origins allowed by CORS on the subscribe endpoints; "*" = any.
    pub cors_origins: Vec<String>,
    /// Most channels one subscription may name (`cid=a,b,...`).
    pub max_channels_per_conn: usize,
    /// Most open connections from one client address (0 = no limit); beyond it new
    /// connections get 503.
    pub max_connections_per_ip: usize,
    /// Most new connections per second from one client address (0 = no limit; bursts of
    /// one second's worth); beyond it 429.
    pub connect_rate_per_ip: u32,
    /// Most client addresses the per-IP limits track at once (an address is tracked while
    /// it has open connections or connected within the last second). When the table is
    /// full, connections from addresses not in it get 429; tracked ones carry on.
    pub max_tracked_ips: usize,
    /// Most subscribers one channel may have (0 = no limit); beyond it 503 (Centrifugo:
    /// error 106).
    pub max_subscribers_per_channel: usize,

    /// Namespaces whose channels the simple endpoints (`/messages/`, `/listen/`,
    /// `/stream/`, `/sse/`, `/ws/`) serve to anyone even though the namespace does not
    /// allow anonymous subscription (those endpoints carry no credentials).
    pub simple_access_namespaces: Vec<String>,

    /// A second listener speaking TLS on this port while `port` stays plain (0: when TLS
    /// is enabled, `port` itself speaks TLS).
    pub tls_port: u16,
    /// Centrifugo v6 `http_server` section: `http_server.tls` turns TLS on.
    pub http_server: tls::HttpServerConfig,

    /// What loading the file noticed (Centrifugo keys applied under Herald's names, or
    /// ignored): logged once at start.
    #[serde(skip)]
    pub notices: Vec<String>,

    /// Centrifugo `client` section: tokens, anonymous access, pings.
    pub client: centrifugo::ClientConfig,
    /// Centrifugo `http_api` section: the server API key.
    pub http_api: centrifugo::HttpApiConfig,
    /// Centrifugo `channel` section: namespaces and their options.
    pub channel: centrifugo::ChannelConfig,
    /// Addresses (CIDR or single IP) allowed to read `/metrics`; default loopback only (a
    /// list of its own: the scraper is seldom the publisher). A request carrying
    /// `X-API-Key: <publish_api_key>` may read it from anywhere, like `/stats`.
    pub metrics_allow: Vec<String>,
    /// Centrifugo `admin` section: a password that opens the status page (`/status`) from
    /// any address, on top of the `publish_allow` / `publish_api_key` rule.
    pub admin: centrifugo::AdminConfig,
    /// Centrifugo `websocket` section (its compression keys).
    pub websocket: centrifugo::WebsocketConfig,
    /// Centrifugo `engine` section: the embedded memory engine (default) or Redis, for
    /// several nodes acting as one.
    pub engine: engine::EngineConfig,
    /// Centrifugo `rpc` section: the RPC proxy, RPC namespaces, the built-in ping method.
    pub rpc: proxy::RpcConfig,
    /// Centrifugo `proxies`: named proxies namespaces and RPC options refer to.
    pub proxies: Vec<proxy::NamedProxy>,
    /// Threads that make the calls to the application backend's proxy endpoints (only
    /// started when a proxy is configured). Each makes one call at a time; a call waits in
    /// a queue for a free thread.
    pub proxy_threads: usize,
    /// Most proxy calls waiting for a thread; a call beyond it fails at once (the client
    /// gets error 100, temporary, and retries) and counts in `herald_proxy_rejected_total`.
    pub proxy_queue_size: usize,
    /// Largest backend answer to a proxy call in bytes; a larger one counts as a failed
    /// call (error 100).
    pub proxy_max_response: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            bind: "0.0.0.0".into(),
            port: 8000,
            workers: 0,
            reuse_port: false,
            io: "epoll".into(),
            log_level: "info".into(),
            handshake_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            max_request_line: 8192,
            max_headers: 64,
            max_header_bytes: 16384,
            max_body: 1 << 20,
            max_connections: 0,
            ws_max_message: 1 << 20,
            ws_max_frame: 1 << 20,
            ws_ping_interval_ms: 25_000,
            ws_subprotocols: Vec::new(),
            ws_allowed_origins: Vec::new(),
            ws_compression: false,
            ws_compression_min_size: 256,
            ws_compression_level: 1,
            max_out_queue: 4 << 20,
            shutdown_timeout_ms: 5_000,
            history_size: 100,
            history_ttl_ms: 300_000,
            longpoll_timeout_ms: 30_000,
            stream_keepalive_ms: 15_000,
            sse_retry_ms: 2_000,
            publish_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            publish_api_key: None,
            ws_client_publish: false,
            cors_origins: vec!["*".into()],
            max_channels_per_conn: 64,
            max_connections_per_ip: 0,
            connect_rate_per_ip: 0,
            max_tracked_ips: 65_536,
            max_subscribers_per_channel: 0,
            simple_access_namespaces: Vec::new(),
            tls_port: 0,
            http_server: Default::default(),
            notices: Vec::new(),
            client: Default::default(),
            http_api: Default::default(),
            channel: Default::default(),
            metrics_allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            admin: Default::default(),
            websocket: Default::default(),
            engine: Default::default(),
            rpc: Default::default(),
            proxies: Vec::new(),
            proxy_threads: 16,
            proxy_queue_size: 1024,
            proxy_max_response: 1 << 20,
        }
    }
}

/// An allow-list entry: network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// Network address as written; host bits beyond `prefix` are ignored when matching.
    pub addr: IpAddr,
    /// Number of leading bits that must match: 0-32 for IPv4, 0-128 for IPv6 (a bare
    /// address gets the full length, i.e. one host).
    pub prefix: u8,
}

impl Cidr {
    /// Parse `10.0.0.0/8`, `::1/128` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a.trim().parse().map_err(|_| format!("`{s}` is not an IP address or CIDR"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            Some(p) => p
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("`{s}`: prefix must be 0-{max}"))?,
            None => max,
        };
        Ok(Cidr { addr, prefix })
    }

    /// Whether `ip` falls inside this network (IPv4-mapped IPv6 addresses match IPv4 nets).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u32::MAX << (32 - self.prefix) };
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl Config {
    /// Read a JSON config file; unknown keys and bad values are errors naming the key.
    pub fn from_file(path: &str) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read config file {path}: {e}"))?;
        Self::from_json(&text).map_err(|e| format!("config file {path}: {e}"))
    }

    /// Parse JSON text into a config (see [`Config::from_file`]).
    pub fn from_json(text: &str) -> Result<Config, String> {
        let mut v: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let mut notices = Vec::new();
        compat::adapt(&mut v, &mut notices)?;
        // Centrifugo keys Herald does not implement are set aside (named in one warning when
        // they are not at Centrifugo's default); any other unknown key is an error.
        let mut ignored = Vec::new();
        let cfg: Config = loop {
            match serde_path_to_error::deserialize::<_, Config>(v.clone()) {
                Ok(c) => break c,
                Err(e) => {
                    let path = e.path().to_string();
                    let inner = e.into_inner().to_string();
                    let unknown = compat::unknown_field_path(&path, &inner);
                    let known = unknown.as_ref().and_then(|u| compat::centrifugo_default(u).map(|d| (u.clone(), d)));
                    if let Some((u, default)) = known {
                        if ignored.len() > 4096 {
                            return Err("too many keys Herald does not implement".into());
                        }
                        let value = compat::remove(&mut v, &u);
                        if !value.as_ref().is_some_and(|x| compat::is_default(x, default)) {
                            ignored.push(compat::show(&u));
                        }
                        continue;
                    }
                    // Report against the text itself (line and column) when it can be had.
                    let again =
                        serde_path_to_error::deserialize::<_, Config>(&mut serde_json::Deserializer::from_str(text));
                    let detail = match again {
                        Err(e2) if e2.path().to_string() == path => e2.into_inner().to_string(),
                        _ => inner,
                    };
                    return Err(if path == "." || path == "?" || path.is_empty() {
                        detail
                    } else {
                        format!("key `{path}`: {detail}")
                    });
                }
            }
        };
        let mut cfg = cfg;
        if !ignored.is_empty() {
            notices.push(format!("Centrifugo keys Herald does not implement, ignored: {}", ignored.join(", ")));
        }
        notices.extend(cfg.jwks_notices());
        cfg.notices = notices;
        cfg.channel.namespace_boundary = cfg.client.channel_namespace_boundary.clone();
        cfg.validate()?;
        Ok(cfg)
    }

    /// Keys that a `jwks_public_endpoint` makes unused (as in Centrifugo, a JWKS replaces
    /// the HMAC secret and the PEM keys of its section): one warning per section.
    fn jwks_notices(&self) -> Vec<String> {
        let t = &self.client.token;
        let st = &self.client.subscription_token;
        let mut out = Vec::new();
        for (section, jwks, keys) in [
            ("client.token", &t.jwks_public_endpoint, [&t.hmac_secret_key, &t.rsa_public_key, &t.ecdsa_public_key]),
            (
                "client.subscription_token",
                &st.jwks_public_endpoint,
                [&st.hmac_secret_key, &st.rsa_public_key, &st.ecdsa_public_key],
            ),
        ] {
            let set: Vec<String> = ["hmac_secret_key", "rsa_public_key", "ecdsa_public_key"]
                .iter()
                .zip(keys)
                .filter(|(_, v)| !v.is_empty())
                .map(|(k, _)| format!("`{section}.{k}`"))
                .collect();
            if !jwks.is_empty() && !set.is_empty() {
                out.push(format!(
                    "not used while `{section}.jwks_public_endpoint` is set (as in Centrifugo): {}",
                    set.join(", ")
                ));
            }
        }
        out
    }

    /// Whether permessage-deflate is negotiated (`websocket.compression` over `ws_compression`).
    pub fn compression(&self) -> bool {
        self.websocket.compression.unwrap_or(self.ws_compression)
    }

    /// Size below which messages go uncompressed.
    pub fn compression_min_size(&self) -> usize {
        self.websocket.compression_min_size.unwrap_or(self.ws_compression_min_size)
    }

    /// zlib compression level.
    pub fn compression_level(&self) -> u32 {
        self.websocket.compression_level.unwrap_or(self.ws_compression_level)
    }

    /// Check values that parse but make no sense; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        let bad = |k: &str, why: &str| Err(format!("key `{k}`: {why}"));
        if self.bind.parse::<IpAddr>().is_err() {
            return bad("bind", &format!("`{}` is not an IP address (such as 0.0.0.0 or 127.0.0.1)", self.bind));
        }
        self.engine.validate()?;
        if self.workers > 64 {
            return bad("workers", "must be 0 (one per core) to 64");
        }
        if !matches!(self.io.as_str(), "epoll" | "uring") {
            return bad("io", "must be \"epoll\" or \"uring\"");
        }
        if self.io == "uring" && self.http_server.tls.enabled {
            return bad("io", "\"uring\" does not serve TLS yet: use \"epoll\" with http_server.tls");
        }
        if !matches!(self.log_level.as_str(), "error" | "warn" | "info" | "debug" | "trace") {
            return bad("log_level", "must be one of error, warn, info, debug, trace");
        }
        for (k, v) in [
            ("handshake_timeout_ms", self.handshake_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("ws_ping_interval_ms", self.ws_ping_interval_ms),
            ("shutdown_timeout_ms", self.shutdown_timeout_ms),
            ("history_ttl_ms", self.history_ttl_ms),
            ("longpoll_timeout_ms", self.longpoll_timeout_ms),
            ("stream_keepalive_ms", self.stream_keepalive_ms),
        ] {
            if v == 0 || v > 86_400_000 {
                return bad(k, "must be between 1 and 86400000 ms");
            }
        }
        for (k, v, min) in [
            ("max_request_line", self.max_request_line, 64),
            ("max_headers", self.max_headers, 4),
            ("max_header_bytes", self.max_header_bytes, 256),
            ("max_body", self.max_body, 1),
            ("ws_max_message", self.ws_max_message, 125),
            ("ws_max_frame", self.ws_max_frame, 125),
            ("max_out_queue", self.max_out_queue, 1024),
            ("max_channels_per_conn", self.max_channels_per_conn, 1),
            ("max_tracked_ips", self.max_tracked_ips, 1),
        ] {
            if v < min {
                return bad(k, &format!("must be at least {min}"));
            }
        }
        if self.max_header_bytes < self.max_request_line {
            return bad("max_header_bytes", "must be at least max_request_line");
        }
        if self.max_out_queue < self.ws_max_message + 14 {
            return bad("max_out_queue", "must be larger than ws_max_message + 14 (an echo of the largest message)");
        }
        if !(1..=9).contains(&self.compression_level()) {
            let k = if self.websocket.compression_level.is_some() {
                "websocket.compression_level"
            } else {
                "ws_compression_level"
            };
            return bad(k, "must be 1 (fastest) to 9 (smallest)");
        }
        if self.history_size > 1_000_000 {
            return bad("history_size", "must be at most 1000000");
        }
        for p in &self.publish_allow {
            Cidr::parse(p).map_err(|e| format!("key `publish_allow`: {e}"))?;
        }
        for p in &self.metrics_allow {
            Cidr::parse(p).map_err(|e| format!("key `metrics_allow`: {e}"))?;
        }
        self.admin.validate()?;
        if let Some(k) = &self.publish_api_key {
            if k.len() < 8 {
                return bad("publish_api_key", "must be at least 8 characters");
            }
        }
        self.channel.validate()?;
        proxy::validate(self)?;
        if self.proxy_threads == 0 || self.proxy_threads > 1024 {
            return bad("proxy_threads", "must be 1 to 1024");
        }
        if self.proxy_queue_size == 0 {
            return bad("proxy_queue_size", "must be at least 1");
        }
        if self.proxy_max_response < 1024 {
            return bad("proxy_max_response", "must be at least 1024");
        }
        self.http_server.tls.validate()?;
        self.client.token.public_keys("client.token")?;
        centrifugo::check_jwks_endpoint("client.token.jwks_public_endpoint", &self.client.token.jwks_public_endpoint)?;
        centrifugo::check_jwks_endpoint(
            "client.subscription_token.jwks_public_endpoint",
            &self.client.subscription_token.jwks_public_endpoint,
        )?;
        let st = &self.client.subscription_token;
        centrifugo::TokenConfig {
            rsa_public_key: st.rsa_public_key.clone(),
            ecdsa_public_key: st.ecdsa_public_key.clone(),
            ..Default::default()
        }
        .public_keys("client.subscription_token")?;
        for (k, list) in
            [("client.allowed_origins", &self.client.allowed_origins), ("ws_allowed_origins", &self.ws_allowed_origins)]
        {
            if let Some(p) = list.iter().find(|p| p.is_empty() || p.contains(['[', ']', '{', '}', '\\'])) {
                return bad(k, &format!("pattern `{p}`: only `*` and `?` are wildcards (no [..] or {{a,b}})"));
            }
        }
        if self.tls_port != 0 && !self.http_server.tls.enabled {
            return bad("tls_port", "needs http_server.tls.enabled with a certificate and key");
        }
        if self.tls_port != 0 && self.tls_port == self.port {
            return bad("tls_port", "must differ from port (leave it 0 to serve TLS on port itself)");
        }
        if self.client.channel_namespace_boundary.as_deref().is_some_and(|b| b.is_empty() || b.contains(',')) {
            return bad("client.channel_namespace_boundary", "must be a non-empty string without `,`");
        }
        for (i, n) in self.simple_access_namespaces.iter().enumerate() {
            if !self.channel.namespaces.iter().any(|ns| ns.name == *n) {
                return bad(
                    &format!("simple_access_namespaces[{i}]"),
                    &format!("`{n}` is not a namespace in channel.namespaces"),
                );
            }
        }
        if self.client.ping_interval.0 == 0 || self.client.pong_timeout.0 == 0 {
            return bad("client.ping_interval", "ping_interval and pong_timeout must be above 0");
        }
        if self.client.pong_timeout.0 >= self.client.ping_interval.0 {
            return bad("client.pong_timeout", "must be shorter than client.ping_interval");
        }
        Ok(())
    }

    /// History (size, ttl ms) of a channel: its Centrifugo namespace decides when it has
    /// one; channels without a namespace use `channel.without_namespace` when that enables
    /// history, else `history_size` / `history_ttl_ms`.
    pub fn history_policy(&self, channel: &str) -> (usize, u64) {
        match self.channel.resolve(channel) {
            Some((ns, o)) if !ns.is_empty() => {
                if o.history() {
                    (o.history_size, o.history_ttl.0)
                } else {
                    (0, 0)
                }
            }
            Some((_, o)) if o.history() => (o.history_size, o.history_ttl.0),
            _ => (self.history_size, self.history_ttl_ms),
        }
    }

    /// Number of workers to start: `workers`, or the number of cores when 0.
    pub fn worker_count(&self) -> usize {
        if self.workers > 0 {
            self.workers
        } else {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        }
    }

    /// The publish allow-list, parsed (validated at load time).
    pub fn publish_cidrs(&self) -> Vec<Cidr> {
        self.publish_allow.iter().filter_map(|p| Cidr::parse(p).ok()).collect()
    }

    /// Whether `ip` may read `/metrics` (inside a `metrics_allow` network). A few short
    /// strings parsed per scrape: no state, bounded work.
    pub fn metrics_allowed(&self, ip: IpAddr) -> bool {
        self.metrics_allow.iter().filter_map(|p| Cidr::parse(p).ok()).any(|c| c.contains(ip))
    }

    /// One line for the start-up log: who may publish (and read `/stats`, `/status`).
    pub fn publish_policy(&self) -> String {
        let list = if self.publish_allow.is_empty() { "nobody".to_string() } else { self.publish_allow.join(", ") };
        let loopback = ["127.0.0.0/8", "::1/128"];
        let who = if self.publish_allow.iter().all(|p| loopback.contains(&p.as_str())) && !self.publish_allow.is_empty()
        {
            "loopback only".to_string()
        } else {
            format!("from {list}")
        };
        let key = if self.publish_api_key.is_some() { " or anywhere with X-API-Key" } else { "" };
        let admin = if self.admin.enabled { "; /status also with the admin password" } else { "" };
        format!("publish, /stats and /status allowed {who}{key}{admin}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().unwrap();
        assert_eq!(Config::from_json("{}").unwrap().port, 8000);
        assert!(!Config::default().reuse_port, "sharing a port is opt-in");
        assert!(Config::from_json(r#"{"reuse_port": true}"#).unwrap().reuse_port);
        assert_eq!(Config::default().io, "epoll");
        assert_eq!(Config::from_json(r#"{"io": "uring"}"#).unwrap().io, "uring");
        let e = Config::from_json(r#"{"io": "kqueue"}"#).unwrap_err();
        assert!(e.contains("key `io`"), "{e}");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::from_json(r#"{"prot": 1}"#).unwrap_err();
        assert!(e.contains("prot"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::from_json(r#"{"port": "eighty"}"#).unwrap_err();
        assert!(e.contains("key `port`"), "{e}");
        let e = Config::from_json(r#"{"bind": "nowhere"}"#).unwrap_err();
        assert!(e.contains("key `bind`") && e.contains("nowhere"), "{e}");
        let e = Config::from_json(r#"{"publish_allow": ["10.0.0.0/33"]}"#).unwrap_err();
        assert!(e.contains("publish_allow"), "{e}");
    }

    #[test]
    fn syntax_errors_give_line_and_column() {
        let e = Config::from_json("{\n  \"port\": 8001,\n").unwrap_err();
        assert!(e.contains("line 3") && e.contains("column"), "{e}");
        assert!(!e.contains("key `?`"), "{e}");
        let e = Config::from_json("{\"port\": 1 \"bind\": \"x\"}").unwrap_err();
        assert!(e.contains("line 1 column"), "{e}");
    }

    #[test]
    fn metrics_allow_defaults_to_loopback() {
        let c = Config::default();
        assert!(c.metrics_allowed("127.0.0.1".parse().unwrap()));
        assert!(c.metrics_allowed("::1".parse().unwrap()));
        assert!(!c.metrics_allowed("10.1.2.3".parse().unwrap()));
        let c = Config::from_json(r#"{"publish_allow": ["10.0.0.0/8"]}"#).unwrap();
        assert!(!c.metrics_allowed("10.1.2.3".parse().unwrap()), "a list of its own");
        let c = Config::from_json(r#"{"metrics_allow": ["192.168.0.0/16"]}"#).unwrap();
        assert!(c.metrics_allowed("192.168.1.1".parse().unwrap()));
        assert!(!c.metrics_allowed("127.0.0.1".parse().unwrap()));
        let e = Config::from_json(r#"{"metrics_allow": ["x"]}"#).unwrap_err();
        assert!(e.contains("metrics_allow"), "{e}");
    }

    #[test]
    fn admin_section_needs_password_and_secret() {
        let e = Config::from_json(r#"{"admin": {"enabled": true}}"#).unwrap_err();
        assert!(e.contains("admin.password"), "{e}");
        let e = Config::from_json(r#"{"admin": {"enabled": true, "password": "pw-12345678"}}"#).unwrap_err();
        assert!(e.contains("admin.secret"), "{e}");
        Config::from_json(r#"{"admin": {"enabled": true, "password": "pw-12345678", "secret": "s-12345678"}}"#)
            .unwrap();
        let e = Config::from_json(r#"{"admin": {"enabld": true}}"#).unwrap_err();
        assert!(e.contains("enabld"), "{e}");
    }

    /// Every top-level key the config struct accepts has a row in README's Configuration
    /// table (`| \`key\` |`), and every row names a key the struct accepts.
    #[test]
    fn readme_documents_every_config_key() {
        let readme = include_str!("../../README.md");
        let start = readme.find("## Configuration").expect("README has a Configuration section");
        let section = &readme[start..];
        let end = section[3..].find("\n## ").map(|i| i + 3).unwrap_or(section.len());
        let section = &section[..end];
        let rows: Vec<&str> = section
            .lines()
            .filter_map(|l| l.strip_prefix("| `"))
            .filter_map(|l| l.split_once('`').map(|(k, _)| k))
            .collect();
        let v = serde_json::to_value(Config::default()).unwrap();
        let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
        assert!(keys.len() > 30, "{keys:?}");
        for k in &keys {
            assert!(rows.iter().any(|r| r == k), "config key `{k}` has no row in README's Configuration table");
        }
        for r in &rows {
            assert!(keys.iter().any(|k| k == r), "README's Configuration table has `{r}`, which is no config key");
        }
    }

    #[test]
    fn cidr_matching() {
        let c = Cidr::parse("127.0.0.0/8").unwrap();
        assert!(c.contains("127.1.2.3".parse().unwrap()));
        assert!(c.contains("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!c.contains("10.0.0.1".parse().unwrap()));
        let c = Cidr::parse("::1").unwrap();
        assert!(c.contains("::1".parse().unwrap()));
        assert!(!c.contains("::2".parse().unwrap()));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains("8.8.8.8".parse().unwrap()));
    }
}
