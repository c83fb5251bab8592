//! The machine's floor for a proxy on this design: a UDP relay that does nothing but one
//! `recv_from` and one `send_to` per datagram in each direction (no CoAP parsing, no
//! messaging layer, no runtime), single-threaded on one socket. Datagrams from the upstream
//! go to the client that sent last (one load generator at a time). Its CPU time per relayed
//! request is what the kernel's UDP path alone costs, which no proxy that handles each
//! datagram with its own system calls can go below.

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;

#[derive(Debug, Clone, Args)]
pub struct RelayArgs {
    /// Where to listen (loopback).
    #[arg(long)]
    pub bind: SocketAddr,
    /// Where to send what clients send (loopback).
    #[arg(long)]
    pub upstream: SocketAddr,
    /// Stop after this many seconds (bounded; at most one hour).
    #[arg(long, default_value_t = 3600)]
    pub lifetime: u64,
}

pub fn run(args: &RelayArgs) -> anyhow::Result<()> {
    if !args.bind.ip().is_loopback() || !args.upstream.ip().is_loopback() {
        bail!("the relay only runs between loopback addresses");
    }
    let socket = UdpSocket::bind(args.bind).context("binding the relay socket")?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    println!("listening on {}", socket.local_addr()?);
    let end = Instant::now() + Duration::from_secs(args.lifetime.min(3600));
    let mut buf = [0u8; 2048];
    let mut client: Option<SocketAddr> = None;
    while Instant::now() < end {
        let (n, from) = match socket.recv_from(&mut buf) {
            Ok(r) => r,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(e) => return Err(e.into()),
        };
        let to = if from == args.upstream {
            match client {
                Some(c) => c,
                None => continue,
            }
        } else {
            client = Some(from);
            args.upstream
        };
        // A failed send is a lost datagram, as on any UDP path.
        let _ = socket.send_to(&buf[..n], to);
    }
    Ok(())
}
