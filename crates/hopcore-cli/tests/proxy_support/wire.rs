//! Wire evidence: `tcpdump -i any` on a set of UDP ports, the pcap read by the crash-safety
//! test's reader (`crash_safety/pcap.rs`), and a CoAP decoder (RFC 7252 §3) and OSCORE option
//! decoder (RFC 8613 §6.1) written here from the RFCs, sharing no code with hopcore: what is
//! asserted about the datagrams does not depend on the codec under test.

#[allow(dead_code)]
#[path = "../crash_safety/pcap.rs"]
pub mod pcap;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Option numbers (RFC 7252 §12.2, RFC 8613 §13.2, RFC 8768).
pub const URI_HOST: u16 = 3;
pub const OBSERVE: u16 = 6;
pub const URI_PORT: u16 = 7;
pub const OSCORE: u16 = 9;
pub const URI_PATH: u16 = 11;
pub const MAX_AGE: u16 = 14;
pub const URI_QUERY: u16 = 15;
pub const HOP_LIMIT: u16 = 16;
pub const BLOCK2: u16 = 23;
pub const PROXY_URI: u16 = 35;
pub const PROXY_SCHEME: u16 = 39;

pub fn option_name(n: u16) -> String {
    match n {
        1 => "If-Match".into(),
        URI_HOST => "Uri-Host".into(),
        4 => "ETag".into(),
        OBSERVE => "Observe".into(),
        URI_PORT => "Uri-Port".into(),
        OSCORE => "OSCORE".into(),
        URI_PATH => "Uri-Path".into(),
        12 => "Content-Format".into(),
        MAX_AGE => "Max-Age".into(),
        URI_QUERY => "Uri-Query".into(),
        HOP_LIMIT => "Hop-Limit".into(),
        17 => "Accept".into(),
        BLOCK2 => "Block2".into(),
        27 => "Block1".into(),
        28 => "Size2".into(),
        PROXY_URI => "Proxy-Uri".into(),
        PROXY_SCHEME => "Proxy-Scheme".into(),
        60 => "Size1".into(),
        252 => "Echo".into(),
        258 => "No-Response".into(),
        n => format!("#{n}"),
    }
}

/// One decoded CoAP message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Coap {
    /// 0 CON, 1 NON, 2 ACK, 3 RST.
    pub mtype: u8,
    /// (class, detail), e.g. (0, 2) for POST, (2, 4) for 2.04.
    pub code: (u8, u8),
    pub mid: u16,
    pub token: Vec<u8>,
    pub options: Vec<(u16, Vec<u8>)>,
    pub payload: Vec<u8>,
}

impl Coap {
    pub fn is_request(&self) -> bool {
        self.code.0 == 0 && self.code.1 != 0
    }
    pub fn is_response(&self) -> bool {
        self.code.0 >= 2
    }
    pub fn numbers(&self) -> Vec<u16> {
        self.options.iter().map(|(n, _)| *n).collect()
    }
    pub fn has(&self, n: u16) -> bool {
        self.options.iter().any(|(m, _)| *m == n)
    }
    pub fn get(&self, n: u16) -> Option<&[u8]> {
        self.options.iter().find(|(m, _)| *m == n).map(|(_, v)| v.as_slice())
    }
    /// The option names, for messages: `[OSCORE, Uri-Host]`.
    pub fn names(&self) -> String {
        let names: Vec<String> = self.numbers().into_iter().map(option_name).collect();
        format!("[{}]", names.join(", "))
    }
}

impl fmt::Display for Coap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = ["CON", "NON", "ACK", "RST"][usize::from(self.mtype & 3)];
        write!(f, "{t} {}.{:02} mid={} options=", self.code.0, self.code.1, self.mid)?;
        let opts: Vec<String> = self
            .options
            .iter()
            .map(|(n, v)| format!("{}={}", option_name(*n), v.iter().map(|b| format!("{b:02x}")).collect::<String>()))
            .collect();
        write!(f, "[{}] payload={}B", opts.join(", "), self.payload.len())
    }
}

/// Decodes a CoAP datagram (RFC 7252 §3, §3.1); `None` if it is not well-formed CoAP.
pub fn decode(d: &[u8]) -> Option<Coap> {
    let (&first, rest) = d.split_first()?;
    if first >> 6 != 1 {
        return None;
    }
    let tkl = usize::from(first & 0x0f);
    if tkl > 8 || rest.len() < 3 + tkl {
        return None;
    }
    let code = (rest[0] >> 5, rest[0] & 0x1f);
    let mid = u16::from_be_bytes([rest[1], rest[2]]);
    let token = rest[3..3 + tkl].to_vec();
    let mut p = &rest[3 + tkl..];
    let mut options = Vec::new();
    let mut number: u16 = 0;
    let mut payload = Vec::new();
    while let Some((&b, after)) = p.split_first() {
        if b == 0xff {
            if after.is_empty() {
                return None; // a payload marker followed by nothing (§3)
            }
            payload = after.to_vec();
            break;
        }
        p = after;
        let ext = |nibble: u8, p: &mut &[u8]| -> Option<u16> {
            match nibble {
                0..=12 => Some(u16::from(nibble)),
                13 => {
                    let (&x, r) = p.split_first()?;
                    *p = r;
                    Some(u16::from(x) + 13)
                }
                14 => {
                    let x = p.get(..2)?;
                    let v = u16::from_be_bytes([x[0], x[1]]).checked_add(269)?;
                    *p = &p[2..];
                    Some(v)
                }
                _ => None,
            }
        };
        let delta = ext(b >> 4, &mut p)?;
        let len = usize::from(ext(b & 0x0f, &mut p)?);
        number = number.checked_add(delta)?;
        let value = p.get(..len)?.to_vec();
        p = &p[len..];
        options.push((number, value));
    }
    Some(Coap { mtype: (first >> 4) & 3, code, mid, token, options, payload })
}

/// The OSCORE option value (RFC 8613 §6.1).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OscoreValue {
    pub partial_iv: Option<Vec<u8>>,
    pub kid_context: Option<Vec<u8>>,
    pub kid: Option<Vec<u8>>,
}

pub fn decode_oscore(v: &[u8]) -> Option<OscoreValue> {
    let Some((&flags, mut rest)) = v.split_first() else { return Some(OscoreValue::default()) };
    // Bits 5-7 are reserved (extension flag and unassigned): not used by RFC 8613 senders.
    if flags & 0xe0 != 0 {
        return None;
    }
    let n = usize::from(flags & 0x07);
    if n > 5 {
        return None;
    }
    let mut out = OscoreValue::default();
    if n > 0 {
        out.partial_iv = Some(rest.get(..n)?.to_vec());
        rest = &rest[n..];
    }
    if flags & 0x10 != 0 {
        let (&s, r) = rest.split_first()?;
        out.kid_context = Some(r.get(..usize::from(s))?.to_vec());
        rest = &r[usize::from(s)..];
    }
    if flags & 0x08 != 0 {
        out.kid = Some(rest.to_vec());
    } else if !rest.is_empty() {
        return None;
    }
    Some(out)
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// One captured CoAP datagram on loopback.
#[derive(Debug, Clone)]
pub struct Seen {
    pub src: u16,
    pub dst: u16,
    pub coap: Coap,
    pub raw: Vec<u8>,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} -> {}: {}", self.src, self.dst, self.coap)
    }
}

/// `tcpdump -i any -n -U -w FILE 'udp and (port A or port B ...)'`, capturing.
pub struct Tcpdump {
    child: Child,
    file: PathBuf,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Drop for Tcpdump {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Tcpdump {
    /// Starts the capture and waits until tcpdump says it is listening. Failing to start is a
    /// test failure: the caller is gated on HOPCORE_PEERS_VENV, which promises tcpdump.
    pub fn start(file: &Path, ports: &[u16]) -> Tcpdump {
        let tcpdump = super::find_tool("tcpdump")
            .expect("HOPCORE_PEERS_VENV is set but tcpdump is not installed (scripts/setup-peers.sh installs it)");
        let filter =
            format!("udp and ({})", ports.iter().map(|p| format!("port {p}")).collect::<Vec<_>>().join(" or "));
        let mut child = Command::new(&tcpdump)
            .args(["-i", "any", "-n", "-U", "--immediate-mode", "-B", "65536", "-w"])
            .arg(file)
            .arg(&filter)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", tcpdump.display()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let rx = super::lines_of(child.stderr.take().expect("stderr"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(l) = rx.recv_timeout(Duration::from_millis(50)) {
                let ready = l.contains("listening on");
                lines.lock().unwrap().push(l);
                if ready {
                    break;
                }
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                std::thread::sleep(Duration::from_millis(100));
                while let Ok(l) = rx.try_recv() {
                    lines.lock().unwrap().push(l);
                }
                let _ = child.kill();
                panic!(
                    "the capture could not start (tcpdump {filter:?}: {}); capturing needs root or CAP_NET_RAW.\n{}",
                    exited.map_or("no \"listening on\" within 10 s".to_string(), |s| format!("exited with {s}")),
                    lines.lock().unwrap().join("\n")
                );
            }
        }
        let keep = Arc::clone(&lines);
        std::thread::spawn(move || {
            for l in rx {
                keep.lock().unwrap().push(l);
            }
        });
        // "listening on" comes once the capture is open; give the kernel filter a moment.
        std::thread::sleep(Duration::from_millis(200));
        Tcpdump { child, file: file.to_path_buf(), stderr: lines }
    }

    /// Stops the capture (SIGINT: tcpdump flushes) and returns every CoAP datagram in order.
    /// On loopback `-i any` sees each datagram once; byte-identical copies of the same
    /// direction in a row (should an interface show it twice) are dropped.
    pub fn stop(mut self) -> (Vec<Seen>, String) {
        // Let the last datagrams reach the capture.
        std::thread::sleep(Duration::from_millis(300));
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-INT", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && matches!(self.child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::thread::sleep(Duration::from_millis(50));
        let said = self.stderr.lock().unwrap().join("\n");
        let capture = pcap::read(&self.file).unwrap_or_else(|e| panic!("{e}\ntcpdump said:\n{said}"));
        let mut seen: Vec<Seen> = Vec::new();
        for d in capture.datagrams {
            let Some(coap) = decode(&d.payload) else {
                panic!("a datagram {} -> {} that is not CoAP: {}", d.src.1, d.dst.1, hex(&d.payload));
            };
            if seen.last().is_some_and(|s| s.src == d.src.1 && s.dst == d.dst.1 && s.raw == d.payload) {
                continue;
            }
            seen.push(Seen { src: d.src.1, dst: d.dst.1, coap, raw: d.payload });
        }
        (seen, said)
    }
}

/// Cross-checks the decoder against tshark's CoAP dissector (`-d udp.port==P,coap` for every
/// port of the capture): the same set of (source port, destination port, option names).
pub fn tshark_agrees(file: &Path, seen: &[Seen]) {
    let tshark = super::find_tool("tshark")
        .expect("HOPCORE_PEERS_VENV is set but tshark is not installed (scripts/setup-peers.sh installs it)");
    let mut ports: Vec<u16> = seen.iter().flat_map(|s| [s.src, s.dst]).collect();
    ports.sort_unstable();
    ports.dedup();
    let mut cmd = Command::new(&tshark);
    cmd.arg("-r").arg(file);
    for p in &ports {
        cmd.args(["-d", &format!("udp.port=={p},coap")]);
    }
    cmd.args(["-T", "fields", "-E", "separator=|", "-e", "udp.srcport", "-e", "udp.dstport", "-e", "coap.opt.name"]);
    let o = super::run_bounded(&mut cmd, Duration::from_secs(60));
    assert!(o.status.success(), "{}", super::show(&format!("{cmd:?}"), &o));
    let mut theirs: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut f = l.split('|');
            let (src, dst, names) = (f.next().unwrap_or(""), f.next().unwrap_or(""), f.next().unwrap_or(""));
            // "#1: OSCORE,#2: Hop-Limit" -> "OSCORE,Hop-Limit"
            let names: Vec<&str> =
                names.split(',').filter(|n| !n.is_empty()).map(|n| n.split_once(": ").map_or(n, |(_, x)| x)).collect();
            format!("{src} -> {dst} [{}]", names.join(", "))
        })
        .collect();
    let mut ours: Vec<String> = seen.iter().map(|s| format!("{} -> {} {}", s.src, s.dst, s.coap.names())).collect();
    for v in [&mut theirs, &mut ours] {
        v.sort();
        v.dedup();
    }
    assert_eq!(ours, theirs, "the decoder and tshark disagree");
}

/// Every datagram, one per line, for failure messages.
pub fn listing(seen: &[Seen]) -> String {
    seen.iter().map(|s| format!("  {s}\n")).collect()
}

/// The decoded OSCORE option of a message, which must have exactly one.
pub fn single_oscore(s: &Seen) -> OscoreValue {
    let values: Vec<&[u8]> = s.coap.options.iter().filter(|(n, _)| *n == OSCORE).map(|(_, v)| v.as_slice()).collect();
    assert_eq!(values.len(), 1, "exactly one OSCORE option in clear: {s}");
    decode_oscore(values[0]).unwrap_or_else(|| panic!("malformed OSCORE option: {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_options_with_extended_deltas() {
        // CON POST mid 0x1234, token 0xab, Uri-Host "h" (3), OSCORE 09 14 (9), Proxy-Scheme
        // "coap" (39: delta 30 = 13 + 17), payload "x".
        let d =
            [0x41, 0x02, 0x12, 0x34, 0xab, 0x31, b'h', 0x62, 0x09, 0x14, 0xd4, 17, b'c', b'o', b'a', b'p', 0xff, b'x'];
        let m = decode(&d).expect("CoAP");
        assert_eq!((m.mtype, m.code, m.mid, m.token.as_slice()), (0, (0, 2), 0x1234, &[0xab][..]));
        assert_eq!(m.numbers(), vec![URI_HOST, OSCORE, PROXY_SCHEME]);
        assert_eq!(m.get(PROXY_SCHEME), Some(&b"coap"[..]));
        assert_eq!(m.payload, b"x");
        assert!(decode(&[0x40, 0x01, 0, 1, 0xff]).is_none(), "payload marker without payload");
        // Option 258 (No-Response): delta nibble 13 + one byte (245); then option 300: delta 42,
        // nibble 13 + 29; option 600: delta 300, nibble 14 + two bytes (300 - 269 = 31).
        let d = [0x50, 0x01, 0, 2, 0xd1, 245, 2, 0xd0, 29, 0xe0, 0, 31];
        assert_eq!(decode(&d).expect("CoAP").numbers(), vec![258, 300, 600]);
        assert!(decode(&[0x50, 0x01, 0, 2, 0xf0]).is_none(), "delta nibble 15 is reserved");
    }

    #[test]
    fn decodes_oscore_values() {
        // RFC 8613 C.5's request: flags 09 (n = 1, k), Partial IV 14, kid 00.
        assert_eq!(
            decode_oscore(&[0x09, 0x14, 0x00]),
            Some(OscoreValue { partial_iv: Some(vec![0x14]), kid_context: None, kid: Some(vec![0x00]) })
        );
        // C.6: 19 14 08 37cbf3210017a2d3 (n = 1, h, k), kid empty.
        let mut v = vec![0x19, 0x14, 0x08];
        v.extend_from_slice(&[0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3]);
        let o = decode_oscore(&v).expect("value");
        assert_eq!(o.kid_context.as_deref(), Some(&[0x37, 0xcb, 0xf3, 0x21, 0x00, 0x17, 0xa2, 0xd3][..]));
        assert_eq!(o.kid.as_deref(), Some(&[][..]));
        // Empty value: a response using the request's nonce.
        assert_eq!(decode_oscore(&[]), Some(OscoreValue::default()));
    }
}
