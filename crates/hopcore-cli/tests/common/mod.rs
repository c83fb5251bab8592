//! Harness for end-to-end tests: starts real `hopcore` processes on loopback and talks to them.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The binary under test.
pub fn hopcore() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_hopcore"));
    c.env("RUST_LOG", "warn");
    c
}

/// A running `hopcore` process, killed on drop.
pub struct Proc {
    pub child: Child,
    pub addr: SocketAddr,
    pub name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Starts `hopcore ARGS... --bind 127.0.0.1:0` and waits for its "listening on ADDR" line.
pub fn spawn(args: &[&str]) -> Proc {
    spawn_at(args, "127.0.0.1:0")
}

pub fn spawn_at(args: &[&str], bind: &str) -> Proc {
    let mut cmd = hopcore();
    cmd.args(args).args(["--bind", bind]).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().expect("start hopcore");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines();
        while let Some(Ok(line)) = lines.next() {
            if let Some(a) = line.strip_prefix("listening on ") {
                let _ = tx.send(a.trim().to_string());
            }
        }
    });
    let addr = match rx.recv_timeout(Duration::from_secs(20)) {
        Ok(a) => a.parse().expect("address"),
        Err(_) => {
            let _ = child.kill();
            panic!("hopcore {args:?} did not report its address");
        }
    };
    Proc { child, addr, name: args.first().map(|s| s.to_string()).unwrap_or_default() }
}

/// Runs the client to completion (bounded by `--timeout` and a hard wall-clock limit).
pub fn run(args: &[&str]) -> Output {
    let mut child =
        hopcore().args(args).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("start hopcore client");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().expect("output");
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("hopcore {args:?} did not finish within 60 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A raw CoAP GET over a plain UDP socket (no hopcore code on the client side), returning the
/// response datagram; used to check liveness after abuse.
pub fn raw_get(addr: SocketAddr, path: &str, mid: u16) -> Option<Vec<u8>> {
    let sock = UdpSocket::bind("127.0.0.1:0").ok()?;
    sock.set_read_timeout(Some(Duration::from_millis(500))).ok()?;
    let mut msg = vec![0x42, 0x01, (mid >> 8) as u8, mid as u8, 0xab, 0xcd];
    let mut prev = 0u16;
    for seg in path.split('/').filter(|s| !s.is_empty()) {
        let delta = 11 - prev;
        prev = 11;
        assert!(seg.len() < 13);
        msg.push(((delta as u8) << 4) | seg.len() as u8);
        msg.extend_from_slice(seg.as_bytes());
    }
    let mut buf = [0u8; 2048];
    for _ in 0..6 {
        sock.send_to(&msg, addr).ok()?;
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return Some(buf[..n].to_vec());
        }
    }
    None
}

/// Sends `count` random and mutated datagrams to `addr` (bounded in count and time), seeded.
pub fn flood(addr: SocketAddr, count: usize, seed: u64) {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
    // Valid messages to mutate: requests, responses, empty, proxy requests, options galore.
    let seeds: Vec<Vec<u8>> = vec![
        vec![0x40, 0x01, 0x00, 0x01, 0xb5, b'h', b'e', b'l', b'l', b'o'],
        vec![0x44, 0x01, 0x00, 0x02, 1, 2, 3, 4, 0xb4, b't', b'i', b'm', b'e', 0x60],
        vec![0x40, 0x00, 0x00, 0x03],
        vec![0x50, 0x02, 0x00, 0x04, 0xb4, b'e', b'c', b'h', b'o', 0xff, b'x'],
        vec![0x60, 0x45, 0x00, 0x05, 0xff, b'r'],
        {
            let mut v = vec![0x41, 0x01, 0x00, 0x06, 0x07, 0xdd, 0x0b, 0x0f];
            v.extend_from_slice(b"coap://127.0.0.1:1/x");
            v
        },
        vec![0x40, 0x01, 0x00, 0x07, 0xd1, 0x0a, 0x02, 0x41, 0x00],
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..count {
        if Instant::now() > deadline {
            break;
        }
        let dgram: Vec<u8> = if i % 3 == 0 {
            let n = rng.gen_range(0..300);
            (0..n).map(|_| rng.gen()).collect()
        } else {
            let mut v = seeds[i % seeds.len()].clone();
            for _ in 0..rng.gen_range(1..5) {
                match rng.gen_range(0..4) {
                    0 if !v.is_empty() => {
                        let j = rng.gen_range(0..v.len());
                        v[j] ^= rng.gen::<u8>() | 1;
                    }
                    1 => v.push(rng.gen()),
                    2 if !v.is_empty() => {
                        v.truncate(rng.gen_range(0..v.len()));
                    }
                    _ => {
                        let j = rng.gen_range(0..=v.len());
                        v.insert(j, rng.gen());
                    }
                }
            }
            v
        };
        let _ = sock.send_to(&dgram, addr);
        if i % 200 == 0 {
            // Let the receiver breathe; the point is robustness, not overload.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Helpers for interop tests against other CoAP implementations (tests/interop.rs): scratch
// directories, free ports, peer processes killed on drop, and clients with a wall-clock limit.

/// A scratch directory under the system temp dir, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("hopcore-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory");
        TempDir(dir)
    }
    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A port on 127.0.0.1 that was free for both UDP and TCP a moment ago (aiocoap and libcoap
/// servers listen on both). Racy by nature: whoever starts a peer on it must retry when the
/// peer does not come up ([`spawn_peer`] does).
pub fn free_port() -> u16 {
    for _ in 0..50 {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind a UDP socket");
        let port = udp.local_addr().expect("local address").port();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port on 127.0.0.1 is free for both UDP and TCP");
}

/// A peer process (some other CoAP implementation), killed on drop. Its stdout and stderr go
/// to files, shown by [`Peer::logs`] when a test fails.
pub struct Peer {
    pub child: Child,
    pub addr: SocketAddr,
    pub name: String,
    logs: TempDir,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Peer {
    /// Whether the process is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// What the peer wrote so far (stdout, then stderr), for failure messages.
    pub fn logs(&self) -> String {
        let read = |f: &str| std::fs::read(self.logs.path().join(f)).unwrap_or_default();
        format!(
            "--- {} stdout ---\n{}\n--- {} stderr ---\n{}",
            self.name,
            String::from_utf8_lossy(&read("stdout")),
            self.name,
            String::from_utf8_lossy(&read("stderr"))
        )
    }
}

/// Starts a CoAP server that cannot report its port: `make(port)` builds its command line for
/// a port on 127.0.0.1, and the peer counts as up once it answers a CoAP request there. If
/// it exits or stays silent for `ready_within`, it is killed and started once more on another
/// port (the port may have been taken in between); a second failure panics with its logs.
pub fn spawn_peer(name: &str, ready_within: Duration, make: impl Fn(u16) -> Command) -> Peer {
    let mut last_logs = String::new();
    for attempt in 1..=2 {
        let port = free_port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let logs = TempDir::new("peer-logs");
        let mut cmd = make(port);
        cmd.stdin(Stdio::null())
            .stdout(std::fs::File::create(logs.path().join("stdout")).expect("log file"))
            .stderr(std::fs::File::create(logs.path().join("stderr")).expect("log file"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let mut peer = Peer { child, addr, name: name.to_string(), logs };
        if coap_answers(&mut peer, ready_within) {
            return peer;
        }
        last_logs = format!("attempt {attempt}: {cmd:?}\n{}", peer.logs());
        // Dropping `peer` kills it; try another port.
    }
    panic!("{name} did not start answering CoAP on 127.0.0.1 (tried twice)\n{last_logs}");
}

/// Polls `peer` with a confirmable CoAP GET /.well-known/core until any datagram comes back,
/// for at most `within`; false early if the process exits.
fn coap_answers(peer: &mut Peer, within: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else { return false };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(150)));
    let deadline = Instant::now() + within;
    let mut mid: u16 = 0x7000;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        if !peer.alive() {
            return false;
        }
        mid = mid.wrapping_add(1);
        let mut msg = vec![0x40, 0x01, (mid >> 8) as u8, mid as u8, 0xbb];
        msg.extend_from_slice(b".well-known");
        msg.push(0x04);
        msg.extend_from_slice(b"core");
        let _ = sock.send_to(&msg, peer.addr);
        let until = Instant::now() + Duration::from_millis(300);
        while Instant::now() < until {
            match sock.recv_from(&mut buf) {
                Ok((n, from)) if from == peer.addr && n >= 4 => return true,
                Ok(_) => {}
                // Timeout, or the ICMP port-unreachable of a peer that is not listening yet.
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    false
}

/// Runs `cmd` to completion with stdin closed, killing it after `limit` (wall clock) and then
/// panicking with what it printed so far. Output is read while it runs, so that a chatty
/// process cannot block on a full pipe.
pub fn run_bounded(cmd: &mut Command, limit: Duration) -> Output {
    use std::io::Read;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = out.read_to_end(&mut v);
        v
    });
    let err_reader = std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = err.read_to_end(&mut v);
        v
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = out_reader.join().unwrap_or_default();
    let stderr = err_reader.join().unwrap_or_default();
    match status {
        Some(status) => Output { status, stdout, stderr },
        None => panic!(
            "{cmd:?} did not finish within {limit:?}; killed.\n--- stdout ---\n{}\n--- stderr ---\n{}",
            String::from_utf8_lossy(&stdout),
            String::from_utf8_lossy(&stderr)
        ),
    }
}

/// Finds `program` on PATH, like `which`.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| p.is_file())
}
