//! The per-request decision, sans-I/O: given a request received by the proxy, its
//! configuration and its own address, what to do ([`decide`]).
//!
//! [`decide`] is a pure function (no I/O, no clock, no randomness), so that OSCORE layers can
//! later be added around it at every hop without touching the routing rules, and so that every
//! rule is unit-tested here. The upstream request it builds is complete except for the token
//! and Message ID, which the messaging layer assigns.
//!
//! Rules, in the order they are applied:
//!
//! 1. A request with Proxy-Uri or Proxy-Scheme is a forward-proxy request (RFC 7252 §5.7.2).
//!    - Options are checked as a proxy does (RFC 7252 §5.7.1): an unsafe option the proxy does
//!      not recognize gives 4.02; safe-to-forward options are forwarded unchanged whether the
//!      proxy knows them or not (critical or not: RFC 7252 §5.4.1, last paragraph).
//!    - The URI comes from Proxy-Uri, which takes precedence over Uri-Host/Uri-Port/
//!      Uri-Path/Uri-Query and Proxy-Scheme, which are then ignored (RFC 7252 §5.10.2);
//!      otherwise from Proxy-Scheme and the Uri-* options (RFC 7252 §5.10.2, §6.5).
//!    - A Proxy-Uri that is not an absolute URI, or not a valid CoAP URI, gives 4.02
//!      (RFC 7252 §5.9.2.3: "unrecognized or malformed options"; §5.4.3).
//!    - A URI naming the proxy itself makes the request local (RFC 7252 §5.7.2), see 2.
//!    - A scheme other than "coap" gives 5.05, and so does everything when forwarding is
//!      disabled (RFC 7252 §5.7.2, §5.10.2).
//!    - Hop-Limit (RFC 8768 §3): 0 or more than 255 gives 4.00; inserted when absent,
//!      decremented otherwise; 5.08 when it would reach 0.
//! 2. Otherwise the request is for the proxy's own namespace: a reverse route matches
//!    (RFC 7252 §5.7.3; same option and Hop-Limit rules as 1.), or it is a local request,
//!    checked as an origin server checks it (unrecognized critical option: 4.02, RFC 7252
//!    §5.4.1) and then answered with 4.04 by the caller (the proxy has no resources).
//!
//! The upstream request carries Uri-Host only for a host that is not an IP literal
//! (RFC 7252 §6.4 step 5) and never Uri-Port: the request is sent to the URI's port, so the
//! port is the destination port (RFC 7252 §6.4 step 7).

use std::borrow::Cow;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use hopcore_codec::registry::{is_unsafe, OptionDef};
use hopcore_codec::{num, uint, Code, Message, MsgType, Options, Registry};

use crate::config::{ProxyConfig, Route};

/// The URI schemes the proxy forwards to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// CoAP over UDP (RFC 7252 §6.1).
    Coap,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Coap => "coap",
        }
    }
    /// RFC 7252 §6.1.
    pub fn default_port(self) -> u16 {
        match self {
            Scheme::Coap => 5683,
        }
    }
}

/// The host of a target: an IP literal (no name resolution needed) or a lower-case name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Host {
    Ip(IpAddr),
    Name(Arc<str>),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(IpAddr::V4(a)) => write!(f, "{a}"),
            Host::Name(n) => f.write_str(n),
        }
    }
}

/// Where an upstream request goes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    pub scheme: Scheme,
    pub host: Host,
    pub port: u16,
}

impl Target {
    /// The socket address, when the host is an IP literal (no DNS lookup).
    pub fn socket_addr(&self) -> Option<SocketAddr> {
        match self.host {
            Host::Ip(ip) => Some(SocketAddr::new(ip, self.port)),
            Host::Name(_) => None,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}:{}", self.scheme.as_str(), self.host, self.port)
    }
}

/// What the client asked for with the Observe option (RFC 7641 §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObserveIntent {
    /// No (meaningful) Observe option; none is forwarded.
    None,
    /// GET/FETCH with Observe 0: register; the upstream request carries Observe 0.
    Register,
    /// GET/FETCH with Observe 1: deregister; forwarded as a plain request (RFC 7641 §3.6).
    Deregister,
}

/// A request to send upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub target: Target,
    /// Complete but for token and Message ID (assigned by the messaging layer).
    pub request: Message,
    pub observe: ObserveIntent,
}

/// An error response the proxy gives itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    pub code: Code,
    /// The diagnostic payload (RFC 7252 §5.5.2).
    pub diagnostic: Cow<'static, str>,
}

impl Reject {
    pub fn new(code: Code, diagnostic: impl Into<Cow<'static, str>>) -> Reject {
        Reject { code, diagnostic: diagnostic.into() }
    }
    /// The response message (type, token and Message ID are set when it is sent).
    pub fn to_message(&self) -> Message {
        let mut m = Message::response(self.code);
        m.payload = self.diagnostic.as_bytes().to_vec();
        m
    }
}

/// What to do with a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Forward-proxy request (RFC 7252 §5.7.2): send `Upstream::request` to the target.
    Forward(Upstream),
    /// Reverse-proxy request (RFC 7252 §5.7.3) by `ProxyConfig::routes[route]`.
    Reverse { route: usize, upstream: Upstream },
    /// A request for the proxy itself, not to be proxied; it has no resources (4.04).
    Local,
    /// Answer with this error.
    Reject(Reject),
}

/// What the proxy knows about itself when deciding: the address it received the request on,
/// its names, how it identifies itself, and the option registry.
#[derive(Debug, Clone)]
pub struct Local {
    /// The listening socket address.
    pub addr: SocketAddr,
    /// The proxy's information in 5.08 diagnostic payloads: no spaces (RFC 8768 §4).
    pub identity: String,
    /// Host names of the proxy (lower-case), from the configuration.
    pub names: Vec<String>,
    /// Addresses of the proxy besides `addr`, from the configuration.
    pub ips: Vec<IpAddr>,
    pub registry: Registry,
}

impl Local {
    /// The proxy as known from its listening address and configuration.
    pub fn new(addr: SocketAddr, cfg: &ProxyConfig) -> Local {
        let identity = match cfg.names.first() {
            Some(n) => n.replace(' ', ""),
            None => addr.to_string(),
        };
        Local {
            addr,
            identity,
            names: cfg.names.iter().filter(|n| n.parse::<IpAddr>().is_err()).cloned().collect(),
            ips: cfg.names_ip().collect(),
            registry: Registry::standard().clone(),
        }
    }

    /// Whether the proxy recognizes (processes) an unsafe option, RFC 7252 §5.7.1.
    ///
    /// Everything in the registry except the group-communication proxy options: this proxy
    /// does not implement draft-ietf-core-groupcomm-proxy (no multicast), so its unsafe
    /// Multicast-Timeout is "not recognized" and leads to 4.02 as §5.7.1 prescribes.
    pub fn recognizes(&self, number: u16) -> Option<&OptionDef> {
        self.registry.get(number).filter(|d| d.number != self.registry.draft_numbers().multicast_timeout)
    }

    /// RFC 7252 §5.7.2 / §5.10.2: whether a target names the proxy itself (its address, a
    /// loopback or its names when it listens on a wildcard address, or a configured name).
    pub fn is_self(&self, target: &Target) -> bool {
        if target.port != self.addr.port() {
            return false;
        }
        let mine = canonical(self.addr.ip());
        let wildcard = mine.is_unspecified();
        match &target.host {
            Host::Ip(ip) => {
                let ip = canonical(*ip);
                ip == mine || self.ips.iter().any(|a| canonical(*a) == ip) || wildcard && ip.is_loopback()
            }
            Host::Name(n) => {
                self.names.iter().any(|x| **x == **n) || (wildcard || mine.is_loopback()) && &**n == "localhost"
            }
        }
    }

    /// RFC 7252 §6.5 step 2: without Uri-Host, the host is the request's destination address.
    /// On a wildcard socket that is unknown; a loopback of the same family reaches the same
    /// host.
    fn destination_ip(&self) -> IpAddr {
        match self.addr.ip() {
            IpAddr::V4(a) if a.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(a) if a.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        }
    }
}

/// IPv4-mapped IPv6 addresses compare as IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Decides what to do with a request the proxy received (see the module documentation).
pub fn decide(req: &Message, cfg: &ProxyConfig, local: &Local) -> Decision {
    let proxy_uri = req.options.get(num::PROXY_URI);
    let proxy_scheme = req.options.get(num::PROXY_SCHEME);
    if proxy_uri.is_none() && proxy_scheme.is_none() {
        return decide_own_namespace(req, cfg, local);
    }
    if let Err(r) = check_proxy_options(&req.options, local) {
        return Decision::Reject(r);
    }
    let mut up = Message::new(upstream_type(req.mtype), req.code);
    let target = match proxy_uri {
        // RFC 7252 §5.10.2: "The Proxy-Uri Option MUST take precedence over any of the
        // Uri-Host, Uri-Port, Uri-Path or Uri-Query options"; those (and Proxy-Scheme, which
        // only applies to a URI built from them) are ignored.
        Some(uri) => {
            let Ok(uri) = std::str::from_utf8(uri) else {
                return reject(Code::BAD_OPTION, "Proxy-Uri is not UTF-8");
            };
            match split_proxy_uri(uri, &mut up.options) {
                Ok(t) => t,
                Err(UriFail::Unsupported(s)) => return unsupported_scheme(s),
                // RFC 7252 §5.9.2.3 / §5.4.3: a malformed option value.
                Err(UriFail::Malformed(why)) => return reject(Code::BAD_OPTION, format!("bad Proxy-Uri: {why}")),
            }
        }
        // RFC 7252 §5.10.2: the URI is composed from the Uri-* options (§6.5) with the
        // scheme replaced by Proxy-Scheme.
        None => match proxy_scheme_target(&req.options, local, &mut up.options) {
            Ok(t) => t,
            Err(d) => return Decision::Reject(d),
        },
    };
    if local.is_self(&target) {
        // RFC 7252 §5.7.2: "If the authority (host and port) is recognized as identifying the
        // proxy endpoint itself, then the request MUST be treated as a local (non-proxied)
        // request."
        let mut own = Message::new(req.mtype, req.code);
        own.message_id = req.message_id;
        own.token = req.token;
        own.payload.clone_from(&req.payload);
        for o in req.options.iter() {
            if !matches!(
                o.number,
                num::PROXY_URI | num::PROXY_SCHEME | num::URI_HOST | num::URI_PORT | num::URI_PATH | num::URI_QUERY
            ) {
                own.options.push(o.number, o.value);
            }
        }
        for o in up.options.iter() {
            own.options.push(o.number, o.value);
        }
        if let Host::Name(n) = &target.host {
            own.options.push(num::URI_HOST, n.as_bytes());
        }
        return decide_own_namespace(&own, cfg, local);
    }
    if !cfg.forward {
        // RFC 7252 §5.7.2: "unwilling or unable to act as proxy for the request URI".
        return reject(Code::PROXYING_NOT_SUPPORTED, "forward proxying is disabled");
    }
    let hop = match hop_limit(&req.options, cfg, local) {
        Ok(h) => h,
        Err(r) => return Decision::Reject(r),
    };
    let observe = observe_intent(req);
    finish_upstream(&mut up, req, &target, hop, observe);
    Decision::Forward(Upstream { target, request: up, observe })
}

/// A request without Proxy-Uri/Proxy-Scheme: reverse route or local.
fn decide_own_namespace(req: &Message, cfg: &ProxyConfig, local: &Local) -> Decision {
    let Some((index, route)) = match_route(req, cfg) else {
        // RFC 7252 §5.4.1: a non-proxied request is processed as an origin server does.
        let opts = req.options.iter().map(|o| (o.number, o.value));
        if let Some(n) = local.registry.first_bad_critical(opts) {
            return reject(Code::BAD_OPTION, format!("unrecognized or malformed critical option {n}"));
        }
        return Decision::Local;
    };
    if let Err(r) = check_proxy_options(&req.options, local) {
        return Decision::Reject(r);
    }
    let hop = match hop_limit(&req.options, cfg, local) {
        Ok(h) => h,
        Err(r) => return Decision::Reject(r),
    };
    let mut up = Message::new(upstream_type(req.mtype), req.code);
    // The remaining path is appended to the upstream's path; a trailing empty segment of the
    // base ("coap://h/base/") only stays when nothing is appended.
    let mut rest = req.options.get_all(num::URI_PATH).skip(route.prefix.len()).peekable();
    let base = &route.upstream.path;
    let base = match base.split_last() {
        Some((last, init)) if last.is_empty() && rest.peek().is_some() => init,
        _ => base.as_slice(),
    };
    for seg in base {
        up.options.push(num::URI_PATH, seg.as_bytes());
    }
    for seg in rest {
        up.options.push(num::URI_PATH, seg);
    }
    for q in &route.upstream.query {
        up.options.push(num::URI_QUERY, q.as_bytes());
    }
    for q in req.options.get_all(num::URI_QUERY) {
        up.options.push(num::URI_QUERY, q);
    }
    let observe = observe_intent(req);
    finish_upstream(&mut up, req, &route.target, hop, observe);
    Decision::Reverse { route: index, upstream: Upstream { target: route.target.clone(), request: up, observe } }
}

/// The best reverse route: longest prefix, then one with a host.
pub(crate) fn match_route<'c>(req: &Message, cfg: &'c ProxyConfig) -> Option<(usize, &'c Route)> {
    let host = req.options.get(num::URI_HOST).map(strip_brackets);
    let mut best: Option<(usize, &Route)> = None;
    for (i, r) in cfg.routes.iter().enumerate() {
        if let Some(h) = &r.host {
            match host {
                Some(v) if v.eq_ignore_ascii_case(h.as_bytes()) => {}
                _ => continue,
            }
        }
        let mut segs = req.options.get_all(num::URI_PATH);
        if !r.prefix.iter().all(|p| segs.next() == Some(p.as_bytes())) {
            continue;
        }
        let better = match best {
            None => true,
            Some((_, b)) => (r.prefix.len(), r.host.is_some()) > (b.prefix.len(), b.host.is_some()),
        };
        if better {
            best = Some((i, r));
        }
    }
    best
}

fn strip_brackets(v: &[u8]) -> &[u8] {
    match v {
        [b'[', inner @ .., b']'] => inner,
        _ => v,
    }
}

fn reject(code: Code, diagnostic: impl Into<Cow<'static, str>>) -> Decision {
    Decision::Reject(Reject::new(code, diagnostic))
}

fn unsupported_scheme(scheme: String) -> Decision {
    // RFC 7252 §5.7.2, §5.10.2: 5.05 for a URI the proxy is unable to act as a proxy for.
    reject(Code::PROXYING_NOT_SUPPORTED, format!("scheme {scheme:?} is not supported (only \"coap\")"))
}

/// The upstream message type mirrors the client's: each hop has its own reliability
/// (RFC 7252 §5.7), and a NON request asks for low overhead throughout.
fn upstream_type(t: MsgType) -> MsgType {
    match t {
        MsgType::Non => MsgType::Non,
        _ => MsgType::Con,
    }
}

/// RFC 7252 §5.7.1: "Unsafe options in a request that are not recognized by the proxy MUST
/// lead to a 4.02 (Bad Option) response being returned by the proxy." Recognized unsafe
/// options with a value of bad length or repeated when not repeatable are treated like
/// unrecognized ones (§5.4.3, §5.4.5). Safe-to-forward options are not checked: they are
/// forwarded unchanged, recognized or not.
fn check_proxy_options(opts: &Options, local: &Local) -> Result<(), Reject> {
    let mut prev = None;
    for o in opts.iter() {
        let repeated = prev == Some(o.number);
        prev = Some(o.number);
        if !is_unsafe(o.number) {
            continue;
        }
        let Some(def) = local.recognizes(o.number) else {
            return Err(Reject::new(Code::BAD_OPTION, format!("unrecognized unsafe option {}", o.number)));
        };
        if repeated && !def.repeatable {
            return Err(Reject::new(Code::BAD_OPTION, format!("{} repeated", def.name)));
        }
        if !local.registry.value_ok(o.number, o.value) {
            return Err(Reject::new(Code::BAD_OPTION, format!("{} has a value of bad length", def.name)));
        }
    }
    Ok(())
}

/// RFC 8768 §3: the Hop-Limit to put into the upstream request.
fn hop_limit(opts: &Options, cfg: &ProxyConfig, local: &Local) -> Result<u8, Reject> {
    // Supernumerary occurrences are ignored (elective, RFC 8768 §3 → RFC 7252 §5.4.5).
    let Some(v) = opts.get(num::HOP_LIMIT) else {
        // "insert a Hop-Limit option when relaying a request that does not include [one]";
        // the initial value is configurable, 16 by default.
        return Ok(cfg.hop_limit);
    };
    match uint::decode(v) {
        // "CoAP requests received with a Hop-Limit option set to '0' or greater than '255'
        // MUST be rejected by a CoAP server/proxy using 4.00 (Bad Request)."
        None | Some(0) | Some(256..) => Err(Reject::new(Code::BAD_REQUEST, "Hop-Limit must be between 1 and 255")),
        // "decrement the value of the option by 1 prior to forwarding it"; "CoAP messages
        // MUST NOT be forwarded if the Hop-Limit option is set to '0' after decrement", 5.08
        // with the proxy's information as diagnostic payload (RFC 8768 §4).
        Some(1) => Err(Reject::new(Code::HOP_LIMIT_REACHED, local.identity.clone())),
        Some(n) => Ok((n - 1) as u8),
    }
}

/// RFC 7641 §2: Observe 0 registers and 1 deregisters in a GET (or FETCH, RFC 8132 §2.4).
fn observe_intent(req: &Message) -> ObserveIntent {
    if !req.code.is_safe_method() {
        return ObserveIntent::None;
    }
    match req.options.get(num::OBSERVE).map(uint::decode) {
        Some(Some(0)) => ObserveIntent::Register,
        Some(Some(1)) => ObserveIntent::Deregister,
        _ => ObserveIntent::None,
    }
}

/// Completes the upstream request: every option of the client's request except the ones the
/// proxy consumes or replaces (the URI options, Hop-Limit, Observe), unknown safe-to-forward
/// ones unchanged (RFC 7252 §5.7.1: "A CoAP-to-CoAP proxy MUST forward to the origin server
/// all Safe-to-Forward options that it does not recognize"); Uri-Host for a reg-name
/// (RFC 7252 §6.4 step 5); the new Hop-Limit; Observe 0 for a registration; the payload.
///
/// Block1/Block2/Size1/Size2 are forwarded as they are: block-wise transfers are relayed
/// block by block, each client block request giving one upstream request (RFC 7959 §2.10
/// allows a proxy to do so). The proxy neither reassembles nor re-fragments; the client and
/// origin negotiate block sizes end to end.
fn finish_upstream(up: &mut Message, req: &Message, target: &Target, hop: u8, observe: ObserveIntent) {
    for o in req.options.iter() {
        if !matches!(
            o.number,
            num::PROXY_URI
                | num::PROXY_SCHEME
                | num::URI_HOST
                | num::URI_PORT
                | num::URI_PATH
                | num::URI_QUERY
                | num::HOP_LIMIT
                | num::OBSERVE
        ) {
            up.options.push(o.number, o.value);
        }
    }
    if let Host::Name(n) = &target.host {
        up.options.push(num::URI_HOST, n.as_bytes());
    }
    up.options.push(num::HOP_LIMIT, &[hop]);
    if observe == ObserveIntent::Register {
        up.options.push(num::OBSERVE, &[]);
    }
    up.payload.clone_from(&req.payload);
}

/// Whether a Proxy-Scheme request (Proxy-Scheme with Uri-Host/Uri-Port) names the proxy itself
/// (RFC 7252 §5.7.2; CP §2.4 Step 4: then it is a local request). Malformed options: no.
pub(crate) fn names_self(req: &Message, local: &Local) -> bool {
    if !req.options.contains(num::PROXY_SCHEME) {
        return false;
    }
    let mut scratch = Options::new();
    proxy_scheme_target(&req.options, local, &mut scratch).is_ok_and(|t| local.is_self(&t))
}

/// The target of a Proxy-Scheme request (RFC 7252 §5.10.2 with §6.5 steps 2-4); copies
/// Uri-Path and Uri-Query into `out`.
fn proxy_scheme_target(opts: &Options, local: &Local, out: &mut Options) -> Result<Target, Reject> {
    let scheme = opts.get(num::PROXY_SCHEME).unwrap_or(b"coap");
    if !scheme.eq_ignore_ascii_case(b"coap") {
        let s = String::from_utf8_lossy(scheme).to_ascii_lowercase();
        return Err(Reject::new(
            Code::PROXYING_NOT_SUPPORTED,
            format!("scheme {s:?} is not supported (only \"coap\")"),
        ));
    }
    let host = match opts.get(num::URI_HOST) {
        Some(h) => {
            let h = std::str::from_utf8(strip_brackets(h))
                .map_err(|_| Reject::new(Code::BAD_OPTION, "Uri-Host is not UTF-8"))?;
            host_of(h).ok_or_else(|| Reject::new(Code::BAD_OPTION, "Uri-Host is not a valid host"))?
        }
        // §6.5 step 2: the request's destination IP address.
        None => Host::Ip(local.destination_ip()),
    };
    let port = match opts.get(num::URI_PORT) {
        // The length (0-2 bytes) was checked with the other unsafe options.
        Some(p) => uint::decode(p).and_then(|p| u16::try_from(p).ok()).unwrap_or(0),
        // §6.5 step 4: the request's destination UDP port.
        None => local.addr.port(),
    };
    if port == 0 {
        return Err(Reject::new(Code::BAD_OPTION, "Uri-Port 0"));
    }
    for seg in opts.get_all(num::URI_PATH) {
        out.push(num::URI_PATH, seg);
    }
    for q in opts.get_all(num::URI_QUERY) {
        out.push(num::URI_QUERY, q);
    }
    Ok(Target { scheme: Scheme::Coap, host, port })
}

/// A host from its decoded text: an IP literal, or a lower-cased reg-name.
fn host_of(h: &str) -> Option<Host> {
    if let Ok(ip) = h.parse::<IpAddr>() {
        return Some(Host::Ip(ip));
    }
    if h.is_empty() || h.contains([':', '/', '?', '#', '[', ']', '@', ' ']) {
        return None;
    }
    Some(Host::Name(Arc::from(h.to_ascii_lowercase())))
}

/// Why a Proxy-Uri cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
enum UriFail {
    /// A well-formed URI of a scheme the proxy does not forward to (5.05).
    Unsupported(String),
    /// Not an absolute CoAP URI (4.02).
    Malformed(Cow<'static, str>),
}

fn malformed(why: impl Into<Cow<'static, str>>) -> UriFail {
    UriFail::Malformed(why.into())
}

/// Splits a Proxy-Uri into its target and the Uri-Path / Uri-Query options, written to `out`
/// (RFC 7252 §6.4 steps 1-9). The same decomposition as [`hopcore_codec::CoapUri::parse`] and
/// `write_path_query`, but without a heap allocation per segment: segments without
/// percent-encoding are copied straight into the options.
fn split_proxy_uri(uri: &str, out: &mut Options) -> Result<Target, UriFail> {
    // Steps 1-3: an absolute URI whose scheme is "coap".
    let (scheme, rest) = uri.split_once(':').ok_or_else(|| malformed("not an absolute URI"))?;
    let scheme_ok = scheme.bytes().next().is_some_and(|c| c.is_ascii_alphabetic())
        && scheme.bytes().all(|c| c.is_ascii_alphanumeric() || b"+-.".contains(&c));
    if !scheme_ok {
        return Err(malformed("not an absolute URI"));
    }
    if !scheme.eq_ignore_ascii_case("coap") {
        return Err(UriFail::Unsupported(scheme.to_ascii_lowercase()));
    }
    // Step 4: no fragment.
    if rest.contains('#') {
        return Err(malformed("fragment"));
    }
    let rest = rest.strip_prefix("//").ok_or_else(|| malformed("no host"))?;
    let (authority, path_query) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    if authority.contains('@') {
        return Err(malformed("userinfo"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (lit, after) = v6.split_once(']').ok_or_else(|| malformed("bad IPv6 literal"))?;
        let ip = lit.parse::<Ipv6Addr>().map_err(|_| malformed("bad IPv6 literal"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| malformed("bad port"))?),
        };
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (h, p) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        };
        if h.is_empty() {
            return Err(malformed("no host"));
        }
        // reg-name = *( unreserved / pct-encoded / sub-delims ) (RFC 3986 §3.2.2).
        if !h.bytes().all(|c| c.is_ascii_alphanumeric() || b"-._~%!$&'()*+,;=".contains(&c)) {
            return Err(malformed("bad host"));
        }
        let decoded: Cow<'_, str> = if h.contains('%') {
            Cow::Owned(hopcore_codec::uri::percent_decode(h).map_err(|_| malformed("bad percent-encoding"))?)
        } else {
            Cow::Borrowed(h)
        };
        // Step 5: an IPv4 literal, or a reg-name (lower-cased).
        let host = host_of(&decoded).ok_or_else(|| malformed("bad host"))?;
        (host, p)
    };
    // Step 6: the port, or the scheme's default.
    let port = match port {
        None | Some("") => Scheme::Coap.default_port(),
        Some(p) => p.parse::<u16>().ok().filter(|p| *p != 0).ok_or_else(|| malformed("bad port"))?,
    };
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, q),
        None => (path_query, ""),
    };
    let mut scratch = Vec::new();
    // Step 8: an empty path or "/" gives no Uri-Path.
    if !(path.is_empty() || path == "/") {
        let path = path.strip_prefix('/').unwrap_or(path);
        for seg in path.split('/') {
            push_decoded(out, num::URI_PATH, seg, &mut scratch)?;
        }
    }
    // Step 9: each argument of the query.
    if !query.is_empty() {
        for arg in query.split('&') {
            push_decoded(out, num::URI_QUERY, arg, &mut scratch)?;
        }
    }
    Ok(Target { scheme: Scheme::Coap, host, port })
}

/// Pushes a percent-decoded URI component as an option (Uri-Path/Uri-Query: 0-255 bytes of
/// UTF-8).
fn push_decoded(out: &mut Options, number: u16, s: &str, scratch: &mut Vec<u8>) -> Result<(), UriFail> {
    let value: &[u8] = if s.contains('%') {
        scratch.clear();
        let b = s.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' {
                let h = b.get(i + 1).and_then(|c| (*c as char).to_digit(16));
                let l = b.get(i + 2).and_then(|c| (*c as char).to_digit(16));
                match (h, l) {
                    (Some(h), Some(l)) => scratch.push((h * 16 + l) as u8),
                    _ => return Err(malformed("bad percent-encoding")),
                }
                i += 3;
            } else {
                scratch.push(b[i]);
                i += 1;
            }
        }
        if std::str::from_utf8(scratch).is_err() {
            return Err(malformed("bad percent-encoding"));
        }
        scratch
    } else {
        s.as_bytes()
    };
    if value.len() > 255 {
        return Err(malformed("a path segment or query argument is longer than 255 bytes"));
    }
    out.push(number, value);
    Ok(())
}

#[cfg(test)]
mod tests;
