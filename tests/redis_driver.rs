//! The Redis driver thread (issue #12, in progress) against a private redis-server:
//! pipelined commands answered through callbacks, pub/sub publications through the sink,
//! and a Redis restart: in-flight commands fail instead of hanging, the sink hears the
//! pub/sub connection go down and come back, channels are subscribed again, and
//! publishing works after it.

mod common;
use common::Redis;
use herald::hub::redis::link::Publication;
use herald::hub::redis::script::{self, Keys};
use herald::reactor::redis::{Answer, Driver, DriverError, Sink, Timeouts};
use std::net::SocketAddr;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Mutex;
use std::time::{Duration, Instant};

enum Heard {
    Pub(Publication),
    Health(bool),
}

struct Collect(Mutex<Sender<Heard>>);

impl Sink for Collect {
    fn publication(&self, _shard: usize, p: Publication) {
        let _ = self.0.lock().unwrap().send(Heard::Pub(p));
    }
    fn health(&self, _shard: usize, up: bool) {
        let _ = self.0.lock().unwrap().send(Heard::Health(up));
    }
}

fn call(d: &Driver, args: Vec<Vec<u8>>) -> Answer {
    let (tx, rx) = channel();
    d.command(0, args, Box::new(move |a| drop(tx.send(a))));
    rx.recv_timeout(Duration::from_secs(10)).expect("the callback always runs")
}

fn wait_health(rx: &Receiver<Heard>, want: bool) {
    let t = Instant::now();
    loop {
        match rx.recv_timeout(Duration::from_secs(10)).expect("health report") {
            Heard::Health(up) if up == want => return,
            _ => assert!(t.elapsed() < Duration::from_secs(10)),
        }
    }
}

fn next_pub(rx: &Receiver<Heard>) -> Publication {
    loop {
        if let Heard::Pub(p) = rx.recv_timeout(Duration::from_secs(10)).expect("a publication") {
            return p;
        }
    }
}

#[test]
fn driver_survives_a_redis_restart() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut redis = Redis::on(port);
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let (tx, rx) = channel();
    let d = Driver::start(vec![addr], Timeouts::default(), Collect(Mutex::new(tx))).unwrap();
    let k = Keys::of("herald", "room");
    d.subscribe(0, k.pubsub.as_bytes());
    wait_health(&rx, true);
    // The command connection may come up a moment after the pub/sub one.
    let t = Instant::now();
    while call(&d, vec![b"PING".to_vec()]).is_err() {
        assert!(t.elapsed() < Duration::from_secs(5), "command connection never came up");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Pipelined publishes from several threads: one sequence, every callback answered.
    let mut offsets: Vec<u64> = std::thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                let d = d.clone();
                let k = &k;
                s.spawn(move || {
                    (0..25)
                        .map(|_| {
                            let a = call(&d, script::publish_args(k, b"{}", 100, 60, "e1", 120, "")).unwrap();
                            script::published(&a).unwrap().0
                        })
                        .collect::<Vec<u64>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    offsets.sort();
    assert_eq!(offsets, (1..=100).collect::<Vec<u64>>(), "one sequence, no gaps, no repeats");
    let mut seen: Vec<u64> = (0..100).map(|_| next_pub(&rx).offset).collect();
    seen.sort();
    assert_eq!(seen, offsets, "every publication reached the subscriber");

    // Redis goes away with a command in flight.
    let (ftx, frx) = channel();
    d.command(0, vec![b"BLPOP".to_vec(), b"never".to_vec(), b"0".to_vec()], Box::new(move |a| drop(ftx.send(a))));
    std::thread::sleep(Duration::from_millis(100));
    redis.kill();
    match frx.recv_timeout(Duration::from_secs(5)).expect("the in-flight command fails, it does not hang") {
        Err(DriverError::Lost(a)) => assert_eq!(a, addr),
        other => panic!("{other:?}"),
    }
    wait_health(&rx, false);
    match call(&d, vec![b"PING".to_vec()]) {
        Err(DriverError::Down(_)) | Err(DriverError::Lost(_)) => {}
        other => panic!("while Redis is away commands fail at once: {other:?}"),
    }
    // Back on the same port (with no data: a new epoch); the driver reconnects and
    // subscribes again.
    let mut redis = Redis::on(port);
    wait_health(&rx, true);
    let t = Instant::now();
    let a = loop {
        match call(&d, script::publish_args(&k, b"{}", 100, 60, "e2", 120, "")) {
            Ok(a) => break a,
            Err(_) => {
                assert!(t.elapsed() < Duration::from_secs(10), "no reconnect");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    assert_eq!(script::published(&a).unwrap(), (1, "e2".to_string()), "a new epoch after the data loss");
    let p = next_pub(&rx);
    assert_eq!((p.offset, &p.epoch[..]), (1, &b"e2"[..]), "re-subscribed after the restart");
    d.stop();
    redis.kill();
}
