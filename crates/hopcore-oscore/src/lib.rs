//! Sans-I/O cryptographic core of OSCORE (RFC 8613).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aad;
pub mod alg;
mod cbor;
pub mod error;
pub mod nonce;
pub mod option;
pub mod replay;
pub mod sequence;

pub use aad::{ExternalAad, ENC_STRUCTURE_PREFIX, OSCORE_VERSION};
pub use alg::{AeadAlgorithm, HkdfAlgorithm, MAX_ID_LEN, MAX_KEY_LEN, MAX_NONCE_LEN, MAX_TAG_LEN};
pub use error::{Error, IdRole, OptionError, OptionField};
pub use nonce::Nonce;
pub use option::{OscoreOption, PartialIv, MAX_KID_CONTEXT_LEN, MAX_PIV_LEN, MAX_SEQUENCE_NUMBER};
pub use replay::{ReplayWindow, DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW};
pub use sequence::SenderSequence;
