//! Sans-I/O OSCORE (RFC 8613): the cryptographic core and the message-level layer.
//!
//! The core modules know nothing about CoAP message encoding; they are the pieces the
//! message-level protect/unprotect ([`protect`], on `hopcore_codec::Message`) is built from:
//!
//! - [`alg`]: AEAD algorithms by COSE id and HKDF (RFC 8613 §3.1, §3.2);
//! - [`context`]: [`SecurityContext`] derivation (§3.2) and per-context seal/open;
//! - [`nonce`]: AEAD nonce construction (§5.2);
//! - [`aad`]: `aad_array` and the `Enc_structure` AAD (§5.4);
//! - [`option`]: the OSCORE option value (§6.1) and Partial IV encoding (§5);
//! - [`replay`]: the replay window (§7.4);
//! - [`sequence`]: the sender sequence number with App. B.1.1 reservation (§7.2);
//! - [`protect`]: the message-level layer on top of them (§4-§8): [`protect_request`],
//!   [`unprotect_request`], [`protect_response`], [`unprotect_response`], [`error_response`].
//!
//! Protecting a request (client) with the bare pieces (the [`protect`] module does all of this,
//! plus the option split, for whole messages):
//!
//! ```
//! use hopcore_oscore::{ContextInput, ExternalAad, OscoreOption, SecurityContext};
//!
//! # fn main() -> Result<(), hopcore_oscore::Error> {
//! let secret = [0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08,
//!               0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f, 0x10];
//! let mut client = SecurityContext::derive(&ContextInput::new(&secret, &[], &[0x01]))?;
//! let mut server = SecurityContext::derive(&ContextInput::new(&secret, &[0x01], &[]))?;
//!
//! // Client: protect. The plaintext (code, Class E options, payload) comes from the codec.
//! let piv = client.next_partial_iv()?;
//! let nonce = client.sender_nonce(&piv)?;
//! let mut aad = [0u8; 64];
//! let aad_len = ExternalAad::new(client.aead(), client.sender_id(), piv.as_bytes())
//!     .write_aad(&mut aad)?;
//! let mut option = Vec::new();
//! OscoreOption::request(piv, client.sender_id(), None).encode_to_vec(&mut option)?;
//! let mut payload = vec![0x01, 0xb3, b't', b'v', b'1'];
//! client.seal_vec(&nonce, &aad[..aad_len], &mut payload)?;
//!
//! // Server: unprotect. Check the replay window before, commit only after decryption.
//! let opt = OscoreOption::parse(&option)?;
//! let (Some(piv), Some(kid)) = (opt.partial_iv, opt.kid) else { unreachable!() };
//! server.replay_window().check(piv.to_sequence())?;
//! let nonce = server.recipient_nonce(&piv)?;
//! let aad_len = ExternalAad::new(server.aead(), kid, piv.as_bytes()).write_aad(&mut aad)?;
//! server.open_vec(&nonce, &aad[..aad_len], &mut payload)?;
//! server.replay_window_mut().commit(piv.to_sequence())?;
//! assert_eq!(payload, [0x01, 0xb3, b't', b'v', b'1']);
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod aad;
pub mod alg;
mod cbor;
pub mod context;
pub mod error;
pub mod nonce;
pub mod option;
pub mod protect;
pub mod replay;
pub mod sequence;

pub use aad::{ExternalAad, ENC_STRUCTURE_PREFIX, OSCORE_VERSION};
pub use alg::{AeadAlgorithm, HkdfAlgorithm, MAX_ID_LEN, MAX_KEY_LEN, MAX_NONCE_LEN, MAX_TAG_LEN};
pub use context::{ContextInput, SecurityContext};
pub use error::{Error, IdRole, OptionError, OptionField};
pub use nonce::Nonce;
pub use option::{OscoreOption, PartialIv, MAX_KID_CONTEXT_LEN, MAX_PIV_LEN, MAX_SEQUENCE_NUMBER};
pub use protect::{
    error_response, protect_request, protect_response, unprotect_request, unprotect_response, ClassPolicy, Layer,
    MessageKind, NestedClasses, ProtectError, RegistryClasses, RequestBinding, RequestInfo, Rfc8613Classes,
    UnprotectError, UnverifiedRequest,
};
pub use replay::{ReplayWindow, DEFAULT_REPLAY_WINDOW, MAX_REPLAY_WINDOW};
pub use sequence::SenderSequence;
