//! RFC 8613 App. B.1.2 end to end with the message layer: a server restarts without a clean
//! shutdown, challenges the first request with a protected 4.01 + Echo (RFC 9175 §2.4), and
//! accepts the repeated request carrying the Echo value, which synchronizes the replay window.

use hopcore_codec::{num, Code, Message};
use hopcore_oscore::{
    protect_request, protect_response, unprotect_request, unprotect_response, ContextInput, Layer, OscoreOption,
    SecurityContext, UnprotectError,
};
use hopcore_security::{ContextId, ContextMeta, ContextStore, Freshness, StoreOptions};

const SECRET: [u8; 16] = [0x33; 16];

fn server_store(dir: &std::path::Path) -> (ContextStore, ContextId) {
    let mut store = ContextStore::open(dir, StoreOptions { reserve_step: 4, ..StoreOptions::default() }).unwrap();
    let ctx = SecurityContext::derive(&ContextInput::new(&SECRET, &[0x01], &[])).unwrap();
    let meta = ContextMeta::durable(":client1", &ctx);
    let id = store.add(ctx, meta).unwrap();
    (store, id)
}

fn client() -> SecurityContext {
    SecurityContext::derive(&ContextInput::new(&SECRET, &[], &[0x01])).unwrap()
}

fn put(payload: &[u8], echo: Option<&[u8]>) -> Message {
    let mut m = Message::request(Code::PUT).with_payload(payload.to_vec());
    m.set_path("/lock");
    if let Some(e) = echo {
        m.options.set(num::ECHO, e);
    }
    m
}

type Outcome = Result<(Message, hopcore_oscore::RequestBinding, hopcore_oscore::RequestInfo), UnprotectError>;

fn receive(store: &mut ContextStore, msg: &Message) -> Outcome {
    unprotect_request(msg, |kid, kc| store.lookup_recipient_mut(kid, kc).map(|(_, c)| c), &Layer::RFC8613)
}

#[test]
fn echo_recovery_after_unclean_restart() {
    let dir = tempfile::tempdir().unwrap();
    let layer = Layer::RFC8613;
    let mut client = client();

    // First run: one request accepted, then the process dies (no shutdown).
    let (mut store, _) = server_store(dir.path());
    let (old_req, _) = protect_request(&put(b"1", None), &mut client, &layer).unwrap();
    receive(&mut store, &old_req).unwrap();
    drop(store);

    // Second run: the window has no state.
    let (mut store, id) = server_store(dir.path());
    assert!(!store.replay_synchronized(id));
    // A replay of the old request decrypts but must not be acted upon.
    let Err(UnprotectError::FreshnessUnverified(unverified)) = receive(&mut store, &old_req) else {
        panic!("expected FreshnessUnverified")
    };
    let Freshness::Challenge { response, mut binding } = store.check_freshness(id, *unverified).unwrap() else {
        panic!("no Echo in the request: must be challenged")
    };
    assert_eq!(response.code, Code::UNAUTHORIZED);
    assert!(response.payload.is_empty(), "App. B.1.2: only the Echo option, no diagnostic payload");
    let echo = response.options.get(num::ECHO).unwrap().to_vec();
    assert_eq!(echo.len(), 8);
    // The 4.01 is protected with the server's own Partial IV (after prepare_send).
    assert!(protect_response(&response, store.get_mut(id).unwrap(), &mut binding, false, &layer).is_err());
    let ctx = store.prepare_send(id).unwrap();
    let protected = protect_response(&response, ctx, &mut binding, true, &layer).unwrap();
    let opt = OscoreOption::parse(protected.options.get(num::OSCORE).unwrap()).unwrap();
    assert!(opt.partial_iv.is_some(), "App. B.1.2: the server MUST include its Partial IV");

    // The (real) client sends a request and gets the challenge; it repeats it with the Echo.
    let (req, mut cb) = protect_request(&put(b"2", None), &mut client, &layer).unwrap();
    let Err(UnprotectError::FreshnessUnverified(unverified)) = receive(&mut store, &req) else { panic!() };
    let Freshness::Challenge { response, mut binding } = store.check_freshness(id, *unverified).unwrap() else {
        panic!()
    };
    let ctx = store.prepare_send(id).unwrap();
    let protected = protect_response(&response, ctx, &mut binding, true, &layer).unwrap();
    let got = unprotect_response(&protected, &client, &mut cb, &layer).unwrap();
    assert_eq!(got.code, Code::UNAUTHORIZED);
    let echo = got.options.get(num::ECHO).unwrap().to_vec();

    // A wrong Echo value is challenged again.
    let (req_bad, _) = protect_request(&put(b"2", Some(&[0; 8])), &mut client, &layer).unwrap();
    let Err(UnprotectError::FreshnessUnverified(u)) = receive(&mut store, &req_bad) else { panic!() };
    assert!(matches!(store.check_freshness(id, *u).unwrap(), Freshness::Challenge { .. }));

    let (req2, mut cb2) = protect_request(&put(b"2", Some(&echo)), &mut client, &layer).unwrap();
    let seq2 = OscoreOption::parse(req2.options.get(num::OSCORE).unwrap()).unwrap().partial_iv.unwrap().to_sequence();
    let Err(UnprotectError::FreshnessUnverified(unverified)) = receive(&mut store, &req2) else { panic!() };
    let Freshness::Verified { message, mut binding, info } = store.check_freshness(id, *unverified).unwrap() else {
        panic!("valid Echo")
    };
    assert_eq!(message.payload, b"2");
    assert_eq!(info.partial_iv().to_sequence(), seq2);
    assert!(store.replay_synchronized(id));
    let ctx = store.prepare_send(id).unwrap();
    let resp = protect_response(&Message::response(Code::CHANGED), ctx, &mut binding, true, &layer).unwrap();
    assert_eq!(unprotect_response(&resp, &client, &mut cb2, &layer).unwrap().code, Code::CHANGED);

    // From now on: replays are refused, new requests accepted.
    assert!(matches!(receive(&mut store, &req2), Err(UnprotectError::Replay(_))));
    assert!(matches!(receive(&mut store, &old_req), Err(UnprotectError::Replay(_))));
    let (req3, _) = protect_request(&put(b"3", None), &mut client, &layer).unwrap();
    assert_eq!(receive(&mut store, &req3).unwrap().0.payload, b"3");
    // The Echo value was single-use.
    assert!(!store.verify_echo(id, &echo));
}

#[test]
fn freshness_check_refuses_a_foreign_request() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, id) = server_store(dir.path());
    drop(store);
    let (mut s, _) = server_store(dir.path());
    // Second context in the same store: the request below belongs to `id`, not to `other`.
    let other_ctx = SecurityContext::derive(&ContextInput::new(&SECRET, &[0x02], &[0x05])).unwrap();
    let other = s.add(other_ctx, ContextMeta::new("other")).unwrap();
    let (req, _) = protect_request(&put(b"x", None), &mut client(), &Layer::RFC8613).unwrap();
    let Err(UnprotectError::FreshnessUnverified(u)) = receive(&mut s, &req) else { panic!() };
    assert!(s.check_freshness(other, *u).is_err());
    store = s;
    assert!(!store.replay_synchronized(id));
}
