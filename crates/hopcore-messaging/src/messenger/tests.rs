//! Sans-I/O tests: two messengers wired back to back, with a virtual clock.

use super::*;
use hopcore_codec::{num, Code};

fn addr(p: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], p))
}

struct Pair {
    c: Messenger,
    s: Messenger,
    now: Instant,
}

const C: u16 = 1000;
const S: u16 = 2000;

impl Pair {
    fn new(config: Config) -> Pair {
        Pair { c: Messenger::with_seed(config.clone(), 1), s: Messenger::with_seed(config, 2), now: Instant::now() }
    }
    /// Moves every pending datagram across, optionally dropping some; returns how many moved.
    fn pump(&mut self, mut drop: impl FnMut(&Transmit) -> bool) -> usize {
        let mut n = 0;
        loop {
            let mut moved = false;
            while let Some(t) = self.c.poll_transmit() {
                moved = true;
                n += 1;
                if !drop(&t) {
                    self.s.handle_datagram(self.now, addr(C), &t.bytes);
                }
            }
            while let Some(t) = self.s.poll_transmit() {
                moved = true;
                n += 1;
                if !drop(&t) {
                    self.c.handle_datagram(self.now, addr(S), &t.bytes);
                }
            }
            if !moved {
                return n;
            }
        }
    }
    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.c.handle_timeout(self.now);
        self.s.handle_timeout(self.now);
    }
}

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

fn server_requests(s: &mut Messenger) -> Vec<IncomingRequest> {
    let mut v = Vec::new();
    while let Some(e) = s.poll_event() {
        if let Event::Request(r) = e {
            v.push(r);
        }
    }
    v
}

#[test]
fn piggybacked_response() {
    let mut p = Pair::new(Config::default());
    let id = p.c.send_request(p.now, addr(S), get("/hello"), false);
    p.pump(|_| false);
    let reqs = server_requests(&mut p.s);
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].message.path(), "/hello");
    assert_eq!(reqs[0].handle.token.len(), 4, "random 4-byte token by default");
    p.s.respond(p.now, &reqs[0].handle, Message::response(Code::CONTENT).with_payload("hi"));
    let t = p.s.poll_transmit().unwrap();
    let v = MessageView::parse(&t.bytes).unwrap();
    assert_eq!(v.mtype(), MsgType::Ack);
    assert_eq!(v.message_id(), reqs[0].handle.message_id);
    p.c.handle_datagram(p.now, addr(S), &t.bytes);
    match p.c.poll_event() {
        Some(Event::Response { id: rid, message, .. }) => {
            assert_eq!(rid, id);
            assert_eq!(message.payload, b"hi");
        }
        other => panic!("expected response, got {other:?}"),
    }
    assert_eq!(p.c.requests_in_flight(), 0);
    // Nothing more is scheduled for the request.
    p.advance(Duration::from_secs(300));
    assert!(p.c.poll_event().is_none());
    assert!(p.c.poll_transmit().is_none());
}

#[test]
fn retransmission_doubles_and_times_out() {
    let mut p = Pair::new(Config::default());
    let id = p.c.send_request(p.now, addr(S), get("/x"), false);
    let start = p.now;
    let mut sends = vec![];
    // Drop everything; step the clock in 100 ms steps for 100 s.
    for _ in 0..1000 {
        while let Some(t) = p.c.poll_transmit() {
            sends.push((p.now - start, t.bytes));
        }
        p.advance(Duration::from_millis(100));
    }
    // RFC 7252 §4.2: 1 + MAX_RETRANSMIT transmissions, identical bytes.
    assert_eq!(sends.len(), 5);
    assert!(sends.iter().all(|(_, b)| *b == sends[0].1));
    let t1 = sends[1].0.as_secs_f64();
    assert!((2.0..=3.1).contains(&t1), "first retransmission after {t1}");
    for w in sends.windows(3) {
        let a = (w[1].0 - w[0].0).as_secs_f64();
        let b = (w[2].0 - w[1].0).as_secs_f64();
        assert!((b / a - 2.0).abs() < 0.1, "intervals {a} {b} do not double");
    }
    let mut failed = None;
    while let Some(e) = p.c.poll_event() {
        if let Event::RequestFailed { id: fid, error } = e {
            failed = Some((fid, error));
        }
    }
    assert_eq!(failed, Some((id, RequestError::Timeout)));
}

#[test]
fn duplicate_con_request_gets_same_answer_once() {
    let mut p = Pair::new(Config::default());
    p.c.send_request(p.now, addr(S), get("/d"), false);
    let t = p.c.poll_transmit().unwrap();
    p.s.handle_datagram(p.now, addr(C), &t.bytes);
    let reqs = server_requests(&mut p.s);
    p.s.respond(p.now, &reqs[0].handle, Message::response(Code::CONTENT));
    let first = p.s.poll_transmit().unwrap();
    // The client's retransmission arrives again (our ACK was lost).
    p.s.handle_datagram(p.now, addr(C), &t.bytes);
    assert!(server_requests(&mut p.s).is_empty(), "a duplicate is not processed twice");
    assert_eq!(p.s.poll_transmit().unwrap().bytes, first.bytes);
    // A different request reusing the Message ID (IDs wrapped) is new.
    let mut other = Message::parse(&t.bytes).unwrap();
    other.token = Token::from_slice(&[9, 9, 9, 9]).unwrap();
    p.s.handle_datagram(p.now, addr(C), &other.to_bytes().unwrap());
    assert_eq!(server_requests(&mut p.s).len(), 1);
}

#[test]
fn separate_response_flow() {
    let mut p = Pair::new(Config::default());
    let id = p.c.send_request(p.now, addr(S), get("/slow"), false);
    p.pump(|_| false);
    let reqs = server_requests(&mut p.s);
    // The application is slow: after separate_response_after, an empty ACK goes out.
    p.advance(Duration::from_millis(1100));
    let ack = p.s.poll_transmit().unwrap();
    let v = MessageView::parse(&ack.bytes).unwrap();
    assert_eq!((v.mtype(), v.code()), (MsgType::Ack, Code::EMPTY));
    p.c.handle_datagram(p.now, addr(S), &ack.bytes);
    // No retransmission of the request after the empty ACK.
    p.advance(Duration::from_secs(10));
    assert!(p.c.poll_transmit().is_none());
    // Now the response: a CON separate response with a new Message ID.
    p.s.respond(p.now, &reqs[0].handle, Message::response(Code::CONTENT).with_payload("late"));
    let sep = p.s.poll_transmit().unwrap();
    let v = MessageView::parse(&sep.bytes).unwrap();
    assert_eq!(v.mtype(), MsgType::Con);
    assert_ne!(v.message_id(), reqs[0].handle.message_id);
    p.c.handle_datagram(p.now, addr(S), &sep.bytes);
    // Duplicate separate response: ACKed again but not delivered again.
    p.c.handle_datagram(p.now, addr(S), &sep.bytes);
    let mut acks = 0;
    while let Some(t) = p.c.poll_transmit() {
        let v = MessageView::parse(&t.bytes).unwrap();
        assert_eq!((v.mtype(), v.message_id()), (MsgType::Ack, MessageView::parse(&sep.bytes).unwrap().message_id()));
        p.s.handle_datagram(p.now, addr(C), &t.bytes);
        acks += 1;
    }
    assert_eq!(acks, 2);
    let responses: Vec<_> = std::iter::from_fn(|| p.c.poll_event())
        .filter_map(|e| match e {
            Event::Response { id, message, .. } => Some((id, message.payload)),
            _ => None,
        })
        .collect();
    assert_eq!(responses, vec![(id, b"late".to_vec())]);
    // The server got the ACK for its separate response.
    assert!(matches!(p.s.poll_event(), Some(Event::Delivered { .. })));
}

#[test]
fn ping_malformed_and_unknown_token_get_rst() {
    let mut s = Messenger::with_seed(Config::default(), 3);
    let now = Instant::now();
    // CoAP ping: empty CON → RST (RFC 7252 §4.3).
    s.handle_datagram(now, addr(C), &[0x40, 0x00, 0x12, 0x34]);
    assert_eq!(s.poll_transmit().unwrap().bytes, vec![0x70, 0x00, 0x12, 0x34]);
    // Malformed CON (token length 9) → RST; malformed NON → silence.
    s.handle_datagram(now, addr(C), &[0x49, 0x01, 0x00, 0x07]);
    assert_eq!(s.poll_transmit().unwrap().bytes, vec![0x70, 0x00, 0x00, 0x07]);
    s.handle_datagram(now, addr(C), &[0x59, 0x01, 0x00, 0x08]);
    assert!(s.poll_transmit().is_none());
    // A CON response nobody asked for → RST.
    let mut r = Message::new(MsgType::Con, Code::CONTENT);
    r.message_id = 77;
    r.token = Token::from_slice(&[1, 2, 3]).unwrap();
    s.handle_datagram(now, addr(C), &r.to_bytes().unwrap());
    assert_eq!(s.poll_transmit().unwrap().bytes, vec![0x70, 0x00, 0x00, 77]);
    // Stray ACK and RST are ignored; a reserved-class CON is rejected.
    s.handle_datagram(now, addr(C), &[0x60, 0x00, 0x00, 0x01]);
    s.handle_datagram(now, addr(C), &[0x70, 0x00, 0x00, 0x01]);
    assert!(s.poll_transmit().is_none());
    s.handle_datagram(now, addr(C), &[0x40, 0x21, 0x00, 0x02]);
    assert_eq!(s.poll_transmit().unwrap().bytes, vec![0x70, 0x00, 0x00, 0x02]);
    assert!(s.poll_event().is_none());
}

#[test]
fn rst_fails_request() {
    let mut p = Pair::new(Config::default());
    let id = p.c.send_request(p.now, addr(S), get("/r"), false);
    let t = p.c.poll_transmit().unwrap();
    let mid = MessageView::parse(&t.bytes).unwrap().message_id();
    let mut rst = Vec::new();
    empty_message(&mut rst, MsgType::Rst, mid);
    p.c.handle_datagram(p.now, addr(S), &rst);
    assert!(matches!(p.c.poll_event(), Some(Event::RequestFailed { id: f, error: RequestError::Reset }) if f == id));
}

#[test]
fn nstart_queues_requests() {
    let mut p = Pair::new(Config::default());
    let a = p.c.send_request(p.now, addr(S), get("/a"), false);
    let b = p.c.send_request(p.now, addr(S), get("/b"), false);
    assert!(p.c.poll_transmit().is_some());
    assert!(p.c.poll_transmit().is_none(), "NSTART=1: the second request waits");
    p.c.send_request(p.now, addr(S + 1), get("/other-peer"), false);
    assert!(p.c.poll_transmit().is_some(), "another peer has its own NSTART");
    p.c.cancel_request(p.now, a);
    let t = p.c.poll_transmit().expect("second request starts once the first ends");
    let m = Message::parse(&t.bytes).unwrap();
    assert_eq!(m.path(), "/b");
    assert_eq!(p.c.request_token(b), Some(m.token));
}

#[test]
fn observe_keeps_token_open_and_notifications_flow() {
    let mut p = Pair::new(Config::default());
    let mut req = get("/time");
    req.options.push_uint(num::OBSERVE, 0);
    let id = p.c.send_request(p.now, addr(S), req, true);
    p.pump(|_| false);
    let reqs = server_requests(&mut p.s);
    let h = reqs[0].handle;
    let mut first = Message::response(Code::CONTENT).with_payload("0");
    first.options.push_uint(num::OBSERVE, 1);
    p.s.respond(p.now, &h, first);
    p.pump(|_| false);
    for i in 2..5u32 {
        let mut n = Message::new(MsgType::Non, Code::CONTENT).with_payload(i.to_string());
        n.token = h.token;
        n.options.push_uint(num::OBSERVE, i);
        p.s.send(p.now, addr(C), n);
        p.pump(|_| false);
    }
    let got: Vec<_> = std::iter::from_fn(|| p.c.poll_event())
        .filter_map(|e| match e {
            Event::Response { id: r, message, .. } if r == id => Some(message.payload),
            _ => None,
        })
        .collect();
    assert_eq!(got, vec![b"0".to_vec(), b"2".to_vec(), b"3".to_vec(), b"4".to_vec()]);
    // After the client forgets the observation, a CON notification gets RST and the server
    // learns it (RFC 7641 §3.6).
    p.c.cancel_request(p.now, id);
    let mut n = Message::new(MsgType::Con, Code::CONTENT);
    n.token = h.token;
    n.options.push_uint(num::OBSERVE, 9);
    p.s.send(p.now, addr(C), n);
    p.pump(|_| false);
    let rejected = std::iter::from_fn(|| p.s.poll_event())
        .any(|e| matches!(e, Event::Rejected { reason: RejectReason::Reset, token, .. } if token == h.token));
    assert!(rejected);
}

#[test]
fn lossy_link_still_delivers() {
    // Drop the first two transmissions of everything: retransmission and dedup recover.
    let mut p = Pair::new(Config::default());
    let id = p.c.send_request(p.now, addr(S), get("/lossy"), false);
    let mut seen: HashMap<Vec<u8>, u32> = HashMap::new();
    let mut got = None;
    for _ in 0..600 {
        p.pump(|t| {
            let n = seen.entry(t.bytes.clone()).or_default();
            *n += 1;
            *n <= 2
        });
        for r in server_requests(&mut p.s) {
            p.s.respond(p.now, &r.handle, Message::response(Code::CONTENT).with_payload("ok"));
        }
        while let Some(e) = p.c.poll_event() {
            if let Event::Response { id: r, message, .. } = e {
                assert!(got.is_none(), "delivered once");
                got = Some((r, message.payload));
            }
        }
        p.advance(Duration::from_millis(100));
    }
    assert_eq!(got, Some((id, b"ok".to_vec())));
}
