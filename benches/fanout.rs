//! Benchmarks of Herald's delivery hot paths: fan-out of one message to 1k/10k/100k
//! in-memory subscriber out-queues (`OutQueue::push` of one shared `Bytes`; the figure that
//! matters is time per subscriber, which must stay flat as the count grows), the out-queue
//! flush through vectored writes into a sink, and the per-message encodings (envelope, SSE
//! event, iframe chunk, WebSocket frame).
//!
//! Run: `cargo bench --bench fanout`. Each group measures for about 2 s.

use bytes::Bytes;
use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use herald::hub::envelope::{envelope, iframe_chunk, sse_event};
use herald::proto::ws::{frame, Opcode};
use herald::transport::outq::OutQueue;
use std::io::{self, IoSlice, Write};
use std::time::Duration;

/// A 100-byte published body, the size of the load tests.
fn body() -> Vec<u8> {
    let mut b = br#"{"seq":123456,"t":1234567890123,"p":""#.to_vec();
    while b.len() < 98 {
        b.push(b'x');
    }
    b.extend_from_slice(b"\"}");
    b
}

/// A writer that takes everything and keeps nothing (a socket that never blocks).
struct Sink(u64);

impl Write for Sink {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.0 += b.len() as u64;
        Ok(b.len())
    }
    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        let n: usize = bufs.iter().map(|b| b.len()).sum();
        self.0 += n as u64;
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// One message pushed to every subscriber queue (queues start empty, as between messages
/// on an idle fan-out), then every queue flushed: the whole per-subscriber delivery cost
/// minus the syscall.
fn bench_fanout(c: &mut Criterion) {
    let env = envelope(1, "room", &body());
    let wire = frame(Opcode::Text, &env);
    let mut g = c.benchmark_group("fanout/push");
    for n in [1_000usize, 10_000, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        let mut queues: Vec<OutQueue> = (0..n).map(|_| OutQueue::default()).collect();
        let mut sink = Sink(0);
        let mut scratch = Vec::with_capacity(herald::transport::outq::COALESCE_MAX);
        g.bench_function(format!("{n}"), |b| {
            b.iter(|| {
                for q in queues.iter_mut() {
                    q.push(wire.clone());
                }
                // Drain so the next iteration starts from idle queues again (untimed
                // separately below); flush is part of a real delivery anyway.
                let mut w = 0;
                for q in queues.iter_mut() {
                    let _ = q.flush(&mut sink, &mut w, &mut scratch);
                }
                black_box(w)
            })
        });
    }
    g.finish();

    // Push only: queues already holding one buffer (a second message in the same turn), so
    // no deque allocation happens: the pure cost of cloning a shared `Bytes` into a queue.
    let mut g = c.benchmark_group("fanout/push_only_warm");
    for n in [1_000usize, 10_000, 100_000] {
        g.throughput(Throughput::Elements(n as u64));
        g.bench_function(format!("{n}"), |b| {
            b.iter_batched_ref(
                || {
                    (0..n)
                        .map(|_| {
                            let mut q = OutQueue::default();
                            q.push(wire.clone());
                            q
                        })
                        .collect::<Vec<OutQueue>>()
                },
                |queues| {
                    for q in queues.iter_mut() {
                        q.push(wire.clone());
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

/// Flushing one queue holding 1, 16 or 64 frames (16 small frames are coalesced into one
/// `write`; 64 exceed `COALESCE_MAX` and go through `write_vectored`).
fn bench_flush(c: &mut Criterion) {
    let env = envelope(1, "room", &body());
    let wire = frame(Opcode::Text, &env);
    let mut g = c.benchmark_group("outq/flush");
    for k in [1usize, 16, 64] {
        g.throughput(Throughput::Bytes((k * wire.len()) as u64));
        let mut sink = Sink(0);
        let mut scratch = Vec::with_capacity(herald::transport::outq::COALESCE_MAX);
        g.bench_function(format!("{k}_frames"), |b| {
            b.iter_batched_ref(
                || {
                    let mut q = OutQueue::default();
                    for _ in 0..k {
                        q.push(wire.clone());
                    }
                    q
                },
                |q| {
                    let mut w = 0;
                    black_box(q.flush(&mut sink, &mut w, &mut scratch).ok());
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

/// The once-per-message encodings.
fn bench_encode(c: &mut Criterion) {
    let b = body();
    let env = envelope(1, "room", &b);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(b.len() as u64));
    g.bench_function("envelope_json_body", |x| x.iter(|| envelope(black_box(42), "room", black_box(&b))));
    g.bench_function("envelope_text_body", |x| {
        x.iter(|| {
            envelope(
                black_box(42),
                "room",
                black_box(
                    b"plain text, not JSON, 100 bytes or so........................................................",
                ),
            )
        })
    });
    g.bench_function("sse_event", |x| x.iter(|| sse_event(Some("42"), black_box(&env))));
    g.bench_function("iframe_chunk", |x| x.iter(|| iframe_chunk(black_box(&env))));
    g.bench_function("ws_frame", |x| x.iter(|| frame(Opcode::Text, black_box(&env))));
    g.bench_function("bytes_clone", |x| {
        let w = Bytes::from(env.to_vec());
        x.iter(|| black_box(w.clone()))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20);
    targets = bench_fanout, bench_flush, bench_encode
}
criterion_main!(benches);
