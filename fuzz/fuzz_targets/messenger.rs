//! Fuzzes the message layer with a sequence of datagrams from a few peers.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hopcore_messaging::{Config, Messenger};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut m = Messenger::with_seed(Config::default(), 0);
    let mut now = Instant::now();
    for chunk in data.split(|b| *b == 0xA5) {
        let Some((&p, rest)) = chunk.split_first() else { continue };
        let peer = SocketAddr::from(([127, 0, 0, 1], 1000 + (p % 4) as u16));
        m.handle_datagram(now, peer, rest);
        now += Duration::from_millis(p as u64 * 10);
        m.handle_timeout(now);
        while m.poll_transmit().is_some() {}
        while m.poll_event().is_some() {}
    }
});
