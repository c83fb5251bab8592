//! The ratios of one micro-benchmark run, read back from criterion's `estimates.json` files
//! (median of the samples, nanoseconds) after the run: protect+unprotect over the raw AEAD
//! per payload size, and the cost per added nesting layer.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::fixtures::PAYLOAD_SIZES;

/// Where criterion wrote its results: `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, else
/// `<target>/criterion` from the running benchmark's own path (`target/release/deps/micro-*`).
pub fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(PathBuf::from(home));
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    let exe = std::env::current_exe().ok()?;
    Some(exe.parent()?.parent()?.parent()?.join("criterion"))
}

/// The median estimate of benchmark `id` (`group/function/parameter`) in nanoseconds.
pub fn median_ns(dir: &Path, id: &str) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join(id).join("new").join("estimates.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    v.get("median")?.get("point_estimate")?.as_f64()
}

/// One payload size: times (ns) and ratios.
#[derive(Debug, Clone, Serialize)]
pub struct OscoreRow {
    pub payload: usize,
    pub kind: &'static str,
    pub protect_ns: f64,
    pub unprotect_ns: f64,
    pub aead_ns: f64,
    pub aead_prekeyed_ns: f64,
    /// (protect + unprotect) / (seal + open through `AeadAlgorithm`). Target ≤ 2.
    pub ratio: f64,
    /// (protect + unprotect) / (seal + open with a cipher keyed once).
    pub ratio_prekeyed: f64,
}

/// The micro-benchmark summary written to `results/` by `scripts/bench.sh`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MicroSummary {
    pub codec: Vec<(String, f64)>,
    pub oscore: Vec<OscoreRow>,
    /// (layers, exchange ns, protect_request_layers ns).
    pub layers: Vec<(usize, f64, f64)>,
    pub derive_ns: Option<f64>,
}

/// Collects the summary from the criterion directory; `None` entries are skipped (e.g. a
/// filtered run, or `--test` which measures nothing).
pub fn collect(dir: &Path) -> MicroSummary {
    let mut s = MicroSummary::default();
    for &p in &PAYLOAD_SIZES {
        for f in ["parse_view", "parse_owned", "encode_into"] {
            if let Some(ns) = median_ns(dir, &format!("codec/{f}/{p}")) {
                s.codec.push((format!("{f}/{p}"), ns));
            }
        }
    }
    for &p in &PAYLOAD_SIZES {
        for kind in ["request", "response"] {
            let get = |f: String| median_ns(dir, &format!("oscore/{f}/{p}"));
            let (Some(pr), Some(un), Some(se), Some(op), Some(kse), Some(kop)) = (
                get(format!("protect_{kind}")),
                get(format!("unprotect_{kind}")),
                get(format!("aead_seal_{kind}")),
                get(format!("aead_open_{kind}")),
                get(format!("aead_prekeyed_seal_{kind}")),
                get(format!("aead_prekeyed_open_{kind}")),
            ) else {
                continue;
            };
            s.oscore.push(OscoreRow {
                payload: p,
                kind,
                protect_ns: pr,
                unprotect_ns: un,
                aead_ns: se + op,
                aead_prekeyed_ns: kse + kop,
                ratio: (pr + un) / (se + op),
                ratio_prekeyed: (pr + un) / (kse + kop),
            });
        }
    }
    for n in 1..=4 {
        if let (Some(x), Some(p)) = (
            median_ns(dir, &format!("layers/exchange/{n}")),
            median_ns(dir, &format!("layers/protect_request_layers/{n}")),
        ) {
            s.layers.push((n, x, p));
        }
    }
    s.derive_ns = median_ns(dir, "context/derive");
    s
}

/// Prints the ratios of this run and, with `HOPCORE_BENCH_MICRO_OUT=FILE`, saves them as JSON.
pub fn print_and_save() {
    let Some(dir) = criterion_dir() else {
        return;
    };
    let s = collect(&dir);
    if s.oscore.is_empty() && s.layers.is_empty() {
        println!("(no criterion estimates in {}: nothing measured, e.g. --test)", dir.display());
        return;
    }
    println!("\n== OSCORE one layer vs raw AEAD on the same bytes (medians; target ratio <= 2) ==");
    println!(
        "{:>8} {:>8} {:>11} {:>11} {:>11} {:>7} {:>13} {:>7}",
        "kind", "payload", "protect ns", "unprot ns", "aead ns", "ratio", "prekeyed ns", "ratio"
    );
    for r in &s.oscore {
        println!(
            "{:>8} {:>8} {:>11.0} {:>11.0} {:>11.0} {:>7.2} {:>13.0} {:>7.2}",
            r.kind, r.payload, r.protect_ns, r.unprotect_ns, r.aead_ns, r.ratio, r.aead_prekeyed_ns, r.ratio_prekeyed
        );
    }
    if !s.layers.is_empty() {
        println!("\n== Nested layers: whole exchange (4 operations per layer), 64-byte payloads ==");
        let base = s.layers[0].1;
        let mut prev = None;
        for &(n, x, p) in &s.layers {
            let step = prev.map_or(String::from("-"), |q: f64| format!("{:.0}", x - q));
            println!(
                "layers {n}: exchange {x:>8.0} ns ({:.2}x of 1 layer, +{step} ns for this layer); client protect {p:.0} ns",
                x / base
            );
            prev = Some(x);
        }
    }
    if let Some(d) = s.derive_ns {
        println!("\ncontext derivation: {d:.0} ns");
    }
    if let Some(out) = std::env::var_os("HOPCORE_BENCH_MICRO_OUT") {
        match serde_json::to_string_pretty(&s) {
            Ok(text) => {
                if let Err(e) = std::fs::write(&out, text) {
                    eprintln!("cannot write {}: {e}", Path::new(&out).display());
                }
            }
            Err(e) => eprintln!("cannot serialize the summary: {e}"),
        }
    }
}
