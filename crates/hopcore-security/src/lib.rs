//! hopcore security state: the OSCORE security contexts of an endpoint, sans-I/O except for
//! the store's file writes.
//!
//! | what | where | RFC |
//! |---|---|---|
//! | [`ContextStore`]: owns the contexts, lookup by kid / kid context, durable sender sequence reservations, replay windows after a restart | [`store`], [`durable`] | 8613 §8.2 step 2, App. B.1.1, B.1.2 |
//! | [`EchoIssuer`]: fresh, unpredictable Echo values bound to a context; [`ContextStore::check_freshness`] runs the B.1.2 exchange | [`echo`] | 9175 §2.4, App. A |
//! | [`Credentials`]: hopcore TOML and aiocoap JSON credentials files → store + [`CredentialIndex`] | [`credentials`] | |
//! | [`rederive::Initiator`], [`rederive::Responder`]: context re-derivation with R1/R2/R3 | [`rederive`] | 8613 App. B.2 |
//! | [`ContextParams`]: the input parameters, kept for re-derivation | [`params`] | 8613 §3.2 |
//!
//! # Sending and receiving with a store
//!
//! ```
//! use hopcore_codec::{Code, Message};
//! use hopcore_oscore::{protect_request, unprotect_request, Layer};
//! use hopcore_security::{Credentials, StoreOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = std::env::temp_dir().join(format!("hopcore-security-doc-{}", std::process::id()));
//! # std::fs::create_dir_all(&dir)?;
//! # let creds = dir.join("creds.toml");
//! # std::fs::write(&creds, r#"
//! # [[context]]
//! # uri = "coap://127.0.0.1:5683/*"
//! # sender_id = "hex:"
//! # recipient_id = "hex:01"
//! # master_secret = "hex:0102030405060708090a0b0c0d0e0f10"
//! # [[context]]
//! # peer = ":client1"
//! # sender_id = "hex:01"
//! # recipient_id = "hex:"
//! # master_secret = "hex:0102030405060708090a0b0c0d0e0f10"
//! # persist_key = "server side"
//! # "#)?;
//! // Both ends of one pair in one file, for the example; normally client and server each have
//! // their own file.
//! let (mut store, index) = Credentials::load(&creds)?.into_store(Some(&dir.join("state")))?;
//!
//! // Client: pick the context by request URI, reserve (durably) and protect.
//! let id = index.for_uri("coap://127.0.0.1:5683/temperature").ok_or("no credentials")?;
//! let mut request = Message::request(Code::GET);
//! request.set_path("/temperature");
//! let ctx = store.prepare_send(id)?; // RFC 8613 App. B.1.1: reservation on disk first
//! let (oscore, _binding) = protect_request(&request, ctx, &Layer::RFC8613)?;
//!
//! // Server: find the context by kid (and kid context), RFC 8613 §8.2 step 2.
//! let (plain, _binding, info) = unprotect_request(
//!     &oscore,
//!     |kid, kid_context| store.lookup_recipient_mut(kid, kid_context).map(|(_, ctx)| ctx),
//!     &Layer::RFC8613,
//! )?;
//! let peer = store.lookup_recipient(info.kid(), info.id_context()).ok_or("gone")?;
//! assert_eq!(store.meta(peer).map(|m| m.label.as_str()), Some(":client1"));
//! assert_eq!(plain, request);
//! # drop(store);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok(())
//! # }
//! ```
//!
//! A request that decrypts while the replay window has no state (after an unclean restart)
//! comes back from `unprotect_request` as `UnprotectError::FreshnessUnverified`; hand it to
//! [`ContextStore::check_freshness`], which either verifies its Echo option and synchronizes
//! the window or returns the 4.01 + Echo challenge to send (RFC 8613 App. B.1.2).
//!
//! # Credentials file formats
//!
//! Described in full in the [`credentials`] module and in `credentials.example.toml` next to
//! this crate's `Cargo.toml`. In short, hopcore TOML:
//!
//! ```toml
//! state_dir = "state"                       # optional, relative to the file
//! [[context]]
//! uri = "coap://127.0.0.1:5683/*"           # client side (string or list), `*` wildcard
//! peer = ":server"                          # server/proxy side: the peer's label
//! sender_id = "hex:01"                      # byte strings: "hex:..." or "ascii:..."
//! recipient_id = "hex:"
//! master_secret = "hex:0102030405060708090a0b0c0d0e0f10"
//! master_salt = "hex:9e7ca92223786340"      # optional
//! id_context = "hex:37cbf3210017a2d3"       # optional
//! algorithm = "AES-CCM-16-64-128"           # optional, COSE name or number
//! hkdf = "sha256"                           # optional, sha256 | sha512
//! replay_window = 32                        # optional, 1..=128
//! persist_key = "..."                       # optional
//! rederive = true                           # optional: may run RFC 8613 App. B.2
//! ```
//!
//! and aiocoap JSON (`{"coap://host/*": {"oscore": {"basedir": "dir/"}}, ":label": ...}`) with
//! aiocoap context directories (`settings.json`, `secret.json`, `sequence.json`).
//!
//! # Durable state
//!
//! A durable store keeps one redb file, [`durable::DB_FILE`], in its state directory, with
//! the reserved upper bound of each context's sender sequence numbers and a replay window
//! snapshot written at clean shutdown ([`ContextStore::shutdown`]). Only one store (one
//! process) may have a directory open at a time. Contexts are keyed by
//! [`ContextMeta::persist_key`], by default derived from ID Context, Sender ID and
//! Recipient ID ([`persist_key_for`]).

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
