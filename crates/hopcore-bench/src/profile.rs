//! A fixed amount of one OSCORE layer's work, for instruction-level profilers
//! (`valgrind --tool=callgrind target/release/hopcore-bench oscore-loop`): criterion's own
//! machinery would dominate such a profile. Prints nothing but a checksum.

use clap::Args;
use hopcore_oscore::{protect_request, protect_response, unprotect_request, unprotect_response, Layer};

use crate::fixtures;

#[derive(Debug, Clone, Args)]
pub struct LoopArgs {
    /// Exchanges to run (at most 10,000,000).
    #[arg(long, default_value_t = 10_000)]
    pub iterations: u64,
    /// Payload bytes of the request and the response.
    #[arg(long, default_value_t = 0)]
    pub payload: usize,
}

/// Runs `iterations` request/response exchanges through one OSCORE layer (client protect,
/// server unprotect, server protect, client unprotect).
pub fn run(args: &LoopArgs) -> anyhow::Result<()> {
    let layer = Layer::RFC8613;
    let (mut client, mut server) = fixtures::pair(0);
    let request = fixtures::request(args.payload);
    let response = fixtures::response(args.payload);
    let mut sum = 0u64;
    for _ in 0..args.iterations.min(10_000_000) {
        let (m, mut cb) = protect_request(&request, &mut client, &layer)?;
        let (r, mut sb, _) = unprotect_request(&m, |_, _| Some(&mut server), &layer)?;
        let p = protect_response(&response, &mut server, &mut sb, false, &layer)?;
        let v = unprotect_response(&p, &client, &mut cb, &layer)?;
        sum = sum.wrapping_add(r.payload.len() as u64 + v.payload.len() as u64);
    }
    println!("{sum}");
    Ok(())
}
