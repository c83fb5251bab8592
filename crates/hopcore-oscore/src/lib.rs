//! Sans-I/O cryptographic core of OSCORE (RFC 8613).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod alg;
pub mod error;

pub use alg::{AeadAlgorithm, HkdfAlgorithm, MAX_ID_LEN, MAX_KEY_LEN, MAX_NONCE_LEN, MAX_TAG_LEN};
pub use error::{Error, IdRole, OptionError, OptionField};
