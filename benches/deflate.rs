//! permessage-deflate: the cost of compressing one published message (done once per worker
//! per message) and of inflating one client message, for the library Herald uses (flate2
//! on its zlib-rs backend, through `proto::ws_deflate`) next to miniz_oxide (flate2's
//! default backend, called directly), on a 1 KiB and a 16 KiB JSON message.
//!
//! Run: `cargo bench --bench deflate`. Each group measures for about 2 s.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use herald::proto::ws_deflate::{Deflater, Inflater};
use std::time::Duration;

/// JSON of about `n` bytes, like a feed of items.
fn json_of(n: usize) -> Vec<u8> {
    let mut s = String::from("{\"items\":[");
    let mut i = 0u64;
    while s.len() < n {
        s.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i}\",\"price\":{}.{:02},\"tags\":[\"a\",\"b{}\"]}},",
            i * 37 % 1000,
            i * 13 % 100,
            i % 7
        ));
        i += 1;
    }
    s.pop();
    s.push_str("]}");
    s.into_bytes()
}

fn compress(c: &mut Criterion) {
    for n in [1024usize, 16 << 10] {
        let msg = json_of(n);
        let mut g = c.benchmark_group(format!("deflate_{}B", msg.len()));
        g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
        g.throughput(Throughput::Bytes(msg.len() as u64));
        for level in [1u32, 2, 4, 6] {
            let mut d = Deflater::new(level);
            let mut out = Vec::new();
            d.compress(&msg, &mut out);
            eprintln!("zlib-rs level {level}: {} -> {} bytes", msg.len(), out.len());
            g.bench_function(format!("zlib-rs_l{level}"), |b| {
                b.iter(|| {
                    out.clear();
                    d.compress(black_box(&msg), &mut out);
                    out.len()
                })
            });
            let mut st = miniz_oxide::deflate::core::CompressorOxide::new(
                miniz_oxide::deflate::core::create_comp_flags_from_zip_params(level as i32, -15, 0),
            );
            let mut buf = vec![0u8; msg.len() + 1024];
            let z = miniz_oxide::deflate::compress_to_vec(&msg, level as u8);
            eprintln!("miniz_oxide level {level}: {} -> {} bytes", msg.len(), z.len());
            g.bench_function(format!("miniz_oxide_l{level}"), |b| {
                b.iter(|| {
                    st.reset();
                    let (_, _, n) = miniz_oxide::deflate::core::compress(
                        &mut st,
                        black_box(&msg),
                        &mut buf,
                        miniz_oxide::deflate::core::TDEFLFlush::Sync,
                    );
                    n
                })
            });
        }
        g.finish();
    }
}

fn inflate(c: &mut Criterion) {
    for n in [1024usize, 16 << 10] {
        let msg = json_of(n);
        let mut z = Vec::new();
        Deflater::new(1).compress(&msg, &mut z);
        let mut g = c.benchmark_group(format!("inflate_{}B", msg.len()));
        g.measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
        g.throughput(Throughput::Bytes(msg.len() as u64));
        let mut inf = Inflater::new();
        let mut out = Vec::new();
        g.bench_function("zlib-rs", |b| {
            b.iter(|| {
                inf.inflate(black_box(&z), 1 << 20, &mut out).unwrap();
                out.len()
            })
        });
        let mut zt = z.clone();
        zt.extend_from_slice(&[0, 0, 0xff, 0xff]);
        let mut st = miniz_oxide::inflate::core::DecompressorOxide::new();
        let mut buf = vec![0u8; msg.len() + 1024];
        g.bench_function("miniz_oxide", |b| {
            b.iter(|| {
                st.init();
                let (_, _, n) = miniz_oxide::inflate::core::decompress(
                    &mut st,
                    black_box(&zt),
                    &mut buf,
                    0,
                    miniz_oxide::inflate::core::inflate_flags::TINFL_FLAG_USING_NON_WRAPPING_OUTPUT_BUF,
                );
                assert_eq!(n, msg.len());
                n
            })
        });
        g.finish();
    }
}

criterion_group!(benches, compress, inflate);
criterion_main!(benches);
