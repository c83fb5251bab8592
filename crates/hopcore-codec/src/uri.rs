//! CoAP URIs: decomposing a URI into options (RFC 7252 §6.4) and composing one from options
//! (RFC 7252 §6.5), as needed for Proxy-Uri and for the OSCORE decomposition of Proxy-Uri
//! (RFC 8613 §4.1.3.3).

use std::fmt;
use std::net::IpAddr;

use thiserror::Error;

use crate::message::Options;
use crate::registry::num;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum UriError {
    #[error("URI {0:?} is not absolute (no scheme)")]
    NotAbsolute(String),
    #[error("URI has a fragment, which CoAP URIs must not have (RFC 7252 §6.4 step 3)")]
    Fragment,
    #[error("URI has no host")]
    NoHost,
    #[error("URI has userinfo, which CoAP does not support")]
    UserInfo,
    #[error("bad port {0:?}")]
    Port(String),
    #[error("bad percent-encoding in {0:?}")]
    PercentEncoding(String),
    #[error("bad IPv6 literal {0:?}")]
    Ipv6(String),
    #[error("Uri-Port option is not a valid 2-byte uint")]
    PortOption,
    #[error("option value is not UTF-8")]
    NotUtf8,
}

/// A decomposed CoAP URI (values percent-decoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoapUri {
    /// Lower-case scheme, e.g. "coap".
    pub scheme: String,
    /// Host: lower-case reg-name, IPv4 literal, or IPv6 literal without brackets.
    pub host: String,
    pub port: Option<u16>,
    /// Path segments (RFC 7252 §6.4 step 8: an empty path or "/" gives none).
    pub path: Vec<String>,
    /// Query arguments split at '&'.
    pub query: Vec<String>,
}

/// Default port of a scheme (RFC 7252 §6.1, §6.2; RFC 8323 for the reliable transports).
pub fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "coap" | "coap+tcp" | "coap+ws" => Some(5683),
        "coaps" | "coaps+tcp" => Some(5684),
        "http" => Some(80),
        "https" | "coaps+ws" => Some(443),
        _ => None,
    }
}

fn hexval(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Percent-decodes a URI component into a UTF-8 string.
pub fn percent_decode(s: &str) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let h = bytes.get(i + 1).copied().and_then(hexval);
            let l = bytes.get(i + 2).copied().and_then(hexval);
            match (h, l) {
                (Some(h), Some(l)) => out.push((h << 4) | l),
                _ => return Err(UriError::PercentEncoding(s.to_string())),
            }
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| UriError::PercentEncoding(s.to_string()))
}

/// Percent-encodes everything that is not unreserved, a sub-delim, ':' or '@' (RFC 3986 pchar),
/// plus the extra characters allowed in `extra` ('/' and '?' in queries).
fn percent_encode(s: &str, extra: &[u8], also_encode: &[u8], out: &mut String) {
    for &b in s.as_bytes() {
        let ok = b.is_ascii_alphanumeric()
            || b"-._~!$'()*+,;=:@".contains(&b) && !also_encode.contains(&b)
            || extra.contains(&b);
        if ok {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl CoapUri {
    /// Parses an absolute URI (RFC 7252 §6.4 steps 1-3 and the generic syntax of RFC 3986).
    pub fn parse(uri: &str) -> Result<CoapUri, UriError> {
        // Step 1/2: absolute URI with a scheme.
        let (scheme, rest) = uri.split_once(':').ok_or_else(|| UriError::NotAbsolute(uri.to_string()))?;
        let scheme_ok = scheme.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && scheme.chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
        if !scheme_ok {
            return Err(UriError::NotAbsolute(uri.to_string()));
        }
        // Step 3: no fragment.
        if rest.contains('#') {
            return Err(UriError::Fragment);
        }
        let rest = rest.strip_prefix("//").ok_or(UriError::NoHost)?;
        let (authority, path_query) = match rest.find(['/', '?']) {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if authority.contains('@') {
            return Err(UriError::UserInfo);
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (lit, after) = v6.split_once(']').ok_or_else(|| UriError::Ipv6(authority.to_string()))?;
            // Zone identifiers are not supported; the literal must parse as IPv6.
            lit.parse::<std::net::Ipv6Addr>().map_err(|_| UriError::Ipv6(lit.to_string()))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| UriError::Port(p.to_string()))?),
            };
            (lit.to_ascii_lowercase(), port)
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h)?.to_ascii_lowercase(), Some(p)),
                None => (percent_decode(authority)?.to_ascii_lowercase(), None),
            }
        };
        if host.is_empty() {
            return Err(UriError::NoHost);
        }
        let port = match port {
            None | Some("") => None,
            Some(p) => Some(p.parse::<u16>().map_err(|_| UriError::Port(p.to_string()))?),
        };
        let (path, query) = match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        };
        // Step 8: an empty path or "/" gives no Uri-Path.
        let path = if path.is_empty() || path == "/" {
            Vec::new()
        } else {
            path.strip_prefix('/').unwrap_or(path).split('/').map(percent_decode).collect::<Result<_, _>>()?
        };
        // Step 9: query split at '&'.
        let query = match query {
            None | Some("") => Vec::new(),
            Some(q) => q.split('&').map(percent_decode).collect::<Result<_, _>>()?,
        };
        Ok(CoapUri { scheme: scheme.to_ascii_lowercase(), host, port, path, query })
    }

    /// The port, or the scheme's default.
    pub fn port_or_default(&self) -> u16 {
        self.port.or_else(|| default_port(&self.scheme)).unwrap_or(5683)
    }

    /// The host as an IP address, if it is a literal.
    pub fn ip(&self) -> Option<IpAddr> {
        self.host.parse().ok()
    }

    /// Writes the options of a request sent to this URI's own host and port: Uri-Host,
    /// Uri-Path and Uri-Query (RFC 7252 §6.4 steps 5-9). Uri-Host is omitted for IP literals
    /// (step 5); Uri-Port never appears, since it would equal the destination port (step 7).
    pub fn write_options(&self, opts: &mut Options) {
        if self.ip().is_none() {
            opts.set(num::URI_HOST, self.host.as_bytes());
        }
        opts.remove(num::URI_PORT);
        self.write_path_query(opts);
    }

    /// Writes only Uri-Path and Uri-Query.
    pub fn write_path_query(&self, opts: &mut Options) {
        opts.remove(num::URI_PATH);
        opts.remove(num::URI_QUERY);
        for seg in &self.path {
            opts.push(num::URI_PATH, seg.as_bytes());
        }
        for q in &self.query {
            opts.push(num::URI_QUERY, q.as_bytes());
        }
    }

    /// Writes the options for a forward-proxy request with Proxy-Scheme (RFC 7252 §5.10.2):
    /// Proxy-Scheme, Uri-Host (always, even for literals, so the proxy can find the target),
    /// Uri-Port, Uri-Path, Uri-Query.
    pub fn write_proxy_scheme_options(&self, opts: &mut Options) {
        opts.set(num::PROXY_SCHEME, self.scheme.as_bytes());
        opts.set(num::URI_HOST, self.host.as_bytes());
        opts.set_uint(num::URI_PORT, self.port_or_default() as u32);
        self.write_path_query(opts);
    }

    /// Composes the URI string (RFC 7252 §6.5 steps 2-8).
    pub fn compose(&self) -> String {
        let mut s = String::with_capacity(32);
        s.push_str(&self.scheme);
        s.push_str("://");
        if self.host.contains(':') {
            s.push('[');
            s.push_str(&self.host);
            s.push(']');
        } else {
            percent_encode(&self.host, &[], b":@", &mut s);
        }
        if let Some(p) = self.port {
            if Some(p) != default_port(&self.scheme) {
                s.push_str(&format!(":{p}"));
            }
        }
        // Step 6: a '/' for an empty path, otherwise each segment encoded.
        if self.path.is_empty() {
            s.push('/');
        }
        for seg in &self.path {
            s.push('/');
            percent_encode(seg, &[], &[], &mut s);
        }
        for (i, q) in self.query.iter().enumerate() {
            s.push(if i == 0 { '?' } else { '&' });
            // Step 8: '&' inside an argument must be encoded.
            percent_encode(q, b"/?", b"&", &mut s);
        }
        s
    }

    /// Composes a URI from a request's options (RFC 7252 §6.5), with the destination used for
    /// the host and port when Uri-Host / Uri-Port are absent. A Proxy-Scheme option sets the
    /// scheme (RFC 7252 §5.10.2).
    pub fn from_options(opts: &Options, default_host: &str, default_port: u16) -> Result<CoapUri, UriError> {
        let scheme = match opts.get(num::PROXY_SCHEME) {
            Some(s) => std::str::from_utf8(s).map_err(|_| UriError::NotUtf8)?.to_ascii_lowercase(),
            None => "coap".to_string(),
        };
        let host = match opts.get(num::URI_HOST) {
            Some(h) => std::str::from_utf8(h).map_err(|_| UriError::NotUtf8)?.to_ascii_lowercase(),
            None => default_host.to_string(),
        };
        let port = match opts.get(num::URI_PORT) {
            Some(p) if p.len() <= 2 => crate::uint::decode(p).map(|v| v as u16).ok_or(UriError::PortOption)?,
            Some(_) => return Err(UriError::PortOption),
            None => default_port,
        };
        let text = |v: &[u8]| std::str::from_utf8(v).map(str::to_string).map_err(|_| UriError::NotUtf8);
        let path = opts.get_all(num::URI_PATH).map(text).collect::<Result<_, _>>()?;
        let query = opts.get_all(num::URI_QUERY).map(text).collect::<Result<_, _>>()?;
        Ok(CoapUri { scheme, host, port: Some(port), path, query })
    }
}

impl fmt::Display for CoapUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.compose())
    }
}

impl std::str::FromStr for CoapUri {
    type Err = UriError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CoapUri::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc7252_6_4_examples() {
        let u = CoapUri::parse("coap://example.net/.well-known/core").unwrap();
        assert_eq!(u.host, "example.net");
        assert_eq!(u.path, vec![".well-known", "core"]);
        let mut o = Options::new();
        u.write_options(&mut o);
        assert_eq!(o.get(num::URI_HOST), Some(&b"example.net"[..]));
        assert!(o.get(num::URI_PORT).is_none());

        // RFC 7252 §6.3: equivalent URIs.
        let a = CoapUri::parse("coap://EXAMPLE.com:5683/~sensors/temp.xml").unwrap();
        let b = CoapUri::parse("coap://example.com/%7Esensors/temp.xml").unwrap();
        assert_eq!(a.host, b.host);
        assert_eq!(a.path, b.path);
        assert_eq!(a.port_or_default(), b.port_or_default());

        let u = CoapUri::parse("coap://[2001:db8::2:1]:61616/%E2%82%AC?a=1&b%262").unwrap();
        assert_eq!(u.host, "2001:db8::2:1");
        assert_eq!(u.port, Some(61616));
        assert_eq!(u.path, vec!["€"]);
        assert_eq!(u.query, vec!["a=1", "b&2"]);
        let mut o = Options::new();
        u.write_options(&mut o);
        assert!(o.get(num::URI_HOST).is_none(), "IP literal gives no Uri-Host");
        // Step 7: the destination port is the URI's own, so no Uri-Port.
        assert!(o.get(num::URI_PORT).is_none());
        assert_eq!(u.compose(), "coap://[2001:db8::2:1]:61616/%E2%82%AC?a=1&b%262");

        // A trailing slash is an empty last segment; "/" alone is no path.
        assert_eq!(CoapUri::parse("coap://h/a/").unwrap().path, vec!["a", ""]);
        assert!(CoapUri::parse("coap://h/").unwrap().path.is_empty());
        assert!(CoapUri::parse("coap://h").unwrap().path.is_empty());
    }

    #[test]
    fn uri_errors() {
        assert!(matches!(CoapUri::parse("/relative"), Err(UriError::NotAbsolute(_))));
        assert_eq!(CoapUri::parse("coap://h/a#frag"), Err(UriError::Fragment));
        assert!(matches!(CoapUri::parse("coap://h:99999/"), Err(UriError::Port(_))));
        assert!(matches!(CoapUri::parse("coap://h/%zz"), Err(UriError::PercentEncoding(_))));
        assert!(matches!(CoapUri::parse("coap://[::g]/"), Err(UriError::Ipv6(_))));
        assert_eq!(CoapUri::parse("coap:///x"), Err(UriError::NoHost));
        assert_eq!(CoapUri::parse("coap://u@h/"), Err(UriError::UserInfo));
    }

    #[test]
    fn compose_from_options_roundtrip() {
        let u = CoapUri::parse("coap://example.org:7777/a%2Fb/c?x=%26&y").unwrap();
        let mut o = Options::new();
        u.write_proxy_scheme_options(&mut o);
        let back = CoapUri::from_options(&o, "ignored", 1).unwrap();
        assert_eq!(back, u);
        assert_eq!(back.compose(), "coap://example.org:7777/a%2Fb/c?x=%26&y");
        // Defaults from the destination.
        let mut o = Options::new();
        o.push(num::URI_PATH, b"p");
        let c = CoapUri::from_options(&o, "127.0.0.1", 5683).unwrap();
        assert_eq!(c.compose(), "coap://127.0.0.1/p");
    }
}
