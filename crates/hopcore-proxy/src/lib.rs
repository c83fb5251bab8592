//! # hopcore-proxy: a CoAP-to-CoAP proxy
//!
//! Forward proxy (Proxy-Uri, or Proxy-Scheme with Uri-*; RFC 7252 §5.7.2, §5.10.2) and
//! reverse proxy (configured routes; RFC 7252 §5.7.3) over plain CoAP, with Hop-Limit
//! (RFC 8768), an Observe relay that shares one upstream observation between all clients
//! observing a resource (RFC 7641 §5), and block-wise transfers relayed block by block.
//!
//! With OSCORE contexts ([`Proxy::with_security`]) the proxy is an OSCORE endpoint
//! (draft-ietf-core-oscore-capable-proxies, "CP"), running the same nesting engine as every
//! other hop: it removes the layers its clients apply for it (CP §2.4), relays their end-to-end
//! layer, protects requests with the context it shares with the next hop (CP §2.3) and gives
//! every response the removed layers back (CP §2.5), for all of seed 001's configurations
//! CF-0 … CF-7, as forward and as reverse proxy; with `[[allow]]` rules by OSCORE identity
//! (CP §2.4 Step 4) and per-source context lists (CP §2.4.1). With `upstream_proxy` it sends
//! forward-proxy requests on to another proxy (CP's "With Two Forward-Proxies"), with the
//! layer it shares with that proxy if it has one.
//!
//! - [`mod@decide`]: the per-request decision, [`decide()`], a pure function (sans-I/O).
//! - [`relay`]: shaping upstream responses for the client, pure as well.
//! - [`config`]: [`ProxyConfig`], read from TOML (see `proxy.example.toml`).
//! - [`proxy`]: the async shell on [`hopcore_endpoint::Endpoint`]: [`Proxy`], [`serve`].
//! - [`security`]: the proxy's contexts ([`ProxySecurity`]), its hop policy for the engine, and
//!   the layer with the next hop.
//!
//! Running a proxy from a bind address and an optional configuration file:
//!
//! ```no_run
//! # async fn run(bind: std::net::SocketAddr, file: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
//! let config = match file {
//!     Some(path) => hopcore_proxy::ProxyConfig::load(path)?,
//!     None => hopcore_proxy::ProxyConfig::default(),
//! };
//! hopcore_proxy::serve(config, bind).await?;
//! # Ok(()) }
//! ```

pub mod config;
pub mod decide;
mod observe;
pub mod proxy;
pub mod relay;
pub mod security;

pub use config::{
    AllowClient, AllowRule, ConfigError, IpPrefix, ProxyConfig, Route, RouteError, SourceRule, UpstreamProxy,
};
pub use decide::{decide, Decision, Host, Local, ObserveIntent, Reject, Scheme, Target, Upstream};
pub use proxy::{serve, BoundProxy, Exchange, Proxy, Upstreams};
pub use security::{ProxySecurity, SecurityConfigError};
