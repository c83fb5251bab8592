//! Resources, their attributes, and the request context handed to their handlers.

use std::net::SocketAddr;

use hopcore_codec::{content_format, num, Code, Message, Options, Registry};

/// The request context a handler sees.
///
/// `identity` is the slot for "who is authenticated": plain CoAP leaves it `None`; a security
/// layer (OSCORE) that wraps the server fills it in before calling
/// [`crate::server::Server::handle_request`].
#[derive(Debug, Clone)]
pub struct Request {
    /// The request. After Block1 reassembly (RFC 7959 §2.5) this is the whole body, and the
    /// Block1/Block2/Size1/Size2 options are removed: the server does block-wise for handlers.
    pub message: Message,
    /// Where the request came from.
    pub peer: SocketAddr,
    /// The authenticated peer identity, if a security layer established one.
    pub identity: Option<String>,
}

impl Request {
    pub fn new(peer: SocketAddr, message: Message) -> Request {
        Request { message, peer, identity: None }
    }
    pub fn with_identity(mut self, identity: impl Into<String>) -> Request {
        self.identity = Some(identity.into());
        self
    }
    pub fn method(&self) -> Code {
        self.message.code
    }
    /// The Uri-Path joined with '/', with a leading '/'.
    pub fn path(&self) -> String {
        self.message.path()
    }
    pub fn payload(&self) -> &[u8] {
        &self.message.payload
    }
    /// The Content-Format of the payload, if given with a valid length (RFC 7252 §5.10.3).
    pub fn content_format(&self) -> Option<u16> {
        uint_option(&self.message.options, num::CONTENT_FORMAT).and_then(|v| u16::try_from(v).ok())
    }
    /// The Accept option, if given (RFC 7252 §5.10.4).
    pub fn accept(&self) -> Option<u16> {
        uint_option(&self.message.options, num::ACCEPT).and_then(|v| u16::try_from(v).ok())
    }
    /// The Uri-Query arguments that are valid UTF-8.
    pub fn queries(&self) -> impl Iterator<Item = &str> {
        self.message.options.get_all(num::URI_QUERY).filter_map(|v| std::str::from_utf8(v).ok())
    }
    /// The value of the first `name=value` query argument (or "" for a bare `name`).
    pub fn query(&self, name: &str) -> Option<&str> {
        self.queries().find_map(|q| match q.split_once('=') {
            Some((k, v)) if k == name => Some(v),
            None if q == name => Some(""),
            _ => None,
        })
    }
}

/// The first occurrence of a uint option whose length is within the registry's bounds.
/// RFC 7252 §5.4.3: a value of bad length is treated like an unrecognized option, which for an
/// elective option means it is ignored; RFC 7252 §5.4.5: supernumerary occurrences likewise.
pub(crate) fn uint_option(options: &Options, number: u16) -> Option<u32> {
    let v = options.get(number)?;
    if !Registry::standard().value_ok(number, v) {
        return None;
    }
    hopcore_codec::uint::decode(v)
}

/// Link attributes of a resource (RFC 6690 §3, §5; `obs` from RFC 7641 §6) and the request
/// formats it takes. Read once, when the resource is added to a server.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Attributes {
    /// `rt`: resource types (RFC 6690 §3.1).
    pub resource_types: Vec<String>,
    /// `if`: interface descriptions (RFC 6690 §3.2).
    pub interfaces: Vec<String>,
    /// `ct`: the Content-Formats the resource returns (RFC 7252 §7.2.1). When not empty, a
    /// request whose Accept is not among them gets 4.06 (RFC 7252 §5.10.4).
    pub content_formats: Vec<u16>,
    /// `sz`: maximum size estimate (RFC 6690 §3.3).
    pub max_size: Option<u64>,
    /// `title` (RFC 6690 §2, a link-param).
    pub title: Option<String>,
    /// `obs`: the resource is observable (RFC 7641 §6).
    pub observable: bool,
    /// The Content-Formats accepted in request payloads; empty means any. A request with
    /// another Content-Format gets 4.15 (RFC 7252 §5.9.2.10).
    pub request_formats: Vec<u16>,
    /// Not listed in /.well-known/core (RFC 7252 §7.2: it is up to the server which resources
    /// are made discoverable).
    pub hidden: bool,
}

impl Attributes {
    pub fn new() -> Attributes {
        Attributes::default()
    }
    pub fn resource_type(mut self, rt: impl Into<String>) -> Self {
        self.resource_types.push(rt.into());
        self
    }
    pub fn interface(mut self, iface: impl Into<String>) -> Self {
        self.interfaces.push(iface.into());
        self
    }
    pub fn content_format(mut self, cf: u16) -> Self {
        self.content_formats.push(cf);
        self
    }
    pub fn max_size(mut self, sz: u64) -> Self {
        self.max_size = Some(sz);
        self
    }
    pub fn title(mut self, title: impl Into<String>) -> Self {
        self.title = Some(title.into());
        self
    }
    pub fn observable(mut self) -> Self {
        self.observable = true;
        self
    }
    pub fn request_format(mut self, cf: u16) -> Self {
        self.request_formats.push(cf);
        self
    }
    pub fn hidden(mut self) -> Self {
        self.hidden = true;
        self
    }
}

/// A CoAP resource.
///
/// Implement [`Resource::handle`] for full control, or the per-method functions (`get`, `post`,
/// ...): methods a resource does not implement answer 4.05 Method Not Allowed (RFC 7252 §5.8).
/// Handlers return the response (code, options, payload); the server sets type, Message ID and
/// token, splits large payloads into blocks (RFC 7959) and adds Observe (RFC 7641).
///
/// Handlers run on the server's task and should be quick; they must not panic on any input (a
/// panic is caught and answered with 5.00, but is still a bug). For observable resources that
/// are served block-wise, handlers should be deterministic for a given state: later blocks are
/// produced by running the handler again.
pub trait Resource: Send + Sync + 'static {
    /// Attributes for /.well-known/core and for Accept/Content-Format checks.
    fn attributes(&self) -> Attributes {
        Attributes::default()
    }
    /// Whether the resource implements `method`. The server answers 4.05 without calling the
    /// handler when this is false (e.g. before collecting a block-wise request body).
    fn allows(&self, method: Code) -> bool {
        let _ = method;
        true
    }
    /// Handles a request. The default dispatches on the method.
    fn handle(&self, req: &Request) -> Message {
        match req.method() {
            Code::GET => self.get(req),
            Code::POST => self.post(req),
            Code::PUT => self.put(req),
            Code::DELETE => self.delete(req),
            Code::FETCH => self.fetch(req),
            Code::PATCH => self.patch(req),
            Code::IPATCH => self.ipatch(req),
            _ => method_not_allowed(),
        }
    }
    fn get(&self, req: &Request) -> Message {
        let _ = req;
        method_not_allowed()
    }
    fn post(&self, req: &Request) -> Message {
        let _ = req;
        method_not_allowed()
    }
    fn put(&self, req: &Request) -> Message {
        let _ = req;
        method_not_allowed()
    }
    fn delete(&self, req: &Request) -> Message {
        let _ = req;
        method_not_allowed()
    }
    fn fetch(&self, req: &Request) -> Message {
        let _ = req;
        method_not_allowed()
    }
    fn patch(&self, req: &Request) -> Message {
        let _ = req;
        method_not_allowed()
    }
    fn ipatch(&self, req: &Request) -> Message {
        let _ = req;
        method_not_allowed()
    }
}

/// A resource made of a closure (handles every method itself) and attributes.
pub struct FnResource<F> {
    handler: F,
    attributes: Attributes,
}

impl<F> std::fmt::Debug for FnResource<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FnResource").field("attributes", &self.attributes).finish()
    }
}

/// A resource whose handler is `f`.
pub fn resource_fn<F>(f: F) -> FnResource<F>
where
    F: Fn(&Request) -> Message + Send + Sync + 'static,
{
    FnResource { handler: f, attributes: Attributes::default() }
}

impl<F> FnResource<F> {
    pub fn with_attributes(mut self, attributes: Attributes) -> Self {
        self.attributes = attributes;
        self
    }
}

impl<F> Resource for FnResource<F>
where
    F: Fn(&Request) -> Message + Send + Sync + 'static,
{
    fn attributes(&self) -> Attributes {
        self.attributes.clone()
    }
    fn handle(&self, req: &Request) -> Message {
        (self.handler)(req)
    }
}

/// 4.05 Method Not Allowed (RFC 7252 §5.8).
pub fn method_not_allowed() -> Message {
    Message::response(Code::METHOD_NOT_ALLOWED)
}

/// A response with a payload in the given Content-Format.
pub fn content(code: Code, cf: u16, payload: impl Into<Vec<u8>>) -> Message {
    let mut m = Message::response(code).with_payload(payload);
    m.options.set_uint(num::CONTENT_FORMAT, cf as u32);
    m
}

/// 2.05 Content with a text/plain;charset=utf-8 payload.
pub fn text(s: impl Into<String>) -> Message {
    content(Code::CONTENT, content_format::TEXT_PLAIN, s.into().into_bytes())
}

/// An error response with a diagnostic payload: UTF-8 text, no Content-Format (RFC 7252 §5.5.2).
pub fn diagnostic(code: Code, text: impl Into<String>) -> Message {
    Message::response(code).with_payload(text.into().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_accessors_ignore_bad_lengths() {
        let mut m = Message::request(Code::GET);
        m.set_path("/a/b");
        m.options.push(num::URI_QUERY, b"rt=x");
        m.options.push(num::URI_QUERY, b"flag");
        m.options.push(num::CONTENT_FORMAT, &[0, 0, 0]); // 3 bytes: bad length, ignored
        m.options.set_uint(num::ACCEPT, 50);
        let r = Request::new("127.0.0.1:1".parse().unwrap(), m);
        assert_eq!(r.path(), "/a/b");
        assert_eq!(r.query("rt"), Some("x"));
        assert_eq!(r.query("flag"), Some(""));
        assert_eq!(r.query("nope"), None);
        assert_eq!(r.content_format(), None);
        assert_eq!(r.accept(), Some(50));
    }

    #[test]
    fn default_methods_are_not_allowed() {
        struct Nothing;
        impl Resource for Nothing {}
        let r = Request::new("127.0.0.1:1".parse().unwrap(), Message::request(Code::PUT));
        assert_eq!(Nothing.handle(&r).code, Code::METHOD_NOT_ALLOWED);
        let r = Request::new("127.0.0.1:1".parse().unwrap(), Message::request(Code::new(0, 30)));
        assert_eq!(Nothing.handle(&r).code, Code::METHOD_NOT_ALLOWED);
    }
}
