//! Micro-benchmarks of the HTTP core's hot paths: request-head parsing (a minimal GET, a
//! browser-like GET, the backend's publish POST) and encoding a small JSON response.
//!
//! Run: `cargo bench --bench http`. Each case measures for ~2 s so the whole run stays well
//! under a minute.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use herald::proto::http::*;

const SMALL_GET: &[u8] = b"GET /messages/?cid=news&since=1041 HTTP/1.1\r\n\
Host: 127.0.0.1:8000\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\r\n";

const BROWSER_GET: &[u8] = b"GET /listen/?cid=sports-live&since=98231 HTTP/1.1\r\n\
Host: push.example.com\r\n\
Connection: keep-alive\r\n\
sec-ch-ua: \"Chromium\";v=\"124\", \"Google Chrome\";v=\"124\", \"Not-A.Brand\";v=\"99\"\r\n\
sec-ch-ua-mobile: ?0\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36\r\n\
sec-ch-ua-platform: \"Linux\"\r\n\
Accept: application/json, text/plain, */*\r\n\
Sec-Fetch-Site: same-site\r\n\
Sec-Fetch-Mode: cors\r\n\
Referer: https://www.example.com/live/scores\r\n\
Accept-Encoding: gzip, deflate, br, zstd\r\n\
Accept-Language: en-US,en;q=0.9,fr;q=0.8\r\n\r\n";

const PUBLISH_POST: &[u8] = b"POST /publish/?cid=sports-live HTTP/1.1\r\n\
Host: 127.0.0.1:8000\r\n\
User-Agent: backend/2.3\r\n\
Content-Type: application/json\r\n\
Content-Length: 87\r\n\
Authorization: Bearer 6f1d0c9a4b7e2f38\r\n\r\n";

fn parse(c: &mut Criterion) {
    let limits = HttpLimits::default();
    let mut group = c.benchmark_group("parse_head");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    for (name, req) in [("small_get", SMALL_GET), ("browser_get", BROWSER_GET), ("publish_post", PUBLISH_POST)] {
        assert!(parse_head(req, &limits).unwrap().is_some(), "{name} must parse");
        group.throughput(Throughput::Bytes(req.len() as u64));
        group.bench_function(name, |b| {
            b.iter(|| {
                let head = parse_head(black_box(req), &limits).unwrap().unwrap();
                black_box(head.head_len)
            })
        });
    }
    group.finish();
}

fn respond(c: &mut Criterion) {
    let body =
        br#"{"messages":[{"id":1042,"channel":"sports-live","data":{"home":2,"away":1,"min":67,"by":"Dufres"}}]}"#;
    assert_eq!(body.len(), 100);
    let mut group = c.benchmark_group("response");
    group.measurement_time(Duration::from_secs(2));
    group.warm_up_time(Duration::from_millis(500));
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("body_json_100b", |b| b.iter(|| Response::new(200).body("application/json", black_box(body))));
    group.finish();
}

criterion_group!(benches, parse, respond);
criterion_main!(benches);
