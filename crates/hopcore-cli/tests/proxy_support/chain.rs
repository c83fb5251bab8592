//! CP's example "With Two Forward-Proxies; OSCORE: C-S, C-P1, P1-P2, P2-S"
//! (draft-ietf-core-oscore-capable-proxies, Appendix), with `hopcore` processes: the client
//! addresses only P1 (`--proxy P1`); P1 forwards to P2 by its own configuration
//! (`upstream_proxy`). Sender IDs as in the example: the client 5f with the origin and 20 with
//! P1, P1 d4 with P2, P2 77 with the origin.

use std::net::SocketAddr;
use std::path::Path;

use super::{entry, write, HopProxy, C_P, C_S, P_P, P_S};

/// Sender IDs: (one side, the other side) of each leg.
pub const C_S_IDS: (&str, &str) = ("5f", "0b");
pub const C_P1_IDS: (&str, &str) = ("20", "0a");
pub const P1_P2_IDS: (&str, &str) = ("d4", "0c");
pub const P2_S_IDS: (&str, &str) = ("77", "0d");

/// One origin of the chain: its address, and the Sender IDs of the client and of P2 with it
/// (distinct per origin, so that no two contexts share keys and sequence numbers).
#[derive(Clone, Copy)]
pub struct Origin<'a> {
    pub addr: SocketAddr,
    pub c_s: (&'a str, &'a str),
    pub p2_s: (&'a str, &'a str),
}

impl Origin<'_> {
    /// The origin's credentials: the client as ":client" (C-S), P2 as ":p2" (P2-S).
    pub fn credentials(c_s: (&str, &str), p2_s: (&str, &str)) -> String {
        [entry("peer = \":client\"", c_s.1, c_s.0, C_S), entry("peer = \":p2\"", p2_s.1, p2_s.0, P_S)].concat()
    }
}

/// The two proxies, the client's credentials files, and its state directory.
pub struct Chain {
    pub p1: HopProxy,
    pub p2: HopProxy,
    /// C-S (one entry per origin) and C-P1.
    pub client: String,
    /// C-P1 only: no end-to-end layer.
    pub client_hop_only: String,
    pub state: String,
    /// P1's URI, for `--proxy`.
    pub p1_uri: String,
}

impl Chain {
    /// Starts P2 (its clients: P1 as ":p1"; its next hops: the origins), then P1 (its client:
    /// the client as ":client"; `upstream_proxy` = P2, with the P1-P2 context for P2's URI).
    pub fn start(dir: &Path, origins: &[Origin<'_>]) -> Chain {
        let mut p2_creds = entry("peer = \":p1\"", P1_P2_IDS.1, P1_P2_IDS.0, P_P);
        for o in origins {
            p2_creds += &entry(&format!("uri = \"coap://{}/*\"", o.addr), o.p2_s.0, o.p2_s.1, P_S);
        }
        let p2_creds = write(&dir.join("p2.toml"), &p2_creds);
        let p2_state = dir.join("p2-state");
        let p2 = HopProxy::start(dir, "p2", &["--credentials", &p2_creds, "--state-dir", p2_state.to_str().unwrap()]);

        let p1_creds = [
            entry("peer = \":client\"", C_P1_IDS.1, C_P1_IDS.0, C_P),
            entry(&format!("uri = \"{}*\"", p2.uri()), P1_P2_IDS.0, P1_P2_IDS.1, P_P),
        ]
        .concat();
        let p1_creds = write(&dir.join("p1.toml"), &p1_creds);
        let p1_config = write(&dir.join("p1-config.toml"), &format!("upstream_proxy = \"{}\"\n", p2.uri()));
        let p1_state = dir.join("p1-state");
        let p1 = HopProxy::start(
            dir,
            "p1",
            &["--config", &p1_config, "--credentials", &p1_creds, "--state-dir", p1_state.to_str().unwrap()],
        );

        let hop = entry(&format!("uri = \"{}*\"", p1.uri()), C_P1_IDS.0, C_P1_IDS.1, C_P);
        let mut client = hop.clone();
        for o in origins {
            client += &entry(&format!("uri = \"coap://{}/*\"", o.addr), o.c_s.0, o.c_s.1, C_S);
        }
        let client = write(&dir.join("client.toml"), &client);
        let client_hop_only = write(&dir.join("client-hop-only.toml"), &hop);
        let state = dir.join("client-state").to_str().expect("UTF-8 path").to_string();
        let p1_uri = p1.uri();
        Chain { p1, p2, client, client_hop_only, state, p1_uri }
    }

    /// `hopcore METHOD -v --proxy P1 --credentials CREDS ARGS URI` (one state directory for
    /// every run, so that sequence numbers go on).
    pub fn client_args<'a>(&'a self, creds: &'a str, method: &'a str, extra: &[&'a str], uri: &'a str) -> Vec<&'a str> {
        let mut args = vec![method, "-v", "--timeout", "15", "--credentials", creds, "--state-dir", &self.state];
        args.extend(["--proxy", &self.p1_uri]);
        args.extend(extra);
        args.push(uri);
        args
    }
}
