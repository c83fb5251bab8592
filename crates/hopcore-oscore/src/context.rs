//! Security Context derivation (RFC 8613 §3) and the per-context cryptographic operations the
//! message layer builds protect/unprotect from.
//!
//! Memory: a [`SecurityContext`] holds its keys inline (no heap, except a present ID Context)
//! and no AES key schedule: the cipher is re-keyed per message. Measured on x86_64:
//! `size_of::<SecurityContext>() == 176` bytes, including the replay window (32 bytes, u128
//! bitmap) and the sender sequence state (24 bytes); a test keeps it at or below 256 bytes.
//! A non-empty ID Context adds one heap allocation of its length.
//!
//! The Master Secret and Master Salt are not kept once the keys are derived (RFC 8613 §3.1:
//! "an endpoint may free up memory by not storing the Master Secret and Master Salt after the
//! other parameters have been derived").

use core::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::alg::{AeadAlgorithm, HkdfAlgorithm, MAX_ID_LEN, MAX_KEY_LEN, MAX_NONCE_LEN};
use crate::cbor::{Head, MAJOR_ARRAY, MAJOR_TSTR, MAJOR_UINT, NULL};
use crate::error::{Error, IdRole};
use crate::nonce::Nonce;
use crate::option::{write_hex, PartialIv};
use crate::replay::ReplayWindow;
use crate::sequence::SenderSequence;

/// The input parameters of a security context (RFC 8613 §3.2).
///
/// `Debug` shows the identifiers and algorithms but never the Master Secret or Master Salt.
#[derive(Clone, Copy)]
pub struct ContextInput<'a> {
    /// Master Secret (RFC 8613 §3.1). Required.
    pub master_secret: &'a [u8],
    /// Master Salt; `None` is the default empty byte string (RFC 8613 §3.2).
    pub master_salt: Option<&'a [u8]>,
    /// Own Sender ID. Required; may be empty (RFC 8613 §3.3).
    pub sender_id: &'a [u8],
    /// The peer's Sender ID. Required; may be empty.
    pub recipient_id: &'a [u8],
    /// ID Context; `None` if not provided (encoded as CBOR nil in the `info`, RFC 8613 §3.2.1),
    /// which differs from a present empty ID Context.
    pub id_context: Option<&'a [u8]>,
    /// AEAD Algorithm; default AES-CCM-16-64-128 (RFC 8613 §3.2).
    pub aead: AeadAlgorithm,
    /// HKDF Algorithm; default HKDF SHA-256 (RFC 8613 §3.2).
    pub hkdf: HkdfAlgorithm,
}

impl<'a> ContextInput<'a> {
    /// The required inputs, with the defaults of RFC 8613 §3.2 for the others.
    pub fn new(master_secret: &'a [u8], sender_id: &'a [u8], recipient_id: &'a [u8]) -> Self {
        ContextInput {
            master_secret,
            master_salt: None,
            sender_id,
            recipient_id,
            id_context: None,
            aead: AeadAlgorithm::default(),
            hkdf: HkdfAlgorithm::default(),
        }
    }

    /// Sets the Master Salt.
    pub fn master_salt(mut self, salt: &'a [u8]) -> Self {
        self.master_salt = Some(salt);
        self
    }

    /// Sets the ID Context.
    pub fn id_context(mut self, id_context: &'a [u8]) -> Self {
        self.id_context = Some(id_context);
        self
    }

    /// Sets the AEAD Algorithm.
    pub fn aead(mut self, aead: AeadAlgorithm) -> Self {
        self.aead = aead;
        self
    }

    /// Sets the HKDF Algorithm.
    pub fn hkdf(mut self, hkdf: HkdfAlgorithm) -> Self {
        self.hkdf = hkdf;
        self
    }
}

impl fmt::Debug for ContextInput<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextInput")
            .field("master_secret", &Redacted(self.master_secret.len()))
            .field("master_salt", &self.master_salt.map(|s| Redacted(s.len())))
            .field("sender_id", &HexBytes(self.sender_id))
            .field("recipient_id", &HexBytes(self.recipient_id))
            .field("id_context", &self.id_context.map(HexBytes))
            .field("aead", &self.aead)
            .field("hkdf", &self.hkdf)
            .finish()
    }
}

/// A Sender or Recipient ID held inline (at most nonce length − 6 = 7 bytes, RFC 8613 §3.3).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub(crate) struct ShortId {
    bytes: [u8; MAX_ID_LEN],
    len: u8,
}

impl ShortId {
    fn new(id: &[u8], role: IdRole, alg: AeadAlgorithm) -> Result<Self, Error> {
        // RFC 8613 §3.3: "The maximum length of Sender ID in bytes equals the length of the AEAD
        // nonce minus 6".
        let max = alg.max_id_len();
        if id.len() > max {
            return Err(Error::IdTooLong { role, len: id.len(), max });
        }
        let mut bytes = [0u8; MAX_ID_LEN];
        bytes[..id.len()].copy_from_slice(id);
        Ok(ShortId { bytes, len: id.len() as u8 })
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// The derived secrets, wiped on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
struct KeyMaterial {
    sender_key: [u8; MAX_KEY_LEN],
    recipient_key: [u8; MAX_KEY_LEN],
    common_iv: [u8; MAX_NONCE_LEN],
}

/// What an HKDF `info` derives (RFC 8613 §3.2.1: type is "Key" or "IV").
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum InfoType {
    Key,
    Iv,
}

/// The serialized `info` (RFC 8613 §3.2.1) in three pieces so the arbitrarily long ID Context
/// need not be copied: `head || id_context || tail`.
///
/// ```text
/// info = [ id : bstr, id_context : bstr / nil, alg_aead : int / tstr, type : tstr, L : uint ]
/// ```
pub(crate) struct Info<'a> {
    head: [u8; 32],
    head_len: usize,
    id_context: &'a [u8],
    tail: [u8; 16],
    tail_len: usize,
}

impl<'a> Info<'a> {
    /// `id` must be at most [`MAX_ID_LEN`] bytes (checked by the caller through [`ShortId`]).
    pub(crate) fn new(id: &ShortId, id_context: Option<&'a [u8]>, alg: AeadAlgorithm, kind: InfoType) -> Self {
        let mut head = [0u8; 32];
        let mut pos = 0;
        let push = |buf: &mut [u8], pos: &mut usize, bytes: &[u8]| {
            buf[*pos..*pos + bytes.len()].copy_from_slice(bytes);
            *pos += bytes.len();
        };
        // RFC 8613 §3.2.1: a CBOR array of 5 elements.
        push(&mut head, &mut pos, Head::new(MAJOR_ARRAY, 5).as_bytes());
        // id : bstr (Sender ID, Recipient ID, or h'' for the Common IV).
        push(&mut head, &mut pos, Head::bstr(id.as_bytes().len()).as_bytes());
        push(&mut head, &mut pos, id.as_bytes());
        // id_context : bstr / nil: "nil if ID Context is not provided".
        match id_context {
            Some(ctx) => push(&mut head, &mut pos, Head::bstr(ctx.len()).as_bytes()),
            None => push(&mut head, &mut pos, &[NULL]),
        }

        let mut tail = [0u8; 16];
        let mut tpos = 0;
        // alg_aead : int, "encoded as defined in [RFC8152]" (COSE ids are small positive ints).
        push(&mut tail, &mut tpos, Head::new(MAJOR_UINT, u64::from(alg.cose_id())).as_bytes());
        // type : tstr, "Key" or "IV" without trailing NUL.
        let (label, len): (&[u8], usize) = match kind {
            InfoType::Key => (b"Key", alg.key_len()),
            InfoType::Iv => (b"IV", alg.nonce_len()),
        };
        push(&mut tail, &mut tpos, Head::new(MAJOR_TSTR, label.len() as u64).as_bytes());
        push(&mut tail, &mut tpos, label);
        // L : uint, key length for keys and *nonce* length for the Common IV.
        push(&mut tail, &mut tpos, Head::new(MAJOR_UINT, len as u64).as_bytes());

        Info { head, head_len: pos, id_context: id_context.unwrap_or(&[]), tail, tail_len: tpos }
    }

    pub(crate) fn parts(&self) -> [&[u8]; 3] {
        [&self.head[..self.head_len], self.id_context, &self.tail[..self.tail_len]]
    }
}

/// An OSCORE security context (RFC 8613 §3.1): Common, Sender and Recipient Context.
///
/// Deliberately not `Clone`: two copies would hand out the same sender sequence numbers and so
/// reuse AEAD nonces (RFC 8613 §7.2). Keys are zeroized on drop and are not shown by `Debug`.
pub struct SecurityContext {
    keys: KeyMaterial,
    sender_id: ShortId,
    recipient_id: ShortId,
    aead: AeadAlgorithm,
    hkdf: HkdfAlgorithm,
    id_context: Option<Box<[u8]>>,
    sequence: SenderSequence,
    replay: ReplayWindow,
}

impl SecurityContext {
    /// Derives Sender Key, Recipient Key and Common IV (RFC 8613 §3.2.1). The sender sequence
    /// number starts at 0 without persistence (§3.2.2) and the replay window is the default
    /// 32-entry window; replace them with [`with_sequence`](Self::with_sequence) and
    /// [`with_replay_window`](Self::with_replay_window).
    pub fn derive(input: &ContextInput<'_>) -> Result<Self, Error> {
        let aead = input.aead;
        let sender_id = ShortId::new(input.sender_id, IdRole::Sender, aead)?;
        let recipient_id = ShortId::new(input.recipient_id, IdRole::Recipient, aead)?;
        // RFC 8613 §3.3: the Sender ID SHALL be unique among contexts with the same Master
        // Secret, Master Salt and ID Context; the peer's context has our Recipient ID as its
        // Sender ID, so equal IDs would give one key and one nonce space for both directions.
        if sender_id == recipient_id {
            return Err(Error::SameSenderAndRecipientId);
        }

        // RFC 8613 §3.2: Master Salt "Default is the empty byte string" (§3.2.1: HKDF then uses
        // a string of zeros).
        let salt = input.master_salt.unwrap_or(&[]);
        let mut keys = KeyMaterial {
            sender_key: [0; MAX_KEY_LEN],
            recipient_key: [0; MAX_KEY_LEN],
            common_iv: [0; MAX_NONCE_LEN],
        };
        let derive = |id: &ShortId, kind: InfoType, out: &mut [u8]| {
            let info = Info::new(id, input.id_context, aead, kind);
            // RFC 8613 §3.2.1: output parameter = HKDF(salt, IKM = Master Secret, info, L).
            input.hkdf.derive(salt, input.master_secret, &info.parts(), out)
        };
        derive(&sender_id, InfoType::Key, &mut keys.sender_key[..aead.key_len()])?;
        derive(&recipient_id, InfoType::Key, &mut keys.recipient_key[..aead.key_len()])?;
        // RFC 8613 §3.2.1: "the empty byte string when deriving the Common IV".
        derive(&ShortId::default(), InfoType::Iv, &mut keys.common_iv[..aead.nonce_len()])?;

        Ok(SecurityContext {
            keys,
            sender_id,
            recipient_id,
            aead,
            hkdf: input.hkdf,
            id_context: input.id_context.map(Box::from),
            sequence: SenderSequence::default(),
            replay: ReplayWindow::default(),
        })
    }

    /// Replaces the sender sequence state (e.g. persistent reservation, or resuming).
    pub fn with_sequence(mut self, sequence: SenderSequence) -> Self {
        self.sequence = sequence;
        self
    }

    /// Replaces the replay window (e.g. another size, or unsynchronized after a reboot).
    pub fn with_replay_window(mut self, replay: ReplayWindow) -> Self {
        self.replay = replay;
        self
    }

    /// The AEAD Algorithm.
    pub fn aead(&self) -> AeadAlgorithm {
        self.aead
    }

    /// The HKDF Algorithm the keys were derived with.
    pub fn hkdf(&self) -> HkdfAlgorithm {
        self.hkdf
    }

    /// Own Sender ID (sent as 'kid' in requests).
    pub fn sender_id(&self) -> &[u8] {
        self.sender_id.as_bytes()
    }

    /// The peer's Sender ID (the 'kid' expected in received requests).
    pub fn recipient_id(&self) -> &[u8] {
        self.recipient_id.as_bytes()
    }

    /// The ID Context, if one was provided (sent as 'kid context' when needed, RFC 8613 §5.1).
    pub fn id_context(&self) -> Option<&[u8]> {
        self.id_context.as_deref()
    }

    /// The Sender Key. Secret: needed only for derivations on top of OSCORE (e.g. Group
    /// OSCORE pairwise keys); never log it.
    pub fn sender_key(&self) -> &[u8] {
        &self.keys.sender_key[..self.aead.key_len()]
    }

    /// The Recipient Key. Secret, see [`sender_key`](Self::sender_key).
    pub fn recipient_key(&self) -> &[u8] {
        &self.keys.recipient_key[..self.aead.key_len()]
    }

    /// The Common IV (nonce length bytes).
    pub fn common_iv(&self) -> &[u8] {
        &self.keys.common_iv[..self.aead.nonce_len()]
    }

    /// The sender sequence state.
    pub fn sequence(&self) -> &SenderSequence {
        &self.sequence
    }

    /// The sender sequence state, mutable (to confirm reservations).
    pub fn sequence_mut(&mut self) -> &mut SenderSequence {
        &mut self.sequence
    }

    /// Takes the next Partial IV from the sender sequence (RFC 8613 §7.2; errors as
    /// [`SenderSequence::next_piv`]).
    pub fn next_partial_iv(&mut self) -> Result<PartialIv, Error> {
        self.sequence.next_piv()
    }

    /// The replay window for received requests.
    pub fn replay_window(&self) -> &ReplayWindow {
        &self.replay
    }

    /// The replay window, mutable (commit after successful decryption, RFC 8613 §7.4).
    pub fn replay_window_mut(&mut self) -> &mut ReplayWindow {
        &mut self.replay
    }

    /// The AEAD nonce for a Partial IV generated by the endpoint with Sender ID `id_piv`
    /// (RFC 8613 §5.2).
    pub fn nonce(&self, id_piv: &[u8], piv: &PartialIv) -> Result<Nonce, Error> {
        Nonce::new(self.common_iv(), id_piv, piv.as_bytes())
    }

    /// Nonce for a Partial IV this endpoint generated (its requests, and its responses that
    /// carry their own Partial IV; RFC 8613 §5.2, C.8).
    pub fn sender_nonce(&self, piv: &PartialIv) -> Result<Nonce, Error> {
        self.nonce(self.sender_id(), piv)
    }

    /// Nonce for a Partial IV the peer generated (received requests, and received responses
    /// with a Partial IV). A response without Partial IV reuses the *request* nonce
    /// (RFC 8613 §5.2, C.7): the client's `sender_nonce`, the server's `recipient_nonce` of
    /// the request's Partial IV.
    pub fn recipient_nonce(&self, piv: &PartialIv) -> Result<Nonce, Error> {
        self.nonce(self.recipient_id(), piv)
    }

    /// Encrypts with the Sender Key (RFC 8613 §5.3, §8.1 step 5). `in_out` is
    /// `plaintext || tag space` (the last `aead().tag_len()` bytes) and becomes the OSCORE
    /// payload `ciphertext || tag`.
    pub fn seal(&self, nonce: &Nonce, aad: &[u8], in_out: &mut [u8]) -> Result<(), Error> {
        self.aead.seal_in_place(self.sender_key(), nonce.as_bytes(), aad, in_out)
    }

    /// Encrypts all of `buf` with the Sender Key and appends the tag.
    pub fn seal_vec(&self, nonce: &Nonce, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), Error> {
        self.aead.seal_vec(self.sender_key(), nonce.as_bytes(), aad, buf)
    }

    /// Verifies and decrypts `ciphertext || tag` in place with the Recipient Key (RFC 8613
    /// §8.2 step 6, §8.4 step 5) and returns the plaintext length. On failure the buffer is
    /// zeroed and the result is [`Error::DecryptFailed`].
    pub fn open(&self, nonce: &Nonce, aad: &[u8], in_out: &mut [u8]) -> Result<usize, Error> {
        self.aead.open_in_place(self.recipient_key(), nonce.as_bytes(), aad, in_out)
    }

    /// Verifies and decrypts `buf` with the Recipient Key, leaving the plaintext.
    pub fn open_vec(&self, nonce: &Nonce, aad: &[u8], buf: &mut Vec<u8>) -> Result<(), Error> {
        self.aead.open_vec(self.recipient_key(), nonce.as_bytes(), aad, buf)
    }
}

impl fmt::Debug for SecurityContext {
    /// Identifiers and algorithm only: no keys, no Common IV.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecurityContext")
            .field("sender_id", &HexBytes(self.sender_id()))
            .field("recipient_id", &HexBytes(self.recipient_id()))
            .field("id_context", &self.id_context().map(HexBytes))
            .field("aead", &self.aead)
            .finish_non_exhaustive()
    }
}

struct HexBytes<'a>(&'a [u8]);

impl fmt::Debug for HexBytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_hex(f, self.0)
    }
}

struct Redacted(usize);

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<redacted {} bytes>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aad::ExternalAad;
    use crate::option::OscoreOption;
    use hex_literal::hex;
    use proptest::prelude::*;

    const MASTER_SECRET: [u8; 16] = hex!("0102030405060708090a0b0c0d0e0f10");
    const MASTER_SALT: [u8; 8] = hex!("9e7ca92223786340");
    const ID_CONTEXT: [u8; 8] = hex!("37cbf3210017a2d3");

    fn info_bytes(id: &[u8], id_context: Option<&[u8]>, kind: InfoType) -> Vec<u8> {
        let id = ShortId::new(id, IdRole::Sender, AeadAlgorithm::AesCcm16_64_128).unwrap();
        Info::new(&id, id_context, AeadAlgorithm::AesCcm16_64_128, kind).parts().concat()
    }

    struct KdfVector {
        input: ContextInput<'static>,
        info_sender_key: &'static [u8],
        info_recipient_key: &'static [u8],
        info_common_iv: &'static [u8],
        sender_key: &'static [u8],
        recipient_key: &'static [u8],
        common_iv: &'static [u8],
        sender_nonce: &'static [u8],
        recipient_nonce: &'static [u8],
    }

    fn check_kdf(v: &KdfVector) {
        let i = &v.input;
        assert_eq!(info_bytes(i.sender_id, i.id_context, InfoType::Key), v.info_sender_key);
        assert_eq!(info_bytes(i.recipient_id, i.id_context, InfoType::Key), v.info_recipient_key);
        assert_eq!(info_bytes(&[], i.id_context, InfoType::Iv), v.info_common_iv);
        let ctx = SecurityContext::derive(i).unwrap();
        assert_eq!(ctx.sender_key(), v.sender_key);
        assert_eq!(ctx.recipient_key(), v.recipient_key);
        assert_eq!(ctx.common_iv(), v.common_iv);
        let piv0 = PartialIv::from_sequence(0).unwrap();
        assert_eq!(ctx.sender_nonce(&piv0).unwrap().as_bytes(), v.sender_nonce);
        assert_eq!(ctx.recipient_nonce(&piv0).unwrap().as_bytes(), v.recipient_nonce);
    }

    fn c1_client() -> ContextInput<'static> {
        ContextInput::new(&MASTER_SECRET, &[], &[0x01]).master_salt(&MASTER_SALT)
    }
    fn c1_server() -> ContextInput<'static> {
        ContextInput::new(&MASTER_SECRET, &[0x01], &[]).master_salt(&MASTER_SALT)
    }
    fn c2_client() -> ContextInput<'static> {
        ContextInput::new(&MASTER_SECRET, &[0x00], &[0x01])
    }
    fn c2_server() -> ContextInput<'static> {
        ContextInput::new(&MASTER_SECRET, &[0x01], &[0x00])
    }
    fn c3_client() -> ContextInput<'static> {
        c1_client().id_context(&ID_CONTEXT)
    }
    fn c3_server() -> ContextInput<'static> {
        c1_server().id_context(&ID_CONTEXT)
    }

    #[test]
    fn rfc8613_c1_1_client_with_master_salt() {
        check_kdf(&KdfVector {
            input: c1_client(),
            info_sender_key: &hex!("8540f60a634b657910"),
            info_recipient_key: &hex!("854101f60a634b657910"),
            info_common_iv: &hex!("8540f60a6249560d"),
            sender_key: &hex!("f0910ed7295e6ad4b54fc793154302ff"),
            recipient_key: &hex!("ffb14e093c94c9cac9471648b4f98710"),
            common_iv: &hex!("4622d4dd6d944168eefb54987c"),
            sender_nonce: &hex!("4622d4dd6d944168eefb54987c"),
            recipient_nonce: &hex!("4722d4dd6d944169eefb54987c"),
        });
    }

    #[test]
    fn rfc8613_c1_2_server_with_master_salt() {
        check_kdf(&KdfVector {
            input: c1_server(),
            info_sender_key: &hex!("854101f60a634b657910"),
            info_recipient_key: &hex!("8540f60a634b657910"),
            info_common_iv: &hex!("8540f60a6249560d"),
            sender_key: &hex!("ffb14e093c94c9cac9471648b4f98710"),
            recipient_key: &hex!("f0910ed7295e6ad4b54fc793154302ff"),
            common_iv: &hex!("4622d4dd6d944168eefb54987c"),
            sender_nonce: &hex!("4722d4dd6d944169eefb54987c"),
            recipient_nonce: &hex!("4622d4dd6d944168eefb54987c"),
        });
    }

    #[test]
    fn rfc8613_c2_1_client_without_master_salt() {
        check_kdf(&KdfVector {
            input: c2_client(),
            info_sender_key: &hex!("854100f60a634b657910"),
            info_recipient_key: &hex!("854101f60a634b657910"),
            info_common_iv: &hex!("8540f60a6249560d"),
            sender_key: &hex!("321b26943253c7ffb6003b0b64d74041"),
            recipient_key: &hex!("e57b5635815177cd679ab4bcec9d7dda"),
            common_iv: &hex!("be35ae297d2dace910c52e99f9"),
            sender_nonce: &hex!("bf35ae297d2dace910c52e99f9"),
            recipient_nonce: &hex!("bf35ae297d2dace810c52e99f9"),
        });
    }

    #[test]
    fn rfc8613_c2_2_server_without_master_salt() {
        check_kdf(&KdfVector {
            input: c2_server(),
            info_sender_key: &hex!("854101f60a634b657910"),
            info_recipient_key: &hex!("854100f60a634b657910"),
            info_common_iv: &hex!("8540f60a6249560d"),
            sender_key: &hex!("e57b5635815177cd679ab4bcec9d7dda"),
            recipient_key: &hex!("321b26943253c7ffb6003b0b64d74041"),
            common_iv: &hex!("be35ae297d2dace910c52e99f9"),
            sender_nonce: &hex!("bf35ae297d2dace810c52e99f9"),
            recipient_nonce: &hex!("bf35ae297d2dace910c52e99f9"),
        });
    }

    #[test]
    fn rfc8613_c3_1_client_with_id_context() {
        check_kdf(&KdfVector {
            input: c3_client(),
            info_sender_key: &hex!("85404837cbf3210017a2d30a634b657910"),
            info_recipient_key: &hex!("8541014837cbf3210017a2d30a634b657910"),
            info_common_iv: &hex!("85404837cbf3210017a2d30a6249560d"),
            sender_key: &hex!("af2a1300a5e95788b356336eeecd2b92"),
            recipient_key: &hex!("e39a0c7c77b43f03b4b39ab9a268699f"),
            common_iv: &hex!("2ca58fb85ff1b81c0b7181b85e"),
            sender_nonce: &hex!("2ca58fb85ff1b81c0b7181b85e"),
            recipient_nonce: &hex!("2da58fb85ff1b81d0b7181b85e"),
        });
    }

    #[test]
    fn rfc8613_c3_2_server_with_id_context() {
        check_kdf(&KdfVector {
            input: c3_server(),
            info_sender_key: &hex!("8541014837cbf3210017a2d30a634b657910"),
            info_recipient_key: &hex!("85404837cbf3210017a2d30a634b657910"),
            info_common_iv: &hex!("85404837cbf3210017a2d30a6249560d"),
            sender_key: &hex!("e39a0c7c77b43f03b4b39ab9a268699f"),
            recipient_key: &hex!("af2a1300a5e95788b356336eeecd2b92"),
            common_iv: &hex!("2ca58fb85ff1b81c0b7181b85e"),
            sender_nonce: &hex!("2da58fb85ff1b81d0b7181b85e"),
            recipient_nonce: &hex!("2ca58fb85ff1b81c0b7181b85e"),
        });
    }

    #[test]
    fn absent_and_empty_id_context_differ() {
        // test-vectors §8.1: nil (f6) vs present-but-empty (40).
        assert_eq!(info_bytes(&[], None, InfoType::Iv), hex!("8540f60a6249560d"));
        assert_eq!(info_bytes(&[], Some(&[]), InfoType::Iv), hex!("8540400a6249560d"));
        let absent = SecurityContext::derive(&c1_client()).unwrap();
        let empty = SecurityContext::derive(&c1_client().id_context(&[])).unwrap();
        assert_ne!(absent.sender_key(), empty.sender_key());
        assert_ne!(absent.common_iv(), empty.common_iv());
        assert_eq!(empty.id_context(), Some(&[][..]));
        assert_eq!(absent.id_context(), None);
    }

    /// Keys for the other algorithms and HKDF SHA-512, with the C.3 inputs. Not from the RFC:
    /// computed with an independent Python implementation (stdlib `hmac`, hand-written CBOR).
    #[test]
    fn other_algorithms_and_sha512_cross_check() {
        struct V {
            aead: AeadAlgorithm,
            hkdf: HkdfAlgorithm,
            sk: &'static [u8],
            rk: &'static [u8],
            iv: &'static [u8],
        }
        use AeadAlgorithm::*;
        use HkdfAlgorithm::*;
        let vectors = [
            V {
                aead: A128Gcm,
                hkdf: Sha256,
                sk: &hex!("2fece337fda55184c0539b4a916c9349"),
                rk: &hex!("164ad7f3b84e13ffa6e063a960121498"),
                iv: &hex!("c28c2c8d66cec23246d0618d"),
            },
            V {
                aead: A128Gcm,
                hkdf: Sha512,
                sk: &hex!("2ec47f1dbddded9f1dab8dd1ae056a31"),
                rk: &hex!("ab679ee705d258108d8a2f88a35f05a7"),
                iv: &hex!("fb18f076191673a22ca14ac9"),
            },
            V {
                aead: A256Gcm,
                hkdf: Sha256,
                sk: &hex!("b4a9ec6af28bb9dbb042a06ebd96cf14ca6ea3fccc48b3f991b89da906efe6de"),
                rk: &hex!("6fb0cfab40239fbf7842d8da02c1b33157404ad32d2460b68a6cc02431ae38f4"),
                iv: &hex!("1a92aa81af827e27c4875c5b"),
            },
            V {
                aead: A256Gcm,
                hkdf: Sha512,
                sk: &hex!("29be62f2e751b5224dfa518ee9e0389380b804cb6ac31147fd479e613afce6fc"),
                rk: &hex!("68458de7b5a6d12940f5d021c7136c29fb82e8c8834e84354cad2bb6beb3b855"),
                iv: &hex!("5e8127d7569c7f17dfa15e03"),
            },
            V {
                aead: ChaCha20Poly1305,
                hkdf: Sha256,
                sk: &hex!("ad8baa1c94e817e2950bf7633d4f14940a060c95870512a8a40bd82a0ddd4527"),
                rk: &hex!("4fb1cc766bb43b030e767be90e0c3bf190dbf24471418bfb98d42e91e6b44cfc"),
                iv: &hex!("c7b2915f2f853175842549d4"),
            },
            V {
                aead: ChaCha20Poly1305,
                hkdf: Sha512,
                sk: &hex!("6b70a3aa03fbdafa3930d18c6e7feed5302687f93f12c6dd1be4a78e25a31221"),
                rk: &hex!("4389e3ff020f2a0a5a12ac34c982a0e798dd7253ef5c9eb79740502d7a98e4f9"),
                iv: &hex!("0fba79aa4f779861887c19b4"),
            },
            V {
                aead: AesCcm16_64_128,
                hkdf: Sha512,
                sk: &hex!("e2dd757ad5c4cb1fabc31871e34c679d"),
                rk: &hex!("5c7c4ea48d0028d72fb92c0c96a36b88"),
                iv: &hex!("15b4ff9928ed72b7898187f371"),
            },
        ];
        for v in vectors {
            let ctx = SecurityContext::derive(&c3_client().aead(v.aead).hkdf(v.hkdf)).unwrap();
            assert_eq!(ctx.sender_key(), v.sk, "{:?} {:?}", v.aead, v.hkdf);
            assert_eq!(ctx.recipient_key(), v.rk, "{:?} {:?}", v.aead, v.hkdf);
            assert_eq!(ctx.common_iv(), v.iv, "{:?} {:?}", v.aead, v.hkdf);
            assert_eq!(ctx.hkdf(), v.hkdf);
        }
    }

    #[test]
    fn long_id_context_uses_two_byte_bstr_head() {
        // 300-byte ID Context → bstr head 59 012c. Cross-checked with the same Python script.
        let ctx: Vec<u8> = (0..=255u8).chain(0..44).collect();
        let input = ContextInput::new(&MASTER_SECRET, &[0x07], &[]).id_context(&ctx);
        let id = ShortId::new(&[0x07], IdRole::Sender, AeadAlgorithm::default()).unwrap();
        let info = Info::new(&id, Some(&ctx), AeadAlgorithm::default(), InfoType::Key);
        assert_eq!(info.parts()[0], hex!("85410759012c"));
        let derived = SecurityContext::derive(&input).unwrap();
        assert_eq!(derived.sender_key(), hex!("fdab454ed9f0b808ebe6a7d3c84bd206"));
    }

    #[test]
    fn id_length_limits() {
        // RFC 8613 §3.3: 7 bytes for AES-CCM-16-64-128, 6 for the 12-byte-nonce algorithms.
        let seven = [1u8; 7];
        let eight = [2u8; 8];
        assert!(SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, &seven, &[])).is_ok());
        assert_eq!(
            SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, &eight, &[])).err(),
            Some(Error::IdTooLong { role: IdRole::Sender, len: 8, max: 7 })
        );
        assert_eq!(
            SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, &[], &eight)).err(),
            Some(Error::IdTooLong { role: IdRole::Recipient, len: 8, max: 7 })
        );
        for alg in [AeadAlgorithm::A128Gcm, AeadAlgorithm::A256Gcm, AeadAlgorithm::ChaCha20Poly1305] {
            assert!(SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, &[], &seven[..6]).aead(alg)).is_ok());
            assert_eq!(
                SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, &seven, &[]).aead(alg)).err(),
                Some(Error::IdTooLong { role: IdRole::Sender, len: 7, max: 6 })
            );
        }
        assert_eq!(
            SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, &[5], &[5])).err(),
            Some(Error::SameSenderAndRecipientId)
        );
    }

    #[test]
    fn debug_shows_ids_but_no_secrets() {
        let ctx = SecurityContext::derive(&c3_client()).unwrap();
        let dbg = format!("{ctx:?}");
        assert!(dbg.contains("sender_id: h''"), "{dbg}");
        assert!(dbg.contains("recipient_id: h'01'"), "{dbg}");
        assert!(dbg.contains("id_context: Some(h'37cbf3210017a2d3')"), "{dbg}");
        let alt = format!("{ctx:#?}");
        for secret in [ctx.sender_key(), ctx.recipient_key(), ctx.common_iv()] {
            let hex: String = secret.iter().map(|b| format!("{b:02x}")).collect();
            let dec = format!("{secret:?}");
            for out in [&dbg, &alt] {
                assert!(!out.contains(&hex[..8]), "{out}");
                assert!(!out.contains(&dec[1..dec.len() - 1]), "{out}");
            }
        }
        let input_dbg = format!("{:?}", c3_client());
        assert!(input_dbg.contains("<redacted 16 bytes>"), "{input_dbg}");
        assert!(!input_dbg.contains("0102030405"), "{input_dbg}");
        assert!(!input_dbg.contains("1, 2, 3, 4"), "{input_dbg}");
    }

    #[test]
    fn key_material_is_zeroize_on_drop() {
        fn assert_zeroize_on_drop<T: ZeroizeOnDrop>() {}
        assert_zeroize_on_drop::<KeyMaterial>();
        // And zeroize() really wipes all three fields.
        let ctx = SecurityContext::derive(&c1_client()).unwrap();
        let mut keys = KeyMaterial {
            sender_key: ctx.keys.sender_key,
            recipient_key: ctx.keys.recipient_key,
            common_iv: ctx.keys.common_iv,
        };
        assert_ne!(keys.sender_key, [0; MAX_KEY_LEN]);
        keys.zeroize();
        assert_eq!(keys.sender_key, [0; MAX_KEY_LEN]);
        assert_eq!(keys.recipient_key, [0; MAX_KEY_LEN]);
        assert_eq!(keys.common_iv, [0; MAX_NONCE_LEN]);
    }

    #[test]
    fn size_budget() {
        let size = core::mem::size_of::<SecurityContext>();
        // Documented in the module header; proxy budget is 256 bytes per context.
        assert!(size <= 256, "SecurityContext is {size} bytes");
        #[cfg(target_pointer_width = "64")]
        assert_eq!(size, 176, "update the documented size in context.rs");
    }

    // --- RFC 8613 C.4–C.8: nonce, AAD, option value and ciphertext from the plaintext. ---

    /// Client side of a request: what the message layer's protect() will do.
    fn protect_request(
        ctx: &mut SecurityContext,
        plaintext: &[u8],
        with_kid_context: bool,
    ) -> (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>) {
        let piv = ctx.next_partial_iv().unwrap();
        let nonce = ctx.sender_nonce(&piv).unwrap();
        let mut aad = Vec::new();
        ExternalAad::new(ctx.aead(), ctx.sender_id(), piv.as_bytes()).write_aad_to_vec(&mut aad).unwrap();
        let mut option = Vec::new();
        let kid_context = if with_kid_context { ctx.id_context() } else { None };
        OscoreOption::request(piv, ctx.sender_id(), kid_context).encode_to_vec(&mut option).unwrap();
        let mut payload = plaintext.to_vec();
        ctx.seal_vec(&nonce, &aad, &mut payload).unwrap();
        (nonce.as_bytes().to_vec(), aad, option, payload)
    }

    /// Server side: parse option, check replay, decrypt, commit.
    fn unprotect_request(ctx: &mut SecurityContext, option: &[u8], payload: &[u8]) -> Vec<u8> {
        let opt = OscoreOption::parse(option).unwrap();
        let piv = opt.partial_iv.unwrap();
        let kid = opt.kid.unwrap();
        assert_eq!(kid, ctx.recipient_id());
        let seq = piv.to_sequence();
        ctx.replay_window().check(seq).unwrap();
        let nonce = ctx.recipient_nonce(&piv).unwrap();
        let mut aad = Vec::new();
        ExternalAad::new(ctx.aead(), kid, piv.as_bytes()).write_aad_to_vec(&mut aad).unwrap();
        let mut buf = payload.to_vec();
        ctx.open_vec(&nonce, &aad, &mut buf).unwrap();
        ctx.replay_window_mut().commit(seq).unwrap();
        buf
    }

    const REQUEST_PLAINTEXT: [u8; 5] = hex!("01b3747631");
    const RESPONSE_PLAINTEXT: [u8; 14] = hex!("45ff48656c6c6f20576f726c6421");

    #[test]
    fn rfc8613_c4_request_client() {
        let mut client = SecurityContext::derive(&c1_client()).unwrap().with_sequence(SenderSequence::volatile(20));
        let (nonce, aad, option, payload) = protect_request(&mut client, &REQUEST_PLAINTEXT, false);
        assert_eq!(nonce, hex!("4622d4dd6d944168eefb549868"));
        assert_eq!(aad, hex!("8368456e63727970743040488501810a40411440"));
        assert_eq!(option, hex!("0914"));
        assert_eq!(payload, hex!("612f1092f1776f1c1668b3825e"));

        let mut server = SecurityContext::derive(&c1_server()).unwrap();
        assert_eq!(unprotect_request(&mut server, &option, &payload), REQUEST_PLAINTEXT);
        // The same request again is a replay (RFC 8613 §7.4).
        assert_eq!(server.replay_window().check(20), Err(Error::Replay { seq: 20 }));
    }

    #[test]
    fn rfc8613_c5_request_client() {
        let mut client = SecurityContext::derive(&c2_client()).unwrap().with_sequence(SenderSequence::volatile(20));
        let (nonce, aad, option, payload) = protect_request(&mut client, &REQUEST_PLAINTEXT, false);
        assert_eq!(nonce, hex!("bf35ae297d2dace910c52e99ed"));
        assert_eq!(aad, hex!("8368456e63727970743040498501810a4100411440"));
        assert_eq!(option, hex!("091400"));
        assert_eq!(payload, hex!("4ed339a5a379b0b8bc731fffb0"));

        let mut server = SecurityContext::derive(&c2_server()).unwrap();
        assert_eq!(unprotect_request(&mut server, &option, &payload), REQUEST_PLAINTEXT);
    }

    #[test]
    fn rfc8613_c6_request_client_with_kid_context() {
        let mut client = SecurityContext::derive(&c3_client()).unwrap().with_sequence(SenderSequence::volatile(20));
        let (nonce, aad, option, payload) = protect_request(&mut client, &REQUEST_PLAINTEXT, true);
        assert_eq!(nonce, hex!("2ca58fb85ff1b81c0b7181b84a"));
        assert_eq!(aad, hex!("8368456e63727970743040488501810a40411440"));
        assert_eq!(option, hex!("19140837cbf3210017a2d3"));
        assert_eq!(payload, hex!("72cd7273fd331ac45cffbe55c3"));

        let mut server = SecurityContext::derive(&c3_server()).unwrap();
        let parsed = OscoreOption::parse(&option).unwrap();
        assert_eq!(parsed.kid_context, server.id_context());
        assert_eq!(unprotect_request(&mut server, &option, &payload), REQUEST_PLAINTEXT);
    }

    #[test]
    fn rfc8613_c7_response_without_piv() {
        let server = SecurityContext::derive(&c1_server()).unwrap();
        // The request of C.4: kid h'', PIV 14.
        let request_piv = PartialIv::from_bytes(&[0x14]).unwrap();
        // RFC 8613 §5.2: no PIV in the response → the request nonce (ID_PIV = client's id).
        let nonce = server.recipient_nonce(&request_piv).unwrap();
        assert_eq!(nonce.as_bytes(), hex!("4622d4dd6d944168eefb549868"));
        let mut aad = Vec::new();
        ExternalAad::new(server.aead(), &[], request_piv.as_bytes()).write_aad_to_vec(&mut aad).unwrap();
        assert_eq!(aad, hex!("8368456e63727970743040488501810a40411440"));
        let mut option = Vec::new();
        OscoreOption::default().encode_to_vec(&mut option).unwrap();
        assert!(option.is_empty());
        let mut payload = RESPONSE_PLAINTEXT.to_vec();
        server.seal_vec(&nonce, &aad, &mut payload).unwrap();
        assert_eq!(payload, hex!("dbaad1e9a7e7b2a813d3c31524378303cdafae119106"));

        // Client: verify with its Recipient Key, the nonce of its own request.
        let client = SecurityContext::derive(&c1_client()).unwrap();
        assert_eq!(OscoreOption::parse(&option), Ok(OscoreOption::default()));
        let nonce = client.sender_nonce(&request_piv).unwrap();
        client.open_vec(&nonce, &aad, &mut payload).unwrap();
        assert_eq!(payload, RESPONSE_PLAINTEXT);
    }

    #[test]
    fn rfc8613_c8_response_with_piv() {
        let mut server = SecurityContext::derive(&c1_server()).unwrap();
        let request_piv = PartialIv::from_bytes(&[0x14]).unwrap();
        // The server's own sequence number 0 → PIV 00, nonce from the server's Sender ID 01.
        let piv = server.next_partial_iv().unwrap();
        let nonce = server.sender_nonce(&piv).unwrap();
        assert_eq!(nonce.as_bytes(), hex!("4722d4dd6d944169eefb54987c"));
        // AAD still binds the request's kid and PIV (RFC 8613 §5.4).
        let mut aad = Vec::new();
        ExternalAad::new(server.aead(), &[], request_piv.as_bytes()).write_aad_to_vec(&mut aad).unwrap();
        assert_eq!(aad, hex!("8368456e63727970743040488501810a40411440"));
        let mut option = Vec::new();
        OscoreOption { partial_iv: Some(piv), ..Default::default() }.encode_to_vec(&mut option).unwrap();
        assert_eq!(option, hex!("0100"));
        let mut payload = RESPONSE_PLAINTEXT.to_vec();
        server.seal_vec(&nonce, &aad, &mut payload).unwrap();
        assert_eq!(payload, hex!("4d4c13669384b67354b2b6175ff4b8658c666a6cf88e"));

        let client = SecurityContext::derive(&c1_client()).unwrap();
        let parsed = OscoreOption::parse(&option).unwrap();
        let nonce = client.recipient_nonce(&parsed.partial_iv.unwrap()).unwrap();
        client.open_vec(&nonce, &aad, &mut payload).unwrap();
        assert_eq!(payload, RESPONSE_PLAINTEXT);
    }

    #[test]
    fn wrong_aad_or_context_fails_and_does_not_advance_window() {
        let mut client = SecurityContext::derive(&c1_client()).unwrap().with_sequence(SenderSequence::volatile(20));
        let (_, _, option, payload) = protect_request(&mut client, &REQUEST_PLAINTEXT, false);
        // A server whose context uses another salt cannot verify.
        let mut other =
            SecurityContext::derive(&ContextInput::new(&MASTER_SECRET, &[0x01], &[]).master_salt(b"other")).unwrap();
        let piv = OscoreOption::parse(&option).unwrap().partial_iv.unwrap();
        other.replay_window().check(piv.to_sequence()).unwrap();
        let nonce = other.recipient_nonce(&piv).unwrap();
        let mut aad = Vec::new();
        ExternalAad::new(other.aead(), &[], piv.as_bytes()).write_aad_to_vec(&mut aad).unwrap();
        let mut buf = payload.clone();
        assert_eq!(other.open_vec(&nonce, &aad, &mut buf), Err(Error::DecryptFailed));
        assert_eq!(other.replay_window().highest(), None);
        assert!(other.replay_window_mut().check(20).is_ok());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// protect → unprotect for all four algorithms, both HKDFs, random ids and payloads.
        #[test]
        fn protect_unprotect_roundtrip_all_algorithms(
            sha512 in any::<bool>(),
            secret in proptest::collection::vec(any::<u8>(), 1..48),
            salt in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..16)),
            id_context in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            client_id in proptest::collection::vec(any::<u8>(), 0..=6),
            server_id in proptest::collection::vec(any::<u8>(), 0..=6),
            start in 0u64..(1 << 40) - 4,
            plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            prop_assume!(client_id != server_id);
            for alg in AeadAlgorithm::ALL {
                let hkdf = if sha512 { HkdfAlgorithm::Sha512 } else { HkdfAlgorithm::Sha256 };
                let mk = |sid: &[u8], rid: &[u8]| {
                    let mut input = ContextInput::new(&secret, sid, rid).aead(alg).hkdf(hkdf);
                    input.master_salt = salt.as_deref();
                    input.id_context = id_context.as_deref();
                    SecurityContext::derive(&input).unwrap()
                };
                let mut client = mk(&client_id, &server_id)
                    .with_sequence(SenderSequence::volatile(start));
                let mut server = mk(&server_id, &client_id);
                prop_assert_eq!(client.sender_key(), server.recipient_key());
                prop_assert_eq!(client.common_iv(), server.common_iv());

                let (_, _, option, payload) = protect_request(&mut client, &plaintext, true);
                prop_assert_eq!(payload.len(), plaintext.len() + alg.tag_len());
                prop_assert_eq!(unprotect_request(&mut server, &option, &payload), plaintext.clone());

                // Response with the server's own PIV, verified by the client.
                let request = OscoreOption::parse(&option).unwrap();
                let request_piv = request.partial_iv.unwrap();
                let piv = server.next_partial_iv().unwrap();
                let nonce = server.sender_nonce(&piv).unwrap();
                let mut aad = [0u8; 64];
                let aad_len = ExternalAad::new(alg, request.kid.unwrap(), request_piv.as_bytes())
                    .write_aad(&mut aad).unwrap();
                let mut in_out = plaintext.clone();
                in_out.resize(plaintext.len() + alg.tag_len(), 0);
                server.seal(&nonce, &aad[..aad_len], &mut in_out).unwrap();
                let client_nonce = client.recipient_nonce(&piv).unwrap();
                let len = client.open(&client_nonce, &aad[..aad_len], &mut in_out).unwrap();
                prop_assert_eq!(&in_out[..len], &plaintext[..]);

                // Any flipped bit is rejected.
                let mut tampered = payload.clone();
                let idx = plaintext.len() / 2;
                tampered[idx] ^= 0x10;
                let mut aad_req = Vec::new();
                ExternalAad::new(alg, request.kid.unwrap(), request_piv.as_bytes())
                    .write_aad_to_vec(&mut aad_req).unwrap();
                let req_nonce = server.recipient_nonce(&request_piv).unwrap();
                prop_assert_eq!(server.open_vec(&req_nonce, &aad_req, &mut tampered), Err(Error::DecryptFailed));
            }
        }
    }
}
