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
        }
    }
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
        Ok(ProxyConfig {
            forward: raw.forward,
            hop_limit,
            upstream_timeout: Duration::from_secs_f64(t),
            upstream_nstart,
            max_in_flight,
            names,
            routes,
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
