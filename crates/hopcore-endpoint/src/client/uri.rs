//! From a [`CoapUri`] to a first hop ([`resolve`]) and a request message ([`build_request`]).

use std::net::SocketAddr;

use hopcore_codec::{num, CoapUri, Code, Message};

use super::ClientError;

/// How the request names its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Target {
    /// Sent to the origin server itself: Uri-Host (only for a host name, not an IP literal),
    /// Uri-Path and Uri-Query; never Uri-Port, which would equal the destination port
    /// (RFC 7252 §6.4 step 7).
    #[default]
    Direct,
    /// Sent to a forward proxy with the whole URI in Proxy-Uri (RFC 7252 §5.10.2).
    ProxyUri,
    /// Sent to a forward proxy with Proxy-Scheme, Uri-Host (always), Uri-Port (always),
    /// Uri-Path and Uri-Query (RFC 7252 §5.10.2; the way aiocoap does it).
    ProxyScheme,
}

/// The address of the URI's host: an IP literal as it is, a name through DNS (the first
/// address the resolver gives). The port is the URI's, or the scheme's default (5683 for
/// coap, RFC 7252 §6.1).
pub async fn resolve(uri: &CoapUri) -> Result<SocketAddr, ClientError> {
    let port = uri.port_or_default();
    if let Some(ip) = uri.ip() {
        return Ok(SocketAddr::new(ip, port));
    }
    let host = uri.host.as_str();
    let mut addrs = tokio::net::lookup_host((host, port))
        .await
        .map_err(|e| ClientError::Resolve { host: host.to_string(), reason: e.to_string() })?;
    addrs.next().ok_or_else(|| ClientError::Resolve { host: host.to_string(), reason: "no address found".into() })
}

/// A request (CON) with method `method` for `uri`, addressed as `target` says.
pub fn build_request(method: Code, uri: &CoapUri, target: Target) -> Message {
    let mut m = Message::request(method);
    match target {
        // RFC 7252 §6.4 steps 5-9.
        Target::Direct => uri.write_options(&mut m.options),
        // RFC 7252 §5.10.2: Proxy-Uri carries the absolute URI; no Uri-* options with it.
        Target::ProxyUri => m.options.set(num::PROXY_URI, uri.compose().as_bytes()),
        Target::ProxyScheme => uri.write_proxy_scheme_options(&mut m.options),
    }
    m
}
