//! Which OSCORE class an option gets in one protection layer, and the per-call settings of a
//! layer ([`Layer`]).
//!
//! RFC 8613 fixes the classes (Figure 5, [`Rfc8613Classes`]). With nested OSCORE
//! (draft-ietf-core-oscore-capable-proxies, "CP") the class of an option that is originally
//! Class U or I depends on the layer being applied (CP §2.2, Steps 1-9), so the decision is a
//! parameter: anything implementing [`ClassPolicy`], including a closure
//! `Fn(u16, MessageKind) -> OscoreClass`. The nesting engine supplies its own CP §2.2 rule;
//! [`NestedClasses`] is the simplest such rule (only the existing OSCORE option becomes
//! Class E).
//!
//! The same policy must be used to protect and to unprotect a layer: the receiver uses it to find
//! the Class I options that go into the AAD (RFC 8613 §5.4), to discard Outer options that have
//! an Inner instance (§8.2 / §8.4 step 1), and to decide whether an inner OSCORE option is
//! acceptable (§4.1.3.7 vs CP §2.2).

use core::fmt;

use hopcore_codec::{num, Options, OscoreClass, Registry};

/// Whether the message of a layer is a request or a response. Class decisions may differ (e.g.
/// a Class I option that only exists in responses).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageKind {
    /// A request (or a signaling message protected as a request, RFC 8613 §4.3).
    Request,
    /// A response.
    Response,
}

/// Decides the OSCORE class of each option of the message being protected in one layer.
///
/// Return values and what protection does with them:
/// - [`OscoreClass::E`]: Inner only (encrypted; RFC 8613 §4.1.1). Returning `E` for
///   [`num::OSCORE`] allows nesting: an OSCORE option of an inner layer is then encrypted by this
///   layer (CP §2.2); any other answer for it makes protection fail as RFC 8613 §4.1.3.7 requires.
/// - [`OscoreClass::U`]: Outer only, unprotected (§4.1.2).
/// - [`OscoreClass::I`]: Outer, integrity protected through the AAD (§4.1.2, §5.4).
/// - [`OscoreClass::EU`]: the message's instance is Inner; Observe is additionally copied to
///   the Outer options (§4.1.3.5). Outer instances of the other EU options (outer Block, outer
///   Max-Age 0, ...) are hop-by-hop and are passed in [`Layer::outer_options`].
pub trait ClassPolicy {
    /// The class of option `number` in a message of `kind`.
    fn class(&self, number: u16, kind: MessageKind) -> OscoreClass;
}

impl<F> ClassPolicy for F
where
    F: Fn(u16, MessageKind) -> OscoreClass,
{
    fn class(&self, number: u16, kind: MessageKind) -> OscoreClass {
        self(number, kind)
    }
}

/// RFC 8613 Figure 5 from the standard option registry; unknown options are Class E (§4.1).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Rfc8613Classes;

impl ClassPolicy for Rfc8613Classes {
    fn class(&self, number: u16, _kind: MessageKind) -> OscoreClass {
        Registry::standard().oscore_class(number)
    }
}

/// RFC 8613 Figure 5 from a given registry (e.g. one with configured draft option numbers).
#[derive(Debug, Clone, Copy)]
pub struct RegistryClasses<'r>(pub &'r Registry);

impl ClassPolicy for RegistryClasses<'_> {
    fn class(&self, number: u16, _kind: MessageKind) -> OscoreClass {
        self.0.oscore_class(number)
    }
}

/// An outer layer over a message that already carries an OSCORE option: that option is Class E
/// (CP §2.2: for the OSCORE option added by an inner layer, the endpoint X of the outer layer is
/// not its consumer, so Steps 1, 2, 4, 6 and 8 make it Class E). Every other option keeps the
/// class of the wrapped policy; a full CP §2.2 rule (Uri-Host, Proxy-Scheme, ... depending on
/// who consumes them) is the nesting engine's to supply.
#[derive(Debug, Clone, Copy, Default)]
pub struct NestedClasses<P = Rfc8613Classes>(pub P);

impl<P: ClassPolicy> ClassPolicy for NestedClasses<P> {
    fn class(&self, number: u16, kind: MessageKind) -> OscoreClass {
        if number == num::OSCORE {
            OscoreClass::E
        } else {
            self.0.class(number, kind)
        }
    }
}

/// The settings of one protect/unprotect call.
#[derive(Clone, Copy)]
pub struct Layer<'a> {
    /// The class decision (default: RFC 8613 Figure 5).
    pub classes: &'a dyn ClassPolicy,
    /// Options to add to the OSCORE message as Outer options, unprotected unless the policy
    /// says Class I: outer Block1/Block2/Size for hop-by-hop fragmentation (RFC 8613
    /// §4.1.3.4.2), an outer Max-Age 0 (§4.1.3.1), an outer No-Response 26 (§4.1.3.6), ...
    /// They must not contain the OSCORE option. Ignored when unprotecting.
    pub outer_options: Option<&'a Options>,
    /// Requests only: send the ID Context of the security context, if it has one, as 'kid
    /// context' (RFC 8613 §5.1, §6.1). Ignored for responses and when unprotecting.
    pub include_kid_context: bool,
}

impl Layer<'static> {
    /// RFC 8613 classes, no extra outer options, no 'kid context'.
    pub const RFC8613: Layer<'static> =
        Layer { classes: &Rfc8613Classes, outer_options: None, include_kid_context: false };
}

impl Default for Layer<'static> {
    fn default() -> Self {
        Layer::RFC8613
    }
}

impl<'a> Layer<'a> {
    /// Replaces the class policy.
    pub fn with_classes(self, classes: &'a dyn ClassPolicy) -> Layer<'a> {
        Layer { classes, ..self }
    }

    /// Sets the extra Outer options.
    pub fn with_outer_options(self, outer: &'a Options) -> Layer<'a> {
        Layer { outer_options: Some(outer), ..self }
    }

    /// Sets whether requests carry the 'kid context'.
    pub fn with_kid_context(self, include: bool) -> Layer<'a> {
        Layer { include_kid_context: include, ..self }
    }

    pub(crate) fn class(&self, number: u16, kind: MessageKind) -> OscoreClass {
        self.classes.class(number, kind)
    }
}

impl fmt::Debug for Layer<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Layer")
            .field("outer_options", &self.outer_options)
            .field("include_kid_context", &self.include_kid_context)
            .finish_non_exhaustive()
    }
}
