//! `herald-soak`: a bounded soak test of Herald. Not run in CI (see tests/soak/README.md).
//!
//! Starts its own `herald` with a soak config, then:
//! 1. warm-up: opens every subscriber once on separate warm-up channels, publishes one
//!    message per channel, waits for it, closes them all; the server's RSS and descriptor
//!    count read 3 s later are the "start" figures (why: see the README);
//! 2. connects the soak subscribers (mostly WebSocket, some SSE, some long-poll, spread over
//!    the channels; first connection asks from id 0) and reads RSS/fds again;
//! 3. for `--minutes`, publishes at `--rate` round-robin over the channels while every
//!    subscriber churns: receives for a random while, disconnects, stays away a random
//!    while, reconnects resuming from the last id it processed;
//! 4. stops publishing and churn, waits until every subscriber has its channel's newest id,
//!    closes everything, waits until the server has dropped every channel (history TTL)
//!    and reads RSS/fds a last time.
//!
//! PASS: no id lost, none duplicated, no "missed" notice, every subscriber caught up,
//! RSS at the end within `--rss-tolerance` of the start, descriptors back to the start.
//! A progress line goes to stderr every 5 s (open connections, reconnects, published,
//! deliveries and their rate, lost/dup/missed, errors, server RSS and descriptors); at the
//! end a summary table on stdout, or with `--json` one JSON line; the exit status is 0 on PASS, 1 on FAIL, 2 on a usage or start-up error.
//! Every phase is bounded in time and a watchdog ends the run (and the server it started)
//! if the whole exceeds its budget.
//!
//! Modules: this file (command line, the server it starts, the phases, the verdict), `net`
//! (the subscribers' and publishers' mio event loop). Sockets, HTTP, WebSocket, `/proc`,
//! the PRNG and the open-files limit come from the shared client library
//! `herald_bench_tools`.

mod net;

use clap::Parser;
use herald_bench_tools::{http, procfs, rlimit::raise_nofile, tls};
use net::{Cfg, Soak, Tr};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

/// Soak test: thousands of churning subscribers against a Herald it starts itself.
#[derive(Parser, Debug)]
#[command(name = "herald-soak", version, about)]
struct Cli {
    /// The herald binary to start.
    #[arg(long, default_value = "target/release/herald")]
    herald: String,
    /// Minutes of publishing and churn.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Subscribers.
    #[arg(long, default_value_t = 5000)]
    subscribers: usize,
    /// Channels the subscribers are spread over (subscriber i on channel i % channels).
    #[arg(long, default_value_t = 50)]
    channels: usize,
    /// Percent of subscribers on SSE.
    #[arg(long, default_value_t = 10)]
    sse_pct: u32,
    /// Percent of subscribers on long-poll (the rest use WebSocket).
    #[arg(long, default_value_t = 10)]
    longpoll_pct: u32,
    /// Messages published per second over all channels.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Published body size in bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Shortest and longest connected session, seconds.
    #[arg(long, default_value_t = 3.0)]
    session_min: f64,
    #[arg(long, default_value_t = 30.0)]
    session_max: f64,
    /// Shortest and longest time away between sessions, seconds.
    #[arg(long, default_value_t = 0.0)]
    offline_min: f64,
    #[arg(long, default_value_t = 2.0)]
    offline_max: f64,
    /// Server history per channel (must cover the whole run so nothing is "missed").
    #[arg(long, default_value_t = 100_000)]
    history_size: usize,
    /// Server history TTL, seconds (must exceed the longest time away; the end waits for it
    /// so the server holds no history when RSS is read).
    #[arg(long, default_value_t = 30)]
    history_ttl: u64,
    /// Server worker threads (0: one per core).
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Publisher connections.
    #[arg(long, default_value_t = 4)]
    pub_conns: usize,
    /// Source addresses 127.0.1.x for subscribers.
    #[arg(long, default_value_t = 16)]
    sources: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 256)]
    connect_concurrency: usize,
    /// Subscribers in the warm-up cycle [default: --subscribers].
    #[arg(long)]
    warmup_subscribers: Option<usize>,
    /// Seconds of publishing and churn in the warm-up cycle.
    #[arg(long, default_value_t = 30.0)]
    warmup_secs: f64,
    /// Allowed RSS growth from start to end, percent.
    #[arg(long, default_value_t = 10.0)]
    rss_tolerance: f64,
    /// Seconds to wait for every subscriber to catch up once publishing stops.
    #[arg(long, default_value_t = 60)]
    drain: u64,
    /// PRNG seed (transports, session and away times).
    #[arg(long, default_value_t = 0x5eed)]
    seed: u64,
    /// At start and end, have gdb call jemalloc's `malloc_stats_print` in the server (the full
    /// report, with per-size-class slab use, goes to herald's log): to find which objects keep
    /// pages resident. Pauses the server while gdb is attached.
    #[arg(long)]
    allocator_dump: bool,
    /// Herald's log goes here [default: herald-soak-PID.log in the temp dir].
    #[arg(long)]
    herald_log: Option<String>,
    /// Print the summary as one JSON line on stdout (for scripts) instead of a table.
    #[arg(long)]
    json: bool,
    /// Subscribers over TLS (wss://, and https:// for SSE and long-poll): a self-signed
    /// certificate made with the openssl CLI, herald with `http_server.tls` on a second port
    /// (`tls_port`); publishers stay on the plain port.
    #[arg(long)]
    tls: bool,
}

/// Under `--tls`: a self-signed certificate and key in `dir` (openssl CLI; CA:FALSE, as
/// webpki wants of a server's own certificate), a free port for `tls_port`, and the client
/// side. Returns (cert path, key path, TLS address, client configuration).
fn tls_setup(dir: &std::path::Path, me: u32) -> Result<(String, String, SocketAddr, TlsClient), String> {
    let cert = dir.join(format!("herald-soak-{me}.crt")).to_string_lossy().into_owned();
    let key = dir.join(format!("herald-soak-{me}.key")).to_string_lossy().into_owned();
    let ok = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
        .args(["-keyout", &key, "-out", &cert, "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-addext", "basicConstraints=critical,CA:FALSE"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("--tls needs the openssl CLI: {e}"))?;
    if !ok.success() {
        return Err(format!("openssl could not make a certificate ({ok})"));
    }
    // A free port now; herald binds it a moment later (a race only with other processes).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("no free port: {e}"))?
        .port();
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let cfg = tls::client_config(&tls::Verify::CaFile(cert.clone()))?;
    let name = tls::server_name(&addr.to_string())?;
    Ok((cert, key, addr, (cfg, name)))
}

/// The client side of `--tls`: its configuration and the server name to verify.
type TlsClient = (Arc<rustls::ClientConfig>, rustls::pki_types::ServerName<'static>);

/// How often a progress line goes to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Resident memory of one process, in KiB.
fn rss_kb(pid: u32) -> Option<u64> {
    procfs::rss_bytes_one(pid).map(|b| b / 1024)
}

/// CPU seconds (user + system) of one process.
fn cpu_secs(pid: u32) -> Option<f64> {
    procfs::cpu_seconds_one(&pid.to_string())
}

/// The started server; SIGTERM then SIGKILL (by its PID only) when dropped.
struct Server {
    child: Child,
    pid: u32,
    addr: SocketAddr,
    warnings: Arc<AtomicU32>,
}

impl Server {
    fn start(cli: &Cli, cfg_path: &str, log_path: &str) -> Result<Server, String> {
        let mut child = Command::new(&cli.herald)
            .args(["--bind", "127.0.0.1", "--port", "0", "--config", cfg_path])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", cli.herald))?;
        let pid = child.id();
        let stderr = child.stderr.take().ok_or("no stderr")?;
        let mut log = std::fs::File::create(log_path).map_err(|e| format!("{log_path}: {e}"))?;
        let warnings = Arc::new(AtomicU32::new(0));
        let w = warnings.clone();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = writeln!(log, "{line}");
                // Counted for the summary; the first 10 are echoed.
                if (line.contains(" WARN ") || line.contains(" ERROR ") || line.contains("panicked"))
                    && w.fetch_add(1, Ordering::Relaxed) < 10
                {
                    eprintln!("herald-soak: server log: {line}");
                }
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
                }
            }
        });
        let mut s = Server { child, pid, addr: "127.0.0.1:0".parse().expect("addr"), warnings };
        let a =
            rx.recv_timeout(Duration::from_secs(10)).map_err(|_| "herald did not report its address".to_string())?;
        s.addr = a.parse().map_err(|e| format!("address `{a}`: {e}"))?;
        Ok(s)
    }

    /// See `--allocator-dump`. Waits (at most 60 s) for gdb to finish.
    fn allocator_dump(&self) {
        let Ok(mut gdb) = Command::new("gdb")
            .args(["-p", &self.pid.to_string(), "-batch", "-ex", "call (void)_rjem_malloc_stats_print(0, 0, 0)"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        else {
            eprintln!("herald-soak: cannot run gdb for --allocator-dump");
            return;
        };
        let t = Instant::now();
        while !matches!(gdb.try_wait(), Ok(Some(_))) {
            if t.elapsed() > Duration::from_secs(60) {
                let _ = gdb.kill();
                let _ = gdb.wait();
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(&mut self) {
        if !self.alive() {
            return;
        }
        // SAFETY: kill() on the PID of the child we started and have not yet reaped.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(10) {
            if !self.alive() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A blocking `GET` of a 200 answer on a fresh connection; returns the body as text.
fn http_get(addr: SocketAddr, target: &str) -> Result<String, String> {
    http::get_ok(addr, target).map(|b| String::from_utf8_lossy(&b).into_owned())
}

/// A gauge from `/metrics`.
fn metric(addr: SocketAddr, name: &str) -> Option<f64> {
    let m = http_get(addr, "/metrics").ok()?;
    gauge(&m, name)
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics.lines().find(|l| l.split_whitespace().next() == Some(name))?.split_whitespace().nth(1)?.parse().ok()
}

/// The server allocator's own accounting (`herald_allocator_*_bytes` in `/metrics`), in KiB:
/// what the program holds (`allocated`) versus what the allocator keeps resident, so growth
/// can be told apart as "herald holds more" or "the allocator keeps more".
fn allocator_kb(addr: SocketAddr) -> serde_json::Value {
    let Ok(m) = http_get(addr, "/metrics") else { return serde_json::Value::Null };
    let mut o = serde_json::Map::new();
    for k in ["allocated", "active", "resident", "metadata", "retained"] {
        if let Some(v) = gauge(&m, &format!("herald_allocator_{k}_bytes")) {
            o.insert(k.into(), ((v / 1024.0) as u64).into());
        }
    }
    o.into()
}

/// Each channel's newest id as the server holds it (`/stats`).
fn server_last_ids(addr: SocketAddr, prefix: &str, channels: usize) -> Result<Vec<u64>, String> {
    let body = http_get(addr, "/stats")?;
    let v: serde_json::Value = serde_json::from_str(&body).map_err(|e| format!("/stats: {e}"))?;
    let mut out = vec![0; channels];
    for c in v["by_channel"].as_array().ok_or("/stats: no by_channel")? {
        let name = c["channel"].as_str().unwrap_or("");
        if let Some(n) = name.strip_prefix(prefix).and_then(|n| n.parse::<usize>().ok()) {
            if n < channels {
                out[n] = c["last_message_id"].as_u64().unwrap_or(0);
            }
        }
    }
    Ok(out)
}

struct Sample {
    rss_kb: u64,
    fds: usize,
}

fn sample(pid: u32) -> Sample {
    Sample { rss_kb: rss_kb(pid).unwrap_or(0), fds: procfs::fd_count(pid).unwrap_or(0) }
}

fn fail(msg: &str) -> ! {
    eprintln!("herald-soak: {msg}");
    std::process::exit(2);
}

fn main() {
    let cli = Cli::parse();
    if cli.subscribers == 0 || cli.channels == 0 || cli.sse_pct + cli.longpoll_pct > 100 {
        fail("need --subscribers > 0, --channels > 0 and --sse-pct + --longpoll-pct <= 100");
    }
    let nofile = raise_nofile();
    if cli.subscribers as u64 + 64 > nofile {
        fail(&format!("{} subscribers need more descriptors than the open-files limit {nofile}", cli.subscribers));
    }
    let run_secs = (cli.minutes * 60.0).max(1.0);
    // The whole run's budget: warm-up and ramp (≤ 2 × 120 s), the run, drain, history expiry
    // and margins. The watchdog below ends everything past it.
    let budget = Duration::from_secs_f64(
        run_secs + cli.warmup_secs + 300.0 + cli.drain as f64 + 2.0 * cli.history_ttl as f64 + 120.0,
    );
    let tmp = std::env::temp_dir();
    let me = std::process::id();
    let cfg_path = tmp.join(format!("herald-soak-{me}.json")).to_string_lossy().into_owned();
    let log_path = cli
        .herald_log
        .clone()
        .unwrap_or_else(|| tmp.join(format!("herald-soak-{me}.log")).to_string_lossy().into_owned());
    let mut server_cfg = serde_json::json!({
        "history_size": cli.history_size,
        "history_ttl_ms": cli.history_ttl * 1000,
        "workers": cli.workers,
        "log_level": "info",
        "max_out_queue": 16 << 20,
    });
    let tls_client = if cli.tls {
        let (cert, key, addr, client) = tls_setup(&tmp, me).unwrap_or_else(|e| fail(&e));
        server_cfg["http_server"] =
            serde_json::json!({"tls": {"enabled": true, "cert_pem_file": cert, "key_pem_file": key}});
        server_cfg["tls_port"] = addr.port().into();
        Some((addr, client.0, client.1))
    } else {
        None
    };
    if let Err(e) = std::fs::write(&cfg_path, server_cfg.to_string()) {
        fail(&format!("{cfg_path}: {e}"));
    }
    let mut server = match Server::start(&cli, &cfg_path, &log_path) {
        Ok(s) => s,
        Err(e) => fail(&e),
    };
    let pid = server.pid;
    eprintln!("herald-soak: herald pid {pid} on {} (config {cfg_path}, log {log_path})", server.addr);

    let interrupted = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, interrupted.clone());
    }
    // Watchdog: past the budget, kill the server we started (by PID) and exit.
    std::thread::spawn(move || {
        std::thread::sleep(budget);
        eprintln!("herald-soak: watchdog: run exceeded {budget:?}; stopping");
        // SAFETY: kill() on the PID of the server this process started.
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        std::process::exit(3);
    });

    let t_all = Instant::now();
    let mk = |prefix: &str, subscribers: usize, seed: u64| Cfg {
        addr: server.addr,
        tls: tls_client.clone(),
        prefix: prefix.to_string(),
        subscribers,
        channels: cli.channels,
        sse_pct: cli.sse_pct,
        lp_pct: cli.longpoll_pct,
        session: (Duration::from_secs_f64(cli.session_min), Duration::from_secs_f64(cli.session_max)),
        offline: (Duration::from_secs_f64(cli.offline_min), Duration::from_secs_f64(cli.offline_max)),
        rate: cli.rate,
        pub_conns: cli.pub_conns.max(1),
        size: cli.size,
        sources: cli.sources,
        connect_concurrency: cli.connect_concurrency.max(1),
        seed,
    };
    let stop = |_: &Soak| interrupted.load(Ordering::Relaxed);
    let mut problems: Vec<String> = Vec::new();

    // 1. Warm-up cycle: the same load on other channels for --warmup-secs, then everyone
    // leaves and the server drops those channels. The allocator has then seen the run's
    // peak, so "start" and "end" are two idle states after the same kind of load.
    let warm_n = cli.warmup_subscribers.unwrap_or(cli.subscribers).max(1);
    let mut warm = Soak::new(mk("warm", warm_n, cli.seed ^ 0xabcdef)).unwrap_or_else(|e| fail(&e.to_string()));
    let s_boot = sample(pid);
    warm.connect_all();
    let t = Instant::now();
    while warm.open_count() < warm_n && t.elapsed() < Duration::from_secs(120) && !stop(&warm) {
        let _ = warm.turn(Duration::from_millis(50));
    }
    for ch in 0..cli.channels as u32 {
        warm.publish_once(ch);
    }
    warm.start_publishing();
    warm.start_churn();
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs_f64(cli.warmup_secs) && !stop(&warm) {
        let _ = warm.turn(Duration::from_millis(20));
    }
    warm.stop_publishing();
    let t = Instant::now();
    while warm.pub_inflight() > 0 && t.elapsed() < Duration::from_secs(15) && !stop(&warm) {
        let _ = warm.turn(Duration::from_millis(20));
    }
    warm.stop_churn();
    let t = Instant::now();
    while warm.caught_up(&warm.chan_last.clone()) < warm_n && t.elapsed() < Duration::from_secs(30) && !stop(&warm) {
        let _ = warm.turn(Duration::from_millis(20));
    }
    let warm_ok = warm.caught_up(&warm.chan_last.clone());
    let warm_bad = tally(&warm);
    warm.close_all();
    drop(warm);
    wait_no_channels(server.addr, cli.history_ttl, &interrupted);
    std::thread::sleep(Duration::from_secs(2));
    let s_start = sample(pid);
    let a_start = allocator_kb(server.addr);
    if cli.allocator_dump {
        server.allocator_dump();
    }
    eprintln!(
        "herald-soak: warm-up: {warm_ok}/{warm_n} subscribers caught up (lost {}, dup {}, missed {}); RSS boot {} KiB, start {} KiB; fds boot {}, start {}",
        warm_bad.lost, warm_bad.dups, warm_bad.missed_events, s_boot.rss_kb, s_start.rss_kb, s_boot.fds, s_start.fds
    );
    if warm_ok < warm_n || warm_bad.lost + warm_bad.dups + warm_bad.missed_events > 0 {
        problems.push(format!(
            "warm-up: {warm_ok}/{warm_n} caught up, lost {}, dup {}, missed {}",
            warm_bad.lost, warm_bad.dups, warm_bad.missed_events
        ));
    }

    // 2. Connect the soak subscribers.
    let mut soak = Soak::new(mk("soak", cli.subscribers, cli.seed)).unwrap_or_else(|e| fail(&e.to_string()));
    soak.connect_all();
    let t = Instant::now();
    while soak.open_count() < cli.subscribers && t.elapsed() < Duration::from_secs(120) && !stop(&soak) {
        let _ = soak.turn(Duration::from_millis(50));
    }
    let ramp_secs = t.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let s_conn = sample(pid);
    let opened = soak.open_count();
    eprintln!(
        "herald-soak: {opened}/{} subscribers open in {ramp_secs:.1} s (ws {}, sse {}, longpoll {}); RSS {} KiB, fds {}",
        cli.subscribers,
        soak.subs.iter().filter(|s| s.tr == Tr::Ws).count(),
        soak.subs.iter().filter(|s| s.tr == Tr::Sse).count(),
        soak.subs.iter().filter(|s| s.tr == Tr::Lp).count(),
        s_conn.rss_kb,
        s_conn.fds
    );
    if opened < cli.subscribers {
        problems.push(format!("only {opened}/{} subscribers opened", cli.subscribers));
    }

    // 3. Publish and churn.
    let cpu0 = cpu_secs(pid).unwrap_or(0.0);
    let t_run = Instant::now();
    soak.start_publishing();
    soak.start_churn();
    let mut rss_peak = s_conn.rss_kb;
    let mut fds_peak = s_conn.fds;
    let mut next_sample = Instant::now();
    let mut next_progress = Instant::now() + PROGRESS_EVERY;
    let mut last_got = 0u64;
    let run = Duration::from_secs_f64(run_secs);
    while t_run.elapsed() < run && !stop(&soak) {
        let _ = soak.turn(Duration::from_millis(20));
        let now = Instant::now();
        if now >= next_sample {
            next_sample = now + Duration::from_secs(1);
            let s = sample(pid);
            rss_peak = rss_peak.max(s.rss_kb);
            fds_peak = fds_peak.max(s.fds);
            if !server.alive() {
                problems.push("server exited during the run".into());
                break;
            }
        }
        if now >= next_progress {
            next_progress += PROGRESS_EVERY;
            let got: u64 = soak.subs.iter().map(|s| s.got).sum();
            let s = sample(pid);
            eprintln!(
                "[{:>5.0}s] open {} reconnects {} published {} deliveries {} (+{}/s) lost {} dup {} missed {} errors {} | herald RSS {} KiB fds {}",
                t_run.elapsed().as_secs_f64(),
                soak.open_count(),
                reconnects(&soak),
                soak.counts.published,
                got,
                (got - last_got) / PROGRESS_EVERY.as_secs(),
                soak.subs.iter().map(|s| s.lost).sum::<u64>(),
                soak.subs.iter().map(|s| s.dups).sum::<u64>(),
                soak.subs.iter().map(|s| s.missed_events).sum::<u64>(),
                soak.counts.connect_errors + soak.counts.server_closes + soak.counts.pub_errors,
                s.rss_kb,
                s.fds
            );
            last_got = got;
        }
    }
    let run_secs_actual = t_run.elapsed().as_secs_f64();
    let server_cpu_pct = (cpu_secs(pid).unwrap_or(0.0) - cpu0) / run_secs_actual.max(1e-9) * 100.0;

    // 4. Stop, catch up, leave.
    soak.stop_publishing();
    let t = Instant::now();
    while soak.pub_inflight() > 0 && t.elapsed() < Duration::from_secs(15) && !stop(&soak) {
        let _ = soak.turn(Duration::from_millis(20));
    }
    let truth = server_last_ids(server.addr, "soak", cli.channels).unwrap_or_else(|e| {
        problems.push(format!("cannot read /stats: {e}"));
        soak.chan_last.clone()
    });
    if truth != soak.chan_last {
        problems.push("publish answers disagree with the server's last ids".into());
    }
    soak.stop_churn();
    let t = Instant::now();
    while soak.caught_up(&truth) < cli.subscribers && t.elapsed() < Duration::from_secs(cli.drain) && !stop(&soak) {
        let _ = soak.turn(Duration::from_millis(20));
    }
    let drain_secs = t.elapsed().as_secs_f64();
    let caught_up = soak.caught_up(&truth);
    // Ids a subscriber never got by the end count as lost.
    let behind: u64 = soak.subs.iter().map(|s| truth[s.ch as usize].saturating_sub(s.last)).sum();
    soak.close_all();
    let published: u64 = truth.iter().sum();
    let subs_summary = tally(&soak);
    let counts = soak.counts.clone();
    let reconnects = reconnects(&soak);
    let by_tr: serde_json::Value = [Tr::Ws, Tr::Sse, Tr::Lp]
        .iter()
        .map(|&tr| {
            let v: Vec<&net::Sub> = soak.subs.iter().filter(|s| s.tr == tr).collect();
            (
                tr.name().to_string(),
                serde_json::json!({
                    "subscribers": v.len(),
                    "sessions": v.iter().map(|s| s.sessions).sum::<u64>(),
                    "deliveries": v.iter().map(|s| s.got).sum::<u64>(),
                    "lost": v.iter().map(|s| s.lost).sum::<u64>(),
                    "duplicated": v.iter().map(|s| s.dups).sum::<u64>(),
                }),
            )
        })
        .collect::<serde_json::Map<_, _>>()
        .into();
    drop(soak);

    // Clients gone: a few seconds, then wait for the server to drop every channel (history
    // TTL, swept each second) so RSS is read with no history held.
    std::thread::sleep(Duration::from_secs(5));
    let s_gone = sample(pid);
    let channels_left = wait_no_channels(server.addr, cli.history_ttl, &interrupted);
    std::thread::sleep(Duration::from_secs(2));
    let conns_left = metric(server.addr, "herald_connections_open");
    let slow_drops = metric(server.addr, "herald_slow_consumer_drops_total");
    // The /metrics requests above are closed by now; read the end figures.
    std::thread::sleep(Duration::from_millis(500));
    let s_end = sample(pid);
    let a_end = allocator_kb(server.addr);
    if cli.allocator_dump {
        server.allocator_dump();
    }
    let alive = server.alive();
    server.stop();

    let lost = subs_summary.lost + behind;
    let rss_growth_pct = (s_end.rss_kb as f64 - s_start.rss_kb as f64) / s_start.rss_kb.max(1) as f64 * 100.0;
    if lost > 0 {
        problems.push(format!("{lost} ids lost ({behind} never caught up)"));
    }
    if subs_summary.dups > 0 {
        problems.push(format!("{} duplicates", subs_summary.dups));
    }
    if subs_summary.missed_events > 0 {
        problems.push(format!("{} missed notices", subs_summary.missed_events));
    }
    if caught_up < cli.subscribers {
        problems.push(format!("{} subscribers not caught up after {drain_secs:.0} s", cli.subscribers - caught_up));
    }
    if rss_growth_pct > cli.rss_tolerance {
        problems
            .push(format!("RSS grew {rss_growth_pct:.1}% (start {} KiB, end {} KiB)", s_start.rss_kb, s_end.rss_kb));
    }
    if s_end.fds != s_start.fds {
        problems.push(format!("fds: start {} end {}", s_start.fds, s_end.fds));
    }
    if counts.server_closes > 0 {
        problems.push(format!("{} connections closed by the server", counts.server_closes));
    }
    if counts.id_mismatches + counts.bad_frames > 0 {
        problems.push(format!("{} id mismatches, {} bad frames", counts.id_mismatches, counts.bad_frames));
    }
    if counts.pub_errors > 0 {
        problems.push(format!("{} publish errors", counts.pub_errors));
    }
    if !alive {
        problems.push("server not alive at the end".into());
    }
    if channels_left.is_some_and(|c| c > 0.0) {
        problems.push(format!("server still holds {:?} channels", channels_left));
    }
    if interrupted.load(Ordering::Relaxed) {
        problems.push("interrupted".into());
    }
    let pass = problems.is_empty();
    let r1 = |x: f64| (x * 10.0).round() / 10.0;
    let summary = serde_json::json!({
        "verdict": if pass { "PASS" } else { "FAIL" },
        "problems": problems,
        "duration_s": r1(run_secs_actual),
        "total_s": r1(t_all.elapsed().as_secs_f64()),
        "subscribers": cli.subscribers,
        "tls": cli.tls,
        "channels": cli.channels,
        "transports": by_tr,
        "rate": cli.rate,
        "reconnects": reconnects,
        "connects": counts.connects,
        "connect_errors": counts.connect_errors,
        "handshake_timeouts": counts.handshake_timeouts,
        "server_closes": counts.server_closes,
        "published": published,
        "publish_errors": counts.pub_errors,
        "deliveries": subs_summary.got,
        "expected_deliveries": soak_expected(&truth, cli.subscribers, cli.channels),
        "lost": lost,
        "duplicated": subs_summary.dups,
        "missed": subs_summary.missed_events,
        "missed_ids": subs_summary.missed_ids,
        "caught_up": caught_up,
        "drain_s": r1(drain_secs),
        "ramp_s": r1(ramp_secs),
        "rss_kb": {"boot": s_boot.rss_kb, "start": s_start.rss_kb, "connected": s_conn.rss_kb, "peak": rss_peak,
                   "clients_gone": s_gone.rss_kb, "end": s_end.rss_kb, "growth_pct": r1(rss_growth_pct)},
        "fds": {"boot": s_boot.fds, "start": s_start.fds, "connected": s_conn.fds, "peak": fds_peak,
                "clients_gone": s_gone.fds, "end": s_end.fds},
        "allocator_kb": {"start": a_start, "end": a_end},
        "server_connections_end": conns_left,
        "server_slow_drops": slow_drops,
        "server_log_warnings": server.warnings.load(Ordering::Relaxed),
        "server_cpu_pct": r1(server_cpu_pct),
        "first_error": counts.first_error,
        "herald_log": log_path,
    });
    if cli.json {
        println!("{summary}");
    } else {
        print!("{}", herald_bench_tools::report::table("herald-soak summary", &summary));
    }
    let _ = std::fs::remove_file(&cfg_path);
    std::process::exit(if pass { 0 } else { 1 });
}

/// Wait (at most the history TTL + 15 s) until the server holds no channel; returns the
/// last count read.
fn wait_no_channels(addr: SocketAddr, ttl: u64, interrupted: &AtomicBool) -> Option<f64> {
    let t = Instant::now();
    let mut left = metric(addr, "herald_channels");
    while left.is_some_and(|c| c > 0.0)
        && t.elapsed() < Duration::from_secs(ttl + 15)
        && !interrupted.load(Ordering::Relaxed)
    {
        std::thread::sleep(Duration::from_secs(1));
        left = metric(addr, "herald_channels");
    }
    left
}

fn reconnects(s: &Soak) -> u64 {
    s.subs.iter().map(|s| s.sessions.saturating_sub(1)).sum()
}

/// Every subscriber must see every id of its channel.
fn soak_expected(last: &[u64], subscribers: usize, channels: usize) -> u64 {
    (0..subscribers).map(|i| last[i % channels]).sum()
}

struct Tally {
    got: u64,
    lost: u64,
    dups: u64,
    missed_events: u64,
    missed_ids: u64,
}

fn tally(s: &Soak) -> Tally {
    let mut t = Tally { got: 0, lost: 0, dups: 0, missed_events: 0, missed_ids: 0 };
    for x in &s.subs {
        t.got += x.got;
        t.lost += x.lost;
        t.dups += x.dups;
        t.missed_events += x.missed_events;
        t.missed_ids += x.missed_ids;
    }
    t
}
