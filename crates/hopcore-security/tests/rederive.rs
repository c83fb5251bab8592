//! RFC 8613 App. B.2 run end to end: an Initiator (client) and a Responder (server), each
//! next to a ContextStore holding the old context, exchanging real OSCORE messages.

use std::time::{Duration, Instant};

use hopcore_codec::{num, Code, Message};
use hopcore_oscore::{
    protect_request, protect_response, unprotect_request, unprotect_response, Layer, OscoreOption, SecurityContext,
};
use hopcore_security::rederive::{
    response_kid_context, Initiator, InitiatorStep, KidContextEncoding, RederiveError, Responder, ResponderOutcome,
};
use hopcore_security::{ContextId, ContextMeta, ContextParams, ContextStore};
use rand::rngs::OsRng;

const SECRET: [u8; 16] = [0x11; 16];
const SALT: [u8; 4] = [0xaa, 0xbb, 0xcc, 0xdd];

fn client_params(id_context: Option<&[u8]>) -> ContextParams {
    ContextParams::new(&SECRET, &[], &[0x01]).with_master_salt(&SALT).with_id_context(id_context)
}

fn server_params(id_context: Option<&[u8]>) -> ContextParams {
    ContextParams::new(&SECRET, &[0x01], &[]).with_master_salt(&SALT).with_id_context(id_context)
}

struct Side {
    store: ContextStore,
    id: ContextId,
}

fn side(params: &ContextParams, label: &str) -> Side {
    let mut store = ContextStore::volatile();
    let id = store.add(params.derive().unwrap(), ContextMeta::new(label)).unwrap();
    store.set_params(id, params.clone()).unwrap();
    Side { store, id }
}

fn get(path: &str) -> Message {
    let mut m = Message::request(Code::GET);
    m.set_path(path);
    m
}

fn keys(ctx: &SecurityContext) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    (ctx.sender_key().to_vec(), ctx.recipient_key().to_vec(), ctx.common_iv().to_vec())
}

/// The server's dispatch: the store first (§8.2 step 2), App. B.2 when it has no context.
fn server_receive(server: &mut Side, responder: &mut Responder, msg: &Message) -> Result<ResponderOutcome, String> {
    let opt = OscoreOption::parse(msg.options.get(num::OSCORE).unwrap()).unwrap();
    let kid = opt.kid.unwrap();
    if server.store.lookup_recipient(kid, opt.kid_context).is_some() {
        return Err("store has a context: ordinary request".into());
    }
    responder.on_request(msg, &Layer::RFC8613, &mut OsRng, Instant::now()).map_err(|e| e.to_string())
}

fn tamper(msg: &Message) -> Message {
    let mut bad = msg.clone();
    if let Some(b) = bad.payload.last_mut() {
        *b ^= 1;
    }
    bad
}

fn run_client_initiated(encoding: KidContextEncoding) {
    let layer = Layer::RFC8613;
    let mut client = side(&client_params(None), "server");
    let mut server = side(&server_params(None), ":client");
    let old_client = keys(client.store.get(client.id).unwrap());
    let old_server = keys(server.store.get(server.id).unwrap());
    let mut initiator = Initiator::with_options(client_params(None), encoding, 8, &mut OsRng).unwrap();
    let mut responder = Responder::with_options(server_params(None), encoding, 8, 4, Duration::from_secs(60));
    let r1 = initiator.id1().unwrap().to_vec();
    assert_eq!(r1.len(), 8);

    // Step 1: request #1 with ID Context R1, carried as kid context.
    let (req1, mut b1) = initiator.protect_request1(&get("/rekey"), &layer).unwrap();
    let opt = OscoreOption::parse(req1.options.get(num::OSCORE).unwrap()).unwrap();
    let expected_kc = encoding.encode(&r1).unwrap();
    assert_eq!(opt.kid_context, Some(&expected_kc[..]));
    if encoding == KidContextEncoding::CborBstr {
        assert_eq!(opt.kid_context.unwrap()[0], 0x48, "bstr of 8 bytes");
    }

    // Step 2: the server has no context for (kid, kid context) and answers with response #1.
    let ResponderOutcome::Challenge { response: resp1, request } =
        server_receive(&mut server, &mut responder, &req1).unwrap()
    else {
        panic!("expected response #1")
    };
    assert_eq!(request, get("/rekey"));
    assert_eq!(responder.pending(), 1);
    let r2 = response_kid_context(&resp1, encoding).unwrap().unwrap();
    assert_eq!(r2.len(), 8);
    assert_ne!(r2, r1);
    let resp1_opt = OscoreOption::parse(resp1.options.get(num::OSCORE).unwrap()).unwrap();
    assert!(resp1_opt.partial_iv.is_some(), "response #1 carries its own Partial IV");

    // A tampered response #1 fails and changes nothing.
    assert!(initiator.on_response1(&tamper(&resp1), &mut b1, &layer, &mut OsRng).is_err());
    assert_eq!(initiator.step(), InitiatorStep::AwaitingResponse1);

    // Step 3: verify with ID2 = R2 || R1, then request #2 with ID3 = R2 || R3.
    let verified = initiator.on_response1(&resp1, &mut b1, &layer, &mut OsRng).unwrap();
    assert_eq!(verified.code, Code::UNAUTHORIZED);
    assert_eq!(initiator.step(), InitiatorStep::AwaitingResponse2);
    let (req2, mut b2) = initiator.protect_request2(&get("/temperature"), &layer).unwrap();
    let id3 = encoding
        .decode(OscoreOption::parse(req2.options.get(num::OSCORE).unwrap()).unwrap().kid_context.unwrap())
        .unwrap();
    assert_eq!(id3.len(), 16);
    assert_eq!(&id3[..8], &r2[..], "ID3 starts with R2");

    // A tampered request #2 fails; the R2 stays cached and the server's store is unchanged.
    assert!(server_receive(&mut server, &mut responder, &tamper(&req2)).is_err());
    assert_eq!(responder.pending(), 1);
    assert_eq!(keys(server.store.get(server.id).unwrap()), old_server);

    // Step 4: the server verifies request #2 with ID3 and gets the new context.
    let ResponderOutcome::Established { request, mut binding, info, context } =
        server_receive(&mut server, &mut responder, &req2).unwrap()
    else {
        panic!("expected the new context")
    };
    assert_eq!(request, get("/temperature"));
    assert_eq!(info.kid(), b"");
    assert_eq!(context.id_context(), Some(&id3[..]));
    assert_eq!(responder.pending(), 0, "all R2 of this client removed");
    // Only now is the old context retired.
    assert_eq!(keys(server.store.get(server.id).unwrap()), old_server);
    let retired = server.store.replace(server.id, context).unwrap();
    assert_eq!(keys(&retired), old_server);
    let new_server = keys(server.store.get(server.id).unwrap());
    assert_ne!(new_server.0, old_server.0);
    assert_ne!(new_server.1, old_server.1);
    assert_ne!(new_server.2, old_server.2);

    // Response #2 with the new context.
    let content = Message::response(Code::CONTENT).with_payload(*b"21.5 C");
    let ctx = server.store.prepare_send(server.id).unwrap();
    let resp2 = protect_response(&content, ctx, &mut binding, false, &layer).unwrap();

    // Step 5: a tampered response #2 fails, the client keeps its old context.
    assert!(initiator.on_response2(&tamper(&resp2), &mut b2, &layer).is_err());
    assert_eq!(initiator.step(), InitiatorStep::AwaitingResponse2);
    assert_eq!(keys(client.store.get(client.id).unwrap()), old_client);
    let verified = initiator.on_response2(&resp2, &mut b2, &layer).unwrap();
    assert_eq!(verified, content);
    assert_eq!(initiator.step(), InitiatorStep::Complete);
    assert_eq!(keys(client.store.get(client.id).unwrap()), old_client, "not retired before finish");
    let new_ctx = initiator.finish().unwrap();
    client.store.replace(client.id, new_ctx).unwrap();
    let new_client = keys(client.store.get(client.id).unwrap());
    assert_ne!(new_client.0, old_client.0);
    // Mirrored: the client's Sender Key is the server's Recipient Key, and the keys are exactly
    // those of the parameters with ID Context R2 || R3.
    assert_eq!(new_client.0, new_server.1);
    assert_eq!(new_client.1, new_server.0);
    assert_eq!(new_client.2, new_server.2);
    assert_eq!(new_client, keys(&client_params(None).derive_with_id_context(Some(&id3)).unwrap()));

    // Ordinary traffic with the new contexts, found by kid (and raw kid context).
    for include_kid_context in [false, true] {
        let layer = Layer::RFC8613.with_kid_context(include_kid_context);
        let ctx = client.store.prepare_send(client.id).unwrap();
        let (req, mut cb) = protect_request(&get("/hello"), ctx, &layer).unwrap();
        let (plain, mut sb, _) =
            unprotect_request(&req, |kid, kc| server.store.lookup_recipient_mut(kid, kc).map(|(_, c)| c), &layer)
                .unwrap();
        assert_eq!(plain, get("/hello"));
        let ctx = server.store.prepare_send(server.id).unwrap();
        let resp = protect_response(&Message::response(Code::CONTENT), ctx, &mut sb, false, &layer).unwrap();
        unprotect_response(&resp, client.store.get(client.id).unwrap(), &mut cb, &layer).unwrap();
    }

    // A replayed request #2 never establishes again: no R2 is cached any more.
    match server_receive(&mut server, &mut responder, &req2) {
        Ok(ResponderOutcome::Established { .. }) => panic!("replayed request #2 accepted"),
        Ok(ResponderOutcome::Challenge { .. }) | Err(_) => {}
    }
    // And the store's replay window of the new context has it too.
    let stripped = {
        let mut m = req2.clone();
        let opt = OscoreOption::parse(m.options.get(num::OSCORE).unwrap()).unwrap();
        let mut v = Vec::new();
        OscoreOption { kid_context: None, ..opt }.encode_to_vec(&mut v).unwrap();
        m.options.set(num::OSCORE, &v);
        m
    };
    let replay =
        unprotect_request(&stripped, |kid, kc| server.store.lookup_recipient_mut(kid, kc).map(|(_, c)| c), &layer);
    assert!(replay.is_err(), "replay of request #2 accepted by the new context");
}

#[test]
fn client_initiated_cbor_bstr_kid_context() {
    run_client_initiated(KidContextEncoding::CborBstr);
}

#[test]
fn client_initiated_raw_kid_context() {
    run_client_initiated(KidContextEncoding::Raw);
}

#[test]
fn server_initiated() {
    let layer = Layer::RFC8613;
    let id0: &[u8] = &[0xab, 0xcd];
    let mut client = side(&client_params(Some(id0)), "server");
    let mut server = side(&server_params(Some(id0)), ":client");
    let old_server = keys(server.store.get(server.id).unwrap());
    let mut responder = Responder::new(server_params(Some(id0)));

    // An ordinary request with the current context (step 1 omitted).
    let ctx = client.store.prepare_send(client.id).unwrap();
    let (req, mut binding) = protect_request(&get("/x"), ctx, &layer).unwrap();
    // The server decides to re-derive (e.g. it lost the context's mutable state).
    let ResponderOutcome::Challenge { response, request } =
        responder.initiate(&req, Some(id0), &layer, &mut OsRng, Instant::now()).unwrap()
    else {
        panic!()
    };
    assert_eq!(request, get("/x"));

    // The client sees a kid context in the response to an ordinary request.
    let r2 = response_kid_context(&response, KidContextEncoding::CborBstr).unwrap().unwrap();
    assert!(unprotect_response(&response, client.store.get(client.id).unwrap(), &mut binding, &layer).is_err());
    let current = client.store.get(client.id).unwrap().id_context().map(<[u8]>::to_vec);
    let mut initiator =
        Initiator::for_server_initiated(client_params(Some(id0)), current.as_deref(), KidContextEncoding::CborBstr);
    assert!(matches!(initiator.protect_request1(&get("/x"), &layer), Err(RederiveError::WrongStep(_))));
    let resp = initiator.on_response1(&response, &mut binding, &layer, &mut OsRng).unwrap();
    assert_eq!(resp.code, Code::UNAUTHORIZED);

    let (req2, mut b2) = initiator.protect_request2(&get("/x"), &layer).unwrap();
    let ResponderOutcome::Established { request, mut binding, context, .. } =
        server_receive(&mut server, &mut responder, &req2).unwrap()
    else {
        panic!()
    };
    assert_eq!(request, get("/x"));
    let id3 = context.id_context().unwrap().to_vec();
    assert_eq!(&id3[..8], &r2[..]);
    server.store.replace(server.id, context).unwrap();
    assert_ne!(keys(server.store.get(server.id).unwrap()), old_server);
    let ctx = server.store.prepare_send(server.id).unwrap();
    let resp2 = protect_response(&Message::response(Code::CONTENT), ctx, &mut binding, false, &layer).unwrap();
    initiator.on_response2(&resp2, &mut b2, &layer).unwrap();
    let new_client = initiator.finish().unwrap();
    assert_eq!(new_client.sender_key(), server.store.get(server.id).unwrap().recipient_key());
    client.store.replace(client.id, new_client).unwrap();
}

#[test]
fn responder_limits_and_errors() {
    let layer = Layer::RFC8613;
    let now = Instant::now();
    let mut responder =
        Responder::with_options(server_params(None), KidContextEncoding::CborBstr, 8, 2, Duration::from_secs(10));
    let mut runs = Vec::new();
    for _ in 0..2 {
        let mut initiator = Initiator::new(client_params(None), &mut OsRng).unwrap();
        let (req1, b1) = initiator.protect_request1(&get("/r"), &layer).unwrap();
        let ResponderOutcome::Challenge { response, .. } =
            responder.on_request(&req1, &layer, &mut OsRng, now).unwrap()
        else {
            panic!()
        };
        runs.push((initiator, b1, response));
    }
    // App. B.2.1: a bounded number of parallel runs.
    let mut third = Initiator::new(client_params(None), &mut OsRng).unwrap();
    let (req1, _) = third.protect_request1(&get("/r"), &layer).unwrap();
    assert!(matches!(responder.on_request(&req1, &layer, &mut OsRng, now), Err(RederiveError::Busy)));

    // After the R2 lifetime, request #2 no longer completes (it is taken for a new request #1).
    let (mut initiator, mut b1, response) = runs.pop().unwrap();
    initiator.on_response1(&response, &mut b1, &layer, &mut OsRng).unwrap();
    let (req2, _) = initiator.protect_request2(&get("/r"), &layer).unwrap();
    let later = now + Duration::from_secs(11);
    match responder.on_request(&req2, &layer, &mut OsRng, later).unwrap() {
        ResponderOutcome::Challenge { .. } => {}
        ResponderOutcome::Established { .. } => panic!("expired R2 accepted"),
    }

    // Wrong kid; ordinary request without kid context; response without kid context.
    let mut other = Responder::new(ContextParams::new(&SECRET, &[0x01], &[0x77]));
    assert!(matches!(other.on_request(&req1, &layer, &mut OsRng, now), Err(RederiveError::WrongKid)));
    let mut plain_ctx = client_params(None).derive().unwrap();
    let (ordinary, mut ob) = protect_request(&get("/r"), &mut plain_ctx, &layer).unwrap();
    assert!(matches!(responder.on_request(&ordinary, &layer, &mut OsRng, now), Err(RederiveError::NotRederivation)));
    let mut srv = server_params(None).derive().unwrap();
    let (_, mut sb, _) = unprotect_request(&ordinary, |_, _| Some(&mut srv), &layer).unwrap();
    let resp = protect_response(&Message::response(Code::CONTENT), &mut srv, &mut sb, false, &layer).unwrap();
    let mut init = Initiator::new(client_params(None), &mut OsRng).unwrap();
    assert!(matches!(init.on_response1(&resp, &mut ob, &layer, &mut OsRng), Err(RederiveError::NoKidContext)));
    assert!(matches!(init.protect_request2(&get("/r"), &layer), Err(RederiveError::WrongStep(_))));
    assert!(init.finish().is_none());
    // A request #1 that does not verify under ID1 gets no response #1 and costs no R2.
    let before = responder.pending();
    let mut fresh = Responder::new(server_params(None));
    assert!(fresh.on_request(&tamper(&req1), &layer, &mut OsRng, now).is_err());
    assert_eq!(fresh.pending(), 0);
    assert_eq!(responder.pending(), before);
}

#[test]
fn wrong_master_secret_cannot_rederive() {
    let layer = Layer::RFC8613;
    let mut initiator = Initiator::new(ContextParams::new(&[0x99; 16], &[], &[0x01]), &mut OsRng).unwrap();
    let (req1, _) = initiator.protect_request1(&get("/r"), &layer).unwrap();
    let mut responder = Responder::new(server_params(None));
    let err = responder.on_request(&req1, &layer, &mut OsRng, Instant::now()).unwrap_err();
    assert!(matches!(err, RederiveError::Unprotect(_)), "{err}");
    assert_eq!(responder.pending(), 0);
}
