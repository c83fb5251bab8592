//! Helpers shared by the `hopcore` OSCORE client tests (included with `#[path]`): temporary
//! directories, background processes waited for by a ready line, and runs of the binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// A fresh temporary directory, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n: u64 =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as u64);
        let p = std::env::temp_dir().join(format!("hopcore-oscore-client-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A background process, killed on drop.
pub struct Peer {
    pub child: Child,
    pub name: String,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cmd` and waits (at most 30 s) for a stdout line starting with `ready`; returns the
/// process and the rest of that line.
pub fn start(mut cmd: Command, name: &str, ready: &str) -> (Peer, String) {
    cmd.env("NO_COLOR", "1").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    let ready = ready.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix(&ready) {
                let _ = tx.send(rest.trim().to_string());
            }
        }
    });
    let mut peer = Peer { child, name: name.to_string() };
    match rx.recv_timeout(Duration::from_secs(30)) {
        Ok(rest) => (peer, rest),
        Err(_) => {
            let status = peer.child.try_wait();
            panic!("{} did not get ready within 30 s (status {status:?})", peer.name);
        }
    }
}

/// A UDP port free right now on 127.0.0.1.
pub fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free port")
}

/// Runs `hopcore ARGS` to completion (at most 60 s).
pub fn hopcore(args: &[&str]) -> Output {
    hopcore_logging(args, "warn")
}

/// Runs `hopcore ARGS` with this RUST_LOG.
pub fn hopcore_logging(args: &[&str], log: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hopcore"))
        .args(args)
        .env("RUST_LOG", log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start hopcore");
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

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn show(args: &[&str], o: &Output) -> String {
    format!("hopcore {}\nstatus: {}\nstdout:\n{}\nstderr:\n{}", args.join(" "), o.status, out(o), err(o))
}

/// Runs `hopcore ARGS`, expecting success.
pub fn ok(args: &[&str]) -> Output {
    let o = hopcore(args);
    assert!(o.status.success(), "{}", show(args, &o));
    o
}
