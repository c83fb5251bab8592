//! The server's request processing, without I/O: routing, option checks, content negotiation,
//! block-wise transfers and the list of observers.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopcore_codec::block::BlockError;
use hopcore_codec::{content_format, num, BlockValue, Code, Message, MsgType, Registry, Token};
use tracing::{debug, error, trace, warn};

use super::block::{
    apply_block2, block_option, etag_for, preferred_szx, Block1Assembler, Block1Outcome, Limits, ResponseCache,
    TransferKey,
};
use super::link_format::{self, WELL_KNOWN_CORE};
use super::observe::{Notifier, Observer, Observers, Shared};
use super::resource::{content, diagnostic, uint_option, Attributes, Request, Resource};

/// A task started with the server; it gets a [`Notifier`] for the server's resources.
pub(crate) type StartTask = Box<dyn FnOnce(Notifier) -> Pin<Box<dyn Future<Output = ()> + Send>> + Send>;

/// Server settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Preferred block size for Block2 responses and Block1 control (16..=1024; RFC 7959 §2.2).
    pub block_size: usize,
    /// Largest request body accepted, block-wise or not; larger ones get 4.13 with Size1
    /// (RFC 7959 §2.9.3).
    pub max_body_size: usize,
    /// Block-wise request bodies being reassembled at once (RFC 7959 §2.5).
    pub max_pending_bodies: usize,
    /// Responses to unsafe requests kept for their Block2 transfer (RFC 7959 §2.7).
    pub max_cached_responses: usize,
    /// How long block-wise state lives after its last block (RFC 7959 §2.4, §2.5:
    /// EXCHANGE_LIFETIME).
    pub block_state_lifetime: Duration,
    /// Observers across all resources; registrations beyond it fall back to a plain GET
    /// (RFC 7641 §4.1).
    pub max_observers: usize,
    /// Every n-th notification to an observer is confirmable, the others non-confirmable
    /// (RFC 7641 §4.5). 1: all confirmable.
    pub observe_con_every: u32,
    /// At least one confirmable notification per observer this often (RFC 7641 §4.5: 24 h).
    pub observe_con_interval: Duration,
    /// Options this server recognizes (RFC 7252 §5.4.1).
    pub registry: Registry,
    /// Critical options the registry knows but this server does not process: a request with
    /// one gets 4.02. By default OSCORE and EDHOC, which a security layer must consume before
    /// the request reaches the server.
    pub unsupported_critical: Vec<u16>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            block_size: 1024,
            max_body_size: 64 * 1024,
            max_pending_bodies: 64,
            max_cached_responses: 64,
            block_state_lifetime: hopcore_messaging::Config::default().exchange_lifetime(),
            max_observers: 1024,
            observe_con_every: 10,
            observe_con_interval: Duration::from_secs(24 * 3600),
            registry: Registry::standard().clone(),
            unsupported_critical: vec![num::OSCORE, num::EDHOC],
        }
    }
}

/// A notification the server wants sent (RFC 7641 §4.2): to `peer`, with the observation's
/// token, type (CON or NON) set. An OSCORE layer protects it with the context of the
/// registration, found by (peer, token).
#[derive(Debug, Clone)]
pub struct Notification {
    pub peer: SocketAddr,
    pub token: Token,
    pub identity: Option<String>,
    pub message: Message,
}

#[derive(Clone)]
enum Target {
    Resource(Arc<dyn Resource>),
    WellKnown,
}

impl Target {
    fn allows(&self, method: Code) -> bool {
        match self {
            Target::Resource(r) => r.allows(method),
            Target::WellKnown => method == Code::GET,
        }
    }
}

struct Entry {
    resource: Arc<dyn Resource>,
    attributes: Arc<Attributes>,
}

/// A CoAP server: resources by path, and the protocol machinery around them.
///
/// Drive it with [`Server::run`] (or [`Server::spawn`], [`Server::start`]) on an
/// [`crate::Endpoint`], or, to wrap it in another layer (OSCORE), call
/// [`Server::handle_request`] and [`Server::poll_notifications`] yourself.
pub struct Server {
    config: ServerConfig,
    resources: BTreeMap<String, Entry>,
    well_known: Arc<Attributes>,
    shared: Arc<Shared>,
    start_tasks: Vec<StartTask>,
    block1: Block1Assembler,
    responses: ResponseCache,
    observers: Observers,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("resources", &self.resources.keys().collect::<Vec<_>>())
            .field("observers", &self.observers.len())
            .field("pending_bodies", &self.block1.len())
            .field("cached_responses", &self.responses.len())
            .finish()
    }
}

impl Default for Server {
    fn default() -> Self {
        Server::new()
    }
}

/// The key a resource is registered under: "/" and the non-empty segments of `path`.
pub(crate) fn normalize(path: &str) -> String {
    let segs: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    format!("/{}", segs.join("/"))
}

/// The routing key of a request: its Uri-Path options (RFC 7252 §6.4), or `None` if a segment
/// is not UTF-8 or contains '/' (no resource can have such a name).
fn route_key(m: &Message) -> Option<String> {
    let mut s = String::new();
    for seg in m.options.get_all(num::URI_PATH) {
        let seg = std::str::from_utf8(seg).ok()?;
        if seg.contains('/') {
            return None;
        }
        s.push('/');
        s.push_str(seg);
    }
    if s.is_empty() {
        s.push('/');
    }
    Some(s)
}

fn bad_block(e: BlockError) -> Message {
    match e {
        // RFC 7959 §2.2: SZX 7 "MUST lead to a 4.00 Bad Request response code".
        BlockError::ReservedSzx => diagnostic(Code::BAD_REQUEST, "SZX 7 is reserved"),
        // Length is checked against the registry first; a value that still cannot be read is a
        // critical option that cannot be processed (RFC 7252 §5.4.1).
        e => diagnostic(Code::BAD_OPTION, e.to_string()),
    }
}

/// RFC 7252 §5.10.4: if the preferred Content-Format cannot be returned, 4.06.
fn check_accept(resp: Message, accept: Option<u32>) -> Message {
    if let Some(a) = accept {
        let cf = uint_option(&resp.options, num::CONTENT_FORMAT);
        if resp.code.is_success() && !resp.payload.is_empty() && cf.is_some_and(|cf| cf != a) {
            return diagnostic(Code::NOT_ACCEPTABLE, format!("cannot return Content-Format {a}"));
        }
    }
    resp
}

fn too_large(max: usize) -> Message {
    // RFC 7252 §5.9.2.9: 4.13 SHOULD carry Size1 with the largest acceptable size.
    let mut m = diagnostic(Code::REQUEST_ENTITY_TOO_LARGE, "request body too large");
    m.options.set_uint(num::SIZE1, max.min(u32::MAX as usize) as u32);
    m
}

impl Server {
    /// An empty server with the default configuration; /.well-known/core is built in.
    pub fn new() -> Server {
        Server::with_config(ServerConfig::default())
    }

    pub fn with_config(config: ServerConfig) -> Server {
        let shared = Arc::new(Shared::default());
        let limits = Limits {
            max_body: config.max_body_size,
            max_transfers: config.max_pending_bodies,
            lifetime: config.block_state_lifetime,
            preferred_szx: preferred_szx(config.block_size),
        };
        Server {
            block1: Block1Assembler::new(limits),
            responses: ResponseCache::new(config.max_cached_responses, config.block_state_lifetime),
            observers: Observers::new(config.max_observers, shared.clone()),
            well_known: Arc::new(Attributes::new().content_format(content_format::LINK_FORMAT).hidden()),
            resources: BTreeMap::new(),
            start_tasks: Vec::new(),
            shared,
            config,
        }
    }

    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    pub fn config(&self) -> &ServerConfig {
        &self.config
    }

    /// Adds (or replaces) the resource at `path` ("/a/b"; empty segments are dropped). Its
    /// attributes are read now. A resource at "/.well-known/core" replaces the built-in one.
    pub fn add_resource(&mut self, path: &str, resource: impl Resource) -> &mut Self {
        self.add_shared(path, Arc::new(resource))
    }

    /// Like [`Server::add_resource`], for a resource the application also keeps a handle to.
    pub fn add_shared(&mut self, path: &str, resource: Arc<dyn Resource>) -> &mut Self {
        let attributes = Arc::new(resource.attributes());
        self.resources.insert(normalize(path), Entry { resource, attributes });
        self
    }

    /// The paths of the registered resources, sorted.
    pub fn paths(&self) -> impl Iterator<Item = &str> {
        self.resources.keys().map(String::as_str)
    }

    /// Runs `task` when the server starts running (e.g. a ticker that notifies observers of
    /// an observable resource); it is stopped when the server stops.
    pub fn on_start<F, Fut>(&mut self, task: F) -> &mut Self
    where
        F: FnOnce(Notifier) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start_tasks.push(Box::new(move |n| Box::pin(task(n))));
        self
    }

    pub(crate) fn take_start_tasks(&mut self) -> Vec<StartTask> {
        std::mem::take(&mut self.start_tasks)
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    /// A handle to signal that resources changed.
    pub fn notifier(&self) -> Notifier {
        Notifier { shared: self.shared.clone() }
    }

    pub fn observer_count(&self) -> usize {
        self.observers.len()
    }

    /// Removes the observation of `peer` with `token`, e.g. because the peer rejected a
    /// notification with RST (RFC 7641 §3.6) or never acknowledged a confirmable one (§4.5).
    pub fn remove_observer(&mut self, peer: SocketAddr, token: Token) -> bool {
        let removed = self.observers.remove(peer, token).is_some();
        if removed {
            debug!(%peer, %token, "observer removed");
        }
        removed
    }

    /// Expires old block-wise state. Call now and then (the run loop does).
    pub fn handle_timeout(&mut self, now: Instant) {
        self.block1.sweep(now);
        self.responses.sweep(now);
    }

    fn preferred_szx(&self) -> u8 {
        preferred_szx(self.config.block_size)
    }

    fn lookup(&self, path: &str) -> Option<(Target, Arc<Attributes>)> {
        match self.resources.get(path) {
            Some(e) => Some((Target::Resource(e.resource.clone()), e.attributes.clone())),
            None if path == WELL_KNOWN_CORE => Some((Target::WellKnown, self.well_known.clone())),
            None => None,
        }
    }

    /// The first critical option this server cannot process (RFC 7252 §5.4.1, §5.4.3, §5.4.5).
    fn bad_critical_option(&self, m: &Message) -> Option<u16> {
        self.config
            .registry
            .first_bad_critical(m.options.iter().map(|o| (o.number, o.value)))
            .or_else(|| m.options.iter().map(|o| o.number).find(|n| self.config.unsupported_critical.contains(n)))
    }

    /// Runs a handler; a panic or a non-response code becomes 5.00.
    fn invoke(&self, target: &Target, req: &Request) -> Message {
        match target {
            Target::WellKnown => {
                let queries: Vec<&str> = req.queries().collect();
                let links = link_format::render(
                    self.resources.iter().map(|(p, e)| (p.as_str(), e.attributes.as_ref())),
                    &queries,
                );
                content(Code::CONTENT, content_format::LINK_FORMAT, links.into_bytes())
            }
            Target::Resource(r) => match catch_unwind(AssertUnwindSafe(|| r.handle(req))) {
                Ok(m) if m.code.is_response() => m,
                Ok(m) => {
                    error!(path = %req.path(), code = %m.code, "handler returned a non-response code");
                    diagnostic(Code::INTERNAL_SERVER_ERROR, "handler failed")
                }
                Err(_) => {
                    error!(path = %req.path(), "handler panicked");
                    diagnostic(Code::INTERNAL_SERVER_ERROR, "handler failed")
                }
            },
        }
    }

    /// RFC 7252 §5.10.8: If-Match / If-None-Match, evaluated against what a GET would return
    /// now. Returns true if the request must get 4.12.
    fn preconditions_fail(&self, target: &Target, peer: SocketAddr, m: &Message, identity: &Option<String>) -> bool {
        let if_match: Vec<&[u8]> = m.options.get_all(num::IF_MATCH).collect();
        let if_none_match = m.options.contains(num::IF_NONE_MATCH);
        if if_match.is_empty() && !if_none_match {
            return false;
        }
        let (exists, etag) = if target.allows(Code::GET) {
            let mut get = Message::request(Code::GET);
            get.token = m.token;
            get.options = m.options.clone();
            for n in [num::IF_MATCH, num::IF_NONE_MATCH, num::CONTENT_FORMAT, num::OBSERVE].into_iter().chain([
                num::BLOCK1,
                num::BLOCK2,
                num::SIZE1,
                num::SIZE2,
            ]) {
                get.options.remove(n);
            }
            let req = Request { message: get, peer, identity: identity.clone() };
            let cur = self.invoke(target, &req);
            if cur.code.is_success() {
                let tag = cur.options.get(num::ETAG).map_or_else(|| etag_for(&cur.payload).to_vec(), <[u8]>::to_vec);
                (true, Some(tag))
            } else {
                (false, None)
            }
        } else {
            // The resource exists but has no representation to compare with.
            (true, None)
        };
        // RFC 7252 §5.10.8.1: an empty If-Match matches any existing representation; several
        // If-Match options match if any of them does.
        let match_fails =
            !if_match.is_empty() && !if_match.iter().any(|v| (v.is_empty() && exists) || etag.as_deref() == Some(*v));
        // RFC 7252 §5.10.8.2: If-None-Match fails if the target resource exists.
        match_fails || (if_none_match && exists)
    }

    /// Processes one request and returns the response to send (code, options, payload; the
    /// message layer sets type, Message ID and token), or `None` when the request must be
    /// rejected without a response (RFC 7252 §5.4.1 for NON).
    ///
    /// `message` is the request as received: its type (CON/NON) decides between 4.02 and
    /// silent rejection, its token keys an observation. `identity` is the authenticated peer
    /// identity (from a security layer), handed to the handler in [`Request::identity`] and
    /// kept with an observation for its notifications.
    pub fn handle_request(
        &mut self,
        now: Instant,
        peer: SocketAddr,
        mut message: Message,
        identity: Option<String>,
    ) -> Option<Message> {
        if !message.code.is_request() {
            return None;
        }
        let method = message.code;
        trace!(%peer, code = %method, path = %message.path(), "request");

        // RFC 7252 §5.4.1: an unrecognized critical option in a CON request gets 4.02 with a
        // diagnostic payload; in a NON request, the message is rejected (§4.3).
        if let Some(n) = self.bad_critical_option(&message) {
            let name = self.config.registry.name(n);
            if message.mtype == MsgType::Non {
                debug!(%peer, option = n, "NON request with an unrecognized critical option rejected");
                return None;
            }
            debug!(%peer, option = n, "4.02 for an unrecognized critical option");
            return Some(diagnostic(Code::BAD_OPTION, format!("unrecognized critical option {n} ({name})")));
        }
        // RFC 7252 §5.7.2: an endpoint unwilling to act as a proxy answers 5.05.
        if message.options.contains(num::PROXY_URI) || message.options.contains(num::PROXY_SCHEME) {
            return Some(diagnostic(Code::PROXYING_NOT_SUPPORTED, "not a proxy"));
        }
        let block1 = match block_option(&message, num::BLOCK1) {
            Ok(b) => b,
            Err(e) => return Some(bad_block(e)),
        };
        let block2 = match block_option(&message, num::BLOCK2) {
            Ok(b) => b,
            Err(e) => return Some(bad_block(e)),
        };
        let Some(path) = route_key(&message) else {
            return Some(diagnostic(Code::NOT_FOUND, "no such resource"));
        };
        let Some((target, attrs)) = self.lookup(&path) else {
            return Some(diagnostic(Code::NOT_FOUND, format!("no resource at {path}")));
        };
        // RFC 7252 §5.8: an unsupported method gets 4.05.
        if !target.allows(method) {
            return Some(Message::response(Code::METHOD_NOT_ALLOWED));
        }
        // RFC 7252 §5.9.2.10 / §5.10.3: a payload format the resource does not take.
        let cf = uint_option(&message.options, num::CONTENT_FORMAT);
        if let Some(cf) = cf {
            if !attrs.request_formats.is_empty() && !attrs.request_formats.iter().any(|f| u32::from(*f) == cf) {
                return Some(diagnostic(Code::UNSUPPORTED_CONTENT_FORMAT, format!("Content-Format {cf} not accepted")));
            }
        }
        // RFC 7252 §5.10.4: Accept for a format the resource never returns.
        let accept = uint_option(&message.options, num::ACCEPT);
        if let Some(a) = accept {
            if !attrs.content_formats.is_empty() && !attrs.content_formats.iter().any(|f| u32::from(*f) == a) {
                return Some(diagnostic(Code::NOT_ACCEPTABLE, format!("cannot return Content-Format {a}")));
            }
        }
        // RFC 7252 §5.10.8: a failed precondition means the method is not performed.
        if self.preconditions_fail(&target, peer, &message, &identity) {
            return Some(Message::response(Code::PRECONDITION_FAILED));
        }

        // RFC 7959 §2.5: Block1 reassembly; non-final blocks are answered 2.31 Continue.
        let mut block1_echo = None;
        if let Some(b1) = block1 {
            let key = TransferKey::new(peer, &message);
            let size1 = uint_option(&message.options, num::SIZE1);
            match self.block1.offer(now, key, b1, &message.payload, cf, size1) {
                Block1Outcome::Continue(b) => {
                    let mut m = Message::response(Code::CONTINUE);
                    // RFC 7959 §2.3: Block1 in control usage; M set: acting atomically.
                    m.options.set_uint(num::BLOCK1, b.to_uint());
                    return Some(m);
                }
                Block1Outcome::Error(m) => return Some(m),
                Block1Outcome::Complete { body, block } => {
                    message.payload = body;
                    block1_echo = Some(block);
                }
            }
        } else if message.payload.len() > self.config.max_body_size {
            return Some(too_large(self.config.max_body_size));
        }

        let szx = self.preferred_szx();
        // RFC 7959 §4: Size2 (value 0) in a request asks for the size.
        let size2_requested = message.options.contains(num::SIZE2);
        let cache_key = (!method.is_safe_method()).then(|| TransferKey::new(peer, &message));
        // RFC 7959 §2.7: the later blocks of a response to an unsafe request (POST after a
        // Block1 transfer) come from the stored response, not from running the method again.
        if let (Some(b2), Some(key), None) = (block2, &cache_key, block1) {
            if b2.num > 0 {
                return Some(match self.responses.get(now, key) {
                    Some(mut full) => match apply_block2(&mut full, Some(b2), size2_requested, szx) {
                        Ok(()) => full,
                        Err(e) => e,
                    },
                    None => {
                        diagnostic(Code::REQUEST_ENTITY_INCOMPLETE, "response no longer available; repeat the request")
                    }
                });
            }
        }

        // RFC 7641 §2/§4.1: Observe in GET (and FETCH, RFC 8132 §2.4); elective, so a value of
        // bad length is ignored (RFC 7252 §5.4.3).
        let token = message.token;
        let observe =
            if matches!(method, Code::GET | Code::FETCH) { uint_option(&message.options, num::OBSERVE) } else { None };
        // RFC 7959 §2.6: an observation applies to the whole resource; requests for later
        // blocks neither register nor end it.
        let first_block = block2.is_none_or(|b| b.num == 0);
        if first_block && observe != Some(0) && self.observers.get(peer, token).is_some() {
            // RFC 7641 §4.1: Observe 1 removes the matching entry, then the request is
            // processed as usual. A request without Observe that reuses the token also ends the
            // observation: its response, without Observe, ends it at the client (§3.2-§3.6).
            self.remove_observer(peer, token);
        }
        let register = observe == Some(0) && attrs.observable && first_block;

        for n in [num::BLOCK1, num::BLOCK2, num::SIZE1, num::SIZE2] {
            message.options.remove(n);
        }
        let req = Request { message, peer, identity };
        let mut resp = check_accept(self.invoke(&target, &req), accept);
        // Only the server adds Observe, and only to notifications (RFC 7641 §4.1, §4.2).
        resp.options.remove(num::OBSERVE);
        if register {
            if resp.code.is_success() {
                let Request { message, identity, .. } = req;
                let observer = Observer {
                    path,
                    request: message,
                    identity,
                    szx: block2.map(|b| b.szx),
                    since_con: 0,
                    last_con: now,
                };
                if self.observers.register(peer, token, observer) {
                    debug!(%peer, %token, "observer registered");
                    resp.options.set_uint(num::OBSERVE, self.observers.next_seq());
                } else {
                    // RFC 7641 §4.1: unable to add an entry: a plain response, no Observe.
                    warn!(%peer, "observer list full; answering as a plain GET");
                }
            } else {
                // RFC 7641 §4.2: a non-2.xx response ends any observation with this token.
                self.remove_observer(peer, token);
            }
        }
        if let Some(key) = cache_key {
            if resp.code.is_success() && resp.payload.len() > (1usize << (szx + 4)) {
                self.responses.insert(now, key, resp.clone());
            } else {
                self.responses.remove(&key);
            }
        }
        if let Err(e) = apply_block2(&mut resp, block2, size2_requested, szx) {
            resp = e;
        }
        if let Some(b) = block1_echo {
            // RFC 7959 §2.3: the response to the final block carries Block1 (control usage).
            resp.options.set_uint(num::BLOCK1, b.to_uint());
        }
        Some(resp)
    }

    /// Builds the notifications for the resources whose change was signalled through a
    /// [`Notifier`] (RFC 7641 §4.2), re-running the handler once per observer.
    pub fn poll_notifications(&mut self, now: Instant) -> Vec<Notification> {
        let mut out = Vec::new();
        for path in self.shared.take_dirty() {
            let Some((target, attrs)) = self.lookup(&path) else { continue };
            if !attrs.observable {
                continue;
            }
            for (peer, token) in self.observers.of_path(&path) {
                if let Some(n) = self.notification(now, &target, peer, token) {
                    out.push(n);
                }
            }
        }
        out
    }

    fn notification(&mut self, now: Instant, target: &Target, peer: SocketAddr, token: Token) -> Option<Notification> {
        let o = self.observers.get(peer, token)?.clone();
        let accept = uint_option(&o.request.options, num::ACCEPT);
        let req = Request { message: o.request, peer, identity: o.identity };
        let mut resp = check_accept(self.invoke(target, &req), accept);
        resp.options.remove(num::OBSERVE);
        if resp.code.is_success() {
            // RFC 7959 §2.6: a large notification carries only its first block, in the block
            // size the client asked for when registering.
            let first = o.szx.map(|szx| BlockValue { num: 0, more: false, szx });
            if let Err(e) = apply_block2(&mut resp, first, false, self.preferred_szx()) {
                resp = e;
            }
        }
        if resp.code.is_success() {
            // RFC 7641 §4.4: a fresh, strictly increasing Observe value.
            resp.options.set_uint(num::OBSERVE, self.observers.next_seq());
            resp.mtype = self.observers.message_type(
                peer,
                token,
                now,
                self.config.observe_con_every,
                self.config.observe_con_interval,
            );
        } else {
            // RFC 7641 §4.2: a non-2.xx notification (without Observe) ends the observation.
            self.remove_observer(peer, token);
            resp.mtype = MsgType::Con;
        }
        resp.token = token;
        trace!(%peer, %token, code = %resp.code, mtype = %resp.mtype, "notification");
        Some(Notification { peer, token, identity: req.identity, message: resp })
    }
}

/// Builds a [`Server`].
#[derive(Default)]
pub struct ServerBuilder {
    config: ServerConfig,
    resources: Vec<(String, Arc<dyn Resource>)>,
    start_tasks: Vec<StartTask>,
}

impl std::fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("resources", &self.resources.iter().map(|(p, _)| p).collect::<Vec<_>>())
            .finish()
    }
}

impl ServerBuilder {
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }
    pub fn block_size(mut self, size: usize) -> Self {
        self.config.block_size = size;
        self
    }
    pub fn max_body_size(mut self, size: usize) -> Self {
        self.config.max_body_size = size;
        self
    }
    pub fn resource(mut self, path: &str, resource: impl Resource) -> Self {
        self.resources.push((path.to_string(), Arc::new(resource)));
        self
    }
    pub fn on_start<F, Fut>(mut self, task: F) -> Self
    where
        F: FnOnce(Notifier) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start_tasks.push(Box::new(move |n| Box::pin(task(n))));
        self
    }
    pub fn build(self) -> Server {
        let mut s = Server::with_config(self.config);
        for (p, r) in self.resources {
            s.add_shared(&p, r);
        }
        s.start_tasks = self.start_tasks;
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::resource::{resource_fn, text};

    fn peer() -> SocketAddr {
        "192.0.2.1:5683".parse().unwrap()
    }

    fn get(path: &str) -> Message {
        let mut m = Message::request(Code::GET);
        m.set_path(path);
        m
    }

    fn server() -> Server {
        let mut s = Server::new();
        s.add_resource("/who", resource_fn(|req| text(req.identity.clone().unwrap_or_else(|| "anonymous".into()))));
        s.add_resource("/panic", resource_fn(|req| if req.payload().is_empty() { panic!("bug") } else { text("ok") }));
        s.add_resource("/weird", resource_fn(|_| Message::request(Code::GET)));
        s
    }

    #[test]
    fn identity_reaches_the_handler_and_the_observation() {
        let mut s = server();
        let now = Instant::now();
        let r = s.handle_request(now, peer(), get("/who"), Some("kid 01".into())).unwrap();
        assert_eq!(r.payload, b"kid 01");
        let r = s.handle_request(now, peer(), get("/who"), None).unwrap();
        assert_eq!(r.payload, b"anonymous");
        // An observation keeps the identity for its notifications.
        s.add_resource(
            "/obs",
            resource_fn(|req| text(req.identity.clone().unwrap_or_default()))
                .with_attributes(Attributes::new().observable()),
        );
        let mut m = get("/obs").with_option(num::OBSERVE, b"");
        m.token = Token::from_slice(&[7]).unwrap();
        let r = s.handle_request(now, peer(), m, Some("alice".into())).unwrap();
        assert!(r.options.contains(num::OBSERVE));
        s.notifier().notify("obs");
        let n = s.poll_notifications(now);
        assert_eq!(n.len(), 1);
        assert_eq!(n[0].identity.as_deref(), Some("alice"));
        assert_eq!(n[0].message.payload, b"alice");
        assert_eq!(n[0].message.token, Token::from_slice(&[7]).unwrap());
        assert!(s.poll_notifications(now).is_empty(), "changes are consumed");
        assert!(s.remove_observer(peer(), Token::from_slice(&[7]).unwrap()));
    }

    #[test]
    fn handler_failures_become_5_00() {
        let mut s = server();
        let now = Instant::now();
        // (The panic message below is expected.)
        let r = s.handle_request(now, peer(), get("/panic"), None).unwrap();
        assert_eq!(r.code, Code::INTERNAL_SERVER_ERROR);
        let r = s.handle_request(now, peer(), get("/panic").with_payload("x"), None).unwrap();
        assert_eq!(r.code, Code::CONTENT, "the server keeps working");
        let r = s.handle_request(now, peer(), get("/weird"), None).unwrap();
        assert_eq!(r.code, Code::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn non_with_bad_critical_option_is_rejected_silently() {
        let mut s = server();
        let mut m = get("/who").with_option(65001, b"");
        m.mtype = MsgType::Non;
        // RFC 7252 §5.4.1: rejected (§4.3), no 4.02.
        assert!(s.handle_request(Instant::now(), peer(), m, None).is_none());
        // Responses are not requests.
        assert!(s.handle_request(Instant::now(), peer(), Message::response(Code::CONTENT), None).is_none());
    }

    #[test]
    fn routing_keys() {
        assert_eq!(normalize("hello"), "/hello");
        assert_eq!(normalize("/a//b/"), "/a/b");
        assert_eq!(normalize(""), "/");
        let mut m = Message::request(Code::GET);
        assert_eq!(route_key(&m).as_deref(), Some("/"));
        m.options.push(num::URI_PATH, b"a/b");
        assert_eq!(route_key(&m), None, "a segment with '/' names no resource");
        let mut m = Message::request(Code::GET);
        m.options.push(num::URI_PATH, &[0xff]);
        assert_eq!(route_key(&m), None);
    }

    #[test]
    fn garbage_never_panics() {
        // Random requests with arbitrary options and payloads: the server must answer or reject
        // each without panicking.
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut s = crate::server::demo::demo_server();
        let numbers = [1u16, 3, 4, 5, 6, 7, 11, 12, 14, 15, 17, 23, 27, 28, 60, 258, 292, 65000];
        let now = Instant::now();
        for i in 0..20_000 {
            let mut m = Message::request(Code::new(0, rng.gen_range(1..8)));
            m.token = Token::from_slice(&[rng.gen(), rng.gen()]).unwrap();
            let path = ["hello", "echo", "time", "large", ".well-known", "core"];
            for _ in 0..rng.gen_range(0..3) {
                m.options.push(num::URI_PATH, path[rng.gen_range(0..path.len())].as_bytes());
            }
            for _ in 0..rng.gen_range(0..4) {
                let n = numbers[rng.gen_range(0..numbers.len())];
                let len = rng.gen_range(0..5);
                let v: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                m.options.push(n, &v);
            }
            let len = rng.gen_range(0..70);
            m.payload = (0..len).map(|_| rng.gen()).collect();
            let r = s.handle_request(now + Duration::from_millis(i), peer(), m, None);
            if let Some(r) = r {
                assert!(r.code.is_response());
            }
            if i % 100 == 0 {
                s.notifier().notify("/time");
                for n in s.poll_notifications(now) {
                    assert!(n.message.code.is_response());
                }
            }
        }
    }
}
