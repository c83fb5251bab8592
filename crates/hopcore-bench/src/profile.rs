//! A fixed amount of one OSCORE layer's work, for instruction-level profilers
//! (`valgrind --tool=callgrind target/release/hopcore-bench oscore-loop`): criterion's own
//! machinery would dominate such a profile. Prints nothing but a checksum.

use aes::Aes128;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U8};
use clap::{Args, ValueEnum};
use hopcore_oscore::{protect_request, protect_response, unprotect_request, unprotect_response, ExternalAad, Layer};

use crate::fixtures;

#[derive(Debug, Clone, Args)]
pub struct LoopArgs {
    /// Exchanges to run (at most 10,000,000).
    #[arg(long, default_value_t = 10_000)]
    pub iterations: u64,
    /// Payload bytes of the request and the response.
    #[arg(long, default_value_t = 0)]
    pub payload: usize,
    /// What to run per iteration.
    #[arg(long, value_enum, default_value_t = Mode::Exchange)]
    pub mode: Mode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Mode {
    /// protect_request, unprotect_request, protect_response, unprotect_response.
    Exchange,
    /// The raw AEAD on the same bytes: seal and open of the request's and the response's
    /// plaintext with the same AAD lengths, through `AeadAlgorithm` (keyed per call).
    Aead,
    /// The same with ciphers keyed once.
    AeadPrekeyed,
}

/// Runs `iterations` request/response exchanges through one OSCORE layer (client protect,
/// server unprotect, server protect, client unprotect).
pub fn run(args: &LoopArgs) -> anyhow::Result<()> {
    let layer = Layer::RFC8613;
    let (mut client, mut server) = fixtures::pair(0);
    let request = fixtures::request(args.payload);
    let response = fixtures::response(args.payload);
    let mut sum = 0u64;
    let iterations = args.iterations.min(10_000_000);
    if args.mode != Mode::Exchange {
        // The plaintext lengths of this exchange's two messages.
        let (m, mut cb) = protect_request(&request, &mut client, &layer)?;
        let (_, mut sb, _) = unprotect_request(&m, |_, _| Some(&mut server), &layer)?;
        let p = protect_response(&response, &mut server, &mut sb, false, &layer)?;
        unprotect_response(&p, &client, &mut cb, &layer)?;
        let alg = client.aead();
        let tag_len = alg.tag_len();
        let lens = [m.payload.len() - tag_len, p.payload.len() - tag_len];
        let aad = vec![0x83u8; ExternalAad::new(alg, &[0x10], &[0x05]).aad_len()];
        let key = client.sender_key().to_vec();
        let nonce = [0x5au8; 13];
        let mut bufs: Vec<Vec<u8>> = lens.iter().map(|&l| fixtures::payload(l)).collect();
        let cipher = ccm::Ccm::<Aes128, U8, U13>::new_from_slice(&key).map_err(|_| anyhow::anyhow!("key"))?;
        let n = ccm::aead::generic_array::GenericArray::from_slice(&nonce);
        for _ in 0..iterations {
            for buf in &mut bufs {
                if args.mode == Mode::Aead {
                    let mut tag = [0u8; 8];
                    alg.seal_in_place_detached(&key, &nonce, &aad, buf, &mut tag)?;
                    alg.open_in_place_detached(&key, &nonce, &aad, buf, &tag)?;
                } else {
                    let tag = cipher.encrypt_in_place_detached(n, &aad, buf).map_err(|_| anyhow::anyhow!("seal"))?;
                    cipher.decrypt_in_place_detached(n, &aad, buf, &tag).map_err(|_| anyhow::anyhow!("open"))?;
                }
                sum = sum.wrapping_add(u64::from(buf[0]));
            }
        }
        println!("{sum}");
        return Ok(());
    }
    for _ in 0..iterations {
        let (m, mut cb) = protect_request(&request, &mut client, &layer)?;
        let (r, mut sb, _) = unprotect_request(&m, |_, _| Some(&mut server), &layer)?;
        let p = protect_response(&response, &mut server, &mut sb, false, &layer)?;
        let v = unprotect_response(&p, &client, &mut cb, &layer)?;
        sum = sum.wrapping_add(r.payload.len() as u64 + v.payload.len() as u64);
    }
    println!("{sum}");
    Ok(())
}
