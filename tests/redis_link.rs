//! The Redis engine's sans-IO half against a real `redis-server` (issue #12, in progress):
//! the publish script sequences a channel atomically with its history and pub/sub, so two
//! nodes see identical ids; history pages carry the stream position; a Redis that lost its
//! data is seen as a new epoch; a dropped connection fails what was in flight. The test
//! starts its own redis-server on a free loopback port (no persistence) and stops it by PID.

mod common;
use common::Redis;
use herald::hub::redis::link::{Event, Link};
use herald::hub::redis::script::{self, Keys};
use herald::proto::resp::{Limits, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A blocking driver for a link (the reactor's driver does the same without blocking).
struct Conn {
    sock: TcpStream,
    link: Link,
    events: Vec<Event>,
}

impl Conn {
    fn new(port: u16, pubsub: bool) -> Conn {
        let sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
        sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        Conn { sock, link: Link::new(pubsub, Limits::default()), events: Vec::new() }
    }

    fn send<A: AsRef<[u8]>>(&mut self, tag: u64, args: &[A]) {
        self.link.command(tag, args);
        let n = self.link.output().len();
        self.sock.write_all(self.link.output()).unwrap();
        self.link.written(n);
    }

    /// Read until `n` events are in hand (or the socket ends: Err).
    fn wait(&mut self, n: usize) -> Result<Vec<Event>, String> {
        let mut buf = [0u8; 65536];
        while self.events.len() < n {
            match self.sock.read(&mut buf) {
                Ok(0) => return Err("connection closed".into()),
                Ok(k) => self.link.feed(&buf[..k], &mut self.events).map_err(|e| e.to_string())?,
                Err(e) => return Err(e.to_string()),
            }
        }
        Ok(self.events.drain(..n).collect())
    }

    fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Value {
        self.send(1, args);
        match self.wait(1).unwrap().remove(0) {
            Event::Reply { value, .. } => value,
            e => panic!("unexpected {e:?}"),
        }
    }
}

#[test]
fn two_nodes_see_one_sequence_history_and_epochs() {
    let r = Redis::start();
    let k = Keys::of("herald", "chat:1");
    // Node B listens on the channel's pub/sub; node A publishes.
    let mut b = Conn::new(r.port, true);
    b.send(0, &["SUBSCRIBE", k.pubsub.as_str()]);
    assert!(matches!(b.wait(1).unwrap()[0], Event::Subscription { count: 1, .. }));
    let mut a = Conn::new(r.port, false);
    // Pipelined: three publishes in one write, answered in order.
    for i in 1..=3u64 {
        let payload = format!(r#"{{"data":{{"n":{i}}}}}"#);
        a.link.command(i, &script::publish_args(&k, payload.as_bytes(), 2, 300, "epochA", 600, ""));
    }
    let n = a.link.output().len();
    a.sock.write_all(a.link.output()).unwrap();
    a.link.written(n);
    let replies = a.wait(3).unwrap();
    let mut epoch = String::new();
    for (i, e) in replies.iter().enumerate() {
        let Event::Reply { tag, value } = e else { panic!("{e:?}") };
        assert_eq!(*tag, i as u64 + 1, "replies in order");
        let (offset, ep) = script::published(value).unwrap();
        assert_eq!(offset, i as u64 + 1, "one sequence per channel");
        epoch = ep;
    }
    assert_eq!(epoch, "epochA", "the first publisher's epoch is the channel's");
    let msgs = b.wait(3).unwrap();
    let got: Vec<(u64, String)> = msgs
        .iter()
        .map(|m| match m {
            Event::Message(p) => {
                assert_eq!(&p.epoch[..], b"epochA");
                (p.offset, String::from_utf8_lossy(&p.payload).into_owned())
            }
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(got[0], (1, r#"{"data":{"n":1}}"#.to_string()));
    assert_eq!(got.iter().map(|g| g.0).collect::<Vec<_>>(), vec![1, 2, 3], "node B sees node A's ids");

    // History holds the newest 2 (size 2): after offset 0 it reports oldest 2, so a
    // client at 0 missed offset 1.
    let page = script::page(&a.call(&script::history_args(&k, 0, 0, "unused", 600))).unwrap();
    assert_eq!((page.top, page.oldest), (3, 2));
    assert_eq!(page.epoch, "epochA");
    assert_eq!(page.entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![2, 3]);
    let page = script::page(&a.call(&script::history_args(&k, 2, 10, "unused", 600))).unwrap();
    assert_eq!(page.entries.iter().map(|e| e.0).collect::<Vec<_>>(), vec![3]);
    assert_eq!(&page.entries[0].1[..], br#"{"data":{"n":3}}"#);

    // A channel read before its first publish gets an epoch that the publish then keeps.
    let k2 = Keys::of("herald", "fresh");
    let page = script::page(&a.call(&script::history_args(&k2, 0, 0, "epochR", 600))).unwrap();
    assert_eq!((page.top, page.epoch.as_str()), (0, "epochR"));
    let (o, ep) = script::published(&a.call(&script::publish_args(&k2, b"{}", 10, 300, "epochP", 600, ""))).unwrap();
    assert_eq!((o, ep.as_str()), (1, "epochR"));

    // Redis lost its data (FLUSHALL stands for a restart without persistence): the next
    // publish starts a new epoch, which is how nodes and clients detect the gap.
    assert_eq!(a.call(&["FLUSHALL"]), Value::Simple("OK".into()));
    let (o, ep) = script::published(&a.call(&script::publish_args(&k, b"{}", 2, 300, "epochB", 600, ""))).unwrap();
    assert_eq!((o, ep.as_str()), (1, "epochB"));
    match &b.wait(1).unwrap()[0] {
        Event::Message(p) => assert_eq!((p.offset, &p.epoch[..]), (1, &b"epochB"[..])),
        e => panic!("{e:?}"),
    }

    // Publishing without history: offset 0, delivered, not stored.
    let (o, _) = script::published(&a.call(&script::publish_args(&k, b"{}", 0, 300, "x", 600, ""))).unwrap();
    assert_eq!(o, 0);
    match &b.wait(1).unwrap()[0] {
        Event::Message(p) => assert_eq!(p.offset, 0),
        e => panic!("{e:?}"),
    }
}

#[test]
fn a_dropped_connection_fails_what_was_in_flight() {
    let mut r = Redis::start();
    let mut a = Conn::new(r.port, false);
    assert_eq!(a.call(&["PING"]), Value::Simple("PONG".into()));
    // BLPOP holds the reply; kill Redis under it.
    a.send(7, &["BLPOP", "never", "0"]);
    let _ = r.child.kill();
    let _ = r.child.wait();
    assert!(a.wait(1).is_err(), "the socket ends");
    assert_eq!(a.link.abandon(), vec![7], "the waiting command is failed, not lost silently");
}
