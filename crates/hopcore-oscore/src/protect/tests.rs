//! Tests of the message layer: RFC 8613 Appendix C.4-C.8 as full CoAP messages, every §8 error,
//! notifications, Proxy-Uri, nesting, and property tests.

use hex_literal::hex;
use hopcore_codec::{num, CoapUri, Code, Message, MsgType, Options, OscoreClass, Token};
use proptest::prelude::*;

use super::*;
use crate::alg::AeadAlgorithm;
use crate::context::ContextInput;
use crate::error::Error;
use crate::replay::ReplayWindow;
use crate::sequence::SenderSequence;

const MASTER_SECRET: [u8; 16] = hex!("0102030405060708090a0b0c0d0e0f10");
const MASTER_SALT: [u8; 8] = hex!("9e7ca92223786340");
const ID_CONTEXT: [u8; 8] = hex!("37cbf3210017a2d3");

/// C.1.1 / C.1.2: with Master Salt, client Sender ID h'', server Sender ID 01.
fn c1(client: bool) -> SecurityContext {
    let (s, r): (&[u8], &[u8]) = if client { (&[], &[0x01]) } else { (&[0x01], &[]) };
    SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, s, r).master_salt(&MASTER_SALT)).unwrap()
}

/// C.2.1 / C.2.2: without Master Salt, client 00, server 01.
fn c2(client: bool) -> SecurityContext {
    let (s, r): (&[u8], &[u8]) = if client { (&[0x00], &[0x01]) } else { (&[0x01], &[0x00]) };
    SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, s, r)).unwrap()
}

/// C.3.1 / C.3.2: with Master Salt and ID Context.
fn c3(client: bool) -> SecurityContext {
    let (s, r): (&[u8], &[u8]) = if client { (&[], &[0x01]) } else { (&[0x01], &[]) };
    SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, s, r).master_salt(&MASTER_SALT).id_context(&ID_CONTEXT))
        .unwrap()
}

fn at_20(ctx: SecurityContext) -> SecurityContext {
    ctx.with_sequence(SenderSequence::volatile(20))
}

fn msg(bytes: &[u8]) -> Message {
    Message::parse(bytes).unwrap()
}

fn bytes(m: &Message) -> Vec<u8> {
    m.to_bytes().unwrap()
}

/// A lookup that hands out `ctx` whatever the kid (the layer checks the Recipient ID itself).
fn only<'c>(ctx: &'c mut SecurityContext) -> impl FnOnce(&[u8], Option<&[u8]>) -> Option<&'c mut SecurityContext> {
    move |_, _| Some(ctx)
}

const RFC: Layer<'static> = Layer::RFC8613;

// RFC 8613 C.4-C.6 unprotected and protected requests.
const C4_REQUEST: [u8; 22] = hex!("44015d1f00003974396c6f63616c686f737483747631");
const C4_PROTECTED: [u8; 35] = hex!("44025d1f00003974396c6f63616c686f7374620914ff612f1092f1776f1c1668b3825e");
const C5_REQUEST: [u8; 22] = hex!("440171c30000b932396c6f63616c686f737483747631");
const C5_PROTECTED: [u8; 36] = hex!("440271c30000b932396c6f63616c686f737463091400ff4ed339a5a379b0b8bc731fffb0");
const C6_REQUEST: [u8; 22] = hex!("44012f8eef9bbf7a396c6f63616c686f737483747631");
const C6_PROTECTED: [u8; 44] =
    hex!("44022f8eef9bbf7a396c6f63616c686f73746b19140837cbf3210017a2d3ff72cd7273fd331ac45cffbe55c3");
// RFC 8613 C.7, C.8: the response to C.4.
const C7_RESPONSE: [u8; 21] = hex!("64455d1f00003974ff48656c6c6f20576f726c6421");
const C7_PROTECTED: [u8; 32] = hex!("64445d1f0000397490ffdbaad1e9a7e7b2a813d3c31524378303cdafae119106");
const C8_PROTECTED: [u8; 34] = hex!("64445d1f00003974920100ff4d4c13669384b67354b2b6175ff4b8658c666a6cf88e");

fn check_request_vector(
    mut client: SecurityContext,
    mut server: SecurityContext,
    unprotected: &[u8],
    protected: &[u8],
    layer: &Layer<'_>,
) {
    let original = msg(unprotected);
    let (oscore, binding) = protect_request(&original, &mut client, layer).unwrap();
    assert_eq!(bytes(&oscore), protected);
    assert_eq!(binding.request_piv().as_bytes(), [0x14]);
    assert_eq!(binding.request_kid(), client.sender_id());
    assert!(binding.is_client() && !binding.is_observe_registration());
    assert_eq!(client.sequence().peek(), 21);

    // The server parses the datagram and gets the original request back.
    let (restored, server_binding, info) = unprotect_request(&msg(protected), only(&mut server), &RFC).unwrap();
    assert_eq!(restored, original);
    assert_eq!(bytes(&restored), unprotected);
    assert_eq!(info.kid(), client.sender_id());
    assert_eq!(info.partial_iv().to_sequence(), 20);
    assert_eq!(server_binding.request_nonce(), binding.request_nonce());
    assert!(!server_binding.is_client());
    assert_eq!(server.replay_window().highest(), Some(20));

    // RFC 8613 §7.4: the same request again is a replay, answered 4.01 "Replay detected".
    let err = unprotect_request(&msg(protected), only(&mut server), &RFC).unwrap_err();
    assert!(matches!(err, UnprotectError::Replay(Error::Replay { seq: 20 })), "{err:?}");
    assert_eq!((err.code(), err.diagnostic()), (Code::UNAUTHORIZED, "Replay detected"));
}

#[test]
fn rfc8613_c4_request() {
    check_request_vector(at_20(c1(true)), c1(false), &C4_REQUEST, &C4_PROTECTED, &RFC);
}

#[test]
fn rfc8613_c5_request() {
    check_request_vector(at_20(c2(true)), c2(false), &C5_REQUEST, &C5_PROTECTED, &RFC);
}

#[test]
fn rfc8613_c6_request_with_kid_context() {
    check_request_vector(at_20(c3(true)), c3(false), &C6_REQUEST, &C6_PROTECTED, &RFC.with_kid_context(true));
    // The server reports the ID Context and that it was sent.
    let mut server = c3(false);
    let (_, _, info) = unprotect_request(&msg(&C6_PROTECTED), only(&mut server), &RFC).unwrap();
    assert_eq!(info.id_context(), Some(&ID_CONTEXT[..]));
    assert!(info.kid_context_sent());
    // Without the flag, the same context sends no kid context (C.4-like option 0914).
    let (oscore, _) = protect_request(&msg(&C6_REQUEST), &mut at_20(c3(true)), &RFC).unwrap();
    assert_eq!(oscore.options.get(num::OSCORE), Some(&hex!("0914")[..]));
}

/// Runs C.4 through both sides and returns (client, server, client binding, server binding).
fn c4_exchange(server: SecurityContext) -> (SecurityContext, SecurityContext, RequestBinding, RequestBinding) {
    let mut client = at_20(c1(true));
    let mut server = server;
    let (oscore, client_binding) = protect_request(&msg(&C4_REQUEST), &mut client, &RFC).unwrap();
    let (_, server_binding, _) = unprotect_request(&oscore, only(&mut server), &RFC).unwrap();
    (client, server, client_binding, server_binding)
}

#[test]
fn rfc8613_c7_response_without_piv() {
    let (client, mut server, mut client_binding, mut server_binding) = c4_exchange(c1(false));
    let response = msg(&C7_RESPONSE);
    let oscore = protect_response(&response, &mut server, &mut server_binding, false, &RFC).unwrap();
    assert_eq!(bytes(&oscore), C7_PROTECTED);
    // No sequence number consumed (§8.3 step 3, first alternative).
    assert_eq!(server.sequence().peek(), 0);
    assert!(server_binding.request_nonce_used());

    let restored = unprotect_response(&msg(&C7_PROTECTED), &client, &mut client_binding, &RFC).unwrap();
    assert_eq!(restored, response);
    assert_eq!(bytes(&restored), C7_RESPONSE);

    // The request nonce works once per binding, on both sides (§7.4, §7.4.1, App. D.4).
    assert_eq!(
        protect_response(&response, &mut server, &mut server_binding, false, &RFC),
        Err(ProtectError::RequestNonceUsed)
    );
    let err = unprotect_response(&msg(&C7_PROTECTED), &client, &mut client_binding, &RFC).unwrap_err();
    assert!(matches!(err, UnprotectError::ResponseNonceReused), "{err:?}");
    // A second response with an own Partial IV is fine.
    let second = protect_response(&response, &mut server, &mut server_binding, true, &RFC).unwrap();
    assert_eq!(second.options.get(num::OSCORE), Some(&hex!("0100")[..]));
    assert_eq!(unprotect_response(&second, &client, &mut client_binding, &RFC).unwrap(), response);
}

#[test]
fn rfc8613_c8_response_with_piv() {
    let (client, mut server, mut client_binding, mut server_binding) = c4_exchange(c1(false));
    let response = msg(&C7_RESPONSE);
    let oscore = protect_response(&response, &mut server, &mut server_binding, true, &RFC).unwrap();
    assert_eq!(bytes(&oscore), C8_PROTECTED);
    assert_eq!(server.sequence().peek(), 1);
    assert!(!server_binding.request_nonce_used());

    let restored = unprotect_response(&msg(&C8_PROTECTED), &client, &mut client_binding, &RFC).unwrap();
    assert_eq!(bytes(&restored), C7_RESPONSE);
    assert_eq!(client_binding.notification_number(), Some(0));
    // The same response again (PIV 00 not greater than 0) is refused.
    let err = unprotect_response(&msg(&C8_PROTECTED), &client, &mut client_binding, &RFC).unwrap_err();
    assert!(matches!(err, UnprotectError::ResponseReplay { seq: 0, highest: 0 }), "{err:?}");
    // And so is a response without Partial IV afterwards: it would be the oldest (§7.4.1).
    let mut fresh = c4_exchange(c1(false));
    let no_piv = protect_response(&response, &mut fresh.1, &mut fresh.3, false, &RFC).unwrap();
    // (fresh's nonce differs from ours, but the ordering check comes first)
    let err = unprotect_response(&no_piv, &client, &mut client_binding, &RFC).unwrap_err();
    assert!(matches!(err, UnprotectError::ResponseNonceReused), "{err:?}");
}

// --- RFC 8613 §8.2 errors, each leaving the replay window unchanged. ---

/// The C.4 request as protected datagram, to be modified by the negative tests.
fn c4_protected() -> Message {
    msg(&C4_PROTECTED)
}

/// Unprotects `m` with the C.1 server context; checks that a failure did not touch the window.
fn server_error(m: &Message, server: &mut SecurityContext, layer: &Layer<'_>) -> UnprotectError {
    let before = *server.replay_window();
    let err = unprotect_request(m, only(server), layer).unwrap_err();
    assert_eq!(*server.replay_window(), before, "a failed unprotect changed the replay window ({err:?})");
    err
}

fn with_option(m: &Message, value: &[u8]) -> Message {
    let mut m = m.clone();
    m.options.set(num::OSCORE, value);
    m
}

#[test]
fn malformed_oscore_option_is_4_02() {
    let mut server = c1(false);
    let base = c4_protected();
    for (value, expect) in [
        // Reserved flag bit 0x80 / 0x20 (RFC 8613 §6.1).
        (&hex!("8914")[..], "ReservedFlagBits"),
        (&hex!("2914")[..], "ReservedFlagBits"),
        // n = 6 is reserved.
        (&hex!("0e010203040506")[..], "ReservedPivLength"),
        // Truncated Partial IV, truncated kid context.
        (&hex!("0b14")[..], "Truncated"),
        (&hex!("1914")[..], "Truncated"),
        (&hex!("191408aabb")[..], "Truncated"),
        // Flags 00 with a non-empty value (RFC 8613 §2).
        (&hex!("0014")[..], "ZeroFlagsNotEmpty"),
        // Trailing bytes without k.
        (&hex!("011400")[..], "TrailingBytes"),
    ] {
        let err = server_error(&with_option(&base, value), &mut server, &RFC);
        assert!(format!("{err:?}").contains(expect), "{value:02x?}: {err:?}");
        assert_eq!((err.code(), err.diagnostic()), (Code::BAD_OPTION, "Failed to decode COSE"), "{value:02x?}");
    }
    // Missing Partial IV or kid in a request, no option, two options, no payload: all 4.02.
    type Case = (Message, fn(&UnprotectError) -> bool);
    let cases: [Case; 5] = [
        (with_option(&base, &hex!("08")), |e| matches!(e, UnprotectError::MissingPartialIv)),
        (with_option(&base, &hex!("0114")), |e| matches!(e, UnprotectError::MissingKid)),
        (
            {
                let mut m = base.clone();
                m.options.remove(num::OSCORE);
                m
            },
            |e| matches!(e, UnprotectError::NoOscoreOption),
        ),
        (
            {
                let mut m = base.clone();
                m.options.push(num::OSCORE, &hex!("0914"));
                m
            },
            |e| matches!(e, UnprotectError::RepeatedOscoreOption),
        ),
        (
            {
                let mut m = base.clone();
                m.payload.clear();
                m
            },
            |e| matches!(e, UnprotectError::EmptyPayload),
        ),
    ];
    for (m, check) in cases {
        let err = server_error(&m, &mut server, &RFC);
        assert!(check(&err), "{err:?}");
        assert_eq!(err.code(), Code::BAD_OPTION, "{err:?}");
    }
    // Nothing was accepted: the genuine request still is.
    assert!(unprotect_request(&base, only(&mut server), &RFC).is_ok());
}

#[test]
fn unknown_kid_is_4_01_security_context_not_found() {
    let mut server = c1(false);
    // kid 07 instead of h'': the lookup finds nothing.
    let m = with_option(&c4_protected(), &hex!("091407"));
    let before = *server.replay_window();
    let err = unprotect_request(&m, |kid, _| (kid == [0u8; 0]).then_some(&mut server), &RFC).unwrap_err();
    assert!(matches!(err, UnprotectError::ContextNotFound), "{err:?}");
    assert_eq!((err.code(), err.diagnostic()), (Code::UNAUTHORIZED, "Security context not found"));
    assert_eq!(*server.replay_window(), before);
    // A lookup that returns a context with another Recipient ID is not trusted.
    let err = server_error(&m, &mut server, &RFC);
    assert!(matches!(err, UnprotectError::ContextNotFound), "{err:?}");
    // A kid context that is not the context's ID Context (RFC 8613 §5).
    let err = server_error(&with_option(&c4_protected(), &hex!("191401aa")), &mut server, &RFC);
    assert!(matches!(err, UnprotectError::ContextNotFound), "{err:?}");
    // The lookup sees kid and kid context as sent.
    let mut seen = None;
    let _ = unprotect_request(
        &with_option(&c4_protected(), &hex!("191402aabb05")),
        |kid, ctx| {
            seen = Some((kid.to_vec(), ctx.map(<[u8]>::to_vec)));
            None
        },
        &RFC,
    );
    assert_eq!(seen, Some((vec![0x05], Some(vec![0xaa, 0xbb]))));
}

#[test]
fn replay_is_4_01_and_too_old_too() {
    let mut server = c1(false);
    unprotect_request(&c4_protected(), only(&mut server), &RFC).unwrap();
    let err = server_error(&c4_protected(), &mut server, &RFC);
    assert!(matches!(err, UnprotectError::Replay(Error::Replay { seq: 20 })), "{err:?}");
    // Push the window far ahead: PIV 20 is now too old.
    let mut client = c1(true).with_sequence(SenderSequence::volatile(100));
    let (later, _) = protect_request(&msg(&C4_REQUEST), &mut client, &RFC).unwrap();
    unprotect_request(&later, only(&mut server), &RFC).unwrap();
    let err = server_error(&c4_protected(), &mut server, &RFC);
    assert!(matches!(err, UnprotectError::Replay(Error::ReplayTooOld { seq: 20, highest: 100, .. })), "{err:?}");
    assert_eq!(err.code(), Code::UNAUTHORIZED);
}

#[test]
fn tampered_ciphertext_is_4_00_decryption_failed() {
    let mut server = c1(false);
    let base = c4_protected();
    for i in 0..base.payload.len() {
        let mut m = base.clone();
        m.payload[i] ^= 0x01;
        let err = server_error(&m, &mut server, &RFC);
        assert!(matches!(err, UnprotectError::DecryptFailed), "byte {i}: {err:?}");
        assert_eq!((err.code(), err.diagnostic()), (Code::BAD_REQUEST, "Decryption failed"));
    }
    // Truncated below the tag.
    let mut m = base.clone();
    m.payload.truncate(3);
    assert!(matches!(server_error(&m, &mut server, &RFC), UnprotectError::DecryptFailed));
    // A different Partial IV changes nonce and request_piv of the AAD.
    let err = server_error(&with_option(&base, &hex!("0915")), &mut server, &RFC);
    assert!(matches!(err, UnprotectError::DecryptFailed), "{err:?}");
    let err = server_error(&with_option(&base, &hex!("0a0014")), &mut server, &RFC);
    assert!(matches!(err, UnprotectError::DecryptFailed), "non-minimal PIV is another AAD: {err:?}");
    // Still acceptable afterwards.
    assert!(unprotect_request(&base, only(&mut server), &RFC).is_ok());
}

/// A policy where Uri-Host is Class I (integrity protected only) and option 2052 is Class I.
fn class_i_policy(number: u16, kind: MessageKind) -> OscoreClass {
    match number {
        num::URI_HOST | 2052 => OscoreClass::I,
        _ => Rfc8613Classes.class(number, kind),
    }
}

#[test]
fn class_i_options_are_in_the_aad() {
    let layer = RFC.with_classes(&class_i_policy);
    let mut client = at_20(c1(true));
    let mut server = c1(false);
    let mut original = msg(&C4_REQUEST);
    original.options.push(2052, b"int");
    let (oscore, _) = protect_request(&original, &mut client, &layer).unwrap();
    // Class I options stay Outer: Uri-Host, 2052 and the OSCORE option; Uri-Path is Inner.
    let outer: Vec<u16> = oscore.options.iter().map(|o| o.number).collect();
    assert_eq!(outer, [num::URI_HOST, num::OSCORE, 2052]);
    // The Class U option of the RFC vector is now Class I, so the ciphertext differs.
    assert_ne!(oscore.payload, msg(&C4_PROTECTED).payload);

    // A tampered Class I option or a receiver without the policy: 4.00.
    let mut tampered = oscore.clone();
    tampered.options.set(num::URI_HOST, b"evil");
    let err = server_error(&tampered, &mut server, &layer);
    assert!(matches!(err, UnprotectError::DecryptFailed), "{err:?}");
    let mut removed = oscore.clone();
    removed.options.remove(2052);
    assert!(matches!(server_error(&removed, &mut server, &layer), UnprotectError::DecryptFailed));
    assert!(matches!(server_error(&oscore, &mut server, &RFC), UnprotectError::DecryptFailed));
    // Intact: verifies and comes back whole.
    let (restored, _, _) = unprotect_request(&oscore, only(&mut server), &layer).unwrap();
    assert_eq!(restored, original);
}

#[test]
fn class_u_options_are_not_protected() {
    // RFC 8613 §4.1.2: Class U is unprotected; a changed Uri-Host still verifies (documented
    // property, §4.1.3.2: different servers SHALL have different security contexts).
    let mut server = c1(false);
    let mut m = c4_protected();
    m.options.set(num::URI_HOST, b"elsewhere");
    m.code = Code::PUT;
    let (restored, _, _) = unprotect_request(&m, only(&mut server), &RFC).unwrap();
    assert_eq!(restored.options.get(num::URI_HOST), Some(&b"elsewhere"[..]));
    assert_eq!(restored.code, Code::GET, "the Outer code is discarded");
    // An Outer instance of an Inner option is discarded (§8.2 step 1); Inner wins.
    let mut server = c1(false);
    let mut m = c4_protected();
    m.options.push(num::URI_PATH, b"injected");
    m.options.push(num::ETAG, b"e");
    let (restored, _, _) = unprotect_request(&m, only(&mut server), &RFC).unwrap();
    assert_eq!(restored, msg(&C4_REQUEST));
}

#[test]
fn response_to_the_wrong_request_fails() {
    let mut client = c1(true);
    let mut server = c1(false);
    let (req1, mut b1) = protect_request(&msg(&C4_REQUEST), &mut client, &RFC).unwrap();
    let (_req2, mut b2) = protect_request(&msg(&C4_REQUEST), &mut client, &RFC).unwrap();
    let (_, mut s1, _) = unprotect_request(&req1, only(&mut server), &RFC).unwrap();
    let response = msg(&C7_RESPONSE);
    let without_piv = protect_response(&response, &mut server, &mut s1, false, &RFC).unwrap();
    let with_piv = protect_response(&response, &mut server, &mut s1, true, &RFC).unwrap();
    for oscore in [&without_piv, &with_piv] {
        let err = unprotect_response(oscore, &client, &mut b2, &RFC).unwrap_err();
        assert!(matches!(err, UnprotectError::DecryptFailed), "{err:?}");
        // The failed attempt did not consume anything.
        assert!(!b2.request_nonce_used());
        assert_eq!(b2.notification_number(), None);
        // A tampered response to the right request fails as well, without state change.
        let mut tampered = oscore.clone();
        tampered.payload[0] ^= 0x80;
        let err = unprotect_response(&tampered, &client, &mut b1, &RFC).unwrap_err();
        assert!(matches!(err, UnprotectError::DecryptFailed), "{err:?}");
        assert!(!b1.request_nonce_used());
        assert_eq!(b1.notification_number(), None);
    }
    assert_eq!(unprotect_response(&without_piv, &client, &mut b1, &RFC).unwrap(), response);
    assert_eq!(unprotect_response(&with_piv, &client, &mut b1, &RFC).unwrap(), response);
}

#[test]
fn bindings_have_roles() {
    let (client, mut server, mut client_binding, mut server_binding) = c4_exchange(c1(false));
    let response = msg(&C7_RESPONSE);
    // A client binding cannot protect a response: that would reuse the client's own request
    // nonce with its own key.
    let mut client_ctx = client;
    assert_eq!(
        protect_response(&response, &mut client_ctx, &mut client_binding, false, &RFC),
        Err(ProtectError::WrongBindingRole)
    );
    let oscore = protect_response(&response, &mut server, &mut server_binding, false, &RFC).unwrap();
    let err = unprotect_response(&oscore, &server, &mut server_binding, &RFC).unwrap_err();
    assert!(matches!(err, UnprotectError::WrongBindingRole));
    // Codes: a response code cannot be protected as request and vice versa.
    assert_eq!(protect_request(&response, &mut client_ctx, &RFC).unwrap_err(), ProtectError::WrongCode(Code::CONTENT));
    assert_eq!(
        protect_response(&msg(&C4_REQUEST), &mut server, &mut server_binding, true, &RFC),
        Err(ProtectError::WrongCode(Code::GET))
    );
}

#[test]
fn error_response_has_code_max_age_0_and_diagnostic() {
    let mut server = c1(false);
    let mut m = c4_protected();
    m.payload[0] ^= 1;
    let err = unprotect_request(&m, only(&mut server), &RFC).unwrap_err();
    let response = error_response(&err);
    assert_eq!(response.code, Code::BAD_REQUEST);
    // RFC 8613 §8.2: "The server MAY set an Outer Max-Age option with value zero".
    assert_eq!(response.options.get(num::MAX_AGE), Some(&[][..]));
    assert_eq!(response.options.len(), 1);
    assert_eq!(response.payload, b"Decryption failed");
    assert!(response.options.get(num::OSCORE).is_none(), "OSCORE errors are sent unprotected (§8.3)");
    let not_found = error_response(&UnprotectError::ContextNotFound);
    assert_eq!((not_found.code, &not_found.payload[..]), (Code::UNAUTHORIZED, &b"Security context not found"[..]));
}

#[test]
fn malformed_plaintext_is_rejected_after_decryption_without_window_update() {
    // Seal hand-made plaintexts with the C.4 client context and the real nonce/AAD.
    let mut server = c1(false);
    for (i, plaintext) in [
        &hex!("")[..],           // no code
        &hex!("01ff")[..],       // payload marker with empty payload
        &hex!("01f0")[..],       // reserved delta nibble
        &hex!("01b374")[..],     // truncated option
        &hex!("45")[..],         // a response code in a request
        &hex!("00")[..],         // Empty code
        &hex!("019000ff41")[..], // inner OSCORE option (nested) with the RFC policy
    ]
    .into_iter()
    .enumerate()
    {
        let client = c1(true);
        let piv = PartialIv::from_sequence(50 + i as u64).unwrap();
        let nonce = client.sender_nonce(&piv).unwrap();
        let mut aad = Vec::new();
        ExternalAad::new(client.aead(), &[], piv.as_bytes()).write_aad_to_vec(&mut aad).unwrap();
        let mut payload = plaintext.to_vec();
        client.seal_vec(&nonce, &aad, &mut payload).unwrap();
        let mut option = Vec::new();
        OscoreOption::request(piv, &[], None).encode_to_vec(&mut option).unwrap();
        let mut m = c4_protected();
        m.options.set(num::OSCORE, &option);
        m.payload = payload;
        let err = server_error(&m, &mut server, &RFC);
        match i {
            6 => assert!(matches!(err, UnprotectError::NestedOscore), "{err:?}"),
            _ => assert!(matches!(err, UnprotectError::MalformedPlaintext(_)), "{i}: {err:?}"),
        }
    }
}

#[test]
fn unsynchronized_window_returns_the_request_for_an_echo_challenge() {
    // App. B.1.2: after a reboot without the window.
    let mut server = c1(false).with_replay_window(ReplayWindow::unsynchronized(32).unwrap());
    let err = unprotect_request(&c4_protected(), only(&mut server), &RFC).unwrap_err();
    assert_eq!(err.code(), Code::UNAUTHORIZED);
    let UnprotectError::FreshnessUnverified(unverified) = err else { panic!("{err:?}") };
    let UnverifiedRequest { message, mut binding, info } = *unverified;
    assert_eq!(message, msg(&C4_REQUEST));
    assert!(!server.replay_window().is_synchronized());
    // The 4.01 + Echo response MUST carry the server's own Partial IV.
    let challenge = Message::response(Code::UNAUTHORIZED).with_option(num::ECHO, b"echo-value");
    assert_eq!(
        protect_response(&challenge, &mut server, &mut binding, false, &RFC),
        Err(ProtectError::RequestNonceUsed)
    );
    let protected = protect_response(&challenge, &mut server, &mut binding, true, &RFC).unwrap();
    assert!(protected.options.get(num::ECHO).is_none(), "Echo is Inner");
    // Once the Echo is verified in a later request, the window starts from there.
    server.replay_window_mut().synchronize(info.partial_iv().to_sequence());
    assert!(matches!(server_error(&c4_protected(), &mut server, &RFC), UnprotectError::Replay(_)));
}

#[test]
fn sequence_errors_surface_and_nested_oscore_is_refused_by_default() {
    let mut exhausted = c1(true).with_sequence(SenderSequence::volatile(1 << 40));
    assert_eq!(
        protect_request(&msg(&C4_REQUEST), &mut exhausted, &RFC).unwrap_err(),
        ProtectError::Crypto(Error::SequenceExhausted)
    );
    let mut persistent = c1(true).with_sequence(SenderSequence::persistent(0, 10).unwrap());
    assert!(matches!(
        protect_request(&msg(&C4_REQUEST), &mut persistent, &RFC),
        Err(ProtectError::Crypto(Error::PersistRequired { next: 0, reserve_until: 10 }))
    ));
    // RFC 8613 §4.1.3.7.
    let mut client = c1(true);
    let (oscore, _) = protect_request(&msg(&C4_REQUEST), &mut client, &RFC).unwrap();
    assert_eq!(protect_request(&oscore, &mut c2(true), &RFC).unwrap_err(), ProtectError::NestedOscore);
    // The caller's Outer options must not carry an OSCORE option.
    let mut outer = Options::new();
    outer.push(num::OSCORE, &[]);
    assert_eq!(
        protect_request(&msg(&C4_REQUEST), &mut client, &RFC.with_outer_options(&outer)).unwrap_err(),
        ProtectError::OscoreInOuterOptions
    );
}

// --- Observe (RFC 8613 §4.1.3.5, §7.4.1, §8.3.1, §8.4.2) ---

fn observe_request() -> Message {
    let mut m = Message::request(Code::GET);
    m.token = Token::from_slice(&[0xab, 0xcd]).unwrap();
    m.message_id = 7;
    m.options.push(num::URI_HOST, b"sensor");
    m.options.push_uint(num::OBSERVE, 0);
    m.set_path("/temp");
    m
}

fn notification(observe: u32, text: &str) -> Message {
    let mut n = Message::response(Code::CONTENT);
    n.token = Token::from_slice(&[0xab, 0xcd]).unwrap();
    n.options.push_uint(num::OBSERVE, observe);
    n.options.push_uint(num::CONTENT_FORMAT, 0);
    n.payload = text.as_bytes().to_vec();
    n
}

#[test]
fn observe_registration_and_notifications() {
    let mut client = c1(true);
    let mut server = c1(false);
    let request = observe_request();
    let (oscore, mut cb) = protect_request(&request, &mut client, &RFC).unwrap();
    // §4.1.3.5: Outer code FETCH, Outer Observe with the original value (0 = empty).
    assert_eq!(oscore.code, Code::FETCH);
    assert_eq!(oscore.options.get(num::OBSERVE), Some(&[][..]));
    assert!(cb.is_observe_registration());
    let (restored, mut sb, _) = unprotect_request(&oscore, only(&mut server), &RFC).unwrap();
    assert_eq!(restored, request);
    assert!(sb.is_observe_registration());

    // First notification may use the request nonce; the next ones must have an own PIV.
    let first = protect_response(&notification(1, "20"), &mut server, &mut sb, false, &RFC).unwrap();
    assert_eq!(first.code, Code::CONTENT, "§4.2: 2.05 for notifications");
    assert_eq!(first.options.get_uint(num::OBSERVE), Some(1), "Outer Observe keeps the value");
    assert_eq!(first.options.get(num::OSCORE), Some(&[][..]));
    assert_eq!(
        protect_response(&notification(2, "21"), &mut server, &mut sb, false, &RFC),
        Err(ProtectError::RequestNonceUsed)
    );
    let second = protect_response(&notification(2, "21"), &mut server, &mut sb, true, &RFC).unwrap(); // PIV 0
    let third = protect_response(&notification(3, "22"), &mut server, &mut sb, true, &RFC).unwrap(); // PIV 1
    let fourth = protect_response(&notification(4, "23"), &mut server, &mut sb, true, &RFC).unwrap(); // PIV 2

    // The client orders by Partial IV. The PIV-less first notification comes back with the
    // Inner (empty) Observe, the others with Observe = PIV.
    let n = unprotect_response(&first, &client, &mut cb, &RFC).unwrap();
    assert_eq!(n.options.get(num::OBSERVE), Some(&[][..]));
    assert_eq!(n.payload, b"20");
    let n = unprotect_response(&third, &client, &mut cb, &RFC).unwrap();
    assert_eq!(n.options.get_uint(num::OBSERVE), Some(1));
    assert_eq!(cb.notification_number(), Some(1));
    // `second` (PIV 0) arrives late: older than the Notification Number → refused.
    let err = unprotect_response(&second, &client, &mut cb, &RFC).unwrap_err();
    assert!(matches!(err, UnprotectError::ResponseReplay { seq: 0, highest: 1 }), "{err:?}");
    // Replayed `third` refused, `fourth` accepted.
    assert!(matches!(unprotect_response(&third, &client, &mut cb, &RFC), Err(UnprotectError::ResponseReplay { .. })));
    let n = unprotect_response(&fourth, &client, &mut cb, &RFC).unwrap();
    assert_eq!((n.options.get_uint(num::OBSERVE), &n.payload[..]), (Some(2), &b"23"[..]));
    assert_eq!(n.code, Code::CONTENT);
    // The Outer Observe is ignored by the client (§4.1.3.5.2).
    let mut fifth = protect_response(&notification(5, "24"), &mut server, &mut sb, true, &RFC).unwrap();
    fifth.options.set_uint(num::OBSERVE, 999_999);
    let n = unprotect_response(&fifth, &client, &mut cb, &RFC).unwrap();
    assert_eq!(n.options.get_uint(num::OBSERVE), Some(3));
}

#[test]
fn observe_in_a_response_to_a_plain_request_is_refused() {
    let (client, mut server, mut cb, mut sb) = c4_exchange(c1(false));
    let oscore = protect_response(&notification(5, "x"), &mut server, &mut sb, true, &RFC).unwrap();
    let err = unprotect_response(&oscore, &client, &mut cb, &RFC).unwrap_err();
    assert!(matches!(err, UnprotectError::UnexpectedObserve), "{err:?}");
    assert_eq!(cb.notification_number(), None, "not accepted, state unchanged");
}

// --- Proxy-Uri (RFC 8613 §4.1.3.3) and Outer options ---

#[test]
fn proxy_uri_is_decomposed() {
    let mut client = c1(true);
    let mut server = c1(false);
    let mut request = Message::request(Code::GET);
    request.options.push(num::PROXY_URI, b"coap://example.com/resource?q=1");
    let (oscore, _) = protect_request(&request, &mut client, &RFC).unwrap();
    // The RFC's example: the Outer Proxy-Uri is "coap://example.com".
    let outer: Vec<(u16, &[u8])> = oscore.options.iter().map(|o| (o.number, o.value)).collect();
    assert_eq!(outer[0], (num::OSCORE, &hex!("0900")[..]));
    assert_eq!(outer[1], (num::PROXY_URI, &b"coap://example.com"[..]));
    assert_eq!(outer.len(), 2);

    let (restored, _, _) = unprotect_request(&oscore, only(&mut server), &RFC).unwrap();
    let mut expected = Message::request(Code::GET);
    expected.options.push(num::PROXY_SCHEME, b"coap");
    expected.options.push(num::URI_HOST, b"example.com");
    expected.options.push_uint(num::URI_PORT, 5683);
    expected.options.push(num::URI_PATH, b"resource");
    expected.options.push(num::URI_QUERY, b"q=1");
    assert_eq!(restored, expected);

    // With an explicit port and an IPv6 literal.
    let mut request = Message::request(Code::POST);
    request.options.push(num::PROXY_URI, b"coap://[2001:db8::1]:61616/a/%C3%A9");
    let (oscore, _) = protect_request(&request, &mut client, &RFC).unwrap();
    assert_eq!(oscore.options.get(num::PROXY_URI), Some(&b"coap://[2001:db8::1]:61616"[..]));
    let (restored, _, _) = unprotect_request(&oscore, only(&mut server), &RFC).unwrap();
    assert_eq!(restored.options.get(num::URI_HOST), Some(&b"2001:db8::1"[..]));
    assert_eq!(restored.options.get_uint(num::URI_PORT), Some(61616));
    assert_eq!(restored.options.get_all(num::URI_PATH).collect::<Vec<_>>(), [&b"a"[..], "é".as_bytes()]);

    // Proxy-Uri with Uri-* options, or one that does not parse, is refused.
    let mut bad = request.clone();
    bad.options.push(num::URI_PATH, b"x");
    assert_eq!(protect_request(&bad, &mut client, &RFC).unwrap_err(), ProtectError::ProxyUriConflict);
    let mut bad = Message::request(Code::GET);
    bad.options.push(num::PROXY_URI, b"not a uri");
    assert!(matches!(protect_request(&bad, &mut client, &RFC), Err(ProtectError::ProxyUri(_))));

    // A received Outer Proxy-Uri with a path next to Inner Uri-Path is malformed.
    let mut both = protect_request(
        &{
            let mut m = Message::request(Code::GET);
            m.options.push(num::PROXY_URI, b"coap://h/p");
            m
        },
        &mut client,
        &RFC,
    )
    .unwrap()
    .0;
    both.options.set(num::PROXY_URI, b"coap://h/other");
    let err = server_error(&both, &mut server, &RFC);
    assert!(matches!(err, UnprotectError::ProxyUriConflict), "{err:?}");
    assert_eq!(err.code(), Code::BAD_OPTION);
}

#[test]
fn outer_block_options_are_hop_by_hop() {
    let mut client = c1(true);
    let mut server = c1(false);
    let mut request = msg(&C4_REQUEST);
    request.code = Code::PUT;
    request.options.push_uint(num::BLOCK1, 0x0e); // Inner Block1: end-to-end fragment
    request.payload = vec![0x42; 32];
    let mut outer = Options::new();
    outer.push_uint(num::BLOCK1, 0x0a); // Outer Block1 set by the sender for its hop
    outer.push_uint(num::SIZE1, 100);
    let (oscore, _) = protect_request(&request, &mut client, &RFC.with_outer_options(&outer)).unwrap();
    assert_eq!(oscore.options.get_uint(num::BLOCK1), Some(0x0a), "only the Outer one is visible");
    assert_eq!(oscore.options.get_uint(num::SIZE1), Some(100));
    // The receiver discards the Outer Block options (§8.2 step 1) and keeps the Inner one.
    let (restored, _, _) = unprotect_request(&oscore, only(&mut server), &RFC).unwrap();
    assert_eq!(restored, request);
}

// --- Nesting (CP §2.2) ---

#[test]
fn nested_layers_protect_and_unprotect_in_reverse_order() {
    // Origin client C with server S (inner layer, ctx C.1) and with proxy P (outer layer, ctx
    // C.2); C.2's ids: C = 00, P = 01.
    let nested = NestedClasses(Rfc8613Classes);
    let outer_layer = RFC.with_classes(&nested);
    let mut c_s = c1(true);
    let mut s_c = c1(false);
    let mut c_p = c2(true);
    let mut p_c = c2(false);

    let mut request = observe_request();
    request.options.push_uint(num::ACCEPT, 50);
    request.payload = b"body".to_vec();

    // C applies the end-to-end layer first, then the one for P.
    let (m1, mut cb_s) = protect_request(&request, &mut c_s, &RFC).unwrap();
    let (m2, mut cb_p) = protect_request(&m1, &mut c_p, &outer_layer).unwrap();
    // In the outer layer the inner OSCORE option is Class E: only one OSCORE option is visible.
    assert_eq!(m2.options.get_all(num::OSCORE).count(), 1);
    assert_eq!(m2.options.get(num::OSCORE), Some(&hex!("090000")[..]));
    assert_eq!(m2.code, Code::FETCH);

    // P removes its layer and gets C's end-to-end message; S removes the last one.
    let (at_p, mut pb, _) = unprotect_request(&m2, only(&mut p_c), &outer_layer).unwrap();
    assert_eq!(at_p, m1);
    // The RFC policy refuses the nested option (RFC 8613 §4.1.3.7).
    let mut p_again = c2(false);
    assert!(matches!(server_error(&m2, &mut p_again, &RFC), UnprotectError::NestedOscore));
    let (at_s, mut sb, _) = unprotect_request(&at_p, only(&mut s_c), &RFC).unwrap();
    assert_eq!(at_s, request);

    // Responses: S protects end-to-end, P protects for C; C removes P's layer, then S's.
    let response = notification(9, "reply");
    let r1 = protect_response(&response, &mut s_c, &mut sb, true, &RFC).unwrap();
    let r2 = protect_response(&r1, &mut p_c, &mut pb, false, &outer_layer).unwrap();
    assert_eq!(r2.options.get_all(num::OSCORE).count(), 1);
    let at_c1 = unprotect_response(&r2, &c_p, &mut cb_p, &outer_layer).unwrap();
    // P's layer had no PIV; the Observe value of m1 is the Inner (empty) one of that layer.
    let mut r1_seen = r1.clone();
    r1_seen.options.set(num::OBSERVE, &[]);
    assert_eq!(at_c1, r1_seen);
    let at_c = unprotect_response(&at_c1, &c_s, &mut cb_s, &RFC).unwrap();
    let mut expected = response.clone();
    expected.options.set_uint(num::OBSERVE, 0); // S's PIV 0 (§4.1.3.5.2)
    assert_eq!(at_c, expected);
}

// --- Property tests ---

fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9_~.-]{0,8}(%20)?"
}

fn proxy_uri() -> impl Strategy<Value = String> {
    (
        prop_oneof![Just("coap".to_string()), Just("coaps".to_string()), Just("http".to_string())],
        prop_oneof!["[a-z][a-z0-9-]{0,10}(\\.[a-z]{2,5})?", Just("[2001:db8::17]".to_string())],
        proptest::option::of(any::<u16>()),
        proptest::collection::vec(segment(), 0..4),
        proptest::collection::vec("[a-z0-9=]{0,6}", 0..3),
    )
        .prop_map(|(scheme, host, port, path, query)| {
            let mut uri = format!("{scheme}://{host}");
            if let Some(p) = port {
                uri.push_str(&format!(":{p}"));
            }
            for s in &path {
                uri.push('/');
                uri.push_str(s);
            }
            if !query.is_empty() {
                uri.push('?');
                uri.push_str(&query.join("&"));
            }
            uri
        })
}

/// Options of any class except OSCORE: (number, value).
fn any_option() -> impl Strategy<Value = (u16, Vec<u8>)> {
    let numbered = |n: u16, max: usize| proptest::collection::vec(any::<u8>(), 0..=max).prop_map(move |v| (n, v));
    prop_oneof![
        numbered(num::IF_MATCH, 8),
        numbered(num::ETAG, 8),
        numbered(num::ACCEPT, 2),
        numbered(num::CONTENT_FORMAT, 2),
        numbered(num::MAX_AGE, 4),
        numbered(num::HOP_LIMIT, 1),
        numbered(num::EDHOC, 0),
        numbered(num::BLOCK1, 3),
        numbered(num::SIZE2, 4),
        numbered(num::NO_RESPONSE, 1),
        numbered(num::ECHO, 40),
        numbered(num::REQUEST_TAG, 8),
        numbered(2, 4),   // Multicast-Timeout (Class U)
        numbered(248, 5), // Reply-From (Class U)
        (2048u16..3000, proptest::collection::vec(any::<u8>(), 0..300)),
        (60000u16..=65535, proptest::collection::vec(any::<u8>(), 0..20)),
    ]
}

#[derive(Debug, Clone)]
struct RequestCase {
    message: Message,
    proxy_uri: Option<String>,
}

fn request_case() -> impl Strategy<Value = RequestCase> {
    (
        (
            prop_oneof![Just(MsgType::Con), Just(MsgType::Non)],
            prop::sample::select(vec![Code::GET, Code::POST, Code::PUT, Code::DELETE, Code::FETCH, Code::IPATCH]),
            any::<u16>(),
            proptest::collection::vec(any::<u8>(), 0..=8),
        ),
        prop_oneof![
            proptest::option::of(proxy_uri()).prop_map(|p| (p, None, None, vec![], vec![])),
            (
                proptest::option::of("[a-z0-9.-]{1,20}"),
                proptest::option::of(any::<u16>()),
                proptest::collection::vec("[ -~]{0,12}", 0..4),
                proptest::collection::vec("[ -~]{0,12}", 0..3),
            )
                .prop_map(|(h, p, path, q)| (None, h, p, path, q)),
        ],
        proptest::option::of(0u32..=1),
        proptest::option::of(0u32..(1 << 24)),
        proptest::collection::vec(any_option(), 0..6),
        proptest::collection::vec(any::<u8>(), 0..200),
    )
        .prop_map(
            |((mtype, code, mid, token), (proxy, host, port, path, query), observe, block2, extra, payload)| {
                let mut m = Message::new(mtype, code);
                m.message_id = mid;
                m.token = Token::from_slice(&token).unwrap();
                if let Some(p) = &proxy {
                    m.options.push(num::PROXY_URI, p.as_bytes());
                }
                if let Some(h) = host {
                    m.options.push(num::URI_HOST, h.as_bytes());
                }
                if let Some(p) = port {
                    m.options.push_uint(num::URI_PORT, u32::from(p));
                }
                for s in path {
                    m.options.push(num::URI_PATH, s.as_bytes());
                }
                for q in query {
                    m.options.push(num::URI_QUERY, q.as_bytes());
                }
                if let Some(o) = observe {
                    m.options.push_uint(num::OBSERVE, o);
                }
                if let Some(b) = block2 {
                    m.options.push_uint(num::BLOCK2, b);
                }
                for (n, v) in extra {
                    m.options.push(n, &v);
                }
                m.payload = payload;
                RequestCase { message: m, proxy_uri: proxy }
            },
        )
}

/// The documented form of a request after protect → unprotect: a Proxy-Uri comes back as
/// Proxy-Scheme, Uri-Host, Uri-Port, Uri-Path, Uri-Query.
fn expected_request(case: &RequestCase) -> Message {
    let mut m = case.message.clone();
    if let Some(p) = &case.proxy_uri {
        let uri = CoapUri::parse(p).unwrap();
        m.options.remove(num::PROXY_URI);
        m.options.push(num::PROXY_SCHEME, uri.scheme.as_bytes());
        m.options.push(num::URI_HOST, uri.host.as_bytes());
        m.options.push_uint(num::URI_PORT, u32::from(uri.port_or_default()));
        uri.write_path_query(&mut m.options);
    }
    m
}

fn context_pair(
    alg: AeadAlgorithm,
    client_id: &[u8],
    server_id: &[u8],
    id_context: Option<&[u8]>,
) -> (SecurityContext, SecurityContext) {
    let mk = |s: &[u8], r: &[u8]| {
        let mut input = ContextInput::new(&MASTER_SECRET, s, r).aead(alg).master_salt(&MASTER_SALT);
        input.id_context = id_context;
        SecurityContext::derive(&input).unwrap()
    };
    (mk(client_id, server_id), mk(server_id, client_id))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Random requests and their responses survive protect → unprotect (modulo the Proxy-Uri
    /// decomposition and the notification Observe value), for every AEAD algorithm.
    #[test]
    fn roundtrip(
        case in request_case(),
        alg_idx in 0usize..4,
        start in 0u64..(1 << 40) - 10,
        kid_context in any::<bool>(),
        ids in prop_oneof![Just((vec![], vec![1u8])), Just((vec![0x42u8, 0x43], vec![]))],
        response_options in proptest::collection::vec(any_option(), 0..4),
        response_payload in proptest::collection::vec(any::<u8>(), 0..100),
        response_code in prop::sample::select(vec![Code::CREATED, Code::CHANGED, Code::CONTENT, Code::NOT_FOUND, Code::INTERNAL_SERVER_ERROR]),
        notify in proptest::option::of(any::<u32>().prop_map(|v| v & 0xff_ffff)),
        own_piv in any::<bool>(),
    ) {
        let alg = AeadAlgorithm::ALL[alg_idx];
        let (mut client, mut server) = context_pair(alg, &ids.0, &ids.1, Some(&ID_CONTEXT));
        client = client.with_sequence(SenderSequence::volatile(start));
        let layer = RFC.with_kid_context(kid_context);
        let (oscore, mut cb) = protect_request(&case.message, &mut client, &layer).unwrap();
        // What goes on the wire must parse back identically.
        let wire = Message::parse(&bytes(&oscore)).unwrap();
        prop_assert_eq!(&wire, &oscore);
        prop_assert!(wire.options.iter().all(|o| RFC.class(o.number, MessageKind::Request).has_outer()));
        let (restored, mut sb, info) = unprotect_request(&wire, only(&mut server), &RFC).unwrap();
        prop_assert_eq!(&restored, &expected_request(&case));
        prop_assert_eq!(info.partial_iv().to_sequence(), start);
        prop_assert_eq!(info.kid_context_sent(), kid_context);

        // The response; Observe only to a registration.
        let mut response = Message::response(response_code);
        response.token = case.message.token;
        for (n, v) in &response_options {
            response.options.push(*n, v);
        }
        let notify = notify.filter(|_| cb.is_observe_registration());
        if let Some(o) = notify {
            response.options.push_uint(num::OBSERVE, o);
        }
        response.payload = response_payload;
        let protected = protect_response(&response, &mut server, &mut sb, own_piv, &RFC).unwrap();
        let wire = Message::parse(&bytes(&protected)).unwrap();
        let back = unprotect_response(&wire, &client, &mut cb, &RFC).unwrap();
        let mut expected = response.clone();
        if notify.is_some() {
            // §4.1.3.5.2: Observe = PIV (the server's first PIV is 0) or the empty Inner value.
            expected.options.set(num::OBSERVE, &[]);
        }
        prop_assert_eq!(back, expected);
    }

    /// No input makes unprotect panic, and a failure never moves the replay window.
    #[test]
    fn unprotect_never_panics(
        option in proptest::collection::vec(any::<u8>(), 0..20),
        payload in proptest::collection::vec(any::<u8>(), 0..40),
        extra in proptest::collection::vec(any_option(), 0..3),
    ) {
        let mut server = c1(false);
        let mut m = c4_protected();
        m.options.set(num::OSCORE, &option);
        m.payload = payload;
        for (n, v) in &extra {
            m.options.push(*n, v);
        }
        let before = *server.replay_window();
        let result = unprotect_request(&m, only(&mut server), &RFC);
        prop_assert!(result.is_err());
        prop_assert_eq!(*server.replay_window(), before);
        let (client, _, mut cb, _) = c4_exchange(c1(false));
        prop_assert!(unprotect_response(&m, &client, &mut cb, &RFC).is_err());
        prop_assert_eq!(cb.notification_number(), None);
    }

    /// Arbitrary plaintexts never panic the plaintext parser; well-formed ones split exactly.
    #[test]
    fn plaintext_split(pt in proptest::collection::vec(any::<u8>(), 0..60),
                       opts in proptest::collection::vec(any_option(), 0..5),
                       payload in proptest::collection::vec(any::<u8>(), 0..20)) {
        let _ = split_plaintext(&pt);
        let mut options = Options::new();
        for (n, v) in &opts {
            options.push(*n, v);
        }
        let mut encoded = vec![0x45];
        options.encode_into(&mut encoded).unwrap();
        let options_end = encoded.len();
        if !payload.is_empty() {
            encoded.push(0xff);
            encoded.extend_from_slice(&payload);
        }
        let (code, inner, start) = split_plaintext(&encoded).unwrap();
        prop_assert_eq!(code, Code::CONTENT);
        prop_assert_eq!(inner, &encoded[1..options_end]);
        prop_assert_eq!(&encoded[start.min(encoded.len())..], &payload[..]);
    }
}
