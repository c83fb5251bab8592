//! The resources of aiocoap's OSCORE plugtest server (`contrib/oscore-plugtest/plugtest-server`
//! of aiocoap 0.4.17, after the test descriptions of the OSCORE plugtests), so that its
//! `plugtest-client` can run its tests against `hopcore server --plugtest`.
//!
//! | path | methods | behaviour (what the client checks) |
//! |---|---|---|
//! | /oscore/hello/coap | GET | "Hello World!", Content-Format 0; plain CoAP (test 0) |
//! | /oscore/hello/1 | GET | the same, protected (tests 1, 2, 5, 12-15; 17: plain gets 4.01) |
//! | /oscore/hello/2 | GET | expects `?first=1`; adds ETag 0x2b (test 3) |
//! | /oscore/hello/3 | GET | expects Accept 0; adds Max-Age 5 (test 4) |
//! | /oscore/hello/6 | POST | expects payload 0x4a, Content-Format 0; 2.04 echoing it (test 8) |
//! | /oscore/hello/7 | PUT (GET) | If-Match 0x7b: 2.04, no options (test 9); If-None-Match: 4.12 (test 10) |
//! | /oscore/observe1, /oscore/observe2 | GET (observable) | "one", after 2 s "two", after 2 s more a final 5.00 "Terminate Observe" (tests 6, 7) |
//! | /oscore/test | DELETE | 2.02 (test 11) |
//! | /oscore/block/outer, /oscore/block/inner | GET | 1035 bytes, served with (inner) Block2 |
//!
//! Differences from the upstream server: every resource under /oscore except
//! /oscore/hello/coap requires OSCORE ([`PROTECTED_PREFIXES`]), as the plugtest description
//! of test 17 wants (upstream serves them in plain CoAP too); /oscore/hello/7 has a current
//! representation (ETag 0x7b, payload 0x7a) that GET returns, because this server evaluates
//! If-Match and If-None-Match itself (RFC 7252 §5.10.8) before the handler runs; upstream's
//! /sequence-numbers (a view of its context internals) is not provided. Request options that
//! differ from what a test sends are logged (upstream prints "Additional verify failed"), they
//! do not change the response.
//!
//! Kept out of [`super::demo`]: only `hopcore server --plugtest` serves these.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hopcore_codec::{content_format, num, Code, Message, Token};
use tokio::time::Instant;
use tracing::{info, warn};

use super::resource::{content, uint_option, Attributes, Request, Resource};
use super::{Notifier, Server, ServerConfig};

/// The paths (prefixes) that only OSCORE requests may reach.
pub const PROTECTED_PREFIXES: &[&str] = &[
    "/oscore/hello/1",
    "/oscore/hello/2",
    "/oscore/hello/3",
    "/oscore/hello/6",
    "/oscore/hello/7",
    "/oscore/observe1",
    "/oscore/observe2",
    "/oscore/test",
    "/oscore/block",
];

/// The payload of the hello resources.
pub const HELLO: &str = "Hello World!";

/// The payload of the block resources: "This is a large resource\n" and "0123456789" 101 times.
pub fn block_payload() -> Vec<u8> {
    let mut p = b"This is a large resource\n".to_vec();
    for _ in 0..101 {
        p.extend_from_slice(b"0123456789");
    }
    p
}

/// Time from the registration to "two", and from "two" to the final error (upstream: 2 s each).
pub const OBSERVE_STEP: Duration = Duration::from_secs(2);

/// The plugtest server: the resources of the table above and /.well-known/core. Every
/// notification is confirmable, as upstream sends them.
pub fn plugtest_server() -> Server {
    let config = ServerConfig { observe_con_every: 1, ..ServerConfig::default() };
    let mut s = Server::with_config(config);
    let observations: Observations = Arc::default();
    s.add_resource("/oscore/hello/coap", Hello::plain())
        .add_resource("/oscore/hello/1", Hello::plain())
        .add_resource("/oscore/hello/2", Hello::with_etag())
        .add_resource("/oscore/hello/3", Hello::with_max_age())
        .add_resource("/oscore/hello/6", Hello6)
        .add_resource("/oscore/hello/7", Hello7)
        .add_resource("/oscore/observe1", Observe { path: "/oscore/observe1", observations: observations.clone() })
        .add_resource("/oscore/observe2", Observe { path: "/oscore/observe2", observations: observations.clone() })
        .add_resource("/oscore/test", Delete)
        .add_resource("/oscore/block/outer", Block)
        .add_resource("/oscore/block/inner", Block);
    s.on_start(move |notifier| observe_ticker(notifier, observations));
    s
}

/// Logs when the request's options (other than the routing and Echo options, which are
/// artefacts of the transport and of App. B.1.2 recovery) differ from what the test sends
/// (upstream's `additional_verify_request_options`).
fn verify_options(req: &Request, expected: &[(u16, &[u8])]) {
    let ignored = [num::URI_HOST, num::URI_PORT, num::URI_PATH, num::ECHO];
    let mut got: Vec<(u16, Vec<u8>)> = req
        .message
        .options
        .iter()
        .filter(|o| !ignored.contains(&o.number))
        // Test 5 sends Observe to a non-observable resource; upstream accepts it too.
        .filter(|o| o.number != num::OBSERVE || expected.iter().any(|(n, _)| *n == num::OBSERVE))
        .map(|o| (o.number, o.value.to_vec()))
        .collect();
    let mut want: Vec<(u16, Vec<u8>)> = expected.iter().map(|(n, v)| (*n, v.to_vec())).collect();
    got.sort();
    want.sort();
    if got == want {
        info!(path = %req.path(), "plugtest: request options as expected");
    } else {
        warn!(path = %req.path(), ?got, expected = ?want, "plugtest: request options differ from the test's");
    }
}

fn verify_payload(req: &Request, expected: &[u8]) {
    if req.payload() != expected {
        warn!(path = %req.path(), got = ?req.payload(), ?expected, "plugtest: request payload differs from the test's");
    }
}

/// GET → "Hello World!" (Content-Format 0), with the extra options of hello/2 and hello/3.
#[derive(Debug, Clone)]
struct Hello {
    expected: &'static [(u16, &'static [u8])],
    etag: Option<&'static [u8]>,
    max_age: Option<u32>,
}

impl Hello {
    fn plain() -> Hello {
        Hello { expected: &[], etag: None, max_age: None }
    }
    fn with_etag() -> Hello {
        Hello { expected: &[(num::URI_QUERY, b"first=1")], etag: Some(&[0x2b]), max_age: None }
    }
    fn with_max_age() -> Hello {
        // Accept 0 is encoded as the empty uint.
        Hello { expected: &[(num::ACCEPT, b"")], etag: None, max_age: Some(5) }
    }
}

impl Resource for Hello {
    fn attributes(&self) -> Attributes {
        Attributes::new().content_format(content_format::TEXT_PLAIN)
    }
    fn allows(&self, method: Code) -> bool {
        method == Code::GET
    }
    fn get(&self, req: &Request) -> Message {
        verify_options(req, self.expected);
        let mut m = content(Code::CONTENT, content_format::TEXT_PLAIN, HELLO);
        if let Some(etag) = self.etag {
            m.options.set(num::ETAG, etag);
        }
        if let Some(max_age) = self.max_age {
            m.options.set_uint(num::MAX_AGE, max_age);
        }
        m
    }
}

/// POST → 2.04 with the payload 0x4a, Content-Format 0.
#[derive(Debug, Clone, Copy)]
struct Hello6;

impl Resource for Hello6 {
    fn allows(&self, method: Code) -> bool {
        method == Code::POST
    }
    fn post(&self, req: &Request) -> Message {
        verify_options(req, &[(num::CONTENT_FORMAT, b"")]);
        verify_payload(req, &[0x4a]);
        content(Code::CHANGED, content_format::TEXT_PLAIN, vec![0x4a])
    }
}

/// The representation of /oscore/hello/7 that If-Match 0x7b matches.
const HELLO7_ETAG: &[u8] = &[0x7b];

/// PUT → 2.04 (the server has checked If-Match 0x7b against the current representation
/// already; If-None-Match was answered 4.12 by the server, RFC 7252 §5.10.8.2). GET → the current
/// representation.
#[derive(Debug, Clone, Copy)]
struct Hello7;

impl Resource for Hello7 {
    fn allows(&self, method: Code) -> bool {
        matches!(method, Code::GET | Code::PUT)
    }
    fn get(&self, _req: &Request) -> Message {
        let mut m = content(Code::CONTENT, content_format::TEXT_PLAIN, vec![0x7a]);
        m.options.set(num::ETAG, HELLO7_ETAG);
        m
    }
    fn put(&self, req: &Request) -> Message {
        // Upstream's test 9b: If-Match 0x7b, payload 0x7a ("z").
        verify_options(req, &[(num::CONTENT_FORMAT, b""), (num::IF_MATCH, HELLO7_ETAG)]);
        verify_payload(req, b"z");
        Message::response(Code::CHANGED)
    }
}

/// DELETE → 2.02.
#[derive(Debug, Clone, Copy)]
struct Delete;

impl Resource for Delete {
    fn allows(&self, method: Code) -> bool {
        method == Code::DELETE
    }
    fn delete(&self, req: &Request) -> Message {
        verify_options(req, &[]);
        Message::response(Code::DELETED)
    }
}

/// GET → the block payload; the server splits it (Block2, inner under OSCORE).
#[derive(Debug, Clone, Copy)]
struct Block;

impl Resource for Block {
    fn attributes(&self) -> Attributes {
        Attributes::new().content_format(content_format::TEXT_PLAIN)
    }
    fn allows(&self, method: Code) -> bool {
        method == Code::GET
    }
    fn get(&self, _req: &Request) -> Message {
        content(Code::CONTENT, content_format::TEXT_PLAIN, block_payload())
    }
}

/// Where one observation of an observe resource is: 0 "one" sent, 1 "two" due/sent, 2 the
/// final error due.
#[derive(Debug, Clone, Copy)]
struct Stage {
    path: &'static str,
    step: u8,
    next: Instant,
}

type Observations = Arc<Mutex<HashMap<(SocketAddr, Token), Stage>>>;

/// GET with Observe 0 → "one", then the ticker advances the observation: "two" after
/// [`OBSERVE_STEP`], a 5.00 "Terminate Observe" (which ends it, RFC 7641 §4.2) after another.
#[derive(Debug, Clone)]
struct Observe {
    path: &'static str,
    observations: Observations,
}

impl Resource for Observe {
    fn attributes(&self) -> Attributes {
        Attributes::new().content_format(content_format::TEXT_PLAIN).observable()
    }
    fn allows(&self, method: Code) -> bool {
        method == Code::GET
    }
    fn get(&self, req: &Request) -> Message {
        let key = (req.peer, req.message.token);
        let mut obs = self.observations.lock().unwrap_or_else(|e| e.into_inner());
        if uint_option(&req.message.options, num::OBSERVE) != Some(0) {
            // A plain GET or a deregistration (RFC 7641 §3.6) ends the schedule.
            obs.remove(&key);
            return content(Code::CONTENT, content_format::TEXT_PLAIN, "one");
        }
        // The server re-runs this handler with the registration request for each
        // notification; the stage tells which one this is.
        match obs.get(&key).map(|s| s.step) {
            None => {
                verify_options(req, &[(num::OBSERVE, b"")]);
                obs.insert(key, Stage { path: self.path, step: 0, next: Instant::now() + OBSERVE_STEP });
                content(Code::CONTENT, content_format::TEXT_PLAIN, "one")
            }
            Some(0) => content(Code::CONTENT, content_format::TEXT_PLAIN, "one"),
            Some(1) => content(Code::CONTENT, content_format::TEXT_PLAIN, "two"),
            Some(_) => {
                obs.remove(&key);
                content(Code::INTERNAL_SERVER_ERROR, content_format::TEXT_PLAIN, "Terminate Observe")
            }
        }
    }
}

/// Advances the observations of the observe resources and notifies their paths.
async fn observe_ticker(notifier: Notifier, observations: Observations) {
    let mut every = tokio::time::interval(Duration::from_millis(50));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let now = Instant::now();
        let mut due = Vec::new();
        {
            let mut obs = observations.lock().unwrap_or_else(|e| e.into_inner());
            obs.retain(|_, s| {
                if s.next > now {
                    return true;
                }
                if s.step >= 2 {
                    // The final notification was due a step ago and the handler never ran
                    // for it (the observation ended otherwise): forget it.
                    return false;
                }
                s.step += 1;
                s.next = now + OBSERVE_STEP;
                due.push(s.path);
                true
            });
        }
        due.sort_unstable();
        due.dedup();
        for path in due {
            notifier.notify(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hopcore_codec::MsgType;

    fn peer() -> SocketAddr {
        "192.0.2.1:5683".parse().unwrap()
    }

    fn req(code: Code, path: &str) -> Message {
        let mut m = Message::request(code);
        m.set_path(path);
        m.token = Token::from_slice(&[1, 2]).unwrap();
        m
    }

    #[test]
    fn responses_carry_what_the_client_checks() {
        let mut s = plugtest_server();
        let now = std::time::Instant::now();
        let r = s.handle_request(now, peer(), req(Code::GET, "/oscore/hello/coap"), None).unwrap();
        assert_eq!((r.code, &r.payload[..]), (Code::CONTENT, HELLO.as_bytes()));
        assert_eq!(r.options.iter().map(|o| o.number).collect::<Vec<_>>(), [num::CONTENT_FORMAT]);

        let mut m = req(Code::GET, "/oscore/hello/2");
        m.options.push(num::URI_QUERY, b"first=1");
        let r = s.handle_request(now, peer(), m, None).unwrap();
        assert_eq!(r.options.get(num::ETAG), Some(&[0x2b][..]));

        let mut m = req(Code::GET, "/oscore/hello/3");
        m.options.set_uint(num::ACCEPT, 0);
        let r = s.handle_request(now, peer(), m, None).unwrap();
        assert_eq!(r.options.get_uint(num::MAX_AGE), Some(5));

        let mut m = req(Code::POST, "/oscore/hello/6").with_payload(vec![0x4a]);
        m.options.set_uint(num::CONTENT_FORMAT, 0);
        let r = s.handle_request(now, peer(), m, None).unwrap();
        assert_eq!((r.code, &r.payload[..]), (Code::CHANGED, &[0x4a][..]));

        let mut m = req(Code::PUT, "/oscore/hello/7").with_payload(vec![0x7a]);
        m.options.set_uint(num::CONTENT_FORMAT, 0);
        m.options.push(num::IF_MATCH, &[0x7b]);
        let r = s.handle_request(now, peer(), m, None).unwrap();
        assert_eq!(r.code, Code::CHANGED);
        assert!(r.options.is_empty() && r.payload.is_empty());

        let mut m = req(Code::PUT, "/oscore/hello/7").with_payload(vec![0x8a]);
        m.options.set_uint(num::CONTENT_FORMAT, 0);
        m.options.push(num::IF_NONE_MATCH, b"");
        let r = s.handle_request(now, peer(), m, None).unwrap();
        assert_eq!(r.code, Code::PRECONDITION_FAILED);
        assert!(r.options.is_empty());

        let r = s.handle_request(now, peer(), req(Code::DELETE, "/oscore/test"), None).unwrap();
        assert_eq!(r.code, Code::DELETED);
        assert!(r.options.is_empty());

        // Test 5: Observe on a non-observable resource: no Observe in the response.
        let m = req(Code::GET, "/oscore/hello/1").with_option(num::OBSERVE, b"");
        let r = s.handle_request(now, peer(), m, None).unwrap();
        assert!(!r.options.contains(num::OBSERVE));
    }

    #[tokio::test(start_paused = true)]
    async fn observe_gives_one_two_and_a_final_error() {
        let mut s = plugtest_server();
        let observations: Observations = Arc::default();
        s.add_resource("/oscore/observe1", Observe { path: "/oscore/observe1", observations: observations.clone() });
        let ticker = tokio::spawn(observe_ticker(s.notifier(), observations.clone()));
        let m = req(Code::GET, "/oscore/observe1").with_option(num::OBSERVE, b"");
        let r = s.handle_request(std::time::Instant::now(), peer(), m, None).unwrap();
        assert_eq!(r.payload, b"one");
        assert!(r.options.contains(num::OBSERVE));
        let mut seen = Vec::new();
        for _ in 0..2 {
            tokio::time::sleep(OBSERVE_STEP + Duration::from_millis(100)).await;
            for n in s.poll_notifications(std::time::Instant::now()) {
                assert_eq!(n.message.mtype, MsgType::Con);
                seen.push((n.message.code, n.message.payload.clone(), n.message.options.contains(num::OBSERVE)));
            }
        }
        assert_eq!(
            seen,
            [
                (Code::CONTENT, b"two".to_vec(), true),
                (Code::INTERNAL_SERVER_ERROR, b"Terminate Observe".to_vec(), false)
            ]
        );
        assert_eq!(s.observer_count(), 0);
        assert!(observations.lock().unwrap().is_empty());
        ticker.abort();
    }
}
