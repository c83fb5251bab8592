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
