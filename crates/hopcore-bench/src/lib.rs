//! # hopcore-bench: the measurement harness (issue #5)
//!
//! - `benches/micro.rs`: criterion micro-benchmarks (codec, one OSCORE layer against the raw
//!   AEAD, 1-4 nested layers, context derivation) and their ratios ([`micro_report`]).
//! - the `hopcore-bench` binary: the loopback load generator ([`load`]), the memory figures
//!   (`hopcore-bench memory`, [`memory`]) and the report (`hopcore-bench report`, [`report`]).
//! - `scripts/bench.sh`: one command that installs the peers, starts origin and proxies on
//!   loopback and runs every scenario against hopcore, libcoap and aiocoap in the same run.
//!
//! Timings live only here, never in tests.

pub mod fixtures;
pub mod load;
pub mod memory;
pub mod micro_report;
pub mod procfs;
pub mod profile;
pub mod relay;
pub mod report;
