//! # hopcore-messaging: the CoAP message layer, sans-I/O
//!
//! [`Messenger`] implements RFC 7252 §4 (reliability, deduplication, Message IDs) and §5.3
//! (token matching) for one UDP endpoint, without doing any I/O itself, in the style of
//! quinn-proto:
//!
//! - feed it datagrams with [`Messenger::handle_datagram`] and the clock with
//!   [`Messenger::handle_timeout`];
//! - send requests with [`Messenger::send_request`], answer incoming requests with
//!   [`Messenger::respond`], and send notifications with [`Messenger::send`];
//! - drain [`Messenger::poll_transmit`] (datagrams to send) and [`Messenger::poll_event`]
//!   (requests, responses, failures) and arm a timer for [`Messenger::poll_timeout`].
//!
//! It knows nothing of OSCORE, Observe or Block-wise beyond keeping a request's token open for
//! notifications; those live in the layers above.

pub mod config;
mod dedup;
mod messenger;

pub use config::Config;
pub use messenger::{
    Event, IncomingRequest, Messenger, RejectReason, RequestError, RequestId, ResponseHandle, SendId, Transmit,
};
