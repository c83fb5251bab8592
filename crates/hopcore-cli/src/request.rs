//! `hopcore get|post|...`: build the request, send it (directly or through a proxy), print
//! the response.
//!
//! With `--credentials FILE` the request is protected with OSCORE (RFC 8613 §8.1) by the
//! context whose URI pattern matches the target URI best, and every response is verified
//! (§8.4) before it is printed; a URI that no pattern matches is refused unless
//! `--allow-plain`. Through a `--proxy` the protection is end to end (the proxy only forwards,
//! CF-4 of draft-ietf-core-oscore-capable-proxies): the oscore layer keeps the Proxy-Uri's
//! scheme and authority Outer and moves its path Inner (RFC 8613 §4.1.3.3).
//!
//! A direct request with a context marked `rederive = true` may re-derive it (RFC 8613 App.
//! B.2): `--rederive` runs the procedure first, with a GET of the target as request #1 and #2,
//! and a run the server starts is completed transparently. The new context lives for this
//! process only.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hopcore_codec::{content_format, num, CoapUri, Code, Message, MsgType};
use hopcore_endpoint::client::security::{RederiveProtector, RederiveStart};
use hopcore_endpoint::client::{
    build_request, resolve, Client, ClientConfig, ClientError, OscoreProtector, RequestProtector, RouteProtector,
    Target,
};
use hopcore_endpoint::Endpoint;
use hopcore_layers::{Route, RouteProxy};
use hopcore_security::credentials::wildcard_match;
use hopcore_security::{ContextStore, Credentials};

use crate::output;
use crate::RequestArgs;

pub const EXIT_ERROR_RESPONSE: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_NO_RESPONSE: u8 = 3;

/// How a request is secured.
enum Security {
    /// No --credentials, or none matched and --allow-plain.
    Plain,
    /// Protected by the nesting engine: one end-to-end layer, or a route through proxies.
    Oscore(Arc<dyn RequestProtector>),
    /// One end-to-end context that may be re-derived (RFC 8613 App. B.2).
    Rederive(Arc<RederiveProtector<ContextStore>>),
}

/// The pattern-matching form of a URI that some credentials entry matches: the normalized
/// form (RFC 7252 §6.5, as aiocoap composes it), else the form as typed.
fn matching_form(credentials: &Credentials, forms: [&str; 2]) -> Option<String> {
    forms
        .into_iter()
        .find(|u| credentials.entries().iter().any(|e| e.uris.iter().any(|p| wildcard_match(p, u))))
        .map(str::to_string)
}

/// The OSCORE protection for `uri` and the `--proxy` route from --credentials (hopcore TOML
/// or aiocoap JSON; durable state where [`crate::state::state_dir_for`] says): an end-to-end
/// context if a pattern matches the target, and a context per proxy whose URI a pattern
/// matches (draft-ietf-core-oscore-capable-proxies CF-1…CF-7, onion routes). `Err` with a
/// usage message when credentials are given but nothing matches and --allow-plain is not, or
/// when a chain of proxies lacks the contexts that carry each next hop.
fn security(args: &RequestArgs, uri: &CoapUri) -> anyhow::Result<Result<Security, String>> {
    let proxies = args
        .proxies
        .iter()
        .map(|p| CoapUri::parse(p).map_err(|e| anyhow!("bad proxy URI {p:?}: {e}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let chain_error = |n: usize| {
        format!(
            "a chain of {n} proxies needs an OSCORE context with every proxy, so that each proxy \
             learns its next hop inside its own layer (onion forwarding): add them to --credentials"
        )
    };
    let Some(path) = &args.credentials else {
        if proxies.len() > 1 {
            return Ok(Err(chain_error(proxies.len())));
        }
        return Ok(Ok(Security::Plain));
    };
    let credentials = Credentials::load(path).map_err(|e| anyhow!("{e}"))?;
    let composed = uri.compose();
    let target = matching_form(&credentials, [composed.as_str(), args.uri.as_str()]);
    let proxy_forms: Vec<Option<String>> = proxies
        .iter()
        .zip(&args.proxies)
        .map(|(p, typed)| matching_form(&credentials, [p.compose().as_str(), typed.as_str()]))
        .collect();
    if target.is_none() && proxy_forms.iter().all(Option::is_none) {
        // Decided before the store is opened: a plain request touches no OSCORE state.
        if proxies.len() > 1 {
            return Ok(Err(chain_error(proxies.len())));
        }
        if args.allow_plain {
            tracing::info!(uri = %composed, "no OSCORE credentials match: sending unprotected (--allow-plain)");
            return Ok(Ok(Security::Plain));
        }
        return Ok(Err(format!("no OSCORE credentials match {composed}; pass --allow-plain to send unprotected")));
    }
    if target.is_none() && !args.allow_plain {
        return Ok(Err(format!(
            "no OSCORE credentials match {composed} (only a proxy on the way has a context, so the request would \
             not be protected end to end); pass --allow-plain to accept that"
        )));
    }
    let state_dir = crate::state::state_dir_for(&credentials, args.state_dir.as_deref());
    let (store, index) = credentials.into_store(state_dir.as_deref()).map_err(|e| anyhow!("{e}"))?;
    // The longest matching pattern wins (as in aiocoap).
    let origin_context = target.as_deref().and_then(|t| index.for_uri(t));
    let contexts = Arc::new(Mutex::new(store));
    if proxies.is_empty() {
        let id = origin_context.ok_or_else(|| anyhow!("no OSCORE context for {composed}"))?;
        let rederivable = contexts.lock().is_ok_and(|c| c.rederive_allowed(id));
        if args.rederive && !rederivable {
            return Ok(Err(format!(
                "--rederive: the context for {composed} may not be re-derived; set `rederive = true` for it in {} \
                 (RFC 8613 App. B.2, the server needs it too)",
                path.display()
            )));
        }
        if rederivable {
            return Ok(Ok(Security::Rederive(Arc::new(RederiveProtector::new(contexts, id)))));
        }
        // One layer, end to end (RFC 8613).
        return Ok(Ok(Security::Oscore(Arc::new(OscoreProtector::new(contexts, vec![id])))));
    }
    let route = Route {
        proxies: proxies
            .into_iter()
            .zip(proxy_forms)
            .map(|(uri, form)| RouteProxy { uri, context: form.as_deref().and_then(|f| index.for_uri(f)) })
            .collect(),
        origin_context,
        proxy_uri_form: !args.proxy_scheme,
    };
    let n = route.proxies.len();
    if n > 1 && route.proxies.iter().any(|p| p.context.is_none()) {
        return Ok(Err(chain_error(n)));
    }
    Ok(Ok(Security::Oscore(Arc::new(RouteProtector::new(contexts, route)))))
}

/// Prints a client error and returns the exit code: an unprotected error answer is an error
/// response (1); everything else means no usable response (3).
fn client_error(e: &ClientError) -> ExitCode {
    eprintln!("error: {e}");
    match e {
        ClientError::Unprotected { .. } => ExitCode::from(EXIT_ERROR_RESPONSE),
        _ => ExitCode::from(EXIT_NO_RESPONSE),
    }
}

/// Reads the payload from --payload or --payload-file.
fn payload(args: &RequestArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(p) = &args.payload {
        return Ok(p.as_bytes().to_vec());
    }
    match &args.payload_file {
        Some(path) if path.as_os_str() == "-" => {
            let mut v = Vec::new();
            std::io::stdin().read_to_end(&mut v).context("reading the payload from standard input")?;
            Ok(v)
        }
        Some(path) => std::fs::read(path).with_context(|| format!("reading the payload file {}", path.display())),
        None => Ok(Vec::new()),
    }
}

/// Builds the request message and finds the first hop.
pub async fn prepare(method: Code, args: &RequestArgs) -> anyhow::Result<(std::net::SocketAddr, Message, CoapUri)> {
    let uri = CoapUri::parse(&args.uri).map_err(|e| anyhow!("bad URI {:?}: {e}", args.uri))?;
    if uri.scheme != "coap" && args.proxies.is_empty() {
        bail!(
            "scheme {:?} is not supported here (only coap://; other schemes need a --proxy that speaks them)",
            uri.scheme
        );
    }
    let (first_hop_uri, target) = match args.proxies.first() {
        None => (uri.clone(), Target::Direct),
        Some(p) => {
            let proxy = CoapUri::parse(p).map_err(|e| anyhow!("bad proxy URI {p:?}: {e}"))?;
            if proxy.scheme != "coap" {
                bail!("proxy scheme {:?} is not supported (only coap://)", proxy.scheme);
            }
            (proxy, if args.proxy_scheme { Target::ProxyScheme } else { Target::ProxyUri })
        }
    };
    let peer = resolve(&first_hop_uri).await.map_err(|e| anyhow!("{e}"))?;
    let mut msg = build_request(method, &uri, target);
    msg.mtype = if args.non { MsgType::Non } else { MsgType::Con };
    if let Some(cf) = &args.content_format {
        let cf = content_format::parse(cf).map_err(|e| anyhow!(e))?;
        msg.options.set_uint(num::CONTENT_FORMAT, cf as u32);
    }
    if let Some(a) = &args.accept {
        let a = content_format::parse(a).map_err(|e| anyhow!(e))?;
        msg.options.set_uint(num::ACCEPT, a as u32);
    }
    msg.payload = payload(args)?;
    Ok((peer, msg, uri))
}

/// Lowercase hex of an identifier (ID Contexts travel in the clear; never used for keys).
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn print_response(m: &Message, verbose: u8) {
    let mut out = std::io::stdout().lock();
    if verbose > 0 {
        let _ = writeln!(out, "{} ({} bytes payload)", output::status_line(m), m.payload.len());
        let _ = write!(out, "{}", output::render_options(m));
    }
    if !m.payload.is_empty() {
        let _ = writeln!(out, "{}", output::render_body(m));
    }
    let _ = out.flush();
}

/// Prints the status of an error response on stderr and returns the exit code.
fn report(m: &Message, verbose: u8) -> ExitCode {
    if m.code.is_success() {
        if verbose == 0 && m.payload.is_empty() {
            // Nothing else would show that it worked.
            println!("{}", output::status_line(m));
        }
        print_response(m, verbose);
        ExitCode::SUCCESS
    } else {
        eprintln!("{}", output::status_line(m));
        print_response(m, verbose);
        ExitCode::from(EXIT_ERROR_RESPONSE)
    }
}

pub async fn run(method: Code, args: RequestArgs, verbose: u8) -> anyhow::Result<ExitCode> {
    if !args.timeout.is_finite() || args.timeout <= 0.0 {
        bail!("--timeout must be a positive number of seconds");
    }
    let (peer, msg, uri) = prepare(method, &args).await?;
    let security = match security(&args, &uri)? {
        Ok(s) => s,
        Err(usage) => {
            eprintln!("error: {usage}");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    let bind = if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let (endpoint, _incoming) =
        Endpoint::bind(bind.parse().context("bind address")?).await.context("cannot open a UDP socket")?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let config = ClientConfig { request_timeout: timeout, ..ClientConfig::default() };
    let (client, oscore, rederive) = match security {
        Security::Plain => (Client::new(endpoint, config), None, None),
        Security::Oscore(p) => {
            let described = p.describe();
            (Client::with_security(endpoint, config, p), Some(described), None)
        }
        Security::Rederive(p) => {
            let described = p.describe();
            (Client::with_security(endpoint, config, p.clone()), Some(described), Some(p))
        }
    };
    if verbose > 0 {
        eprintln!("{method} {uri} via {peer}");
    }
    if let (true, Some(protector)) = (args.rederive, &rederive) {
        // RFC 8613 App. B.2 steps 1-5 with a GET of the target; the server does not act on
        // request #1 and serves request #2 like any GET.
        let mut probe = Message::request(Code::GET);
        probe.mtype = msg.mtype;
        for n in [num::URI_HOST, num::URI_PORT, num::URI_PATH, num::URI_QUERY] {
            for v in msg.options.get_all(n) {
                probe.options.push(n, v);
            }
        }
        match protector.rederive(client.endpoint(), peer, &probe, timeout).await {
            Ok((run, _)) => {
                if verbose > 0 {
                    eprintln!("OSCORE: App. B.2: context re-derived, new ID Context {}", hex(&run.id_context));
                }
            }
            Err(e) => {
                eprintln!("App. B.2 re-derivation failed; the context is unchanged");
                return Ok(client_error(&e));
            }
        }
    }
    // -v: which context protected the request (its label and kid, never keys) and that the
    // response passed verification (RFC 8613 §8.4): only verified responses get this far.
    let verified = |verbose: u8| {
        if let (true, Some(d)) = (verbose > 0, &oscore) {
            eprintln!("OSCORE: protected with {d}, response verified");
            if let Some(r) = rederive.as_ref().and_then(|p| p.last_rederivation()) {
                let by = match r.started_by {
                    RederiveStart::Client => "this client",
                    RederiveStart::Server => "the server",
                };
                eprintln!("OSCORE: App. B.2 run started by {by}: now ID Context {}", hex(&r.id_context));
            }
        }
    };
    if args.observe {
        let mut obs = match client.observe(peer, msg).await {
            Ok(obs) => obs,
            Err(e) => return Ok(client_error(&e)),
        };
        verified(verbose);
        let mut n = 0u64;
        let mut last_ok = true;
        loop {
            let next = tokio::time::timeout(timeout, obs.next()).await;
            let item = match next {
                Err(_) => {
                    eprintln!("no notification from {peer} within {} s", args.timeout);
                    return Ok(ExitCode::from(EXIT_NO_RESPONSE));
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => return Ok(client_error(&e)),
                Ok(Some(Ok(m))) => m,
            };
            n += 1;
            last_ok = item.code.is_success();
            report(&item, verbose);
            if !last_ok || args.count.is_some_and(|c| n >= c) {
                break;
            }
        }
        obs.cancel().await;
        return Ok(if last_ok { ExitCode::SUCCESS } else { ExitCode::from(EXIT_ERROR_RESPONSE) });
    }
    match client.request(peer, msg).await {
        Ok(resp) => {
            verified(verbose);
            Ok(report(&resp, verbose))
        }
        Err(e) => Ok(client_error(&e)),
    }
}
