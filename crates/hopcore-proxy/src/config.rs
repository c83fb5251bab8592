//! The proxy configuration ([`ProxyConfig`]), read from TOML.
//!
//! The format is documented by example in `crates/hopcore-proxy/proxy.example.toml`, which the
//! tests parse, so it cannot drift from the code. Every field is optional; an empty file gives
//! a forward proxy with the defaults below and no reverse routes.
//!
//! Routes are validated when the configuration is loaded (a route whose upstream URI does not
//! parse is an error naming the route and the reason), so the per-request code never fails on
//! configuration.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hopcore_codec::uri::percent_decode;
use hopcore_codec::{CoapUri, UriError};
use serde::Deserialize;
use thiserror::Error;

use crate::decide::{Host, Scheme, Target};

/// RFC 8768 §3: "If no initial value is explicitly provided, the default initial Hop-Limit
/// value of 16 MUST be used."
pub const DEFAULT_HOP_LIMIT: u8 = 16;
/// How long the proxy waits for an upstream response before answering 5.04 (RFC 7252 §5.7.1).
pub const DEFAULT_UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// RFC 7252 §4.7: NSTART is 1 unless configured otherwise.
pub const DEFAULT_UPSTREAM_NSTART: usize = 1;
/// Requests relayed concurrently before new ones are answered with 5.03.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 4096;
/// CP §2.1: the most OSCORE layers removed from one incoming request (the engine's default).
pub const DEFAULT_MAX_LAYERS: usize = 8;
/// The highest configurable `max_layers`.
pub const MAX_MAX_LAYERS: usize = 64;

/// The validated proxy configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawConfig")]
pub struct ProxyConfig {
    /// Act as a forward proxy for Proxy-Uri / Proxy-Scheme requests (RFC 7252 §5.7.2). When
    /// false, such requests get 5.05 (unless they name the proxy itself).
    pub forward: bool,
    /// The Hop-Limit inserted into requests that carry none (RFC 8768 §3), 1..=255.
    pub hop_limit: u8,
    /// How long to wait for an upstream response (including name resolution) before 5.04.
    pub upstream_timeout: Duration,
    /// NSTART towards each origin server (RFC 7252 §4.7). Every client's requests share the
    /// proxy's one upstream endpoint, so raising it (e.g. to 32) is what allows throughput.
    pub upstream_nstart: usize,
    /// Requests relayed concurrently; beyond it the proxy answers 5.03 with Max-Age 1.
    pub max_in_flight: usize,
    /// Host names and addresses (besides its socket address) under which the proxy knows
    /// itself: a forward-proxy request for one of them is a local request (RFC 7252 §5.7.2,
    /// §5.10.2). Lower-case. The first one, if any, identifies the proxy in 5.08 responses.
    pub names: Vec<String>,
    /// Reverse-proxy routes (RFC 7252 §5.7.3), matched by longest path prefix; a route with
    /// a `host` wins over one without at the same length.
    pub routes: Vec<Route>,
    /// CP §2.1: the most OSCORE layers the proxy removes from one incoming request; a request
    /// that needs more gets 4.01, protected with the layers removed.
    pub max_layers: usize,
    /// CP §2.4 Step 4 (draft-tiloca-core-groupcomm-proxy-01 §4 REQ1/REQ2): with at least one
    /// rule, a request is forwarded only where a rule matches its client and destination;
    /// otherwise it gets 4.01. No rules: every request may be forwarded.
    pub allow: Vec<AllowRule>,
    /// CP §2.4.1: per-source lists of the security contexts that may be used to remove a layer
    /// of a request from that source. The most specific matching prefix wins; a source that
    /// matches no rule may use every client context.
    pub sources: Vec<SourceRule>,
    /// Forward-proxy requests go to this proxy instead of to their origin (CP's "With Two
    /// Forward-Proxies"), still carrying the proxy options; reverse routes are unaffected.
    pub upstream_proxy: Option<UpstreamProxy>,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        ProxyConfig {
            forward: true,
            hop_limit: DEFAULT_HOP_LIMIT,
            upstream_timeout: DEFAULT_UPSTREAM_TIMEOUT,
            upstream_nstart: DEFAULT_UPSTREAM_NSTART,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
            names: Vec::new(),
            routes: Vec::new(),
            max_layers: DEFAULT_MAX_LAYERS,
            allow: Vec::new(),
            sources: Vec::new(),
            upstream_proxy: None,
        }
    }
}

/// The next proxy of a chain (`upstream_proxy = "coap://host:port"`): forward-proxy requests
/// are sent to it with Proxy-Scheme, Uri-Host and Uri-Port naming their origin (RFC 7252
/// §5.10.2), and protected with the context of a credentials `uri` entry matching this URI, if
/// any (the P1-P2 layer of CP's "With Two Forward-Proxies").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamProxy {
    /// As configured, e.g. "coap://127.0.0.1:5690".
    pub uri: String,
    /// Where the requests go.
    pub target: Target,
}

impl UpstreamProxy {
    /// A validated upstream proxy URI: scheme "coap", a port other than 0, no path or query.
    pub fn new(uri: &str) -> Result<UpstreamProxy, String> {
        let parsed = CoapUri::parse(uri).map_err(|e| e.to_string())?;
        if parsed.scheme != "coap" {
            return Err(format!("scheme {:?} is not supported (only \"coap\")", parsed.scheme));
        }
        if parsed.path.iter().any(|s| !s.is_empty()) || !parsed.query.is_empty() {
            return Err("a proxy URI has no path or query".into());
        }
        let port = parsed.port_or_default();
        if port == 0 {
            return Err("port 0".into());
        }
        let host = match parsed.ip() {
            Some(ip) => Host::Ip(ip),
            None => Host::Name(Arc::from(parsed.host.as_str())),
        };
        Ok(UpstreamProxy { uri: uri.to_string(), target: Target { scheme: Scheme::Coap, host, port } })
    }

    /// The forms of this proxy's URI that credentials `uri` patterns are matched against:
    /// `coap://host:port/`, and `coap://host/` for the default port.
    pub fn uri_forms(&self) -> Vec<String> {
        let t = &self.target;
        let mut forms = vec![format!("{t}/")];
        if t.port == t.scheme.default_port() {
            forms.push(format!("{}://{}/", t.scheme.as_str(), t.host));
        }
        forms
    }
}

/// Which clients an [`AllowRule`] applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AllowClient {
    /// Requests from which a layer of the context with this label was removed (the label of a
    /// `peer` entry of the proxy's credentials, e.g. ":client1").
    Label(String),
    /// Every request, authenticated or not (`client = "*"`).
    Any,
    /// Requests from which no layer was removed (the rule has no `client`).
    Unauthenticated,
}

/// One `[[allow]]` rule: `client` may have requests forwarded to URIs matching `destinations`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    pub client: AllowClient,
    /// URI patterns (`*` matches any run of characters), matched against the upstream request
    /// URI `coap://host:port/path?query` (also without the port when it is 5683). Path and
    /// query of an end-to-end protected request are encrypted, so only its authority and "/"
    /// are seen: `coap://host:port/*` is the pattern for such destinations.
    pub destinations: Vec<String>,
}

impl AllowRule {
    /// Whether the rule applies to a request whose removed layers have these labels
    /// (outermost first) and whose upstream URIs are `uris` (the forms of one URI).
    pub fn matches(&self, removed: &[String], uris: &[String]) -> bool {
        let client = match &self.client {
            AllowClient::Label(l) => removed.iter().any(|r| r == l),
            AllowClient::Any => true,
            AllowClient::Unauthenticated => removed.is_empty(),
        };
        client
            && self
                .destinations
                .iter()
                .any(|p| uris.iter().any(|u| hopcore_security::credentials::wildcard_match(p, u)))
    }
}

/// An IP address prefix, e.g. `127.0.0.0/8`, `2001:db8::/32` or a single address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpPrefix {
    pub addr: IpAddr,
    pub len: u8,
}

impl IpPrefix {
    /// Parses `addr` or `addr/len` (IPv6 optionally in brackets).
    pub fn parse(text: &str) -> Option<IpPrefix> {
        let (a, len) = match text.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (text, None),
        };
        let a = a.trim().trim_start_matches('[').trim_end_matches(']');
        let addr = canonical(a.parse::<IpAddr>().ok()?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(IpPrefix { addr, len })
    }

    /// Whether `ip` is inside the prefix (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(p), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.len)).unwrap_or(0);
                u32::from(p) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(p), IpAddr::V6(a)) => {
                let mask = u128::MAX.checked_shl(128 - u32::from(self.len)).unwrap_or(0);
                u128::from(p) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

/// One `[[source]]` rule (CP §2.4.1): requests from `from` may only be verified with the
/// contexts labelled `contexts`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceRule {
    pub from: IpPrefix,
    pub contexts: Vec<String>,
}

/// A reverse-proxy route: requests whose Uri-Path starts with `prefix` (and whose Uri-Host is
/// `host`, if set) go to `upstream`, with the rest of the path appended to the upstream's path
/// and the request's query appended to the upstream's query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    /// The path as configured, e.g. "/sensors" (for messages).
    pub path: String,
    /// The decoded, non-empty segments of `path`; "/" is the empty prefix and matches all.
    pub prefix: Vec<String>,
    /// Only requests with this Uri-Host match (lower-case, IPv6 without brackets).
    pub host: Option<String>,
    /// The upstream base URI.
    pub upstream: CoapUri,
    /// Where the requests go (from `upstream`).
    pub target: Target,
}

/// Why a route is invalid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RouteError {
    #[error("path must start with '/'")]
    PathNotAbsolute,
    #[error("path: {0}")]
    Path(UriError),
    #[error("host must not be empty")]
    EmptyHost,
    #[error("upstream {uri:?}: {reason}")]
    Upstream { uri: String, reason: UriError },
    #[error("upstream {uri:?}: scheme {scheme:?} is not supported (only \"coap\")")]
    Scheme { uri: String, scheme: String },
    #[error("upstream {uri:?}: port 0")]
    PortZero { uri: String },
}

/// Why a configuration could not be loaded.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {reason}")]
    Io { path: PathBuf, reason: String },
    /// A TOML syntax or type error; the message names the line and column.
    #[error("{0}")]
    Toml(String),
    /// `index` counts the `[[route]]` tables from 1.
    #[error("route #{index} (path {path:?}): {reason}")]
    Route { index: usize, path: String, reason: RouteError },
    #[error("routes #{first} and #{second} both have path {path:?} and the same host")]
    DuplicateRoute { first: usize, second: usize, path: String },
    #[error("hop_limit = {0}: must be between 1 and 255 (RFC 8768 §3)")]
    HopLimit(i64),
    #[error("upstream_timeout_secs = {0}: must be a positive number of seconds")]
    UpstreamTimeout(f64),
    #[error("upstream_nstart = {0}: must be at least 1")]
    UpstreamNstart(i64),
    #[error("max_in_flight = {0}: must be at least 1")]
    MaxInFlight(i64),
    #[error("names: empty name")]
    EmptyName,
    #[error("max_layers = {0}: must be between 1 and {MAX_MAX_LAYERS} (CP §2.1)")]
    MaxLayers(i64),
    /// `index` counts the `[[allow]]` tables from 1.
    #[error("allow rule #{index}: {reason}")]
    Allow { index: usize, reason: String },
    /// `index` counts the `[[source]]` tables from 1.
    #[error("source rule #{index}: {reason}")]
    Source { index: usize, reason: String },
    #[error("upstream_proxy = {uri:?}: {reason}")]
    UpstreamProxy { uri: String, reason: String },
}

impl Route {
    /// A validated route. `path` is the prefix ("/sensors"), `host` an optional Uri-Host to
    /// match, `upstream` the base URI ("coap://127.0.0.1:5690/base").
    pub fn new(path: &str, host: Option<&str>, upstream: &str) -> Result<Route, RouteError> {
        let rest = path.strip_prefix('/').ok_or(RouteError::PathNotAbsolute)?;
        let prefix = rest
            .split('/')
            .filter(|s| !s.is_empty())
            .map(percent_decode)
            .collect::<Result<Vec<_>, _>>()
            .map_err(RouteError::Path)?;
        let host = match host {
            None => None,
            Some(h) => {
                let h = h.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
                if h.is_empty() {
                    return Err(RouteError::EmptyHost);
                }
                Some(h)
            }
        };
        let uri =
            CoapUri::parse(upstream).map_err(|reason| RouteError::Upstream { uri: upstream.to_string(), reason })?;
        if uri.scheme != "coap" {
            return Err(RouteError::Scheme { uri: upstream.to_string(), scheme: uri.scheme });
        }
        let port = uri.port_or_default();
        if port == 0 {
            return Err(RouteError::PortZero { uri: upstream.to_string() });
        }
        let host_t = match uri.ip() {
            Some(ip) => Host::Ip(ip),
            None => Host::Name(Arc::from(uri.host.as_str())),
        };
        let target = Target { scheme: Scheme::Coap, host: host_t, port };
        Ok(Route { path: path.to_string(), prefix, host, upstream: uri, target })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_true")]
    forward: bool,
    #[serde(default = "default_hop_limit")]
    hop_limit: i64,
    #[serde(default = "default_timeout_secs")]
    upstream_timeout_secs: f64,
    #[serde(default = "default_nstart")]
    upstream_nstart: i64,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: i64,
    #[serde(default)]
    names: Vec<String>,
    #[serde(default, rename = "route")]
    routes: Vec<RawRoute>,
    #[serde(default = "default_max_layers")]
    max_layers: i64,
    #[serde(default, rename = "allow")]
    allow: Vec<RawAllow>,
    #[serde(default, rename = "source")]
    sources: Vec<RawSource>,
    #[serde(default)]
    upstream_proxy: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAllow {
    #[serde(default)]
    client: Option<String>,
    destinations: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSource {
    from: String,
    contexts: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    path: String,
    upstream: String,
    #[serde(default)]
    host: Option<String>,
}

fn default_true() -> bool {
    true
}
fn default_hop_limit() -> i64 {
    DEFAULT_HOP_LIMIT as i64
}
fn default_timeout_secs() -> f64 {
    DEFAULT_UPSTREAM_TIMEOUT.as_secs_f64()
}
fn default_nstart() -> i64 {
    DEFAULT_UPSTREAM_NSTART as i64
}
fn default_max_in_flight() -> i64 {
    DEFAULT_MAX_IN_FLIGHT as i64
}
fn default_max_layers() -> i64 {
    DEFAULT_MAX_LAYERS as i64
}

impl TryFrom<RawConfig> for ProxyConfig {
    type Error = ConfigError;

    fn try_from(raw: RawConfig) -> Result<ProxyConfig, ConfigError> {
        // RFC 8768 §3: the value is between 1 and 255.
        let hop_limit =
            u8::try_from(raw.hop_limit).ok().filter(|h| *h >= 1).ok_or(ConfigError::HopLimit(raw.hop_limit))?;
        let t = raw.upstream_timeout_secs;
        if !(t.is_finite() && t > 0.0 && t < 1e9) {
            return Err(ConfigError::UpstreamTimeout(t));
        }
        let upstream_nstart = usize::try_from(raw.upstream_nstart)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or(ConfigError::UpstreamNstart(raw.upstream_nstart))?;
        let max_in_flight = usize::try_from(raw.max_in_flight)
            .ok()
            .filter(|n| *n >= 1)
            .ok_or(ConfigError::MaxInFlight(raw.max_in_flight))?;
        let mut names = Vec::with_capacity(raw.names.len());
        for n in raw.names {
            let n = n.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
            if n.is_empty() {
                return Err(ConfigError::EmptyName);
            }
            names.push(n);
        }
        let mut routes: Vec<Route> = Vec::with_capacity(raw.routes.len());
        for (i, r) in raw.routes.iter().enumerate() {
            let route = Route::new(&r.path, r.host.as_deref(), &r.upstream).map_err(|reason| ConfigError::Route {
                index: i + 1,
                path: r.path.clone(),
                reason,
            })?;
            if let Some(j) = routes.iter().position(|o| o.prefix == route.prefix && o.host == route.host) {
                return Err(ConfigError::DuplicateRoute { first: j + 1, second: i + 1, path: r.path.clone() });
            }
            routes.push(route);
        }
        // CP §2.1.
        let max_layers = usize::try_from(raw.max_layers)
            .ok()
            .filter(|n| (1..=MAX_MAX_LAYERS).contains(n))
            .ok_or(ConfigError::MaxLayers(raw.max_layers))?;
        let mut allow = Vec::with_capacity(raw.allow.len());
        for (i, a) in raw.allow.into_iter().enumerate() {
            let fail = |reason: &str| ConfigError::Allow { index: i + 1, reason: reason.to_string() };
            let client = match a.client.as_deref() {
                None => AllowClient::Unauthenticated,
                Some("*") => AllowClient::Any,
                Some("") => return Err(fail("client must not be empty (leave it out for unauthenticated clients)")),
                Some(l) => AllowClient::Label(l.to_string()),
            };
            if a.destinations.is_empty() || a.destinations.iter().any(String::is_empty) {
                return Err(fail("destinations must be a non-empty list of non-empty URI patterns"));
            }
            allow.push(AllowRule { client, destinations: a.destinations });
        }
        let mut sources = Vec::with_capacity(raw.sources.len());
        for (i, s) in raw.sources.into_iter().enumerate() {
            let fail = |reason: String| ConfigError::Source { index: i + 1, reason };
            let from = IpPrefix::parse(&s.from)
                .ok_or_else(|| fail(format!("from = {:?}: not an IP address or address/length prefix", s.from)))?;
            if s.contexts.iter().any(String::is_empty) {
                return Err(fail("contexts: empty label".into()));
            }
            sources.push(SourceRule { from, contexts: s.contexts });
        }
        let upstream_proxy = match raw.upstream_proxy {
            None => None,
            Some(uri) => Some(
                UpstreamProxy::new(&uri).map_err(|reason| ConfigError::UpstreamProxy { uri: uri.clone(), reason })?,
            ),
        };
        Ok(ProxyConfig {
            forward: raw.forward,
            hop_limit,
            upstream_timeout: Duration::from_secs_f64(t),
            upstream_nstart,
            max_in_flight,
            names,
            routes,
            max_layers,
            allow,
            sources,
            upstream_proxy,
        })
    }
}

impl ProxyConfig {
    /// Parses and validates a TOML configuration.
    pub fn from_toml_str(text: &str) -> Result<ProxyConfig, ConfigError> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| ConfigError::Toml(e.to_string()))?;
        ProxyConfig::try_from(raw)
    }

    /// Reads a TOML configuration file.
    pub fn load(path: impl AsRef<Path>) -> Result<ProxyConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::Io { path: path.to_path_buf(), reason: e.to_string() })?;
        ProxyConfig::from_toml_str(&text).map_err(|e| match e {
            ConfigError::Toml(m) => ConfigError::Toml(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// The contexts (by label) that requests from `peer` may be verified with, from the most
    /// specific `[[source]]` rule containing it (the first of equally specific ones; CP §2.4.1); `None`: no rule, every client
    /// context.
    pub fn contexts_for_source(&self, peer: IpAddr) -> Option<&[String]> {
        self.sources
            .iter()
            .filter(|r| r.from.contains(peer))
            .min_by_key(|r| std::cmp::Reverse(r.from.len))
            .map(|r| r.contexts.as_slice())
    }

    /// Whether `ip` is one of the configured names (as an address literal).
    pub(crate) fn names_ip(&self) -> impl Iterator<Item = IpAddr> + '_ {
        self.names.iter().filter_map(|n| n.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_file_parses_and_matches_the_documentation() {
        let cfg = ProxyConfig::from_toml_str(include_str!("../proxy.example.toml")).unwrap();
        assert!(cfg.forward);
        assert_eq!(cfg.hop_limit, 16);
        assert_eq!(cfg.upstream_nstart, 32);
        assert_eq!(cfg.upstream_timeout, Duration::from_secs(10));
        assert_eq!(cfg.routes.len(), 2);
        let r = &cfg.routes[0];
        assert_eq!(r.prefix, vec!["sensors"]);
        assert_eq!(r.upstream.path, vec!["base"]);
        assert_eq!(r.target.port, 5690);
        assert_eq!(cfg.routes[1].host.as_deref(), Some("lights.example"));
        assert!(matches!(cfg.routes[1].target.host, Host::Name(ref n) if &**n == "lights.internal"));
    }

    /// The OSCORE examples of `proxy.example.toml` (the "#>" lines) parse as documented.
    #[test]
    fn example_oscore_rules_parse() {
        let text: String = include_str!("../proxy.example.toml")
            .lines()
            .filter_map(|l| l.strip_prefix("#>"))
            .map(|l| format!("{}\n", l.trim_start()))
            .collect();
        let cfg = ProxyConfig::from_toml_str(&text).unwrap();
        assert_eq!(cfg.allow.len(), 2);
        assert_eq!(cfg.allow[0].client, AllowClient::Label(":client1".into()));
        assert_eq!(cfg.allow[1].client, AllowClient::Unauthenticated);
        let uris = |u: &str| vec![u.to_string()];
        assert!(cfg.allow[0].matches(&[":client1".into()], &uris("coap://127.0.0.1:5683/a/b")));
        assert!(!cfg.allow[0].matches(&[":client2".into()], &uris("coap://127.0.0.1:5683/a/b")));
        assert!(!cfg.allow[0].matches(&[], &uris("coap://127.0.0.1:5683/a")));
        assert!(cfg.allow[1].matches(&[], &uris("coap://127.0.0.1:5683/public/x")));
        assert!(!cfg.allow[1].matches(&[":client1".into()], &uris("coap://127.0.0.1:5683/public/x")));
        assert_eq!(cfg.sources.len(), 2);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(cfg.contexts_for_source(ip("10.1.2.3")), Some(&[":client1".to_string(), ":client2".into()][..]));
        assert_eq!(cfg.contexts_for_source(ip("::1")), Some(&[":client1".to_string()][..]));
        assert_eq!(cfg.contexts_for_source(ip("10.2.0.1")), None);
        assert_eq!(ProxyConfig::from_toml_str(include_str!("../proxy.example.toml")).unwrap().max_layers, 8);
        let up = cfg.upstream_proxy.expect("the upstream_proxy example");
        assert_eq!(up.target.to_string(), "coap://127.0.0.1:5690");
        assert_eq!(up.uri_forms(), vec!["coap://127.0.0.1:5690/"]);
        assert!(ProxyConfig::from_toml_str(include_str!("../proxy.example.toml")).unwrap().upstream_proxy.is_none());
    }

    #[test]
    fn upstream_proxy_uris() {
        let p = |u: &str| ProxyConfig::from_toml_str(&format!("upstream_proxy = {u:?}")).map(|c| c.upstream_proxy);
        let up = p("coap://P2.example/").unwrap().unwrap();
        assert!(matches!(up.target.host, Host::Name(ref n) if &**n == "p2.example"));
        assert_eq!(up.uri_forms(), vec!["coap://p2.example:5683/", "coap://p2.example/"]);
        let up = p("coap://[::1]:61616").unwrap().unwrap();
        assert_eq!((up.target.host, up.target.port), (Host::Ip("::1".parse().unwrap()), 61616));
        for (bad, why) in [
            ("coaps://h", "not supported"),
            ("coap://h/path", "no path or query"),
            ("coap://h?q", "no path or query"),
            ("coap://h:0", "port 0"),
            ("h:5683", ""),
        ] {
            let e = p(bad).unwrap_err();
            assert!(matches!(e, ConfigError::UpstreamProxy { .. }) && e.to_string().contains(why), "{bad}: {e}");
        }
        assert!(p("").unwrap_err().to_string().starts_with("upstream_proxy = \"\""));
        assert!(ProxyConfig::from_toml_str("").unwrap().upstream_proxy.is_none());
    }

    #[test]
    fn oscore_rule_errors_and_prefixes() {
        assert_eq!(ProxyConfig::from_toml_str("max_layers = 0").unwrap_err(), ConfigError::MaxLayers(0));
        assert!(ProxyConfig::from_toml_str("max_layers = 65").is_err());
        let e = ProxyConfig::from_toml_str("[[allow]]\nclient = \":a\"\ndestinations = []\n").unwrap_err();
        assert!(e.to_string().starts_with("allow rule #1: destinations"), "{e}");
        let e = ProxyConfig::from_toml_str("[[allow]]\nclient = \"\"\ndestinations = [\"*\"]\n").unwrap_err();
        assert!(e.to_string().contains("client must not be empty"), "{e}");
        let e = ProxyConfig::from_toml_str("[[source]]\nfrom = \"10.0.0.0/33\"\ncontexts = []\n").unwrap_err();
        assert!(e.to_string().starts_with("source rule #1: from = \"10.0.0.0/33\""), "{e}");
        let any = ProxyConfig::from_toml_str("[[allow]]\nclient = \"*\"\ndestinations = [\"*\"]\n").unwrap();
        assert!(any.allow[0].matches(&[], &["coap://x/".into()]));
        let p = IpPrefix::parse("192.0.2.0/24").unwrap();
        assert!(p.contains("192.0.2.200".parse().unwrap()));
        assert!(p.contains("::ffff:192.0.2.1".parse().unwrap()), "IPv4-mapped counts as IPv4");
        assert!(!p.contains("192.0.3.1".parse().unwrap()));
        assert!(!p.contains("::1".parse().unwrap()));
        let all = IpPrefix::parse("::/0").unwrap();
        assert!(all.contains("2001:db8::1".parse().unwrap()));
        assert!(IpPrefix::parse("[::1]").unwrap().contains("::1".parse().unwrap()));
        assert!(IpPrefix::parse("0.0.0.0/0").unwrap().contains("203.0.113.9".parse().unwrap()));
        assert!(IpPrefix::parse("host").is_none());
    }

    #[test]
    fn empty_file_gives_the_defaults() {
        let cfg = ProxyConfig::from_toml_str("").unwrap();
        assert!(cfg.forward);
        assert_eq!(cfg.hop_limit, DEFAULT_HOP_LIMIT);
        assert_eq!(cfg.upstream_timeout, DEFAULT_UPSTREAM_TIMEOUT);
        assert_eq!(cfg.upstream_nstart, 1);
        assert!(cfg.routes.is_empty());
    }

    #[test]
    fn readable_errors() {
        let e = ProxyConfig::from_toml_str(
            "[[route]]\npath = \"/a\"\nupstream = \"coap://127.0.0.1/x\"\n\
             [[route]]\npath = \"/sensors\"\nupstream = \"coap://[::g]/\"\n",
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "route #2 (path \"/sensors\"): upstream \"coap://[::g]/\": bad IPv6 literal \"::g\"");

        let e = ProxyConfig::from_toml_str("[[route]]\npath = \"/s\"\nupstream = \"coaps://h/\"\n").unwrap_err();
        assert!(e.to_string().contains("scheme \"coaps\" is not supported"), "{e}");

        let e = ProxyConfig::from_toml_str("[[route]]\npath = \"s\"\nupstream = \"coap://h/\"\n").unwrap_err();
        assert_eq!(e.to_string(), "route #1 (path \"s\"): path must start with '/'");

        let e = ProxyConfig::from_toml_str("hop_limit = 0").unwrap_err();
        assert_eq!(e, ConfigError::HopLimit(0));
        assert!(ProxyConfig::from_toml_str("hop_limit = 256").is_err());
        assert!(ProxyConfig::from_toml_str("upstream_timeout_secs = 0").is_err());
        assert!(ProxyConfig::from_toml_str("upstream_nstart = 0").is_err());

        // Unknown keys are typos, not silently ignored; the message has the line.
        let e = ProxyConfig::from_toml_str("forwrd = true").unwrap_err().to_string();
        assert!(e.contains("forwrd") && e.contains("line 1"), "{e}");

        let e = ProxyConfig::from_toml_str(
            "[[route]]\npath = \"/a/\"\nupstream = \"coap://h/\"\n[[route]]\npath = \"/a\"\nupstream = \"coap://g/\"\n",
        )
        .unwrap_err();
        assert!(matches!(e, ConfigError::DuplicateRoute { first: 1, second: 2, .. }), "{e}");
    }

    #[test]
    fn fractional_timeout_and_names() {
        let cfg =
            ProxyConfig::from_toml_str("upstream_timeout_secs = 0.25\nnames = [\"Proxy.Example\", \"[::1]\"]").unwrap();
        assert_eq!(cfg.upstream_timeout, Duration::from_millis(250));
        assert_eq!(cfg.names, vec!["proxy.example", "::1"]);
        assert_eq!(cfg.names_ip().collect::<Vec<_>>(), vec!["::1".parse::<IpAddr>().unwrap()]);
    }

    #[test]
    fn embeds_in_a_larger_toml_document() {
        #[derive(Deserialize)]
        struct Outer {
            proxy: ProxyConfig,
        }
        let o: Outer = toml::from_str("[proxy]\nforward = false\n").unwrap();
        assert!(!o.proxy.forward);
        assert!(toml::from_str::<Outer>("[proxy]\nhop_limit = 0\n").is_err());
    }
}
