//! hopcore security state: the security contexts of an endpoint, sans-I/O except for the
//! store's file writes.
//!
//! - [`ContextStore`]: the one owner of an endpoint's OSCORE security contexts, with durable
//!   sender sequence number reservations (RFC 8613 App. B.1.1), replay windows after a restart
//!   (App. B.1.2) and Echo values (RFC 9175, [`EchoIssuer`]).
//! - [`ContextParams`]: the input parameters of a context, kept for re-derivation.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod credentials;
pub mod durable;
pub mod echo;
pub mod params;
pub mod rederive;
pub mod store;

pub use credentials::{CredentialEntry, CredentialIndex, Credentials, CredentialsError};
pub use echo::{EchoIssuer, ECHO_LEN};
pub use params::ContextParams;
pub use store::{persist_key_for, ContextId, ContextMeta, ContextStore, Freshness, StoreError, StoreOptions};
