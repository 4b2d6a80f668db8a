//! Test harness: starts a real `herald` binary on an ephemeral loopback port and gives
//! tests raw-socket and HTTP helpers. Each test owns its server; it is killed (by the PID
//! this harness started) when the handle drops.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub struct Herald {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    _cfg: Option<tempfile_path::TempPath>,
}

mod tempfile_path {
    /// A file removed on drop.
    pub struct TempPath(pub std::path::PathBuf);
    impl Drop for TempPath {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
}

impl Herald {
    /// Start herald with a JSON config (merged over defaults) on 127.0.0.1:0.
    pub fn start(config_json: &str) -> Herald {
        Self::start_with(config_json, &[])
    }

    pub fn start_with(config_json: &str, extra_args: &[&str]) -> Herald {
        Self::start_limited(config_json, extra_args, None)
    }

    /// Like [`Herald::start_with`], with the open-files limit (soft and hard) of the herald
    /// process set to `nofile` first (through `sh -c 'ulimit -n N; exec herald ...'`), so a
    /// test can reach the limit cheaply.
    pub fn start_limited(config_json: &str, extra_args: &[&str], nofile: Option<u64>) -> Herald {
        Self::start_full(config_json, extra_args, nofile, &[])
    }

    /// Like [`Herald::start`], with extra environment variables for the herald process
    /// (e.g. `SSL_CERT_FILE` for the roots its HTTPS clients trust).
    pub fn start_env(config_json: &str, env: &[(&str, &str)]) -> Herald {
        Self::start_full(config_json, &[], None, env)
    }

    fn start_full(config_json: &str, extra_args: &[&str], nofile: Option<u64>, env: &[(&str, &str)]) -> Herald {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("herald-test-{}-{n}.json", std::process::id()));
        std::fs::write(&path, config_json).unwrap();
        let mut cmd = match nofile {
            None => Command::new(env!("CARGO_BIN_EXE_herald")),
            Some(n) => {
                // `exec` keeps the PID: the child handle is herald itself.
                let mut c = Command::new("sh");
                c.args(["-c", &format!("ulimit -n {n} && exec \"$0\" \"$@\""), env!("CARGO_BIN_EXE_herald")]);
                c
            }
        };
        // HERALD_TEST_IO=uring runs the same tests against the io_uring backend.
        // A test that names its backend (`--io` in extra_args) keeps it.
        let io_env = std::env::var("HERALD_TEST_IO").ok().filter(|_| !extra_args.contains(&"--io"));
        if let Some(io) = io_env {
            cmd.args(["--io", &io]);
        }
        let mut child = cmd
            .args(["--bind", "127.0.0.1", "--port", "0", "--config"])
            .arg(&path)
            .args(extra_args)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn herald");
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
                if std::env::var("HERALD_TEST_LOG").is_ok() {
                    eprintln!("[herald] {line}");
                }
                log2.lock().unwrap().push(line);
            }
        });
        let addr = rx.recv_timeout(Duration::from_secs(20)).expect("herald did not report its address");
        Herald { child, addr: addr.parse().unwrap(), log, _cfg: Some(tempfile_path::TempPath(path)) }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    /// Send SIGTERM and wait for exit; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        unsafe_kill(self.child.id(), 15);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            assert!(Instant::now() < deadline, "herald did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn unsafe_kill(pid: u32, sig: i32) {
    let _ = Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()).status();
}

impl Drop for Herald {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A parsed HTTP response.
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

/// Read one response (Content-Length or chunked or close-delimited) from a stream.
pub fn read_response(s: &mut impl Read) -> Option<Resp> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match s.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => {
                return if head.is_empty() {
                    None
                } else {
                    panic!("truncated head: {:?}", String::from_utf8_lossy(&head))
                }
            }
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let status: u16 = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers: Vec<(String, String)> = lines
        .filter(|l| !l.is_empty())
        .map(|l| {
            let (n, v) = l.split_once(':').unwrap();
            (n.trim().to_string(), v.trim().to_string())
        })
        .collect();
    let get = |n: &str| headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(n)).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = get("content-length") {
        body.resize(len.parse().unwrap(), 0);
        s.read_exact(&mut body).unwrap();
    } else if get("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        loop {
            let mut line = Vec::new();
            while !line.ends_with(b"\r\n") {
                s.read_exact(&mut b).unwrap();
                line.push(b[0]);
            }
            let n = usize::from_str_radix(
                std::str::from_utf8(&line[..line.len() - 2]).unwrap().split(';').next().unwrap(),
                16,
            )
            .unwrap();
            let mut chunk = vec![0; n + 2];
            s.read_exact(&mut chunk).unwrap();
            if n == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..n]);
        }
    } else if status != 101 && status != 204 && status != 304 {
        s.read_to_end(&mut body).ok();
    }
    Some(Resp { status, headers, body })
}

/// One request on a fresh connection (`Connection: close`).
pub fn request(h: &Herald, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Resp {
    let mut s = h.connect();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: test\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    read_response(&mut s).expect("no response")
}

pub fn get(h: &Herald, path: &str) -> Resp {
    request(h, "GET", path, &[], b"")
}

pub fn publish(h: &Herald, channel: &str, body: &[u8]) -> serde_json::Value {
    let r = request(h, "POST", &format!("/publish/?cid={channel}"), &[], body);
    assert_eq!(r.status, 200, "publish failed: {}", r.text());
    r.json()
}

/// Read from `s` until EOF or timeout; returns the bytes.
pub fn read_all(s: &mut TcpStream, timeout: Duration) -> Vec<u8> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// Build a masked client frame.
pub fn client_frame(fin: bool, opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut f = vec![(if fin { 0x80 } else { 0 }) | opcode];
    let n = payload.len();
    if n < 126 {
        f.push(0x80 | n as u8);
    } else if n < 65536 {
        f.push(0x80 | 126);
        f.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        f.push(0x80 | 127);
        f.extend_from_slice(&(n as u64).to_be_bytes());
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Open a raw WebSocket to `path` and complete the handshake.
pub fn raw_ws(h: &Herald, path: &str) -> TcpStream {
    let mut s = h.connect();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let r = read_response(&mut s).unwrap();
    assert_eq!(r.status, 101, "{:?}", r);
    assert_eq!(r.header("Sec-WebSocket-Accept"), Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo="));
    s
}

/// Read one server frame: (fin, opcode, payload).
pub fn read_frame(s: &mut TcpStream) -> Option<(bool, u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    s.read_exact(&mut h).ok()?;
    assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
    let mut len = (h[1] & 0x7f) as u64;
    if len == 126 {
        let mut b = [0u8; 2];
        s.read_exact(&mut b).ok()?;
        len = u16::from_be_bytes(b) as u64;
    } else if len == 127 {
        let mut b = [0u8; 8];
        s.read_exact(&mut b).ok()?;
        len = u64::from_be_bytes(b);
    }
    let mut p = vec![0u8; len as usize];
    s.read_exact(&mut p).ok()?;
    Some((h[0] & 0x80 != 0, h[0] & 0x0f, p))
}

/// Read frames until a close frame; returns its status code.
pub fn read_close_code(s: &mut TcpStream) -> Option<u16> {
    while let Some((_, op, p)) = read_frame(s) {
        if op == 8 {
            return if p.len() >= 2 { Some(u16::from_be_bytes([p[0], p[1]])) } else { Some(1005) };
        }
    }
    None
}

/// Wait until `f` holds or the timeout passes.
pub fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    f()
}

/// Resident set size of a process in bytes, from /proc/PID/status (VmRSS, kB).
pub fn rss_bytes(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read /proc/PID/status");
    let line = s.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// User + system CPU seconds of a process, from /proc/PID/stat (fields 14 and 15).
pub fn cpu_seconds(pid: u32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    let rest = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf only reads a system constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks / if hz > 0.0 { hz } else { 100.0 }
}

/// A private redis-server on a free loopback port, without persistence (killed by its PID
/// on drop). `tests/all.sh` installs Debian's `redis-server`.
pub struct Redis {
    pub child: Child,
    pub port: u16,
}

impl Redis {
    /// Start one on a free port. A port found free can be taken by another test's process
    /// before redis-server binds it: then that redis-server exits and another port is tried.
    pub fn start() -> Redis {
        for _ in 0..10 {
            let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            if let Some(r) = Redis::try_on(port) {
                return r;
            }
        }
        panic!("redis-server did not start on any of 10 free ports");
    }

    /// Start one on `port` (a restart on the same address).
    pub fn on(port: u16) -> Redis {
        Redis::try_on(port).unwrap_or_else(|| panic!("redis-server did not start on 127.0.0.1:{port}"))
    }

    /// Start one on `port`; `None` when it exits (the port is taken) or does not answer
    /// within 10 s. Ready means the server on the port says it is this child (`INFO
    /// server` names its process id), not merely that something accepts connections there.
    fn try_on(port: u16) -> Option<Redis> {
        let mut child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server (tests/all.sh installs Debian's package)");
        let t = Instant::now();
        let me = format!("process_id:{}\r\n", child.id());
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return None;
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut info = Vec::new();
                if s.write_all(b"INFO server\r\n").is_ok() {
                    let mut buf = [0u8; 4096];
                    while let Ok(n @ 1..) = s.read(&mut buf) {
                        info.extend_from_slice(&buf[..n]);
                        if info.ends_with(b"\r\n\r\n") || info.len() > 64 * 1024 {
                            break;
                        }
                    }
                }
                if String::from_utf8_lossy(&info).contains(&me) {
                    return Some(Redis { child, port });
                }
            }
            if t.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kill it now (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}
