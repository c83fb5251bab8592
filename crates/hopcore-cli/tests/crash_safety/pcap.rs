//! A minimal reader of the pcap files `tcpdump -w` writes: the global header, the per-packet
//! records, the Linux "cooked" link headers of `-i any` (LINUX_SLL, LINUX_SLL2), and IPv4 +
//! UDP. Only what the crash-safety test needs; anything else is skipped (and counted).

use std::path::Path;

/// DLT_EN10MB: Ethernet (`-i lo` on some systems).
const LINKTYPE_ETHERNET: u32 = 1;
/// DLT_LINUX_SLL: 16-byte Linux cooked header, protocol type at offset 14.
const LINKTYPE_LINUX_SLL: u32 = 113;
/// DLT_LINUX_SLL2: 20-byte Linux cooked header, protocol type at offset 0.
const LINKTYPE_LINUX_SLL2: u32 = 276;

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;

/// One UDP datagram of the capture (IPv4 only).
#[derive(Debug, Clone)]
pub struct Datagram {
    /// Position in the capture (0-based, over all records).
    pub index: usize,
    /// Capture time: seconds and the fraction (micro- or nanoseconds, as the file says).
    pub ts: (u32, u32),
    pub src: ([u8; 4], u16),
    pub dst: ([u8; 4], u16),
    pub payload: Vec<u8>,
}

/// The datagrams of a capture, and how many records were not IPv4/UDP.
#[derive(Debug, Default)]
pub struct Capture {
    pub link_type: u32,
    pub records: usize,
    pub skipped: usize,
    pub datagrams: Vec<Datagram>,
}

fn u16_be(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

/// Reads a pcap file. A record cut short at the end (the writer was still running or was
/// stopped in the middle of a write) ends the capture without an error.
pub fn read(path: &Path) -> Result<Capture, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    parse(&bytes)
}

pub fn parse(bytes: &[u8]) -> Result<Capture, String> {
    let header = bytes.get(..24).ok_or_else(|| format!("no pcap global header ({} bytes)", bytes.len()))?;
    let magic = [header[0], header[1], header[2], header[3]];
    // 0xa1b2c3d4: microsecond timestamps, 0xa1b23c4d: nanoseconds; written in the writer's
    // byte order.
    let little = match magic {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => return Err(format!("not a pcap file (magic {magic:02x?})")),
    };
    let u32_at = |b: &[u8], at: usize| -> Option<u32> {
        let v: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
        Some(if little { u32::from_le_bytes(v) } else { u32::from_be_bytes(v) })
    };
    let link_type = u32_at(header, 20).unwrap_or_default() & 0x0fff_ffff;
    let mut capture = Capture { link_type, ..Capture::default() };
    let mut pos = 24;
    while let Some(record) = bytes.get(pos..pos + 16) {
        let (Some(sec), Some(frac), Some(incl)) = (u32_at(record, 0), u32_at(record, 4), u32_at(record, 8)) else {
            break;
        };
        let start = pos + 16;
        let Some(frame) = bytes.get(start..start + incl as usize) else {
            break; // cut short at the end
        };
        pos = start + incl as usize;
        let index = capture.records;
        capture.records += 1;
        match udp_of(link_type, frame) {
            Some((src, dst, payload)) => {
                capture.datagrams.push(Datagram { index, ts: (sec, frac), src, dst, payload: payload.to_vec() })
            }
            None => capture.skipped += 1,
        }
    }
    if !matches!(link_type, LINKTYPE_ETHERNET | LINKTYPE_LINUX_SLL | LINKTYPE_LINUX_SLL2) && capture.records > 0 {
        return Err(format!("unsupported link type {link_type} (expected 113 LINUX_SLL or 276 LINUX_SLL2)"));
    }
    Ok(capture)
}

type Endpoint = ([u8; 4], u16);

/// The UDP endpoints and payload of one link-layer frame, if it is IPv4/UDP (unfragmented).
fn udp_of(link_type: u32, frame: &[u8]) -> Option<(Endpoint, Endpoint, &[u8])> {
    let (ethertype, ip) = match link_type {
        LINKTYPE_LINUX_SLL => (u16_be(frame, 14)?, frame.get(16..)?),
        LINKTYPE_LINUX_SLL2 => (u16_be(frame, 0)?, frame.get(20..)?),
        LINKTYPE_ETHERNET => (u16_be(frame, 12)?, frame.get(14..)?),
        _ => return None,
    };
    if ethertype != ETHERTYPE_IPV4 {
        return None;
    }
    let first = *ip.first()?;
    if first >> 4 != 4 {
        return None;
    }
    let ihl = usize::from(first & 0x0f) * 4;
    let total = usize::from(u16_be(ip, 2)?);
    // More-fragments flag or a fragment offset: not a whole datagram.
    if u16_be(ip, 6)? & 0x3fff != 0 || *ip.get(9)? != IPPROTO_UDP || ihl < 20 {
        return None;
    }
    let ip = ip.get(..total.min(ip.len()))?;
    let src_ip: [u8; 4] = ip.get(12..16)?.try_into().ok()?;
    let dst_ip: [u8; 4] = ip.get(16..20)?.try_into().ok()?;
    let udp = ip.get(ihl..)?;
    let src_port = u16_be(udp, 0)?;
    let dst_port = u16_be(udp, 2)?;
    let len = usize::from(u16_be(udp, 4)?);
    let payload = udp.get(8..len.max(8))?;
    Some(((src_ip, src_port), (dst_ip, dst_port), payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hand-made capture: global header, one LINUX_SLL2 record with IPv4/UDP "hi".
    #[test]
    fn parses_sll2_udp() {
        let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0];
        f.extend_from_slice(&276u32.to_le_bytes());
        let mut frame = vec![0x08, 0x00, 0, 0, 0, 0, 0, 1, 3, 4, 0, 6, 0, 0, 0, 0, 0, 0, 0, 0];
        let udp = [0x12, 0x34, 0x16, 0x33, 0, 10, 0, 0, b'h', b'i'];
        let mut ip = vec![0x45, 0, 0, 30, 0, 0, 0x40, 0, 64, 17, 0, 0, 127, 0, 0, 1, 127, 0, 0, 1];
        ip.extend_from_slice(&udp);
        frame.extend_from_slice(&ip);
        f.extend_from_slice(&1u32.to_le_bytes());
        f.extend_from_slice(&2u32.to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&(frame.len() as u32).to_le_bytes());
        f.extend_from_slice(&frame);
        // A truncated second record is ignored.
        f.extend_from_slice(&[1, 0, 0]);
        let c = parse(&f).expect("pcap");
        assert_eq!((c.link_type, c.records, c.skipped), (276, 1, 0));
        let d = &c.datagrams[0];
        assert_eq!((d.src.1, d.dst.1, d.payload.as_slice(), d.ts), (0x1234, 5683, &b"hi"[..], (1, 2)));
    }
}
