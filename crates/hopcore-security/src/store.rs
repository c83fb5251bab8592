//! [`ContextStore`]: the one owner of an endpoint's security contexts, with durable sender
//! sequence reservations (RFC 8613 App. B.1.1), replay-window recovery (App. B.1.2) and the
//! Echo values that drive it (RFC 9175 §2.4).

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::{Path, PathBuf};

use hopcore_codec::{num, Code, Message};
use hopcore_oscore::{
    Error as OscoreError, ReplayWindow, RequestBinding, RequestInfo, SecurityContext, SenderSequence,
    UnverifiedRequest, MAX_REPLAY_WINDOW,
};
use thiserror::Error;

use crate::durable::{CrashPoint, Durable};
use crate::echo::{EchoIssuer, ECHO_LEN};
use crate::params::{to_hex, ContextParams};

/// A handle to one context in a [`ContextStore`]. Handles are never reused within a store: a
/// removed context's handle stays invalid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ContextId(u32);

impl ContextId {
    /// The position in the store, in the order contexts were added (0 = first).
    pub fn index(self) -> u32 {
        self.0
    }

    /// A handle from its index (for tests and for keys in external tables).
    pub fn from_raw(index: u32) -> ContextId {
        ContextId(index)
    }
}

impl fmt::Display for ContextId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// Tunables of a durable store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// `K` of RFC 8613 App. B.1.1: how many sender sequence numbers one durable write reserves.
    /// Larger K means fewer writes and up to K numbers skipped after a crash. Default 256.
    pub reserve_step: u64,
    /// Replay window size for contexts whose credentials do not set one (RFC 8613 §3.2.2:
    /// default 32; 1..=128 supported). [`ContextStore::add`] keeps the window size of the
    /// context it is given; this default is applied where the store or the credentials loader
    /// derive contexts themselves.
    pub replay_window: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { reserve_step: 256, replay_window: 32 }
    }
}

impl StoreOptions {
    fn validate(&self) -> Result<(), StoreError> {
        // RFC 8613 App. B.1.1: "K is a positive integer".
        if self.reserve_step == 0 {
            return Err(StoreError::InvalidOptions("reserve_step (K) must be positive"));
        }
        if self.replay_window == 0 || self.replay_window > MAX_REPLAY_WINDOW as usize {
            return Err(StoreError::InvalidOptions("replay_window must be in 1..=128"));
        }
        Ok(())
    }

    /// The replay window size as the OSCORE crate takes it.
    pub fn replay_window_size(&self) -> u32 {
        u32::try_from(self.replay_window).unwrap_or(MAX_REPLAY_WINDOW)
    }
}

/// What the store knows about a context besides the context itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContextMeta {
    /// The peer's identity as applications and logs see it, e.g. `":client1"` or `"proxy-a"`.
    /// Never key material.
    pub label: String,
    /// Stable key of the context's durable state (sequence reservations, replay snapshot).
    /// `None`: the context keeps no durable state, which is right only for contexts that are
    /// never reused after a restart, such as ones derived with a fresh random ID Context
    /// (RFC 8613 App. B.2) or from EDHOC; a durable store refuses to hand out sequence numbers
    /// for such a context if it asks for reservations.
    pub persist_key: Option<String>,
}

impl ContextMeta {
    /// A context with a label and no durable state.
    pub fn new(label: impl Into<String>) -> Self {
        ContextMeta { label: label.into(), persist_key: None }
    }

    /// Sets the persist key.
    pub fn with_persist_key(mut self, key: impl Into<String>) -> Self {
        self.persist_key = Some(key.into());
        self
    }

    /// A label plus the persist key derived from the context's identifiers
    /// ([`persist_key_for`]).
    pub fn durable(label: impl Into<String>, ctx: &SecurityContext) -> Self {
        ContextMeta { label: label.into(), persist_key: Some(persist_key_for(ctx)) }
    }
}

/// The default persist key of a context: its ID Context, Sender ID and Recipient ID in hex,
/// `oscore/v1/ctx=<hex or ->/sid=<hex>/rid=<hex>` (`-` = no ID Context, which differs from an
/// empty one). RFC 8613 §3.3 makes (ID Context, Sender ID) unique per Master Secret and Master
/// Salt, so this identifies the Sender Context among an endpoint's contexts unless two contexts
/// share all three identifiers under different Master Secrets; give those explicit keys.
pub fn persist_key_for(ctx: &SecurityContext) -> String {
    persist_key_from_ids(ctx.id_context(), ctx.sender_id(), ctx.recipient_id())
}

pub(crate) fn persist_key_from_ids(id_context: Option<&[u8]>, sender_id: &[u8], recipient_id: &[u8]) -> String {
    format!(
        "oscore/v1/ctx={}/sid={}/rid={}",
        id_context.map_or_else(|| "-".to_string(), to_hex),
        to_hex(sender_id),
        to_hex(recipient_id)
    )
}

/// Errors of the store. None carries key material.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The state directory cannot be created.
    #[error("cannot create state directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Another process (or another store in this process) has the database open. One process
    /// per state directory: two would hand out the same sequence numbers.
    #[error("state database {} is already open in another store or process", path.display())]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// An error of the database engine (I/O, corruption found by redb, ...).
    #[error("state database {}: {source}", path.display())]
    Database {
        /// The database file.
        path: PathBuf,
        /// redb's error.
        source: redb::Error,
    },
    /// The database holds something this version cannot use.
    #[error("state database {} is not usable: {detail}", path.display())]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// [`StoreOptions`] out of range.
    #[error("invalid store options: {0}")]
    InvalidOptions(&'static str),
    /// No context with this handle (never added, or removed).
    #[error("no security context {0} in the store")]
    UnknownContext(ContextId),
    /// Two contexts claim the same durable state.
    #[error("persist key {key:?} is already used by context {existing:?}")]
    DuplicatePersistKey {
        /// The key.
        key: String,
        /// Label of the context that has it.
        existing: String,
    },
    /// All 2^40 sender sequence numbers are used (RFC 8613 §7.2.1).
    #[error(
        "context {label:?}: sender sequence numbers exhausted (RFC 8613 §7.2.1); a new security context is needed"
    )]
    SequenceExhausted {
        /// The context's label.
        label: String,
    },
    /// The context needs durable reservations (its sequence was made persistent) but the store
    /// is volatile or the context has no persist key.
    #[error("context {label:?} requires durable sequence number reservations, but has no durable state (volatile store or no persist_key)")]
    NotDurable {
        /// The context's label.
        label: String,
    },
    /// The OSCORE crate refused a value (e.g. a replay window size).
    #[error("context {label:?}: {source}")]
    Oscore {
        /// The context's label.
        label: String,
        /// The OSCORE error.
        source: OscoreError,
    },
    /// The request handed to [`ContextStore::check_freshness`] was not verified with this
    /// context.
    #[error("the unverified request was not verified with context {0}")]
    ContextMismatch(ContextId),
    /// Test hook: a crash was simulated.
    #[error("simulated crash (test hook)")]
    SimulatedCrash,
}

impl StoreError {
    pub(crate) fn database(path: &Path, e: impl Into<redb::Error>) -> StoreError {
        match e.into() {
            redb::Error::DatabaseAlreadyOpen => StoreError::Locked { path: path.to_path_buf() },
            source => StoreError::Database { path: path.to_path_buf(), source },
        }
    }
}

/// The outcome of [`ContextStore::check_freshness`] for a request that decrypted while the
/// replay window had no state (RFC 8613 App. B.1.2).
#[derive(Debug)]
pub enum Freshness {
    /// The request carried a valid Echo value (RFC 9175 §2.4): its Partial IV is now the lower
    /// limit of the replay window and it may be processed. The response must use an own Partial
    /// IV (the binding refuses the request nonce): call [`ContextStore::prepare_send`] before
    /// protecting it.
    Verified {
        /// The decrypted request (its Echo option is left in place).
        message: Message,
        /// The binding for the response.
        binding: RequestBinding,
        /// Who sent it.
        info: RequestInfo,
    },
    /// Answer with `response`, a 4.01 (Unauthorized) carrying only an Echo option and no
    /// payload (App. B.1.2), protected with `binding` and the server's own Partial IV
    /// (`protect_response(.., use_own_piv = true, ..)` after [`ContextStore::prepare_send`]).
    Challenge {
        /// The plaintext 4.01 response with the Echo option.
        response: Message,
        /// The binding for the response.
        binding: RequestBinding,
    },
}

struct Entry {
    ctx: SecurityContext,
    meta: ContextMeta,
    /// Whether sequence reservations of this context are written under `meta.persist_key`.
    durable: bool,
    /// Input parameters kept for re-derivation (RFC 8613 App. B.2), if the owner attached them.
    params: Option<ContextParams>,
    /// Whether this context may take part in App. B.2 (credentials `rederive = true`).
    rederive: bool,
}

/// The security contexts of an endpoint: lookup by 'kid' (RFC 8613 §8.2 step 2), durable
/// sender sequence reservations (App. B.1.1), replay windows after a restart (App. B.1.2) and
/// Echo values (RFC 9175).
///
/// Sans-I/O except for the database writes of a durable store, which happen inside
/// [`add`](Self::add), [`prepare_send`](Self::prepare_send) and
/// [`persist_replay`](Self::persist_replay) and block until the data is on disk.
///
/// ```
/// use hopcore_oscore::{ContextInput, SecurityContext};
/// use hopcore_security::{ContextMeta, ContextStore, StoreOptions};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = std::env::temp_dir().join(format!("hopcore-doc-{}", std::process::id()));
/// let mut store = ContextStore::open(&dir, StoreOptions::default())?;
/// let ctx = SecurityContext::derive(&ContextInput::new(&[7; 16], &[0x01], &[0x02]))?;
/// let meta = ContextMeta::durable("server", &ctx);
/// let id = store.add(ctx, meta)?;
/// // Before every message that takes a Partial IV:
/// let ctx = store.prepare_send(id)?;
/// let piv = ctx.next_partial_iv()?;
/// assert_eq!(piv.to_sequence(), 0);
/// # drop(store);
/// # std::fs::remove_dir_all(&dir)?;
/// # Ok(())
/// # }
/// ```
pub struct ContextStore {
    entries: Vec<Option<Entry>>,
    /// Recipient ID → handles with that Recipient ID, in insertion order.
    by_recipient: HashMap<Vec<u8>, Vec<u32>>,
    persist_keys: HashSet<String>,
    durable: Option<Durable>,
    opts: StoreOptions,
    echo: EchoIssuer,
}

impl fmt::Debug for ContextStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContextStore")
            .field("state", &self.durable.as_ref().map(|d| d.path().to_path_buf()))
            .field("options", &self.opts)
            .field("contexts", &self.iter().map(|(id, ctx, meta)| (id, &meta.label, ctx)).collect::<Vec<_>>())
            .field("echo", &self.echo)
            .finish()
    }
}

impl ContextStore {
    /// A store in memory only. Sender sequence numbers are not persisted, so contexts in a
    /// volatile store must not be reused after a restart (RFC 8613 §7.5, App. B.1).
    pub fn volatile() -> ContextStore {
        ContextStore::new(None, StoreOptions::default())
    }

    /// A volatile store with options (only `replay_window` matters without durability).
    pub fn volatile_with(opts: StoreOptions) -> Result<ContextStore, StoreError> {
        opts.validate()?;
        Ok(ContextStore::new(None, opts))
    }

    fn new(durable: Option<Durable>, opts: StoreOptions) -> ContextStore {
        ContextStore {
            entries: Vec::new(),
            by_recipient: HashMap::new(),
            persist_keys: HashSet::new(),
            durable,
            opts,
            echo: EchoIssuer::default(),
        }
    }

    /// A durable store whose state lives in `dir` (created if missing), in the redb file
    /// [`DB_FILE`](crate::durable::DB_FILE). Fails with [`StoreError::Locked`] while another
    /// store has the same directory open.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<ContextStore, StoreError> {
        opts.validate()?;
        let durable = Durable::open(dir)?;
        tracing::debug!(path = %durable.path().display(), k = opts.reserve_step, "opened security state");
        Ok(ContextStore::new(Some(durable), opts))
    }

    /// Whether sequence reservations are written to disk.
    pub fn is_durable(&self) -> bool {
        self.durable.is_some()
    }

    /// The database file of a durable store.
    pub fn state_path(&self) -> Option<&Path> {
        self.durable.as_ref().map(Durable::path)
    }

    /// The options the store was opened with.
    pub fn options(&self) -> &StoreOptions {
        &self.opts
    }

    /// Adds a context and returns its handle.
    ///
    /// On a durable store with a `persist_key`:
    /// - the sender sequence becomes persistent with step K and continues from the reserved
    ///   bound of the previous run, never from below it (RFC 8613 App. B.1.1), or from the
    ///   context's own next number if that is higher (e.g. aiocoap's `sequence.json`);
    /// - if a previous run used this key and did not leave a replay snapshot (a crash, or no
    ///   [`persist_replay`](Self::persist_replay)), the replay window is unsynchronized until
    ///   an Echo exchange (App. B.1.2); with a snapshot it continues from the snapshot;
    /// - the fact that the context is in use is committed before `add` returns.
    ///
    /// A replay window that is already unsynchronized stays so. On a volatile store, or
    /// without a persist key, the context is kept as given, except that a context whose
    /// sequence asks for durable reservations is refused ([`StoreError::NotDurable`]).
    pub fn add(&mut self, ctx: SecurityContext, meta: ContextMeta) -> Result<ContextId, StoreError> {
        let index = u32::try_from(self.entries.len())
            .map_err(|_| StoreError::InvalidOptions("too many contexts in one store"))?;
        let label = meta.label.clone();
        let durable_key = meta.persist_key.clone().filter(|_| self.durable.is_some());
        let (ctx, durable) = match durable_key {
            Some(key) => {
                if self.persist_keys.contains(&key) {
                    let existing = self
                        .iter()
                        .find(|(_, _, m)| m.persist_key.as_deref() == Some(key.as_str()))
                        .map_or_else(String::new, |(_, _, m)| m.label.clone());
                    return Err(StoreError::DuplicatePersistKey { key, existing });
                }
                let ctx = self.restore(ctx, &key, &label)?;
                self.persist_keys.insert(key);
                (ctx, true)
            }
            None => {
                if ctx.sequence().step().is_some() {
                    return Err(StoreError::NotDurable { label });
                }
                if self.durable.is_some() {
                    tracing::debug!(label = %label, "context without persist_key: no durable state");
                }
                (ctx, false)
            }
        };
        self.by_recipient.entry(ctx.recipient_id().to_vec()).or_default().push(index);
        self.entries.push(Some(Entry { ctx, meta, durable, params: None, rederive: false }));
        Ok(ContextId(index))
    }

    /// The durable part of [`add`](Self::add).
    fn restore(&mut self, ctx: SecurityContext, key: &str, label: &str) -> Result<SecurityContext, StoreError> {
        let Some(durable) = self.durable.as_mut() else {
            return Err(StoreError::NotDurable { label: label.to_string() });
        };
        let oscore = |source| StoreError::Oscore { label: label.to_string(), source };
        let hint = ctx.sequence().peek();
        let loaded = durable.load(key, hint)?;

        // RFC 8613 App. B.1.1: "After booting, the endpoint initiates the new Sender Sequence
        // Number (SSN2) to the value stored in persistent memory plus K plus F". We store the
        // bound *after* adding K (the whole block is reserved before its first number is used),
        // so SSN2 = the stored value, with F = 0 safe because the write completes before use.
        let start = loaded.reserved_bound.map_or(hint, |b| b.max(hint));
        let sequence = SenderSequence::persistent(start, self.opts.reserve_step).map_err(oscore)?;

        // RFC 8613 App. B.1.2: after a loss of the replay window, refuse until synchronized.
        let given = *ctx.replay_window();
        let size = given.size();
        let window = if !given.is_synchronized() {
            given
        } else {
            match loaded.replay_snapshot {
                // Clean shutdown: continue from the snapshot (only higher numbers accepted;
                // conservative, as the snapshot keeps only the highest number).
                Some(snapshot) => match snapshot.max(given.highest()) {
                    Some(highest) => {
                        let mut w = ReplayWindow::unsynchronized(size).map_err(oscore)?;
                        w.synchronize(highest);
                        w
                    }
                    None => given,
                },
                // Used before, no snapshot: the previous run ended without saving the window.
                None if loaded.reserved_bound.is_some() => ReplayWindow::unsynchronized(size).map_err(oscore)?,
                // Never used: a new context, every Partial IV is fresh (RFC 8613 §3.2.2).
                None => given,
            }
        };
        tracing::info!(
            label = %label,
            next_sequence = start,
            replay_synchronized = window.is_synchronized(),
            previous_run = loaded.reserved_bound.is_some(),
            "security context loaded"
        );
        Ok(ctx.with_sequence(sequence).with_replay_window(window))
    }

    /// Attaches the input parameters of context `id`, needed to re-derive it
    /// (RFC 8613 App. B.2). [`Credentials::into_store`](crate::Credentials::into_store) does
    /// this for every context it loads.
    pub fn set_params(&mut self, id: ContextId, params: ContextParams) -> Result<(), StoreError> {
        self.entry_mut(id)?.params = Some(params);
        Ok(())
    }

    /// The input parameters attached to `id`, if any.
    pub fn params(&self, id: ContextId) -> Option<&ContextParams> {
        self.entry(id).and_then(|e| e.params.as_ref())
    }

    /// Marks whether context `id` may be re-derived with RFC 8613 App. B.2 (the credentials
    /// flag `rederive = true`): a server then answers requests for it that it cannot place
    /// with the B.2 procedure, and a client completes a B.2 run the server starts. Needs the
    /// parameters attached ([`set_params`](Self::set_params)) to have any effect.
    pub fn set_rederive(&mut self, id: ContextId, allowed: bool) -> Result<(), StoreError> {
        self.entry_mut(id)?.rederive = allowed;
        Ok(())
    }

    /// Whether context `id` may be re-derived (App. B.2); false for unknown handles.
    pub fn rederive_allowed(&self, id: ContextId) -> bool {
        self.entry(id).is_some_and(|e| e.rederive)
    }

    /// The context whose Recipient ID is `kid` (RFC 8613 §8.2 step 2).
    ///
    /// With a `kid_context`, only a context whose ID Context equals it matches (§5.1: "the
    /// server SHALL use a security context with that ID Context"); a context without ID
    /// Context never matches a kid context. Without one, every context with that Recipient ID
    /// is a candidate (§5.1: the kid context may be left out when the ID Context is known to
    /// both).
    ///
    /// Ties (RFC 8613 §3.3 makes the Recipient ID only SHOULD-unique): contexts without an ID
    /// Context are preferred when no kid context was sent (that is the exact match); otherwise
    /// the earliest added context wins. [`lookup_recipient_all`](Self::lookup_recipient_all)
    /// lists every candidate in this order, for a server that tries them one by one (§3.3:
    /// "the endpoint may need to try multiple times").
    pub fn lookup_recipient(&self, kid: &[u8], kid_context: Option<&[u8]>) -> Option<ContextId> {
        self.candidates(kid, kid_context).next()
    }

    /// Every context matching `kid` (and `kid_context`), best first; see
    /// [`lookup_recipient`](Self::lookup_recipient).
    pub fn lookup_recipient_all(&self, kid: &[u8], kid_context: Option<&[u8]>) -> Vec<ContextId> {
        self.candidates(kid, kid_context).collect()
    }

    /// [`lookup_recipient`](Self::lookup_recipient) and [`get_mut`](Self::get_mut) in one.
    pub fn lookup_recipient_mut(
        &mut self,
        kid: &[u8],
        kid_context: Option<&[u8]>,
    ) -> Option<(ContextId, &mut SecurityContext)> {
        let id = self.lookup_recipient(kid, kid_context)?;
        self.get_mut(id).map(|ctx| (id, ctx))
    }

    fn candidates<'s>(&'s self, kid: &[u8], kid_context: Option<&'s [u8]>) -> impl Iterator<Item = ContextId> + 's {
        let ids: &[u32] = self.by_recipient.get(kid).map_or(&[], Vec::as_slice);
        let matching = move |pass: u8| {
            ids.iter().copied().filter(move |&i| {
                let Some(Some(e)) = self.entries.get(i as usize) else { return false };
                match kid_context {
                    Some(kc) => pass == 0 && e.ctx.id_context() == Some(kc),
                    // Pass 0: contexts without ID Context (exact), pass 1: the others.
                    None => (pass == 0) == e.ctx.id_context().is_none(),
                }
            })
        };
        matching(0).chain(matching(1)).map(ContextId)
    }

    fn entry(&self, id: ContextId) -> Option<&Entry> {
        self.entries.get(id.0 as usize).and_then(Option::as_ref)
    }

    fn entry_mut(&mut self, id: ContextId) -> Result<&mut Entry, StoreError> {
        self.entries.get_mut(id.0 as usize).and_then(Option::as_mut).ok_or(StoreError::UnknownContext(id))
    }

    /// The context, for reading.
    pub fn get(&self, id: ContextId) -> Option<&SecurityContext> {
        self.entry(id).map(|e| &e.ctx)
    }

    /// The context, for verifying (replay window updates). To *send*, use
    /// [`prepare_send`](Self::prepare_send): a persistent sequence refuses numbers that are not
    /// durably reserved, so sending through `get_mut` alone fails with
    /// `Error::PersistRequired` once the reserved block is used up.
    pub fn get_mut(&mut self, id: ContextId) -> Option<&mut SecurityContext> {
        self.entries.get_mut(id.0 as usize).and_then(Option::as_mut).map(|e| &mut e.ctx)
    }

    /// The context's label and persist key.
    pub fn meta(&self, id: ContextId) -> Option<&ContextMeta> {
        self.entry(id).map(|e| &e.meta)
    }

    /// All contexts, in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (ContextId, &SecurityContext, &ContextMeta)> + '_ {
        self.entries.iter().enumerate().filter_map(|(i, e)| e.as_ref().map(|e| (ContextId(i as u32), &e.ctx, &e.meta)))
    }

    /// Number of contexts.
    pub fn len(&self) -> usize {
        self.entries.iter().flatten().count()
    }

    /// Whether the store has no contexts.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The context, ready to take at least one sender sequence number.
    ///
    /// RFC 8613 App. B.1.1: if the next number is outside the durably reserved block, the new
    /// upper bound (next + K) is committed to the database with durability *before* this
    /// returns, and only then confirmed to the in-memory sequence. Call it before every
    /// protect that takes a Partial IV (requests, responses with an own Partial IV).
    ///
    /// Why this order is safe under `kill -9` at any instruction:
    /// - killed before the commit is on disk: the old bound is still the durable one, and no
    ///   number at or above it has been used (the in-memory sequence refuses them until
    ///   `confirm_reserved`), so the next start, which begins at the old bound, reuses nothing;
    /// - killed after the commit, before or after numbers of the new block are used: the next
    ///   start begins at the new bound, above every number of the block;
    /// - the commit itself is atomic (redb commit slots with checksums, two-phase commit,
    ///   fsync): after a crash the file holds the old or the new bound, never a torn value,
    ///   and both cases are covered above.
    ///
    /// So a Partial IV is only ever used after its reservation is on disk, and the sequence
    /// after a restart is above every number used before, by at most K. (A disk that
    /// acknowledges fsync without persisting is outside this argument; App. B.1.1's F would
    /// have to cover it.)
    pub fn prepare_send(&mut self, id: ContextId) -> Result<&mut SecurityContext, StoreError> {
        let durable = &mut self.durable;
        let entry =
            self.entries.get_mut(id.0 as usize).and_then(Option::as_mut).ok_or(StoreError::UnknownContext(id))?;
        // RFC 8613 §7.2.1: no more messages with an exhausted Sender Context.
        if entry.ctx.sequence().is_exhausted() {
            return Err(StoreError::SequenceExhausted { label: entry.meta.label.clone() });
        }
        if entry.ctx.sequence().needs_persist() {
            let (Some(durable), true, Some(key)) = (durable.as_mut(), entry.durable, entry.meta.persist_key.as_deref())
            else {
                return Err(StoreError::NotDurable { label: entry.meta.label.clone() });
            };
            let until = entry.ctx.sequence().reservation_target();
            // RFC 8613 App. B.1.1: store first (durable commit) ...
            durable.reserve(key, until)?;
            // ... then unlock the block in memory.
            entry.ctx.sequence_mut().confirm_reserved(until);
            tracing::trace!(label = %entry.meta.label, until, "sender sequence reserved");
        }
        Ok(&mut entry.ctx)
    }

    /// The durably stored reservation bound of `id` (diagnostics; `None` without durable state).
    pub fn reserved_bound(&self, id: ContextId) -> Result<Option<u64>, StoreError> {
        let entry = self.entry(id).ok_or(StoreError::UnknownContext(id))?;
        match (&self.durable, entry.durable, entry.meta.persist_key.as_deref()) {
            (Some(d), true, Some(key)) => d.reserved_bound(key),
            _ => Ok(None),
        }
    }

    /// Whether the replay window of `id` accepts requests (false after a restart without
    /// replay state, RFC 8613 App. B.1.2). Unknown handles give false.
    pub fn replay_synchronized(&self, id: ContextId) -> bool {
        self.get(id).is_some_and(|c| c.replay_window().is_synchronized())
    }

    /// RFC 8613 App. B.1.2: "the Partial IV of the second request is set as the lower limit of
    /// the Replay Window": `seq` and everything below count as received. Call only once the
    /// request with sequence number `seq` was verified fresh (Echo).
    pub fn synchronize_replay(&mut self, id: ContextId, seq: u64) {
        if let Some(ctx) = self.get_mut(id) {
            ctx.replay_window_mut().synchronize(seq);
        }
    }

    /// Saves the replay window of `id` for the next start (clean shutdown, RFC 8613 App. B.1.2),
    /// so that the next run does not need an Echo exchange for this context.
    ///
    /// The snapshot keeps the highest received number; the next run accepts only higher ones.
    /// After the snapshot this context's window is unsynchronized in memory: a request accepted
    /// after the snapshot would be missing from it, and after a crash the next run would accept
    /// it again. Call it when no further requests will be processed with the context. Does
    /// nothing for a volatile store, a context without durable state, or a window that is not
    /// synchronized.
    pub fn persist_replay(&mut self, id: ContextId) -> Result<(), StoreError> {
        let durable = &mut self.durable;
        let entry =
            self.entries.get_mut(id.0 as usize).and_then(Option::as_mut).ok_or(StoreError::UnknownContext(id))?;
        let (Some(durable), true, Some(key)) = (durable.as_mut(), entry.durable, entry.meta.persist_key.as_deref())
        else {
            return Ok(());
        };
        let window = *entry.ctx.replay_window();
        if !window.is_synchronized() {
            return Ok(());
        }
        durable.store_replay(key, window.highest())?;
        let label = entry.meta.label.clone();
        let unsync =
            ReplayWindow::unsynchronized(window.size()).map_err(|source| StoreError::Oscore { label, source })?;
        *entry.ctx.replay_window_mut() = unsync;
        Ok(())
    }

    /// Clean shutdown: [`persist_replay`](Self::persist_replay) for every context.
    pub fn shutdown(mut self) -> Result<(), StoreError> {
        let ids: Vec<ContextId> = self.iter().map(|(id, _, _)| id).collect();
        for id in ids {
            self.persist_replay(id)?;
        }
        Ok(())
    }

    /// The store's Echo issuer (RFC 9175).
    pub fn echo(&self) -> &EchoIssuer {
        &self.echo
    }

    /// The store's Echo issuer, mutable.
    pub fn echo_mut(&mut self) -> &mut EchoIssuer {
        &mut self.echo
    }

    /// A fresh Echo value bound to `id` (`None` for an unknown handle).
    pub fn issue_echo(&mut self, id: ContextId) -> Option<[u8; ECHO_LEN]> {
        self.entry(id)?;
        Some(self.echo.issue(id))
    }

    /// Whether `echo` is a live value issued for `id`; consumes it.
    pub fn verify_echo(&mut self, id: ContextId, echo: &[u8]) -> bool {
        self.echo.verify(id, echo)
    }

    /// The server side of RFC 8613 App. B.1.2 for a request that `unprotect_request` returned
    /// as `UnprotectError::FreshnessUnverified` with context `id`:
    /// - it carries an Echo option with a live value issued for `id` (RFC 9175 §2.4): the
    ///   request's Partial IV becomes the lower limit of the replay window, and the request is
    ///   [`Freshness::Verified`];
    /// - otherwise: [`Freshness::Challenge`] with a new Echo value in a 4.01 (App. B.1.2: "an
    ///   OSCORE protected 4.01 (Unauthorized), containing only the Echo option and no
    ///   diagnostic payload").
    pub fn check_freshness(&mut self, id: ContextId, unverified: UnverifiedRequest) -> Result<Freshness, StoreError> {
        let UnverifiedRequest { message, binding, info } = unverified;
        let ctx = self.get(id).ok_or(StoreError::UnknownContext(id))?;
        if ctx.recipient_id() != info.kid() || ctx.id_context() != info.id_context() {
            return Err(StoreError::ContextMismatch(id));
        }
        // RFC 9175 §2.3: the Echo of an OSCORE request is an Inner option, i.e. in the
        // decrypted message.
        if let Some(echo) = message.options.get(num::ECHO) {
            if self.echo.verify(id, echo) {
                let seq = info.partial_iv().to_sequence();
                self.synchronize_replay(id, seq);
                tracing::info!(context = %id, seq, "replay window synchronized with Echo (RFC 8613 App. B.1.2)");
                return Ok(Freshness::Verified { message, binding, info });
            }
        }
        let value = self.echo.issue(id);
        let mut response = Message::response(Code::UNAUTHORIZED);
        response.options.set(num::ECHO, &value);
        Ok(Freshness::Challenge { response, binding })
    }

    /// Removes a context (its durable state stays on disk for a later `add` with the same key).
    pub fn remove(&mut self, id: ContextId) -> Option<(SecurityContext, ContextMeta)> {
        let entry = self.entries.get_mut(id.0 as usize)?.take()?;
        self.unindex(id, entry.ctx.recipient_id());
        if entry.durable {
            if let Some(key) = &entry.meta.persist_key {
                self.persist_keys.remove(key);
            }
        }
        self.echo.forget(id);
        Some((entry.ctx, entry.meta))
    }

    /// Replaces the context of `id` by `ctx`, keeping the handle, label and attached
    /// parameters, and returns the old context (retired). Meant for RFC 8613 App. B.2: the new
    /// context has a fresh random ID Context and thus fresh keys, so it needs no durable
    /// sequence state; from now on `id` has none (its old state stays on disk for the
    /// preestablished context). A `ctx` whose sequence asks for durable reservations is refused.
    pub fn replace(&mut self, id: ContextId, ctx: SecurityContext) -> Result<SecurityContext, StoreError> {
        let entry = self.entry_mut(id)?;
        if ctx.sequence().step().is_some() {
            return Err(StoreError::NotDurable { label: entry.meta.label.clone() });
        }
        entry.durable = false;
        let old = std::mem::replace(&mut entry.ctx, ctx);
        let new_rid = entry.ctx.recipient_id().to_vec();
        if old.recipient_id() != new_rid.as_slice() {
            self.unindex(id, old.recipient_id());
            self.by_recipient.entry(new_rid).or_default().push(id.0);
        }
        self.echo.forget(id);
        Ok(old)
    }

    fn unindex(&mut self, id: ContextId, rid: &[u8]) {
        if let Some(list) = self.by_recipient.get_mut(rid) {
            list.retain(|&i| i != id.0);
            if list.is_empty() {
                self.by_recipient.remove(rid);
            }
        }
    }

    /// Test hook: make the next reservation writes fail as if the process died at `point`.
    #[doc(hidden)]
    pub fn simulate_crash_at(&mut self, point: Option<CrashPoint>) {
        if let Some(d) = self.durable.as_mut() {
            d.crash_at = point;
        }
    }
}

impl hopcore_layers::SecurityContexts for ContextStore {
    type Id = ContextId;

    fn lookup_recipient(&self, kid: &[u8], kid_context: Option<&[u8]>) -> Option<ContextId> {
        ContextStore::lookup_recipient(self, kid, kid_context)
    }

    fn context_mut(&mut self, id: ContextId) -> Option<&mut SecurityContext> {
        self.get_mut(id)
    }

    fn prepare_send(&mut self, id: ContextId) -> Result<&mut SecurityContext, String> {
        ContextStore::prepare_send(self, id).map_err(|e| e.to_string())
    }

    fn label(&self, id: ContextId) -> String {
        self.meta(id).map_or_else(|| id.to_string(), |m| m.label.clone())
    }

    fn issue_echo(&mut self, id: ContextId) -> Option<Vec<u8>> {
        ContextStore::issue_echo(self, id).map(|v| v.to_vec())
    }

    fn verify_echo(&mut self, id: ContextId, echo: &[u8]) -> bool {
        ContextStore::verify_echo(self, id, echo)
    }
}
