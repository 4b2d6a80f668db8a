//! `herald`: reads configuration, raises the open-files limit, starts one worker per core
//! and waits for SIGINT/SIGTERM to drain them. Nothing else lives here.

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc malloc: a soak with thousands of clients churning left glibc's
/// per-thread arenas fragmented (idle RSS 25-40% above its start after every client left,
/// malloc_trim and a fixed mmap threshold notwithstanding); with jemalloc's size-class slabs,
/// plus each thread handing its cache back once a second (reactor::alloc), a 10-minute soak
/// ends +1.5%. Nothing on the delivery path allocates, so throughput is unchanged (561k vs
/// 555k deliveries/s in one comparison).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc options, read at its start-up: a background thread returns freed pages to the
/// kernel one second after they go unused (default 10 s, and only while the program is
/// allocating), so an idle server's RSS follows its clients down. Measured against the other
/// settings (arenas, thread cache, other decays) under fan-out in tuning/PERFORMANCE.md run 14;
/// `_RJEM_MALLOC_CONF` overrides it option by option at run time.
#[allow(non_upper_case_globals)]
#[export_name = "_rjem_malloc_conf"]
pub static malloc_conf: &[u8] = b"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";
use herald::config::Config;
use herald::reactor::Server;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Herald: a real-time messaging server (polling, long-polling, server push, SSE,
/// WebSocket).
#[derive(Parser, Debug)]
#[command(name = "herald", version, about)]
struct Cli {
    /// JSON config file (every key optional; see README "Configuration").
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<String>,
    /// Address to listen on [default: 0.0.0.0].
    #[arg(long)]
    bind: Option<String>,
    /// Port to listen on [default: 8000].
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// Worker threads (event loops) [default: number of cores].
    #[arg(long, short = 'w')]
    workers: Option<usize>,
    /// Share the port with another process on purpose (config `reuse_port`); without it,
    /// start-up fails when the address is already in use.
    #[arg(long)]
    reuse_port: bool,
    /// Reactor backend, epoll or uring (config `io`) [default: epoll].
    #[arg(long, value_name = "BACKEND", value_parser = ["epoll", "uring"])]
    io: Option<String>,
    /// Log level [default: info, or the config file's log_level].
    #[arg(long, value_name = "LEVEL", value_parser = ["error", "warn", "info", "debug", "trace"])]
    log_level: Option<String>,
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

/// Centrifugo-style helper commands.
#[derive(Subcommand, Debug)]
enum Cmd {
    /// Write a config file with a random token secret and API key.
    Genconfig {
        #[arg(long, short = 'c', default_value = "config.json")]
        config: String,
    },
    /// Check a config file.
    Checkconfig {
        #[arg(long, short = 'c', default_value = "config.json")]
        config: String,
    },
    /// Print an HS256 connection token for a user.
    Gentoken {
        #[arg(long, short = 'c', default_value = "config.json")]
        config: String,
        /// User id (the token's `sub`).
        #[arg(long, short = 'u', default_value = "")]
        user: String,
        /// Lifetime in seconds (0 = no expiry).
        #[arg(long, short = 't', default_value_t = 604800)]
        ttl: i64,
    },
    /// Verify a connection token against the config's secret.
    Checktoken {
        #[arg(long, short = 'c', default_value = "config.json")]
        config: String,
        token: String,
    },
}

fn run_cmd(cmd: &Cmd) -> ! {
    use herald::cli;
    let r = match cmd {
        Cmd::Genconfig { config } => cli::genconfig(config),
        Cmd::Checkconfig { config } => cli::checkconfig(config),
        Cmd::Gentoken { config, user, ttl } => cli::gentoken(config, user, *ttl),
        Cmd::Checktoken { config, token } => cli::checktoken(config, token),
    };
    match r {
        Ok(out) => {
            println!("{out}");
            std::process::exit(0)
        }
        Err(e) => {
            eprintln!("herald: {e}");
            std::process::exit(1)
        }
    }
}

fn load(cli: &Cli) -> Result<Config, String> {
    let mut cfg = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    if let Some(b) = &cli.bind {
        cfg.bind = b.clone();
    }
    if let Some(p) = cli.port {
        cfg.port = p;
    }
    if let Some(w) = cli.workers {
        cfg.workers = w;
    }
    if cli.reuse_port {
        cfg.reuse_port = true;
    }
    if let Some(io) = &cli.io {
        cfg.io = io.clone();
    }
    if let Some(l) = &cli.log_level {
        cfg.log_level = l.clone();
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Raise the soft open-files limit to the hard limit; log both.
fn raise_nofile() {
    let mut rl = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return;
        }
        let soft = rl.rlim_cur;
        if rl.rlim_cur < rl.rlim_max {
            rl.rlim_cur = rl.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &rl) != 0 {
                rl.rlim_cur = soft;
            }
        }
        log::info!("open files limit: soft {} (was {soft}), hard {}", rl.rlim_cur, rl.rlim_max);
    }
}

/// SIGHUP: re-read the config file and apply what can change safely at run time (the log
/// level); report keys that differ but need a restart. Logs go to stderr, which the
/// service manager owns, so there is no file to reopen.
fn reload(cli: &Cli, running: &Config) {
    let new = match load(cli) {
        Ok(c) => c,
        Err(e) => {
            log::error!("SIGHUP: config not reloaded: {e}");
            return;
        }
    };
    herald::logger::set_level(&new.log_level);
    let mut restart = Vec::new();
    let a = serde_json::to_value(running).unwrap_or_default();
    let b = serde_json::to_value(&new).unwrap_or_default();
    if let (Some(a), Some(b)) = (a.as_object(), b.as_object()) {
        for (k, v) in b {
            if k != "log_level" && a.get(k) != Some(v) {
                restart.push(k.clone());
            }
        }
    }
    if restart.is_empty() {
        log::info!("SIGHUP: config reloaded; log_level is {}", new.log_level);
    } else {
        log::warn!("SIGHUP: log_level is {}; changed keys that need a restart: {}", new.log_level, restart.join(", "));
    }
}

fn main() {
    let cli = Cli::parse();
    if let Some(cmd) = &cli.cmd {
        run_cmd(cmd);
    }
    let cfg = match load(&cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("herald: {e}");
            std::process::exit(2);
        }
    };
    herald::logger::init(&cfg.log_level);
    raise_nofile();
    let workers = cfg.worker_count();
    let server = match Server::start(cfg) {
        Ok(s) => s,
        Err(e) => {
            log::error!("cannot start: {e}");
            std::process::exit(1);
        }
    };
    log::info!(
        "herald {} listening on {} with {workers} workers ({})",
        env!("CARGO_PKG_VERSION"),
        server.addr,
        if server.shared.cfg.io == "uring" { "io_uring" } else { "epoll" }
    );
    match &cli.config {
        Some(path) => log::info!("config: {path}"),
        None => log::info!("config: defaults (no --config file)"),
    }
    for n in &server.shared.cfg.notices {
        if n.starts_with("Centrifugo keys Herald does not implement") || n.starts_with("not used while") {
            log::warn!("config: {n}");
        } else {
            log::info!("config: {n}");
        }
    }
    let shown = match server.addr.ip() {
        ip if ip.is_unspecified() => format!("localhost:{}", server.addr.port()),
        _ => server.addr.to_string(),
    };
    log::info!("demo chat: http://{shown}/   status page: http://{shown}/status");
    log::info!("{}", server.shared.cfg.publish_policy());
    if let Some(t) = server.tls_addr {
        log::info!("TLS (https://, wss://) on {t}");
    }

    let stop = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, stop.clone()) {
            log::warn!("cannot handle signal {sig}: {e}");
        }
    }
    let hup = Arc::new(AtomicBool::new(false));
    if let Err(e) = signal_hook::flag::register(signal_hook::consts::SIGHUP, hup.clone()) {
        log::warn!("cannot handle SIGHUP: {e}");
    }
    let shared = server.shared.clone();
    herald::alloc::sample();
    let mut last_sweep = 0;
    while !stop.load(Ordering::Relaxed) {
        if hup.swap(false, Ordering::Relaxed) {
            reload(&cli, &shared.cfg);
            match server.reload_tls() {
                Ok(true) => log::info!("SIGHUP: TLS certificate reloaded (new connections use it)"),
                Ok(false) => {}
                Err(e) => log::error!("SIGHUP: TLS certificate not reloaded, the one in use stays: {e}"),
            }
        }
        std::thread::sleep(Duration::from_millis(50));
        let now = server.now_ms();
        if now - last_sweep >= 1000 {
            if now / 1000 % 2 == 0 {
                // Other nodes of a shared engine learn this one is alive (and its counters).
                shared.engine.heartbeat(&shared.node_id, herald::transport::centrifugo::api::node_info(&shared, now));
            }
            shared.engine.sweep(now);
            server.sweep(now);
            herald::alloc::release_thread_cache();
            herald::alloc::sample();
            last_sweep = now;
        }
    }
    log::info!(
        "signal received: draining {} connections (at most {} ms)",
        server.connections(),
        shared.cfg.shutdown_timeout_ms
    );
    server.shutdown();
    // Workers close what is left at their own deadline; this one covers a worker that
    // cannot reach it (stuck in a long turn): the process ends anyway, shortly after.
    let deadline =
        std::time::Instant::now() + Duration::from_millis(shared.cfg.shutdown_timeout_ms) + Duration::from_millis(1000);
    if !server.join_until(deadline) {
        log::warn!("workers still busy {} ms after shutdown began; exiting", shared.cfg.shutdown_timeout_ms + 1000);
        std::process::exit(0);
    }
    log::info!("stopped");
}
