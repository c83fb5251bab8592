//! The message-layer state machine of one endpoint.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hopcore_codec::{empty_message, Message, MessageView, MsgType, Token};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use thiserror::Error;
use tracing::{debug, trace};

use crate::config::Config;
use crate::dedup::{Dedup, Handled};

/// A datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub destination: SocketAddr,
    pub bytes: Vec<u8>,
}

/// Identifies a request this endpoint sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub u64);

/// Identifies a non-request message this endpoint sent on its own (a separate response or a
/// notification).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SendId(pub u64);

/// What is needed to answer an incoming request (RFC 7252 §5.2): where it came from, its
/// Message ID and token, and whether it was confirmable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ResponseHandle {
    pub peer: SocketAddr,
    pub message_id: u16,
    pub token: Token,
    pub confirmable: bool,
}

/// A request received from a peer.
#[derive(Debug, Clone)]
pub struct IncomingRequest {
    pub handle: ResponseHandle,
    pub message: Message,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum RequestError {
    #[error("no response: the request timed out")]
    Timeout,
    #[error("the peer rejected the request with a Reset message")]
    Reset,
    #[error("the request was cancelled")]
    Cancelled,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// The peer answered with RST (RFC 7252 §4.2; for notifications RFC 7641 §3.6).
    Reset,
    /// A CON was never acknowledged after MAX_RETRANSMIT retransmissions (RFC 7252 §4.2).
    Timeout,
}

/// What the messenger tells the layer above.
#[derive(Debug, Clone)]
pub enum Event {
    /// A new (not duplicate) request arrived; answer it with [`Messenger::respond`].
    Request(IncomingRequest),
    /// A response to a request sent with [`Messenger::send_request`]. For observations, more
    /// may follow with the same id.
    Response { id: RequestId, peer: SocketAddr, message: Message },
    /// A request ended without a (further) response.
    RequestFailed { id: RequestId, error: RequestError },
    /// A confirmable message sent with [`Messenger::send`] was acknowledged.
    Delivered { id: SendId, peer: SocketAddr, token: Token },
    /// A message sent with [`Messenger::send`] was rejected or never acknowledged.
    Rejected { id: SendId, peer: SocketAddr, token: Token, reason: RejectReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Request(RequestId),
    Send(SendId, Token),
}

/// A message we sent with a fresh Message ID, awaiting ACK (CON) or a possible RST.
#[derive(Debug)]
struct Outgoing {
    origin: Origin,
    /// Retransmission state for CON (RFC 7252 §4.2); `None` for NON.
    retransmit: Option<Retransmit>,
    /// For NON: when to forget it.
    forget_at: Option<Instant>,
}

#[derive(Debug)]
struct Retransmit {
    bytes: Vec<u8>,
    count: u32,
    timeout: Duration,
    next: Instant,
}

#[derive(Debug)]
struct RequestState {
    peer: SocketAddr,
    token: Token,
    /// Kept open after the first response (Observe).
    observe: bool,
    /// Holds a slot of the peer's NSTART.
    active: bool,
    /// The message, while queued behind NSTART.
    queued: Option<Message>,
    mid: Option<u16>,
    /// When the request fails if no response has arrived.
    deadline: Option<Instant>,
}

#[derive(Debug, Default)]
struct PeerState {
    active: usize,
    queue: VecDeque<RequestId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Timer {
    Retransmit(SocketAddr, u16),
    SeparateAck(SocketAddr, u16),
    RequestDeadline(RequestId),
    ForgetNon(SocketAddr, u16),
}

/// The CoAP message layer of one endpoint.
pub struct Messenger {
    config: Config,
    rng: StdRng,
    next_mid: u16,
    next_id: u64,
    /// Messages we sent with our Message IDs, by (peer, MID).
    outgoing: HashMap<(SocketAddr, u16), Outgoing>,
    requests: HashMap<RequestId, RequestState>,
    by_token: HashMap<(SocketAddr, Token), RequestId>,
    peers: HashMap<SocketAddr, PeerState>,
    dedup: Dedup,
    timers: BinaryHeap<Reverse<(Instant, Timer)>>,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    /// Pending separate-ACK deadlines, to check a fired timer against.
    ack_deadlines: HashMap<(SocketAddr, u16), Instant>,
}

impl std::fmt::Debug for Messenger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messenger")
            .field("outgoing", &self.outgoing.len())
            .field("requests", &self.requests.len())
            .field("dedup", &self.dedup.len())
            .finish()
    }
}

impl Messenger {
    pub fn new(config: Config) -> Messenger {
        Messenger::with_rng(config, StdRng::from_entropy())
    }

    /// A messenger with a seeded random generator (tests).
    pub fn with_seed(config: Config, seed: u64) -> Messenger {
        Messenger::with_rng(config, StdRng::seed_from_u64(seed))
    }

    fn with_rng(config: Config, mut rng: StdRng) -> Messenger {
        // RFC 7252 §4.4: the initial Message ID should be randomized.
        let next_mid = rng.gen();
        let dedup = Dedup::new(config.dedup_capacity);
        Messenger {
            config,
            rng,
            next_mid,
            next_id: 1,
            outgoing: HashMap::new(),
            requests: HashMap::new(),
            by_token: HashMap::new(),
            peers: HashMap::new(),
            dedup,
            timers: BinaryHeap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            ack_deadlines: HashMap::new(),
        }
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Number of requests in flight (including observations and queued ones).
    pub fn requests_in_flight(&self) -> usize {
        self.requests.len()
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The earliest instant at which [`Messenger::handle_timeout`] must be called.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.peek().map(|Reverse((t, _))| *t)
    }

    fn alloc_mid(&mut self) -> u16 {
        let mid = self.next_mid;
        self.next_mid = self.next_mid.wrapping_add(1);
        mid
    }

    /// A random token not in use towards `peer` (RFC 7252 §5.3.1, RFC 9175 §4).
    fn alloc_token(&mut self, peer: SocketAddr) -> Token {
        let len = self.config.token_len.clamp(1, 8);
        loop {
            let mut b = [0u8; 8];
            self.rng.fill_bytes(&mut b[..len]);
            let t = Token::from_slice(&b[..len]).unwrap_or_default();
            if !self.by_token.contains_key(&(peer, t)) {
                return t;
            }
        }
    }

    fn transmit(&mut self, destination: SocketAddr, bytes: Vec<u8>) {
        self.transmits.push_back(Transmit { destination, bytes });
    }

    fn send_empty(&mut self, peer: SocketAddr, mtype: MsgType, mid: u16) -> Vec<u8> {
        let mut b = Vec::with_capacity(4);
        empty_message(&mut b, mtype, mid);
        self.transmit(peer, b.clone());
        b
    }

    /// Initial retransmission timeout: random in [ACK_TIMEOUT, ACK_TIMEOUT * ACK_RANDOM_FACTOR]
    /// (RFC 7252 §4.2).
    fn initial_timeout(&mut self) -> Duration {
        let f = self.config.ack_random_factor.max(1.0);
        let x: f64 = if f > 1.0 { self.rng.gen_range(1.0..f) } else { 1.0 };
        self.config.ack_timeout.mul_f64(x)
    }

    /// Sends `bytes` under a fresh Message ID `mid`, reliably if confirmable.
    fn send_tracked(&mut self, now: Instant, peer: SocketAddr, mid: u16, con: bool, bytes: Vec<u8>, origin: Origin) {
        let (retransmit, forget_at) = if con {
            let timeout = self.initial_timeout();
            let next = now + timeout;
            self.timers.push(Reverse((next, Timer::Retransmit(peer, mid))));
            (Some(Retransmit { bytes: bytes.clone(), count: 0, timeout, next }), None)
        } else {
            // Remember a NON for NON_LIFETIME so that a RST can be matched (RFC 7252 §4.3).
            let t = now + self.config.non_lifetime();
            self.timers.push(Reverse((t, Timer::ForgetNon(peer, mid))));
            (None, Some(t))
        };
        self.outgoing.insert((peer, mid), Outgoing { origin, retransmit, forget_at });
        self.transmit(peer, bytes);
    }

    // ---- client role -------------------------------------------------------------------

    /// Sends a request. The message's type (CON or NON) is kept; its Message ID is assigned
    /// here, and a random token unless the message already has one. With `observe`, the token
    /// stays open for notifications until [`Messenger::cancel_request`].
    pub fn send_request(&mut self, now: Instant, peer: SocketAddr, mut message: Message, observe: bool) -> RequestId {
        let id = RequestId(self.next_id);
        self.next_id += 1;
        if message.token.is_empty() || self.by_token.contains_key(&(peer, message.token)) {
            message.token = self.alloc_token(peer);
        }
        if !matches!(message.mtype, MsgType::Con | MsgType::Non) {
            message.mtype = MsgType::Con;
        }
        self.by_token.insert((peer, message.token), id);
        self.requests.insert(
            id,
            RequestState {
                peer,
                token: message.token,
                observe,
                active: false,
                queued: Some(message),
                mid: None,
                deadline: None,
            },
        );
        let ps = self.peers.entry(peer).or_default();
        ps.queue.push_back(id);
        self.start_queued(now, peer);
        id
    }

    /// Starts queued requests towards `peer` while fewer than NSTART are outstanding
    /// (RFC 7252 §4.7).
    fn start_queued(&mut self, now: Instant, peer: SocketAddr) {
        loop {
            let Some(ps) = self.peers.get_mut(&peer) else { return };
            if ps.active >= self.config.nstart.max(1) {
                return;
            }
            let Some(id) = ps.queue.pop_front() else {
                if ps.active == 0 {
                    self.peers.remove(&peer);
                }
                return;
            };
            ps.active += 1;
            let mid = self.alloc_mid();
            let Some(st) = self.requests.get_mut(&id) else {
                // Cancelled while queued.
                if let Some(ps) = self.peers.get_mut(&peer) {
                    ps.active -= 1;
                }
                continue;
            };
            let Some(mut message) = st.queued.take() else { continue };
            st.active = true;
            st.mid = Some(mid);
            message.message_id = mid;
            let con = message.mtype == MsgType::Con;
            if !con {
                let d = now + self.config.response_timeout;
                st.deadline = Some(d);
                self.timers.push(Reverse((d, Timer::RequestDeadline(id))));
            }
            match message.to_bytes() {
                Ok(bytes) => {
                    trace!(%peer, mid, token = %message.token, code = %message.code, "send request");
                    self.send_tracked(now, peer, mid, con, bytes, Origin::Request(id));
                }
                Err(e) => {
                    debug!(%peer, error = %e, "request cannot be encoded");
                    self.finish_request(now, id, Some(RequestError::Cancelled));
                }
            }
        }
    }

    /// Releases the NSTART slot of a request and starts the next queued one.
    fn release_slot(&mut self, now: Instant, id: RequestId) {
        let Some(st) = self.requests.get_mut(&id) else { return };
        if !st.active {
            return;
        }
        st.active = false;
        let peer = st.peer;
        if let Some(ps) = self.peers.get_mut(&peer) {
            ps.active = ps.active.saturating_sub(1);
        }
        self.start_queued(now, peer);
    }

    /// Removes a request; with an error, reports its failure.
    fn finish_request(&mut self, now: Instant, id: RequestId, error: Option<RequestError>) {
        self.release_slot(now, id);
        if let Some(st) = self.requests.remove(&id) {
            self.by_token.remove(&(st.peer, st.token));
            if let Some(mid) = st.mid {
                if self.outgoing.get(&(st.peer, mid)).is_some_and(|o| o.origin == Origin::Request(id)) {
                    self.outgoing.remove(&(st.peer, mid));
                }
            }
            if let Some(ps) = self.peers.get_mut(&st.peer) {
                ps.queue.retain(|q| *q != id);
            }
            if let Some(error) = error {
                self.events.push_back(Event::RequestFailed { id, error });
            }
        }
    }

    /// Forgets a request (e.g. an observation the application no longer wants, or a request
    /// it gave up on). No event is emitted.
    pub fn cancel_request(&mut self, now: Instant, id: RequestId) {
        self.finish_request(now, id, None);
    }

    /// The request registered under a token towards a peer (e.g. an observation).
    pub fn request_by_token(&self, peer: SocketAddr, token: &Token) -> Option<RequestId> {
        self.by_token.get(&(peer, *token)).copied()
    }

    /// The token a request was sent with.
    pub fn request_token(&self, id: RequestId) -> Option<Token> {
        self.requests.get(&id).map(|s| s.token)
    }

    fn deliver_response(&mut self, now: Instant, id: RequestId, peer: SocketAddr, message: Message) {
        let Some(st) = self.requests.get_mut(&id) else { return };
        // RFC 7641 §3.2: a notification keeps the registration; any other response (or an
        // error) ends it.
        let keep = st.observe && message.code.is_success() && message.options.contains(hopcore_codec::num::OBSERVE);
        if keep {
            st.deadline = None;
            self.release_slot(now, id);
        } else {
            self.finish_request(now, id, None);
        }
        self.events.push_back(Event::Response { id, peer, message });
    }

    // ---- server role -------------------------------------------------------------------

    /// Answers an incoming request. Piggybacked in the ACK when the request was confirmable and
    /// not yet acknowledged, otherwise a separate response (CON if the request was, NON if it
    /// was NON), RFC 7252 §5.2. The response's type is set here; its token is the request's.
    pub fn respond(&mut self, now: Instant, handle: &ResponseHandle, mut response: Message) {
        response.token = handle.token;
        let state = self
            .dedup
            .get_mut(handle.peer, handle.message_id)
            .filter(|e| e.token == handle.token)
            .map(|e| e.state.clone());
        self.ack_deadlines.remove(&(handle.peer, handle.message_id));
        let piggyback = handle.confirmable && !matches!(state, Some(Handled::EmptyAcked));
        if piggyback {
            // RFC 7252 §5.2.1: piggybacked response in the ACK, same Message ID.
            response.mtype = MsgType::Ack;
            response.message_id = handle.message_id;
            let Ok(bytes) = response.to_bytes() else {
                debug!("response cannot be encoded");
                return;
            };
            if let Some(e) = self.dedup.get_mut(handle.peer, handle.message_id) {
                e.state = Handled::Answered(bytes.clone());
            }
            self.transmit(handle.peer, bytes);
        } else {
            // RFC 7252 §5.2.2: a separate response, CON if the request was.
            response.mtype = if handle.confirmable { MsgType::Con } else { MsgType::Non };
            self.send(now, handle.peer, response);
            if let Some(e) = self.dedup.get_mut(handle.peer, handle.message_id) {
                if !handle.confirmable {
                    e.state = Handled::Done;
                }
            }
        }
    }

    /// Sends a message that is not a request and not a piggybacked response: a separate
    /// response or a notification. CON messages are retransmitted until acknowledged.
    pub fn send(&mut self, now: Instant, peer: SocketAddr, mut message: Message) -> SendId {
        let id = SendId(self.next_id);
        self.next_id += 1;
        let mid = self.alloc_mid();
        message.message_id = mid;
        if !matches!(message.mtype, MsgType::Con | MsgType::Non) {
            message.mtype = MsgType::Con;
        }
        match message.to_bytes() {
            Ok(bytes) => {
                let con = message.mtype == MsgType::Con;
                self.send_tracked(now, peer, mid, con, bytes, Origin::Send(id, message.token))
            }
            Err(e) => debug!(error = %e, "message cannot be encoded"),
        }
        id
    }

    // ---- input -------------------------------------------------------------------------

    /// Processes one received datagram.
    pub fn handle_datagram(&mut self, now: Instant, peer: SocketAddr, bytes: &[u8]) {
        let view = match MessageView::parse(bytes) {
            Ok(v) => v,
            Err(e) => {
                // RFC 7252 §4.2: a CON with a format error is rejected with a RST (when its
                // Message ID can be read); anything else malformed is silently ignored (§4.3).
                if bytes.len() >= 4 && bytes[0] >> 6 == 1 && MsgType::from_bits(bytes[0] >> 4) == MsgType::Con {
                    let mid = u16::from_be_bytes([bytes[2], bytes[3]]);
                    self.send_empty(peer, MsgType::Rst, mid);
                }
                debug!(%peer, error = %e, "dropped malformed datagram");
                return;
            }
        };
        let mid = view.message_id();
        let code = view.code();
        match (view.mtype(), code.class()) {
            // RFC 7252 §4.3: an empty CON is a ping, answered with RST.
            (MsgType::Con, 0) if code.is_empty() => {
                self.send_empty(peer, MsgType::Rst, mid);
            }
            (MsgType::Non, 0) if code.is_empty() => trace!(%peer, "ignored empty NON (RFC 7252 §4.1)"),
            (MsgType::Ack, 0) if code.is_empty() => self.handle_ack(now, peer, mid, None),
            (MsgType::Rst, 0) if code.is_empty() => self.handle_rst(now, peer, mid),
            (MsgType::Con | MsgType::Non, 0) => self.handle_request(now, peer, &view),
            (MsgType::Ack, 2..=5) => self.handle_ack(now, peer, mid, Some(Message::from_view(&view))),
            (MsgType::Con | MsgType::Non, 2..=5) => self.handle_response(now, peer, &view),
            (MsgType::Con, _) => {
                // RFC 7252 §4.2: a CON that cannot be processed (reserved code class) is rejected.
                self.send_empty(peer, MsgType::Rst, mid);
            }
            // ACK carrying a request, non-empty RST, reserved classes: §4.2/§4.3 ignore.
            _ => debug!(%peer, mtype = %view.mtype(), code = %code, "ignored message that cannot be processed"),
        }
    }

    fn handle_request(&mut self, now: Instant, peer: SocketAddr, view: &MessageView<'_>) {
        let mid = view.message_id();
        let token = view.token();
        let con = view.mtype() == MsgType::Con;
        // RFC 7252 §4.5: duplicates get the same answer, and are not processed again.
        if let Some(entry) = self.dedup.duplicate(peer, mid, &token) {
            match entry.state.clone() {
                Handled::Answered(bytes) if con => self.transmit(peer, bytes),
                Handled::EmptyAcked if con => {
                    self.send_empty(peer, MsgType::Ack, mid);
                }
                _ => {}
            }
            trace!(%peer, mid, "duplicate request");
            return;
        }
        let lifetime = if con { self.config.exchange_lifetime() } else { self.config.non_lifetime() };
        self.dedup.insert(now, peer, mid, token, now + lifetime, Handled::Pending);
        if con {
            let t = now + self.config.separate_response_after;
            self.ack_deadlines.insert((peer, mid), t);
            self.timers.push(Reverse((t, Timer::SeparateAck(peer, mid))));
        }
        let handle = ResponseHandle { peer, message_id: mid, token, confirmable: con };
        self.events.push_back(Event::Request(IncomingRequest { handle, message: Message::from_view(view) }));
    }

    fn handle_ack(&mut self, now: Instant, peer: SocketAddr, mid: u16, response: Option<Message>) {
        let Some(out) = self.outgoing.get(&(peer, mid)) else {
            trace!(%peer, mid, "ACK matches nothing");
            return;
        };
        if out.retransmit.is_none() {
            // An ACK for a NON is meaningless (RFC 7252 §4.3).
            return;
        }
        let origin = out.origin;
        self.outgoing.remove(&(peer, mid));
        match origin {
            Origin::Request(id) => {
                // A piggybacked response must carry the request's token (RFC 7252 §5.3.2).
                if let Some(resp) = response {
                    let token_ok = self.requests.get(&id).is_some_and(|s| s.token == resp.token);
                    if token_ok {
                        self.deliver_response(now, id, peer, resp);
                    } else {
                        debug!(%peer, mid, "piggybacked response with a foreign token");
                        self.finish_request(now, id, Some(RequestError::Reset));
                    }
                } else if let Some(st) = self.requests.get_mut(&id) {
                    // Empty ACK: the response will come separately (RFC 7252 §5.2.2).
                    let d = now + self.config.response_timeout;
                    st.deadline = Some(d);
                    self.timers.push(Reverse((d, Timer::RequestDeadline(id))));
                }
            }
            Origin::Send(id, token) => self.events.push_back(Event::Delivered { id, peer, token }),
        }
    }

    fn handle_rst(&mut self, now: Instant, peer: SocketAddr, mid: u16) {
        let Some(out) = self.outgoing.remove(&(peer, mid)) else { return };
        match out.origin {
            Origin::Request(id) => self.finish_request(now, id, Some(RequestError::Reset)),
            Origin::Send(id, token) => {
                self.events.push_back(Event::Rejected { id, peer, token, reason: RejectReason::Reset })
            }
        }
    }

    fn handle_response(&mut self, now: Instant, peer: SocketAddr, view: &MessageView<'_>) {
        let mid = view.message_id();
        let token = view.token();
        let con = view.mtype() == MsgType::Con;
        // RFC 7252 §4.5: a duplicate separate response is acknowledged again, not re-delivered.
        if let Some(e) = self.dedup.duplicate(peer, mid, &token) {
            if let Handled::Answered(bytes) = e.state.clone() {
                self.transmit(peer, bytes);
            }
            return;
        }
        let Some(&id) = self.by_token.get(&(peer, token)) else {
            // RFC 7252 §5.3.2 / RFC 7641 §3.6: an unexpected response is rejected with RST,
            // which also cancels an observation the client has forgotten.
            self.send_empty(peer, MsgType::Rst, mid);
            trace!(%peer, %token, "response with unknown token: RST");
            return;
        };
        let answer = if con { self.send_empty(peer, MsgType::Ack, mid) } else { Vec::new() };
        let lifetime = if con { self.config.exchange_lifetime() } else { self.config.non_lifetime() };
        let state = if con { Handled::Answered(answer) } else { Handled::Done };
        self.dedup.insert(now, peer, mid, token, now + lifetime, state);
        // RFC 7252 §5.2.2: a separate response may arrive before the empty ACK; it ends the
        // retransmission of the request all the same.
        if let Some(req_mid) = self.requests.get(&id).and_then(|s| s.mid) {
            if self.outgoing.get(&(peer, req_mid)).is_some_and(|o| o.origin == Origin::Request(id)) {
                self.outgoing.remove(&(peer, req_mid));
            }
        }
        self.deliver_response(now, id, peer, Message::from_view(view));
    }

    /// Advances timers up to `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(Reverse((t, timer))) = self.timers.peek().copied() {
            if t > now {
                break;
            }
            self.timers.pop();
            match timer {
                Timer::Retransmit(peer, mid) => self.on_retransmit(now, t, peer, mid),
                Timer::SeparateAck(peer, mid) => {
                    if self.ack_deadlines.get(&(peer, mid)) == Some(&t) {
                        self.ack_deadlines.remove(&(peer, mid));
                        if let Some(e) = self.dedup.get_mut(peer, mid) {
                            if e.state == Handled::Pending {
                                // RFC 7252 §5.2.2: acknowledge now, respond separately later.
                                e.state = Handled::EmptyAcked;
                                self.send_empty(peer, MsgType::Ack, mid);
                            }
                        }
                    }
                }
                Timer::RequestDeadline(id) => {
                    if self.requests.get(&id).is_some_and(|s| s.deadline == Some(t)) {
                        self.finish_request(now, id, Some(RequestError::Timeout));
                    }
                }
                Timer::ForgetNon(peer, mid) => {
                    if self.outgoing.get(&(peer, mid)).is_some_and(|o| o.forget_at == Some(t)) {
                        self.outgoing.remove(&(peer, mid));
                    }
                }
            }
        }
        self.dedup.sweep(now);
    }

    fn on_retransmit(&mut self, now: Instant, t: Instant, peer: SocketAddr, mid: u16) {
        let max = self.config.max_retransmit;
        let Some(out) = self.outgoing.get_mut(&(peer, mid)) else { return };
        let Some(rt) = out.retransmit.as_mut() else { return };
        if rt.next != t {
            return;
        }
        if rt.count < max {
            // RFC 7252 §4.2: retransmit with the timeout doubled.
            rt.count += 1;
            rt.timeout *= 2;
            rt.next = now + rt.timeout;
            let (bytes, next) = (rt.bytes.clone(), rt.next);
            self.timers.push(Reverse((next, Timer::Retransmit(peer, mid))));
            trace!(%peer, mid, "retransmit");
            self.transmit(peer, bytes);
            return;
        }
        let origin = out.origin;
        self.outgoing.remove(&(peer, mid));
        match origin {
            Origin::Request(id) => self.finish_request(now, id, Some(RequestError::Timeout)),
            Origin::Send(id, token) => {
                self.events.push_back(Event::Rejected { id, peer, token, reason: RejectReason::Timeout })
            }
        }
    }
}

#[cfg(test)]
mod tests;
