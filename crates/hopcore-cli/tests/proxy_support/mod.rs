//! Helpers for the OSCORE-capable proxy tests that need more than `hopcore` itself
//! (`proxy_capture.rs`, `proxy_interop.rs`, `proxy_chain.rs`): the `HOPCORE_PEERS_VENV` gate,
//! scratch directories that survive a failure, background processes with log files, hopcore
//! TOML and aiocoap JSON credentials, and (in [`wire`]) a packet capture with a CoAP decoder
//! that shares no code with hopcore.
#![allow(dead_code)]

pub mod chain;
pub mod wire;

/// The process harness shared with the other end-to-end tests (one `run_bounded`).
#[path = "../common/mod.rs"]
mod common;
pub use common::run_bounded;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The master salt of every test context (RFC 8613 Appendix C.1.1's).
pub const SALT_HEX: &str = "9e7ca92223786340";
/// Master secrets of the legs (test keys only).
pub const C_S: &str = "0102030405060708090a0b0c0d0e0f10";
pub const C_P: &str = "1112131415161718191a1b1c1d1e1f20";
pub const P_S: &str = "2122232425262728292a2b2c2d2e2f30";
pub const P_P: &str = "3132333435363738393a3b3c3d3e3f40";

/// Wall-clock limit for any one client process.
pub const CLIENT_LIMIT: Duration = Duration::from_secs(40);
/// How long a server or proxy may take to report that it is ready (Python start-up included).
pub const START_LIMIT: Duration = Duration::from_secs(30);

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("repository root")
}

/// The peers' venv from `HOPCORE_PEERS_VENV`; `None` (after printing "skipped") when unset.
/// When set, it must hold the aiocoap tools: a broken installation fails the test.
pub fn gate(test: &str) -> Option<PathBuf> {
    match std::env::var_os("HOPCORE_PEERS_VENV") {
        Some(v) if !v.is_empty() => {
            let v = PathBuf::from(v);
            for tool in ["python", "aiocoap-client", "aiocoap-proxy"] {
                let p = v.join("bin").join(tool);
                assert!(
                    p.is_file(),
                    "HOPCORE_PEERS_VENV={} is set but {} is missing: run scripts/setup-peers.sh",
                    v.display(),
                    p.display()
                );
            }
            Some(v)
        }
        _ => {
            println!("skipped {test}: HOPCORE_PEERS_VENV is not set (scripts/test.sh sets it)");
            None
        }
    }
}

/// `tool` on PATH, or in /usr/sbin and /sbin (where Debian puts tcpdump).
pub fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A scratch directory; removed on drop, except when the test is failing (then its path is
/// printed: it holds the logs and the capture).
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static N: AtomicUsize = AtomicUsize::new(0);
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let n = N.fetch_add(1, Ordering::Relaxed);
        let p = std::env::temp_dir().join(format!("hopcore-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("kept {} (logs, credentials, capture)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

pub fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    path.to_str().expect("UTF-8 path").to_string()
}

/// One `[[context]]` of a hopcore TOML credentials file. `role` is `peer = ":label"` (a client
/// of the file's owner) or `uri = "pattern"` (a next hop); IDs and secret in hex.
pub fn entry(role: &str, sender: &str, recipient: &str, secret: &str) -> String {
    format!(
        "[[context]]\n{role}\nsender_id = \"hex:{sender}\"\nrecipient_id = \"hex:{recipient}\"\n\
         master_secret = \"hex:{secret}\"\nmaster_salt = \"hex:{SALT_HEX}\"\n\n"
    )
}

/// An aiocoap context directory (settings.json + secret.json, scripts/PEERS.md).
pub fn aiocoap_context(dir: &Path, sender: &str, recipient: &str, secret: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("context dir");
    let settings = format!(
        "{{\"sender-id_hex\": \"{sender}\", \"recipient-id_hex\": \"{recipient}\", \"algorithm\": \"AES-CCM-16-64-128\"}}"
    );
    let secret = format!("{{\"secret_hex\": \"{secret}\", \"salt_hex\": \"{SALT_HEX}\"}}");
    write(&dir.join("settings.json"), &settings);
    write(&dir.join("secret.json"), &secret);
    dir.to_path_buf()
}

/// aiocoap credentials JSON: `{KEY: {"oscore": {"basedir": DIR/}}}` for each entry. Keys are
/// URI patterns (client side) or ":labels" (server side). Absolute paths: aiocoap resolves a
/// relative basedir against its working directory.
pub fn aiocoap_credentials(path: &Path, entries: &[(&str, &Path)]) -> String {
    let body: Vec<String> = entries
        .iter()
        .map(|(key, dir)| format!("\"{key}\": {{\"oscore\": {{\"basedir\": \"{}/\"}}}}", dir.display()))
        .collect();
    write(path, &format!("{{{}}}", body.join(", ")))
}

/// A background process, killed (and reaped) on drop; stdout and stderr go to files.
pub struct Proc {
    pub child: Child,
    pub name: String,
    pub stdout: PathBuf,
    pub stderr: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Starts `cmd` with its output in `dir/NAME.out` and `dir/NAME.err`, and waits for a stdout
    /// line starting with `ready`; returns the rest of that line.
    pub fn start(mut cmd: Command, dir: &Path, name: &str, ready: &str) -> (Proc, String) {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        cmd.env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).expect("log file"))
            .stderr(std::fs::File::create(&stderr).expect("log file"));
        let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        let mut p = Proc { child, name: name.to_string(), stdout, stderr };
        let deadline = Instant::now() + START_LIMIT;
        loop {
            let text = std::fs::read_to_string(&p.stdout).unwrap_or_default();
            if let Some(rest) = text.lines().find_map(|l| l.strip_prefix(ready)) {
                return (p, rest.trim().to_string());
            }
            let status = p.child.try_wait().ok().flatten();
            if status.is_some() || Instant::now() > deadline {
                panic!("{name} did not print {ready:?} (status {status:?})\n{}", p.logs());
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Starts a server that prints nothing when ready (aiocoap-proxy): `make(port)` builds the
    /// command line for a free port, and the server counts as up once it answers CoAP there.
    /// Retried once on another port (the port may have been taken in between).
    pub fn start_silent(dir: &Path, name: &str, make: impl Fn(u16) -> Command) -> (Proc, SocketAddr) {
        let mut last = String::new();
        for attempt in 1..=2 {
            let port = free_port();
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let log = format!("{name}-{attempt}");
            let mut cmd = make(port);
            cmd.env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(dir.join(format!("{log}.out"))).expect("log file"))
                .stderr(std::fs::File::create(dir.join(format!("{log}.err"))).expect("log file"));
            let child = cmd.spawn().unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
            let mut p = Proc {
                child,
                name: name.to_string(),
                stdout: dir.join(format!("{log}.out")),
                stderr: dir.join(format!("{log}.err")),
            };
            if wait_coap(addr, START_LIMIT) && matches!(p.child.try_wait(), Ok(None)) {
                return (p, addr);
            }
            last = format!("attempt {attempt}: {cmd:?}\n{}", p.logs());
        }
        panic!("{name} did not start answering CoAP on 127.0.0.1 (tried twice)\n{last}");
    }

    /// What the process printed so far.
    pub fn logs(&self) -> String {
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        format!(
            "--- {} stdout ---\n{}--- {} stderr ---\n{}",
            self.name,
            read(&self.stdout),
            self.name,
            read(&self.stderr)
        )
    }
}

pub fn hopcore_cmd() -> Command {
    Command::new(env!("CARGO_BIN_EXE_hopcore"))
}

/// `hopcore server --bind 127.0.0.1:0 --credentials CREDS --state-dir DIR/NAME-state ARGS`.
pub fn hopcore_server(dir: &Path, name: &str, creds: &str, args: &[&str]) -> (Proc, SocketAddr) {
    let mut cmd = hopcore_cmd();
    cmd.args(["server", "--bind", "127.0.0.1:0", "--credentials", creds])
        .arg("--state-dir")
        .arg(dir.join(format!("{name}-state")))
        .args(args)
        .env("RUST_LOG", "warn");
    let (p, addr) = Proc::start(cmd, dir, name, "listening on");
    (p, addr.parse().expect("server address"))
}

/// A `hopcore proxy` with its access log (`hopcore_proxy::access`) on stderr.
pub struct HopProxy {
    pub proc: Proc,
    pub addr: SocketAddr,
}

impl HopProxy {
    /// `hopcore proxy --bind 127.0.0.1:0 ARGS` (add `--credentials`, `--config`, ...).
    pub fn start(dir: &Path, name: &str, args: &[&str]) -> HopProxy {
        let mut cmd = hopcore_cmd();
        cmd.args(["proxy", "--bind", "127.0.0.1:0"]).args(args).env("RUST_LOG", "warn,hopcore_proxy::access=info");
        let (proc, addr) = Proc::start(cmd, dir, name, "listening on");
        HopProxy { proc, addr: addr.parse().expect("proxy address") }
    }

    pub fn uri(&self) -> String {
        format!("coap://{}", self.addr)
    }

    /// The access log lines so far.
    pub fn exchanges(&self) -> Vec<String> {
        let text = std::fs::read_to_string(&self.proc.stderr).unwrap_or_default();
        text.lines().filter(|l| l.contains("hopcore_proxy::access")).map(str::to_string).collect()
    }

    /// Waits (at most 5 s) for at least `n` access log lines and returns the `n`-th.
    pub fn exchange(&self, n: usize) -> String {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if let Some(l) = self.exchanges().get(n - 1) {
                return l.clone();
            }
            assert!(Instant::now() < deadline, "no exchange #{n} in the log\n{}", self.proc.logs());
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `hopcore ARGS` (a client run), bounded.
pub fn hopcore(args: &[&str]) -> Output {
    run_bounded(hopcore_cmd().args(args).env("RUST_LOG", "warn"), CLIENT_LIMIT)
}

pub fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn err(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A command and its output, for assertion messages.
pub fn show(what: &str, o: &Output) -> String {
    format!("{what}\nstatus: {}\n--- stdout ---\n{}\n--- stderr ---\n{}", o.status, out(o), err(o))
}

/// A port on 127.0.0.1 free for UDP and TCP a moment ago (aiocoap listens on both).
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

/// Waits until a CoAP endpoint at `addr` answers a CON GET /.well-known/core with anything,
/// for at most `within` (aiocoap-proxy prints nothing when it is ready).
pub fn wait_coap(addr: SocketAddr, within: Duration) -> bool {
    let Ok(sock) = UdpSocket::bind("127.0.0.1:0") else { return false };
    let _ = sock.set_read_timeout(Some(Duration::from_millis(200)));
    let deadline = Instant::now() + within;
    let mut mid: u16 = 0x5100;
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        mid = mid.wrapping_add(1);
        let mut msg = vec![0x40, 0x01, (mid >> 8) as u8, mid as u8, 0xbb];
        msg.extend_from_slice(b".well-known");
        msg.push(0x04);
        msg.extend_from_slice(b"core");
        let _ = sock.send_to(&msg, addr);
        match sock.recv_from(&mut buf) {
            Ok((n, from)) if from == addr && n >= 4 => return true,
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
    false
}

/// Reads lines of a child's stream into a channel (used where a line must be awaited).
pub fn lines_of(stream: impl Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}
