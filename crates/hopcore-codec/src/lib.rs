//! # hopcore-codec: the CoAP wire format
//!
//! - [`view`]: a validated zero-copy view over a datagram ([`MessageView`]), RFC 7252 §3.
//! - [`builder`]: encoding into a caller's buffer ([`MessageBuilder`], [`OptionWriter`]).
//! - [`message`]: the owned representation ([`Message`], [`Options`]).
//! - [`registry`]: every known option with its format, bounds and OSCORE class, in one place.
//! - [`uri`]: Proxy-Uri / CoAP URI decomposition and composition (RFC 7252 §6.4, §6.5).
//! - [`block`]: Block1/Block2 values (RFC 7959); [`content_format`]: media types.
//!
//! No I/O happens here.

pub mod block;
pub mod builder;
pub mod code;
pub mod content_format;
pub mod error;
pub mod message;
pub mod registry;
pub mod token;
pub mod uint;
pub mod uri;
pub mod view;

pub use block::BlockValue;
pub use builder::{empty_message, MessageBuilder, OptionWriter};
pub use code::{Code, MsgType};
pub use error::{EncodeError, FormatError};
pub use message::{Message, Options};
pub use registry::{num, DraftNumbers, OptionDef, OscoreClass, Registry, ValueFormat};
pub use token::Token;
pub use uri::{CoapUri, UriError};
pub use view::{MessageView, OptionRef};

#[cfg(test)]
mod tests;
