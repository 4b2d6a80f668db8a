//! Benchmarks of the WebSocket protocol core (`herald::proto::ws`): the
//! handshake accept key, decoding (header parse + unmask) of one masked
//! client frame, and encoding of one server frame.
//!
//! Run: `cargo bench --bench ws`.

use std::time::Duration;

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use herald::proto::ws::{accept_key, frame, Decoder, Opcode, WsLimits};

const SIZES: [(usize, &str); 3] = [(16, "16B"), (1024, "1KiB"), (64 * 1024, "64KiB")];

/// A masked client binary frame (RFC 6455 §5.2) carrying `n` bytes.
fn masked_binary(n: usize) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut v = vec![0x82];
    if n <= 125 {
        v.push(0x80 | n as u8);
    } else if n <= 0xFFFF {
        v.push(0x80 | 126);
        v.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        v.push(0x80 | 127);
        v.extend_from_slice(&(n as u64).to_be_bytes());
    }
    v.extend_from_slice(&mask);
    v.extend((0..n).map(|i| (i as u8) ^ mask[i % 4]));
    v
}

fn bench_accept(c: &mut Criterion) {
    c.bench_function("ws/accept_key", |b| b.iter(|| accept_key(black_box(b"dGhlIHNhbXBsZSBub25jZQ=="))));
}

fn bench_decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws/decode_binary");
    for (n, name) in SIZES {
        let wire = masked_binary(n);
        g.throughput(Throughput::Bytes(n as u64));
        let mut dec = Decoder::new(WsLimits::default());
        // Each iteration decodes (and so unmasks) a fresh masked copy; the
        // copy is made in the untimed setup.
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || wire.clone(),
                |buf| {
                    let (ev, used) = dec.decode(buf).expect("valid frame");
                    black_box((ev, used))
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

fn bench_encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("ws/frame_encode");
    for (n, name) in SIZES {
        let payload = vec![0xA5u8; n];
        g.throughput(Throughput::Bytes(n as u64));
        g.bench_function(name, |b| b.iter(|| frame(Opcode::Binary, black_box(&payload))));
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench_accept, bench_decode, bench_encode
}
criterion_main!(benches);
