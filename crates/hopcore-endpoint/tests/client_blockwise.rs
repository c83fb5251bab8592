//! Client Block-wise transfers (RFC 7959) against minimal servers on real loopback sockets.

#[path = "client_support.rs"]
mod support;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopcore_codec::block::szx_for_size;
use hopcore_codec::{num, BlockValue, Code, Message};
use hopcore_endpoint::client::{ClientConfig, ClientError};
use hopcore_endpoint::IncomingRequest;
use support::{block, block2_response, body, client, serve, within};

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

#[tokio::test]
async fn block2_reassembles_4096_bytes_in_1024_byte_blocks() {
    let data = body(4096, 0);
    let served = data.clone();
    let mut server = serve(move |r| Some(block2_response(&r.message, &served, 1024, Some(b"v1")))).await;
    let client = client(ClientConfig::default()).await;
    let resp = within(client.request(server.addr, get("/big"))).await.unwrap();
    assert_eq!(resp.code, Code::CONTENT);
    assert_eq!(resp.payload, data);
    assert!(!resp.options.contains(num::BLOCK2), "the reassembled response has no Block2");
    assert_eq!(resp.options.get(num::ETAG), Some(&b"v1"[..]));

    let reqs = server.drain();
    assert_eq!(reqs.len(), 4);
    // The default 1024 needs no early negotiation; follow-ups ask for blocks 1..3 of 1024.
    assert!(!reqs[0].options.contains(num::BLOCK2));
    let asked: Vec<_> = reqs[1..].iter().map(|m| block(m, num::BLOCK2).unwrap()).collect();
    assert_eq!(
        asked.iter().map(|b| (b.num, b.more, b.size())).collect::<Vec<_>>(),
        [(1, false, 1024), (2, false, 1024), (3, false, 1024)]
    );
    // Same request options otherwise, fresh tokens.
    let tokens: HashSet<_> = reqs.iter().map(|m| m.token).collect();
    assert_eq!(tokens.len(), 4);
    for m in &reqs {
        assert_eq!(m.code, Code::GET);
        assert_eq!(m.path(), "/big");
        assert!(m.payload.is_empty());
    }
}

#[tokio::test]
async fn block2_reassembles_in_64_byte_blocks_early_and_late() {
    let data = body(4096, 7);

    // Early negotiation (RFC 7959 §2.4, Figure 3): the client proposes 64 in the first request.
    let served = data.clone();
    let mut server = serve(move |r| Some(block2_response(&r.message, &served, 1024, None))).await;
    let client64 = client(ClientConfig { block_size: 64, ..ClientConfig::default() }).await;
    let resp = within(client64.request(server.addr, get("/big"))).await.unwrap();
    assert_eq!(resp.payload, data);
    let reqs = server.drain();
    assert_eq!(reqs.len(), 64);
    let first = block(&reqs[0], num::BLOCK2).expect("early negotiation");
    assert_eq!((first.num, first.more, first.size()), (0, false, 64));
    for (i, m) in reqs.iter().enumerate() {
        let b = block(m, num::BLOCK2).unwrap();
        assert_eq!((b.num as usize, b.size()), (i, 64));
    }

    // The server picks 64 by itself: the client follows its size.
    let served = data.clone();
    let mut server = serve(move |r| Some(block2_response(&r.message, &served, 64, None))).await;
    let client = client(ClientConfig::default()).await;
    let resp = within(client.request(server.addr, get("/big"))).await.unwrap();
    assert_eq!(resp.payload, data);
    let reqs = server.drain();
    assert_eq!(reqs.len(), 64);
    assert!(reqs[1..].iter().all(|m| block(m, num::BLOCK2).unwrap().size() == 64));
}

#[tokio::test]
async fn block2_follows_a_size_reduced_mid_transfer() {
    let data = body(4096, 3);
    let served = data.clone();
    // 1024-byte blocks up to offset 2048, then 256 (RFC 7959 §2.3: the client moves down).
    let mut server = serve(move |r| {
        let offset = block(&r.message, num::BLOCK2).map_or(0, |b| b.offset());
        let max = if offset >= 2048 { 256 } else { 1024 };
        Some(block2_response(&r.message, &served, max, Some(b"e")))
    })
    .await;
    let client = client(ClientConfig::default()).await;
    let resp = within(client.request(server.addr, get("/shrinking"))).await.unwrap();
    assert_eq!(resp.payload, data);
    let asked: Vec<_> =
        server.drain().iter().map(|m| block(m, num::BLOCK2).map(|b| (b.num, b.size()))).collect::<Vec<_>>();
    let mut expected = vec![None, Some((1, 1024)), Some((2, 1024))];
    // Block 2 of 1024 came back as block 8 of 256; the next is 9 of 256.
    expected.extend((9..16).map(|n| Some((n, 256))));
    assert_eq!(asked, expected);
}

#[tokio::test]
async fn block2_etag_change_restarts_a_get() {
    // The representation changes once, when block 1 is first asked for.
    let version = Arc::new(AtomicU32::new(1));
    let v = version.clone();
    let mut bumped = false;
    let mut server = serve(move |r| {
        let asked = block(&r.message, num::BLOCK2).map_or(0, |b| b.num);
        if asked == 1 && !bumped {
            bumped = true;
            v.store(2, Ordering::SeqCst);
        }
        let ver = v.load(Ordering::SeqCst);
        Some(block2_response(&r.message, &body(3000, ver as u8), 1024, Some(&[ver as u8])))
    })
    .await;
    let client = client(ClientConfig::default()).await;
    let resp = within(client.request(server.addr, get("/changing"))).await.unwrap();
    assert_eq!(resp.payload, body(3000, 2), "all blocks from the new version");
    assert_eq!(resp.options.get(num::ETAG), Some(&[2u8][..]));
    let asked: Vec<_> = server.drain().iter().map(|m| block(m, num::BLOCK2).map_or(0, |b| b.num)).collect();
    assert_eq!(asked, [0, 1, 0, 1, 2], "restarted from block 0 after the ETag changed");
    assert_eq!(version.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn block2_etag_changing_all_the_time_is_an_error() {
    let mut n = 0u8;
    let server = serve(move |r| {
        n = n.wrapping_add(1);
        Some(block2_response(&r.message, &body(3000, 0), 1024, Some(&[n])))
    })
    .await;
    let client = client(ClientConfig::default()).await;
    let err = within(client.request(server.addr, get("/flapping"))).await.unwrap_err();
    assert!(matches!(err, ClientError::EtagChanged { .. }), "{err:?}");
    assert!(err.to_string().contains("changed during a block-wise transfer"), "{err}");
}

#[tokio::test]
async fn block2_body_over_the_limit_is_an_error() {
    let served = body(4096, 0);
    let mut server = serve(move |r| Some(block2_response(&r.message, &served, 1024, None))).await;
    let client = client(ClientConfig { max_body_size: 2000, ..ClientConfig::default() }).await;
    let err = within(client.request(server.addr, get("/big"))).await.unwrap_err();
    assert_eq!(err, ClientError::BodyTooLarge { peer: server.addr, limit: 2000 });
    assert_eq!(server.drain().len(), 2, "stopped at the block that would exceed the limit");

    // With Size2 announcing the total (RFC 7959 §4), the client stops after the first block.
    let served = body(4096, 0);
    let mut server = serve(move |r| {
        let mut m = block2_response(&r.message, &served, 1024, None);
        m.options.set_uint(num::SIZE2, 4096);
        Some(m)
    })
    .await;
    let err = within(client.request(server.addr, get("/big"))).await.unwrap_err();
    assert!(matches!(err, ClientError::BodyTooLarge { limit: 2000, .. }));
    assert_eq!(server.drain().len(), 1);
}

#[tokio::test]
async fn block2_wrong_block_from_the_server_is_an_error() {
    let served = body(4096, 0);
    // Always answers with block 0, whatever is asked.
    let server = serve(move |r| {
        let mut req = r.message.clone();
        req.options.remove(num::BLOCK2);
        Some(block2_response(&req, &served, 1024, None))
    })
    .await;
    let client = client(ClientConfig::default()).await;
    let err = within(client.request(server.addr, get("/stuck"))).await.unwrap_err();
    assert!(matches!(err, ClientError::BadBlock { .. }), "{err:?}");
    assert!(err.to_string().starts_with(&format!("bad block-wise transfer from {}", server.addr)), "{err}");
}

/// What an atomic Block1 server (RFC 7959 §2.5) saw.
#[derive(Default)]
struct Uploads {
    /// (NUM, M, size, payload length) of each block.
    blocks: Vec<(u32, bool, usize, usize)>,
    /// Completed bodies.
    bodies: Vec<Vec<u8>>,
}

/// An atomic Block1 server: answers 2.31 with its preferred size `pref`, 2.04 with the body
/// length at the end, and 4.13 with Size1 for messages with more than `max_payload` bytes.
fn block1_server(
    pref: usize,
    max_payload: Option<usize>,
    seen: Arc<Mutex<Uploads>>,
) -> impl FnMut(&IncomingRequest) -> Option<Message> + Send + 'static {
    let mut partial: HashMap<Vec<Vec<u8>>, Vec<u8>> = HashMap::new();
    move |r| {
        let m = &r.message;
        if let Some(max) = max_payload {
            if m.payload.len() > max {
                let mut resp = Message::response(Code::REQUEST_ENTITY_TOO_LARGE);
                resp.options.set_uint(num::SIZE1, max as u32);
                return Some(resp);
            }
        }
        let Some(b) = block(m, num::BLOCK1) else {
            seen.lock().unwrap().bodies.push(m.payload.clone());
            return Some(Message::response(Code::CHANGED).with_payload(format!("{}", m.payload.len())));
        };
        seen.lock().unwrap().blocks.push((b.num, b.more, b.size(), m.payload.len()));
        // Operations are told apart by their Request-Tag (RFC 9175 §3.3).
        let key: Vec<Vec<u8>> = m.options.get_all(num::REQUEST_TAG).map(<[u8]>::to_vec).collect();
        let buf = partial.entry(key.clone()).or_default();
        if b.num == 0 {
            buf.clear();
        }
        if b.offset() != buf.len() {
            return Some(Message::response(Code::REQUEST_ENTITY_INCOMPLETE));
        }
        buf.extend_from_slice(&m.payload);
        if b.more {
            let szx = szx_for_size(pref).min(b.szx);
            let mut resp = Message::response(Code::CONTINUE);
            resp.options.set_uint(num::BLOCK1, BlockValue { num: b.num, more: true, szx }.to_uint());
            Some(resp)
        } else {
            let done = partial.remove(&key).unwrap_or_default();
            let mut resp = Message::response(Code::CHANGED).with_payload(format!("{}", done.len()));
            resp.options.set_uint(num::BLOCK1, BlockValue { num: b.num, more: false, szx: b.szx }.to_uint());
            seen.lock().unwrap().bodies.push(done);
            Some(resp)
        }
    }
}

fn put(path: &str, payload: Vec<u8>) -> Message {
    let mut m = Message::request(Code::PUT).with_payload(payload);
    m.set_path(path);
    m
}

#[tokio::test]
async fn block1_uploads_3000_bytes_with_continue() {
    let seen = Arc::new(Mutex::new(Uploads::default()));
    let mut server = serve(block1_server(1024, None, seen.clone())).await;
    let client = client(ClientConfig::default()).await;
    let data = body(3000, 9);
    let resp = within(client.request(server.addr, put("/up", data.clone()))).await.unwrap();
    assert_eq!(resp.code, Code::CHANGED);
    assert_eq!(resp.payload, b"3000");
    let s = seen.lock().unwrap();
    assert_eq!(s.blocks, [(0, true, 1024, 1024), (1, true, 1024, 1024), (2, false, 1024, 952)]);
    assert_eq!(s.bodies, [data]);
    let reqs = server.drain();
    // RFC 7959 §4: Size1 with the first block; a lone upload needs no Request-Tag.
    assert_eq!(reqs[0].options.get_uint(num::SIZE1), Some(3000));
    assert!(reqs.iter().all(|m| !m.options.contains(num::REQUEST_TAG)));
    assert!(reqs.iter().all(|m| m.path() == "/up" && m.code == Code::PUT));
}

#[tokio::test]
async fn block1_follows_the_smaller_size_of_a_continue() {
    let seen = Arc::new(Mutex::new(Uploads::default()));
    let server = serve(block1_server(512, None, seen.clone())).await;
    let client = client(ClientConfig::default()).await;
    let data = body(3000, 1);
    let resp = within(client.request(server.addr, put("/up", data.clone()))).await.unwrap();
    assert_eq!(resp.code, Code::CHANGED);
    let s = seen.lock().unwrap();
    // RFC 7959 §2.3, Figure 9: after 1024 bytes, blocks of 512 numbered from 2.
    assert_eq!(
        s.blocks,
        [(0, true, 1024, 1024), (2, true, 512, 512), (3, true, 512, 512), (4, true, 512, 512), (5, false, 512, 440)]
    );
    assert_eq!(s.bodies, [data]);
}

#[tokio::test]
async fn block1_4_13_with_size1_reduces_the_block_size_once() {
    let seen = Arc::new(Mutex::new(Uploads::default()));
    let server = serve(block1_server(1024, Some(256), seen.clone())).await;
    let client = client(ClientConfig::default()).await;

    // A block-wise upload that starts too big: restarted with 256-byte blocks.
    let data = body(3000, 2);
    let resp = within(client.request(server.addr, put("/small", data.clone()))).await.unwrap();
    assert_eq!(resp.code, Code::CHANGED);
    assert_eq!(resp.payload, b"3000");
    {
        let s = seen.lock().unwrap();
        assert_eq!(s.blocks.len(), 12);
        assert!(s.blocks.iter().enumerate().all(|(i, b)| b.0 as usize == i && b.2 == 256));
        assert_eq!(s.bodies, [data]);
    }

    // A body sent whole and refused (RFC 7959 §2.9.3: a hint to use Block1).
    seen.lock().unwrap().blocks.clear();
    let data = body(600, 3);
    let resp = within(client.request(server.addr, put("/small", data.clone()))).await.unwrap();
    assert_eq!(resp.code, Code::CHANGED);
    let s = seen.lock().unwrap();
    assert_eq!(s.blocks, [(0, true, 256, 256), (1, true, 256, 256), (2, false, 256, 88)]);
    assert_eq!(s.bodies.last(), Some(&data));
}

#[tokio::test]
async fn block1_4_13_is_returned_when_it_does_not_help() {
    // A server that refuses everything with 4.13 and Size1 16: one retry, then the 4.13.
    let mut server = serve(|_| {
        let mut r = Message::response(Code::REQUEST_ENTITY_TOO_LARGE);
        r.options.set_uint(num::SIZE1, 16);
        Some(r)
    })
    .await;
    let client = client(ClientConfig::default()).await;
    let resp = within(client.request(server.addr, put("/no", body(100, 0)))).await.unwrap();
    assert_eq!(resp.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(server.drain().len(), 2);
}

#[tokio::test]
async fn block1_then_block2_for_a_large_answer() {
    // POST echoing the uploaded body reversed, in Block2 blocks (RFC 7959 §2.7, §3.3).
    let mut upload = Vec::new();
    let mut answer = Vec::new();
    let mut server = serve(move |r| {
        let m = &r.message;
        if let Some(b) = block(m, num::BLOCK1) {
            upload.extend_from_slice(&m.payload);
            if b.more {
                let mut c = Message::response(Code::CONTINUE);
                c.options.set_uint(num::BLOCK1, b.to_uint());
                return Some(c);
            }
            answer = upload.iter().rev().copied().collect();
            let mut resp = block2_response(m, &answer, 1024, None);
            resp.code = Code::CHANGED;
            resp.options.set_uint(num::BLOCK1, b.to_uint());
            return Some(resp);
        }
        let mut resp = block2_response(m, &answer, 1024, None);
        resp.code = Code::CHANGED;
        Some(resp)
    })
    .await;
    let client = client(ClientConfig::default()).await;
    let data = body(3000, 5);
    let mut req = Message::request(Code::POST).with_payload(data.clone());
    req.set_path("/echo");
    let resp = within(client.request(server.addr, req)).await.unwrap();
    assert_eq!(resp.code, Code::CHANGED);
    assert_eq!(resp.payload, data.iter().rev().copied().collect::<Vec<_>>());
    let reqs = server.drain();
    assert_eq!(reqs.len(), 5);
    for m in &reqs[3..] {
        // RFC 7959 §2.7: like the Block1 requests, without Block1 and without payload.
        assert_eq!(m.code, Code::POST);
        assert_eq!(m.path(), "/echo");
        assert!(!m.options.contains(num::BLOCK1));
        assert!(m.payload.is_empty());
    }
    let nums: Vec<_> = reqs[3..].iter().map(|m| block(m, num::BLOCK2).unwrap().num).collect();
    assert_eq!(nums, [1, 2]);
}

#[tokio::test]
async fn concurrent_uploads_to_one_resource_get_a_request_tag() {
    let seen = Arc::new(Mutex::new(Uploads::default()));
    let mut server = serve(block1_server(1024, None, seen.clone())).await;
    let client = client(ClientConfig { block_size: 64, ..ClientConfig::default() }).await;
    let a = vec![b'a'; 2000];
    let b = vec![b'b'; 2000];
    let (ra, rb) = within(async {
        tokio::join!(
            client.request(server.addr, put("/same", a.clone())),
            client.request(server.addr, put("/same", b.clone()))
        )
    })
    .await;
    assert_eq!(ra.unwrap().payload, b"2000");
    assert_eq!(rb.unwrap().payload, b"2000");
    let mut bodies = seen.lock().unwrap().bodies.clone();
    bodies.sort();
    assert_eq!(bodies, [a, b], "the blocks of the two bodies were not mixed");
    // RFC 9175 §3.5.2: one operation without a tag, the other with one.
    let tags: HashSet<Option<Vec<u8>>> =
        server.drain().iter().map(|m| m.options.get(num::REQUEST_TAG).map(<[u8]>::to_vec)).collect();
    assert_eq!(tags.len(), 2, "{tags:?}");
    assert!(tags.contains(&None));
}

#[tokio::test]
async fn timeout_reads_well_and_frees_the_peer() {
    // The first request is never answered; the second one is.
    let mut first = true;
    let server = serve(move |_| {
        if std::mem::take(&mut first) {
            None
        } else {
            Some(Message::response(Code::CONTENT).with_payload("late but fine"))
        }
    })
    .await;
    let client = client(ClientConfig { request_timeout: Duration::from_millis(300), ..ClientConfig::default() }).await;
    let err = within(client.request(server.addr, get("/slow"))).await.unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }));
    assert!(err.is_no_response());
    assert_eq!(err.to_string(), format!("no response from {} after 0.3 s", server.addr));
    // NSTART = 1 (RFC 7252 §4.7): the abandoned request must not hold the peer's slot.
    let resp = within(client.request(server.addr, get("/slow"))).await.unwrap();
    assert_eq!(resp.payload, b"late but fine");
}

#[tokio::test]
async fn reset_is_an_error() {
    // A peer that answers every CON with a Reset (RFC 7252 §4.2).
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf).await {
            if n >= 4 {
                let _ = sock.send_to(&[0x70, 0, buf[2], buf[3]], from).await;
            }
        }
    });
    let client = client(ClientConfig::default()).await;
    let err = within(client.request(addr, get("/x"))).await.unwrap_err();
    assert_eq!(err, ClientError::Reset { peer: addr });
    assert_eq!(err.to_string(), format!("{addr} rejected the request with a Reset message"));
}

#[tokio::test]
async fn non_confirmable_transfers_stay_non() {
    let data = body(3000, 4);
    let served = data.clone();
    let mut server = serve(move |r| Some(block2_response(&r.message, &served, 1024, None))).await;
    let client = client(ClientConfig { non_confirmable: true, ..ClientConfig::default() }).await;
    let resp = within(client.request(server.addr, get("/non"))).await.unwrap();
    assert_eq!(resp.payload, data);
    let types: Vec<bool> = server.log_types();
    assert_eq!(types, [false, false, false], "every block requested with NON");
}

#[tokio::test]
async fn an_error_in_the_middle_of_a_transfer_is_the_answer() {
    let served = body(4096, 0);
    let server = serve(move |r| {
        if block(&r.message, num::BLOCK2).is_some_and(|b| b.num == 2) {
            return Some(Message::response(Code::NOT_FOUND).with_payload("gone"));
        }
        Some(block2_response(&r.message, &served, 1024, None))
    })
    .await;
    let client = client(ClientConfig::default()).await;
    let resp = within(client.request(server.addr, get("/vanishing"))).await.unwrap();
    assert_eq!(resp.code, Code::NOT_FOUND);
    assert_eq!(resp.payload, b"gone");
}
