//! RFC 8613 App. B.1.1 under a real `kill -9`: a child process sends as fast as it can and
//! prints every Partial IV after using it; the parent kills it with SIGKILL at a random moment,
//! reopens the store and checks that the next Partial IV is above everything the child used.
//!
//! The child is this test binary again, running only `child_sender` with `HOPCORE_KILL9_DIR`
//! set.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

use hopcore_oscore::{ContextInput, SecurityContext};
use hopcore_security::{ContextId, ContextMeta, ContextStore, StoreOptions};

const ENV: &str = "HOPCORE_KILL9_DIR";
const K: u64 = 16;

fn open(dir: &std::path::Path) -> (ContextStore, ContextId) {
    let mut store = ContextStore::open(dir, StoreOptions { reserve_step: K, ..StoreOptions::default() }).unwrap();
    let ctx = SecurityContext::derive(&ContextInput::new(&[5; 16], &[0x01], &[0x02])).unwrap();
    let meta = ContextMeta::durable("peer", &ctx);
    let id = store.add(ctx, meta).unwrap();
    (store, id)
}

/// Not a test on its own: the child's body (returns at once without the environment variable).
#[test]
fn child_sender() {
    let Some(dir) = std::env::var_os(ENV) else { return };
    let (mut store, id) = open(std::path::Path::new(&dir));
    let mut out = std::io::stdout().lock();
    loop {
        let piv = store.prepare_send(id).unwrap().next_partial_iv().unwrap().to_sequence();
        // "Used": it leaves the process only after prepare_send returned.
        writeln!(out, "PIV {piv}").unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn sigkill_never_reuses_a_partial_iv() {
    if std::env::var_os(ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut highest_used: Option<u64> = None;
    for round in 0..5u64 {
        let mut child = Command::new(&exe)
            .args(["--exact", "child_sender", "--nocapture", "--test-threads=1"])
            .env(ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        // Kill after a varying number of messages, so the kill lands at different offsets of a
        // reservation block (and sometimes inside the reservation write).
        let kill_after = 37 + round * 23 + u64::from(rand_u8()) % K;
        let mut first = None;
        let mut seen = 0;
        for line in lines.by_ref() {
            let Some(n) = line.unwrap().strip_prefix("PIV ").and_then(|n| n.parse::<u64>().ok()) else { continue };
            first.get_or_insert(n);
            highest_used = highest_used.max(Some(n));
            seen += 1;
            if seen == kill_after {
                child.kill().unwrap(); // SIGKILL
                break;
            }
        }
        // Whatever the child printed before it died was used too.
        for line in lines {
            let Ok(line) = line else { break };
            if let Some(n) = line.strip_prefix("PIV ").and_then(|n| n.parse::<u64>().ok()) {
                highest_used = highest_used.max(Some(n));
            }
        }
        child.wait().unwrap();
        assert!(first.is_some(), "round {round}: the child sent nothing");

        let (store, id) = open(dir.path());
        let next = store.get(id).unwrap().sequence().peek();
        let highest = highest_used.unwrap();
        assert!(next > highest, "round {round}: next {next} would reuse (highest used {highest})");
        // The child may have died with a reservation on disk that it never used, so up to one
        // block plus one above the last number printed.
        assert!(next <= highest + 1 + K, "round {round}: next {next}, highest used {highest}");
        assert!(!store.replay_synchronized(id));
    }
}

fn rand_u8() -> u8 {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    (nanos % 251) as u8
}
