//! Micro-benchmarks (issue #5, part 1): codec, one OSCORE layer against the raw AEAD on the same
//! bytes, 1-4 nested layers, context derivation.
//!
//! `cargo bench -p hopcore-bench --bench micro` runs them with criterion and then prints the
//! ratios of this run (read back from criterion's `estimates.json`): protect+unprotect over
//! seal+open of the raw AEAD per payload size, and the cost per added layer.
//! `cargo bench -p hopcore-bench --bench micro -- --test` runs each benchmark once (CI smoke).

use std::cell::RefCell;
use std::hint::black_box;
use std::time::Duration;

use aes::Aes128;
use ccm::aead::{AeadInPlace, KeyInit};
use ccm::consts::{U13, U8};
use criterion::{BatchSize, BenchmarkId, Criterion, Throughput};
use hopcore_bench::fixtures::{self, PAYLOAD_SIZES};
use hopcore_bench::micro_report;
use hopcore_codec::{Message, MessageView};
use hopcore_layers::{
    process_request, protect_request_layers, protect_response_layers, unprotect_response_layers, Incoming, Limits,
    OriginServer,
};
use hopcore_oscore::{
    protect_request, protect_response, unprotect_request, unprotect_response, ContextInput, ExternalAad, Layer,
    SecurityContext,
};

type AesCcm = ccm::Ccm<Aes128, U8, U13>;

fn codec(c: &mut Criterion) {
    let mut g = c.benchmark_group("codec");
    for &p in &PAYLOAD_SIZES {
        let msg = fixtures::request(p);
        let bytes = msg.to_bytes().expect("encodes");
        g.throughput(Throughput::Bytes(bytes.len() as u64));
        g.bench_with_input(BenchmarkId::new("parse_view", p), &bytes, |b, bytes| {
            b.iter(|| {
                let v = MessageView::parse(black_box(bytes)).expect("parses");
                // Walk the options as a consumer would.
                black_box(v.options().count());
                black_box(v.payload().len())
            })
        });
        g.bench_with_input(BenchmarkId::new("parse_owned", p), &bytes, |b, bytes| {
            b.iter(|| Message::parse(black_box(bytes)).expect("parses"))
        });
        let mut out = Vec::with_capacity(bytes.len() + 16);
        g.bench_with_input(BenchmarkId::new("encode_into", p), &msg, |b, msg| {
            b.iter(|| {
                out.clear();
                black_box(msg).encode_into(&mut out).expect("encodes");
                black_box(out.len())
            })
        });
    }
    g.finish();
}

/// One OSCORE layer of a request and of a response, each operation alone (the others run in the
/// untimed set-up), and the raw AEAD on the same plaintext and AAD lengths.
fn oscore(c: &mut Criterion) {
    let layer = Layer::RFC8613;
    let mut g = c.benchmark_group("oscore");
    for &p in &PAYLOAD_SIZES {
        let (mut client, mut server) = fixtures::pair(0);
        let request = fixtures::request(p);
        let response = fixtures::response(p);

        g.bench_function(BenchmarkId::new("protect_request", p), |b| {
            b.iter(|| protect_request(black_box(&request), &mut client, &layer).expect("protects"))
        });
        g.bench_function(BenchmarkId::new("unprotect_request", p), |b| {
            b.iter_batched(
                || protect_request(&request, &mut client, &layer).expect("protects").0,
                |m| unprotect_request(&m, |_, _| Some(&mut server), &layer).expect("verifies"),
                BatchSize::SmallInput,
            )
        });
        // Set-up and routine both need the contexts (at different times).
        let cell = RefCell::new((&mut client, &mut server));
        g.bench_function(BenchmarkId::new("protect_response", p), |b| {
            b.iter_batched(
                || {
                    let (c, s) = &mut *cell.borrow_mut();
                    let (m, _) = protect_request(&request, c, &layer).expect("protects");
                    unprotect_request(&m, |_, _| Some(&mut **s), &layer).expect("verifies").1
                },
                |mut binding| {
                    let (_, s) = &mut *cell.borrow_mut();
                    protect_response(black_box(&response), s, &mut binding, false, &layer).expect("protects")
                },
                BatchSize::SmallInput,
            )
        });
        g.bench_function(BenchmarkId::new("unprotect_response", p), |b| {
            b.iter_batched(
                || {
                    let (c, s) = &mut *cell.borrow_mut();
                    let (m, cb) = protect_request(&request, c, &layer).expect("protects");
                    let (_, mut sb, _) = unprotect_request(&m, |_, _| Some(&mut **s), &layer).expect("verifies");
                    let r = protect_response(&response, s, &mut sb, false, &layer).expect("protects");
                    (r, cb)
                },
                |(r, mut cb)| {
                    let (c, _) = &*cell.borrow();
                    unprotect_response(&r, c, &mut cb, &layer).expect("verifies")
                },
                BatchSize::SmallInput,
            )
        });

        // The floor: the same AEAD on the same plaintext and AAD lengths, through the crate's
        // API (which keys the cipher on every call) and with a cipher keyed once.
        let (sample, _) = protect_request(&request, &mut client, &layer).expect("protects");
        let (r_sample, _) = {
            let (m, cb) = protect_request(&request, &mut client, &layer).expect("protects");
            let (_, mut sb, _) = unprotect_request(&m, |_, _| Some(&mut server), &layer).expect("verifies");
            (protect_response(&response, &mut server, &mut sb, false, &layer).expect("protects"), cb)
        };
        let alg = client.aead();
        let tag_len = alg.tag_len();
        let key = client.sender_key().to_vec();
        let nonce = [0x5au8; 13];
        for (kind, msg) in [("request", &sample), ("response", &r_sample)] {
            let pt_len = msg.payload.len() - tag_len;
            // Request AAD: kid 1 byte, Partial IV 1 byte (as in the OSCORE runs above; the
            // sequence number grows to 2-3 bytes during a run, which changes one byte).
            let aad_len = ExternalAad::new(alg, &[0x10], &[0x05]).aad_len();
            let aad = vec![0x83u8; aad_len];
            let plaintext = fixtures::payload(pt_len);
            g.throughput(Throughput::Bytes(pt_len as u64));
            g.bench_function(BenchmarkId::new(format!("aead_seal_{kind}"), p), |b| {
                let mut buf = plaintext.clone();
                let mut tag = [0u8; 8];
                b.iter(|| {
                    alg.seal_in_place_detached(&key, &nonce, black_box(&aad), &mut buf, &mut tag).expect("seals");
                    black_box(tag[0])
                })
            });
            let mut sealed = plaintext.clone();
            let mut tag = [0u8; 8];
            alg.seal_in_place_detached(&key, &nonce, &aad, &mut sealed, &mut tag).expect("seals");
            g.bench_function(BenchmarkId::new(format!("aead_open_{kind}"), p), |b| {
                b.iter_batched_ref(
                    || sealed.clone(),
                    |buf| alg.open_in_place_detached(&key, &nonce, black_box(&aad), buf, &tag).expect("opens"),
                    BatchSize::SmallInput,
                )
            });
            // A cipher keyed once (the AES key schedule out of the loop): the lowest floor.
            let cipher = AesCcm::new_from_slice(&key).expect("16-byte key");
            let n = ccm::aead::generic_array::GenericArray::from_slice(&nonce);
            g.bench_function(BenchmarkId::new(format!("aead_prekeyed_seal_{kind}"), p), |b| {
                let mut buf = plaintext.clone();
                b.iter(|| cipher.encrypt_in_place_detached(n, black_box(&aad), &mut buf).expect("seals"))
            });
            let mut sealed2 = plaintext.clone();
            let tag2 = cipher.encrypt_in_place_detached(n, &aad, &mut sealed2).expect("seals");
            g.bench_function(BenchmarkId::new(format!("aead_prekeyed_open_{kind}"), p), |b| {
                b.iter_batched_ref(
                    || sealed2.clone(),
                    |buf| cipher.decrypt_in_place_detached(n, black_box(&aad), buf, &tag2).expect("opens"),
                    BatchSize::SmallInput,
                )
            });
        }
        g.throughput(Throughput::Elements(1));
    }
    g.finish();
}

/// A whole exchange through the nesting engine with `n` layers, all removed at one endpoint:
/// client protect (CP §2.3), server removal (CP §2.4), response protection (CP §2.5), client
/// verification (CP §2.6). Payload 64 bytes each way.
fn layers(c: &mut Criterion) {
    let mut g = c.benchmark_group("layers");
    let limits = Limits::default();
    let request = fixtures::request(64);
    let response = fixtures::response(64);
    for n in 1..=4usize {
        let (mut client, mut server, route) = fixtures::layer_contexts(n);
        g.bench_function(BenchmarkId::new("exchange", n), |b| {
            b.iter(|| {
                let (m, mut stack) =
                    protect_request_layers(black_box(&request), &mut client, &route, 8).expect("protects");
                let Incoming::Deliver { request: inner, layers: mut removed } =
                    process_request(m, &mut server, &OriginServer, &limits)
                else {
                    panic!("not delivered");
                };
                black_box(inner);
                let r = protect_response_layers(black_box(&response), &mut server, &mut removed).expect("protects");
                unprotect_response_layers(&r, &mut client, &mut stack).expect("verifies")
            })
        });
        g.bench_function(BenchmarkId::new("protect_request_layers", n), |b| {
            b.iter(|| protect_request_layers(black_box(&request), &mut client, &route, 8).expect("protects"))
        });
    }
    g.finish();
}

fn derive(c: &mut Criterion) {
    let mut g = c.benchmark_group("context");
    g.bench_function("derive", |b| {
        b.iter(|| {
            SecurityContext::derive(
                &ContextInput::new(black_box(&fixtures::MASTER_SECRET), &[0x01], &[0x02])
                    .master_salt(&fixtures::MASTER_SALT),
            )
            .expect("derives")
        })
    });
    g.finish();
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .sample_size(40)
        .configure_from_args();
    codec(&mut c);
    oscore(&mut c);
    layers(&mut c);
    derive(&mut c);
    c.final_summary();
    micro_report::print_and_save();
}
