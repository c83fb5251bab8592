//! Block-wise transfers on the client side (RFC 7959).
//!
//! **Block1** (request bodies, §2.5): a body larger than the block size is sent in blocks
//! carrying Block1 with the M bit, the first one also Size1 (§4). Between blocks the server
//! answers 2.31 Continue (§2.9.1), or another 2.xx if it acts on each block separately (§2.3);
//! an error response ends the transfer and is returned. A smaller SZX in the server's control
//! Block1 is followed from the next block on, with the block number scaled (§2.3, Figure 9).
//! A 4.13 carrying a smaller Block1 SZX or a Size1 makes the client start over once with a
//! block size that fits (§2.9.3), also for a body that was first sent whole.
//!
//! **Request-Tag** (RFC 9175 §3): set only when needed, i.e. when this client already runs a
//! Block1 operation towards the same peer with the same cache-key options; the new operation
//! then gets a tag not in use by the others (RFC 9175 §3.5.2). A lone operation sends none
//! (§3.4: "sending messages without Request-Tag options whenever possible"). Body integrity
//! under OSCORE (RFC 9175 §3.5.1) is the business of the security layer, which can set a
//! Request-Tag itself; a request that already carries one is left as it is.
//!
//! **Block2** (response bodies, §2.4): when a response carries Block2 with M=1, the following
//! blocks are requested with the options of the original request (without Block1 and Size1,
//! §2.7), each with a fresh token, and appended. The SZX of each response is followed if it
//! shrinks (§2.3), ETags must match across blocks (§2.4): a GET or FETCH starts over a few
//! times when the representation changed, other methods fail with
//! [`ClientError::EtagChanged`], as repeating them would repeat their effect.
//!
//! Not done: a FETCH whose body itself needed Block1 repeats no body in its Block2 follow-ups
//! (a FETCH body that fits in one message is repeated, RFC 8132 §2); 4.08 is returned rather
//! than retried.

use std::net::SocketAddr;

use hopcore_codec::registry::is_no_cache_key;
use hopcore_codec::{num, BlockValue, Code, Message, Options, Token};
use tracing::{debug, trace};

use super::{Client, ClientError};

/// How often a GET/FETCH transfer starts over when the ETag changes.
const MAX_RESTARTS: usize = 3;

/// Largest block number (20 bits, RFC 7959 §2.2).
const MAX_NUM: usize = 0xF_FFFF;

fn size_of(szx: u8) -> usize {
    1usize << (szx as usize + 4)
}

fn block_option(m: &Message, number: u16, peer: SocketAddr) -> Result<Option<BlockValue>, ClientError> {
    match m.options.get(number) {
        None => Ok(None),
        Some(v) => BlockValue::decode(v).map(Some).map_err(|e| {
            let name = if number == num::BLOCK1 { "Block1" } else { "Block2" };
            ClientError::bad_block(peer, format!("undecodable {name} option: {e}"))
        }),
    }
}

fn set_block(m: &mut Message, number: u16, num: u32, more: bool, szx: u8) {
    let b = BlockValue { num, more, szx };
    m.options.set_uint(number, b.to_uint());
}

/// The whole client request: Block1 upload, then Block2 reassembly of the response.
pub(super) async fn request(client: &Client, peer: SocketAddr, req: Message) -> Result<Message, ClientError> {
    // A caller asking for one particular block drives the transfer itself.
    if let Some(b) = block_option(&req, num::BLOCK2, peer)? {
        if b.num != 0 {
            return client.exchange(peer, req).await;
        }
    }
    let restartable = req.code.is_safe_method();
    let (first, template, _tag) = if req.options.contains(num::BLOCK1) {
        let mut template = req.clone();
        template.options.remove(num::BLOCK1);
        template.options.remove(num::SIZE1);
        template.payload.clear();
        (client.exchange(peer, req).await?, template, None)
    } else {
        upload(client, peer, req).await?
    };
    collect(client, peer, &template, first, restartable).await
}

/// A registered Block1 operation; unregisters on drop.
pub(super) struct TagGuard<'a> {
    client: &'a Client,
    key: (SocketAddr, Vec<u8>),
    tag: Option<Vec<u8>>,
}

impl Drop for TagGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut ops) = self.client.inner.block1_ops.lock() {
            if let Some(tags) = ops.get_mut(&self.key) {
                if let Some(i) = tags.iter().position(|t| *t == self.tag) {
                    tags.swap_remove(i);
                }
                if tags.is_empty() {
                    ops.remove(&self.key);
                }
            }
        }
    }
}

/// The options that make two block-wise operations "matchable" (RFC 9175 §3.3): the method
/// and every option except the Block options, Request-Tag and elective NoCacheKey options.
fn operation_key(m: &Message) -> Vec<u8> {
    let opts: Options = m
        .options
        .iter()
        .filter(|o| {
            let block_or_tag = matches!(o.number, num::BLOCK1 | num::BLOCK2 | num::REQUEST_TAG);
            let elective_no_cache_key = o.number & 1 == 0 && is_no_cache_key(o.number);
            !block_or_tag && !elective_no_cache_key
        })
        .collect();
    let mut key = vec![m.code.0];
    // Encoding cannot fail for options that came from a valid message; an error would only
    // make the key coarser.
    let _ = opts.encode_into(&mut key);
    key
}

/// Picks the Request-Tag of a new Block1 operation (RFC 9175 §3.5.2) and registers it.
fn choose_tag<'a>(client: &'a Client, peer: SocketAddr, req: &Message) -> Option<TagGuard<'a>> {
    if req.options.contains(num::REQUEST_TAG) {
        return None;
    }
    let key = (peer, operation_key(req));
    let mut ops = client.inner.block1_ops.lock().ok()?;
    let tags = ops.entry(key.clone()).or_default();
    let mut tag = None;
    while tags.contains(&tag) {
        let bytes: [u8; 4] = rand::random();
        tag = Some(bytes.to_vec());
    }
    tags.push(tag.clone());
    Some(TagGuard { client, key, tag })
}

/// Adds Block2 with the configured size to an initial request when it is below the default
/// 1024 (early negotiation, RFC 7959 §2.4).
pub(super) fn early_block2(client: &Client, m: &mut Message) {
    let szx = client.config().szx();
    if szx < 6 && !m.options.contains(num::BLOCK2) {
        set_block(m, num::BLOCK2, 0, false, szx);
    }
}

/// A smaller block size suggested by a 4.13 (RFC 7959 §2.9.3): a smaller SZX in Block1, or a
/// Size1 giving the largest acceptable size. `None` if neither is below `current`.
fn reduced_szx(resp: &Message, current: usize) -> Option<u8> {
    let from_block1 = resp.options.get(num::BLOCK1).and_then(|v| BlockValue::decode(v).ok()).map(|b| b.szx);
    let from_size1 = resp.options.get_uint(num::SIZE1).map(|s| hopcore_codec::block::szx_for_size(s as usize));
    from_block1.into_iter().chain(from_size1).filter(|&s| size_of(s) < current).min()
}

/// Sends the request body, in Block1 blocks if it does not fit in one (RFC 7959 §2.5).
/// Returns the final response, the request template for Block2 follow-ups, and the
/// registration of the Request-Tag in use.
async fn upload<'a>(
    client: &'a Client,
    peer: SocketAddr,
    req: Message,
) -> Result<(Message, Message, Option<TagGuard<'a>>), ClientError> {
    let mut base = req;
    let body = std::mem::take(&mut base.payload);
    base.token = Token::EMPTY;
    let mut szx = client.config().szx();
    let mut reduced = false;
    let mut tag: Option<TagGuard<'a>> = None;
    'restart: loop {
        let size = size_of(szx);
        if body.len() <= size {
            let mut m = base.clone();
            m.payload = body.clone();
            early_block2(client, &mut m);
            let resp = client.exchange(peer, m).await?;
            // RFC 7959 §2.9.3: a 4.13 to a request without Block1 is a hint to try Block1.
            if resp.code == Code::REQUEST_ENTITY_TOO_LARGE && !reduced {
                if let Some(s) = reduced_szx(&resp, body.len()) {
                    debug!(%peer, size = size_of(s), "4.13: sending the body in blocks");
                    reduced = true;
                    szx = s;
                    continue 'restart;
                }
            }
            // A FETCH body is part of what is asked for (RFC 8132 §2): Block2 follow-ups
            // repeat it. Other methods send none with Block2 NUM != 0 (RFC 7959 §3.3).
            let mut template = base;
            if template.code == Code::FETCH {
                template.payload = body;
            }
            return Ok((resp, template, tag));
        }
        if body.len().div_ceil(size) > MAX_NUM + 1 {
            return Err(ClientError::RequestTooLarge { size: body.len(), block_size: size });
        }
        if tag.is_none() {
            tag = choose_tag(client, peer, &base);
            if let Some(Some(t)) = tag.as_ref().map(|g| g.tag.clone()) {
                // RFC 9175 §3.4: the same Request-Tag in every block and in the Block2 phase.
                base.options.set(num::REQUEST_TAG, &t);
            }
        }
        let mut offset = 0usize;
        loop {
            let size = size_of(szx);
            let block_num = offset / size;
            let end = (offset + size).min(body.len());
            let more = end < body.len();
            let mut m = base.clone();
            set_block(&mut m, num::BLOCK1, block_num as u32, more, szx);
            if block_num == 0 {
                // RFC 7959 §4: size indication with the first block.
                if let Ok(total) = u32::try_from(body.len()) {
                    m.options.set_uint(num::SIZE1, total);
                }
            }
            m.payload = body[offset..end].to_vec();
            if !more {
                early_block2(client, &mut m);
            }
            let resp = client.exchange(peer, m).await?;
            trace!(%peer, block = block_num, more, code = %resp.code, "Block1 answered");
            if resp.code == Code::REQUEST_ENTITY_TOO_LARGE && !reduced {
                // RFC 7959 §2.9.3: try once more with the size the server suggests, from the
                // start (the server may have dropped what it had).
                if let Some(s) = reduced_szx(&resp, size) {
                    debug!(%peer, size = size_of(s), "4.13: restarting the upload with smaller blocks");
                    reduced = true;
                    szx = s;
                    continue 'restart;
                }
            }
            let ack = block_option(&resp, num::BLOCK1, peer)?;
            if let Some(a) = ack {
                // RFC 7959 §2.3: a control Block1 acknowledges the block just sent; with a
                // smaller SZX the number may be counted in either size.
                let same = a.num as usize == block_num || (a.szx != szx && a.offset() == offset);
                if !same && resp.code.is_success() {
                    return Err(ClientError::bad_block(
                        peer,
                        format!("Block1 acknowledges block {} after block {block_num} was sent", a.num),
                    ));
                }
            }
            if !more {
                if resp.code == Code::CONTINUE {
                    return Err(ClientError::bad_block(peer, "2.31 Continue in answer to the last block"));
                }
                return Ok((resp, base, tag));
            }
            if !resp.code.is_success() {
                // The transfer failed (e.g. 4.08, 4.13 a second time): that is the answer.
                return Ok((resp, base, tag));
            }
            // 2.31, or 2.xx from a server acting on each block (RFC 7959 §2.3): go on.
            if let Some(a) = ack {
                // RFC 7959 §2.3, §2.5: use the server's smaller preferred size from now on.
                if a.szx < szx {
                    trace!(%peer, from = size, to = size_of(a.szx), "Block1 size reduced by the server");
                    szx = a.szx;
                }
            }
            offset = end;
        }
    }
}

enum Collected {
    Done(Message),
    EtagChanged { old: Vec<u8>, new: Vec<u8> },
}

/// Completes a response that carries Block2 with M=1 (RFC 7959 §2.4) by requesting the
/// following blocks with `template` (the request without Block1, without token). With
/// `restartable` (safe methods), a change of ETag starts the transfer over.
pub(super) async fn collect(
    client: &Client,
    peer: SocketAddr,
    template: &Message,
    first: Message,
    restartable: bool,
) -> Result<Message, ClientError> {
    let mut first = first;
    let mut restarts = 0;
    loop {
        match collect_once(client, peer, template, first).await? {
            Collected::Done(m) => return Ok(m),
            Collected::EtagChanged { old, new } => {
                if !restartable || restarts >= MAX_RESTARTS {
                    return Err(ClientError::EtagChanged { peer, old, new });
                }
                restarts += 1;
                // RFC 7959 §2.4: "attempting to retrieve fresh values for the blocks it
                // retrieved first".
                debug!(%peer, restarts, "ETag changed during a Block2 transfer: starting over");
                let mut m = template.clone();
                set_block(&mut m, num::BLOCK2, 0, false, client.config().szx());
                first = client.exchange(peer, m).await?;
            }
        }
    }
}

/// True if `m` carries Block2 with the M bit set.
pub(super) fn has_more_blocks(m: &Message) -> bool {
    m.options.get(num::BLOCK2).and_then(|v| BlockValue::decode(v).ok()).is_some_and(|b| b.more)
}

async fn collect_once(
    client: &Client,
    peer: SocketAddr,
    template: &Message,
    first: Message,
) -> Result<Collected, ClientError> {
    let limit = client.config().max_body_size;
    let Some(b) = block_option(&first, num::BLOCK2, peer)? else {
        return Ok(Collected::Done(first));
    };
    if b.num != 0 {
        return Err(ClientError::bad_block(peer, format!("the first response is block {}, not block 0", b.num)));
    }
    let mut first = first;
    if !b.more {
        first.options.remove(num::BLOCK2);
        return Ok(Collected::Done(first));
    }
    // RFC 7959 §2.3: with M set, the payload size is the block size.
    if first.payload.len() != b.size() {
        return Err(ClientError::bad_block(
            peer,
            format!("block 0 has {} bytes of payload but announces blocks of {}", first.payload.len(), b.size()),
        ));
    }
    // RFC 7959 §4: Size2 announces the total; refuse early what will not fit.
    if first.options.get_uint(num::SIZE2).is_some_and(|s| s as usize > limit) || first.payload.len() > limit {
        return Err(ClientError::BodyTooLarge { peer, limit });
    }
    let etag = first.options.get(num::ETAG).map(<[u8]>::to_vec);
    let format = first.options.get(num::CONTENT_FORMAT).map(<[u8]>::to_vec);
    let mut body = std::mem::take(&mut first.payload);
    // Late negotiation (RFC 7959 §2.4, Figure 4): ask for our size if it is smaller.
    let mut szx = b.szx.min(client.config().szx());
    loop {
        let next = body.len() / size_of(szx);
        if next > MAX_NUM {
            return Err(ClientError::BodyTooLarge { peer, limit: body.len() });
        }
        let mut m = template.clone();
        set_block(&mut m, num::BLOCK2, next as u32, false, szx);
        let resp = client.exchange(peer, m).await?;
        if resp.code != first.code && !resp.code.is_success() {
            // The transfer failed (the resource went away, 4.08, ...): that is the answer.
            return Ok(Collected::Done(resp));
        }
        let Some(rb) = block_option(&resp, num::BLOCK2, peer)? else {
            return Err(ClientError::bad_block(peer, format!("the response for block {next} has no Block2 option")));
        };
        // RFC 7959 §2.4: the blocks must come from one version of the representation.
        let new_etag = resp.options.get(num::ETAG);
        if new_etag != etag.as_deref() {
            return Ok(Collected::EtagChanged {
                old: etag.unwrap_or_default(),
                new: new_etag.map(<[u8]>::to_vec).unwrap_or_default(),
            });
        }
        if rb.offset() != body.len() {
            return Err(ClientError::bad_block(
                peer,
                format!(
                    "asked for the block at offset {} but got block {} of {} bytes (offset {})",
                    body.len(),
                    rb.num,
                    rb.size(),
                    rb.offset()
                ),
            ));
        }
        // RFC 7959 §2.3: blocks with differing Content-Format are not one body.
        if resp.options.get(num::CONTENT_FORMAT) != format.as_deref() {
            return Err(ClientError::bad_block(peer, format!("block {} has a different Content-Format", rb.num)));
        }
        if rb.more && resp.payload.len() != rb.size() {
            return Err(ClientError::bad_block(
                peer,
                format!("block {} has {} bytes but announces blocks of {}", rb.num, resp.payload.len(), rb.size()),
            ));
        }
        if body.len() + resp.payload.len() > limit {
            return Err(ClientError::BodyTooLarge { peer, limit });
        }
        body.extend_from_slice(&resp.payload);
        if !rb.more {
            break;
        }
        // RFC 7959 §2.3: a smaller SZX in the response is used from now on.
        if rb.szx < szx {
            trace!(%peer, from = size_of(szx), to = rb.size(), "Block2 size reduced by the server");
            szx = rb.szx;
        }
    }
    first.payload = body;
    first.options.remove(num::BLOCK2);
    Ok(Collected::Done(first))
}
