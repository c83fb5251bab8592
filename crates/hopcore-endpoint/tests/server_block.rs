//! Block-wise transfers against the server over loopback (RFC 7959), with raw
//! `Endpoint::request`: Block2 of /large, early negotiation, Block1 uploads to /echo with 2.31,
//! combined Block1/Block2 (§2.7), 4.08 and 4.13.

#[path = "server_support.rs"]
mod support;

use hopcore_codec::{num, Code, Message};
use hopcore_endpoint::server::demo::{demo_server, large_payload, LARGE_SIZE};
use hopcore_endpoint::server::ServerBuilder;
use support::*;

#[tokio::test]
async fn large_block_by_block() {
    let (server, client) = serve(demo_server()).await;
    // No Block2 in the request: the server picks 1024 (RFC 7959 §2.4) and says the size.
    let first = exchange(&client, &server, request(Code::GET, "/large")).await;
    assert_eq!(first.code, Code::CONTENT);
    assert_eq!(block(&first, num::BLOCK2), Some(bv(0, true, 1024)));
    assert_eq!(first.options.get_uint(num::SIZE2), Some(LARGE_SIZE as u32));
    assert_eq!(first.payload.len(), 1024);
    let etag = first.options.get(num::ETAG).expect("ETag with block-wise").to_vec();
    let mut body = first.payload.clone();
    for n in 1..4 {
        let r =
            exchange(&client, &server, with_block(request(Code::GET, "/large"), num::BLOCK2, bv(n, false, 1024))).await;
        assert_eq!(r.code, Code::CONTENT);
        assert_eq!(block(&r, num::BLOCK2), Some(bv(n, n < 3, 1024)), "block {n}");
        assert_eq!(r.payload.len(), 1024);
        assert_eq!(r.options.get(num::ETAG), Some(&etag[..]), "same representation");
        assert!(!r.options.contains(num::SIZE2), "Size2 comes with the first block");
        body.extend_from_slice(&r.payload);
    }
    assert_eq!(body, large_payload());

    // Past the end: 4.02 (see block.rs for the reasoning: RFC 7959 §2.1 + RFC 7252 §5.4.1).
    let r = exchange(&client, &server, with_block(request(Code::GET, "/large"), num::BLOCK2, bv(4, false, 1024))).await;
    assert_eq!(r.code, Code::BAD_OPTION);
    // A size request (Size2: 0) is answered on a later block too (RFC 7959 §4).
    let m = with_block(request(Code::GET, "/large"), num::BLOCK2, bv(2, false, 1024)).with_option(num::SIZE2, b"");
    let r = exchange(&client, &server, m).await;
    assert_eq!(r.options.get_uint(num::SIZE2), Some(LARGE_SIZE as u32));
}

#[tokio::test]
async fn early_negotiation_256() {
    let (server, client) = serve(demo_server()).await;
    // RFC 7959 §2.4: Block2 NUM 0 with a small SZX in the initial request.
    let first =
        exchange(&client, &server, with_block(request(Code::GET, "/large"), num::BLOCK2, bv(0, false, 256))).await;
    assert_eq!(block(&first, num::BLOCK2), Some(bv(0, true, 256)));
    assert_eq!(first.payload.len(), 256);
    assert_eq!(first.options.get_uint(num::SIZE2), Some(4096));
    let mut body = first.payload.clone();
    let mut num = 1;
    loop {
        let r = exchange(&client, &server, with_block(request(Code::GET, "/large"), num::BLOCK2, bv(num, false, 256)))
            .await;
        let b = block(&r, num::BLOCK2).unwrap();
        assert_eq!((b.num, b.size()), (num, 256));
        body.extend_from_slice(&r.payload);
        if !b.more {
            break;
        }
        num += 1;
    }
    assert_eq!(num, 15, "16 blocks of 256");
    assert_eq!(body, large_payload());
    // A small representation asked for block-wise: one block, M unset.
    let r = exchange(&client, &server, with_block(request(Code::GET, "/hello"), num::BLOCK2, bv(0, false, 64))).await;
    assert_eq!(block(&r, num::BLOCK2), Some(bv(0, false, 64)));
    assert_eq!(r.payload, b"Hello from hopcore");
}

#[tokio::test]
async fn server_with_smaller_blocks() {
    let (server, client) =
        serve(ServerBuilder::default().block_size(128).resource("/large", demo_large()).build()).await;
    // The client asks for 1024; the server uses its own 128 (RFC 7959 §2.4: "or a smaller size").
    let r = exchange(&client, &server, with_block(request(Code::GET, "/large"), num::BLOCK2, bv(0, false, 1024))).await;
    assert_eq!(block(&r, num::BLOCK2), Some(bv(0, true, 128)));
    assert_eq!(r.payload.len(), 128);
}

fn demo_large() -> hopcore_endpoint::server::demo::Large {
    hopcore_endpoint::server::demo::Large
}

fn upload_block(body: &[u8], n: u32, size: usize, tag: Option<&[u8]>) -> Message {
    let start = n as usize * size;
    let end = (start + size).min(body.len());
    let more = end < body.len();
    let mut m =
        with_block(request(Code::POST, "/echo"), num::BLOCK1, bv(n, more, size)).with_payload(&body[start..end]);
    m.options.set_uint(num::CONTENT_FORMAT, 0);
    if n == 0 {
        // RFC 7959 §4: the size indication.
        m.options.set_uint(num::SIZE1, body.len() as u32);
    }
    if let Some(t) = tag {
        m.options.push(num::REQUEST_TAG, t);
    }
    m
}

#[tokio::test]
async fn block1_upload_to_echo() {
    let (server, client) = serve(demo_server()).await;
    let body: Vec<u8> = (0..3000u32).map(|i| b'a' + (i % 26) as u8).collect();
    for n in 0..2 {
        let r = exchange(&client, &server, upload_block(&body, n, 1024, None)).await;
        // RFC 7959 §2.3/§2.5: 2.31 Continue, Block1 echoed with M set (atomic).
        assert_eq!(r.code, Code::CONTINUE, "block {n}");
        assert_eq!(block(&r, num::BLOCK1), Some(bv(n, true, 1024)));
        assert!(r.payload.is_empty());
    }
    let last = exchange(&client, &server, upload_block(&body, 2, 1024, None)).await;
    assert_eq!(last.code, Code::CHANGED);
    assert_eq!(block(&last, num::BLOCK1), Some(bv(2, false, 1024)), "final response carries Block1");
    // RFC 7959 §2.7: the 3000-byte echo comes back block-wise, the first block right here.
    assert_eq!(block(&last, num::BLOCK2), Some(bv(0, true, 1024)));
    assert_eq!(last.options.get_uint(num::SIZE2), Some(3000));
    assert_eq!(last.options.get_uint(num::CONTENT_FORMAT), Some(0));
    let mut echoed = last.payload.clone();
    for n in 1..3 {
        let r =
            exchange(&client, &server, with_block(request(Code::POST, "/echo"), num::BLOCK2, bv(n, false, 1024))).await;
        assert_eq!(r.code, Code::CHANGED, "block {n} of the POST response, from the stored response");
        assert_eq!(block(&r, num::BLOCK2), Some(bv(n, n < 2, 1024)));
        echoed.extend_from_slice(&r.payload);
    }
    assert_eq!(echoed, body);

    // The stored value, fetched with GET, block-wise.
    let mut got = Vec::new();
    for n in 0..3 {
        let r =
            exchange(&client, &server, with_block(request(Code::GET, "/echo"), num::BLOCK2, bv(n, false, 1024))).await;
        got.extend_from_slice(&r.payload);
    }
    assert_eq!(got, body);
}

#[tokio::test]
async fn block1_request_tags_keep_bodies_apart() {
    let (server, client) = serve(demo_server()).await;
    let a = vec![b'A'; 100];
    let b = vec![b'B'; 100];
    // Interleaved uploads to the same resource, told apart by Request-Tag (RFC 9175 §3.3).
    for n in 0..3 {
        for (body, tag) in [(&a, &b"ta"[..]), (&b, &b"tb"[..])] {
            let r = exchange(&client, &server, upload_block(body, n, 32, Some(tag))).await;
            assert_eq!(r.code, Code::CONTINUE);
        }
    }
    let ra = exchange(&client, &server, upload_block(&a, 3, 32, Some(b"ta"))).await;
    let rb = exchange(&client, &server, upload_block(&b, 3, 32, Some(b"tb"))).await;
    assert_eq!((ra.code, rb.code), (Code::CHANGED, Code::CHANGED));
    assert_eq!(ra.payload, a);
    assert_eq!(rb.payload, b);
}

#[tokio::test]
async fn block1_incomplete_and_too_large() {
    let (server, client) = serve(demo_server()).await;
    let body = vec![b'x'; 3000];
    // RFC 7959 §2.9.2: a later block without the earlier ones.
    let r = exchange(&client, &server, upload_block(&body, 1, 1024, None)).await;
    assert_eq!(r.code, Code::REQUEST_ENTITY_INCOMPLETE);
    // RFC 7959 §2.5: a block out of sequence.
    assert_eq!(exchange(&client, &server, upload_block(&body, 0, 1024, None)).await.code, Code::CONTINUE);
    let r = exchange(&client, &server, upload_block(&body, 2, 1024, None)).await;
    assert_eq!(r.code, Code::REQUEST_ENTITY_INCOMPLETE);
    // The transfer is gone after that: block 1 is out of sequence now too.
    let r = exchange(&client, &server, upload_block(&body, 1, 1024, None)).await;
    assert_eq!(r.code, Code::REQUEST_ENTITY_INCOMPLETE);
    // RFC 7959 §2.3: a Content-Format change between blocks.
    assert_eq!(exchange(&client, &server, upload_block(&body, 0, 1024, None)).await.code, Code::CONTINUE);
    let mut m = upload_block(&body, 1, 1024, None);
    m.options.set_uint(num::CONTENT_FORMAT, 42);
    assert_eq!(exchange(&client, &server, m).await.code, Code::REQUEST_ENTITY_INCOMPLETE);

    // RFC 7959 §2.9.3: Size1 above the limit (64 KiB) gets 4.13 with the limit in Size1.
    let mut m = upload_block(&body, 0, 1024, None);
    m.options.set_uint(num::SIZE1, 100_000);
    let r = exchange(&client, &server, m).await;
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.options.get_uint(num::SIZE1), Some(64 * 1024));
}

#[tokio::test]
async fn block1_limit_while_collecting() {
    let (server, client) = serve(ServerBuilder::default().max_body_size(2048).resource("/echo", echo()).build()).await;
    let body = vec![b'x'; 3000];
    let mut m = upload_block(&body, 0, 1024, None);
    m.options.remove(num::SIZE1);
    assert_eq!(exchange(&client, &server, m).await.code, Code::CONTINUE);
    assert_eq!(exchange(&client, &server, upload_block(&body, 1, 1024, None)).await.code, Code::CONTINUE);
    let r = exchange(&client, &server, upload_block(&body, 2, 1024, None)).await;
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
    assert_eq!(r.options.get_uint(num::SIZE1), Some(2048));
    // Without Block1 as well (RFC 7252 §5.9.2.9).
    let r = exchange(&client, &server, request(Code::POST, "/echo").with_payload(vec![0u8; 2049])).await;
    assert_eq!(r.code, Code::REQUEST_ENTITY_TOO_LARGE);
}

fn echo() -> hopcore_endpoint::server::demo::Echo {
    hopcore_endpoint::server::demo::Echo::default()
}
