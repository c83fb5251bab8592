//! The report of one `scripts/bench.sh` run: `latest.md` (tables) and `latest.svg` (bar
//! charts), from the raw files the run wrote into one directory:
//!
//! - `load.jsonl`: one [`crate::load::LoadResult`] per line;
//! - `micro.json`: the [`crate::micro_report::MicroSummary`] (optional);
//! - `memory.json`: the [`crate::memory::MemoryResult`] (optional);
//! - `env.json`: `{"date", "nproc", "cpu", "load_before", "load_after", "note", ...}` (optional).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde_json::Value;

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// The directory with load.jsonl, micro.json, memory.json, env.json.
    #[arg(long)]
    pub raw: PathBuf,
    /// Output path without extension: writes OUT.md and OUT.svg.
    #[arg(long)]
    pub out: PathBuf,
}

/// One row of the load table.
#[derive(Debug, Clone)]
pub struct Row {
    pub scenario: String,
    pub implementation: String,
    pub rps: f64,
    pub p50: f64,
    pub p99: f64,
    pub ok: u64,
    pub failures: u64,
    pub retransmissions: u64,
    /// CPU µs per request of the proxies (summed over every process labelled proxy*), if any.
    pub proxy_us: Option<f64>,
    pub proxy_rss: Option<u64>,
    pub origin_us: Option<f64>,
    pub generator_us: f64,
    pub first_error: Option<String>,
    /// How many runs (rounds) of this row there were; the row shown is the median one.
    pub rounds: usize,
    /// Smallest and largest proxy CPU µs/request over the rounds.
    pub proxy_us_range: Option<(f64, f64)>,
}

/// One row per (scenario, implementation): the round with the median proxy CPU per request
/// (or the median throughput when no proxy is watched), with the spread over the rounds.
pub fn aggregate(rows: Vec<Row>) -> Vec<Row> {
    let mut order: Vec<(String, String)> = Vec::new();
    let mut groups: BTreeMap<(String, String), Vec<Row>> = BTreeMap::new();
    for r in rows {
        let k = (r.scenario.clone(), r.implementation.clone());
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        groups.entry(k).or_default().push(r);
    }
    let mut out = Vec::new();
    for k in order {
        let Some(mut g) = groups.remove(&k) else { continue };
        g.sort_by(|a, b| match (a.proxy_us, b.proxy_us) {
            (Some(x), Some(y)) => x.total_cmp(&y),
            _ => a.rps.total_cmp(&b.rps),
        });
        let range = {
            let v: Vec<f64> = g.iter().filter_map(|r| r.proxy_us).collect();
            (!v.is_empty()).then(|| (v.iter().copied().fold(f64::MAX, f64::min), v.iter().copied().fold(0.0, f64::max)))
        };
        let n = g.len();
        let mut median = g.swap_remove((n - 1) / 2);
        median.rounds = n;
        median.proxy_us_range = range;
        out.push(median);
    }
    out
}

fn f(v: &Value, k: &str) -> f64 {
    v.get(k).and_then(Value::as_f64).unwrap_or(0.0)
}

fn u(v: &Value, k: &str) -> u64 {
    v.get(k).and_then(Value::as_u64).unwrap_or(0)
}

fn s(v: &Value, k: &str) -> String {
    v.get(k).and_then(Value::as_str).unwrap_or("").to_string()
}

pub fn rows(load: &str) -> Vec<Row> {
    let mut out = Vec::new();
    for line in load.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(line) else { continue };
        let watched = v.get("watched").and_then(Value::as_array).cloned().unwrap_or_default();
        let sum = |prefix: &str| {
            let ws: Vec<&Value> = watched.iter().filter(|w| s(w, "label").starts_with(prefix)).collect();
            (!ws.is_empty()).then(|| ws.iter().map(|w| f(w, "cpu_us_per_request")).sum::<f64>())
        };
        let proxy_rss = {
            let ws: Vec<u64> =
                watched.iter().filter(|w| s(w, "label").starts_with("proxy")).map(|w| u(w, "rss_max_bytes")).collect();
            ws.iter().max().copied()
        };
        out.push(Row {
            scenario: s(&v, "scenario"),
            implementation: s(&v, "implementation"),
            rps: f(&v, "requests_per_s"),
            p50: f(&v, "p50_ms"),
            p99: f(&v, "p99_ms"),
            ok: u(&v, "ok"),
            failures: u(&v, "failures"),
            retransmissions: u(&v, "retransmissions"),
            proxy_us: sum("proxy"),
            proxy_rss,
            origin_us: sum("origin"),
            generator_us: f(&v, "generator_cpu_us_per_request"),
            first_error: v.get("first_error").and_then(Value::as_str).map(str::to_string),
            rounds: 1,
            proxy_us_range: None,
        });
    }
    out
}

fn is_hopcore(r: &Row) -> bool {
    r.implementation.starts_with("hopcore")
}

/// Reference rows that are not implementations (the bare UDP relay): never a "peer".
fn is_floor(r: &Row) -> bool {
    r.implementation.starts_with("floor")
}

/// Scenarios in first-seen order with their rows.
fn by_scenario(rows: &[Row]) -> Vec<(String, Vec<&Row>)> {
    let mut order: Vec<String> = Vec::new();
    let mut map: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        if !map.contains_key(&r.scenario) {
            order.push(r.scenario.clone());
        }
        map.entry(r.scenario.clone()).or_default().push(r);
    }
    order.into_iter().map(|k| (k.clone(), map.remove(&k).unwrap_or_default())).collect()
}

/// The best peer of a scenario: lowest proxy CPU per request (or, without a proxy, highest
/// throughput), among the rows that completed requests without failing most of them.
fn best_peer<'a>(rows: &[&'a Row]) -> (Option<&'a Row>, Option<&'a Row>) {
    let peers: Vec<&Row> =
        rows.iter().copied().filter(|r| !is_hopcore(r) && !is_floor(r) && r.ok > 0 && r.failures <= r.ok).collect();
    let cpu = peers
        .iter()
        .copied()
        .filter(|r| r.proxy_us.is_some())
        .min_by(|a, b| a.proxy_us.unwrap_or(f64::MAX).total_cmp(&b.proxy_us.unwrap_or(f64::MAX)));
    let rps = peers.iter().copied().max_by(|a, b| a.rps.total_cmp(&b.rps));
    (cpu, rps)
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "–".to_string(), |x| format!("{x:.digits$}"))
}

/// The instruction-count table from `instructions.jsonl` lines
/// (`{"payload", "mode": "exchange"|"aead"|"aead-prekeyed", "per_exchange"}`).
pub fn instructions_table(lines: &str) -> Option<String> {
    let mut by: BTreeMap<u64, BTreeMap<String, f64>> = BTreeMap::new();
    for l in lines.lines().filter(|l| !l.trim().is_empty()) {
        let Ok(v) = serde_json::from_str::<Value>(l) else { continue };
        by.entry(u(&v, "payload")).or_default().insert(s(&v, "mode"), f(&v, "per_exchange"));
    }
    if by.is_empty() {
        return None;
    }
    let mut md = String::new();
    let _ = writeln!(md, "\nInstruction counts (callgrind, `hopcore-bench oscore-loop`): one exchange = protect and unprotect of a request and of a response, against the same AEAD work on the same bytes. Reproducible where the timings above are not.\n");
    let _ = writeln!(
        md,
        "| payload B | OSCORE exchange Ir | AEAD Ir | ratio (target ≤ 2) | pre-keyed AEAD Ir | ratio to pre-keyed |"
    );
    let _ = writeln!(md, "|---:|---:|---:|---:|---:|---:|");
    for (p, m) in &by {
        let x = m.get("exchange").copied().unwrap_or(0.0);
        let a = m.get("aead").copied().unwrap_or(0.0);
        let k = m.get("aead-prekeyed").copied().unwrap_or(0.0);
        let r = |d: f64| if d > 0.0 { format!("{:.2}", x / d) } else { "–".into() };
        let _ = writeln!(md, "| {p} | {x:.0} | {a:.0} | {} | {k:.0} | {} |", r(a), r(k));
    }
    Some(md)
}

pub fn markdown(rows: &[Row], micro: Option<&Value>, memory: Option<&Value>, env: Option<&Value>) -> String {
    let mut md = String::new();
    let _ = writeln!(md, "# hopcore benchmark results\n");
    if let Some(e) = env {
        let _ = writeln!(
            md,
            "Run of {} on {} cores ({}), `{}`.  ",
            s(e, "date"),
            e.get("nproc").map(|v| v.to_string()).unwrap_or_default().trim_matches('"'),
            s(e, "cpu"),
            s(e, "kernel")
        );
        let _ = writeln!(
            md,
            "Load average before / after: {} / {}. {}\n",
            s(e, "load_before"),
            s(e, "load_after"),
            s(e, "note")
        );
        let _ =
            writeln!(md, "Commit: `{}`. Generated by `scripts/bench.sh` (raw data: `results/raw/`).\n", s(e, "commit"));
    }
    let _ = writeln!(md, "## Load: same origin, same load generator, only the proxy changes\n");
    let _ = writeln!(
        md,
        "The figure to compare is the proxy's own CPU time (utime+stime from /proc) per relayed request; \
         ratios are hopcore / best peer in the same run (CPU: lower is better; req/s: higher is better). \
         With several rounds, each row is the round with the median proxy CPU (the range over the rounds \
         in parentheses). `floor (bare UDP relay)` is `hopcore-bench relay`: one recv and one send per \
         datagram, no CoAP, one thread: what the kernel's loopback UDP path alone costs a proxy that \
         handles each datagram with its own system calls; it is never a peer.\n"
    );
    let _ = writeln!(
        md,
        "| scenario | implementation | req/s | p50 ms | p99 ms | proxy CPU µs/req | proxy VmRSS MiB | origin CPU µs/req | generator CPU µs/req | ok / failed / retx | ratio CPU to best peer | ratio req/s to best peer |"
    );
    let _ = writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (scenario, rs) in by_scenario(rows) {
        let (best_cpu, best_rps) = best_peer(&rs);
        for r in &rs {
            let (rc, rr) = if is_hopcore(r) {
                (
                    match (r.proxy_us, best_cpu.and_then(|b| b.proxy_us.map(|u| (u, &b.implementation)))) {
                        (Some(h), Some((b, name))) if b > 0.0 => format!("{:.2} ({name})", h / b),
                        _ => "–".into(),
                    },
                    match best_rps {
                        Some(b) if b.rps > 0.0 => format!("{:.2} ({})", r.rps / b.rps, b.implementation),
                        _ => "–".into(),
                    },
                )
            } else {
                (String::new(), String::new())
            };
            let _ = writeln!(
                md,
                "| {scenario} | {} | {:.0} | {:.3} | {:.3} | {} | {} | {} | {:.1} | {} / {} / {} | {rc} | {rr} |",
                r.implementation,
                r.rps,
                r.p50,
                r.p99,
                match (r.proxy_us, r.proxy_us_range) {
                    (Some(u), Some((lo, hi))) if r.rounds > 1 => format!("{u:.1} ({lo:.0}–{hi:.0})"),
                    (u, _) => opt(u, 1),
                },
                opt(r.proxy_rss.map(|b| b as f64 / 1048576.0), 1),
                opt(r.origin_us, 1),
                r.generator_us,
                r.ok,
                r.failures,
                r.retransmissions,
            );
        }
    }
    let errors: Vec<&Row> = rows.iter().filter(|r| r.first_error.is_some()).collect();
    if !errors.is_empty() {
        let _ = writeln!(md, "\nFirst error per run with failures:\n");
        for r in errors {
            let _ = writeln!(
                md,
                "- {} / {}: {}",
                r.scenario,
                r.implementation,
                r.first_error.as_deref().unwrap_or("").replace('|', "/")
            );
        }
    }
    if let Some(m) = micro {
        let _ = writeln!(md, "\n## Micro-benchmarks (criterion medians, this run)\n");
        if let Some(rows) = m.get("oscore").and_then(Value::as_array) {
            let _ = writeln!(md, "One OSCORE layer (AES-CCM-16-64-128) against the raw AEAD on the same plaintext and AAD lengths. Target: protect+unprotect ≤ 2× the AEAD. `AeadAlgorithm` keys the cipher on every call, as the OSCORE layer does; the pre-keyed AEAD is the lowest floor.\n");
            let _ = writeln!(
                md,
                "| message | payload B | protect ns | unprotect ns | AEAD seal+open ns | ratio | pre-keyed AEAD ns | ratio to pre-keyed |"
            );
            let _ = writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|");
            for r in rows {
                let _ = writeln!(
                    md,
                    "| {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} |",
                    s(r, "kind"),
                    u(r, "payload"),
                    f(r, "protect_ns"),
                    f(r, "unprotect_ns"),
                    f(r, "aead_ns"),
                    f(r, "ratio"),
                    f(r, "aead_prekeyed_ns"),
                    f(r, "ratio_prekeyed")
                );
            }
        }
        if let Some(layers) = m.get("layers").and_then(Value::as_array) {
            let _ = writeln!(md, "\nNested layers: a whole exchange through the nesting engine (client protects n layers, one endpoint removes them, protects the response with n layers, the client verifies), 64-byte payloads.\n");
            let _ =
                writeln!(md, "| layers | exchange µs | × of 1 layer | added by this layer µs | client protect µs |");
            let _ = writeln!(md, "|---:|---:|---:|---:|---:|");
            let base = layers.first().and_then(|l| l.get(1)).and_then(Value::as_f64).unwrap_or(1.0);
            let mut prev: Option<f64> = None;
            for l in layers {
                let n = l.get(0).and_then(Value::as_u64).unwrap_or(0);
                let x = l.get(1).and_then(Value::as_f64).unwrap_or(0.0);
                let p = l.get(2).and_then(Value::as_f64).unwrap_or(0.0);
                let step = prev.map_or("–".to_string(), |q| format!("{:.2}", (x - q) / 1000.0));
                let _ = writeln!(md, "| {n} | {:.2} | {:.2} | {step} | {:.2} |", x / 1000.0, x / base, p / 1000.0);
                prev = Some(x);
            }
        }
        if let Some(c) = m.get("codec").and_then(Value::as_array) {
            let _ = writeln!(md, "\nCodec (request `POST /sensors/temp`, token 4 bytes, payload as given):\n");
            let _ = writeln!(md, "| operation / payload B | ns |");
            let _ = writeln!(md, "|---|---:|");
            for e in c {
                let name = e.get(0).and_then(Value::as_str).unwrap_or("");
                let ns = e.get(1).and_then(Value::as_f64).unwrap_or(0.0);
                let _ = writeln!(md, "| {name} | {ns:.0} |");
            }
        }
        if let Some(d) = m.get("derive_ns").and_then(Value::as_f64) {
            let _ = writeln!(
                md,
                "\nContext derivation (`SecurityContext::derive`, HKDF-SHA-256, 3 outputs): {:.2} µs.",
                d / 1000.0
            );
        }
    }
    if let Some(m) = memory {
        let _ = writeln!(md, "\n## Memory\n");
        let _ = writeln!(md, "| what | bytes | target |");
        let _ = writeln!(md, "|---|---:|---|");
        let _ = writeln!(md, "| `size_of::<SecurityContext>()` | {} | |", u(m, "size_of_security_context"));
        let _ = writeln!(
            md,
            "| `size_of::<ContextMeta>()` / `size_of::<Option<ContextParams>>()` (in every store entry) | {} / {} | |",
            u(m, "size_of_context_meta"),
            u(m, "size_of_option_context_params")
        );
        let _ = writeln!(
            md,
            "| resident per context, {} contexts in a volatile `ContextStore` | {:.0} | ≤ 256 |",
            u(m, "contexts"),
            f(m, "store_bytes_per_context")
        );
        let _ = writeln!(
            md,
            "| resident per context, same contexts in a `Vec<SecurityContext>` | {:.0} | |",
            f(m, "vec_bytes_per_context")
        );
        let _ = writeln!(
            md,
            "| resident per exchange in flight at a client endpoint ({} CON requests), plain | {:.0} | |",
            u(m, "exchanges"),
            f(m, "plain_bytes_per_exchange")
        );
        let _ = writeln!(
            md,
            "| resident per exchange in flight at a client endpoint, OSCORE | {:.0} | |",
            f(m, "oscore_bytes_per_exchange")
        );
        let _ = writeln!(md, "\nThe proxy's resident size under load is the `proxy VmRSS MiB` column above (largest VmRSS sampled every 50 ms during the measured phase).");
    }
    md
}

const COLORS: [(&str, &str); 6] = [
    ("hopcore (", "#f59f00"),
    ("hopcore", "#d9480f"),
    ("libcoap", "#1c7ed6"),
    ("aiocoap", "#2f9e44"),
    ("floor", "#adb5bd"),
    ("other", "#868e96"),
];

fn color(implementation: &str) -> &'static str {
    COLORS.iter().find(|(k, _)| implementation.starts_with(k)).map_or(COLORS[5].1, |(_, c)| c)
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// One grouped bar chart: groups = scenarios, bars = implementations.
fn chart(
    svg: &mut String,
    top: f64,
    title: &str,
    groups: &[(String, Vec<(String, f64)>)],
    log: bool,
    unit: &str,
) -> f64 {
    let left = 70.0;
    let height = 220.0;
    let bar_w = 26.0;
    let gap = 30.0;
    let data_max = groups.iter().flat_map(|(_, b)| b.iter().map(|(_, v)| *v)).fold(0.0f64, f64::max).max(1e-9);
    // Linear axes end at a round number: 4 steps of 1, 2 or 5 × 10^k.
    let step = {
        let raw = data_max / 4.0;
        let mag = 10f64.powf(raw.log10().floor());
        [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * mag).find(|s| *s >= raw).unwrap_or(10.0 * mag)
    };
    let max = if log { data_max } else { step * 4.0 };
    let scale = |v: f64| -> f64 {
        if log {
            let lo = 0.0; // log10(1)
            let hi = max.log10().ceil().max(1.0);
            ((v.max(1.0)).log10() - lo) / (hi - lo) * height
        } else {
            v / max * height
        }
    };
    let _ =
        writeln!(svg, r#"<text x="{left}" y="{}" font-size="15" font-weight="bold">{}</text>"#, top + 16.0, esc(title));
    let base_y = top + 30.0 + height;
    // Grid.
    let ticks: Vec<f64> = if log {
        (0..=max.log10().ceil().max(1.0) as i32).map(|e| 10f64.powi(e)).collect()
    } else {
        (0..=4).map(|i| step * f64::from(i)).collect()
    };
    let mut x = left + 10.0;
    let group_w = |name: &str, bars: usize| (bars as f64 * bar_w).max(name.len() as f64 * 6.5);
    let width_end = left + 10.0 + groups.iter().map(|(n, b)| group_w(n, b.len()) + gap).sum::<f64>();
    for t in ticks {
        let y = base_y - scale(t);
        let _ = writeln!(
            svg,
            r##"<line x1="{left}" y1="{y:.1}" x2="{width_end:.1}" y2="{y:.1}" stroke="#dee2e6"/><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="end">{}</text>"##,
            left - 4.0,
            y + 3.0,
            if t >= 100.0 || t == 0.0 { format!("{t:.0}") } else { format!("{t:.1}") }
        );
    }
    let _ = writeln!(
        svg,
        r#"<text x="14" y="{:.1}" font-size="11" transform="rotate(-90 14 {:.1})" text-anchor="middle">{}</text>"#,
        base_y - height / 2.0,
        base_y - height / 2.0,
        esc(unit)
    );
    for (name, bars) in groups {
        let gx = x;
        // Center the bars in a group at least as wide as its label.
        let pad = (group_w(name, bars.len()) - bars.len() as f64 * bar_w) / 2.0;
        x += pad;
        for (implementation, v) in bars {
            let h = scale(*v).max(0.5);
            let _ = writeln!(
                svg,
                r#"<rect x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>{}: {v:.1}</title></rect>"#,
                base_y - h,
                bar_w - 3.0,
                color(implementation),
                esc(implementation)
            );
            let _ = writeln!(
                svg,
                r#"<text x="{:.1}" y="{:.1}" font-size="9" text-anchor="middle">{}</text>"#,
                x + (bar_w - 3.0) / 2.0,
                base_y - h - 3.0,
                if *v >= 100.0 { format!("{v:.0}") } else { format!("{v:.1}") }
            );
            x += bar_w;
        }
        x += pad;
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle">{}</text>"#,
            (gx + x - 3.0) / 2.0,
            base_y + 14.0,
            esc(name)
        );
        x += gap;
    }
    let _ = writeln!(svg, r##"<line x1="{left}" y1="{base_y}" x2="{width_end:.1}" y2="{base_y}" stroke="#495057"/>"##);
    base_y + 30.0
}

pub fn svg(rows: &[Row], subtitle: &str) -> String {
    let scenarios = by_scenario(rows);
    let rps: Vec<(String, Vec<(String, f64)>)> = scenarios
        .iter()
        .map(|(s, rs)| (s.clone(), rs.iter().map(|r| (r.implementation.clone(), r.rps)).collect()))
        .collect();
    let cpu: Vec<(String, Vec<(String, f64)>)> = scenarios
        .iter()
        .filter_map(|(s, rs)| {
            let bars: Vec<(String, f64)> =
                rs.iter().filter_map(|r| r.proxy_us.map(|u| (r.implementation.clone(), u))).collect();
            (!bars.is_empty()).then(|| (s.clone(), bars))
        })
        .collect();
    let label_w: f64 = scenarios.iter().map(|(s, rs)| (rs.len() as f64 * 26.0).max(s.len() as f64 * 6.5)).sum();
    let width = (120.0 + label_w + scenarios.len() as f64 * 30.0).max(640.0);
    let mut body = String::new();
    let y = chart(&mut body, 40.0, "Throughput (requests/s, higher is better)", &rps, false, "req/s");
    let y =
        chart(&mut body, y, "Proxy CPU per relayed request (µs, log scale, lower is better)", &cpu, true, "µs/request");
    let mut legend_x = 70.0;
    for (name, c) in COLORS.iter().take(5) {
        let name = if *name == "hopcore (" { "hopcore (variant)" } else { name };
        let _ = writeln!(
            body,
            r#"<rect x="{legend_x}" y="{y:.1}" width="12" height="12" fill="{c}"/><text x="{:.1}" y="{:.1}" font-size="11">{name}</text>"#,
            legend_x + 16.0,
            y + 10.0
        );
        legend_x += 130.0;
    }
    let height = y + 30.0;
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif">
<rect width="100%" height="100%" fill="white"/>
<text x="70" y="20" font-size="12" fill="#495057">{}</text>
{body}</svg>
"##,
        esc(subtitle)
    )
}

fn read_json(path: &Path) -> Option<Value> {
    let text = std::fs::read_to_string(path).ok()?;
    serde_json::from_str(&text).ok()
}

pub fn run(args: &ReportArgs) -> anyhow::Result<()> {
    let load = std::fs::read_to_string(args.raw.join("load.jsonl")).unwrap_or_default();
    let rows = aggregate(rows(&load));
    let micro = read_json(&args.raw.join("micro.json"));
    let memory = read_json(&args.raw.join("memory.json"));
    let env = read_json(&args.raw.join("env.json"));
    let mut md = markdown(&rows, micro.as_ref(), memory.as_ref(), env.as_ref());
    if let Some(t) =
        instructions_table(&std::fs::read_to_string(args.raw.join("instructions.jsonl")).unwrap_or_default())
    {
        // After the micro-benchmark tables, before the memory section.
        match md.find("\n## Memory") {
            Some(i) => md.insert_str(i, &t),
            None => md.push_str(&t),
        }
    }
    let subtitle = env.as_ref().map_or_else(String::new, |e| {
        format!(
            "{} · {} cores · {} · load {}",
            s(e, "date"),
            e.get("nproc").map(|v| v.to_string()).unwrap_or_default().trim_matches('"'),
            s(e, "cpu"),
            s(e, "load_before")
        )
    });
    let md_path = args.out.with_extension("md");
    let svg_path = args.out.with_extension("svg");
    std::fs::write(&md_path, md).with_context(|| format!("writing {}", md_path.display()))?;
    std::fs::write(&svg_path, svg(&rows, &subtitle)).with_context(|| format!("writing {}", svg_path.display()))?;
    println!("wrote {} and {}", md_path.display(), svg_path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LINES: &str = r#"{"scenario":"proxy CF-0","implementation":"hopcore","requests_per_s":1000.0,"p50_ms":1.0,"p99_ms":2.0,"ok":10,"failures":0,"retransmissions":0,"generator_cpu_us_per_request":5.0,"watched":[{"label":"proxy","cpu_us_per_request":20.0,"rss_max_bytes":1048576},{"label":"origin","cpu_us_per_request":9.0}]}
{"scenario":"proxy CF-0","implementation":"libcoap 4.3.1","requests_per_s":2000.0,"p50_ms":1.0,"p99_ms":2.0,"ok":10,"failures":0,"retransmissions":0,"generator_cpu_us_per_request":5.0,"watched":[{"label":"proxy","cpu_us_per_request":40.0}]}
"#;

    #[test]
    fn ratios_to_the_best_peer() {
        let rows = rows(LINES);
        assert_eq!(rows.len(), 2);
        let md = markdown(&rows, None, None, None);
        assert!(md.contains("| 0.50 (libcoap 4.3.1) | 0.50 (libcoap 4.3.1) |"), "{md}");
        let svg = svg(&rows, "t");
        assert!(svg.starts_with("<svg") && svg.contains("libcoap 4.3.1"));
    }

    #[test]
    fn rounds_keep_the_median_row() {
        let three: String = [30.0, 10.0, 20.0]
            .iter()
            .map(|us| {
                format!(
                    "{{\"scenario\":\"s\",\"implementation\":\"hopcore\",\"requests_per_s\":{us},\"ok\":1,\
                     \"watched\":[{{\"label\":\"proxy\",\"cpu_us_per_request\":{us}}}]}}\n"
                )
            })
            .collect();
        let rows = aggregate(rows(&three));
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].proxy_us, Some(20.0));
        assert_eq!(rows[0].rounds, 3);
        assert_eq!(rows[0].proxy_us_range, Some((10.0, 30.0)));
    }
}
