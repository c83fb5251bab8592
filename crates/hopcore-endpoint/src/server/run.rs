//! Running a [`Server`] on an [`Endpoint`].

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hopcore_messaging::IncomingRequest;
use tokio::task::{JoinHandle, JoinSet};
use tracing::{debug, info};

use super::core::Server;
use super::observe::{Notifier, Shared};
use crate::endpoint::{Endpoint, Incoming, IncomingEvent};

/// How often expired block-wise state is dropped.
const SWEEP_EVERY: Duration = Duration::from_secs(5);

impl Server {
    /// Serves requests arriving at `endpoint` until the endpoint stops or
    /// [`ServerHandle::shutdown`] is called. Tasks added with [`Server::on_start`] run
    /// meanwhile and are stopped on return (also when this future is dropped).
    pub async fn run(mut self, endpoint: Endpoint, mut incoming: Incoming) {
        let shared = self.shared();
        let mut tasks = JoinSet::new();
        for task in self.take_start_tasks() {
            tasks.spawn(task(Notifier { shared: shared.clone() }));
        }
        let mut sweep = tokio::time::interval(SWEEP_EVERY);
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        info!(local = %endpoint.local_addr(), resources = self.paths().count(), "CoAP server running");
        while !shared.shutdown.load(Ordering::Acquire) {
            tokio::select! {
                _ = shared.stop.notified() => {}
                ev = incoming.next_event() => match ev {
                    Some(IncomingEvent::Request(IncomingRequest { handle, message })) => {
                        if let Some(resp) = self.handle_request(Instant::now(), handle.peer, message, None) {
                            endpoint.respond(handle, resp);
                        }
                    }
                    Some(IncomingEvent::Rejected(r)) => {
                        // RFC 7641 §3.6 (RST) and §4.5 (CON never acknowledged): the client is no
                        // longer interested.
                        if self.remove_observer(r.peer, r.token) {
                            debug!(peer = %r.peer, token = %r.token, reason = ?r.reason, "notification rejected");
                        }
                    }
                    None => break,
                },
                _ = shared.wake.notified() => {
                    for n in self.poll_notifications(Instant::now()) {
                        endpoint.send(n.peer, n.message);
                    }
                }
                _ = sweep.tick() => self.handle_timeout(Instant::now()),
            }
        }
        tasks.abort_all();
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
