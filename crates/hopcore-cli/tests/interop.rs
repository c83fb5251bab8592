//! Interop with independent CoAP implementations: aiocoap 0.4.17 (Python) and libcoap 4.3.1
//! (C), as installed by `scripts/setup-peers.sh`. `scripts/PEERS.md` has the command lines
//! used here and the peers' quirks.
//!
//! Every test skips (prints "skipped: HOPCORE_PEERS_VENV not set" and passes) when
//! `HOPCORE_PEERS_VENV` is not set. `scripts/test.sh` sets it to `$REPO/.venv`, and then a
//! missing peer (aiocoap tools in the venv, or `coap-client-notls`/`coap-server-notls` on
//! PATH) is a failure, not a skip.
//!
//! Everything runs on 127.0.0.1. Peers that cannot report their port get one that was free a
//! moment ago and are retried once on another port ([`spawn_peer`]). Every process is killed
//! on drop, and every client runs under a wall-clock limit ([`run_bounded`]).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

/// Wall-clock limit for any one client process. The clients' own timeouts are shorter
/// (`hopcore --timeout 5`, `coap-client-notls -B 5`, `aiocoap_observe.py --timeout 15`).
const CLIENT_LIMIT: Duration = Duration::from_secs(30);
/// How long a peer server may take to answer its first request (Python start-up is slow on a
/// loaded machine).
const PEER_START: Duration = Duration::from_secs(15);

/// `scripts/aiocoap_origin.py`'s /large: this 64-byte pattern, 64 times.
const AIOCOAP_LARGE_PATTERN: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/";

fn aiocoap_large() -> Vec<u8> {
    AIOCOAP_LARGE_PATTERN.repeat(64)
}

/// libcoap's `coap-server-notls` /example_data (1500 bytes by default): "a123456789b123456789...".
fn libcoap_example_data() -> Vec<u8> {
    (0..1500u32).map(|i| if i % 10 == 0 { b'a' + ((i / 10) % 26) as u8 } else { b'0' + (i % 10) as u8 }).collect()
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn peers_venv() -> Option<PathBuf> {
    match std::env::var_os("HOPCORE_PEERS_VENV") {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => {
            println!("skipped: HOPCORE_PEERS_VENV not set");
            None
        }
    }
}

/// The aiocoap tools in the peers' venv.
struct Aiocoap {
    venv: PathBuf,
}

/// None (after printing the skip note) without HOPCORE_PEERS_VENV; with it, every aiocoap
/// tool and helper script must be there.
fn aiocoap() -> Option<Aiocoap> {
    let venv = peers_venv()?;
    for tool in ["python", "aiocoap-client", "aiocoap-fileserver", "aiocoap-proxy"] {
        let p = venv.join("bin").join(tool);
        assert!(
            p.is_file(),
            "HOPCORE_PEERS_VENV={} is set but {} is missing: run scripts/setup-peers.sh",
            venv.display(),
            p.display()
        );
    }
    for script in ["aiocoap_observe.py", "aiocoap_origin.py"] {
        let p = repo().join("scripts").join(script);
        assert!(p.is_file(), "interop helper {} is missing", p.display());
    }
    Some(Aiocoap { venv })
}

impl Aiocoap {
    /// An aiocoap tool from the venv, with colour off (its log lines are coloured even when not
    /// on a tty otherwise).
    fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(self.venv.join("bin").join(name));
        c.env("NO_COLOR", "1");
        c
    }

    fn script(&self, name: &str) -> Command {
        let mut c = self.tool("python");
        c.arg(repo().join("scripts").join(name));
        c
    }

    /// `aiocoap-client --no-color ARGS`: payload on stdout (no trailing newline), error code on
    /// stderr with exit 1.
    fn client(&self, args: &[&str]) -> Output {
        run_bounded(self.tool("aiocoap-client").arg("--no-color").args(args), CLIENT_LIMIT)
    }

    /// `scripts/aiocoap_observe.py URI --count N [--proxy P]`, the working replacement for
    /// `aiocoap-client --observe` (broken in 0.4.17).
    fn observe(&self, uri: &str, count: u32, proxy: Option<&str>) -> Output {
        let mut c = self.script("aiocoap_observe.py");
        c.args([uri, "--count", &count.to_string(), "--timeout", "15"]);
        if let Some(p) = proxy {
            c.args(["--proxy", p]);
        }
        run_bounded(&mut c, CLIENT_LIMIT)
    }

    /// `scripts/aiocoap_origin.py`: /hello, /echo, /large, /time, /whoami.
    fn origin(&self) -> Peer {
        spawn_peer("aiocoap_origin.py", PEER_START, |port| {
            let mut c = self.script("aiocoap_origin.py");
            c.args(["--bind", &format!("127.0.0.1:{port}")]);
            c
        })
    }

    fn fileserver(&self, dir: &Path, write: bool) -> Peer {
        spawn_peer("aiocoap-fileserver", PEER_START, |port| {
            let mut c = self.tool("aiocoap-fileserver");
            if write {
                c.arg("--write");
            }
            c.args(["--bind", &format!("127.0.0.1:{port}")]).arg(dir);
            c
        })
    }

    fn forward_proxy(&self) -> Peer {
        spawn_peer("aiocoap-proxy --forward", PEER_START, |port| {
            let mut c = self.tool("aiocoap-proxy");
            c.args(["--forward", "--bind", &format!("127.0.0.1:{port}")]);
            c
        })
    }
}

/// libcoap's tools: None (after the skip note) without HOPCORE_PEERS_VENV; with it, both must
/// be on PATH.
fn libcoap() -> Option<()> {
    peers_venv()?;
    for tool in ["coap-client-notls", "coap-server-notls"] {
        assert!(
            which(tool).is_some(),
            "HOPCORE_PEERS_VENV is set but {tool} is not on PATH: run scripts/setup-peers.sh (Debian libcoap3-bin)"
        );
    }
    Some(())
}

/// `coap-client-notls -B 5 ARGS`. It exits 0 even on 4.xx/5.xx and on timeouts, so callers
/// check the output. Without `-o` it prints the payload and a newline; with `-v 7` its log
/// goes to stdout too.
fn coap_client(args: &[&str]) -> Output {
    run_bounded(Command::new("coap-client-notls").args(["-B", "5"]).args(args), CLIENT_LIMIT)
}

/// `coap-server-notls -A 127.0.0.1 -p PORT EXTRA`.
fn coap_server(extra: &[&str]) -> Peer {
    spawn_peer(&format!("coap-server-notls {extra:?}"), PEER_START, |port| {
        let mut c = Command::new("coap-server-notls");
        c.args(["-A", "127.0.0.1", "-p", &port.to_string()]).args(extra);
        c
    })
}

/// `hopcore ARGS --timeout 5` under the wall-clock limit.
fn hop(args: &[&str]) -> Output {
    run_bounded(hopcore().args(args).args(["--timeout", "5"]), CLIENT_LIMIT)
}

/// The exact payload bytes `hopcore get|post|...` printed for a text payload: stdout minus the
/// one newline the CLI adds after it.
fn hop_payload(o: &Output) -> &[u8] {
    o.stdout.strip_suffix(b"\n").unwrap_or(&o.stdout)
}

fn show(o: &Output) -> String {
    format!("exit {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}", o.status.code(), stdout(o), stderr(o))
}

#[track_caller]
fn assert_ok(o: &Output, what: &str) {
    assert!(o.status.success(), "{what}: {}", show(o));
}

/// Deterministic printable bytes that do not repeat with any block size, so that a block put
/// in the wrong place shows.
fn text_bytes(len: usize, seed: u64) -> Vec<u8> {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ALPHABET[(x % ALPHABET.len() as u64) as usize]
        })
        .collect()
}

/// One line of `scripts/aiocoap_observe.py`: "response|notification CODE obs=N PAYLOAD".
#[derive(Debug)]
struct ObsLine {
    kind: String,
    code: String,
    obs: Option<u32>,
    payload: String,
}

fn parse_observe(out: &str) -> Vec<ObsLine> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut parts = l.splitn(4, ' ');
            let kind = parts.next().unwrap_or_default().to_string();
            let code = parts.next().unwrap_or_default().to_string();
            let obs = parts.next().and_then(|o| o.strip_prefix("obs=")).and_then(|o| o.parse().ok());
            let payload = parts.next().unwrap_or_default().to_string();
            ObsLine { kind, code, obs, payload }
        })
        .collect()
}

/// Checks an aiocoap observation of a hopcore-style /time ("2026-11-23T17:47:06Z", one per
/// second): the registration response and `count` notifications, all 2.05, with increasing
/// Observe values and distinct, increasing timestamps in the notifications.
#[track_caller]
fn check_time_observation(o: &Output, count: usize, who: &str) {
    assert_ok(o, who);
    let lines = parse_observe(&stdout(o));
    assert_eq!(lines.len(), count + 1, "{who}: registration response + {count} notifications: {}", show(o));
    assert_eq!(lines[0].kind, "response", "{who}: {lines:?}");
    assert!(lines[1..].iter().all(|l| l.kind == "notification"), "{who}: {lines:?}");
    assert!(lines.iter().all(|l| l.code == "2.05"), "{who}: {lines:?}");
    let obs: Vec<u32> = lines.iter().map(|l| l.obs.unwrap_or_else(|| panic!("{who}: no Observe: {lines:?}"))).collect();
    assert!(obs.windows(2).all(|w| w[0] < w[1]), "{who}: Observe values must increase (RFC 7641 §4.4): {obs:?}");
    let stamps: Vec<&str> = lines[1..].iter().map(|l| l.payload.as_str()).collect();
    for s in &stamps {
        assert!(s.len() == 20 && s.as_bytes()[10] == b'T' && s.ends_with('Z'), "{who}: not a UTC timestamp: {s:?}");
    }
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "{who}: timestamps must be distinct and increasing: {stamps:?}");
}

/// Splits link-format (RFC 6690 §2) into (target, attributes) pairs; good enough for the
/// demo server's links (no commas or semicolons inside quoted values).
fn parse_links(s: &str) -> Vec<(String, Vec<String>)> {
    s.split(',')
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut parts = l.trim().split(';');
            let target = parts.next().unwrap_or_default().trim_start_matches('<').trim_end_matches('>').to_string();
            (target, parts.map(str::to_string).collect())
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// 1. aiocoap-client against `hopcore server`

#[test]
fn aiocoap_client_against_hopcore_server() {
    let Some(aio) = aiocoap() else { return };
    let server = spawn(&["server"]);
    let base = format!("coap://{}", server.addr);

    // Discovery: link-format (Content-Format 40, RFC 6690 §7.1) listing the demo resources.
    let o = aio.client(&["-v", &format!("{base}/.well-known/core")]);
    assert_ok(&o, "GET /.well-known/core");
    assert!(stderr(&o).contains("ContentFormat 40"), "link-format expected: {}", show(&o));
    let links = parse_links(&stdout(&o));
    let attrs = |target: &str| {
        links
            .iter()
            .find(|(t, _)| t == target)
            .map(|(_, a)| a.clone())
            .unwrap_or_else(|| panic!("no link to {target} in {links:?}"))
    };
    for target in ["/hello", "/echo", "/large", "/time"] {
        attrs(target);
    }
    assert!(attrs("/time").iter().any(|a| a == "obs"), "/time is observable: {links:?}");
    assert!(attrs("/time").iter().any(|a| a == "rt=\"time\""), "{links:?}");
    assert!(attrs("/hello").iter().any(|a| a == "ct=0"), "{links:?}");
    assert!(attrs("/large").iter().any(|a| a == "sz=4096"), "{links:?}");

    let o = aio.client(&[&format!("{base}/hello")]);
    assert_ok(&o, "GET /hello");
    assert_eq!(stdout(&o), "Hello from hopcore");

    // Block2 (RFC 7959 §2.4): aiocoap reassembles the same 4096 bytes as hopcore's own client.
    let o = aio.client(&[&format!("{base}/large")]);
    assert_ok(&o, "GET /large");
    assert_eq!(o.stdout.len(), 4096, "{}", show(&o));
    let ours = hop(&["get", &format!("{base}/large")]);
    assert_ok(&ours, "hopcore get /large");
    assert!(hop_payload(&ours) == o.stdout.as_slice(), "aiocoap and hopcore disagree on /large");

    let o = aio.client(&["-m", "POST", "--payload", "abc", "--content-format", "0", &format!("{base}/echo")]);
    assert_ok(&o, "POST /echo");
    assert_eq!(stdout(&o), "abc");

    // A payload larger than a block: aiocoap sends it with Block1, and the echo comes back
    // with Block2 (RFC 7959 §2.5, §3).
    let dir = TempDir::new("interop-aio-srv");
    let big = text_bytes(3000, 1);
    let file = dir.path().join("payload.txt");
    std::fs::write(&file, &big).unwrap();
    let o = aio.client(&["-m", "POST", "--payload", &format!("@{}", file.display()), &format!("{base}/echo")]);
    assert_ok(&o, "POST /echo with 3000 bytes");
    assert!(o.stdout == big, "Block1 echo differs ({} bytes back): {}", o.stdout.len(), stderr(&o));

    // Errors come back as such.
    let o = aio.client(&["-m", "DELETE", &format!("{base}/hello")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("4.05"), "{}", show(&o));
    let o = aio.client(&[&format!("{base}/nothing")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("4.04"), "{}", show(&o));
}

#[test]
fn aiocoap_observes_hopcore_server_time() {
    let Some(aio) = aiocoap() else { return };
    let server = spawn(&["server"]);
    let o = aio.observe(&format!("coap://{}/time", server.addr), 3, None);
    check_time_observation(&o, 3, "aiocoap observing hopcore /time");
}

// ---------------------------------------------------------------------------------------------
// 2. `hopcore get|put` against aiocoap-fileserver

#[test]
fn hopcore_against_aiocoap_fileserver() {
    let Some(aio) = aiocoap() else { return };
    let dir = TempDir::new("interop-files");
    let small = b"small file from the interop test".to_vec();
    let big = text_bytes(5000, 2);
    std::fs::write(dir.path().join("small.txt"), &small).unwrap();
    std::fs::write(dir.path().join("big.txt"), &big).unwrap();
    let fs = aio.fileserver(dir.path(), true);
    let base = format!("coap://{}", fs.addr);

    let o = hop(&["get", &format!("{base}/small.txt")]);
    assert_ok(&o, &format!("GET /small.txt\n{}", fs.logs()));
    assert!(hop_payload(&o) == small.as_slice(), "{}", show(&o));

    // 5000 bytes: Block2 reassembly, byte-exact.
    let o = hop(&["get", &format!("{base}/big.txt")]);
    assert_ok(&o, "GET /big.txt");
    assert_eq!(hop_payload(&o).len(), 5000, "{}", stderr(&o));
    assert!(hop_payload(&o) == big.as_slice(), "GET /big.txt: wrong bytes");

    // The directory listing is link-format.
    let o = hop(&["get", &format!("{base}/")]);
    assert_ok(&o, "GET /");
    assert!(stdout(&o).contains("</small.txt>") && stdout(&o).contains("</big.txt>"), "{}", show(&o));

    let o = hop(&["get", &format!("{base}/missing.txt")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("4.04"), "{}", show(&o));

    // PUT (the server runs with --write): a small file, and one that needs Block1.
    let up = TempDir::new("interop-upload");
    for (name, content) in [("new.txt", b"uploaded by hopcore".to_vec()), ("new-big.txt", text_bytes(3000, 3))] {
        let src = up.path().join(name);
        std::fs::write(&src, &content).unwrap();
        let o = hop(&["put", &format!("{base}/{name}"), "--payload-file", src.to_str().unwrap()]);
        assert_ok(&o, &format!("PUT /{name}"));
        let written = std::fs::read(dir.path().join(name)).unwrap_or_else(|e| panic!("{name} not on disk: {e}"));
        assert!(written == content, "PUT /{name}: file on disk differs ({} bytes)", written.len());
    }
}

// ---------------------------------------------------------------------------------------------
// 3. aiocoap-client through `hopcore proxy` to an aiocoap origin

#[test]
fn aiocoap_client_through_hopcore_proxy_to_aiocoap_origin() {
    let Some(aio) = aiocoap() else { return };
    let origin = aio.origin();
    let proxy = spawn(&["proxy"]);
    let via = format!("coap://{}", proxy.addr);
    let base = format!("coap://{}", origin.addr);

    // aiocoap addresses the proxy with Proxy-Scheme + Uri-Host + Uri-Port (RFC 7252 §6.4).
    let o = aio.client(&["--proxy", &via, &format!("{base}/hello")]);
    assert_ok(&o, &format!("GET /hello via hopcore proxy\n{}", origin.logs()));
    assert_eq!(stdout(&o), "Hello from aiocoap");

    let o = aio.client(&["--proxy", &via, &format!("{base}/large")]);
    assert_ok(&o, "GET /large via hopcore proxy");
    assert!(o.stdout == aiocoap_large(), "GET /large via hopcore proxy: {} bytes, wrong content", o.stdout.len());

    let o = aio.client(&["--proxy", &via, "-m", "POST", "--payload", "abc", &format!("{base}/echo")]);
    assert_ok(&o, "POST /echo via hopcore proxy");
    assert_eq!(stdout(&o), "abc");

    // Block1 on both legs, and the Block2 echo back.
    let dir = TempDir::new("interop-aio-proxy");
    let big = text_bytes(3000, 5);
    let file = dir.path().join("payload.txt");
    std::fs::write(&file, &big).unwrap();
    let o = aio.client(&[
        "--proxy",
        &via,
        "-m",
        "POST",
        "--payload",
        &format!("@{}", file.display()),
        &format!("{base}/echo"),
    ]);
    assert_ok(&o, "POST /echo with 3000 bytes via hopcore proxy");
    assert!(o.stdout == big, "Block1 echo via hopcore proxy differs ({} bytes back)", o.stdout.len());

    let o = aio.client(&["--proxy", &via, &format!("{base}/nothing")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("4.04"), "the origin's 4.04 is relayed: {}", show(&o));

    // Observe of an aiocoap resource through the proxy ("2026-11-23T17:47:06Z #1").
    let o = aio.observe(&format!("{base}/time"), 2, Some(&via));
    assert_ok(&o, "observe aiocoap /time via hopcore proxy");
    let lines = parse_observe(&stdout(&o));
    assert_eq!(lines.len(), 3, "{}", show(&o));
    assert!(lines.iter().all(|l| l.code == "2.05" && l.payload.contains(" #")), "{lines:?}");
    assert!(lines.windows(2).all(|w| w[0].obs < w[1].obs && w[0].payload != w[1].payload), "{lines:?}");
}

// ---------------------------------------------------------------------------------------------
// 4. `hopcore get` through aiocoap-proxy to an aiocoap origin

#[test]
fn hopcore_through_aiocoap_proxy_to_aiocoap_origin() {
    let Some(aio) = aiocoap() else { return };
    let origin = aio.origin();
    let proxy = aio.forward_proxy();
    let via = format!("coap://{}", proxy.addr);
    let base = format!("coap://{}", origin.addr);

    let o = hop(&["get", &format!("{base}/hello"), "--proxy", &via, "--proxy-scheme"]);
    assert_ok(&o, &format!("GET /hello via aiocoap-proxy\n{}\n{}", proxy.logs(), origin.logs()));
    assert_eq!(hop_payload(&o), b"Hello from aiocoap");

    let o = hop(&["get", &format!("{base}/large"), "--proxy", &via, "--proxy-scheme"]);
    assert_ok(&o, "GET /large via aiocoap-proxy");
    assert!(hop_payload(&o) == aiocoap_large(), "GET /large via aiocoap-proxy: {} bytes", o.stdout.len());

    let o = hop(&["post", &format!("{base}/echo"), "--payload", "xyz", "--proxy", &via, "--proxy-scheme"]);
    assert_ok(&o, "POST /echo via aiocoap-proxy");
    assert_eq!(hop_payload(&o), b"xyz");

    // Peer limitation (not a hopcore bug): aiocoap-proxy 0.4.17 does not implement Proxy-Uri
    // and answers 5.01 "URI splitting not implemented, please use Proxy-Scheme.". hopcore must
    // report that as an error response: exit 1, the code on stderr.
    let o = hop(&["get", &format!("{base}/hello"), "--proxy", &via]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("5.01"), "{}", show(&o));
}

// ---------------------------------------------------------------------------------------------
// 5. libcoap

#[test]
fn libcoap_client_against_hopcore_server() {
    let Some(()) = libcoap() else { return };
    let server = spawn(&["server"]);
    let base = format!("coap://{}", server.addr);
    let dir = TempDir::new("interop-libcoap-client");

    let o = coap_client(&[&format!("{base}/hello")]);
    assert_eq!(stdout(&o), "Hello from hopcore\n", "{}", show(&o));

    // Block2 with 64-byte blocks (the client asks for SZX 2 in its first request, RFC 7959
    // §2.4): 64 blocks, byte-exact against hopcore's own client.
    let out = dir.path().join("large.bin");
    let o = coap_client(&["-v", "7", "-b", "64", "-o", out.to_str().unwrap(), &format!("{base}/large")]);
    let large = std::fs::read(&out).unwrap_or_else(|e| panic!("no /large from libcoap ({e}): {}", show(&o)));
    let ours = hop(&["get", &format!("{base}/large")]);
    assert_ok(&ours, "hopcore get /large");
    assert_eq!(large.len(), 4096, "{}", show(&o));
    assert!(large == hop_payload(&ours), "libcoap and hopcore disagree on /large");
    // libcoap logs each message to stdout with -v 7, e.g. "t:ACK c:2.05 ... Block2:5/M/64".
    let blocks =
        stdout(&o).lines().filter(|l| l.contains("c:2.05") && l.contains("Block2:") && l.contains("/64 ]")).count();
    assert!(blocks == 64, "expected 64 Block2 responses of 64 bytes, saw {blocks}: {}", stdout(&o));

    // Block1 with 64-byte blocks (RFC 7959 §2.5) and the echo back.
    let payload = text_bytes(3000, 4);
    let src = dir.path().join("payload.txt");
    std::fs::write(&src, &payload).unwrap();
    let echoed = dir.path().join("echoed.bin");
    let o = coap_client(&[
        "-m",
        "post",
        "-b",
        "64",
        "-f",
        src.to_str().unwrap(),
        "-o",
        echoed.to_str().unwrap(),
        &format!("{base}/echo"),
    ]);
    let back = std::fs::read(&echoed).unwrap_or_default();
    assert!(back == payload, "Block1 echo differs ({} bytes back): {}", back.len(), show(&o));

    // Errors (libcoap exits 0 anyway; the code is on stderr).
    let o = coap_client(&[&format!("{base}/nothing")]);
    assert!(stderr(&o).contains("4.04"), "{}", show(&o));
}

#[test]
fn libcoap_client_through_hopcore_proxy_to_libcoap_server() {
    let Some(()) = libcoap() else { return };
    let origin = coap_server(&[]);
    let proxy = spawn(&["proxy"]);
    let via = format!("coap://{}", proxy.addr);
    let base = format!("coap://{}", origin.addr);
    let dir = TempDir::new("interop-libcoap-proxy");

    // coap-client-notls -P sends Proxy-Uri (RFC 7252 §5.10.2).
    let o = coap_client(&["-P", &via, &format!("{base}/")]);
    assert!(stdout(&o).starts_with("This is a test server made with libcoap"), "{}\n{}", show(&o), origin.logs());

    let out = dir.path().join("example_data.bin");
    let o = coap_client(&["-P", &via, "-o", out.to_str().unwrap(), &format!("{base}/example_data")]);
    let data = std::fs::read(&out).unwrap_or_default();
    assert!(data == libcoap_example_data(), "/example_data via hopcore proxy: {} bytes: {}", data.len(), show(&o));

    let o = coap_client(&["-P", &via, &format!("{base}/nothing")]);
    assert!(stderr(&o).contains("4.04"), "the origin's 4.04 is relayed: {}", show(&o));
}

#[test]
fn hopcore_against_libcoap_server() {
    let Some(()) = libcoap() else { return };
    let server = coap_server(&[]);
    let base = format!("coap://{}", server.addr);

    // 1500 bytes: Block2.
    let o = hop(&["get", &format!("{base}/example_data")]);
    assert_ok(&o, &format!("GET /example_data\n{}", server.logs()));
    assert!(hop_payload(&o) == libcoap_example_data(), "GET /example_data: {} bytes", o.stdout.len());

    // libcoap's /time notifies every second, e.g. "Nov 23 17:45:38".
    let o = hop(&["get", "--observe", "--count", "2", &format!("{base}/time")]);
    assert_ok(&o, "observe /time");
    let lines: Vec<String> = stdout(&o).lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "{}", show(&o));
    assert!(lines.iter().all(|l| l.len() == 15 && l.as_bytes()[9] == b':'), "{lines:?}");
    assert_ne!(lines[0], lines[1], "two notifications, two different times");

    let o = hop(&["get", &format!("{base}/nothing")]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("4.04"), "{}", show(&o));
}

#[test]
fn hopcore_through_libcoap_proxy_to_hopcore_server() {
    let Some(()) = libcoap() else { return };
    let server = spawn(&["server"]);
    // ",proxy.invalid": no upstream proxy, and a name for itself that never matches, so that
    // it really forwards (with "," alone it would answer from its own resources).
    let proxy = coap_server(&["-P", ",proxy.invalid"]);
    let via = format!("coap://{}", proxy.addr);
    let base = format!("coap://{}", server.addr);

    for form in [&[][..], &["--proxy-scheme"][..]] {
        let o = hop(&[&["get", &format!("{base}/hello"), "--proxy", &via][..], form].concat());
        assert_ok(&o, &format!("GET /hello via libcoap proxy {form:?}\n{}", proxy.logs()));
        assert_eq!(hop_payload(&o), b"Hello from hopcore", "{form:?}");

        let o = hop(&[&["get", &format!("{base}/large"), "--proxy", &via][..], form].concat());
        assert_ok(&o, &format!("GET /large via libcoap proxy {form:?}"));
        assert_eq!(hop_payload(&o).len(), 4096, "{form:?}: {}", show(&o));
    }
}

// ---------------------------------------------------------------------------------------------
// 6. Observe through `hopcore proxy`: two aiocoap observers at once

#[test]
fn two_aiocoap_observers_through_hopcore_proxy() {
    let Some(aio) = aiocoap() else { return };
    let server = spawn(&["server"]);
    let proxy = spawn(&["proxy"]);
    let via = format!("coap://{}", proxy.addr);
    let uri = format!("coap://{}/time", server.addr);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| aio.observe(&uri, 3, Some(&via)));
        let b = s.spawn(|| aio.observe(&uri, 3, Some(&via)));
        (a.join().expect("observer A"), b.join().expect("observer B"))
    });
    check_time_observation(&a, 3, "observer A");
    check_time_observation(&b, 3, "observer B");
}

/// RFC 7641 §5: two observers of one resource through the proxy make one registration at the
/// origin; §3.6: when both have deregistered (libcoap's client sends a GET with Observe 1 at
/// the end of `-s`), the proxy cancels its own. The libcoap origin's log (`-v 7`) tells.
#[test]
fn libcoap_observers_through_hopcore_proxy_share_one_upstream_registration() {
    let Some(()) = libcoap() else { return };
    let origin = coap_server(&["-v", "7"]);
    let proxy = spawn(&["proxy"]);
    let via = format!("coap://{}", proxy.addr);
    let uri = format!("coap://{}/time", origin.addr);
    let observe = || coap_client(&["-s", "4", "-w", "-P", &via, &uri]);
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(observe);
        let b = s.spawn(observe);
        (a.join().expect("observer A"), b.join().expect("observer B"))
    });
    for (who, o) in [("A", &a), ("B", &b)] {
        let lines: Vec<String> = stdout(o).lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
        assert!(lines.len() >= 3, "observer {who}: at least the response and 2 notifications: {}", show(o));
        assert!(lines.windows(2).all(|w| w[0] != w[1]), "observer {who}: {lines:?}");
    }
    let subscriptions = |logs: &str| logs.matches("create new subscription").count();
    let logs = origin.logs();
    assert_eq!(subscriptions(&logs), 1, "one upstream registration for two observers (RFC 7641 §5):\n{logs}");
    // The deregistration reaches the origin soon after the clients left.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !origin.logs().contains("removed subscription") {
        assert!(
            std::time::Instant::now() < deadline,
            "the proxy kept its upstream observation after both observers left (RFC 7641 §3.6):\n{}",
            origin.logs()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
