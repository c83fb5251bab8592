//! `hopcore`: CoAP client, server, proxy and demo from the command line.
//!
//! Exit status: 0 for a 2.xx response (or a clean server/proxy shutdown), 1 for a 4.xx/5.xx
//! response, 2 for usage errors, 3 when no response arrived (timeout, reset, unreachable).

mod demo;
mod demo_layers;
mod output;
mod request;
mod state;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "hopcore", version, about = "CoAP with OSCORE at every hop: client, server, proxy")]
struct Cli {
    /// More output: -v shows options and the exchange, -vv debug logs.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Send a GET request.
    Get(RequestArgs),
    /// Send a POST request.
    Post(RequestArgs),
    /// Send a PUT request.
    Put(RequestArgs),
    /// Send a DELETE request.
    Delete(RequestArgs),
    /// Send a FETCH request (RFC 8132).
    Fetch(RequestArgs),
    /// Send a PATCH request (RFC 8132).
    Patch(RequestArgs),
    /// Send an iPATCH request (RFC 8132).
    Ipatch(RequestArgs),
    /// Serve the demo resources: /.well-known/core, /hello, /echo, /time (observable), /large;
    /// with --credentials or --plugtest, behind OSCORE (RFC 8613).
    Server(ServerArgs),
    /// Run a CoAP forward and/or reverse proxy.
    Proxy(ProxyArgs),
    /// Start a server and a proxy on loopback and show requests going through the proxy.
    Demo(DemoArgs),
}

#[derive(Args, Debug, Clone)]
pub struct RequestArgs {
    /// Target URI, e.g. coap://127.0.0.1:5683/hello
    pub uri: String,
    /// Request payload as text.
    #[arg(long, conflicts_with = "payload_file")]
    pub payload: Option<String>,
    /// Request payload from a file ("-" for standard input).
    #[arg(long)]
    pub payload_file: Option<PathBuf>,
    /// Content-Format of the payload: a number or a media type (text/plain, application/json, cbor, ...).
    #[arg(long)]
    pub content_format: Option<String>,
    /// Accept option: a number or a media type.
    #[arg(long)]
    pub accept: Option<String>,
    /// Send the request as Non-confirmable.
    #[arg(long)]
    pub non: bool,
    /// Observe the resource (RFC 7641) and print each notification.
    #[arg(long)]
    pub observe: bool,
    /// With --observe: stop after this many notifications (including the first response).
    #[arg(long, requires = "observe")]
    pub count: Option<u64>,
    /// Send through this forward proxy (coap://host:port). Repeat for a chain, in path order.
    #[arg(long = "proxy")]
    pub proxies: Vec<String>,
    /// Address the proxy with Proxy-Scheme + Uri-Host/Uri-Port instead of Proxy-Uri.
    #[arg(long)]
    pub proxy_scheme: bool,
    /// Seconds to wait for the response (or between notifications).
    #[arg(long, default_value_t = 95.0)]
    pub timeout: f64,
    /// OSCORE credentials (hopcore TOML or aiocoap JSON): the context whose URI pattern
    /// matches the target best protects the request (RFC 8613).
    #[arg(long)]
    pub credentials: Option<PathBuf>,
    /// Directory for durable OSCORE state (sequence numbers, replay windows; RFC 8613 App.
    /// B.1); default: the credentials file's `state_dir`, else `<file stem>.state/` beside it.
    #[arg(long, requires = "credentials")]
    pub state_dir: Option<PathBuf>,
    /// With --credentials: send the request unprotected when no credentials match the URI.
    #[arg(long, requires = "credentials")]
    pub allow_plain: bool,
    /// With --credentials: first re-derive the security context with RFC 8613 App. B.2
    /// (request #1 with R1, the server's 4.01 with R2, request #2 with R2 || R3), then send the
    /// request with the new context. The context needs `rederive = true`.
    #[arg(long, requires = "credentials", conflicts_with = "proxies")]
    pub rederive: bool,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("contexts").args(["credentials", "plugtest"]).multiple(true)))]
struct ServerArgs {
    /// Address to listen on, e.g. 127.0.0.1:5683 or [::1]:5683 (port 0: any free port).
    #[arg(long, default_value = "[::]:5683")]
    bind: SocketAddr,
    /// OSCORE credentials (hopcore TOML or aiocoap JSON): requests protected with one of
    /// these contexts are answered protected (RFC 8613), and resources see the context's label.
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Directory for durable OSCORE state (sequence-number reservations, replay windows;
    /// RFC 8613 App. B.1). Default with --credentials: the file's `state_dir`, else
    /// `<file stem>.state/` beside it; with --plugtest alone: volatile.
    #[arg(long, requires = "contexts")]
    state_dir: Option<PathBuf>,
    /// Serve the resources of aiocoap's OSCORE plugtest server instead of the demo ones.
    /// Without --credentials, the plugtest's server contexts b and d are loaded from aiocoap's
    /// contrib/oscore-plugtest/common-context (or $HOPCORE_PLUGTEST_CONTEXTS).
    #[arg(long)]
    plugtest: bool,
    /// Answer plain (unprotected) requests under this path prefix with 4.01. Repeatable.
    #[arg(long = "require-oscore", value_name = "PREFIX")]
    require_oscore: Vec<String>,
}

#[derive(Args, Debug)]
struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "[::]:5683")]
    bind: SocketAddr,
    /// TOML configuration (forward proxying, reverse routes, Hop-Limit, timeouts, OSCORE
    /// limits, [[allow]] and [[source]] rules).
    #[arg(long)]
    config: Option<PathBuf>,
    /// OSCORE credentials (hopcore TOML or aiocoap JSON) that make the proxy an OSCORE
    /// endpoint: entries with `peer` labels are its clients (their layers are removed from
    /// requests), entries with `uri` patterns are next hops (requests to matching URIs are
    /// protected with them).
    #[arg(long)]
    credentials: Option<PathBuf>,
    /// Directory for durable OSCORE state (RFC 8613 App. B.1); default: the credentials file's
    /// `state_dir`, else `<file stem>.state/` beside it.
    #[arg(long, requires = "credentials")]
    state_dir: Option<PathBuf>,
}

#[derive(Args, Debug)]
struct DemoArgs {}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 | 1 => "warn",
        2 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose);
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    use hopcore_codec::Code;
    let result = rt.block_on(async move {
        match cli.cmd {
            Cmd::Get(a) => request::run(Code::GET, a, cli.verbose).await,
            Cmd::Post(a) => request::run(Code::POST, a, cli.verbose).await,
            Cmd::Put(a) => request::run(Code::PUT, a, cli.verbose).await,
            Cmd::Delete(a) => request::run(Code::DELETE, a, cli.verbose).await,
            Cmd::Fetch(a) => request::run(Code::FETCH, a, cli.verbose).await,
            Cmd::Patch(a) => request::run(Code::PATCH, a, cli.verbose).await,
            Cmd::Ipatch(a) => request::run(Code::IPATCH, a, cli.verbose).await,
            Cmd::Server(a) => run_server(a).await,
            Cmd::Proxy(a) => run_proxy(a).await,
            Cmd::Demo(_) => demo::run().await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(request::EXIT_NO_RESPONSE)
        }
    }
}

async fn run_server(a: ServerArgs) -> anyhow::Result<ExitCode> {
    use hopcore_endpoint::oscore_server::OscoreServer;
    use hopcore_endpoint::server::{demo, plugtest};

    let resources = if a.plugtest { plugtest::plugtest_server() } else { demo::demo_server() };
    let mut required = a.require_oscore.clone();
    if a.plugtest {
        required.extend(plugtest::PROTECTED_PREFIXES.iter().map(|p| p.to_string()));
    }
    let oscore = a.credentials.is_some() || a.plugtest || !required.is_empty();
    // Contexts are loaded before binding, so that a bad credentials file fails fast.
    let store = if oscore { Some(server_contexts(&a)?) } else { None };

    let (endpoint, incoming) = hopcore_endpoint::Endpoint::bind(a.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.bind))?;
    // The harness and scripts read this line to learn the port.
    println!("listening on {}", endpoint.local_addr());
    let Some(store) = store else {
        tokio::select! {
            _ = resources.run(endpoint, incoming) => {}
            _ = shutdown_signal() => {}
        }
        return Ok(ExitCode::SUCCESS);
    };

    let contexts = std::sync::Arc::new(std::sync::Mutex::new(store));
    // RFC 8613 App. B.2 for the contexts with `rederive = true` (no effect on the others).
    let mut server = OscoreServer::with_shared_contexts(resources, contexts.clone()).with_rederivation();
    for prefix in &required {
        server = server.require_oscore(prefix);
    }
    tokio::select! {
        _ = server.run(endpoint, incoming) => {}
        _ = shutdown_signal() => {}
    }
    // Clean shutdown: save the replay windows so that the next start needs no Echo exchange
    // (RFC 8613 App. B.1.2). The server future is gone, so this is the last reference.
    if let Ok(store) = std::sync::Arc::try_unwrap(contexts) {
        let store = store.into_inner().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = store.shutdown() {
            tracing::warn!(error = %e, "could not save the OSCORE replay state");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Ctrl-C, or SIGTERM on Unix.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The OSCORE contexts of `hopcore server`: from --credentials (hopcore TOML or aiocoap
/// JSON), or the plugtest's server contexts b and d, loaded through the same loader; durable
/// in --state-dir if given. Never logs key material.
fn server_contexts(a: &ServerArgs) -> anyhow::Result<hopcore_security::ContextStore> {
    use hopcore_security::{ContextStore, Credentials};

    let (credentials, state_dir) = match (&a.credentials, a.plugtest) {
        (Some(path), _) => {
            let c = Credentials::load(path)?;
            let dir = crate::state::state_dir_for(&c, a.state_dir.as_deref());
            (c, dir)
        }
        (None, true) => {
            let dir = plugtest_context_dir().ok_or_else(|| {
                anyhow::anyhow!(
                    "--plugtest without --credentials needs aiocoap's contrib/oscore-plugtest/common-context \
                     (scripts/setup-peers.sh puts it under .peers/; or set HOPCORE_PLUGTEST_CONTEXTS)"
                )
            })?;
            (plugtest_credentials(&dir)?, a.state_dir.clone())
        }
        // Only --require-oscore: no contexts, every OSCORE request gets 4.01.
        (None, false) => return Ok(ContextStore::volatile()),
    };
    let (store, _index) = credentials.into_store(state_dir.as_deref())?;
    tracing::info!(contexts = store.len(), durable = store.is_durable(), "OSCORE contexts loaded");
    Ok(store)
}

/// The plugtest server's contexts as aiocoap credentials: b answers client a, d answers client
/// c (upstream's labels `:b` and `:d`). The map goes through a temporary file because the
/// loader reads files; the context directories themselves are only read.
fn plugtest_credentials(dir: &std::path::Path) -> anyhow::Result<hopcore_security::Credentials> {
    let dir = dir.canonicalize().map_err(|e| anyhow::anyhow!("{}: {e}", dir.display()))?;
    let mut map = serde_json::Map::new();
    for name in ["b", "d"] {
        let basedir = dir.join(name);
        let basedir = basedir.to_str().ok_or_else(|| anyhow::anyhow!("{}: not UTF-8", basedir.display()))?;
        map.insert(format!(":{name}"), serde_json::json!({ "oscore": { "basedir": format!("{basedir}/") } }));
    }
    let text = serde_json::Value::Object(map).to_string();
    // A new file (never one that exists, e.g. a link someone placed in the temp directory).
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let file = std::env::temp_dir().join(format!("hopcore-plugtest-{}-{nanos}.json", std::process::id()));
    let mut out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", file.display()))?;
    let written = std::io::Write::write_all(&mut out, text.as_bytes());
    drop(out);
    let loaded = written.map_err(anyhow::Error::from).and_then(|()| Ok(hopcore_security::Credentials::load(&file)?));
    let _ = std::fs::remove_file(&file);
    loaded
}

/// Where aiocoap's plugtest contexts are: $HOPCORE_PLUGTEST_CONTEXTS, or
/// `.peers/aiocoap-0.4.17/contrib/oscore-plugtest/common-context` under the current directory
/// or under the source tree this binary was built from.
fn plugtest_context_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("HOPCORE_PLUGTEST_CONTEXTS") {
        return Some(PathBuf::from(dir));
    }
    const REL: &str = ".peers/aiocoap-0.4.17/contrib/oscore-plugtest/common-context";
    let built = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(REL);
    [PathBuf::from(REL), built].into_iter().find(|d| d.join("b").is_dir())
}

async fn run_proxy(a: ProxyArgs) -> anyhow::Result<ExitCode> {
    let config = match &a.config {
        Some(path) => hopcore_proxy::ProxyConfig::load(path)?,
        None => hopcore_proxy::ProxyConfig::default(),
    };
    let mut proxy = hopcore_proxy::Proxy::new(config);
    // Contexts are loaded before binding, so that a bad credentials file fails fast.
    let security = match &a.credentials {
        Some(path) => {
            let credentials = hopcore_security::Credentials::load(path)?;
            let dir = crate::state::state_dir_for(&credentials, a.state_dir.as_deref());
            let (store, index) = credentials.into_store(dir.as_deref())?;
            let security = hopcore_proxy::ProxySecurity::from_credentials(store, &index);
            tracing::info!(clients = security.clients().len(), "OSCORE contexts loaded");
            // A rule of --config naming a label that is not a client context.
            let config = a.config.as_deref().map_or_else(|| "--config".into(), |c| c.display().to_string());
            proxy = proxy.with_security(security.clone()).map_err(|e| anyhow::anyhow!("{config}: {e}"))?;
            Some(security)
        }
        None => None,
    };
    let proxy = proxy.bind(a.bind).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.bind))?;
    println!("listening on {}", proxy.local_addr());
    tokio::select! {
        _ = proxy.run() => {}
        _ = shutdown_signal() => {}
    }
    // Clean shutdown: save the replay windows so that the next start needs no Echo exchange
    // (RFC 8613 App. B.1.2).
    if let Some(security) = security {
        if let Err(e) = security.shutdown() {
            tracing::warn!(error = %e, "could not save the OSCORE replay state");
        }
    }
    Ok(ExitCode::SUCCESS)
}
