//! Block-wise transfers, server side (RFC 7959): Block2 slicing of responses, Block1
//! reassembly of request bodies, and the short-lived response cache for Block2 transfers of
//! responses to unsafe methods (RFC 7959 §2.7).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hopcore_codec::block::{szx_for_size, BlockError};
use hopcore_codec::registry::{is_critical, is_no_cache_key};
use hopcore_codec::{num, BlockValue, Code, Message};
use tracing::{debug, trace};

use super::resource::diagnostic;

/// Reads a Block1/Block2 option. `Ok(None)` if absent.
pub(crate) fn block_option(m: &Message, number: u16) -> Result<Option<BlockValue>, BlockError> {
    match m.options.get(number) {
        None => Ok(None),
        Some(v) => BlockValue::decode(v).map(Some),
    }
}

/// An entity tag for a representation: 8 bytes of FNV-1a 64 (RFC 7252 §5.10.6: opaque, 1-8
/// bytes; RFC 7959 §2.4: the server SHOULD include an ETag in each block-wise response).
pub(crate) fn etag_for(payload: &[u8]) -> [u8; 8] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in payload {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.to_be_bytes()
}

/// Cuts the block the client asked for (or the first one) out of a full response, RFC 7959
/// §2.2-§2.4. `requested` is the Block2 option of the request (control usage); `preferred_szx`
/// is the server's block size. Leaves error responses, responses that already carry Block2 and
/// small responses to requests without Block2 untouched.
///
/// Returns the error response to send instead when the requested block lies past the end.
pub(crate) fn apply_block2(
    resp: &mut Message,
    requested: Option<BlockValue>,
    size2_requested: bool,
    preferred_szx: u8,
) -> Result<(), Message> {
    if !resp.code.is_success() || resp.options.contains(num::BLOCK2) {
        return Ok(());
    }
    // RFC 7959 §2.4: "A server MUST use the block size indicated or a smaller size."
    let szx = requested.map_or(preferred_szx, |b| b.szx.min(preferred_szx));
    let size = 1usize << (szx + 4);
    let total = resp.payload.len();
    if requested.is_none() && total <= size {
        return Ok(());
    }
    // The byte position follows from the request's own NUM and SZX (RFC 7959 §2.2); it is a
    // multiple of our (possibly smaller) size, so it maps to a whole block number.
    let offset = requested.map_or(0, |b| b.offset());
    if offset > 0 && offset >= total {
        // RFC 7959 names no code for a NUM past the end. Block2 is critical (RFC 7959 §2.1:
        // "it MUST be processed (or the message rejected)"), and a critical option that cannot
        // be processed is answered with 4.02 Bad Option (RFC 7252 §5.4.1).
        return Err(diagnostic(Code::BAD_OPTION, format!("Block2 starts at byte {offset}; the body has {total}")));
    }
    let end = (offset + size).min(total);
    let more = end < total;
    let Ok(block) = BlockValue::new((offset / size) as u32, more, size) else {
        // NUM would exceed 20 bits (RFC 7959 §2.2): the representation is too large to serve.
        return Err(diagnostic(Code::INTERNAL_SERVER_ERROR, "representation too large for Block2"));
    };
    if !resp.options.contains(num::ETAG) {
        // RFC 7959 §2.4: an ETag lets the client detect a representation that changed between
        // blocks.
        resp.options.set(num::ETAG, &etag_for(&resp.payload));
    }
    resp.payload = resp.payload[offset..end].to_vec();
    resp.options.set_uint(num::BLOCK2, block.to_uint());
    // RFC 7959 §4: Size2 indicates the total size, preferably with the first block; and it
    // answers a size request (Size2: 0 in the request).
    if block.num == 0 || size2_requested {
        resp.options.set_uint(num::SIZE2, total.min(u32::MAX as usize) as u32);
    }
    Ok(())
}

/// Identifies one block-wise operation: the "matchable" criterion of RFC 9175 §1.1 (same
/// endpoint, same code, same options except block-wise options, Request-Tag and elective
/// NoCacheKey options) plus the list of Request-Tag values (RFC 9175 §3.3: messages with
/// different Request-Tag lists are not part of the same operation).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct TransferKey {
    peer: SocketAddr,
    code: Code,
    options: Vec<u8>,
    request_tags: Vec<Vec<u8>>,
}

impl TransferKey {
    pub(crate) fn new(peer: SocketAddr, m: &Message) -> TransferKey {
        let mut options = Vec::new();
        for o in m.options.iter() {
            let skip = matches!(
                o.number,
                num::BLOCK1 | num::BLOCK2 | num::SIZE1 | num::SIZE2 | num::REQUEST_TAG
                    // Checked separately (RFC 7959 §2.3), so a mismatch is reported as such.
                    | num::CONTENT_FORMAT
                    // RFC 7959 §2.10: If-None-Match only goes with NUM 0; If-Match is checked on
                    // each block that carries it.
                    | num::IF_MATCH | num::IF_NONE_MATCH
                    | num::OBSERVE
            ) || (!is_critical(o.number) && is_no_cache_key(o.number));
            if !skip {
                options.extend_from_slice(&o.number.to_be_bytes());
                options.extend_from_slice(&(o.value.len() as u32).to_be_bytes());
                options.extend_from_slice(o.value);
            }
        }
        let request_tags = m.options.get_all(num::REQUEST_TAG).map(<[u8]>::to_vec).collect();
        TransferKey { peer, code: m.code, options, request_tags }
    }
}

/// Limits of the Block1 reassembly state.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    pub max_body: usize,
    pub max_transfers: usize,
    pub lifetime: Duration,
    pub preferred_szx: u8,
}

struct Partial {
    body: Vec<u8>,
    content_format: Option<u32>,
    expires: Instant,
}

/// What to do with one Block1 request.
#[derive(Debug)]
pub(crate) enum Block1Outcome {
    /// A non-final block was stored: answer 2.31 Continue with this Block1 (RFC 7959 §2.3).
    Continue(BlockValue),
    /// The final block arrived: process the whole body, and echo this Block1 in the response.
    Complete { body: Vec<u8>, block: BlockValue },
    /// Answer with this error.
    Error(Message),
}

/// Reassembles block-wise request bodies (RFC 7959 §2.5), bounded in count, size and time.
pub(crate) struct Block1Assembler {
    limits: Limits,
    partial: HashMap<TransferKey, Partial>,
}

impl Block1Assembler {
    pub(crate) fn new(limits: Limits) -> Block1Assembler {
        Block1Assembler { limits, partial: HashMap::new() }
    }

    pub(crate) fn len(&self) -> usize {
        self.partial.len()
    }

    /// Drops transfers whose last block is older than the lifetime (RFC 7959 §2.5: servers may
    /// discard a partial body EXCHANGE_LIFETIME after the most recent block).
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.partial.retain(|_, p| p.expires > now);
    }

    fn too_large(&self) -> Message {
        // RFC 7252 §5.9.2.9 / RFC 7959 §2.9.3: 4.13 with Size1 giving the maximum.
        let mut m = diagnostic(Code::REQUEST_ENTITY_TOO_LARGE, "request body too large");
        m.options.set_uint(num::SIZE1, self.limits.max_body.min(u32::MAX as usize) as u32);
        m
    }

    /// Takes one block of a request body.
    pub(crate) fn offer(
        &mut self,
        now: Instant,
        key: TransferKey,
        block: BlockValue,
        payload: &[u8],
        content_format: Option<u32>,
        size1: Option<u32>,
    ) -> Block1Outcome {
        let size = block.size();
        // RFC 7959 §2.3: "The block size implied by SZX MUST match the size of the payload in
        // bytes, if the M bit is set."
        if block.more && payload.len() != size {
            self.partial.remove(&key);
            return Block1Outcome::Error(diagnostic(
                Code::BAD_REQUEST,
                format!("Block1 with M set carries {} bytes, not {size}", payload.len()),
            ));
        }
        // RFC 7959 §2.3: the server states its preferred (same or smaller) size in control usage.
        let echo_szx = block.szx.min(self.limits.preferred_szx);
        let echo = |more| BlockValue { num: block.num, more, szx: echo_szx };
        let offset = block.offset();
        if block.num == 0 {
            // RFC 7959 §2.5: a new block-wise sequence overwrites any older one.
            self.partial.remove(&key);
            // RFC 7959 §4: Size1 announces the total size; refuse early (§2.9.3).
            if size1.is_some_and(|s| s as usize > self.limits.max_body) || payload.len() > self.limits.max_body {
                return Block1Outcome::Error(self.too_large());
            }
            if !block.more {
                return Block1Outcome::Complete { body: payload.to_vec(), block: echo(false) };
            }
            self.sweep(now);
            if self.partial.len() >= self.limits.max_transfers {
                // RFC 7959 §2.5: 4.13 "can be returned at any time by a server that does not
                // currently have the resources to store blocks".
                debug!(pending = self.partial.len(), "no room for another block-wise request body");
                return Block1Outcome::Error(self.too_large());
            }
            let mut body = Vec::with_capacity(size1.map_or(2 * size, |s| s as usize).min(self.limits.max_body));
            body.extend_from_slice(payload);
            self.partial.insert(key, Partial { body, content_format, expires: now + self.limits.lifetime });
            return Block1Outcome::Continue(echo(true));
        }
        let Some(p) = self.partial.get_mut(&key) else {
            // RFC 7959 §2.9.2: the blocks needed to proceed were not received (or discarded).
            return Block1Outcome::Error(diagnostic(
                Code::REQUEST_ENTITY_INCOMPLETE,
                format!("Block1 NUM {} without the earlier blocks", block.num),
            ));
        };
        if p.expires <= now || offset != p.body.len() {
            // RFC 7959 §2.5: 4.08 for a block that is not in sequence.
            let have = p.body.len();
            self.partial.remove(&key);
            return Block1Outcome::Error(diagnostic(
                Code::REQUEST_ENTITY_INCOMPLETE,
                format!("Block1 at byte {offset}, expected byte {have}"),
            ));
        }
        if p.content_format != content_format {
            // RFC 7959 §2.3: blocks with mismatching Content-Format MUST NOT be assembled into
            // one request; this leads to 4.08.
            self.partial.remove(&key);
            return Block1Outcome::Error(diagnostic(
                Code::REQUEST_ENTITY_INCOMPLETE,
                "Content-Format changed between blocks",
            ));
        }
        if p.body.len() + payload.len() > self.limits.max_body
            || size1.is_some_and(|s| s as usize > self.limits.max_body)
        {
            self.partial.remove(&key);
            return Block1Outcome::Error(self.too_large());
        }
        p.body.extend_from_slice(payload);
        p.expires = now + self.limits.lifetime;
        trace!(num = block.num, have = p.body.len(), more = block.more, "Block1 stored");
        if block.more {
            return Block1Outcome::Continue(echo(true));
        }
        match self.partial.remove(&key) {
            Some(p) => Block1Outcome::Complete { body: p.body, block: echo(false) },
            None => Block1Outcome::Error(diagnostic(Code::INTERNAL_SERVER_ERROR, "transfer state lost")),
        }
    }
}

/// Full responses to unsafe requests that are being fetched block by block (RFC 7959 §2.7:
/// re-running a POST for each block would repeat its effect). Bounded and expiring.
pub(crate) struct ResponseCache {
    max: usize,
    lifetime: Duration,
    entries: HashMap<TransferKey, (Message, Instant)>,
}

impl ResponseCache {
    pub(crate) fn new(max: usize, lifetime: Duration) -> ResponseCache {
        ResponseCache { max, lifetime, entries: HashMap::new() }
    }
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
    pub(crate) fn sweep(&mut self, now: Instant) {
        self.entries.retain(|_, (_, t)| *t > now);
    }
    pub(crate) fn insert(&mut self, now: Instant, key: TransferKey, response: Message) {
        self.sweep(now);
        if self.entries.len() >= self.max && !self.entries.contains_key(&key) {
            // Evict the entry closest to expiry.
            if let Some(k) = self.entries.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| k.clone()) {
                self.entries.remove(&k);
            }
        }
        if self.max > 0 {
            self.entries.insert(key, (response, now + self.lifetime));
        }
    }
    pub(crate) fn get(&mut self, now: Instant, key: &TransferKey) -> Option<Message> {
        match self.entries.get_mut(key) {
            Some((m, t)) if *t > now => {
                *t = now + self.lifetime;
                Some(m.clone())
            }
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }
    pub(crate) fn remove(&mut self, key: &TransferKey) {
        self.entries.remove(key);
    }
}

/// The SZX for a configured block size (clamped to 16..=1024, RFC 7959 §2.2).
pub(crate) fn preferred_szx(block_size: usize) -> u8 {
    szx_for_size(block_size.clamp(16, 1024))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bv(num: u32, more: bool, size: usize) -> BlockValue {
        BlockValue::new(num, more, size).unwrap()
    }

    fn limits() -> Limits {
        Limits { max_body: 4096, max_transfers: 2, lifetime: Duration::from_secs(10), preferred_szx: 6 }
    }

    fn key(peer: &str, path: &str) -> TransferKey {
        let mut m = Message::request(Code::POST);
        m.set_path(path);
        TransferKey::new(peer.parse().unwrap(), &m)
    }

    #[test]
    fn block2_slices() {
        let body: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        let full = Message::response(Code::CONTENT).with_payload(body.clone());
        let mut m = full.clone();
        apply_block2(&mut m, None, false, 6).unwrap();
        assert_eq!(m.payload, &body[..1024]);
        assert_eq!(BlockValue::decode(m.options.get(num::BLOCK2).unwrap()).unwrap(), bv(0, true, 1024));
        assert_eq!(m.options.get_uint(num::SIZE2), Some(3000));
        assert_eq!(m.options.get(num::ETAG), Some(&etag_for(&body)[..]));
        let mut m = full.clone();
        apply_block2(&mut m, Some(bv(2, false, 1024)), false, 6).unwrap();
        assert_eq!(m.payload, &body[2048..]);
        assert_eq!(BlockValue::decode(m.options.get(num::BLOCK2).unwrap()).unwrap(), bv(2, false, 1024));
        assert!(!m.options.contains(num::SIZE2));
        // Server prefers 256: a request for 1024-byte block 1 gets 256-byte block 4.
        let mut m = full.clone();
        apply_block2(&mut m, Some(bv(1, false, 1024)), true, 4).unwrap();
        assert_eq!(m.payload, &body[1024..1280]);
        assert_eq!(BlockValue::decode(m.options.get(num::BLOCK2).unwrap()).unwrap(), bv(4, true, 256));
        assert_eq!(m.options.get_uint(num::SIZE2), Some(3000));
        // Past the end.
        let mut m = full.clone();
        assert_eq!(apply_block2(&mut m, Some(bv(3, false, 1024)), false, 6).unwrap_err().code, Code::BAD_OPTION);
        // Small body, no Block2 asked: untouched. Small body with Block2 asked: one block.
        let small = Message::response(Code::CONTENT).with_payload("hi");
        let mut m = small.clone();
        apply_block2(&mut m, None, false, 6).unwrap();
        assert_eq!(m, small);
        let mut m = small.clone();
        apply_block2(&mut m, Some(bv(0, false, 16)), false, 6).unwrap();
        assert_eq!(BlockValue::decode(m.options.get(num::BLOCK2).unwrap()).unwrap(), bv(0, false, 16));
        // Empty body with Block2 NUM 0 is fine; errors are untouched.
        let mut m = Message::response(Code::CHANGED);
        apply_block2(&mut m, Some(bv(0, false, 64)), false, 6).unwrap();
        let mut e = Message::response(Code::NOT_FOUND).with_payload(vec![b'x'; 2000]);
        apply_block2(&mut e, None, false, 6).unwrap();
        assert_eq!(e.payload.len(), 2000);
    }

    #[test]
    fn block1_in_order() {
        let mut a = Block1Assembler::new(limits());
        let now = Instant::now();
        let k = key("127.0.0.1:1", "/x");
        assert!(
            matches!(a.offer(now, k.clone(), bv(0, true, 16), &[1; 16], None, None), Block1Outcome::Continue(b) if b == bv(0, true, 16))
        );
        assert!(matches!(a.offer(now, k.clone(), bv(1, true, 16), &[2; 16], None, None), Block1Outcome::Continue(_)));
        match a.offer(now, k.clone(), bv(2, false, 16), &[3; 5], None, None) {
            Block1Outcome::Complete { body, block } => {
                assert_eq!(body.len(), 37);
                assert_eq!(&body[32..], &[3; 5]);
                assert_eq!(block, bv(2, false, 16));
            }
            o => panic!("{o:?}"),
        }
        assert_eq!(a.len(), 0);
    }

    #[test]
    fn block1_errors() {
        let mut a = Block1Assembler::new(limits());
        let now = Instant::now();
        let k = key("127.0.0.1:1", "/x");
        let code = |o: Block1Outcome| match o {
            Block1Outcome::Error(m) => m.code,
            o => panic!("{o:?}"),
        };
        // Missing first block.
        assert_eq!(
            code(a.offer(now, k.clone(), bv(1, true, 16), &[0; 16], None, None)),
            Code::REQUEST_ENTITY_INCOMPLETE
        );
        // Gap.
        a.offer(now, k.clone(), bv(0, true, 16), &[0; 16], None, None);
        assert_eq!(
            code(a.offer(now, k.clone(), bv(2, true, 16), &[0; 16], None, None)),
            Code::REQUEST_ENTITY_INCOMPLETE
        );
        // Content-Format change.
        a.offer(now, k.clone(), bv(0, true, 16), &[0; 16], Some(0), None);
        assert_eq!(
            code(a.offer(now, k.clone(), bv(1, true, 16), &[0; 16], Some(50), None)),
            Code::REQUEST_ENTITY_INCOMPLETE
        );
        // Payload size does not match SZX with M set.
        assert_eq!(code(a.offer(now, k.clone(), bv(0, true, 16), &[0; 10], None, None)), Code::BAD_REQUEST);
        // Too large, announced or accumulated.
        let m = match a.offer(now, k.clone(), bv(0, true, 16), &[0; 16], None, Some(5000)) {
            Block1Outcome::Error(m) => m,
            o => panic!("{o:?}"),
        };
        assert_eq!(m.code, Code::REQUEST_ENTITY_TOO_LARGE);
        assert_eq!(m.options.get_uint(num::SIZE1), Some(4096));
        a.offer(now, k.clone(), bv(0, true, 1024), &[0; 1024], None, None);
        for n in 1..4 {
            assert!(matches!(
                a.offer(now, k.clone(), bv(n, true, 1024), &[0; 1024], None, None),
                Block1Outcome::Continue(_)
            ));
        }
        assert_eq!(
            code(a.offer(now, k.clone(), bv(4, false, 1024), &[0; 1], None, None)),
            Code::REQUEST_ENTITY_TOO_LARGE
        );
        // Bounded: two transfers at most; expired ones make room.
        a.offer(now, key("127.0.0.1:1", "/a"), bv(0, true, 16), &[0; 16], None, None);
        a.offer(now, key("127.0.0.1:1", "/b"), bv(0, true, 16), &[0; 16], None, None);
        assert_eq!(
            code(a.offer(now, key("127.0.0.1:1", "/c"), bv(0, true, 16), &[0; 16], None, None)),
            Code::REQUEST_ENTITY_TOO_LARGE
        );
        let later = now + Duration::from_secs(11);
        assert!(matches!(
            a.offer(later, key("127.0.0.1:1", "/c"), bv(0, true, 16), &[0; 16], None, None),
            Block1Outcome::Continue(_)
        ));
        assert_eq!(a.len(), 1);
        // Expired transfer: 4.08.
        let much_later = later + Duration::from_secs(11);
        assert_eq!(
            code(a.offer(much_later, key("127.0.0.1:1", "/c"), bv(1, true, 16), &[0; 16], None, None)),
            Code::REQUEST_ENTITY_INCOMPLETE
        );
    }

    #[test]
    fn block1_smaller_server_size() {
        let mut a = Block1Assembler::new(Limits { preferred_szx: 2, ..limits() });
        let now = Instant::now();
        let k = key("127.0.0.1:1", "/x");
        // Client starts with 256, server prefers 64: echo NUM 0 with SZX 2; the client goes on
        // with NUM 4 at 64 bytes.
        assert!(
            matches!(a.offer(now, k.clone(), bv(0, true, 256), &[0; 256], None, None), Block1Outcome::Continue(b) if b == bv(0, true, 64))
        );
        assert!(
            matches!(a.offer(now, k.clone(), bv(4, false, 64), &[1; 10], None, None), Block1Outcome::Complete { body, .. } if body.len() == 266)
        );
    }

    #[test]
    fn transfer_keys() {
        let mut m = Message::request(Code::POST);
        m.set_path("/x");
        let peer: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let base = TransferKey::new(peer, &m);
        let mut b = m.clone();
        b.options.set_uint(num::BLOCK1, 0x1e);
        b.options.set_uint(num::SIZE1, 3000);
        b.options.set_uint(num::CONTENT_FORMAT, 0);
        assert_eq!(TransferKey::new(peer, &b), base);
        let mut t = m.clone();
        t.options.push(num::REQUEST_TAG, b"t1");
        assert_ne!(TransferKey::new(peer, &t), base);
        let mut q = m.clone();
        q.options.push(num::URI_QUERY, b"a=1");
        assert_ne!(TransferKey::new(peer, &q), base);
        assert_ne!(TransferKey::new("127.0.0.1:2".parse().unwrap(), &m), base);
    }
}
