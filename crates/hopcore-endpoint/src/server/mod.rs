//! Server role: a resource framework over [`crate::Endpoint`].
//!
//! - [`Resource`]: what an application implements; handlers get a [`Request`] (the message, the
//!   peer, and the authenticated identity a security layer may fill in) and return the
//!   response. Unimplemented methods answer 4.05 (RFC 7252 §5.8).
//! - [`Server`]: resources by path, 4.04 for unknown paths, 4.02 for unrecognized critical
//!   options (RFC 7252 §5.4.1), Accept/Content-Format checks (4.06, 4.15), If-Match and
//!   If-None-Match (4.12), /.well-known/core in CoRE Link Format (RFC 6690), Block2 and Block1
//!   (RFC 7959), and Observe (RFC 7641) with a [`Notifier`] for "this resource changed".
//! - [`Server::run`] serves on an endpoint; [`Server::spawn`] / [`Server::start`] on a task of
//!   their own, returning a [`ServerHandle`].
//! - [`demo`]: the resources `hopcore server` serves.
//!
//! A security layer (OSCORE) wraps the server by driving it itself: it unprotects a request,
//! calls [`Server::handle_request`] with the peer's identity, protects the returned response;
//! and protects each [`Notification`] from [`Server::poll_notifications`] with the context of
//! the observation's (peer, token).
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use hopcore_endpoint::server::{resource::text, resource_fn, Server};
//! let mut server = Server::new();
//! server.add_resource("/hi", resource_fn(|_req| text("hi")));
//! let handle = server.start("127.0.0.1:5683".parse().unwrap()).await?;
//! handle.notifier().notify("/hi");
//! # Ok(()) }
//! ```

mod block;
mod core;
pub mod demo;
pub mod link_format;
mod observe;
pub mod plugtest;
pub mod resource;
mod run;

pub use self::core::{Notification, Server, ServerBuilder, ServerConfig};
pub use observe::Notifier;
pub use resource::{resource_fn, Attributes, FnResource, Request, Resource};
pub(crate) use run::drive as run_drive;
pub use run::{ServerCore, ServerHandle};
