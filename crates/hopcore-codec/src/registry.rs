//! The option registry: the one place where every CoAP option hopcore knows is described.
//!
//! For each option: number, name, value format, length bounds, whether it may repeat, and its
//! OSCORE class. The C/U/N flags are not stored: they follow from the number (RFC 7252 §5.4.6).
//! Options that are still "TBD" in a draft have configurable numbers with the draft's suggested
//! number as the default ([`DraftNumbers`]).

use std::sync::OnceLock;

/// Option numbers of the options hopcore knows, as constants.
pub mod num {
    pub const IF_MATCH: u16 = 1;
    pub const URI_HOST: u16 = 3;
    pub const ETAG: u16 = 4;
    pub const IF_NONE_MATCH: u16 = 5;
    pub const OBSERVE: u16 = 6;
    pub const URI_PORT: u16 = 7;
    pub const LOCATION_PATH: u16 = 8;
    pub const OSCORE: u16 = 9;
    pub const URI_PATH: u16 = 11;
    pub const CONTENT_FORMAT: u16 = 12;
    pub const MAX_AGE: u16 = 14;
    pub const URI_QUERY: u16 = 15;
    pub const HOP_LIMIT: u16 = 16;
    pub const ACCEPT: u16 = 17;
    pub const LOCATION_QUERY: u16 = 20;
    pub const EDHOC: u16 = 21;
    pub const BLOCK2: u16 = 23;
    pub const BLOCK1: u16 = 27;
    pub const SIZE2: u16 = 28;
    pub const PROXY_URI: u16 = 35;
    pub const PROXY_SCHEME: u16 = 39;
    pub const SIZE1: u16 = 60;
    pub const ECHO: u16 = 252;
    pub const NO_RESPONSE: u16 = 258;
    pub const REQUEST_TAG: u16 = 292;
}

/// The numbers of options defined in drafts whose numbers are not yet assigned.
///
/// Defaults are the suggested numbers of draft-ietf-core-groupcomm-proxy (Multicast-Timeout was
/// named Multicast-Signaling and Reply-From was Response-Forwarding in the -01 seed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DraftNumbers {
    /// draft-ietf-core-groupcomm-proxy §2 (TBD2).
    pub multicast_timeout: u16,
    /// draft-ietf-core-groupcomm-proxy §3 (TBD248).
    pub reply_from: u16,
    /// draft-ietf-core-groupcomm-proxy §6 (TBD24).
    pub group_etag: u16,
}

impl Default for DraftNumbers {
    fn default() -> Self {
        DraftNumbers { multicast_timeout: 2, reply_from: 248, group_etag: 24 }
    }
}

/// The format of an option value (RFC 7252 §3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueFormat {
    Empty,
    Opaque,
    Uint,
    String,
}

/// How OSCORE treats an option (RFC 8613 §4.1, Figure 5).
///
/// `EU` options (Observe, Block1/2, Size1/2, Max-Age, No-Response, Echo, Request-Tag) may occur
/// both as an Inner (encrypted) and an Outer (unprotected) option, with independent values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OscoreClass {
    /// Encrypted and integrity protected (Inner).
    E,
    /// Integrity protected only (in the AAD), Outer.
    I,
    /// Unprotected (Outer).
    U,
    /// Both an Inner (E) and an Outer (U) instance may exist.
    EU,
}

impl OscoreClass {
    /// Whether the inner (encrypted) instance of the option exists.
    pub fn has_inner(self) -> bool {
        matches!(self, OscoreClass::E | OscoreClass::EU)
    }
    /// Whether an outer instance exists.
    pub fn has_outer(self) -> bool {
        !matches!(self, OscoreClass::E)
    }
}

/// Everything hopcore knows about one option.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionDef {
    pub number: u16,
    pub name: &'static str,
    pub format: ValueFormat,
    pub min_len: u16,
    pub max_len: u16,
    pub repeatable: bool,
    pub class: OscoreClass,
}

impl OptionDef {
    const fn new(
        number: u16,
        name: &'static str,
        format: ValueFormat,
        (min_len, max_len): (u16, u16),
        repeatable: bool,
        class: OscoreClass,
    ) -> OptionDef {
        OptionDef { number, name, format, min_len, max_len, repeatable, class }
    }
    pub fn critical(&self) -> bool {
        is_critical(self.number)
    }
    pub fn unsafe_to_forward(&self) -> bool {
        is_unsafe(self.number)
    }
    pub fn no_cache_key(&self) -> bool {
        is_no_cache_key(self.number)
    }
}

/// Critical options have an odd number (RFC 7252 §5.4.6).
pub const fn is_critical(number: u16) -> bool {
    number & 1 == 1
}
/// Unsafe-to-forward options have bit 1 set (RFC 7252 §5.4.6).
pub const fn is_unsafe(number: u16) -> bool {
    number & 2 == 2
}
/// NoCacheKey options have bits 1-4 equal to 0b11100 (RFC 7252 §5.4.6).
pub const fn is_no_cache_key(number: u16) -> bool {
    number & 0x1e == 0x1c
}

/// The option registry. [`Registry::standard`] is the registry with the drafts' suggested
/// numbers; [`Registry::new`] takes other numbers for the draft options.
#[derive(Debug, Clone)]
pub struct Registry {
    /// Sorted by number.
    defs: Vec<OptionDef>,
    draft: DraftNumbers,
}

use OscoreClass::{E, EU, U};
use ValueFormat::{Empty, Opaque, String as Str, Uint};

/// Options with permanent numbers. Lengths from RFC 7252 §5.10 Table 4 unless noted.
const PERMANENT: &[OptionDef] = &[
    OptionDef::new(num::IF_MATCH, "If-Match", Opaque, (0, 8), true, E),
    OptionDef::new(num::URI_HOST, "Uri-Host", Str, (1, 255), false, U),
    OptionDef::new(num::ETAG, "ETag", Opaque, (1, 8), true, E),
    OptionDef::new(num::IF_NONE_MATCH, "If-None-Match", Empty, (0, 0), false, E),
    // RFC 7641 §2: 0-3 bytes; RFC 8613 §4.1.3.5: Inner and Outer.
    OptionDef::new(num::OBSERVE, "Observe", Uint, (0, 3), false, EU),
    OptionDef::new(num::URI_PORT, "Uri-Port", Uint, (0, 2), false, U),
    OptionDef::new(num::LOCATION_PATH, "Location-Path", Str, (0, 255), true, E),
    // RFC 8613 §2: 0-255 bytes, Class U (§4.1.3.6 and CP §2.2: an inner OSCORE option may be E).
    OptionDef::new(num::OSCORE, "OSCORE", Opaque, (0, 255), false, U),
    OptionDef::new(num::URI_PATH, "Uri-Path", Str, (0, 255), true, E),
    OptionDef::new(num::CONTENT_FORMAT, "Content-Format", Uint, (0, 2), false, E),
    OptionDef::new(num::MAX_AGE, "Max-Age", Uint, (0, 4), false, EU),
    OptionDef::new(num::URI_QUERY, "Uri-Query", Str, (0, 255), true, E),
    // RFC 8768 §3: 1 byte; draft-ietf-core-oscore-capable-proxies §3: Class U.
    OptionDef::new(num::HOP_LIMIT, "Hop-Limit", Uint, (1, 1), false, U),
    OptionDef::new(num::ACCEPT, "Accept", Uint, (0, 2), false, E),
    OptionDef::new(num::LOCATION_QUERY, "Location-Query", Str, (0, 255), true, E),
    // RFC 9668 §3.1: empty, Class U (a recipient ignores any value sent, so accept up to 255).
    OptionDef::new(num::EDHOC, "EDHOC", Empty, (0, 255), false, U),
    // RFC 7959 §2.1 / §4: Block options 0-3 bytes, Size 0-4; RFC 8613 §4.1.3.4: Inner and Outer.
    OptionDef::new(num::BLOCK2, "Block2", Uint, (0, 3), false, EU),
    OptionDef::new(num::BLOCK1, "Block1", Uint, (0, 3), false, EU),
    OptionDef::new(num::SIZE2, "Size2", Uint, (0, 4), false, EU),
    OptionDef::new(num::PROXY_URI, "Proxy-Uri", Str, (1, 1034), false, U),
    OptionDef::new(num::PROXY_SCHEME, "Proxy-Scheme", Str, (1, 255), false, U),
    OptionDef::new(num::SIZE1, "Size1", Uint, (0, 4), false, EU),
    // RFC 9175 §2.2.1: 1-40 bytes; §2.3: Inner or Outer.
    OptionDef::new(num::ECHO, "Echo", Opaque, (1, 40), false, EU),
    // RFC 7967 §2: 0-1 byte; RFC 8613 Figure 5: E and U.
    OptionDef::new(num::NO_RESPONSE, "No-Response", Uint, (0, 1), false, EU),
    // RFC 9175 §3.2: 0-8 bytes, repeatable; §3.2: both Class E and Class U.
    OptionDef::new(num::REQUEST_TAG, "Request-Tag", Opaque, (0, 8), true, EU),
];

impl Registry {
    /// A registry with the given numbers for the draft options.
    pub fn new(draft: DraftNumbers) -> Registry {
        let mut defs: Vec<OptionDef> = PERMANENT.to_vec();
        // draft-ietf-core-groupcomm-proxy §2: uint 0-4, Class U.
        defs.push(OptionDef::new(draft.multicast_timeout, "Multicast-Timeout", Uint, (0, 4), false, U));
        // draft-ietf-core-groupcomm-proxy §3: 5-1034 bytes (a CBOR sequence of CRIs), Class U.
        defs.push(OptionDef::new(draft.reply_from, "Reply-From", Opaque, (5, 1034), false, U));
        // draft-ietf-core-groupcomm-proxy §6.2.1: opaque 1-8, repeatable, Class U.
        defs.push(OptionDef::new(draft.group_etag, "Group-ETag", Opaque, (1, 8), true, U));
        // A configured draft number that collides with a permanent one replaces it: the
        // operator asked for it, and the later definition wins in the lookup below.
        defs.reverse();
        defs.sort_by_key(|d| d.number);
        defs.dedup_by_key(|d| d.number);
        Registry { defs, draft }
    }

    /// The registry with the drafts' suggested numbers.
    pub fn standard() -> &'static Registry {
        static STANDARD: OnceLock<Registry> = OnceLock::new();
        STANDARD.get_or_init(|| Registry::new(DraftNumbers::default()))
    }

    pub fn draft_numbers(&self) -> DraftNumbers {
        self.draft
    }

    /// The definition of option `number`, if hopcore knows it.
    pub fn get(&self, number: u16) -> Option<&OptionDef> {
        self.defs.binary_search_by_key(&number, |d| d.number).ok().map(|i| &self.defs[i])
    }

    /// All known options, sorted by number.
    pub fn iter(&self) -> impl Iterator<Item = &OptionDef> {
        self.defs.iter()
    }

    /// The option's name, or `Option<number>` for unknown ones.
    pub fn name(&self, number: u16) -> std::borrow::Cow<'static, str> {
        match self.get(number) {
            Some(d) => d.name.into(),
            None => format!("Option{number}").into(),
        }
    }

    /// The OSCORE class of an option. RFC 8613 §4.1: "Options that are unknown or for which
    /// OSCORE processing is not defined SHALL be processed as Class E".
    pub fn oscore_class(&self, number: u16) -> OscoreClass {
        self.get(number).map_or(OscoreClass::E, |d| d.class)
    }

    /// Whether a value is acceptable for a known option (length within bounds).
    /// RFC 7252 §5.4.3: a value outside the bounds is treated like an unrecognized option.
    pub fn value_ok(&self, number: u16, value: &[u8]) -> bool {
        match self.get(number) {
            Some(d) => (d.min_len as usize..=d.max_len as usize).contains(&value.len()),
            None => false,
        }
    }

    /// The first option occurrence that must be treated as an unrecognized critical option:
    /// unknown critical options (RFC 7252 §5.4.1), critical options with a value of bad
    /// length (§5.4.3), and supernumerary occurrences of non-repeatable critical options
    /// (§5.4.5). Elective ones in those situations are silently ignored by the caller.
    pub fn first_bad_critical<'a, I>(&self, options: I) -> Option<u16>
    where
        I: IntoIterator<Item = (u16, &'a [u8])>,
    {
        let mut prev: Option<u16> = None;
        for (number, value) in options {
            let repeated = prev == Some(number);
            prev = Some(number);
            if !is_critical(number) {
                continue;
            }
            match self.get(number) {
                None => return Some(number),
                Some(d) if repeated && !d.repeatable => return Some(number),
                Some(_) if !self.value_ok(number, value) => return Some(number),
                Some(_) => {}
            }
        }
        None
    }

    /// Whether the value should be shown as text or hex by diagnostic output.
    pub fn format(&self, number: u16) -> ValueFormat {
        self.get(number).map_or(ValueFormat::Opaque, |d| d.format)
    }
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new(DraftNumbers::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_follow_from_number() {
        // RFC 7252 §5.10 Table 4 flags.
        let r = Registry::standard();
        let d = |n| *r.get(n).unwrap();
        assert!(d(num::IF_MATCH).critical());
        assert!(!d(num::ETAG).critical());
        assert!(d(num::URI_HOST).critical() && d(num::URI_HOST).unsafe_to_forward());
        assert!(d(num::PROXY_URI).unsafe_to_forward());
        assert!(d(num::SIZE1).no_cache_key());
        assert!(!d(num::MAX_AGE).critical() && d(num::MAX_AGE).unsafe_to_forward());
        assert!(d(num::OSCORE).critical() && !d(num::OSCORE).unsafe_to_forward());
    }

    #[test]
    fn oscore_classes_match_rfc8613_figure5() {
        let r = Registry::standard();
        for (n, c) in [
            (1, E),
            (3, U),
            (4, E),
            (5, E),
            (6, EU),
            (7, U),
            (8, E),
            (9, U),
            (11, E),
            (12, E),
            (14, EU),
            (15, E),
            (17, E),
            (20, E),
            (23, EU),
            (27, EU),
            (28, EU),
            (35, U),
            (39, U),
            (60, EU),
            (258, EU),
        ] {
            assert_eq!(r.oscore_class(n), c, "option {n}");
        }
        // CP §3: Hop-Limit is Class U; unknown options are Class E (RFC 8613 §4.1).
        assert_eq!(r.oscore_class(num::HOP_LIMIT), U);
        assert_eq!(r.oscore_class(65000), E);
    }

    #[test]
    fn draft_numbers_are_configurable() {
        let r = Registry::standard();
        assert_eq!(r.get(2).unwrap().name, "Multicast-Timeout");
        assert_eq!(r.get(248).unwrap().name, "Reply-From");
        assert_eq!(r.get(24).unwrap().name, "Group-ETag");
        let r2 = Registry::new(DraftNumbers { multicast_timeout: 65002, reply_from: 65004, group_etag: 65006 });
        assert!(r2.get(2).is_none());
        assert_eq!(r2.get(65002).unwrap().name, "Multicast-Timeout");
        assert_eq!(r2.oscore_class(65004), U);
        assert!(r2.iter().zip(r2.iter().skip(1)).all(|(a, b)| a.number < b.number));
    }

    #[test]
    fn bad_critical_detection() {
        let r = Registry::standard();
        let ok: [(u16, &[u8]); 2] = [(11, b"a"), (11, b"b")];
        assert_eq!(r.first_bad_critical(ok), None);
        // Unknown critical option.
        assert_eq!(r.first_bad_critical([(11, &b"a"[..]), (2049, &b""[..])]), Some(2049));
        // Unknown elective option is ignored.
        assert_eq!(r.first_bad_critical([(2048, &b""[..])]), None);
        // Repeated non-repeatable critical option (Uri-Host).
        assert_eq!(r.first_bad_critical([(3, &b"a"[..]), (3, &b"b"[..])]), Some(3));
        // Critical option with a too long value (Uri-Port 3 bytes).
        assert_eq!(r.first_bad_critical([(7, &[1u8, 2, 3][..])]), Some(7));
    }
}
