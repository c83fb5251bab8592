//! Running a [`Server`] on an [`Endpoint`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopcore_codec::{Message, Token};
use hopcore_messaging::IncomingRequest;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info};

use super::core::{Notification, Server};
use super::observe::{Notifier, Shared};
use crate::endpoint::{Endpoint, Incoming, IncomingEvent};

/// How often expired block-wise state is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

/// The sans-I/O core a server task drives: [`Server`] itself, or a layer around it such as
/// [`crate::oscore_server::OscoreServer`]. [`drive`] is the one I/O loop for all of them.
pub trait ServerCore {
    /// The resource framework inside (start tasks, notifier state).
    fn server_mut(&mut self) -> &mut Server;
    /// Answers one request (`None`: no response, e.g. a NON with an unknown critical option).
    fn handle_request(&mut self, now: Instant, peer: SocketAddr, message: Message) -> Option<Message>;
    /// Notifications that are due.
    fn poll_notifications(&mut self, now: Instant) -> Vec<Notification>;
    /// Ends an observation; whether there was one.
    fn remove_observer(&mut self, peer: SocketAddr, token: Token) -> bool;
    /// Expires old state.
    fn handle_timeout(&mut self, now: Instant);
}

impl ServerCore for Server {
    fn server_mut(&mut self) -> &mut Server {
        self
    }
    fn handle_request(&mut self, now: Instant, peer: SocketAddr, message: Message) -> Option<Message> {
        Server::handle_request(self, now, peer, message, None)
    }
    fn poll_notifications(&mut self, now: Instant) -> Vec<Notification> {
        Server::poll_notifications(self, now)
    }
    fn remove_observer(&mut self, peer: SocketAddr, token: Token) -> bool {
        Server::remove_observer(self, peer, token)
    }
    fn handle_timeout(&mut self, now: Instant) {
        Server::handle_timeout(self, now)
    }
}

/// Serves requests arriving at `endpoint` with `core` until the endpoint stops or the
/// server's handle asks to shut down. Tasks added with [`Server::on_start`] run meanwhile and
/// are stopped on return (also when this future is dropped).
pub(crate) async fn drive<S: ServerCore>(core: &mut S, endpoint: &Endpoint, mut incoming: Incoming) {
    let shared = core.server_mut().shared();
    let mut tasks = JoinSet::new();
    for task in core.server_mut().take_start_tasks() {
        tasks.spawn(task(Notifier { shared: shared.clone() }));
    }
    let mut sweep = tokio::time::interval(SWEEP_EVERY);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !shared.shutdown.load(Ordering::Acquire) {
        tokio::select! {
            _ = shared.stop.notified() => {}
            ev = incoming.next_event() => match ev {
                Some(IncomingEvent::Request(IncomingRequest { handle, message })) => {
                    if let Some(resp) = core.handle_request(Instant::now(), handle.peer, message) {
                        endpoint.respond(handle, resp);
                    }
                }
                Some(IncomingEvent::Rejected(r)) => {
                    // RFC 7641 §3.6 (RST) and §4.5 (CON never acknowledged): the client is no
                    // longer interested.
                    if core.remove_observer(r.peer, r.token) {
                        debug!(peer = %r.peer, token = %r.token, reason = ?r.reason, "notification rejected");
                    }
                }
                None => break,
            },
            _ = shared.wake.notified() => {
                for n in core.poll_notifications(Instant::now()) {
                    endpoint.send(n.peer, n.message);
                }
            }
            _ = sweep.tick() => core.handle_timeout(Instant::now()),
        }
    }
    tasks.abort_all();
}

impl Server {
    /// Serves requests arriving at `endpoint` until the endpoint stops or
    /// [`ServerHandle::shutdown`] is called. Tasks added with [`Server::on_start`] run
    /// meanwhile and are stopped on return (also when this future is dropped).
    pub async fn run(mut self, endpoint: Endpoint, incoming: Incoming) {
        info!(local = %endpoint.local_addr(), resources = self.paths().count(), "CoAP server running");
        drive(&mut self, &endpoint, incoming).await;
        info!(local = %endpoint.local_addr(), "CoAP server stopped");
    }

    /// Runs the server on a task of its own; see [`ServerHandle`].
    pub fn spawn(self, endpoint: Endpoint, incoming: Incoming) -> ServerHandle {
        let shared = self.shared();
        let task = tokio::spawn(self.run(endpoint.clone(), incoming));
        ServerHandle { shared, task, endpoint }
    }

    /// Binds a UDP endpoint at `addr` and runs the server on a task of its own.
    pub async fn start(self, addr: SocketAddr) -> io::Result<ServerHandle> {
        let (endpoint, incoming) = Endpoint::bind(addr).await?;
        Ok(self.spawn(endpoint, incoming))
    }
}

/// A server running on its own task. Dropping the handle leaves the server running; call
/// [`ServerHandle::shutdown`] to stop it.
#[derive(Debug)]
pub struct ServerHandle {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
    endpoint: Endpoint,
}

impl ServerHandle {
    pub fn local_addr(&self) -> SocketAddr {
        self.endpoint.local_addr()
    }
    /// The endpoint the server answers on (it can also send requests of its own).
    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }
    pub fn notifier(&self) -> Notifier {
        Notifier { shared: self.shared.clone() }
    }
    /// The current number of observers (RFC 7641) across all resources.
    pub fn observer_count(&self) -> usize {
        self.shared.observers.load(Ordering::Relaxed)
    }
    /// Asks the server to stop; it returns from [`Server::run`] soon after.
    pub fn shutdown(&self) {
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.stop.notify_one();
    }
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
    /// Waits until the server stopped.
    pub async fn join(self) {
        if let Err(e) = self.task.await {
            debug!(error = %e, "server task ended abnormally");
        }
    }
}
