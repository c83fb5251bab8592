//! `hopcore`: CoAP client, server, proxy and demo from the command line.
//!
//! Exit status: 0 for a 2.xx response (or a clean server/proxy shutdown), 1 for a 4.xx/5.xx
//! response, 2 for usage errors, 3 when no response arrived (timeout, reset, unreachable).

mod demo;
mod output;
mod request;

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
    /// Serve the demo resources: /.well-known/core, /hello, /echo, /time (observable), /large.
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
}

#[derive(Args, Debug)]
struct ServerArgs {
    /// Address to listen on, e.g. 127.0.0.1:5683 or [::1]:5683 (port 0: any free port).
    #[arg(long, default_value = "[::]:5683")]
    bind: SocketAddr,
}

#[derive(Args, Debug)]
struct ProxyArgs {
    /// Address to listen on.
    #[arg(long, default_value = "[::]:5683")]
    bind: SocketAddr,
    /// TOML configuration (forward proxying, reverse routes, Hop-Limit, timeouts).
    #[arg(long)]
    config: Option<PathBuf>,
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
    let (endpoint, incoming) = hopcore_endpoint::Endpoint::bind(a.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.bind))?;
    // The harness and scripts read this line to learn the port.
    println!("listening on {}", endpoint.local_addr());
    let server = hopcore_endpoint::server::demo::demo_server();
    tokio::select! {
        _ = server.run(endpoint, incoming) => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}

async fn run_proxy(a: ProxyArgs) -> anyhow::Result<ExitCode> {
    let config = match &a.config {
        Some(path) => hopcore_proxy::ProxyConfig::load(path)?,
        None => hopcore_proxy::ProxyConfig::default(),
    };
    let proxy = hopcore_proxy::Proxy::new(config)
        .bind(a.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.bind))?;
    println!("listening on {}", proxy.local_addr());
    tokio::select! {
        _ = proxy.run() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    Ok(ExitCode::SUCCESS)
}
