//! OSCORE-capable proxies (draft-ietf-core-oscore-capable-proxies, "CP") against aiocoap 0.4.17
//! (issue #4), on loopback:
//!
//! (a) `hopcore get --credentials --proxy-scheme` through `aiocoap-proxy --forward` to
//!     `scripts/aiocoap_origin.py --credentials`: CF-4 (end to end only) and CF-5 (end to end
//!     plus C-P: aiocoap-proxy with `--credentials` removes the C-P layer and relays the nested
//!     end-to-end OSCORE request);
//! (b) `aiocoap-client --proxy` (plain) through `hopcore proxy` to aiocoap_origin.py: a plain
//!     hopcore proxy (CF-0), and a hopcore proxy that adds its own P-S layer (CF-2), which the
//!     aiocoap origin verifies;
//! (c) `aiocoap-client --credentials` (end-to-end OSCORE) through a `hopcore proxy` reverse
//!     route (`[[route]] path = "/"`) to aiocoap_origin.py `--credentials`. aiocoap-client cannot
//!     protect a request it sends through a forward proxy (scripts/PEERS.md), but a reverse
//!     proxy looks like the origin to it: its credentials name the proxy's URI with the context
//!     it shares with the origin.
//!
//! Peer deviations met here (also in scripts/PEERS.md):
//! - aiocoap-proxy (forward) takes only the Proxy-Scheme form; a Proxy-Uri request gets 5.01
//!   "URI splitting not implemented, please use Proxy-Scheme." So the hopcore client uses
//!   `--proxy-scheme`.
//! - aiocoap-proxy with `--credentials` tries to remove an OSCORE layer from every request that
//!   carries an OSCORE option, before looking at the proxy options (CP §2.4 has Steps 1-4,
//!   forwarding, before Step 6, decryption). A CF-4 request (only the end-to-end layer, whose kid
//!   the proxy does not know) gets an unprotected 4.01 "Security context not found" from it. So
//!   CF-4 runs through a second aiocoap-proxy without credentials; the 4.01 is asserted.
//! - aiocoap-proxy rejects relayed responses that carry Max-Age: hopcore's unprotected OSCORE
//!   errors (Max-Age 0, RFC 8613 §8.2) reach the client as the proxy's 4.02 "Unsafe options in
//!   request: MAX_AGE" (asserted, with a hopcore origin and a wrong key).
//! - The reverse route must be the catch-all `path = "/"`: the path of an end-to-end protected
//!   request is encrypted (Class E), and aiocoap-client sends no Uri-Host for an IP literal,
//!   so the proxy sees no Uri-* option at all.
//!
//! Runs when `HOPCORE_PEERS_VENV` is set (scripts/test.sh sets it); prints "skipped"
//! otherwise. With it set, a missing or broken peer fails.

mod proxy_support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Instant;

use proxy_support::*;

/// aiocoap_origin.py's /large: this 64-byte pattern, 64 times.
const LARGE_PATTERN: &str = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/";

/// `scripts/aiocoap_origin.py --bind 127.0.0.1:PORT [--credentials FILE]`.
fn aiocoap_origin(venv: &Path, dir: &Path, name: &str, credentials: Option<&str>) -> (Proc, SocketAddr) {
    let port = free_port();
    let mut cmd = Command::new(venv.join("bin/python"));
    cmd.arg(repo().join("scripts/aiocoap_origin.py")).args(["--bind", &format!("127.0.0.1:{port}")]);
    if let Some(c) = credentials {
        cmd.args(["--credentials", c]);
    }
    let (p, _) = Proc::start(cmd, dir, name, "READY");
    (p, SocketAddr::from(([127, 0, 0, 1], port)))
}

/// `aiocoap-proxy --forward --bind 127.0.0.1:PORT [--credentials FILE]`.
fn aiocoap_proxy(venv: &Path, dir: &Path, name: &str, credentials: Option<&str>) -> (Proc, SocketAddr) {
    let tool = venv.join("bin/aiocoap-proxy");
    Proc::start_silent(dir, name, |port| {
        let mut cmd = Command::new(&tool);
        cmd.args(["--forward", "--bind", &format!("127.0.0.1:{port}")]);
        if let Some(c) = credentials {
            cmd.args(["--credentials", c]);
        }
        cmd
    })
}

/// `aiocoap-client --no-color ARGS`, bounded.
fn aiocoap_client(venv: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(venv.join("bin/aiocoap-client"));
    cmd.arg("--no-color").args(args).env("NO_COLOR", "1");
    run_bounded(&mut cmd, CLIENT_LIMIT)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

/// The origin's context for a client (aiocoap JSON credentials with one ":client1" entry).
fn origin_credentials(dir: &Path, secret: &str) -> String {
    let ctx = aiocoap_context(&dir.join("origin-ctx"), "02", "01", secret);
    aiocoap_credentials(&dir.join("origin.json"), &[(":client1", &ctx)])
}

/// /whoami over OSCORE with the given kid and claim.
fn assert_whoami(text: &str, kid: &str, claim: &str, context: &str) {
    assert!(text.contains("OSCORE: yes"), "{context}: not protected end to end:\n{text}");
    assert!(text.contains(&format!("kid: {kid}\n")), "{context}: kid {kid} expected:\n{text}");
    assert!(text.contains(&format!("claims: {claim}\n")), "{context}: claim {claim} expected:\n{text}");
}

/// (a) CF-4 and CF-5 through aiocoap-proxy to the aiocoap origin.
#[test]
fn hopcore_client_cf4_and_cf5_through_aiocoap_proxy() {
    let Some(venv) = gate("hopcore_client_cf4_and_cf5_through_aiocoap_proxy") else { return };
    let t0 = Instant::now();
    let work = TempDir::new("proxy-interop-a");
    let dir = work.path();

    let origin_json = origin_credentials(dir, C_S);
    let (_origin, origin) = aiocoap_origin(&venv, dir, "aiocoap-origin", Some(&origin_json));
    // The proxy's side of C-P: its client ":client1" (the hopcore client, Sender ID 20).
    let proxy_ctx = aiocoap_context(&dir.join("proxy-ctx"), "0a", "20", C_P);
    let proxy_json = aiocoap_credentials(&dir.join("proxy.json"), &[(":client1", &proxy_ctx)]);
    let (_ap, with_creds) = aiocoap_proxy(&venv, dir, "aiocoap-proxy-oscore", Some(&proxy_json));
    let (_plain, plain) = aiocoap_proxy(&venv, dir, "aiocoap-proxy-plain", None);

    // The client's credentials: hopcore TOML for CF-5, aiocoap JSON (a context directory) for
    // CF-4; one state directory, so that the C-S sequence numbers go on across the runs.
    let base = format!("coap://{origin}");
    let cs_dir = aiocoap_context(&dir.join("client-cs"), "01", "02", C_S);
    let cf4 = aiocoap_credentials(&dir.join("client-cf4.json"), &[(&format!("{base}/*"), &cs_dir)]);
    let cf5 = write(
        &dir.join("client-cf5.toml"),
        &[
            entry(&format!("uri = \"{base}/*\""), "01", "02", C_S),
            entry(&format!("uri = \"coap://{with_creds}*\""), "20", "0a", C_P),
        ]
        .concat(),
    );
    let state = dir.join("client-state");
    let get = |creds: &str, proxy: SocketAddr, method: &str, path: &str, extra: &[&str]| -> (String, Output) {
        let proxy = format!("coap://{proxy}");
        let uri = format!("{base}{path}");
        let mut args = vec![method, "-v", "--timeout", "15", "--credentials", creds, "--state-dir", path_str(&state)];
        args.extend(["--proxy", &proxy, "--proxy-scheme"]);
        args.extend(extra);
        args.push(&uri);
        let o = hopcore(&args);
        (format!("hopcore {}", args.join(" ")), o)
    };

    // CF-4: only the end-to-end layer; the plain aiocoap-proxy relays it.
    let (what, o) = get(&cf4, plain, "get", "/whoami", &[]);
    assert!(o.status.success(), "{}", show(&what, &o));
    assert_whoami(&out(&o), "01", ":client1", "CF-4");
    assert!(err(&o).contains("[no layer]") && err(&o).contains("(1 layers), response verified"), "{}", show(&what, &o));
    // Inner Block2 through the proxy: every block its own end-to-end exchange.
    let (what, o) = get(&cf4, plain, "get", "/large", &[]);
    assert!(o.status.success() && out(&o).trim_end().ends_with(&LARGE_PATTERN.repeat(64)), "{}", show(&what, &o));

    // Peer deviation: the aiocoap-proxy with credentials wants to decrypt the end-to-end layer.
    let (what, o) = get(&cf4, with_creds, "get", "/whoami", &[]);
    assert_eq!(o.status.code(), Some(1), "{}", show(&what, &o));
    assert!(
        err(&o).contains("unprotected 4.01") && err(&o).contains("Security context not found"),
        "{}",
        show(&what, &o)
    );

    // CF-5: the C-P layer for aiocoap-proxy, inside it the end-to-end layer for the origin.
    let (what, o) = get(&cf5, with_creds, "get", "/whoami", &[]);
    assert!(o.status.success(), "{}", show(&what, &o));
    assert_whoami(&out(&o), "01", ":client1", "CF-5");
    let e = err(&o);
    assert!(e.contains(&format!("proxy coap://{with_creds} [layer")) && e.contains("(kid 20)"), "{}", show(&what, &o));
    assert!(e.contains("(kid 01)") && e.contains("(2 layers), response verified"), "{}", show(&what, &o));
    let payload = "nested OSCORE through aiocoap-proxy";
    let (what, o) = get(&cf5, with_creds, "post", "/echo", &["--payload", payload]);
    assert!(o.status.success() && out(&o).contains(payload), "{}", show(&what, &o));
    let (what, o) = get(&cf5, with_creds, "get", "/large", &[]);
    assert!(o.status.success() && out(&o).trim_end().ends_with(&LARGE_PATTERN.repeat(64)), "{}", show(&what, &o));

    // Peer deviation: aiocoap-proxy turns a relayed response with Max-Age into its own 4.02.
    // hopcore's unprotected OSCORE errors carry Max-Age 0 (RFC 8613 §8.2), e.g. for a wrong key.
    let hop_creds = write(&dir.join("hopcore-origin.toml"), &entry("peer = \":client\"", "02", "01", C_S));
    let (_hs, hs) = hopcore_server(dir, "hopcore-origin", &hop_creds, &[]);
    let wrong = "0102030405060708090a0b0c0d0e0f99";
    let wrong = write(&dir.join("client-wrong.toml"), &entry(&format!("uri = \"coap://{hs}/*\""), "01", "02", wrong));
    let (uri, via) = (format!("coap://{hs}/hello"), format!("coap://{plain}"));
    let args = ["get", "--timeout", "15", "--credentials", &wrong, "--state-dir", path_str(&state)];
    let args: Vec<&str> = args.into_iter().chain(["--proxy", &via, "--proxy-scheme", &uri]).collect();
    let o = hopcore(&args);
    assert_eq!(o.status.code(), Some(1), "{}", show(&args.join(" "), &o));
    assert!(err(&o).contains("unprotected 4.02") && err(&o).contains("MAX_AGE"), "{}", show(&args.join(" "), &o));

    println!("proxy_interop (a): CF-4 and CF-5 through aiocoap-proxy in {:.1} s", t0.elapsed().as_secs_f64());
}

/// (b) aiocoap-client (plain) through a hopcore forward proxy: CF-0, and CF-2 with the hopcore
/// proxy protecting the P-S leg to the aiocoap origin.
#[test]
fn aiocoap_client_through_hopcore_forward_proxy() {
    let Some(venv) = gate("aiocoap_client_through_hopcore_forward_proxy") else { return };
    let t0 = Instant::now();
    let work = TempDir::new("proxy-interop-b");
    let dir = work.path();

    // The origin knows the hopcore proxy as ":proxy" (the P-S context: proxy Sender ID d4).
    let ps = aiocoap_context(&dir.join("origin-ps"), "04", "d4", P_S);
    let origin_json = aiocoap_credentials(&dir.join("origin.json"), &[(":proxy", &ps)]);
    let (_origin, origin) = aiocoap_origin(&venv, dir, "aiocoap-origin", Some(&origin_json));
    let base = format!("coap://{origin}");

    // CF-0: a plain hopcore proxy.
    let plain = HopProxy::start(dir, "hopcore-proxy-plain", &[]);
    let o = aiocoap_client(&venv, &["--proxy", &plain.uri(), &format!("{base}/whoami")]);
    assert!(o.status.success(), "{}", show("aiocoap-client --proxy (CF-0)", &o));
    assert!(out(&o).starts_with("OSCORE: no"), "{}", show("aiocoap-client --proxy (CF-0)", &o));
    let l = plain.exchange(1);
    assert!(l.contains(&format!("target={base}/whoami ")) && l.contains("code=2.05"), "{l}");
    // aiocoap-client sends Proxy-Scheme + Uri-Host + Uri-Port + Uri-Path; the request reaches
    // the origin from the proxy's upstream socket, not from the client.
    let from = out(&o).lines().find_map(|l| l.strip_prefix("from: ").map(str::to_string)).unwrap_or_default();
    assert!(from.starts_with("127.0.0.1:") && from != plain.addr.to_string(), "{}", out(&o));
    let o = aiocoap_client(&venv, &["--proxy", &plain.uri(), &format!("{base}/large")]);
    assert_eq!(out(&o), LARGE_PATTERN.repeat(64), "{}", show("aiocoap-client --proxy /large", &o));

    // CF-2: the hopcore proxy is an OSCORE client of the origin (P-S), for a plain client.
    let creds = write(&dir.join("proxy.toml"), &entry(&format!("uri = \"{base}/*\""), "d4", "04", P_S));
    let state = dir.join("proxy-state");
    let oscore = HopProxy::start(dir, "hopcore-proxy-ps", &["--credentials", &creds, "--state-dir", path_str(&state)]);
    let o = aiocoap_client(&venv, &["--proxy", &oscore.uri(), &format!("{base}/whoami")]);
    assert!(o.status.success(), "{}", show("aiocoap-client --proxy (CF-2)", &o));
    assert_whoami(&out(&o), "d4", ":proxy", "CF-2 (the origin sees the proxy)");
    let l = oscore.exchange(1);
    assert!(l.contains("layers_in=[]") && l.contains(&format!("layers_out=[\"{base}/*\"]")), "{l}");
    let payload = "P-S layer by hopcore, verified by aiocoap";
    let o =
        aiocoap_client(&venv, &["--proxy", &oscore.uri(), "-m", "POST", "--payload", payload, &format!("{base}/echo")]);
    assert_eq!(out(&o), payload, "{}", show("aiocoap-client --proxy POST /echo (CF-2)", &o));
    let o = aiocoap_client(&venv, &["--proxy", &oscore.uri(), &format!("{base}/large")]);
    assert_eq!(out(&o), LARGE_PATTERN.repeat(64), "{}", show("aiocoap-client --proxy /large (CF-2)", &o));

    println!("proxy_interop (b): aiocoap-client through hopcore proxies in {:.1} s", t0.elapsed().as_secs_f64());
}

/// The set-up of (c): the origin with the client's context, a hopcore reverse proxy with a
/// catch-all route to it (with `proxy_args`), and aiocoap-client credentials that give the
/// proxy's URI the context shared with the origin.
struct Reverse {
    _origin: Proc,
    proxy: HopProxy,
    origin: SocketAddr,
    client_json: String,
}

fn reverse_setup(venv: &Path, dir: &Path, proxy_args: &[&str]) -> Reverse {
    let origin_json = origin_credentials(dir, C_S);
    let (origin_proc, origin) = aiocoap_origin(venv, dir, "aiocoap-origin", Some(&origin_json));
    let config =
        write(&dir.join("reverse.toml"), &format!("[[route]]\npath = \"/\"\nupstream = \"coap://{origin}/\"\n"));
    let mut args = vec!["--config", config.as_str()];
    args.extend(proxy_args);
    let proxy = HopProxy::start(dir, "hopcore-reverse-proxy", &args);
    let ctx = aiocoap_context(&dir.join("aiocoap-client-ctx"), "01", "02", C_S);
    let client_json = aiocoap_credentials(&dir.join("client.json"), &[(&format!("{}/*", proxy.uri()), &ctx)]);
    Reverse { _origin: origin_proc, proxy, origin, client_json }
}

/// (c) aiocoap-client with end-to-end OSCORE through a hopcore reverse proxy.
#[test]
fn aiocoap_client_end_to_end_through_hopcore_reverse_proxy() {
    let Some(venv) = gate("aiocoap_client_end_to_end_through_hopcore_reverse_proxy") else { return };
    let t0 = Instant::now();
    let work = TempDir::new("proxy-interop-c");
    let r = reverse_setup(&venv, work.path(), &[]);
    let at = |path: &str| format!("{}{path}", r.proxy.uri());

    let o = aiocoap_client(&venv, &["--credentials", &r.client_json, &at("/whoami")]);
    assert!(o.status.success(), "{}\n{}", show("aiocoap-client --credentials (reverse)", &o), r.proxy.proc.logs());
    assert_whoami(&out(&o), "01", ":client1", "through the reverse proxy");
    // The proxy saw neither the path nor a layer of its own: the whole request is end to end.
    let l = r.proxy.exchange(1);
    assert!(l.contains("layers_in=[]") && l.contains(&format!("target=coap://{}/ ", r.origin)), "{l}");
    assert!(l.contains("method=0.02 POST") && l.contains("code=2.04"), "outer POST / 2.04: {l}");

    let payload = "end to end through a hopcore reverse proxy";
    let o = aiocoap_client(&venv, &["--credentials", &r.client_json, "-m", "POST", "--payload", payload, &at("/echo")]);
    assert_eq!(out(&o), payload, "{}", show("aiocoap-client --credentials POST /echo", &o));
    let o = aiocoap_client(&venv, &["--credentials", &r.client_json, &at("/large")]);
    assert_eq!(out(&o), LARGE_PATTERN.repeat(64), "{}", show("aiocoap-client --credentials /large", &o));

    println!(
        "proxy_interop (c): aiocoap-client through a hopcore reverse proxy in {:.1} s",
        t0.elapsed().as_secs_f64()
    );
}

/// (c) with an OSCORE-capable reverse proxy: the same catch-all route, but `hopcore proxy` has
/// `--credentials` (a context for some other client). It should relay the end-to-end request
/// exactly as it does without credentials.
///
/// aiocoap-client's request carries only the OSCORE option (no Uri-Host for an IP literal, no
/// Uri-Port for the destination port, the path encrypted), so CP §2.4 Step 3 cannot see a
/// reverse-proxy request; the nesting engine forwards a layer it holds no context for when a
/// reverse route takes the request (regression test: it used to answer 4.01 "Security context
/// not found" when the proxy held unrelated contexts).
#[test]
fn aiocoap_client_end_to_end_through_oscore_capable_reverse_proxy() {
    let Some(venv) = gate("aiocoap_client_end_to_end_through_oscore_capable_reverse_proxy") else { return };
    let work = TempDir::new("proxy-interop-c2");
    let dir = work.path();
    let creds = write(&dir.join("proxy.toml"), &entry("peer = \":other\"", "0a", "20", C_P));
    let state: PathBuf = dir.join("proxy-state");
    let r = reverse_setup(&venv, dir, &["--credentials", &creds, "--state-dir", path_str(&state)]);
    let o = aiocoap_client(&venv, &["--credentials", &r.client_json, &format!("{}/whoami", r.proxy.uri())]);
    assert!(o.status.success(), "{}\n{}", show("aiocoap-client --credentials (reverse)", &o), r.proxy.proc.logs());
    assert_whoami(&out(&o), "01", ":client1", "through the OSCORE-capable reverse proxy");
}
