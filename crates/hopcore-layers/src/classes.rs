//! Where the option class of each outer layer is decided: CP §2.2 Steps 1-9
//! (draft-ietf-core-oscore-capable-proxies-07).
//!
//! When a sender applies a layer with the context it shares with an endpoint X, every option
//! of the message that RFC 8613 makes Class U or I is either kept as such or escalated to
//! Class E, depending on who consumes the option along the path. The path is described from
//! the sender's point of view: hop 1 is the next hop, the last hop the origin (for requests)
//! or the origin client (for responses).

use hopcore_codec::{num, OscoreClass, Registry};
use hopcore_oscore::{ClassPolicy, MessageKind};

/// A position on the path from the sender: 1 = the next hop.
pub type Hop = usize;

/// What the sender knows about one option of the message.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OptionRole {
    /// The sender itself added the option to the message (CP §2.2 Step 1).
    pub added_by_sender: bool,
    /// The hops that consume the option (have access to it for processing), nearest first.
    pub consumers: Vec<Hop>,
}

impl OptionRole {
    pub fn added(consumers: impl Into<Vec<Hop>>) -> OptionRole {
        OptionRole { added_by_sender: true, consumers: consumers.into() }
    }
    pub fn relayed(consumers: impl Into<Vec<Hop>>) -> OptionRole {
        OptionRole { added_by_sender: false, consumers: consumers.into() }
    }
    /// The immediately next consumer.
    fn next_consumer(&self) -> Option<Hop> {
        self.consumers.iter().copied().min()
    }
}

/// The knowledge CP §2.2 needs to protect one layer.
#[derive(Debug, Clone)]
pub struct LayerTarget<'r> {
    /// Where X, the other endpoint of this layer's context, is on the path.
    pub x: Hop,
    /// Roles of the options in the message, by number. Options not listed are consumed by the
    /// last hop only (the origin) and were added by the sender.
    pub roles: Vec<(u16, OptionRole)>,
    /// The last hop (the origin server of a request).
    pub last: Hop,
    /// The message includes Proxy-Scheme (CP §2.2 Step 7).
    pub has_proxy_scheme: bool,
    pub registry: &'r Registry,
}

impl LayerTarget<'_> {
    fn role(&self, number: u16) -> OptionRole {
        self.roles
            .iter()
            .find(|(n, _)| *n == number)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| OptionRole::added(vec![self.last]))
    }

    /// CP §2.2 Step 5: whether X needs the option before (or in order to) remove this layer.
    /// The EDHOC option marks an EDHOC + OSCORE combined request, which X must see before
    /// OSCORE processing (RFC 9668 §3.1).
    fn needed_before_removal(&self, number: u16) -> bool {
        number == num::EDHOC
    }

    /// CP §2.2 Steps 1-9 for one option originally of Class U or I.
    pub fn decide(&self, number: u16, original: OscoreClass) -> OscoreClass {
        let role = self.role(number);
        let next = role.next_consumer();
        // Step 1: added by the sender → Step 2; otherwise → Step 4.
        let mut step = if role.added_by_sender { 2 } else { 4 };
        loop {
            step = match step {
                // Step 2: X is a consumer → Step 3; otherwise → Step 4.
                2 => {
                    if role.consumers.contains(&self.x) {
                        3
                    } else {
                        4
                    }
                }
                // Step 3: X is the immediately next consumer → Step 5; otherwise → Step 9.
                3 => {
                    if next == Some(self.x) {
                        5
                    } else {
                        9
                    }
                }
                // Step 4: X is the next hop, or the next hop is not the immediately next
                // consumer → Step 6; otherwise → Step 9.
                4 => {
                    if self.x == 1 || next != Some(1) {
                        6
                    } else {
                        9
                    }
                }
                // Step 5: X needs the option before removing the layer → Step 9; else Step 6.
                5 => {
                    if self.needed_before_removal(number) {
                        9
                    } else {
                        6
                    }
                }
                // Step 6: Uri-Host or Uri-Port → Step 7; otherwise → Step 8.
                6 => {
                    if number == num::URI_HOST || number == num::URI_PORT {
                        7
                    } else {
                        8
                    }
                }
                // Step 7: the message includes Proxy-Scheme → Step 8; otherwise → Step 9.
                7 => {
                    if self.has_proxy_scheme {
                        8
                    } else {
                        9
                    }
                }
                // Step 8: Class E.
                8 => return OscoreClass::E,
                // Step 9: the original class.
                _ => return original,
            };
        }
    }
}

impl ClassPolicy for LayerTarget<'_> {
    fn class(&self, number: u16, _kind: MessageKind) -> OscoreClass {
        let original = self.registry.oscore_class(number);
        match original {
            // "This procedure does not apply to options that are specified (also) as Class E."
            OscoreClass::E | OscoreClass::EU => original,
            OscoreClass::U | OscoreClass::I => self.decide(number, original),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(x: Hop, last: Hop, roles: Vec<(u16, OptionRole)>, proxy_scheme: bool) -> LayerTarget<'static> {
        LayerTarget { x, roles, last, has_proxy_scheme: proxy_scheme, registry: Registry::standard() }
    }

    /// CP Appendix "With Forward-Proxy; OSCORE: C-S, C-P": the client's request to S via P.
    /// Path from the client: P = 1, S = 2.
    #[test]
    fn forward_proxy_c_s_and_c_p() {
        let proxy_opts = |x| {
            target(
                x,
                2,
                vec![
                    (num::URI_HOST, OptionRole::added(vec![1])),
                    (num::PROXY_SCHEME, OptionRole::added(vec![1])),
                    // The OSCORE option of the C-S layer, consumed by S.
                    (num::OSCORE, OptionRole::added(vec![2])),
                ],
                true,
            )
        };
        // Layer C-S (X = S): the proxy options stay Class U for P to use.
        let cs = proxy_opts(2);
        assert_eq!(cs.class(num::URI_HOST, MessageKind::Request), OscoreClass::U);
        assert_eq!(cs.class(num::PROXY_SCHEME, MessageKind::Request), OscoreClass::U);
        // Layer C-P (X = P): encrypted, P reads them after removing its layer; the inner
        // OSCORE option too (the figure's C→P payload holds Uri-Host, OSCORE, Proxy-Scheme).
        let cp = proxy_opts(1);
        assert_eq!(cp.class(num::URI_HOST, MessageKind::Request), OscoreClass::E);
        assert_eq!(cp.class(num::PROXY_SCHEME, MessageKind::Request), OscoreClass::E);
        assert_eq!(cp.class(num::OSCORE, MessageKind::Request), OscoreClass::E);
        // Class E options are never re-decided.
        assert_eq!(cp.class(num::URI_PATH, MessageKind::Request), OscoreClass::E);
    }

    /// Uri-Host without Proxy-Scheme (a reverse proxy or origin uses it): Step 7 keeps U.
    #[test]
    fn uri_host_without_proxy_scheme_stays_outer() {
        let t = target(1, 1, vec![(num::URI_HOST, OptionRole::added(vec![1]))], false);
        assert_eq!(t.class(num::URI_HOST, MessageKind::Request), OscoreClass::U);
    }

    /// CP §3: Hop-Limit added by the client, consumed by every proxy (P1 = 1, P2 = 2; S = 3).
    #[test]
    fn hop_limit_in_a_two_proxy_chain() {
        let roles = vec![(num::HOP_LIMIT, OptionRole::added(vec![1, 2]))];
        // Layer C-S (X = S, not a consumer; the next hop is the next consumer): Class U.
        assert_eq!(target(3, 3, roles.clone(), false).class(num::HOP_LIMIT, MessageKind::Request), OscoreClass::U);
        // Layer C-P1 (X = P1, the immediate next consumer): Class E.
        assert_eq!(target(1, 3, roles.clone(), false).class(num::HOP_LIMIT, MessageKind::Request), OscoreClass::E);
        // Layer C-P2 (X = P2, a consumer but not the next one): Class U, P1 must see it.
        assert_eq!(target(2, 3, roles, false).class(num::HOP_LIMIT, MessageKind::Request), OscoreClass::U);
    }

    /// A proxy relaying an option it did not add (Step 1 → Step 4): escalated only when X is
    /// the next hop or the next hop does not consume it.
    #[test]
    fn relayed_options() {
        let roles = vec![(num::OSCORE, OptionRole::relayed(vec![2]))];
        // X is the next hop: Class E (Step 4 → 6 → 8).
        assert_eq!(target(1, 2, roles.clone(), false).class(num::OSCORE, MessageKind::Request), OscoreClass::E);
        // X further away, and the next hop does not consume it: Class E too.
        assert_eq!(target(2, 3, roles, false).class(num::OSCORE, MessageKind::Request), OscoreClass::E);
        // X further away and the next hop consumes it: stays U.
        let roles = vec![(num::PROXY_URI, OptionRole::relayed(vec![1]))];
        assert_eq!(target(2, 3, roles, false).class(num::PROXY_URI, MessageKind::Request), OscoreClass::U);
    }

    /// RFC 9668: the EDHOC option is needed by X before removing the layer (Step 5 → 9).
    #[test]
    fn edhoc_option_stays_outer_for_its_consumer() {
        let t = target(1, 1, vec![(num::EDHOC, OptionRole::added(vec![1]))], false);
        assert_eq!(t.class(num::EDHOC, MessageKind::Request), OscoreClass::U);
    }
}
