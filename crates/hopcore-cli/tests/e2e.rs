//! End-to-end: real `hopcore` processes on loopback.

mod common;

use common::*;

#[test]
fn get_post_block2_and_errors_against_server() {
    let server = spawn(&["server"]);
    let base = format!("coap://{}", server.addr);

    let o = run(&["get", &format!("{base}/hello")]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "Hello from hopcore");

    let o = run(&["post", &format!("{base}/echo"), "--payload", "abc", "--content-format", "text/plain"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("abc"));

    // /large needs Block2: the whole 4096 bytes arrive.
    let o = run(&["get", &format!("{base}/large")]);
    assert!(o.status.success(), "{}", stderr(&o));
    // The payload and the newline the CLI prints after it.
    assert_eq!(o.stdout.len(), 4096 + 1, "{}", stdout(&o));

    // -v shows the code and options.
    let o = run(&["get", "-v", &format!("{base}/hello")]);
    assert!(stdout(&o).contains("2.05 Content"), "{}", stdout(&o));
    assert!(stdout(&o).contains("Content-Format: 0"), "{}", stdout(&o));

    // 4.04 is an error exit with the code on stderr.
    let o = run(&["get", &format!("{base}/nothing")]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("4.04 Not Found"), "{}", stderr(&o));

    // Link-format discovery lists the demo resources.
    let o = run(&["get", &format!("{base}/.well-known/core")]);
    let s = stdout(&o);
    for r in ["</hello>", "</echo>", "</time>", "</large>"] {
        assert!(s.contains(r), "{r} missing in {s}");
    }
}

#[test]
fn observe_prints_notifications() {
    let server = spawn(&["server"]);
    let o = run(&["get", "--observe", "--count", "3", "--timeout", "5", &format!("coap://{}/time", server.addr)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<_> = stdout(&o).lines().filter(|l| !l.is_empty()).map(str::to_string).collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines.iter().all(|l| l.ends_with('Z') && l.contains('T')), "{lines:?}");
    assert!(lines[0] < lines[2], "time moves forward: {lines:?}");
}

#[test]
fn forward_proxy_both_forms() {
    let server = spawn(&["server"]);
    let proxy = spawn(&["proxy"]);
    let target = format!("coap://{}/hello", server.addr);
    let via = format!("coap://{}", proxy.addr);
    for extra in [&[][..], &["--proxy-scheme"][..]] {
        let mut args = vec!["get", &target, "--proxy", &via];
        args.extend_from_slice(extra);
        let o = run(&args);
        assert!(o.status.success(), "{extra:?}: {}", stderr(&o));
        assert_eq!(stdout(&o).trim(), "Hello from hopcore");
    }
    // Block2 and Observe through the proxy.
    let o = run(&["get", &format!("coap://{}/large", server.addr), "--proxy", &via]);
    assert_eq!(o.stdout.len(), 4096 + 1, "{}", stderr(&o));
    let o = run(&[
        "get",
        "--observe",
        "--count",
        "2",
        "--timeout",
        "5",
        &format!("coap://{}/time", server.addr),
        "--proxy",
        &via,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).lines().filter(|l| !l.is_empty()).count(), 2);
    // The server (not a proxy) refuses proxy requests: 5.05.
    let o = run(&["get", &target, "--proxy", &format!("coap://{}", server.addr)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("5.05"), "{}", stderr(&o));
}

#[test]
fn reverse_proxy_route_from_config() {
    let server = spawn(&["server"]);
    let dir = std::env::temp_dir().join(format!("hopcore-e2e-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("proxy.toml");
    std::fs::write(
        &cfg,
        format!("forward = false\n\n[[route]]\npath = \"/srv\"\nupstream = \"coap://{}/\"\n", server.addr),
    )
    .unwrap();
    let proxy = spawn(&["proxy", "--config", cfg.to_str().unwrap()]);
    let o = run(&["get", &format!("coap://{}/srv/hello", proxy.addr)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim(), "Hello from hopcore");
    // Forwarding is off in this configuration: 5.05.
    let o = run(&["get", &format!("coap://{}/hello", server.addr), "--proxy", &format!("coap://{}", proxy.addr)]);
    assert!(stderr(&o).contains("5.05"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn readable_errors() {
    // Nothing listens there: no response within the timeout, exit 3.
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    drop(sock);
    let o = run(&["get", "--timeout", "1", &format!("coap://{addr}/x")]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(stderr(&o).to_lowercase().contains("no response") || stderr(&o).contains("timed out"), "{}", stderr(&o));
    // Bad URI.
    let o = run(&["get", "not a uri"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).contains("bad URI"), "{}", stderr(&o));
    let o = run(&["get", "http://example.org/"]);
    assert!(stderr(&o).contains("not supported"), "{}", stderr(&o));
    // Bad content-format name.
    let o = run(&["post", "coap://127.0.0.1/x", "--payload", "a", "--content-format", "image/unknown"]);
    assert!(stderr(&o).contains("unknown content-format"), "{}", stderr(&o));
    // A proxy config that does not parse: the proxy says why and exits.
    let dir = std::env::temp_dir().join(format!("hopcore-e2e-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg = dir.join("bad.toml");
    std::fs::write(&cfg, "[[route]]\npath = \"/a\"\nupstream = \"::not a uri\"\n").unwrap();
    let o = run(&["proxy", "--bind", "127.0.0.1:0", "--config", cfg.to_str().unwrap()]);
    assert_ne!(o.status.code(), Some(0));
    assert!(!stderr(&o).is_empty());
    let _ = std::fs::remove_dir_all(&dir);
}

/// 10,000 random and mutated datagrams crash neither the server nor the proxy, and both
/// still answer afterwards.
#[test]
fn flood_of_garbage_crashes_nothing() {
    let mut server = spawn(&["server"]);
    let mut proxy = spawn(&["proxy"]);
    flood(server.addr, 10_000, 7);
    flood(proxy.addr, 10_000, 8);
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(server.alive(), "server died");
    assert!(proxy.alive(), "proxy died");
    let r = raw_get(server.addr, "hello", 0x4242).expect("server still answers");
    assert_eq!(r[1], 0x45, "2.05 from the server");
    let o = run(&["get", &format!("coap://{}/hello", server.addr), "--proxy", &format!("coap://{}", proxy.addr)]);
    assert!(o.status.success(), "proxy still relays: {}", stderr(&o));
}

/// The README's main command: every configuration CF-0…CF-7 and the onion route answer, and
/// on the client leg of CF-7 only the OSCORE option is visible.
#[test]
fn demo_runs_every_configuration() {
    let o = run(&["demo"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for cf in 0..8 {
        assert!(out.contains(&format!("CF-{cf} (OSCORE on")), "CF-{cf} missing:\n{out}");
    }
    assert!(out.contains("Onion route through three proxies"), "{out}");
    assert_eq!(out.matches("-> \"Hello from hopcore\"").count(), 9, "{out}");
    let cf7 = out.split("CF-7").nth(1).unwrap_or_default();
    let c_p = cf7.lines().find(|l| l.trim_start().starts_with("C-P ")).unwrap_or_default();
    assert!(c_p.contains("P1-origin") || c_p.contains("client-P1"), "{c_p}");
    assert!(c_p.trim_end().ends_with("OSCORE"), "only OSCORE visible on C-P in CF-7: {c_p}");
}
