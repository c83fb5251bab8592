//! # hopcore-endpoint: endpoint roles over UDP
//!
//! - [`endpoint`]: [`Endpoint`], the tokio shell around the sans-I/O
//!   [`hopcore_messaging::Messenger`] (one socket, one task).
//! - [`transport`]: socket set-up.
//! - [`client`]: requests with Block-wise (RFC 7959) and Observe (RFC 7641) on top.
//! - [`server`]: the resource framework: routing, link-format, Block-wise and Observe.
//! - [`oscore_server`]: a [`server::Server`] behind OSCORE (RFC 8613 §8.2, §8.3), with
//!   per-path OSCORE requirements and the peer identity for resources.

pub mod client;
pub mod endpoint;
pub mod oscore_server;
pub mod server;
pub mod transport;

pub use endpoint::{
    Endpoint, EndpointConfig, EndpointError, EndpointStats, Incoming, Notifications, Rejection, Tapped,
};
pub use hopcore_messaging::{IncomingRequest, RequestError, ResponseHandle};
