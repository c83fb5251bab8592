//! Credentials files: which security context to use for which peer.
//!
//! [`Credentials::load`] reads one of two formats, chosen by the file extension:
//!
//! - **`.toml`: the hopcore format** (below, and `credentials.example.toml` next to this
//!   crate's `Cargo.toml`);
//! - **`.json`: aiocoap's credentials map** with aiocoap context directories.
//!
//! [`Credentials::into_store`] derives the contexts into a [`ContextStore`] and returns a
//! [`CredentialIndex`] that maps request URIs (client side) and peer labels (server and proxy
//! side) to [`ContextId`]s.
//!
//! # The hopcore TOML format
//!
//! ```toml
//! # Optional. Where the durable state lives (sequence number reservations, RFC 8613
//! # App. B.1); relative to this file's directory. Overridden by the `state_dir` argument of
//! # `into_store`; without either the store is volatile.
//! state_dir = "state"
//!
//! [[context]]
//! # Selectors, each a string or a list of strings, both optional:
//! uri = "coap://127.0.0.1:5683/*"   # client side: request URIs this context protects
//! peer = ":server"                  # server/proxy side: the peer's label (its identity)
//!
//! # Byte strings are "hex:<hex digits>" or "ascii:<text>"; "hex:" is the empty string.
//! sender_id = "hex:01"              # required
//! recipient_id = "hex:"             # required
//! master_secret = "hex:0102030405060708090a0b0c0d0e0f10"   # required
//! master_salt = "hex:9e7ca92223786340"                     # optional, default empty
//! id_context = "hex:37cbf3210017a2d3"                      # optional, default absent
//!
//! algorithm = "AES-CCM-16-64-128"   # optional: COSE name or number (10, 1, 3, 24)
//! hkdf = "sha256"                   # optional: "sha256" or "sha512"
//! replay_window = 32                # optional: 1..=128
//! persist_key = "gateway-1"         # optional: key of the durable state (default: derived
//!                                   # from id_context, sender_id and recipient_id)
//! rederive = true                   # optional, default false: may be re-derived with
//!                                   # RFC 8613 App. B.2 (random ID Contexts R1, R2, R3)
//! ```
//!
//! `rederive = true` marks a context whose peer runs RFC 8613 Appendix B.2 too (see
//! [`crate::rederive`]). A server then answers a request that names the context's Recipient ID
//! with a 'kid context' it does not know (request #1 or #2 of B.2) with the procedure instead
//! of 4.01 "Security context not found", and starts it itself when the context's sequence
//! numbers are exhausted, its replay window was lost, or the client still uses the
//! preestablished context after an earlier run; a client completes a run the server starts
//! and may start one itself (`hopcore get --rederive`). The re-derived context replaces the
//! preestablished one in the store only for the life of the process: it has no durable state
//! (its keys come from fresh random ID Contexts), and after a restart the preestablished
//! context from this file is used again.
//!
//! Unknown keys are errors (a typo must not silently drop a setting). URI patterns use `*` as
//! a wildcard for any run of characters and must match the whole URI; when several match,
//! the longest pattern wins (as in aiocoap). A context's label (shown to applications and
//! logs) is its first `peer`, else its first `uri`, else `context[N]`.
//!
//! # The aiocoap JSON format
//!
//! ```json
//! {
//!   "coap://127.0.0.1:5683/*": {"oscore": {"basedir": "client/"}},
//!   ":client1": {"oscore": {"basedir": "server/"}},
//!   "coap://localhost/*": ":client1"
//! }
//! ```
//!
//! Keys starting with `:` are peer labels, the others URI patterns; a string value refers to
//! another key. Only `oscore` credentials are supported; other types are errors. Entries
//! pointing to the same directory share one context (two copies would reuse nonces).
//!
//! A context directory holds `settings.json` and `secret.json` (either may be missing; a key
//! may not be in both) with `sender-id`, `recipient-id`, `secret`, `salt`, `id-context`
//! (each written with a `_hex` or `_ascii` suffix), `algorithm` (aiocoap's names:
//! `AES-CCM-16-64-128`, `A128GCM`, `A256GCM`, `ChaCha20/Poly1305`), `kdf-hashfun` (`sha256`,
//! `sha512`) and `window`. Other keys are ignored, as aiocoap does.
//!
//! A relative `basedir` is resolved against the JSON file's directory if that directory
//! exists, else against the current directory (what aiocoap itself does); the first that exists
//! wins, and the error lists both when neither does.
//!
//! aiocoap's `sequence.json` is read if present: its `next-to-send` is the lowest sender
//! sequence number used (never below it), and its `received` decides the replay window:
//! `"unknown"` gives an unsynchronized window (App. B.1.2), a saved window is restored
//! conservatively (every number up to the highest seen counts as seen). hopcore never writes
//! into aiocoap's directory: its own state lives in the store's `state_dir`. So **do not hand
//! a directory back to aiocoap after hopcore used it**: aiocoap would start from its own
//! `sequence.json` and reuse numbers hopcore sent.
//!
//! # Secrets
//!
//! Master Secrets and Salts are held in zeroizing memory and never appear in `Debug` output,
//! error messages or logs; errors about them say what is wrong, not what the value was.

mod aiocoap;
mod toml_format;

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

use hopcore_oscore::{Error as OscoreError, ReplayWindow, SenderSequence};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::params::{aead_name, AlgorithmLookupError, ContextParams, AEAD_NAMES};
use crate::store::{persist_key_from_ids, ContextId, ContextMeta, ContextStore, StoreError, StoreOptions};

/// The replay state a credentials source knows about (aiocoap's `sequence.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitialReplay {
    /// Nothing known: a fresh window (or the store's own state decides).
    #[default]
    Fresh,
    /// The previous user lost the window (aiocoap `"received": "unknown"`): unsynchronized.
    Unknown,
    /// Everything up to and including this number counts as received.
    Seen(u64),
}

/// One security context of a credentials file.
#[derive(Debug, Clone)]
pub struct CredentialEntry {
    /// Where it came from, for messages: `context[N]` (TOML) or the map key (JSON).
    pub name: String,
    /// The input parameters.
    pub params: ContextParams,
    /// URI patterns (client side).
    pub uris: Vec<String>,
    /// Peer labels (server/proxy side).
    pub peers: Vec<String>,
    /// Explicit persist key; `None`: derived from the identifiers.
    pub persist_key: Option<String>,
    /// Lowest sender sequence number to use (aiocoap's `next-to-send`; 0 otherwise).
    pub initial_sequence: u64,
    /// What is known about the replay window.
    pub initial_replay: InitialReplay,
    /// The aiocoap context directory, if the entry came from one.
    pub basedir: Option<PathBuf>,
    /// Whether the context may be re-derived with RFC 8613 App. B.2 (TOML `rederive = true`;
    /// always false for aiocoap JSON, which has no such setting).
    pub rederive: bool,
}

impl CredentialEntry {
    /// The label of the context: first peer, else first URI pattern, else the entry name.
    pub fn label(&self) -> &str {
        self.peers.first().or(self.uris.first()).unwrap_or(&self.name)
    }

    /// The persist key: the explicit one, or `oscore/v1/ctx=../sid=../rid=..`.
    pub fn persist_key(&self) -> String {
        self.persist_key.clone().unwrap_or_else(|| {
            persist_key_from_ids(self.params.id_context(), self.params.sender_id(), self.params.recipient_id())
        })
    }
}

/// Which file format a credentials file is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialsFormat {
    /// hopcore TOML (`.toml`).
    HopcoreToml,
    /// aiocoap credentials map (`.json`).
    AiocoapJson,
}

/// The contents of a credentials file. `Debug` never shows secrets.
#[derive(Debug, Clone)]
pub struct Credentials {
    source: PathBuf,
    format: CredentialsFormat,
    entries: Vec<CredentialEntry>,
    state_dir: Option<PathBuf>,
}

impl Credentials {
    /// Loads a credentials file: `.toml` is the hopcore format, `.json` aiocoap's (see the
    /// [module documentation](self)).
    pub fn load(path: impl AsRef<Path>) -> Result<Credentials, CredentialsError> {
        let path = path.as_ref();
        let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
        let format = match ext.as_deref() {
            Some("toml") => CredentialsFormat::HopcoreToml,
            Some("json") => CredentialsFormat::AiocoapJson,
            _ => return Err(CredentialsError::new(path, None, ErrorKind::UnknownFormat)),
        };
        let text = read_text(path)?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let creds = match format {
            CredentialsFormat::HopcoreToml => toml_format::parse(path, &base, &text)?,
            CredentialsFormat::AiocoapJson => aiocoap::parse(path, &base, &text)?,
        };
        creds.check_persist_keys()?;
        tracing::debug!(file = %path.display(), contexts = creds.entries.len(), "credentials loaded");
        Ok(creds)
    }

    /// The file the credentials were loaded from.
    pub fn source(&self) -> &Path {
        &self.source
    }

    /// The file's format.
    pub fn format(&self) -> CredentialsFormat {
        self.format
    }

    /// The contexts, in file order (TOML) or key order (JSON).
    pub fn entries(&self) -> &[CredentialEntry] {
        &self.entries
    }

    /// The `state_dir` of the file (TOML), resolved against the file's directory.
    pub fn state_dir(&self) -> Option<&Path> {
        self.state_dir.as_deref()
    }

    fn check_persist_keys(&self) -> Result<(), CredentialsError> {
        let mut seen: HashMap<String, &str> = HashMap::new();
        for e in &self.entries {
            if let Some(first) = seen.insert(e.persist_key(), &e.name) {
                return Err(CredentialsError::new(
                    &self.source,
                    Some(e.name.clone()),
                    ErrorKind::SamePersistKey { other: first.to_string() },
                ));
            }
        }
        Ok(())
    }

    /// Derives every context into a store: durable in `state_dir` if given, else in the
    /// file's `state_dir`, else volatile (logged as a warning: a volatile store reuses sender
    /// sequence numbers after a restart). Default [`StoreOptions`].
    pub fn into_store(self, state_dir: Option<&Path>) -> Result<(ContextStore, CredentialIndex), CredentialsError> {
        self.into_store_with(state_dir, StoreOptions::default())
    }

    /// [`into_store`](Self::into_store) with store options; `opts.replay_window` is the window
    /// size of contexts whose credentials do not set one.
    pub fn into_store_with(
        self,
        state_dir: Option<&Path>,
        opts: StoreOptions,
    ) -> Result<(ContextStore, CredentialIndex), CredentialsError> {
        let source = self.source.clone();
        let dir = state_dir.map(Path::to_path_buf).or_else(|| self.state_dir.clone());
        let store_err = |e: StoreError| CredentialsError::new(&source, None, ErrorKind::Store(e));
        let mut store = match &dir {
            Some(dir) => ContextStore::open(dir, opts).map_err(store_err)?,
            None => {
                tracing::warn!(
                    file = %source.display(),
                    "no state_dir: sender sequence numbers are not persisted; \
                     these contexts must not be used again after a restart (RFC 8613 App. B.1.1)"
                );
                ContextStore::volatile_with(opts).map_err(store_err)?
            }
        };
        let mut index = CredentialIndex::default();
        for entry in self.entries {
            let fail = |kind| CredentialsError::new(&source, Some(entry.name.clone()), kind);
            let mut params = entry.params.clone();
            if params.replay_window().is_none() {
                params = params.with_replay_window(opts.replay_window_size());
            }
            let ctx = params.derive().map_err(|e| fail(oscore_kind(e, &params)))?;
            let size = ctx.replay_window().size();
            let window = match entry.initial_replay {
                InitialReplay::Fresh => *ctx.replay_window(),
                InitialReplay::Unknown => ReplayWindow::unsynchronized(size).map_err(|e| fail(ErrorKind::Oscore(e)))?,
                InitialReplay::Seen(highest) => {
                    let mut w = ReplayWindow::unsynchronized(size).map_err(|e| fail(ErrorKind::Oscore(e)))?;
                    w.synchronize(highest);
                    w
                }
            };
            let ctx = ctx.with_sequence(SenderSequence::volatile(entry.initial_sequence)).with_replay_window(window);
            let label = entry.label().to_string();
            let meta = ContextMeta { label: label.clone(), persist_key: Some(entry.persist_key()) };
            let id = store.add(ctx, meta).map_err(|e| fail(ErrorKind::Store(e)))?;
            store.set_params(id, params).map_err(|e| fail(ErrorKind::Store(e)))?;
            store.set_rederive(id, entry.rederive).map_err(|e| fail(ErrorKind::Store(e)))?;
            for uri in &entry.uris {
                index.uris.push((uri.clone(), id));
            }
            for peer in &entry.peers {
                index.peers.insert(peer.clone(), id);
            }
            index.labels.insert(id, label);
        }
        Ok((store, index))
    }
}

/// Maps request URIs and peer labels to the contexts of a [`ContextStore`] built by
/// [`Credentials::into_store`].
#[derive(Debug, Clone, Default)]
pub struct CredentialIndex {
    uris: Vec<(String, ContextId)>,
    peers: HashMap<String, ContextId>,
    labels: HashMap<ContextId, String>,
}

impl CredentialIndex {
    /// The context for a request to `uri` (client side): among the patterns matching the whole
    /// URI (`*` matches any run of characters), the longest wins; equally long ones in file
    /// order. `None`: no credentials, which a client must treat as "do not send" rather than
    /// silently sending unprotected.
    pub fn for_uri(&self, uri: &str) -> Option<ContextId> {
        let mut best: Option<(usize, ContextId)> = None;
        for (pattern, id) in &self.uris {
            if wildcard_match(pattern, uri) && best.is_none_or(|(len, _)| pattern.len() > len) {
                best = Some((pattern.len(), *id));
            }
        }
        best.map(|(_, id)| id)
    }

    /// The context of the peer with this label (server/proxy side).
    pub fn for_peer(&self, label: &str) -> Option<ContextId> {
        self.peers.get(label).copied()
    }

    /// The label of a context.
    pub fn label(&self, id: ContextId) -> Option<&str> {
        self.labels.get(&id).map(String::as_str)
    }

    /// All URI patterns with their contexts, in file order.
    pub fn uri_patterns(&self) -> impl Iterator<Item = (&str, ContextId)> + '_ {
        self.uris.iter().map(|(p, id)| (p.as_str(), *id))
    }
}

/// Whole-string match where `*` in `pattern` matches any (possibly empty) run of characters
/// (aiocoap: `re.escape(pattern).replace("\\*", ".*")` with `fullmatch`).
pub fn wildcard_match(pattern: &str, text: &str) -> bool {
    let (p, t) = (pattern.as_bytes(), text.as_bytes());
    let (mut pi, mut ti) = (0, 0);
    // Position after the last `*` seen and the text position it was tried at.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi + 1, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            // Let the last `*` swallow one more character.
            pi = sp;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p.get(pi..).unwrap_or_default().iter().all(|&c| c == b'*')
}

/// A credentials file could not be used. The message names the file, the entry and what is
/// wrong; it never contains key material.
#[derive(Debug)]
pub struct CredentialsError {
    /// The file with the problem (the credentials file, or a file of an aiocoap context
    /// directory).
    pub path: PathBuf,
    /// The entry (`context[N]`, or the JSON key), if the problem is inside one.
    pub entry: Option<String>,
    /// What is wrong (boxed: errors are rare, results are common).
    pub kind: Box<ErrorKind>,
}

impl CredentialsError {
    pub(crate) fn new(path: &Path, entry: Option<String>, kind: ErrorKind) -> Self {
        CredentialsError { path: path.to_path_buf(), entry, kind: Box::new(kind) }
    }
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(entry) = &self.entry {
            write!(f, ": {entry}")?;
        }
        write!(f, ": {}", self.kind)
    }
}

impl std::error::Error for CredentialsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.kind {
            ErrorKind::Io(e) => Some(e),
            ErrorKind::Store(e) => Some(e),
            ErrorKind::Oscore(e) => Some(e),
            _ => None,
        }
    }
}

/// What is wrong in a credentials file.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Io(std::io::Error),
    /// Neither `.toml` nor `.json`.
    #[error("unknown credentials format: the file name must end in .toml (hopcore) or .json (aiocoap)")]
    UnknownFormat,
    /// Not valid TOML / JSON.
    #[error("syntax error at line {line}, column {column}: {message}")]
    Syntax {
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// A required key is missing.
    #[error("missing {0}")]
    Missing(String),
    /// A key this format does not have.
    #[error("unknown key {0:?}")]
    UnknownKey(String),
    /// A value of the wrong type or form.
    #[error("{field}: {reason}")]
    BadValue {
        /// The key.
        field: String,
        /// What is wrong with it (never the value itself).
        reason: String,
    },
    /// Not a COSE AEAD algorithm.
    #[error("unknown AEAD algorithm {name:?} (supported: {})", supported_aeads())]
    UnknownAlgorithm {
        /// The name or number given.
        name: String,
    },
    /// A COSE AEAD algorithm this implementation does not have.
    #[error("AEAD algorithm {name} is not supported (supported: {})", supported_aeads())]
    UnsupportedAlgorithm {
        /// The name or number given.
        name: String,
    },
    /// Not a supported HKDF hash.
    #[error("unknown or unsupported HKDF hash {name:?} (supported: sha256, sha512)")]
    UnknownHkdf {
        /// The name given.
        name: String,
    },
    /// A Sender or Recipient ID longer than the algorithm allows (RFC 8613 §3.3).
    #[error(
        "{field} is {len} bytes, but at most {max} bytes are allowed with {alg} (RFC 8613 §3.3: nonce length - 6)"
    )]
    IdTooLong {
        /// `sender_id` or `recipient_id` (as spelled in the file).
        field: String,
        /// Its length.
        len: usize,
        /// The maximum.
        max: usize,
        /// The algorithm's name.
        alg: &'static str,
    },
    /// Sender ID equals Recipient ID (RFC 8613 §3.3).
    #[error("sender and recipient id are equal; both directions would share one key (RFC 8613 §3.3)")]
    SameIds,
    /// A key appears twice (aiocoap: in settings.json and secret.json; TOML: `x` and `x_hex`).
    #[error("{field} is given more than once ({detail})")]
    Duplicate {
        /// The key.
        field: String,
        /// Where.
        detail: String,
    },
    /// An aiocoap `basedir` that does not exist.
    #[error("basedir {basedir:?} not found (tried {tried})")]
    BasedirNotFound {
        /// As written.
        basedir: String,
        /// The paths tried.
        tried: String,
    },
    /// A credential type other than `oscore`.
    #[error("unsupported credential type {0:?} (only \"oscore\" is supported)")]
    UnsupportedCredential(String),
    /// A JSON reference that does not lead to an `oscore` entry.
    #[error("reference {0:?} does not lead to an \"oscore\" entry")]
    BadReference(String),
    /// The same URI pattern or peer label selects two contexts.
    #[error("{selector} {value:?} also selects {other}")]
    ConflictingSelector {
        /// `uri` or `peer`.
        selector: &'static str,
        /// The pattern or label.
        value: String,
        /// The other entry.
        other: String,
    },
    /// Two entries would share durable state.
    #[error("same sender id, recipient id and id context as {other}; give one of them an explicit persist_key")]
    SamePersistKey {
        /// The other entry.
        other: String,
    },
    /// The OSCORE crate refused the parameters.
    #[error("{0}")]
    Oscore(OscoreError),
    /// The store could not be opened or refused a context.
    #[error("{0}")]
    Store(StoreError),
}

fn supported_aeads() -> String {
    AEAD_NAMES.iter().map(|(n, a)| format!("{n} ({})", a.cose_id())).collect::<Vec<_>>().join(", ")
}

pub(crate) fn algorithm_error(e: AlgorithmLookupError) -> ErrorKind {
    match e {
        AlgorithmLookupError::Unsupported(name) => ErrorKind::UnsupportedAlgorithm { name },
        AlgorithmLookupError::Unknown(name) => ErrorKind::UnknownAlgorithm { name },
    }
}

/// Maps a derivation error to a message that names the field.
pub(crate) fn oscore_kind(e: OscoreError, params: &ContextParams) -> ErrorKind {
    match e {
        OscoreError::IdTooLong { role, len, max } => {
            let field = match role {
                hopcore_oscore::IdRole::Sender => "sender id",
                _ => "recipient id",
            };
            ErrorKind::IdTooLong { field: field.to_string(), len, max, alg: aead_name(params.aead()) }
        }
        OscoreError::SameSenderAndRecipientId => ErrorKind::SameIds,
        other => ErrorKind::Oscore(other),
    }
}

/// Validates the parameters the way derivation would, with file-level messages.
pub(crate) fn validate(params: &ContextParams, sender_field: &str, recipient_field: &str) -> Result<(), ErrorKind> {
    let max = params.aead().max_id_len();
    let alg = aead_name(params.aead());
    for (field, id) in [(sender_field, params.sender_id()), (recipient_field, params.recipient_id())] {
        // RFC 8613 §3.3: "The maximum length of Sender ID in bytes equals the length of the AEAD
        // nonce minus 6".
        if id.len() > max {
            return Err(ErrorKind::IdTooLong { field: field.to_string(), len: id.len(), max, alg });
        }
    }
    if params.sender_id() == params.recipient_id() {
        return Err(ErrorKind::SameIds);
    }
    if let Some(ctx) = params.id_context() {
        // RFC 8613 §6.1: the kid context length is one byte.
        if ctx.len() > hopcore_oscore::MAX_KID_CONTEXT_LEN {
            return Err(ErrorKind::BadValue {
                field: "id context".to_string(),
                reason: format!("{} bytes, at most 255 fit in the OSCORE option", ctx.len()),
            });
        }
    }
    if let Some(w) = params.replay_window() {
        if w == 0 || w > hopcore_oscore::MAX_REPLAY_WINDOW {
            return Err(ErrorKind::BadValue {
                field: "replay window".to_string(),
                reason: format!("{w} is not in 1..=128"),
            });
        }
    }
    // Derive once so that anything else the OSCORE crate refuses shows up at load time.
    params.derive().map(drop).map_err(|e| oscore_kind(e, params))
}

/// Reads a file whose contents may contain secrets (wiped from memory when dropped).
pub(crate) fn read_text(path: &Path) -> Result<Zeroizing<String>, CredentialsError> {
    std::fs::read_to_string(path).map(Zeroizing::new).map_err(|e| CredentialsError::new(path, None, ErrorKind::Io(e)))
}

/// Decodes hex digits (either case). The error says what is wrong without quoting the input.
pub(crate) fn decode_hex(s: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    let bytes = s.as_bytes();
    if !bytes.len().is_multiple_of(2) {
        return Err(format!("invalid hex: odd number of digits ({})", bytes.len()));
    }
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() / 2));
    for (i, pair) in bytes.chunks(2).enumerate() {
        let digit = |c: u8, pos: usize| match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(format!("invalid hex: not a hex digit at position {pos}")),
        };
        let (Some(&hi), Some(&lo)) = (pair.first(), pair.get(1)) else {
            return Err("invalid hex".to_string());
        };
        out.push(digit(hi, 2 * i)? << 4 | digit(lo, 2 * i + 1)?);
    }
    Ok(out)
}

/// ASCII text as bytes (aiocoap's `_ascii`: `value.encode("ascii")`).
pub(crate) fn decode_ascii(s: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    if let Some(pos) = s.chars().position(|c| !c.is_ascii()) {
        return Err(format!("not ASCII: non-ASCII character at position {pos}"));
    }
    Ok(Zeroizing::new(s.as_bytes().to_vec()))
}

/// Line and column (1-based) of a byte offset.
pub(crate) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset.min(text.len())).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("coap://127.0.0.1:5683/*", "coap://127.0.0.1:5683/"));
        assert!(wildcard_match("coap://127.0.0.1:5683/*", "coap://127.0.0.1:5683/a/b?c"));
        assert!(!wildcard_match("coap://127.0.0.1:5683/*", "coap://127.0.0.1:56830/a"));
        assert!(!wildcard_match("coap://127.0.0.1:5683/x", "coap://127.0.0.1:5683/xy"));
        assert!(wildcard_match("coap://*/x", "coap://host/x"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("a*b*c", "aXbYbZ"));
        assert!(wildcard_match("exact", "exact"));
    }

    #[test]
    fn hex_and_ascii() {
        assert_eq!(decode_hex("").unwrap().as_slice(), b"");
        assert_eq!(decode_hex("0aFf").unwrap().as_slice(), [0x0a, 0xff]);
        assert!(decode_hex("abc").unwrap_err().contains("odd"));
        let err = decode_hex("0g").unwrap_err();
        assert!(err.contains("position 1") && !err.contains("0g"), "{err}");
        assert_eq!(decode_ascii("ab").unwrap().as_slice(), b"ab");
        assert!(decode_ascii("aé").is_err());
    }

    #[test]
    fn positions() {
        assert_eq!(line_col("ab\ncd", 4), (2, 2));
        assert_eq!(line_col("", 0), (1, 1));
    }
}
