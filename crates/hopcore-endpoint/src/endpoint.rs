//! [`Endpoint`]: one UDP socket driven by a [`Messenger`] in a tokio task.
//!
//! This is the thin async shell around the sans-I/O message layer: the task reads datagrams,
//! feeds commands and the clock to the messenger, writes what it wants sent and routes its
//! events to the waiting callers. All protocol decisions stay in the messenger.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use hopcore_codec::{Code, Message, Token};
use hopcore_messaging::{
    Config, Event, IncomingRequest, Messenger, RejectReason, RequestError, RequestId, ResponseHandle, SendId,
};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, trace};

use crate::transport::bind_udp;

/// Where the responses to one request go.
enum Sink {
    /// A single response; the ticket of the caller (for [`Command::Abandon`]).
    Once(oneshot::Sender<Result<(Message, SocketAddr), RequestError>>, u64),
    Many(mpsc::UnboundedSender<Result<Message, RequestError>>),
}

enum Command {
    Request {
        peer: SocketAddr,
        message: Message,
        sink: Sink,
    },
    /// The caller of [`Endpoint::request`] stopped waiting (timeout, dropped future).
    Abandon {
        ticket: u64,
    },
    Forget {
        peer: SocketAddr,
        token: Token,
    },
    Respond {
        handle: ResponseHandle,
        message: Message,
    },
    Send {
        peer: SocketAddr,
        message: Message,
        done: Option<oneshot::Sender<Result<(), RejectReason>>>,
    },
}

/// Options for [`Endpoint::bind_with`].
#[derive(Debug, Clone)]
pub struct EndpointConfig {
    pub messaging: Config,
    /// Incoming requests queued for the application before new ones get 5.03.
    pub incoming_queue: usize,
    /// Receives a copy of every datagram the endpoint sends or receives (traces, the demo's
    /// per-leg view). `None` costs nothing.
    pub tap: Option<mpsc::UnboundedSender<Tapped>>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig { messaging: Config::default(), incoming_queue: 4096, tap: None }
    }
}

/// A datagram seen by an endpoint's tap.
#[derive(Debug, Clone)]
pub struct Tapped {
    /// The endpoint's own address.
    pub local: SocketAddr,
    /// The other side.
    pub peer: SocketAddr,
    /// Whether the endpoint sent (`true`) or received it.
    pub outgoing: bool,
    pub bytes: Vec<u8>,
}

/// Datagram and byte counters of an endpoint, since it started.
#[derive(Debug, Default)]
pub struct EndpointStats {
    pub datagrams_in: std::sync::atomic::AtomicU64,
    pub bytes_in: std::sync::atomic::AtomicU64,
    pub datagrams_out: std::sync::atomic::AtomicU64,
    pub bytes_out: std::sync::atomic::AtomicU64,
}

impl EndpointStats {
    fn count(&self, outgoing: bool, len: usize) {
        use std::sync::atomic::Ordering::Relaxed;
        let (d, b) =
            if outgoing { (&self.datagrams_out, &self.bytes_out) } else { (&self.datagrams_in, &self.bytes_in) };
        d.fetch_add(1, Relaxed);
        b.fetch_add(len as u64, Relaxed);
    }
    /// (datagrams in, bytes in, datagrams out, bytes out).
    pub fn snapshot(&self) -> (u64, u64, u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.datagrams_in.load(Relaxed),
            self.bytes_in.load(Relaxed),
            self.datagrams_out.load(Relaxed),
            self.bytes_out.load(Relaxed),
        )
    }
}

/// A handle to a running CoAP endpoint. Cheap to clone; the endpoint stops when every handle
/// and the [`Incoming`] stream are dropped.
#[derive(Clone)]
pub struct Endpoint {
    cmd: mpsc::UnboundedSender<Command>,
    local: SocketAddr,
    config: Arc<Config>,
    tickets: Arc<std::sync::atomic::AtomicU64>,
    stats: Arc<EndpointStats>,
}

/// Tells the driver to forget a request whose caller stopped waiting.
struct AbandonOnDrop<'a> {
    cmd: &'a mpsc::UnboundedSender<Command>,
    ticket: u64,
    armed: bool,
}

impl AbandonOnDrop<'_> {
    fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for AbandonOnDrop<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.cmd.send(Command::Abandon { ticket: self.ticket });
        }
    }
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint").field("local", &self.local).finish()
    }
}

/// The requests arriving at an endpoint (its server role), and the rejections of messages it
/// sent with [`Endpoint::send`] (RST or no ACK), which end observations (RFC 7641 §3.6).
#[derive(Debug)]
pub struct Incoming {
    rx: mpsc::Receiver<IncomingRequest>,
    rejected: mpsc::UnboundedReceiver<Rejection>,
}

/// A notification or separate response the peer rejected or never acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rejection {
    pub peer: SocketAddr,
    pub token: Token,
    pub reason: RejectReason,
}

impl Incoming {
    /// The next request; `None` when the endpoint stopped.
    pub async fn next(&mut self) -> Option<IncomingRequest> {
        self.rx.recv().await
    }
    /// The next rejection; pending forever if there is none.
    pub async fn next_rejection(&mut self) -> Option<Rejection> {
        self.rejected.recv().await
    }
    /// The next request or rejection, whichever comes first (both borrow `self`, so a server
    /// loop cannot wait on the two others at once); `None` when the endpoint stopped.
    pub async fn next_event(&mut self) -> Option<IncomingEvent> {
        tokio::select! {
            r = self.rx.recv() => r.map(IncomingEvent::Request),
            Some(r) = self.rejected.recv() => Some(IncomingEvent::Rejected(r)),
        }
    }
}

/// What [`Incoming::next_event`] yields.
#[derive(Debug)]
pub enum IncomingEvent {
    Request(IncomingRequest),
    Rejected(Rejection),
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the endpoint has shut down")]
    Closed,
}

/// A running observation (RFC 7641): notifications in order of arrival.
#[derive(Debug)]
pub struct Notifications {
    rx: mpsc::UnboundedReceiver<Result<Message, RequestError>>,
    endpoint: Endpoint,
    peer: SocketAddr,
    token: Option<Token>,
}

impl Notifications {
    /// The next response or notification; `None` when the observation ended.
    pub async fn next(&mut self) -> Option<Result<Message, RequestError>> {
        let r = self.rx.recv().await;
        if let Some(Ok(m)) = &r {
            self.token = Some(m.token);
        }
        r
    }
    /// The peer being observed.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }
    /// The token of the observation, once the first response arrived.
    pub fn token(&self) -> Option<Token> {
        self.token
    }
}

impl Drop for Notifications {
    fn drop(&mut self) {
        // Forget the token: later notifications get a RST, which ends the observation at the
        // server (RFC 7641 §3.6).
        if let Some(token) = self.token {
            let _ = self.endpoint.cmd.send(Command::Forget { peer: self.peer, token });
        }
    }
}

impl Endpoint {
    /// Binds a UDP socket and starts the endpoint task.
    pub async fn bind(addr: SocketAddr) -> io::Result<(Endpoint, Incoming)> {
        Self::bind_with(addr, EndpointConfig::default()).await
    }

    pub async fn bind_with(addr: SocketAddr, config: EndpointConfig) -> io::Result<(Endpoint, Incoming)> {
        let socket = bind_udp(addr)?;
        Ok(Self::start(socket, config))
    }

    /// Starts an endpoint on an already bound socket.
    pub fn start(socket: UdpSocket, config: EndpointConfig) -> (Endpoint, Incoming) {
        let local = socket.local_addr().unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        let (cmd_tx, cmd_rx) = mpsc::unbounded_channel();
        let (in_tx, in_rx) = mpsc::channel(config.incoming_queue.max(1));
        let (rej_tx, rej_rx) = mpsc::unbounded_channel();
        let shared = Arc::new(config.messaging.clone());
        let stats = Arc::new(EndpointStats::default());
        let driver = Driver {
            local,
            stats: Arc::clone(&stats),
            tap: config.tap.clone(),
            socket,
            messenger: Messenger::new(config.messaging),
            cmd_rx,
            incoming: in_tx,
            rejected: rej_tx,
            sinks: HashMap::new(),
            tickets: HashMap::new(),
            sends: HashMap::new(),
        };
        tokio::spawn(driver.run());
        (
            Endpoint {
                cmd: cmd_tx,
                local,
                config: shared,
                tickets: Arc::new(std::sync::atomic::AtomicU64::new(1)),
                stats: Arc::clone(&stats),
            },
            Incoming { rx: in_rx, rejected: rej_rx },
        )
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Datagram and byte counters since the endpoint started.
    pub fn stats(&self) -> &EndpointStats {
        &self.stats
    }

    pub fn messaging_config(&self) -> &Config {
        &self.config
    }

    /// Sends a request and waits for its response (a single one; Block-wise and Observe are
    /// handled by [`crate::client::Client`]). Returns the response and the address it came from.
    pub async fn request(&self, peer: SocketAddr, message: Message) -> Result<Message, EndpointError> {
        let (tx, rx) = oneshot::channel();
        let ticket = self.tickets.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.cmd
            .send(Command::Request { peer, message, sink: Sink::Once(tx, ticket) })
            .map_err(|_| EndpointError::Closed)?;
        // If this future is dropped before the response (a caller's timeout), the messaging
        // layer forgets the request: no more retransmissions, and a late response gets RST.
        let guard = AbandonOnDrop { cmd: &self.cmd, ticket, armed: true };
        let result = match rx.await {
            Ok(Ok((m, _))) => Ok(m),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(EndpointError::Closed),
        };
        guard.disarm();
        result
    }

    /// Sends a request whose token stays open for notifications (RFC 7641).
    pub fn observe(&self, peer: SocketAddr, message: Message) -> Result<Notifications, EndpointError> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.cmd.send(Command::Request { peer, message, sink: Sink::Many(tx) }).map_err(|_| EndpointError::Closed)?;
        Ok(Notifications { rx, endpoint: self.clone(), peer, token: None })
    }

    /// Forgets the request registered with `token` (e.g. before re-using the token to
    /// deregister an observation with Observe: 1).
    pub fn forget(&self, peer: SocketAddr, token: Token) {
        let _ = self.cmd.send(Command::Forget { peer, token });
    }

    /// Answers an incoming request.
    pub fn respond(&self, handle: ResponseHandle, message: Message) {
        let _ = self.cmd.send(Command::Respond { handle, message });
    }

    /// Sends a notification or other separate message; without waiting.
    pub fn send(&self, peer: SocketAddr, message: Message) {
        let _ = self.cmd.send(Command::Send { peer, message, done: None });
    }

    /// Sends a notification or other separate message and waits until a CON is acknowledged
    /// (immediately `Ok` for NON unless it is rejected later, which is not reported).
    pub async fn send_confirmed(&self, peer: SocketAddr, message: Message) -> Result<(), RejectReason> {
        let (tx, rx) = oneshot::channel();
        if self.cmd.send(Command::Send { peer, message, done: Some(tx) }).is_err() {
            return Err(RejectReason::Timeout);
        }
        rx.await.unwrap_or(Err(RejectReason::Timeout))
    }
}

struct Driver {
    local: SocketAddr,
    stats: Arc<EndpointStats>,
    tap: Option<mpsc::UnboundedSender<Tapped>>,
    socket: UdpSocket,
    messenger: Messenger,
    cmd_rx: mpsc::UnboundedReceiver<Command>,
    incoming: mpsc::Sender<IncomingRequest>,
    rejected: mpsc::UnboundedSender<Rejection>,
    sinks: HashMap<RequestId, Sink>,
    /// Request tickets of [`Endpoint::request`] callers, for [`Command::Abandon`].
    tickets: HashMap<u64, RequestId>,
    sends: HashMap<SendId, oneshot::Sender<Result<(), RejectReason>>>,
}

/// Datagrams read in one go before processing output.
const RECV_BATCH: usize = 64;

impl Driver {
    fn note(&self, peer: SocketAddr, outgoing: bool, bytes: &[u8]) {
        self.stats.count(outgoing, bytes.len());
        if let Some(tap) = &self.tap {
            let _ = tap.send(Tapped { local: self.local, peer, outgoing, bytes: bytes.to_vec() });
        }
    }

    fn on_datagram(&mut self, peer: SocketAddr, bytes: &[u8]) {
        self.note(peer, false, bytes);
        self.messenger.handle_datagram(Instant::now(), peer, bytes);
    }

    async fn run(mut self) {
        let mut buf = vec![0u8; 65_536];
        loop {
            let deadline = self.messenger.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    let mut next = Some(r);
                    let mut n = 0;
                    while let Some(r) = next.take() {
                        match r {
                            Ok((len, peer)) => self.on_datagram(peer, &buf[..len]),
                            Err(e) => debug!(error = %e, "recv failed"),
                        }
                        n += 1;
                        if n < RECV_BATCH {
                            match self.socket.try_recv_from(&mut buf) {
                                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                                r => next = Some(r),
                            }
                        }
                    }
                }
                cmd = self.cmd_rx.recv() => {
                    match cmd {
                        Some(c) => self.apply(c),
                        None if self.incoming.is_closed() => break,
                        None => {
                            // No handles left but the server role still runs: keep serving.
                            if self.serve_only().await { break; }
                        }
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.messenger.handle_timeout(Instant::now());
                }
            }
            self.flush().await;
        }
    }

    /// Runs without a command channel (all handles dropped) until the Incoming side closes.
    /// Returns true when the endpoint should stop.
    async fn serve_only(&mut self) -> bool {
        let mut buf = vec![0u8; 65_536];
        loop {
            if self.incoming.is_closed() {
                return true;
            }
            let deadline = self.messenger.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                r = self.socket.recv_from(&mut buf) => {
                    if let Ok((len, peer)) = r {
                        self.on_datagram(peer, &buf[..len]);
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    self.messenger.handle_timeout(Instant::now());
                }
                _ = self.incoming.closed() => return true,
            }
            self.flush().await;
        }
    }

    fn apply(&mut self, cmd: Command) {
        let now = Instant::now();
        match cmd {
            Command::Request { peer, message, sink } => {
                let observe = matches!(sink, Sink::Many(_));
                let id = self.messenger.send_request(now, peer, message, observe);
                if let Sink::Once(_, ticket) = &sink {
                    self.tickets.insert(*ticket, id);
                }
                self.sinks.insert(id, sink);
            }
            Command::Abandon { ticket } => {
                if let Some(id) = self.tickets.remove(&ticket) {
                    if self.sinks.remove(&id).is_some() {
                        self.messenger.cancel_request(now, id);
                    }
                }
            }
            Command::Forget { peer, token } => {
                if let Some(id) = self.messenger.request_by_token(peer, &token) {
                    self.messenger.cancel_request(now, id);
                    self.sinks.remove(&id);
                }
            }
            Command::Respond { handle, message } => self.messenger.respond(now, &handle, message),
            Command::Send { peer, message, done } => {
                let con = message.mtype == hopcore_codec::MsgType::Con;
                let id = self.messenger.send(now, peer, message);
                if let Some(done) = done {
                    if con {
                        self.sends.insert(id, done);
                    } else {
                        let _ = done.send(Ok(()));
                    }
                }
            }
        }
    }

    async fn flush(&mut self) {
        while let Some(t) = self.messenger.poll_transmit() {
            match self.socket.send_to(&t.bytes, t.destination).await {
                Ok(_) => self.note(t.destination, true, &t.bytes),
                Err(e) => debug!(dest = %t.destination, error = %e, "send failed"),
            }
        }
        let now = Instant::now();
        while let Some(ev) = self.messenger.poll_event() {
            match ev {
                Event::Request(req) => {
                    let handle = req.handle;
                    match self.incoming.try_send(req) {
                        Ok(()) => {}
                        Err(mpsc::error::TrySendError::Full(_)) => {
                            // Overloaded: say so instead of letting the client wait (RFC 7252 §5.9.3.4).
                            let mut m = Message::response(Code::SERVICE_UNAVAILABLE);
                            m.options.set_uint(hopcore_codec::num::MAX_AGE, 1);
                            self.messenger.respond(now, &handle, m);
                        }
                        Err(mpsc::error::TrySendError::Closed(_)) => {
                            // Nothing serves requests here (a pure client): no resource exists.
                            self.messenger.respond(now, &handle, Message::response(Code::NOT_FOUND));
                        }
                    }
                }
                Event::Response { id, peer, message } => {
                    let keep = match self.sinks.get(&id) {
                        Some(Sink::Many(tx)) => tx.send(Ok(message)).is_ok(),
                        Some(Sink::Once(..)) => {
                            if let Some(Sink::Once(tx, ticket)) = self.sinks.remove(&id) {
                                self.tickets.remove(&ticket);
                                let _ = tx.send(Ok((message, peer)));
                            }
                            true
                        }
                        None => true,
                    };
                    if !keep {
                        // The observer went away: forget the token (RST for what follows).
                        trace!(?id, "observer gone");
                        self.sinks.remove(&id);
                        self.messenger.cancel_request(now, id);
                    } else if self.messenger.request_token(id).is_none() {
                        self.sinks.remove(&id);
                    }
                }
                Event::RequestFailed { id, error } => match self.sinks.remove(&id) {
                    Some(Sink::Once(tx, ticket)) => {
                        self.tickets.remove(&ticket);
                        let _ = tx.send(Err(error));
                    }
                    Some(Sink::Many(tx)) => {
                        let _ = tx.send(Err(error));
                    }
                    None => {}
                },
                Event::Delivered { id, .. } => {
                    if let Some(tx) = self.sends.remove(&id) {
                        let _ = tx.send(Ok(()));
                    }
                }
                Event::Rejected { id, reason, peer, token } => {
                    if let Some(tx) = self.sends.remove(&id) {
                        let _ = tx.send(Err(reason));
                    }
                    let _ = self.rejected.send(Rejection { peer, token, reason });
                }
            }
        }
        // Transmits produced while routing events (e.g. 5.03).
        while let Some(t) = self.messenger.poll_transmit() {
            match self.socket.send_to(&t.bytes, t.destination).await {
                Ok(_) => self.note(t.destination, true, &t.bytes),
                Err(e) => debug!(dest = %t.destination, error = %e, "send failed"),
            }
        }
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
