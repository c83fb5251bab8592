//! ContextStore: durable reservations across restarts and crashes (RFC 8613 App. B.1.1),
//! replay windows after a restart (App. B.1.2), lookup (§8.2 step 2).

use hopcore_oscore::{ContextInput, Error as OscoreError, SecurityContext, SenderSequence};
use hopcore_security::durable::CrashPoint;
use hopcore_security::{ContextId, ContextMeta, ContextStore, StoreError, StoreOptions};

const SECRET: [u8; 16] = [0x42; 16];

fn server_ctx() -> SecurityContext {
    SecurityContext::derive(&ContextInput::new(&SECRET, &[0x01], &[0x02])).unwrap()
}

fn opts(k: u64) -> StoreOptions {
    StoreOptions { reserve_step: k, ..StoreOptions::default() }
}

fn open_with(dir: &std::path::Path, k: u64) -> (ContextStore, ContextId) {
    let mut store = ContextStore::open(dir, opts(k)).unwrap();
    let ctx = server_ctx();
    let meta = ContextMeta::durable("peer", &ctx);
    let id = store.add(ctx, meta).unwrap();
    (store, id)
}

/// Takes one Partial IV the way senders must: prepare_send, then use it.
fn send(store: &mut ContextStore, id: ContextId) -> u64 {
    store.prepare_send(id).unwrap().next_partial_iv().unwrap().to_sequence()
}

#[test]
fn roundtrip_without_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let k = 64;
    for n in [1u64, 63, 64, 65, 1000] {
        let sub = dir.path().join(format!("n{n}"));
        let (mut store, id) = open_with(&sub, k);
        assert!(store.replay_synchronized(id), "a never-used context starts fresh (§3.2.2)");
        let mut last = None;
        for expected in 0..n {
            let piv = send(&mut store, id);
            assert_eq!(piv, expected);
            last = Some(piv);
        }
        let last = last.unwrap();
        let bound = store.reserved_bound(id).unwrap().unwrap();
        assert!(bound > last && bound <= last + k, "bound {bound} last {last}");
        // No clean shutdown: the process just goes away.
        drop(store);

        let (mut store, id) = open_with(&sub, k);
        let next = send(&mut store, id);
        assert!(next > last, "n={n}: next {next} must be above the last used {last}");
        assert!(next <= last + k, "n={n}: next {next} is more than one step K={k} above {last}");
        assert!(!store.replay_synchronized(id), "App. B.1.2: window unsynchronized after an unclean stop");
        let err = store.get(id).unwrap().replay_window().check(5).unwrap_err();
        assert_eq!(err, OscoreError::ReplayWindowUnsynchronized);
    }
}

#[test]
fn restart_without_sending_keeps_the_bound() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, id) = open_with(dir.path(), 10);
    for _ in 0..15 {
        send(&mut store, id);
    }
    drop(store);
    // Several restarts in a row without sending must neither go backwards nor reuse.
    for _ in 0..3 {
        let (store, id) = open_with(dir.path(), 10);
        assert_eq!(store.get(id).unwrap().sequence().peek(), 20);
    }
    let (mut store, id) = open_with(dir.path(), 10);
    assert_eq!(send(&mut store, id), 20);
}

#[test]
fn sequence_hint_above_the_stored_bound_wins() {
    // E.g. aiocoap's sequence.json says 5000: never go below it.
    let dir = tempfile::tempdir().unwrap();
    let (mut store, id) = open_with(dir.path(), 16);
    send(&mut store, id);
    drop(store);
    let mut store = ContextStore::open(dir.path(), opts(16)).unwrap();
    let ctx = server_ctx().with_sequence(SenderSequence::volatile(5000));
    let meta = ContextMeta::durable("peer", &ctx);
    let id = store.add(ctx, meta).unwrap();
    assert_eq!(send(&mut store, id), 5000);
}

#[test]
fn changing_k_between_runs_is_safe() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, id) = open_with(dir.path(), 1000);
    let last = (0..5).map(|_| send(&mut store, id)).last().unwrap();
    drop(store);
    let (mut store, id) = open_with(dir.path(), 1);
    let next = send(&mut store, id);
    assert!(next > last);
    assert_eq!(next, 1000, "continues from the bound reserved with the old K");
    assert_eq!(send(&mut store, id), 1001);
    assert_eq!(store.reserved_bound(id).unwrap(), Some(1002));
}

#[test]
fn crash_at_every_point_of_a_reservation() {
    let k = 8;
    // Simulated crash points around the reservation of the second block (numbers 8..16).
    for point in [CrashPoint::BeforeCommit, CrashPoint::AfterCommit] {
        let dir = tempfile::tempdir().unwrap();
        let (mut store, id) = open_with(dir.path(), k);
        let used: Vec<u64> = (0..k).map(|_| send(&mut store, id)).collect();
        store.simulate_crash_at(Some(point));
        let err = store.prepare_send(id).unwrap_err();
        assert!(matches!(err, StoreError::SimulatedCrash), "{err}");
        // The sequence did not learn about the reservation, so no number of the block can be
        // taken from it in this (dying) process.
        assert!(store.get_mut(id).unwrap().next_partial_iv().is_err());
        drop(store);

        let (mut store, id) = open_with(dir.path(), k);
        let next = send(&mut store, id);
        assert!(used.iter().all(|&u| u < next), "{point:?}: {next} reused");
        let expected = match point {
            // The reservation never reached the disk: start from the old bound (nothing of the
            // new block was used).
            CrashPoint::BeforeCommit => k,
            // It reached the disk: start above the whole reserved block.
            CrashPoint::AfterCommit => 2 * k,
        };
        assert_eq!(next, expected, "{point:?}");
    }
}

#[test]
fn drop_at_each_position_inside_a_block() {
    // "Crash" (drop without shutdown) after j numbers of the second block were used, for every
    // j, with and without a reservation made for a number that was then never used.
    let k = 5;
    for prepared_unused in [false, true] {
        for j in 0..=k {
            let dir = tempfile::tempdir().unwrap();
            let (mut store, id) = open_with(dir.path(), k);
            let used: Vec<u64> = (0..k + j).map(|_| send(&mut store, id)).collect();
            if prepared_unused {
                store.prepare_send(id).unwrap();
            }
            drop(store);
            let (mut store, id) = open_with(dir.path(), k);
            let next = send(&mut store, id);
            let last = *used.last().unwrap();
            // Above everything used; at most one block skipped (plus the one prepared number).
            let limit = last + k + u64::from(prepared_unused);
            assert!(next > last && next <= limit, "j={j} prepared={prepared_unused}: next {next}, last {last}");
        }
    }
}

#[test]
fn clean_shutdown_keeps_the_replay_window() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, id) = open_with(dir.path(), 16);
    for seq in [0, 1, 2, 7] {
        store.get_mut(id).unwrap().replay_window_mut().commit(seq).unwrap();
    }
    store.shutdown().unwrap();

    let (mut store, id) = open_with(dir.path(), 16);
    assert!(store.replay_synchronized(id), "clean shutdown: no Echo exchange needed");
    let window = store.get(id).unwrap().replay_window();
    assert_eq!(window.highest(), Some(7));
    assert!(window.check(7).is_err());
    assert!(window.check(5).is_err(), "conservative: everything up to the highest counts as seen");
    assert!(window.check(8).is_ok());
    store.get_mut(id).unwrap().replay_window_mut().commit(8).unwrap();
    // The snapshot was consumed at load: crashing now must not bring back the old window,
    // which would accept 8 again.
    drop(store);
    let (store, id) = open_with(dir.path(), 16);
    assert!(!store.replay_synchronized(id));
}

#[test]
fn persist_replay_then_more_requests_is_not_trusted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, id) = open_with(dir.path(), 16);
    store.get_mut(id).unwrap().replay_window_mut().commit(3).unwrap();
    store.persist_replay(id).unwrap();
    // After the snapshot the window refuses (a request accepted now would be missing from it).
    assert!(!store.replay_synchronized(id));
    store.synchronize_replay(id, 10);
    assert!(store.replay_synchronized(id));
    assert!(store.get(id).unwrap().replay_window().check(10).is_err());
    assert!(store.get(id).unwrap().replay_window().check(11).is_ok());
}

#[test]
fn clean_shutdown_with_nothing_received() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_with(dir.path(), 16);
    store.shutdown().unwrap();
    let (store, id) = open_with(dir.path(), 16);
    assert!(store.replay_synchronized(id));
    assert_eq!(store.get(id).unwrap().replay_window().highest(), None);
}

#[test]
fn one_store_per_directory() {
    let dir = tempfile::tempdir().unwrap();
    let _first = ContextStore::open(dir.path(), opts(16)).unwrap();
    let err = ContextStore::open(dir.path(), opts(16)).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("hopcore-security.redb"), "{err}");
}

#[test]
fn duplicate_persist_key_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (mut store, _) = open_with(dir.path(), 16);
    let ctx = server_ctx();
    let meta = ContextMeta::durable("other", &ctx);
    let err = store.add(ctx, meta).unwrap_err();
    assert!(matches!(err, StoreError::DuplicatePersistKey { .. }), "{err}");
    assert!(err.to_string().contains("\"peer\""), "{err}");
}

#[test]
fn invalid_options() {
    let dir = tempfile::tempdir().unwrap();
    let err = ContextStore::open(dir.path(), opts(0)).unwrap_err();
    assert!(err.to_string().contains("positive"), "{err}");
    let bad = StoreOptions { replay_window: 129, ..StoreOptions::default() };
    assert!(ContextStore::volatile_with(bad).is_err());
}

#[test]
fn volatile_store_and_contexts_without_persist_key() {
    let mut store = ContextStore::volatile();
    assert!(!store.is_durable());
    let id = store.add(server_ctx(), ContextMeta::new("peer")).unwrap();
    for expected in 0..1000 {
        assert_eq!(send(&mut store, id), expected);
    }
    // A context that asks for reservations cannot live without durable state.
    let persistent = server_ctx().with_sequence(SenderSequence::persistent(0, 8).unwrap());
    let err = store.add(persistent, ContextMeta::new("p")).unwrap_err();
    assert!(matches!(err, StoreError::NotDurable { .. }), "{err}");

    // Durable store, no persist key: kept volatile (e.g. an App. B.2 context).
    let dir = tempfile::tempdir().unwrap();
    let mut store = ContextStore::open(dir.path(), opts(4)).unwrap();
    let id = store.add(server_ctx(), ContextMeta::new("ephemeral")).unwrap();
    for expected in 0..10 {
        assert_eq!(send(&mut store, id), expected);
    }
    assert_eq!(store.reserved_bound(id).unwrap(), None);
}

#[test]
fn exhausted_sequence_is_reported() {
    let mut store = ContextStore::volatile();
    let ctx = server_ctx().with_sequence(SenderSequence::volatile(1 << 40));
    let id = store.add(ctx, ContextMeta::new("old")).unwrap();
    let err = store.prepare_send(id).unwrap_err();
    assert!(matches!(err, StoreError::SequenceExhausted { .. }), "{err}");
    assert!(err.to_string().contains("\"old\""));
}

fn ctx(sender: &[u8], recipient: &[u8], id_context: Option<&[u8]>) -> SecurityContext {
    let mut input = ContextInput::new(&SECRET, sender, recipient);
    if let Some(c) = id_context {
        input = input.id_context(c);
    }
    SecurityContext::derive(&input).unwrap()
}

#[test]
fn lookup_with_and_without_kid_context() {
    let mut store = ContextStore::volatile();
    let plain = store.add(ctx(&[0xa0], &[0x01], None), ContextMeta::new("plain")).unwrap();
    let with_c = store.add(ctx(&[0xa1], &[0x01], Some(&[0xcc])), ContextMeta::new("c")).unwrap();
    let with_d = store.add(ctx(&[0xa2], &[0x01], Some(&[0xdd])), ContextMeta::new("d")).unwrap();
    let only_e = store.add(ctx(&[0xa3], &[0x02], Some(&[0xee])), ContextMeta::new("e")).unwrap();
    let empty_kid = store.add(ctx(&[0xa4], &[], None), ContextMeta::new("empty")).unwrap();

    // kid context present: exact ID Context match only (§5.1).
    assert_eq!(store.lookup_recipient(&[0x01], Some(&[0xcc])), Some(with_c));
    assert_eq!(store.lookup_recipient(&[0x01], Some(&[0xdd])), Some(with_d));
    assert_eq!(store.lookup_recipient(&[0x01], Some(&[0xee])), None, "kid and kid context must both match");
    assert_eq!(store.lookup_recipient(&[0x02], Some(&[0xcc])), None);
    assert_eq!(store.lookup_recipient(&[0x02], Some(&[])), None, "empty kid context is not 'absent'");
    // No kid context: the context without ID Context is the exact match and wins.
    assert_eq!(store.lookup_recipient(&[0x01], None), Some(plain));
    assert_eq!(store.lookup_recipient_all(&[0x01], None), vec![plain, with_c, with_d]);
    // Only contexts with ID Context: the kid context may be omitted (§5.1).
    assert_eq!(store.lookup_recipient(&[0x02], None), Some(only_e));
    // The empty Recipient ID is a valid kid.
    assert_eq!(store.lookup_recipient(&[], None), Some(empty_kid));
    assert_eq!(store.lookup_recipient(&[0x03], None), None);
    let (found, c) = store.lookup_recipient_mut(&[0x01], Some(&[0xdd])).unwrap();
    assert_eq!((found, c.sender_id()), (with_d, &[0xa2][..]));
}

#[test]
fn lookup_ambiguous_cases_resolve_to_the_earliest() {
    let mut store = ContextStore::volatile();
    // Same Recipient ID and ID Context under different secrets (allowed by §3.3: "may need to
    // try multiple times").
    let first = store.add(ctx(&[0xa0], &[0x07], Some(&[0x01])), ContextMeta::new("first")).unwrap();
    let other = SecurityContext::derive(&ContextInput::new(&[9; 16], &[0xa0], &[0x07]).id_context(&[0x01])).unwrap();
    let second = store.add(other, ContextMeta::new("second")).unwrap();
    assert_eq!(store.lookup_recipient(&[0x07], Some(&[0x01])), Some(first));
    assert_eq!(store.lookup_recipient_all(&[0x07], Some(&[0x01])), vec![first, second]);
    // Two without ID Context for one kid, added later than ones with: still preferred, earliest first.
    let a = store.add(ctx(&[0xb0], &[0x07], None), ContextMeta::new("a")).unwrap();
    let b = store.add(ctx(&[0xb1], &[0x07], None), ContextMeta::new("b")).unwrap();
    assert_eq!(store.lookup_recipient_all(&[0x07], None), vec![a, b, first, second]);
    // Removing the winner promotes the next.
    store.remove(a).unwrap();
    assert_eq!(store.lookup_recipient(&[0x07], None), Some(b));
    assert!(store.get(a).is_none());
    assert!(matches!(store.prepare_send(a), Err(StoreError::UnknownContext(_))));
}

#[test]
fn replace_keeps_handle_and_label() {
    let mut store = ContextStore::volatile();
    let id = store.add(ctx(&[0xa0], &[0x01], None), ContextMeta::new("peer")).unwrap();
    let old = store.replace(id, ctx(&[0xa0], &[0x01], Some(&[1, 2, 3]))).unwrap();
    assert_eq!(old.id_context(), None);
    assert_eq!(store.get(id).unwrap().id_context(), Some(&[1, 2, 3][..]));
    assert_eq!(store.meta(id).unwrap().label, "peer");
    assert_eq!(store.lookup_recipient(&[0x01], Some(&[1, 2, 3])), Some(id));
    let moved = store.replace(id, ctx(&[0xa0], &[0x09], None)).unwrap();
    assert_eq!(moved.recipient_id(), &[0x01]);
    assert_eq!(store.lookup_recipient(&[0x01], None), None);
    assert_eq!(store.lookup_recipient(&[0x09], None), Some(id));
}

#[test]
fn store_debug_shows_no_keys() {
    let mut store = ContextStore::volatile();
    let c = ctx(&[0xa0], &[0x01], None);
    let key_hex: String = c.sender_key().iter().map(|b| format!("{b:02x}")).collect();
    store.add(c, ContextMeta::new("peer")).unwrap();
    let dbg = format!("{store:?}");
    assert!(dbg.contains("peer"), "{dbg}");
    assert!(!dbg.contains(&key_hex), "{dbg}");
}
