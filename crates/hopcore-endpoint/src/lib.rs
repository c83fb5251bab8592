//! # hopcore-endpoint: endpoint roles over UDP
//!
//! - [`endpoint`]: [`Endpoint`], the tokio shell around the sans-I/O
//!   [`hopcore_messaging::Messenger`] (one socket, one task).
//! - [`transport`]: socket set-up.
//! - [`client`]: requests with Block-wise (RFC 7959) and Observe (RFC 7641) on top.
//! - [`server`]: the resource framework: routing, link-format, Block-wise and Observe.

pub mod client;
pub mod endpoint;
pub mod server;
pub mod transport;

pub use endpoint::{Endpoint, EndpointConfig, EndpointError, Incoming, Notifications, Rejection};
pub use hopcore_messaging::{IncomingRequest, RequestError, ResponseHandle};
