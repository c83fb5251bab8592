//! `hopcore get|post|...`: build the request, send it (directly or through a proxy), print
//! the response.

use std::io::{Read, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use hopcore_codec::{content_format, num, CoapUri, Code, Message, MsgType};
use hopcore_endpoint::client::{build_request, resolve, Client, ClientConfig, Target};
use hopcore_endpoint::Endpoint;

use crate::output;
use crate::RequestArgs;

pub const EXIT_ERROR_RESPONSE: u8 = 1;
pub const EXIT_NO_RESPONSE: u8 = 3;

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
    if args.proxies.len() > 1 {
        bail!(
            "a chain of {} proxies needs a route in which each proxy knows the next hop; plain CoAP can only \
             address the first proxy (use one --proxy)",
            args.proxies.len()
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
    let bind = if peer.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    let (endpoint, _incoming) =
        Endpoint::bind(bind.parse().context("bind address")?).await.context("cannot open a UDP socket")?;
    let timeout = Duration::from_secs_f64(args.timeout);
    let client = Client::new(endpoint, ClientConfig { request_timeout: timeout, ..ClientConfig::default() });
    if verbose > 0 {
        eprintln!("{method} {uri} via {peer}");
    }
    if args.observe {
        let mut obs = client.observe(peer, msg).await.map_err(|e| anyhow!("{e}"))?;
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
                Ok(Some(Err(e))) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::from(EXIT_NO_RESPONSE));
                }
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
        Ok(resp) => Ok(report(&resp, verbose)),
        Err(e) => {
            eprintln!("error: {e}");
            Ok(ExitCode::from(EXIT_NO_RESPONSE))
        }
    }
}
