//! Per-worker gauges and the Prometheus text rendering of `/metrics`.
//!
//! Owns: numbers a worker publishes about itself (connections by transport, loop time,
//! subscriptions), refreshed once a second by the worker with relaxed atomics; and the
//! exposition format. Called by the worker (update) and the `/metrics` route (render).

use super::env::Shared;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use super::session::Kind;

/// What one worker reports.
#[derive(Default)]
pub struct WorkerGauges {
    /// Open connections on this worker, a count per transport, indexed like [`Kind::LABELS`].
    pub conns: [AtomicUsize; Kind::LABELS.len()],
    /// Channels with at least one subscriber on this worker, a count. Not rendered:
    /// `herald_channels` is the engine's count.
    pub channels: AtomicUsize,
    /// Subscriptions (connection x channel) held by this worker's connections, a count.
    pub subscriptions: AtomicUsize,
    /// Time spent handling events (not waiting in poll), total microseconds.
    pub busy_us: AtomicU64,
    /// Event-loop turns since start, a count (with `busy_us`, the mean turn time).
    pub turns: AtomicU64,
    /// Bytes read from clients' sockets by this worker since start. Kept per worker (like
    /// `bytes_out`) so the per-read and per-flush counts touch no cache line another worker writes.
    pub bytes_in: AtomicU64,
    /// Bytes written to clients' sockets by this worker since start.
    pub bytes_out: AtomicU64,
    /// Longest loop turn in the last second, microseconds.
    pub max_turn_us: AtomicU64,
}

fn line(out: &mut String, name: &str, help: &str, kind: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Render `/metrics`.
pub fn render(s: &Shared, now_ms: u64) -> String {
    let st = &s.stats;
    let mut o = String::with_capacity(4096);
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    line(&mut o, "herald_connections", "Open connections by transport.", "gauge");
    for (i, t) in Kind::LABELS.iter().enumerate() {
        let n: usize = s.gauges.iter().map(|g| g.conns[i].load(Ordering::Relaxed)).sum();
        let _ = writeln!(o, "herald_connections{{transport=\"{t}\"}} {n}");
    }
    line(&mut o, "herald_connections_open", "Open connections (exact).", "gauge");
    let _ = writeln!(o, "herald_connections_open {}", st.connections.load(Ordering::Relaxed));
    let (channels, stored) = s.engine.counts();
    line(&mut o, "herald_channels", "Channels held by the engine.", "gauge");
    let _ = writeln!(o, "herald_channels {channels}");
    line(&mut o, "herald_history_messages", "Messages held in channel histories.", "gauge");
    let _ = writeln!(o, "herald_history_messages {stored}");
    line(&mut o, "herald_subscriptions", "Subscriptions (connection x channel).", "gauge");
    let subs: usize = s.gauges.iter().map(|g| g.subscriptions.load(Ordering::Relaxed)).sum();
    let _ = writeln!(o, "herald_subscriptions {subs}");
    for (name, help, v) in [
        ("herald_connections_accepted_total", "Connections accepted.", r(&st.accepted)),
        ("herald_messages_published_total", "Messages published.", r(&st.published)),
        ("herald_messages_delivered_total", "Message deliveries queued to subscribers.", r(&st.delivered)),
        ("herald_slow_consumer_drops_total", "Connections dropped for exceeding max_out_queue.", r(&st.slow_drops)),
        ("herald_accept_errors_total", "accept() failures (EMFILE, ENFILE, ...).", r(&st.accept_errors)),
        ("herald_http_errors_total", "HTTP requests answered with an error status.", r(&st.http_errors)),
        ("herald_tls_errors_total", "TLS connections closed for a TLS error.", r(&st.tls_errors)),
        (
            "herald_ws_protocol_errors_total",
            "WebSocket connections failed for protocol errors.",
            r(&st.ws_protocol_errors),
        ),
        (
            "herald_ws_compressed_connections_total",
            "WebSocket connections that negotiated permessage-deflate.",
            r(&st.ws_compressed),
        ),
    ] {
        line(&mut o, name, help, "counter");
        let _ = writeln!(o, "{name} {v}");
    }
    for (name, help, v) in [
        ("herald_bytes_in_total", "Bytes read from clients.", s.gauges.iter().map(|g| r(&g.bytes_in)).sum::<u64>()),
        ("herald_bytes_out_total", "Bytes written to clients.", s.gauges.iter().map(|g| r(&g.bytes_out)).sum::<u64>()),
    ] {
        line(&mut o, name, help, "counter");
        let _ = writeln!(o, "{name} {v}");
    }
    line(&mut o, "herald_connections_refused_total", "Connections refused at accept, by reason.", "counter");
    for (reason, v) in [
        ("max_connections", r(&st.refused_max_conns)),
        ("per_ip", r(&st.refused_per_ip)),
        ("rate", r(&st.refused_rate)),
    ] {
        let _ = writeln!(o, "herald_connections_refused_total{{reason=\"{reason}\"}} {v}");
    }
    line(&mut o, "herald_worker_busy_seconds_total", "Time each worker spent handling events.", "counter");
    for (i, g) in s.gauges.iter().enumerate() {
        let _ = writeln!(o, "herald_worker_busy_seconds_total{{worker=\"{i}\"}} {:.6}", r(&g.busy_us) as f64 / 1e6);
    }
    line(&mut o, "herald_worker_loop_turns_total", "Event-loop turns per worker.", "counter");
    for (i, g) in s.gauges.iter().enumerate() {
        let _ = writeln!(o, "herald_worker_loop_turns_total{{worker=\"{i}\"}} {}", r(&g.turns));
    }
    line(&mut o, "herald_worker_max_turn_seconds", "Longest loop turn in the last second.", "gauge");
    for (i, g) in s.gauges.iter().enumerate() {
        let _ = writeln!(o, "herald_worker_max_turn_seconds{{worker=\"{i}\"}} {:.6}", r(&g.max_turn_us) as f64 / 1e6);
    }
    line(&mut o, "herald_worker_inbox_depth", "Messages waiting in each worker's inbox.", "gauge");
    for (i, inbox) in s.inboxes.iter().enumerate() {
        let _ = writeln!(o, "herald_worker_inbox_depth{{worker=\"{i}\"}} {}", inbox.depth());
    }
    line(&mut o, "herald_proxy_calls_total", "Proxy calls to the application backend, by kind and outcome.", "counter");
    for (k, kind) in crate::config::proxy::Kind::ALL.iter().enumerate() {
        for (i, outcome) in crate::transport::env::PROXY_OUTCOMES.iter().enumerate() {
            let v = r(&st.proxy_calls[k][i]);
            let _ = writeln!(o, "herald_proxy_calls_total{{kind=\"{}\",outcome=\"{outcome}\"}} {v}", kind.as_str());
        }
    }
    line(&mut o, "herald_proxy_in_flight", "Proxy calls queued or being made.", "gauge");
    let _ = writeln!(o, "herald_proxy_in_flight {}", s.backend.as_ref().map_or(0, |b| b.in_flight()));
    line(&mut o, "herald_centrifugo_clients", "Connected Centrifugo protocol clients.", "gauge");
    let _ = writeln!(o, "herald_centrifugo_clients {}", st.cf_clients.load(Ordering::Relaxed));
    line(
        &mut o,
        "herald_ip_table_entries",
        "Client addresses tracked by the per-IP limits (open connections or a recent connect).",
        "gauge",
    );
    let _ = writeln!(o, "herald_ip_table_entries {}", st.ip_table_entries.load(Ordering::Relaxed));
    line(&mut o, "herald_uptime_seconds", "Seconds since start.", "gauge");
    let _ = writeln!(o, "herald_uptime_seconds {}", now_ms / 1000);
    crate::alloc::render(&mut o);
    o
}
