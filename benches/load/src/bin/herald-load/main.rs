//! `herald-load`: a load generator for Herald and its peers (Nchan, uWebSockets.js, Node
//! `ws`), built on mio and Herald's own codecs.
//!
//! Opens N subscribers (WebSocket, SSE or long-poll) spread over channels and over source
//! addresses 127.0.1.x (WebSocket subscribers may speak Centrifugo's JSON client protocol:
//! `connect`, then `subscribe`, answering `{}` pings), publishes over HTTP (a plain POST of
//! the message, or Centrifugo's `POST /api/publish`) at a fixed rate or as fast as a window of
//! undelivered messages allows, and reports connect rate, publishes/s, deliveries/s, loss,
//! duplicates, latency percentiles and, given the server's PID, its RSS per connection. A
//! progress line goes to stderr every second (connections, messages published and
//! delivered, rates, errors); at the end a summary table on stdout, or with `--json` one
//! JSON line. Every phase is bounded in time.
//!
//! Modules: `run` (the mio event loop and its phases), `wire` (URL templates, the load
//! message and its scan); sockets, HTTP, WebSocket, `/proc` and the open-files limit come
//! from the shared client library `herald_bench_tools`.
//!
//! Examples:
//!   herald-load --target herald --addr 127.0.0.1:8000 --conns 10000 --rate 0 --duration 10
//!   herald-load --target nchan --addr 127.0.0.1:9001 --conns 10000 --server-pid 1234
//!   herald-load --tls --tls-addr 127.0.0.1:8443 --ca server.crt --conns 10000   (wss://)
//!   herald-load --sub-url 'ws://127.0.0.1:9002/sub?cid={ch}' --pub-url 'http://127.0.0.1:9002/pub?cid={ch}'
//!   herald-load --target centrifugo --addr 127.0.0.1:8000 --token-secret S --api-key K
//!       (real Centrifugo, or Herald's Centrifugo endpoint with the same config)

mod run;
mod wire;

use clap::Parser;
use herald::proto::jwt::Secret;
use herald_bench_tools::tls::{self, Verify};
use herald_bench_tools::{procfs, rlimit::raise_nofile};
use run::{pct, CfClient, Opts, PubApi, Transport};
use std::time::Duration;
use wire::UrlTemplate;

/// Load generator for Herald and its peers: many subscribers, one HTTP publisher, loss and
/// latency figures.
#[derive(Parser, Debug)]
#[command(name = "herald-load", version, about)]
struct Cli {
    /// URL shapes to use: herald, nchan, uws, node-ws, centrifugo (overridden by
    /// --sub-url/--pub-url). `centrifugo` subscribes on `/connection/websocket` with the JSON
    /// client protocol and publishes with `POST /api/publish`: real Centrifugo, or Herald's
    /// Centrifugo endpoint.
    #[arg(long, default_value = "herald")]
    target: String,
    /// What WebSocket subscribers speak after the upgrade: `plain` (receive messages) or
    /// `centrifugo` (JSON protocol: connect, subscribe, answer pings) [default: centrifugo
    /// for --target centrifugo, else plain].
    #[arg(long)]
    sub_proto: Option<String>,
    /// How messages are published: `plain` (POST of the message to the publish URL) or
    /// `centrifugo-api` (POST `{"channel":..,"data":MESSAGE}`; an answer with an `error`
    /// counts as a failed publish) [default: centrifugo-api for --target centrifugo].
    #[arg(long)]
    pub_proto: Option<String>,
    /// `X-API-Key` header on every publish (Centrifugo's `http_api.key`; Herald's
    /// `publish_api_key` takes the same header).
    #[arg(long)]
    api_key: Option<String>,
    /// Centrifugo protocol: sign an HS256 connection token per subscriber (user `loadN`,
    /// valid 1 h) with this `client.token.hmac_secret_key`; without it subscribers connect
    /// anonymously (the server must allow it).
    #[arg(long)]
    token_secret: Option<String>,
    /// Server address for the --target URL shapes.
    #[arg(long, default_value = "127.0.0.1:8000")]
    addr: String,
    /// Subscribers over TLS: `wss://` at --tls-addr (the publisher stays on plain http:// at
    /// --addr). Needs --ca or --insecure. A --sub-url starting wss:// implies it.
    #[arg(long)]
    tls: bool,
    /// The TLS listener for --tls [default: --addr] (Herald's `tls_port`).
    #[arg(long)]
    tls_addr: Option<String>,
    /// With TLS: trust exactly the certificates in this PEM file (e.g. the self-signed one;
    /// webpki refuses a self-signed certificate marked CA:TRUE, which `openssl req -x509`
    /// makes by default, as the server's own: add `-addext basicConstraints=critical,CA:FALSE`).
    #[arg(long)]
    ca: Option<String>,
    /// With TLS: accept any server certificate (benchmarks on self-signed certificates).
    #[arg(long)]
    insecure: bool,
    /// Subscribe URL template, `{ch}` = channel (ws://, wss:// or http://). Repeat it to
    /// spread subscribers over several servers (e.g. nodes of one cluster): subscriber i uses
    /// template (i / channels) % n, so every channel has subscribers on every server.
    #[arg(long)]
    sub_url: Vec<String>,
    /// Publish URL template, `{ch}` = channel (http://; POST, body = message).
    #[arg(long)]
    pub_url: Option<String>,
    /// ws, sse or longpoll (long-poll speaks Herald's /listen/ since/last_id protocol).
    #[arg(long, default_value = "ws")]
    transport: String,
    /// Subscribers to open.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Channels the subscribers are spread over (subscriber i on channel i % channels).
    #[arg(long, default_value_t = 1)]
    channels: usize,
    /// Channel name prefix [default: a fresh one per run, so no old history interferes].
    #[arg(long)]
    chan_prefix: Option<String>,
    /// Source addresses 127.0.1.1 .. (0 = let the kernel choose).
    #[arg(long, default_value_t = 16)]
    sources: usize,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Give up on subscribers not open after this many seconds.
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// Idle seconds between connecting and publishing (server memory is read at its end).
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
    /// Publishes per second over all channels; 0 = as fast as --window allows.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Max-rate mode: most messages published and not yet delivered to every subscriber.
    #[arg(long, default_value_t = 16)]
    window: usize,
    /// Publisher connections (channel c uses connection c % N, so per-channel order holds).
    #[arg(long)]
    pub_conns: Option<usize>,
    /// Requests pipelined per publisher connection.
    #[arg(long, default_value_t = 4)]
    pub_pipeline: usize,
    /// With `--pub-proto centrifugo-api`: up to N publishes per request, sent as one
    /// `POST /api/batch` (`{"commands":[{"publish":{..}},..]}`, the path taken from the
    /// publish URL's directory); each reply's `error` fails only its own message.
    #[arg(long, default_value_t = 1)]
    pub_batch: usize,
    /// Message size in bytes (the published body).
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Seconds of publishing (0: connect, measure memory, stop).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Most seconds to wait for outstanding deliveries after publishing stops.
    #[arg(long, default_value_t = 3.0)]
    drain: f64,
    /// Server PID for RSS and CPU figures (its direct children are included).
    #[arg(long)]
    server_pid: Option<u32>,
    /// A label copied into the summary.
    #[arg(long, default_value = "")]
    label: String,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
    /// Print the summary as one JSON line on stdout (for scripts) instead of a table.
    #[arg(long)]
    json: bool,
    /// Offer permessage-deflate (RFC 7692) on WebSocket subscribers, as browsers do;
    /// compressed messages are inflated before they are counted.
    #[arg(long)]
    deflate: bool,
    /// Fill messages with varied JSON items instead of `x` padding (compressible like a
    /// real JSON feed; matters with --deflate).
    #[arg(long)]
    json_payload: bool,
}

fn templates(cli: &Cli, tr: Transport) -> Result<(Vec<String>, String), String> {
    let a = &cli.addr;
    let (sub, publ) = templates_at(cli, tr, a)?;
    let sub = match (&cli.tls, cli.sub_url.is_empty()) {
        (true, true) if tr == Transport::Ws => {
            let (_, rest) = sub.split_once("://").unwrap_or(("", &sub));
            let tls_addr = cli.tls_addr.as_deref().unwrap_or(a);
            format!("wss://{}", rest.replacen(a.as_str(), tls_addr, 1))
        }
        (true, true) => return Err("--tls: only the ws transport has TLS here (wss://)".into()),
        _ => sub,
    };
    let subs = if cli.sub_url.is_empty() { vec![sub] } else { cli.sub_url.clone() };
    Ok((subs, cli.pub_url.clone().unwrap_or(publ)))
}

fn templates_at(cli: &Cli, tr: Transport, a: &str) -> Result<(String, String), String> {
    let (sub, publ) = match (cli.target.as_str(), tr) {
        ("herald", Transport::Ws) => (format!("ws://{a}/ws/?cid={{ch}}"), format!("http://{a}/publish/?cid={{ch}}")),
        ("herald", Transport::Sse) => {
            (format!("http://{a}/sse/?cid={{ch}}"), format!("http://{a}/publish/?cid={{ch}}"))
        }
        ("herald", Transport::LongPoll) => {
            (format!("http://{a}/listen/?cid={{ch}}"), format!("http://{a}/publish/?cid={{ch}}"))
        }
        ("nchan", Transport::Ws) => (format!("ws://{a}/sub/{{ch}}"), format!("http://{a}/pub/{{ch}}")),
        ("nchan", Transport::Sse) => (format!("http://{a}/sub/{{ch}}"), format!("http://{a}/pub/{{ch}}")),
        ("uws" | "node-ws", Transport::Ws) => {
            (format!("ws://{a}/sub?cid={{ch}}"), format!("http://{a}/pub?cid={{ch}}"))
        }
        // The channel goes in the subscribe command and in the publish body.
        ("centrifugo", Transport::Ws) => (format!("ws://{a}/connection/websocket"), format!("http://{a}/api/publish")),
        (t, tr) => return Err(format!("no URL shapes for --target {t} with {tr:?}; pass --sub-url and --pub-url")),
    };
    Ok((sub, publ))
}

/// The TLS client for `wss://` subscribers, or None for plain ones.
fn tls_setup(cli: &Cli, sub: &UrlTemplate) -> Result<Option<run::TlsClient>, String> {
    if sub.scheme != "wss" {
        return Ok(None);
    }
    let verify = match (&cli.ca, cli.insecure) {
        (Some(ca), false) => Verify::CaFile(ca.clone()),
        (None, true) => Verify::Insecure,
        (Some(_), true) => return Err("--ca and --insecure: choose one".into()),
        (None, false) => {
            return Err("wss:// subscribers: pass --ca FILE (the server's certificate or CA) or --insecure".into())
        }
    };
    Ok(Some((tls::client_config(&verify)?, tls::server_name(&sub.host)?)))
}

fn main() {
    let cli = Cli::parse();
    let tr = match cli.transport.as_str() {
        "ws" => Transport::Ws,
        "sse" => Transport::Sse,
        "longpoll" | "long-poll" => Transport::LongPoll,
        t => {
            eprintln!("herald-load: --transport {t}: use ws, sse or longpoll");
            std::process::exit(2);
        }
    };
    let parsed = templates(&cli, tr).and_then(|(s, p)| {
        let s = s.iter().map(|s| UrlTemplate::parse(s)).collect::<Result<Vec<_>, _>>()?;
        let p = UrlTemplate::parse(&p)?;
        if p.scheme != "http" {
            return Err(format!("publish URL `{}://{}`: http:// only", p.scheme, p.host));
        }
        if s.iter().any(|t| t.scheme != s[0].scheme) {
            return Err("--sub-url: every template needs the same scheme".into());
        }
        let tls = tls_setup(&cli, &s[0])?;
        Ok((s, p, tls))
    });
    let (sub, publ, tls) = match parsed {
        Ok(x) => x,
        Err(e) => {
            eprintln!("herald-load: {e}");
            std::process::exit(2);
        }
    };
    let centrifugo = cli.target == "centrifugo";
    let sub_cf = match cli.sub_proto.as_deref() {
        None => centrifugo,
        Some("plain") => false,
        Some("centrifugo") => true,
        Some(p) => {
            eprintln!("herald-load: --sub-proto {p}: use plain or centrifugo");
            std::process::exit(2);
        }
    };
    let pub_api = match cli.pub_proto.as_deref() {
        None if centrifugo => PubApi::Centrifugo,
        None | Some("plain") => PubApi::Plain,
        Some("centrifugo-api") => PubApi::Centrifugo,
        Some(p) => {
            eprintln!("herald-load: --pub-proto {p}: use plain or centrifugo-api");
            std::process::exit(2);
        }
    };
    if cli.pub_batch > 1 && pub_api != PubApi::Centrifugo {
        eprintln!("herald-load: --pub-batch needs --pub-proto centrifugo-api");
        std::process::exit(2);
    }
    if sub_cf && tr != Transport::Ws {
        eprintln!("herald-load: --sub-proto centrifugo needs --transport ws");
        std::process::exit(2);
    }
    let cf = sub_cf.then(|| CfClient { token_secret: cli.token_secret.as_deref().map(|k| Secret::new(k.as_bytes())) });
    let nofile = raise_nofile();
    if cli.conns as u64 + cli.pub_conns.unwrap_or(16) as u64 + 16 > nofile {
        eprintln!("herald-load: warning: {} subscribers need more descriptors than the limit {nofile}", cli.conns);
    }
    let channels = cli.channels.max(1);
    let o = Opts {
        sub,
        publ,
        transport: tr,
        conns: cli.conns,
        channels,
        chan_prefix: cli.chan_prefix.clone().unwrap_or_else(|| format!("load{}x", std::process::id())),
        sources: cli.sources.min(250 * 200),
        connect_concurrency: cli.connect_concurrency.max(1),
        connect_timeout: Duration::from_secs_f64(cli.connect_timeout),
        settle: Duration::from_secs_f64(cli.settle),
        rate: cli.rate,
        window: cli.window.max(1),
        pub_conns: cli.pub_conns.unwrap_or(channels.min(16)).max(1),
        pub_pipeline: cli.pub_pipeline.max(1),
        pub_batch: cli.pub_batch.max(1),
        size: cli.size,
        duration: Duration::from_secs_f64(cli.duration),
        drain: Duration::from_secs_f64(cli.drain),
        server_pid: cli.server_pid,
        progress: !cli.quiet,
        deflate: cli.deflate,
        json: cli.json_payload,
        tls,
        cf,
        pub_api,
        api_key: cli.api_key.clone(),
    };
    let mut t = run::run(&o);
    t.lat_us.sort_unstable();
    let lost: u64 = t.expected.saturating_sub(t.unique);
    let open = t.opened.saturating_sub(t.closed_by_server);
    let per_conn = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if t.opened > 0 => Some((b as f64 - a as f64) / t.opened as f64),
        _ => None,
    };
    let page = procfs::page_size();
    let kernel_idle = match (t.sock_base, t.sock_idle) {
        (Some(a), Some(b)) if t.opened > 0 => Some((b.1 as f64 - a.1 as f64) * page as f64 / t.opened as f64),
        _ => None,
    };
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    let summary = serde_json::json!({
        "label": cli.label,
        "target": cli.target,
        "sub_url": o.sub.iter().map(|t| t.scheme.clone() + "://" + &t.host + &t.path).collect::<Vec<_>>().join(" "),
        "transport": cli.transport,
        "conns": cli.conns,
        "opened": t.opened,
        "open_at_end": open,
        "connect_errors": t.connect_errors,
        "connect_timeouts": t.connect_timeouts,
        "closed_by_server": t.closed_by_server,
        "connect_secs": (t.connect_secs * 1000.0).round() / 1000.0,
        "connects_per_s": r1(if t.connect_secs > 0.0 { t.opened as f64 / t.connect_secs } else { 0.0 }),
        "channels": channels,
        "size": cli.size,
        "rate": cli.rate,
        "window": if cli.rate > 0.0 { serde_json::Value::Null } else { cli.window.into() },
        "publish_secs": (t.pub_secs * 1000.0).round() / 1000.0,
        "published": t.published,
        "publish_errors": t.pub_errors,
        "publish_skipped": t.pub_skipped,
        "publishes_per_s": r1(t.published as f64 / t.pub_secs.max(1e-9)),
        "deliveries_per_s": r1(t.deliveries_in_window as f64 / t.pub_secs.max(1e-9)),
        "delivered": t.unique,
        "expected": t.expected,
        "lost": lost,
        "loss_pct": if t.expected > 0 { (lost as f64 / t.expected as f64 * 1e4).round() / 1e2 } else { 0.0 },
        "duplicates": t.dups,
        "strays": t.strays,
        "latency_ms": {
            "p50": pct(&t.lat_us, 50.0), "p99": pct(&t.lat_us, 99.0), "p99.9": pct(&t.lat_us, 99.9),
            "max": t.lat_us.last().map(|&v| v as f64 / 1000.0).unwrap_or(0.0), "samples": t.lat_us.len(),
        },
        "server_pid": cli.server_pid,
        "server_rss_base_kb": t.rss_base.map(|v| v / 1024),
        "server_rss_idle_kb": t.rss_idle.map(|v| v / 1024),
        "server_rss_end_kb": t.rss_end.map(|v| v / 1024),
        "server_rss_peak_kb": t.rss_peak.map(|v| v / 1024),
        "rss_per_conn_bytes": per_conn(t.rss_base, t.rss_idle).map(|v| v.round()),
        "kernel_tcp_mem_idle_per_conn_bytes": kernel_idle.map(|v| v.round()),
        // Both ends of each loopback connection, plus anything else the system did meanwhile.
        "kernel_slab_per_conn_pair_bytes": per_conn(t.slab_base, t.slab_idle).map(|v| v.round()),
        "kernel_tcp_mem_pages": { "base": t.sock_base.map(|s| s.1), "idle": t.sock_idle.map(|s| s.1), "peak": t.sock_peak_mem },
        "server_cpu_pct": t.server_cpu_pct.map(r1),
        "generator_cpu_pct": r1(t.gen_cpu_pct),
        "first_error": t.first_error,
    });
    let mut summary = summary;
    let deflate = serde_json::json!({
        "deflate_offered": cli.deflate,
        "deflate_negotiated": t.deflate_negotiated,
        "compressed_msgs": t.compressed_msgs,
        "sub_bytes_in_window": t.sub_bytes_in_window,
        "sub_bytes_per_delivery": if t.deliveries_in_window > 0 {
            serde_json::Value::from(r1(t.sub_bytes_in_window as f64 / t.deliveries_in_window as f64))
        } else {
            serde_json::Value::Null
        },
    });
    // Protocols (one json! macro cannot hold every field: recursion limit).
    let protocols = serde_json::json!({
        "sub_proto": if sub_cf { "centrifugo" } else { "plain" },
        "pub_proto": match pub_api { PubApi::Plain => "plain", PubApi::Centrifugo => "centrifugo-api" },
        "pub_batch": o.pub_batch,
        "pub_url": o.publ.scheme.clone() + "://" + &o.publ.host + &o.publ.path,
        "centrifugo_pings_answered": t.cf_pings,
    });
    for extra in [deflate, protocols] {
        if let (Some(o), serde_json::Value::Object(d)) = (summary.as_object_mut(), extra) {
            o.extend(d);
        }
    }
    if cli.json {
        println!("{summary}");
    } else {
        print!("{}", herald_bench_tools::report::table("herald-load summary", &summary));
    }
}
