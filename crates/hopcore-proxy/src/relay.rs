//! Shaping the responses the proxy relays, sans-I/O: what comes back from upstream becomes
//! the response to the client ([`relay_response`]), and cached notifications are aged for
//! clients that join an observation late ([`age_max_age`]).

use std::time::Duration;

use hopcore_codec::registry::is_unsafe;
use hopcore_codec::{num, Code, Message, Options};

use crate::config::Route;
use crate::decide::{Local, Reject};

/// Turns an upstream response into the response to the client, in place (no copy of the
/// payload or options on the common path).
///
/// - RFC 7252 §5.7.1: "Unsafe options in a response that are not recognized by the
///   CoAP-to-CoAP proxy server MUST lead to a 5.02 (Bad Gateway) response. Again,
///   Safe-to-Forward options that are not recognized MUST be forwarded." Everything else
///   (Max-Age, ETag, Content-Format, Block2, Size2, Location-*, ...) is relayed unchanged.
/// - Observe is removed: the proxy sets its own values per client (RFC 7641 §5).
/// - A 5.08 (Hop Limit Reached) gets the proxy's information prepended to its diagnostic
///   payload, separated by a space, if it still fits (RFC 8768 §4).
/// - For a reverse route, a Location-Path inside the upstream's base path is mapped back into
///   the route's namespace (RFC 7252 §5.7.3).
///
/// Type, token and Message ID are set by the messaging layer when the response is sent.
pub fn relay_response(mut resp: Message, route: Option<&Route>, local: &Local) -> Message {
    if let Some(n) = resp.options.iter().find(|o| is_unsafe(o.number) && local.recognizes(o.number).is_none()) {
        let n = n.number;
        return Reject::new(Code::BAD_GATEWAY, format!("upstream response has unrecognized unsafe option {n}"))
            .to_message();
    }
    resp.options.remove(num::OBSERVE);
    if resp.code == Code::HOP_LIMIT_REACHED {
        // RFC 8768 §4: each proxy relaying a 5.08 prepends its information, space separated,
        // "only if there is enough space as determined by the Path MTU" (1152 bytes of
        // message, RFC 7252 §4.6; 1024 of payload keeps well inside).
        if resp.payload.len() + local.identity.len() < 1024 {
            let mut p = Vec::with_capacity(local.identity.len() + 1 + resp.payload.len());
            p.extend_from_slice(local.identity.as_bytes());
            p.push(b' ');
            p.extend_from_slice(&resp.payload);
            resp.payload = p;
        }
    }
    if let Some(route) = route {
        if resp.options.contains(num::LOCATION_PATH) {
            map_location_path(&mut resp.options, route);
        }
    }
    resp
}

/// RFC 7252 §5.7.3: a reverse proxy "is free to build a namespace"; a Location-Path the origin
/// gives under the route's upstream base path is shown to the client under the route's path.
fn map_location_path(opts: &mut Options, route: &Route) {
    let base = route.upstream.path.strip_suffix(&[String::new()]).unwrap_or(&route.upstream.path);
    let under_base = {
        let mut loc = opts.get_all(num::LOCATION_PATH);
        base.iter().all(|b| loc.next() == Some(b.as_bytes()))
    };
    if !under_base {
        return;
    }
    let rest: Vec<Vec<u8>> = opts.get_all(num::LOCATION_PATH).skip(base.len()).map(<[u8]>::to_vec).collect();
    opts.remove(num::LOCATION_PATH);
    for seg in &route.prefix {
        opts.push(num::LOCATION_PATH, seg.as_bytes());
    }
    for seg in &rest {
        opts.push(num::LOCATION_PATH, seg);
    }
}

/// RFC 7967 §2.1: whether the client's No-Response option says it has no interest in a
/// response of this class (bit 2: 2.xx, bit 8: 4.xx, bit 16: 5.xx); the proxy then sends
/// none, whether it relays the response or generates it.
/// `no_response` is the option's value ([`no_response`]).
pub fn no_response_suppresses(no_response: Option<u32>, code: Code) -> bool {
    let Some(bits) = no_response else { return false };
    let class_bit = match code.class() {
        2 => 2,
        4 => 8,
        5 => 16,
        _ => 0,
    };
    bits & class_bit != 0
}

/// The value of a request's No-Response option, if any.
pub fn no_response(request: &Options) -> Option<u32> {
    request.get(num::NO_RESPONSE).map(|v| hopcore_codec::uint::decode(v).unwrap_or(0))
}

/// Whether a response keeps an observation going: a 2.xx with Observe (RFC 7641 §3.2).
pub fn is_notification(m: &Message) -> bool {
    m.code.is_success() && m.options.contains(num::OBSERVE)
}

/// RFC 7641 §5: an intermediary "MUST set the value of the Max-Age Option according to the age
/// of the local current representation"; RFC 7252 §5.7.1: proxy-max-age = original-max-age -
/// cache-age (the default Max-Age is 60 s, RFC 7252 §5.10.5).
pub fn age_max_age(m: &mut Message, age: Duration) {
    let secs = u32::try_from(age.as_secs()).unwrap_or(u32::MAX);
    if secs == 0 {
        return;
    }
    let original = m.options.get_uint(num::MAX_AGE).unwrap_or(60);
    m.options.set_uint(num::MAX_AGE, original.saturating_sub(secs));
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;
    use crate::config::ProxyConfig;

    fn local() -> Local {
        Local::new("192.0.2.1:5683".parse::<SocketAddr>().unwrap(), &ProxyConfig::default())
    }

    #[test]
    fn relays_known_and_safe_options_unchanged() {
        let mut r = Message::response(Code::CONTENT).with_payload("x");
        r.options.set_uint(num::MAX_AGE, 30);
        r.options.push(num::ETAG, b"e1");
        r.options.push(num::BLOCK2, &[0x0a]);
        r.options.push(65004, b"safe-unknown"); // 65004 & 2 == 0: safe to forward
        r.options.push(num::OBSERVE, &[7]);
        let out = relay_response(r.clone(), None, &local());
        assert_eq!(out.code, Code::CONTENT);
        assert_eq!(out.payload, b"x");
        assert_eq!(out.options.get_uint(num::MAX_AGE), Some(30));
        assert_eq!(out.options.get(num::ETAG), Some(&b"e1"[..]));
        assert_eq!(out.options.get(num::BLOCK2), Some(&[0x0a][..]));
        assert_eq!(out.options.get(65004), Some(&b"safe-unknown"[..]));
        assert!(!out.options.contains(num::OBSERVE));
    }

    #[test]
    fn unknown_unsafe_response_option_is_bad_gateway() {
        // RFC 7252 §5.7.1: 5.02 for an unrecognized unsafe option in a response.
        let r = Message::response(Code::CONTENT).with_option(65002, b"u");
        let out = relay_response(r, None, &local());
        assert_eq!(out.code, Code::BAD_GATEWAY);
        assert!(String::from_utf8_lossy(&out.payload).contains("65002"));
    }

    #[test]
    fn hop_limit_reached_gets_our_identity_prepended() {
        let r = Message::response(Code::HOP_LIMIT_REACHED).with_payload("p2.example");
        let out = relay_response(r, None, &local());
        assert_eq!(out.payload, b"192.0.2.1:5683 p2.example");
    }

    #[test]
    fn reverse_location_path_is_mapped_back() {
        let route = Route::new("/sensors", None, "coap://127.0.0.1:5690/base").unwrap();
        let mut r = Message::response(Code::CREATED);
        r.options.push(num::LOCATION_PATH, b"base");
        r.options.push(num::LOCATION_PATH, b"new1");
        let out = relay_response(r, Some(&route), &local());
        let loc: Vec<_> = out.options.get_all(num::LOCATION_PATH).collect();
        assert_eq!(loc, vec![&b"sensors"[..], b"new1"]);
        // Outside the base: unchanged.
        let mut r = Message::response(Code::CREATED);
        r.options.push(num::LOCATION_PATH, b"other");
        let out = relay_response(r, Some(&route), &local());
        assert_eq!(out.options.get_all(num::LOCATION_PATH).collect::<Vec<_>>(), vec![&b"other"[..]]);
    }

    #[test]
    fn no_response_option() {
        let mut o = Options::new();
        assert_eq!(no_response(&o), None);
        assert!(!no_response_suppresses(None, Code::CONTENT));
        o.set_uint(num::NO_RESPONSE, 2 | 16);
        let v = no_response(&o);
        assert_eq!(v, Some(18));
        assert!(no_response_suppresses(v, Code::CONTENT));
        assert!(!no_response_suppresses(v, Code::NOT_FOUND));
        assert!(no_response_suppresses(v, Code::GATEWAY_TIMEOUT));
        assert!(!no_response_suppresses(Some(0), Code::GATEWAY_TIMEOUT));
    }

    #[test]
    fn max_age_is_aged() {
        let mut m = Message::response(Code::CONTENT);
        age_max_age(&mut m, Duration::from_millis(300));
        assert!(!m.options.contains(num::MAX_AGE), "under a second: unchanged");
        age_max_age(&mut m, Duration::from_secs(20));
        assert_eq!(m.options.get_uint(num::MAX_AGE), Some(40));
        m.options.set_uint(num::MAX_AGE, 5);
        age_max_age(&mut m, Duration::from_secs(20));
        assert_eq!(m.options.get_uint(num::MAX_AGE), Some(0));
    }
}
