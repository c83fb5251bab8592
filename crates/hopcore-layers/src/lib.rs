//! # hopcore-layers: the nesting engine
//!
//! One engine for every hop (client, server, proxy), following
//! draft-ietf-core-oscore-capable-proxies (CP) on top of the single-layer operations of
//! `hopcore-oscore`:
//!
//! - [`incoming`]: an incoming request goes through CP §2.4 Steps 1-6: **this is where layers
//!   are removed**, proxy-related options decide forwarding, and a request ends at the
//!   application, at a forwarding step, or in an error reply.
//! - [`response`]: a response gets the removed layers back in reverse order (CP §2.5).
//! - [`outgoing`]: a client applies its layers (CP §2.3) and removes exactly those from the
//!   responses (CP §2.6).
//! - [`classes`]: **where the option class is decided** for outer layers (CP §2.2 Steps 1-9).
//! - [`route`]: a client's route through proxies, onion forwarding (CP §2.3, seed 000 App. A).
//! - [`stack`]: the record of which contexts a message's layers used, in which order.
//! - [`contexts`]: what the engine needs from the security store.
//!
//! Sans-I/O: messages and state in, messages and state out.

pub mod classes;
pub mod contexts;
pub mod incoming;
pub mod outgoing;
pub mod response;
pub mod route;
pub mod stack;

pub use classes::{Hop, LayerTarget, OptionRole};
pub use contexts::{ContextList, SecurityContexts};
pub use incoming::{process_request, ForwardMode, HopPolicy, Incoming, Limits, OriginServer};
pub use outgoing::{protect_request_layers, unprotect_response_layers, LayerError};
pub use response::{protect_response_layers, ResponseError};
pub use route::{protect_route_request, Route, RouteError, RouteProxy};
pub use stack::{AppliedLayer, ClientStack, RemovedLayer, ServerStack};

#[cfg(test)]
mod tests;
