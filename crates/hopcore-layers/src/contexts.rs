//! What the nesting engine needs from the endpoint's security state.
//!
//! The engine never owns contexts: the durable store (`hopcore-security`) implements this
//! trait, and so does the in-memory [`ContextList`] used by tests and simple setups.

use std::fmt::Debug;
use std::hash::Hash;

use hopcore_oscore::SecurityContext;

/// Access to an endpoint's OSCORE security contexts, by a small copyable handle.
pub trait SecurityContexts {
    /// A handle to one context.
    type Id: Copy + Eq + Hash + Debug + Send + Sync + 'static;

    /// The context whose Recipient ID is `kid` (and ID Context is `kid_context`, if given)
    /// (RFC 8613 §8.2 step 2).
    fn lookup_recipient(&self, kid: &[u8], kid_context: Option<&[u8]>) -> Option<Self::Id>;

    /// The context, for verifying (replay window updates) and for reading.
    fn context_mut(&mut self, id: Self::Id) -> Option<&mut SecurityContext>;

    /// The context, ready to send: any sequence-number reservation that must be durable
    /// before a Partial IV is used (RFC 8613 App. B.1.1) has been made.
    fn prepare_send(&mut self, id: Self::Id) -> Result<&mut SecurityContext, String>;

    /// The identity of the peer of this context, for applications and logs (never a key).
    fn label(&self, id: Self::Id) -> String;

    /// A fresh Echo value for a request whose freshness is unverified (RFC 8613 App. B.1.2,
    /// RFC 9175 §2.4). `None`: this endpoint does not run the Echo exchange.
    fn issue_echo(&mut self, _id: Self::Id) -> Option<Vec<u8>> {
        None
    }

    /// Whether `echo` is a value this endpoint issued for `id` and that is still fresh.
    fn verify_echo(&mut self, _id: Self::Id, _echo: &[u8]) -> bool {
        false
    }
}

/// A plain list of contexts with their labels (in memory, no persistence).
#[derive(Default)]
pub struct ContextList {
    entries: Vec<(SecurityContext, String)>,
}

impl std::fmt::Debug for ContextList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.entries.iter().map(|(_, l)| l)).finish()
    }
}

impl ContextList {
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a context; its handle is its index.
    pub fn add(&mut self, ctx: SecurityContext, label: impl Into<String>) -> usize {
        self.entries.push((ctx, label.into()));
        self.entries.len() - 1
    }
    pub fn get(&self, id: usize) -> Option<&SecurityContext> {
        self.entries.get(id).map(|(c, _)| c)
    }
}

impl SecurityContexts for ContextList {
    type Id = usize;

    fn lookup_recipient(&self, kid: &[u8], kid_context: Option<&[u8]>) -> Option<usize> {
        self.entries
            .iter()
            .position(|(c, _)| c.recipient_id() == kid && kid_context.is_none_or(|kc| c.id_context() == Some(kc)))
    }
    fn context_mut(&mut self, id: usize) -> Option<&mut SecurityContext> {
        self.entries.get_mut(id).map(|(c, _)| c)
    }
    fn prepare_send(&mut self, id: usize) -> Result<&mut SecurityContext, String> {
        self.entries.get_mut(id).map(|(c, _)| c).ok_or_else(|| format!("no security context #{id}"))
    }
    fn label(&self, id: usize) -> String {
        self.entries.get(id).map_or_else(|| format!("#{id}"), |(_, l)| l.clone())
    }
}
