//! The ContextStore as the nesting engine's `SecurityContexts` (hopcore-layers): reservations
//! are made for every layer the engine protects.

use hopcore_codec::{Code, Message};
use hopcore_layers::{protect_request_layers, SecurityContexts};
use hopcore_oscore::{ContextInput, SecurityContext};
use hopcore_security::{ContextMeta, ContextStore, StoreOptions};

#[test]
fn engine_protects_through_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let mut store =
        ContextStore::open(dir.path(), StoreOptions { reserve_step: 2, ..StoreOptions::default() }).unwrap();
    let e2e = SecurityContext::derive(&ContextInput::new(&[1; 16], &[0xc1], &[0x5e])).unwrap();
    let hop = SecurityContext::derive(&ContextInput::new(&[2; 16], &[0xc1], &[0x70])).unwrap();
    let meta_e2e = ContextMeta::durable("server", &e2e);
    let meta_hop = ContextMeta::durable("proxy-a", &hop);
    let e2e = store.add(e2e, meta_e2e).unwrap();
    let hop = store.add(hop, meta_hop).unwrap();

    let mut request = Message::request(Code::GET);
    request.set_path("/x");
    for round in 1..=3u64 {
        let (protected, stack) = protect_request_layers(&request, &mut store, &[e2e, hop], 4).unwrap();
        assert_eq!(stack.len(), 2);
        assert_eq!(stack.labels(), vec!["server".to_string(), "proxy-a".to_string()]);
        assert_ne!(protected, request);
        // K = 2: a durable reservation every second message, always ahead of use.
        let bound = store.reserved_bound(e2e).unwrap().unwrap();
        assert!(bound >= round && bound <= round + 2, "round {round}: bound {bound}");
    }
    assert_eq!(SecurityContexts::label(&store, hop), "proxy-a");
    assert_eq!(SecurityContexts::lookup_recipient(&store, &[0x70], None), Some(hop));
    let echo = SecurityContexts::issue_echo(&mut store, e2e).unwrap();
    assert!(!SecurityContexts::verify_echo(&mut store, hop, &echo));
    assert!(SecurityContexts::verify_echo(&mut store, e2e, &echo));
}
