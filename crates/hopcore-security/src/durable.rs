//! The durable half of the store: one redb file with the per-context state that must survive
//! a crash (RFC 8613 App. B.1).
//!
//! Tables, keyed by the context's `persist_key`:
//!
//! | table | value | meaning |
//! |---|---|---|
//! | `sender_seq` | `u64` | exclusive upper bound of the reserved Sender Sequence Numbers (App. B.1.1); its presence also says "this context was in use before" |
//! | `replay` | `(u8, u64)` | replay window snapshot written at clean shutdown (App. B.1.2): `(0, _)` nothing received, `(1, h)` highest received `h`; deleted (durably) when the context is loaded |
//! | `meta` | `u64` | `format` = [`FORMAT_VERSION`] |
//!
//! Every write transaction commits with [`Durability::Immediate`] and two-phase commit: when
//! `commit` returns, the data is on disk (fsync), and a crash at any moment leaves either the
//! old or the new state, never a mix (redb keeps two commit slots with checksums).

use std::path::{Path, PathBuf};

use redb::{Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};

use crate::store::StoreError;

/// File name of the database inside the state directory.
pub const DB_FILE: &str = "hopcore-security.redb";
/// Version of the table layout.
pub const FORMAT_VERSION: u64 = 1;

const SENDER_SEQ: TableDefinition<&str, u64> = TableDefinition::new("sender_seq");
const REPLAY: TableDefinition<&str, (u8, u64)> = TableDefinition::new("replay");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// What the database knew about a context when it was (re)loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Loaded {
    /// The stored reservation bound, if the context was used in an earlier run.
    pub(crate) reserved_bound: Option<u64>,
    /// The replay snapshot of a clean shutdown: `Some(None)` nothing was received,
    /// `Some(Some(h))` highest received `h`.
    pub(crate) replay_snapshot: Option<Option<u64>>,
}

/// Test hook: where a simulated crash interrupts [`Durable::reserve`].
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrashPoint {
    /// The reservation is written into the transaction, which is then dropped uncommitted
    /// (the process died before the commit reached the disk).
    BeforeCommit,
    /// The commit returned (the reservation is on disk) but the process died before the
    /// in-memory sequence learned about it.
    AfterCommit,
}

pub(crate) struct Durable {
    db: Database,
    path: PathBuf,
    #[doc(hidden)]
    pub(crate) crash_at: Option<CrashPoint>,
}

impl Durable {
    pub(crate) fn open(dir: &Path) -> Result<Durable, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir { path: dir.to_path_buf(), source })?;
        let path = dir.join(DB_FILE);
        let db = Database::builder()
            // A file altered outside redb is reported instead of being trusted.
            .set_check_integrity_on_open(true)
            .create(&path)
            .map_err(|e| StoreError::database(&path, e))?;
        let durable = Durable { db, path, crash_at: None };
        durable.check_format()?;
        Ok(durable)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn begin(&self) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        // RFC 8613 App. B.1.1: the stored value must really be in non-volatile memory before a
        // number of the reserved block is used. Immediate = fsync before `commit` returns.
        txn.set_durability(Durability::Immediate).map_err(|e| self.err(e))?;
        txn.set_two_phase_commit(true);
        Ok(txn)
    }

    fn err(&self, e: impl Into<redb::Error>) -> StoreError {
        StoreError::database(&self.path, e)
    }

    fn check_format(&self) -> Result<(), StoreError> {
        let txn = self.begin()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let found = meta.get("format").map_err(|e| self.err(e))?.map(|v| v.value());
            match found {
                Some(FORMAT_VERSION) => {}
                Some(other) => {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("state format {other}, this version understands {FORMAT_VERSION}"),
                    })
                }
                None => {
                    meta.insert("format", FORMAT_VERSION).map_err(|e| self.err(e))?;
                }
            }
            // Create the other tables so that read-only lookups never meet a missing table.
            txn.open_table(SENDER_SEQ).map_err(|e| self.err(e))?;
            txn.open_table(REPLAY).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Loads the state of `key` and, in the same durable transaction, records that the context
    /// is in use from `start` on and deletes the replay snapshot.
    ///
    /// Why the snapshot is deleted now: it describes the window at the last clean shutdown.
    /// Requests accepted from now on move the window past it; if the process then crashed and
    /// the snapshot were still there, the next start would restore the old window and accept
    /// those requests again (RFC 8613 App. B.1.2). Without a snapshot, the next start after a
    /// crash finds only the `sender_seq` entry and marks the window unsynchronized.
    pub(crate) fn load(&mut self, key: &str, start: u64) -> Result<Loaded, StoreError> {
        let txn = self.begin()?;
        let loaded;
        {
            let mut seq = txn.open_table(SENDER_SEQ).map_err(|e| self.err(e))?;
            let mut replay = txn.open_table(REPLAY).map_err(|e| self.err(e))?;
            let reserved_bound = seq.get(key).map_err(|e| self.err(e))?.map(|v| v.value());
            let snapshot = replay.remove(key).map_err(|e| self.err(e))?.map(|v| v.value());
            let replay_snapshot = match snapshot {
                None => None,
                Some((0, _)) => Some(None),
                Some((1, highest)) => Some(Some(highest)),
                Some((tag, _)) => {
                    return Err(StoreError::Corrupt {
                        path: self.path.clone(),
                        detail: format!("replay snapshot of {key:?} has unknown tag {tag}"),
                    })
                }
            };
            // App. B.1.1: never below what was reserved before.
            let marker = reserved_bound.map_or(start, |b| b.max(start));
            seq.insert(key, marker).map_err(|e| self.err(e))?;
            loaded = Loaded { reserved_bound, replay_snapshot };
        }
        txn.commit().map_err(|e| self.err(e))?;
        Ok(loaded)
    }

    /// Durably stores `until` as the reservation bound of `key` (RFC 8613 App. B.1.1).
    /// Returns only after the commit is on disk. The bound never decreases.
    pub(crate) fn reserve(&mut self, key: &str, until: u64) -> Result<(), StoreError> {
        let txn = self.begin()?;
        {
            let mut seq = txn.open_table(SENDER_SEQ).map_err(|e| self.err(e))?;
            let old = seq.get(key).map_err(|e| self.err(e))?.map(|v| v.value());
            seq.insert(key, old.map_or(until, |o| o.max(until))).map_err(|e| self.err(e))?;
        }
        if self.crash_at == Some(CrashPoint::BeforeCommit) {
            // Dropping the transaction aborts it: nothing reaches the file, as if the process
            // had been killed before `commit`.
            drop(txn);
            return Err(StoreError::SimulatedCrash);
        }
        txn.commit().map_err(|e| self.err(e))?;
        if self.crash_at == Some(CrashPoint::AfterCommit) {
            return Err(StoreError::SimulatedCrash);
        }
        Ok(())
    }

    /// Durably stores the replay snapshot of `key` (clean shutdown, RFC 8613 App. B.1.2).
    pub(crate) fn store_replay(&mut self, key: &str, highest: Option<u64>) -> Result<(), StoreError> {
        let txn = self.begin()?;
        {
            let mut replay = txn.open_table(REPLAY).map_err(|e| self.err(e))?;
            let value = match highest {
                None => (0u8, 0u64),
                Some(h) => (1u8, h),
            };
            replay.insert(key, value).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// The stored reservation bound of `key` (for tests and diagnostics).
    pub(crate) fn reserved_bound(&self, key: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(|e| self.err(e))?;
        let seq = txn.open_table(SENDER_SEQ).map_err(|e| self.err(e))?;
        let value = seq.get(key).map_err(|e| self.err(e))?.map(|v| v.value());
        Ok(value)
    }
}
