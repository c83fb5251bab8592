//! Crash safety of the durable OSCORE state (issue #3, RFC 8613 App. B.1), shown from a packet
//! capture.
//!
//! Under load (8 concurrent GET /hello loops and an Observe of /time, all through the library
//! `Client` with a durable client store), `hopcore server --state-dir DIR` is killed with
//! SIGKILL and restarted on the same port and state. The client recovers through the Echo
//! exchange (App. B.1.2). Then a protected request taken from the capture, sent before the
//! crash, is replayed raw to the restarted server; it must be answered with a 4.01
//! (unprotected "Replay detected", or a protected 4.01 Echo challenge), never a success.
//!
//! Everything on the server port is captured with `tcpdump -i any`, and the test reads the
//! pcap itself: every OSCORE message gives (sender, Partial IV) -> ciphertext, with the sender
//! the 'kid' for requests and the server for responses carrying a Partial IV. A response
//! without Partial IV uses the nonce of its request under the server's key (RFC 8613 §5.2),
//! so it is recorded as the server's use of that request's (kid, Partial IV). Byte-identical
//! ciphertexts (CoAP retransmissions, the replay itself) are the same encryption; the same key
//! with a different ciphertext is AEAD nonce reuse and fails the test, printing both.
//!
//! Runs when `HOPCORE_PEERS_VENV` is set (scripts/test.sh sets it after installing tcpdump and
//! tshark); prints "skipped" otherwise. With it set, a missing tcpdump or a capture that
//! cannot start is a failure. Capturing needs root or CAP_NET_RAW (scripts/PEERS.md).

#[path = "crash_safety/pcap.rs"]
mod pcap;

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use hopcore_codec::{num, Code, Message, MessageView, MsgType};
use hopcore_endpoint::client::{Client, ClientConfig, OscoreProtector};
use hopcore_endpoint::{Endpoint, EndpointConfig, Incoming};
use hopcore_oscore::{
    protect_request, unprotect_response, ContextInput, Layer, OscoreOption, SecurityContext, SenderSequence,
};
use hopcore_security::Credentials;

const SECRET_HEX: &str = "0102030405060708090a0b0c0d0e0f10";
const SALT_HEX: &str = "9e7ca92223786340";
const SECRET: [u8; 16] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
const SALT: [u8; 8] = [0x9e, 0x7c, 0xa9, 0x22, 0x23, 0x78, 0x63, 0x40];
const CLIENT_ID: &[u8] = &[0x01];
const SERVER_ID: &[u8] = &[0x02];

/// Load before the crash, and after the restart.
const LOAD_BEFORE: Duration = Duration::from_millis(1500);
const LOAD_AFTER: Duration = Duration::from_millis(2000);
/// How long the server stays dead (requests sent meanwhile are lost, as in a real crash).
const OUTAGE: Duration = Duration::from_millis(150);
const GET_TASKS: usize = 8;

/// Datagrams sent to the (dead) server port to mark the crash in the capture. Version 0, so
/// they are not CoAP.
const MARK_KILLED: &[u8] = b"\x00hopcore crash-safety: server killed (SIGKILL)";
const MARK_RESTART: &[u8] = b"\x00hopcore crash-safety: restarting the server";

/// Phases of the load, as the load tasks see them.
const BEFORE: usize = 0;
const DOWN: usize = 1;
const AFTER: usize = 2;

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// HOPCORE_PEERS_VENV, or `None` (skip) when it is not set.
fn gate() -> Option<PathBuf> {
    match std::env::var_os("HOPCORE_PEERS_VENV") {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => {
            println!("skipped: HOPCORE_PEERS_VENV is not set (scripts/test.sh sets it after installing tcpdump)");
            None
        }
    }
}

/// `tool` on PATH (or in /usr/sbin, /sbin, where Debian may put tcpdump).
fn find_tool(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/bin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// A temporary directory, removed on drop unless the test failed (then its path is printed:
/// it holds the capture and the server logs).
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let n = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        let p = std::env::temp_dir().join(format!("hopcore-crash-safety-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&p).expect("temp dir");
        TempDir(p)
    }
    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("crash_safety: kept {} (capture.pcap, server logs)", self.0.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

/// A child process, killed (SIGKILL) and reaped on drop.
struct Guard {
    child: Child,
    name: String,
}

impl Guard {
    /// SIGKILL (what `Child::kill` sends on Unix) and wait for it.
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Waits for `child` to exit, at most `limit`.
fn wait_exit(child: &mut Child, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `tcpdump -i any -U -w FILE 'udp and port PORT'`, started and capturing.
struct Tcpdump {
    guard: Guard,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Tcpdump {
    fn start(tcpdump: &Path, file: &Path, port: u16) -> Tcpdump {
        let mut child = Command::new(tcpdump)
            .args(["-i", "any", "-n", "-U", "--immediate-mode", "-B", "65536", "-w"])
            .arg(file)
            .arg(format!("udp and port {port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tcpdump.display()));
        let stderr = child.stderr.take().expect("tcpdump stderr");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = tx.send(());
                }
                keep.lock().unwrap().push(line);
            }
        });
        let mut guard = Guard { child, name: "tcpdump".into() };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if rx.recv_timeout(Duration::from_millis(50)).is_ok() {
                break;
            }
            let exited = guard.child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                std::thread::sleep(Duration::from_millis(100));
                panic!(
                    "the packet capture could not start ({}: {}); capturing needs root or CAP_NET_RAW.\n\
                     tcpdump said:\n{}",
                    guard.name,
                    exited.map_or("no \"listening on\" within 10 s".to_string(), |s| format!("exited with {s}")),
                    lines.lock().unwrap().join("\n")
                );
            }
        }
        // "listening on" is printed once the capture is open; give the kernel filter a moment.
        std::thread::sleep(Duration::from_millis(200));
        Tcpdump { guard, stderr: lines }
    }

    /// SIGINT (tcpdump flushes and prints its statistics), then SIGKILL if it lingers.
    /// Returns what tcpdump printed on stderr.
    fn stop(mut self) -> String {
        let pid = self.guard.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        if !wait_exit(&mut self.guard.child, Duration::from_secs(5)) {
            self.guard.kill9();
        }
        std::thread::sleep(Duration::from_millis(50));
        let text = self.stderr.lock().unwrap().join("\n");
        text
    }
}

/// `hopcore server --bind 127.0.0.1:PORT --credentials C [--state-dir D]`, waited for until
/// it prints `listening on`; its stderr goes to `log`.
fn start_server(creds: &Path, state_dir: Option<&Path>, port: u16, log: &Path) -> Guard {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_hopcore"));
    cmd.args(["server", "--bind", &format!("127.0.0.1:{port}"), "--credentials"]).arg(creds);
    if let Some(dir) = state_dir {
        cmd.arg("--state-dir").arg(dir);
    }
    let log_file = std::fs::File::create(log).expect("server log");
    cmd.env("RUST_LOG", "warn").env("NO_COLOR", "1").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(log_file);
    let mut child = cmd.spawn().expect("start hopcore server");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("listening on") {
                let _ = tx.send(line);
            }
        }
    });
    let mut guard = Guard { child, name: format!("hopcore server ({})", log.display()) };
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if rx.recv_timeout(Duration::from_millis(20)).is_ok() {
            return guard;
        }
        let exited = guard.child.try_wait().ok().flatten();
        if exited.is_some() || Instant::now() > deadline {
            guard.kill9();
            panic!(
                "{} did not get ready (status {exited:?}); its log:\n{}",
                guard.name,
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
    }
}

/// A UDP port that was free a moment ago on 127.0.0.1 (the server binds it, twice).
fn free_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()).map(|a| a.port()).expect("free port")
}

fn send_marker(port: u16, mark: &[u8]) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("marker socket");
    s.send_to(mark, ("127.0.0.1", port)).expect("send marker");
}

/// What the load tasks counted, by phase.
#[derive(Default)]
struct Load {
    phase: AtomicUsize,
    stop: AtomicBool,
    /// GET /hello answered with 2.05 "Hello from hopcore", sent and answered in the same phase.
    ok: [AtomicU64; 3],
    /// Successful GETs sent in one phase and answered in another.
    straddled: AtomicU64,
    /// Failed GETs (by the phase they ended in).
    failed: [AtomicU64; 3],
    /// Verified Observe responses (registration responses and notifications).
    observed: [AtomicU64; 3],
    registrations: AtomicU64,
    /// The first few distinct failures, for the report.
    errors: Mutex<Vec<String>>,
}

impl Load {
    fn phase(&self) -> usize {
        self.phase.load(Ordering::SeqCst)
    }
    fn stopped(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
    fn note(&self, what: String) {
        let mut e = self.errors.lock().unwrap();
        let phase = ["before", "down", "after"][self.phase()];
        let what = format!("[{phase}] {what}");
        if e.len() < 12 && !e.contains(&what) {
            e.push(what);
        }
    }
}

async fn get_loop(client: Client, peer: SocketAddr, load: Arc<Load>) {
    while !load.stopped() {
        let start = load.phase();
        let req = Message::request(Code::GET).with_option(num::URI_PATH, b"hello");
        let r = client.request(peer, req).await;
        let end = load.phase();
        match r {
            Ok(m) if m.code == Code::CONTENT && m.payload == b"Hello from hopcore" => {
                if start == end {
                    load.ok[end].fetch_add(1, Ordering::SeqCst);
                } else {
                    load.straddled.fetch_add(1, Ordering::SeqCst);
                }
            }
            Ok(m) => {
                load.failed[end].fetch_add(1, Ordering::SeqCst);
                load.note(format!("GET /hello: {} {:?}", m.code, String::from_utf8_lossy(&m.payload)));
            }
            Err(e) => {
                load.failed[end].fetch_add(1, Ordering::SeqCst);
                load.note(format!("GET /hello: {e}"));
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Observes /time; re-registers when nothing arrived for 1.6 s (the server was killed, and
/// its successor does not know the observation). Polls in short slices so that it notices
/// the end of the load soon.
async fn observe_loop(client: Client, peer: SocketAddr, load: Arc<Load>) {
    const SILENCE: Duration = Duration::from_millis(1600);
    const SLICE: Duration = Duration::from_millis(100);
    while !load.stopped() {
        let req = Message::request(Code::GET).with_option(num::URI_PATH, b"time");
        load.registrations.fetch_add(1, Ordering::SeqCst);
        let registration = client.observe(peer, req);
        let mut obs = match tokio::time::timeout(Duration::from_secs(3), registration).await {
            Ok(Ok(obs)) => obs,
            Ok(Err(e)) => {
                load.note(format!("Observe /time registration: {e}"));
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            Err(_) => {
                load.note("Observe /time registration: no answer within 3 s".into());
                continue;
            }
        };
        let mut last = Instant::now();
        while !load.stopped() && last.elapsed() < SILENCE {
            match tokio::time::timeout(SLICE, obs.next()).await {
                Ok(Some(Ok(m))) if m.code.is_success() => {
                    load.observed[load.phase()].fetch_add(1, Ordering::SeqCst);
                    last = Instant::now();
                }
                Ok(Some(Ok(m))) => {
                    load.note(format!("Observe /time: {}", m.code));
                    break;
                }
                Ok(Some(Err(e))) => {
                    load.note(format!("Observe /time: {e}"));
                    break;
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
    }
}

/// The in-process client: durable store in `state`, OSCORE context for `coap://127.0.0.1:PORT/*`,
/// NSTART raised so that the tasks really have several requests in flight, short ACK_TIMEOUT
/// so that requests lost in the outage are retransmitted soon after the restart.
async fn make_client(creds: &Path, state: &Path, port: u16) -> (Client, Incoming) {
    let credentials = Credentials::load(creds).expect("client credentials");
    let (store, index) = credentials.into_store(Some(state)).expect("client store");
    let id = index.for_uri(&format!("coap://127.0.0.1:{port}/hello")).expect("client context for the URI");
    let protector = Arc::new(OscoreProtector::new(Arc::new(Mutex::new(store)), vec![id]));
    let messaging = hopcore_messaging::Config {
        ack_timeout: Duration::from_millis(250),
        nstart: 32,
        ..hopcore_messaging::Config::default()
    };
    let (endpoint, incoming) = Endpoint::bind_with(
        "127.0.0.1:0".parse().expect("address"),
        EndpointConfig { messaging, ..EndpointConfig::default() },
    )
    .await
    .expect("client socket");
    let config = ClientConfig { request_timeout: Duration::from_secs(2), ..ClientConfig::default() };
    (Client::with_security(endpoint, config, protector), incoming)
}

/// How an answer to the replayed request is to be judged.
#[derive(Debug)]
enum Answer {
    /// An empty ACK, or a message of another exchange.
    Unrelated,
    /// 4.01: unprotected (Replay detected, ...) or protected with Echo.
    Rejected(String),
    /// Anything else: the replay got through, or an unexpected answer.
    Wrong(String),
}

impl std::fmt::Display for Answer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Answer::Unrelated => f.write_str("(not an answer)"),
            Answer::Rejected(what) => write!(f, "rejected: {what}"),
            Answer::Wrong(what) => write!(f, "NOT REJECTED: {what}"),
        }
    }
}

fn show_answers<'a>(answers: impl IntoIterator<Item = &'a Answer>) -> String {
    let v: Vec<String> = answers.into_iter().map(Answer::to_string).collect();
    if v.is_empty() {
        "none".to_string()
    } else {
        v.join("; ")
    }
}

/// Judges `datagram` as the answer to the replay of a request with `token` and Partial IV
/// `piv` (sequence number) from the client context: an unprotected 4.01, or a protected
/// response that decrypts (with a re-derived client context, as the client would) to 4.01 with
/// an Echo option.
fn judge_answer(datagram: &[u8], token: &[u8], piv: u64) -> Answer {
    let Ok(m) = Message::parse(datagram) else {
        return Answer::Unrelated;
    };
    if m.code == Code::EMPTY || m.token.as_slice() != token {
        return Answer::Unrelated;
    }
    let Some(option) = m.options.get(num::OSCORE) else {
        let max_age = m.options.get_uint(num::MAX_AGE);
        let what =
            format!("unprotected {}, Max-Age {max_age:?}, payload {:?}", m.code, String::from_utf8_lossy(&m.payload));
        return if m.code == Code::UNAUTHORIZED { Answer::Rejected(what) } else { Answer::Wrong(what) };
    };
    let response_piv = OscoreOption::parse(option).ok().and_then(|o| o.partial_iv).map(|p| p.to_sequence());
    // The binding of the replayed request: a client context whose next sequence number is
    // the request's, protecting a (throw-away) request, gives its kid, Partial IV and nonce.
    let input = ContextInput::new(&SECRET, CLIENT_ID, SERVER_ID).master_salt(&SALT);
    let mut ctx = SecurityContext::derive(&input).expect("client context").with_sequence(SenderSequence::volatile(piv));
    let (_, mut binding) =
        protect_request(&Message::request(Code::GET), &mut ctx, &Layer::RFC8613).expect("protect a request");
    assert_eq!(binding.request_piv().to_sequence(), piv);
    match unprotect_response(&m, &ctx, &mut binding, &Layer::RFC8613) {
        Ok(inner) if inner.code == Code::UNAUTHORIZED && inner.options.contains(num::ECHO) => {
            Answer::Rejected(format!(
                "protected 4.01 with Echo {} (server Partial IV {response_piv:?}), payload {:?}",
                hex(inner.options.get(num::ECHO).unwrap_or_default()),
                String::from_utf8_lossy(&inner.payload)
            ))
        }
        Ok(inner) => Answer::Wrong(format!(
            "protected {} (server Partial IV {response_piv:?}), payload {:?}",
            inner.code,
            String::from_utf8_lossy(&inner.payload)
        )),
        Err(e) => Answer::Wrong(format!("a protected response that does not verify: {e}")),
    }
}

/// One use of a (sender, Partial IV) pair in the capture.
#[derive(Debug, Clone)]
struct Use {
    frame: usize,
    ciphertext: Vec<u8>,
    datagram: Vec<u8>,
}

/// Who used a nonce, and with what.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Sender {
    /// A request: the client's Sender ID (the 'kid').
    Client { kid: Vec<u8> },
    /// A response with its own Partial IV: the server's Sender ID.
    Server,
    /// A response without Partial IV: the nonce of the request (kid) under the server's key.
    ServerWithRequestNonce { kid: Vec<u8> },
}

/// A request's (kid, Partial IV): the nonce a response without Partial IV reuses.
type RequestNonce = (Vec<u8>, u64);

/// The whole analysis of the capture.
#[derive(Default)]
struct Analysis {
    uses: HashMap<(Sender, u64), Use>,
    reuses: Vec<String>,
    /// Frame numbers (1-based, as tshark counts) of the violations, for the tshark excerpt.
    frames: BTreeSet<usize>,
    requests: [BTreeSet<u64>; 3],
    server_pivs: [BTreeSet<u64>; 3],
    protected_messages: usize,
    unmatched_responses: usize,
}

impl Analysis {
    fn record(&mut self, sender: Sender, piv: u64, now: Use) {
        let key = (sender, piv);
        match self.uses.get(&key) {
            None => {
                self.uses.insert(key, now);
            }
            Some(first) if first.ciphertext == now.ciphertext => {}
            Some(first) => {
                self.frames.insert(first.frame + 1);
                self.frames.insert(now.frame + 1);
                self.reuses.push(format!(
                    "NONCE REUSE: {:?} Partial IV {} used for two different ciphertexts:\n  frame {}: {}\n  \
                     frame {}: {}",
                    key.0,
                    key.1,
                    first.frame + 1,
                    hex(&first.datagram),
                    now.frame + 1,
                    hex(&now.datagram)
                ));
            }
        }
    }
}

fn phase_of(frame: usize, killed: usize, restart: usize) -> usize {
    if frame < killed {
        BEFORE
    } else if frame > restart {
        AFTER
    } else {
        DOWN
    }
}

fn range(s: &BTreeSet<u64>) -> String {
    match (s.first(), s.last()) {
        (Some(a), Some(b)) => format!("{} distinct, {a}..={b}", s.len()),
        _ => "none".to_string(),
    }
}

/// `tshark -r FILE -d udp.port==PORT,coap`, one line per packet, shortened to the frames of
/// interest and the start and end of the capture.
fn tshark_summary(file: &Path, port: u16, frames: &BTreeSet<usize>) -> String {
    let Some(tshark) = find_tool("tshark") else {
        return "(tshark not found: no summary)".to_string();
    };
    let out = Command::new(tshark)
        .arg("-r")
        .arg(file)
        .args(["-d", &format!("udp.port=={port},coap")])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        return "(tshark did not run)".to_string();
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let mut s = format!("tshark -r {} -d udp.port=={port},coap ({} packets):\n", file.display(), lines.len());
    let mut gap = false;
    for (i, line) in lines.iter().enumerate() {
        let n = i + 1;
        let near = frames.iter().any(|&f| n + 3 >= f && n <= f + 3);
        if n <= 40 || n + 40 > lines.len() || near {
            let _ = writeln!(s, "{line}");
            gap = false;
        } else if !gap {
            let _ = writeln!(s, "  ...");
            gap = true;
        }
    }
    s
}

fn write(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

#[test]
fn kill9_under_load_no_nonce_reuse_and_replay_rejected() {
    let Some(_venv) = gate() else { return };
    let t0 = Instant::now();
    let tcpdump = find_tool("tcpdump").unwrap_or_else(|| {
        panic!("HOPCORE_PEERS_VENV is set but tcpdump is not installed: run scripts/setup-peers.sh (Debian tcpdump)")
    });
    let work = TempDir::new();
    let dir = work.path();
    let port = free_port();
    let server_creds = dir.join("server.toml");
    write(
        &server_creds,
        &format!(
            "[[context]]\npeer = \":client1\"\nsender_id = \"hex:{}\"\nrecipient_id = \"hex:{}\"\n\
             master_secret = \"hex:{SECRET_HEX}\"\nmaster_salt = \"hex:{SALT_HEX}\"\n",
            hex(SERVER_ID),
            hex(CLIENT_ID)
        ),
    );
    let client_creds = dir.join("client.toml");
    write(
        &client_creds,
        &format!(
            "[[context]]\nuri = \"coap://127.0.0.1:{port}/*\"\nsender_id = \"hex:{}\"\nrecipient_id = \"hex:{}\"\n\
             master_secret = \"hex:{SECRET_HEX}\"\nmaster_salt = \"hex:{SALT_HEX}\"\n",
            hex(CLIENT_ID),
            hex(SERVER_ID)
        ),
    );
    let server_state = dir.join("server-state");
    let pcap_file = dir.join("capture.pcap");

    // 1. Capture, server, load.
    let capture = Tcpdump::start(&tcpdump, &pcap_file, port);
    let mut server = start_server(&server_creds, Some(&server_state), port, &dir.join("server-1.log"));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().expect("runtime");
    let (client, incoming) = rt.block_on(make_client(&client_creds, &dir.join("client-state"), port));
    let peer: SocketAddr = ([127, 0, 0, 1], port).into();
    let load = Arc::new(Load::default());
    let mut tasks: Vec<_> =
        (0..GET_TASKS).map(|_| rt.spawn(get_loop(client.clone(), peer, Arc::clone(&load)))).collect();
    let observer = rt.spawn(observe_loop(client.clone(), peer, Arc::clone(&load)));
    std::thread::sleep(LOAD_BEFORE);

    // 2. kill -9, a short outage, restart on the same port and state.
    let t_kill = Instant::now();
    server.kill9();
    load.phase.store(DOWN, Ordering::SeqCst);
    send_marker(port, MARK_KILLED);
    std::thread::sleep(OUTAGE);
    send_marker(port, MARK_RESTART);
    let server2 = start_server(&server_creds, Some(&server_state), port, &dir.join("server-2.log"));
    load.phase.store(AFTER, Ordering::SeqCst);
    let restart_took = t_kill.elapsed();
    std::thread::sleep(LOAD_AFTER);

    // Stop the load: every GET ends within its 2 s request timeout.
    load.stop.store(true, Ordering::SeqCst);
    rt.block_on(async {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(4);
        let mut observer = observer;
        if tokio::time::timeout_at(deadline, &mut observer).await.is_err() {
            load.note("the observer did not stop within 4 s".into());
            observer.abort();
        }
        for t in tasks.iter_mut() {
            if tokio::time::timeout_at(deadline, &mut *t).await.is_err() {
                t.abort();
            }
        }
    });
    let counts = |a: &[AtomicU64; 3]| a.each_ref().map(|c| c.load(Ordering::SeqCst));
    let (ok, failed, observed) = (counts(&load.ok), counts(&load.failed), counts(&load.observed));

    // 3. The replay: a protected request from before the crash, taken from the capture.
    let mut failures: Vec<String> = Vec::new();
    let so_far = pcap::read(&pcap_file).unwrap_or_else(|e| panic!("reading the capture so far: {e}"));
    let killed_at = so_far.datagrams.iter().position(|d| d.payload == MARK_KILLED);
    let candidates: Vec<(Vec<u8>, Vec<u8>, u64)> = so_far
        .datagrams
        .iter()
        .take(killed_at.unwrap_or(0))
        .filter(|d| d.dst.1 == port)
        .filter_map(|d| {
            let v = MessageView::parse(&d.payload).ok()?;
            let o = OscoreOption::parse(v.option(num::OSCORE)?).ok()?;
            let request = v.mtype() == MsgType::Con && v.code() == Code::POST && o.kid == Some(CLIENT_ID);
            request.then_some((d.payload.clone(), v.token_bytes().to_vec(), o.partial_iv?.to_sequence()))
        })
        .collect();
    // One from the middle of the pre-crash load.
    let chosen = candidates.get(candidates.len() / 2).cloned();
    let Some((replayed, replay_token, replay_piv)) = chosen else {
        panic!(
            "no protected request (CON POST, kid {}) before the crash marker in the capture ({} datagrams, marker \
             at {killed_at:?})",
            hex(CLIENT_ID),
            so_far.datagrams.len()
        );
    };
    let replay_socket = UdpSocket::bind("127.0.0.1:0").expect("replay socket");
    let replay_port = replay_socket.local_addr().expect("replay address").port();
    replay_socket.set_read_timeout(Some(Duration::from_millis(200))).expect("read timeout");
    replay_socket.send_to(&replayed, peer).expect("send the replay");
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut live_answer = None;
    let mut buf = [0u8; 2048];
    while live_answer.is_none() && Instant::now() < deadline {
        if let Ok((n, from)) = replay_socket.recv_from(&mut buf) {
            if from == peer {
                match judge_answer(&buf[..n], &replay_token, replay_piv) {
                    Answer::Unrelated => {}
                    a => live_answer = Some(a),
                }
            }
        }
    }
    match &live_answer {
        Some(Answer::Rejected(_)) => {}
        other => failures.push(format!(
            "the replay of the pre-crash request (Partial IV {replay_piv}) was not rejected with 4.01: {}",
            show_answers(other)
        )),
    }
    // Let the last packets reach the capture file, then stop it.
    std::thread::sleep(Duration::from_millis(200));
    let tcpdump_said = capture.stop();
    drop(server2);
    drop(incoming);
    drop(client);
    rt.shutdown_timeout(Duration::from_secs(1));

    // 4. The capture.
    let cap = pcap::read(&pcap_file).unwrap_or_else(|e| panic!("reading the capture: {e}\ntcpdump:\n{tcpdump_said}"));
    let mark = |m: &[u8]| cap.datagrams.iter().find(|d| d.payload == m).map(|d| d.index);
    let (Some(killed), Some(restart)) = (mark(MARK_KILLED), mark(MARK_RESTART)) else {
        panic!("the crash markers are not in the capture ({} records)\ntcpdump:\n{tcpdump_said}", cap.records);
    };
    let mut a = Analysis::default();
    // The request (kid, Partial IV) of each exchange, for the responses without Partial IV:
    // by (client port, Message ID, token) for piggybacked answers, by (client port, token)
    // for separate ones.
    let mut by_mid: HashMap<(u16, u16, Vec<u8>), RequestNonce> = HashMap::new();
    let mut by_token: HashMap<(u16, Vec<u8>), RequestNonce> = HashMap::new();
    let mut replay_seen = false;
    let mut replay_answers = Vec::new();
    for d in &cap.datagrams {
        let from_server = d.src.1 == port;
        let client_port = if from_server { d.dst.1 } else { d.src.1 };
        if client_port == replay_port {
            if !from_server && d.payload == replayed {
                replay_seen = true;
            } else if from_server {
                replay_answers.push((d.index, judge_answer(&d.payload, &replay_token, replay_piv)));
            }
        }
        let Ok(v) = MessageView::parse(&d.payload) else { continue };
        let Some(value) = v.option(num::OSCORE) else { continue };
        let Ok(option) = OscoreOption::parse(value) else {
            failures.push(format!("frame {}: malformed OSCORE option {}", d.index + 1, hex(value)));
            continue;
        };
        a.protected_messages += 1;
        let phase = phase_of(d.index, killed, restart);
        let now = Use { frame: d.index, ciphertext: v.payload().to_vec(), datagram: d.payload.clone() };
        let piv = option.partial_iv.map(|p| p.to_sequence());
        if v.code().is_request() && !from_server {
            let (Some(kid), Some(piv)) = (option.kid, piv) else {
                failures.push(format!("frame {}: a protected request without kid or Partial IV", d.index + 1));
                continue;
            };
            if client_port != replay_port {
                a.requests[phase].insert(piv);
            }
            by_mid.insert((client_port, v.message_id(), v.token_bytes().to_vec()), (kid.to_vec(), piv));
            by_token.insert((client_port, v.token_bytes().to_vec()), (kid.to_vec(), piv));
            a.record(Sender::Client { kid: kid.to_vec() }, piv, now);
        } else if v.code().is_response() && from_server {
            match piv {
                Some(piv) => {
                    a.server_pivs[phase].insert(piv);
                    a.record(Sender::Server, piv, now);
                }
                None => {
                    let request = if v.mtype() == MsgType::Ack {
                        by_mid.get(&(client_port, v.message_id(), v.token_bytes().to_vec()))
                    } else {
                        by_token.get(&(client_port, v.token_bytes().to_vec()))
                    };
                    match request.cloned() {
                        Some((kid, piv)) => a.record(Sender::ServerWithRequestNonce { kid }, piv, now),
                        None => a.unmatched_responses += 1,
                    }
                }
            }
        }
    }

    let runtime = t0.elapsed();
    let summary = format!(
        "crash_safety summary ({:.1} s; restart took {} ms; server port {port}):\n  \
         load GET /hello ok: before {} / after {} (straddling the crash {}); failed: before {} / down {} / after {}\n  \
         observe responses: before {} / after {} ({} registrations)\n  \
         capture: {} records ({} not IPv4/UDP), link type {}, {} OSCORE messages, {} (sender, Partial IV) pairs\n  \
         client Partial IVs on the wire: before {} | during the outage {} | after {}\n  \
         server Partial IVs on the wire: before {} | after {}\n  \
         replayed request: Partial IV {replay_piv}, {} bytes, in the capture: {replay_seen}; live answer: {}\n  \
         answers to the replay in the capture: {}\n  \
         responses without Partial IV not matched to a request: {}\n  \
         client-side failures (first distinct): {:#?}\n  tcpdump: {}",
        runtime.as_secs_f64(),
        restart_took.as_millis(),
        ok[BEFORE],
        ok[AFTER],
        load.straddled.load(Ordering::SeqCst),
        failed[BEFORE],
        failed[DOWN],
        failed[AFTER],
        observed[BEFORE],
        observed[AFTER],
        load.registrations.load(Ordering::SeqCst),
        cap.records,
        cap.skipped,
        cap.link_type,
        a.protected_messages,
        a.uses.len(),
        range(&a.requests[BEFORE]),
        range(&a.requests[DOWN]),
        range(&a.requests[AFTER]),
        range(&a.server_pivs[BEFORE]),
        range(&a.server_pivs[AFTER]),
        replayed.len(),
        show_answers(&live_answer),
        show_answers(replay_answers.iter().map(|(_, a)| a)),
        a.unmatched_responses,
        load.errors.lock().unwrap(),
        tcpdump_said.lines().filter(|l| l.contains("packets")).collect::<Vec<_>>().join("; "),
    );
    println!("{summary}");

    failures.extend(a.reuses.iter().cloned());
    let mut require = |cond: bool, what: &str| {
        if !cond {
            failures.push(what.to_string());
        }
    };
    require(ok[BEFORE] > 0, "no successful GET /hello before the crash");
    require(ok[AFTER] > 0, "no successful GET /hello after the restart (the client did not recover)");
    require(!a.requests[BEFORE].is_empty(), "no protected request in the capture before the crash");
    require(!a.requests[AFTER].is_empty(), "no protected request in the capture after the restart");
    require(!a.server_pivs[BEFORE].is_empty(), "no server Partial IV (notification) in the capture before the crash");
    require(
        !a.server_pivs[AFTER].is_empty(),
        "no server Partial IV (Echo challenge, notification) in the capture after the restart",
    );
    require(replay_seen, "the replayed datagram is not in the capture");
    require(
        replay_answers.iter().any(|(_, ans)| matches!(ans, Answer::Rejected(_)))
            && !replay_answers.iter().any(|(_, ans)| matches!(ans, Answer::Wrong(_))),
        "the capture does not show the replay answered with 4.01 (and nothing else)",
    );
    // App. B.1.1: the restarted server continues above everything it may have used.
    if let (Some(before), Some(after)) = (a.server_pivs[BEFORE].last(), a.server_pivs[AFTER].first()) {
        require(after > before, "the restarted server's Partial IVs do not continue above the ones before the crash");
    }
    // The evidence must be complete: nothing lost by the capture, and every response that
    // uses a request's nonce matched to its request.
    let dropped = tcpdump_said
        .lines()
        .find_map(|l| l.strip_suffix(" packets dropped by kernel").and_then(|n| n.trim().parse::<u64>().ok()));
    require(
        dropped == Some(0),
        "the capture is incomplete: tcpdump reports packets dropped by the kernel (or no count)",
    );
    require(a.unmatched_responses == 0, "responses without Partial IV that match no captured request");
    require(runtime < Duration::from_secs(30), "the test took 30 s or more");
    if !failures.is_empty() {
        let frames: BTreeSet<usize> =
            a.frames.iter().copied().chain(replay_answers.iter().map(|(i, _)| i + 1)).collect();
        let excerpt = tshark_summary(&pcap_file, port, &frames);
        let server_logs = ["server-1.log", "server-2.log"]
            .map(|f| format!("{f}:\n{}", std::fs::read_to_string(dir.join(f)).unwrap_or_default()))
            .join("\n");
        panic!("{} failure(s):\n{}\n\n{summary}\n\n{excerpt}\n{server_logs}", failures.len(), failures.join("\n"));
    }
}
