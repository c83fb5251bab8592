//! Credentials files: hopcore TOML and aiocoap JSON (with context directories), the derived
//! keys, the index, and the error messages.

use std::fs;
use std::path::{Path, PathBuf};

use hex_literal::hex;
use hopcore_oscore::{AeadAlgorithm, ContextInput, HkdfAlgorithm, SecurityContext};
use hopcore_security::credentials::{CredentialsFormat, ErrorKind, InitialReplay};
use hopcore_security::{ContextStore, CredentialIndex, Credentials, CredentialsError};

const SECRET: [u8; 16] = hex!("0102030405060708090a0b0c0d0e0f10");
const SALT: [u8; 8] = hex!("9e7ca92223786340");
const ID_CONTEXT: [u8; 8] = hex!("37cbf3210017a2d3");
const SECRET_HEX: &str = "0102030405060708090a0b0c0d0e0f10";

fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(path, text).unwrap();
}

/// The plugtest contexts as `setup-peers.sh` writes them (shared/notes/interop-peers.md).
fn plugtest_dirs(root: &Path) {
    for (dir, sender, recipient, ctx) in [
        ("a", "", "01", None),
        ("b", "01", "", None),
        ("c", "", "01", Some("37cbf3210017a2d3")),
        ("d", "01", "", Some("37cbf3210017a2d3")),
    ] {
        let ctx = ctx.map_or_else(String::new, |c| format!(", \"id-context_hex\": \"{c}\""));
        write(
            &root.join(dir).join("settings.json"),
            &format!(
                "{{\"sender-id_hex\": \"{sender}\", \"recipient-id_hex\": \"{recipient}\", \"algorithm\": \"AES-CCM-16-64-128\"{ctx}}}"
            ),
        );
        write(
            &root.join(dir).join("secret.json"),
            &format!("{{\"secret_hex\": \"{SECRET_HEX}\", \"salt_hex\": \"9e7ca92223786340\"}}"),
        );
    }
}

fn direct(sender: &[u8], recipient: &[u8], ctx: Option<&[u8]>) -> SecurityContext {
    let mut input = ContextInput::new(&SECRET, sender, recipient).master_salt(&SALT);
    if let Some(c) = ctx {
        input = input.id_context(c);
    }
    SecurityContext::derive(&input).unwrap()
}

fn assert_same_keys(a: &SecurityContext, b: &SecurityContext) {
    assert_eq!(a.sender_id(), b.sender_id());
    assert_eq!(a.recipient_id(), b.recipient_id());
    assert_eq!(a.id_context(), b.id_context());
    assert_eq!(a.sender_key(), b.sender_key());
    assert_eq!(a.recipient_key(), b.recipient_key());
    assert_eq!(a.common_iv(), b.common_iv());
}

fn load_store(path: &Path) -> (ContextStore, CredentialIndex) {
    Credentials::load(path).unwrap().into_store(None).unwrap()
}

#[test]
fn aiocoap_plugtest_contexts_match_direct_derivation() {
    let tmp = tempfile::tempdir().unwrap();
    plugtest_dirs(tmp.path());
    // Client map (relative basedirs, resolved against the JSON file's directory) and server map.
    write(
        &tmp.path().join("client.json"),
        r#"{"coap://127.0.0.1:56840/*": {"oscore": {"basedir": "a/"}},
            "coap://127.0.0.1:56841/*": {"oscore": {"basedir": "c"}}}"#,
    );
    let abs_b = tmp.path().join("b");
    let abs_d = tmp.path().join("d");
    write(
        &tmp.path().join("server.json"),
        &format!(
            r#"{{":client-a": {{"oscore": {{"basedir": "{}/"}}}}, ":client-c": {{"oscore": {{"basedir": "{}"}}}}}}"#,
            abs_b.display(),
            abs_d.display()
        ),
    );

    let creds = Credentials::load(tmp.path().join("client.json")).unwrap();
    assert_eq!(creds.format(), CredentialsFormat::AiocoapJson);
    let (client, cidx) = creds.into_store(None).unwrap();
    let (server, sidx) = load_store(&tmp.path().join("server.json"));

    let a = cidx.for_uri("coap://127.0.0.1:56840/oscore/hello/1").unwrap();
    let c = cidx.for_uri("coap://127.0.0.1:56841/oscore/hello/1").unwrap();
    let b = sidx.for_peer(":client-a").unwrap();
    let d = sidx.for_peer(":client-c").unwrap();
    assert_same_keys(client.get(a).unwrap(), &direct(&[], &[0x01], None));
    assert_same_keys(client.get(c).unwrap(), &direct(&[], &[0x01], Some(&ID_CONTEXT)));
    assert_same_keys(server.get(b).unwrap(), &direct(&[0x01], &[], None));
    assert_same_keys(server.get(d).unwrap(), &direct(&[0x01], &[], Some(&ID_CONTEXT)));
    // RFC 8613 C.1.1 / C.3.1: the known keys, so the test does not only compare with itself.
    assert_eq!(client.get(a).unwrap().sender_key(), hex!("f0910ed7295e6ad4b54fc793154302ff"));
    assert_eq!(client.get(c).unwrap().sender_key(), hex!("af2a1300a5e95788b356336eeecd2b92"));
    // The server finds the client's contexts by kid (and kid context).
    assert_eq!(server.lookup_recipient(&[], None), Some(b));
    assert_eq!(server.lookup_recipient(&[], Some(&ID_CONTEXT)), Some(d));
    assert_eq!(sidx.label(d), Some(":client-c"));
    assert_eq!(server.meta(b).unwrap().label, ":client-a");
    assert_eq!(cidx.label(a), Some("coap://127.0.0.1:56840/*"));
    assert_eq!(cidx.for_uri("coap://127.0.0.1:5683/x"), None);
    // Parameters are attached for re-derivation (App. B.2).
    assert_eq!(client.params(c).unwrap().id_context(), Some(&ID_CONTEXT[..]));
}

#[test]
fn aiocoap_references_and_shared_directories() {
    let tmp = tempfile::tempdir().unwrap();
    plugtest_dirs(tmp.path());
    write(
        &tmp.path().join("creds.json"),
        r#"{":server": {"oscore": {"basedir": "a"}},
            "coap://127.0.0.1:56840/*": {"oscore": {"basedir": "./a/"}},
            "coap://localhost/*": ":server",
            "coap://alias/*": "coap://localhost/*",
            "coap://removed/*": null}"#,
    );
    let creds = Credentials::load(tmp.path().join("creds.json")).unwrap();
    assert_eq!(creds.entries().len(), 1, "one directory, one context (two would reuse nonces)");
    let (store, idx) = creds.into_store(None).unwrap();
    let id = idx.for_peer(":server").unwrap();
    assert_eq!(idx.for_uri("coap://127.0.0.1:56840/x"), Some(id));
    assert_eq!(idx.for_uri("coap://localhost/x"), Some(id));
    assert_eq!(idx.for_uri("coap://alias/x"), Some(id));
    assert_eq!(idx.for_uri("coap://removed/x"), None);
    assert_eq!(store.meta(id).unwrap().label, ":server");
    assert_eq!(store.len(), 1);
}

#[test]
fn aiocoap_relative_basedir_falls_back_to_the_current_directory() {
    // The context directory exists only relative to the CWD (what aiocoap itself uses), not
    // next to the JSON file.
    let cwd = std::env::current_dir().unwrap();
    let in_cwd = tempfile::tempdir_in(&cwd).unwrap();
    plugtest_dirs(in_cwd.path());
    let rel = in_cwd.path().strip_prefix(&cwd).unwrap().join("b");
    let elsewhere = tempfile::tempdir().unwrap();
    let json = elsewhere.path().join("server.json");
    write(&json, &format!(r#"{{":c": {{"oscore": {{"basedir": "{}"}}}}}}"#, rel.display()));
    let creds = Credentials::load(&json).unwrap();
    assert_eq!(creds.entries()[0].basedir.as_deref(), Some(in_cwd.path().join("b").canonicalize().unwrap().as_path()));

    // When both exist, the JSON file's directory wins.
    plugtest_dirs(elsewhere.path());
    let local = elsewhere.path().join(&rel);
    fs::create_dir_all(local.parent().unwrap()).unwrap();
    copy_dir(&elsewhere.path().join("a"), &local);
    let creds = Credentials::load(&json).unwrap();
    assert_eq!(creds.entries()[0].basedir.as_deref(), Some(local.canonicalize().unwrap().as_path()));
    assert_eq!(creds.entries()[0].params.sender_id(), b"", "took context a (copied next to the JSON)");
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn aiocoap_sequence_json() {
    let tmp = tempfile::tempdir().unwrap();
    plugtest_dirs(tmp.path());
    write(&tmp.path().join("a/sequence.json"), r#"{"next-to-send": 1234, "received": "unknown"}"#);
    write(&tmp.path().join("b/sequence.json"), r#"{"next-to-send": 20, "received": {"index": 10, "bitfield": 5}}"#);
    write(&tmp.path().join("c/sequence.json"), r#"{"next-to-send": 0, "received": {"index": 0, "bitfield": 0}}"#);
    write(
        &tmp.path().join("creds.json"),
        r#"{":a": {"oscore": {"basedir": "a"}}, ":b": {"oscore": {"basedir": "b"}}, ":c": {"oscore": {"basedir": "c"}}}"#,
    );
    let creds = Credentials::load(tmp.path().join("creds.json")).unwrap();
    let by_label = |l: &str| creds.entries().iter().find(|e| e.label() == l).unwrap().clone();
    assert_eq!((by_label(":a").initial_sequence, by_label(":a").initial_replay), (1234, InitialReplay::Unknown));
    // Bits 0 and 2 of index 10: 10 and 12 seen; conservatively everything up to 12.
    assert_eq!((by_label(":b").initial_sequence, by_label(":b").initial_replay), (20, InitialReplay::Seen(12)));
    assert_eq!(by_label(":c").initial_replay, InitialReplay::Fresh);

    let (mut store, idx) = creds.into_store(None).unwrap();
    let a = idx.for_peer(":a").unwrap();
    assert!(!store.replay_synchronized(a), "aiocoap lost the window: App. B.1.2");
    let piv = store.prepare_send(a).unwrap().next_partial_iv().unwrap();
    assert_eq!(piv.to_sequence(), 1234, "never below aiocoap's next-to-send");
    let b = idx.for_peer(":b").unwrap();
    let w = store.get(b).unwrap().replay_window();
    assert!(w.is_synchronized() && w.check(12).is_err() && w.check(11).is_err() && w.check(13).is_ok());

    // And with a durable store, the larger of aiocoap's number and our own reservation wins.
    let state = tmp.path().join("state");
    let (mut store, idx) = Credentials::load(tmp.path().join("creds.json")).unwrap().into_store(Some(&state)).unwrap();
    let a = idx.for_peer(":a").unwrap();
    assert_eq!(store.prepare_send(a).unwrap().next_partial_iv().unwrap().to_sequence(), 1234);
    drop(store);
    let (mut store, idx) = Credentials::load(tmp.path().join("creds.json")).unwrap().into_store(Some(&state)).unwrap();
    let a = idx.for_peer(":a").unwrap();
    let next = store.prepare_send(a).unwrap().next_partial_iv().unwrap().to_sequence();
    assert!(next > 1234 && next <= 1234 + 256, "{next}");
}

const FULL_TOML: &str = r#"
state_dir = "state"

[[context]]
uri = ["coap://127.0.0.1:5683/*", "coap://127.0.0.1:5683/special/*"]
sender_id = "hex:"
recipient_id = "hex:01"
master_secret = "hex:0102030405060708090a0b0c0d0e0f10"
master_salt = "hex:9e7ca92223786340"

[[context]]
uri = "coap://127.0.0.1:5683/special/deeper/*"
peer = ":client1"
sender_id = "hex:01"
recipient_id = "hex:"
master_secret = "hex:0102030405060708090a0b0c0d0e0f10"
master_salt = "hex:9e7ca92223786340"
id_context = "hex:37cbf3210017a2d3"
algorithm = "AES-CCM-16-64-128"
hkdf = "sha256"
replay_window = 64

[[context]]
peer = "proxy-a"
sender_id = "ascii:gw"
recipient_id = "ascii:pa"
master_secret = "ascii:0123456789abcdef"
algorithm = 24
hkdf = "sha512"
persist_key = "proxy-a-link"
"#;

#[test]
fn toml_full_example() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("creds.toml");
    write(&path, FULL_TOML);
    let creds = Credentials::load(&path).unwrap();
    assert_eq!(creds.format(), CredentialsFormat::HopcoreToml);
    assert_eq!(creds.state_dir(), Some(tmp.path().join("state").as_path()), "relative to the file");
    let (mut store, idx) = creds.into_store(None).unwrap();
    assert!(store.is_durable(), "the file's state_dir is used");
    assert!(store.state_path().unwrap().starts_with(tmp.path().join("state")));

    let first = idx.for_uri("coap://127.0.0.1:5683/temp").unwrap();
    assert_same_keys(store.get(first).unwrap(), &direct(&[], &[0x01], None));
    // Longest matching pattern wins.
    let second = idx.for_peer(":client1").unwrap();
    assert_eq!(idx.for_uri("coap://127.0.0.1:5683/special/x"), Some(first));
    assert_eq!(idx.for_uri("coap://127.0.0.1:5683/special/deeper/x"), Some(second));
    assert_same_keys(store.get(second).unwrap(), &direct(&[0x01], &[], Some(&ID_CONTEXT)));
    assert_eq!(store.get(second).unwrap().replay_window().size(), 64);
    assert_eq!(store.meta(second).unwrap().label, ":client1", "peer is the label");
    assert_eq!(store.meta(first).unwrap().label, "coap://127.0.0.1:5683/*");

    let third = idx.for_peer("proxy-a").unwrap();
    let expected = SecurityContext::derive(
        &ContextInput::new(b"0123456789abcdef", b"gw", b"pa")
            .aead(AeadAlgorithm::ChaCha20Poly1305)
            .hkdf(HkdfAlgorithm::Sha512),
    )
    .unwrap();
    assert_same_keys(store.get(third).unwrap(), &expected);
    assert_eq!(store.meta(third).unwrap().persist_key.as_deref(), Some("proxy-a-link"));
    assert_eq!(
        store.meta(first).unwrap().persist_key.as_deref(),
        Some("oscore/v1/ctx=-/sid=/rid=01"),
        "derived from the identifiers"
    );
    assert_eq!(store.get(third).unwrap().replay_window().size(), 32, "store default");
    store.prepare_send(third).unwrap();
    // The argument overrides the file's state_dir.
    let other = tmp.path().join("other-state");
    let (store, _) = Credentials::load(&path).unwrap().into_store(Some(&other)).unwrap();
    assert!(store.state_path().unwrap().starts_with(&other));
}

#[test]
fn example_file_in_the_crate_loads() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("credentials.example.toml");
    let creds = Credentials::load(&path).unwrap();
    assert_eq!(creds.entries().len(), 3);
    // State in a temp dir, not next to the example.
    let tmp = tempfile::tempdir().unwrap();
    let (store, idx) = creds.into_store(Some(tmp.path())).unwrap();
    let a = idx.for_uri("coap://localhost:56840/oscore/hello/1").unwrap();
    assert_same_keys(store.get(a).unwrap(), &direct(&[], &[0x01], None));
    let d = idx.for_peer(":client1").unwrap();
    assert_same_keys(store.get(d).unwrap(), &direct(&[0x01], &[], Some(&ID_CONTEXT)));
    assert_eq!(store.get(idx.for_peer("proxy-a").unwrap()).unwrap().aead(), AeadAlgorithm::A128Gcm);
}

#[test]
fn debug_output_never_contains_secrets() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("creds.toml");
    write(&path, FULL_TOML);
    let creds = Credentials::load(&path).unwrap();
    let dbg = format!("{creds:?} {:?}", creds.entries());
    for secret in [SECRET_HEX, "9e7ca92223786340", "0123456789abcdef", "1, 2, 3, 4, 5"] {
        assert!(!dbg.contains(secret), "{secret} in {dbg}");
    }
    assert!(dbg.contains("redacted"), "{dbg}");
    let (store, _) = creds.into_store(Some(&tmp.path().join("s"))).unwrap();
    let dbg = format!("{store:?}");
    assert!(!dbg.contains(SECRET_HEX) && !dbg.contains("f0910ed7"), "{dbg}");

    plugtest_dirs(tmp.path());
    write(&tmp.path().join("c.json"), r#"{":x": {"oscore": {"basedir": "a"}}}"#);
    let dbg = format!("{:?}", Credentials::load(tmp.path().join("c.json")).unwrap());
    assert!(!dbg.contains(SECRET_HEX) && !dbg.contains("9e7ca922"), "{dbg}");
}

// ---- error messages -------------------------------------------------------------------

fn toml_error(body: &str) -> (CredentialsError, String) {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("bad.toml");
    write(&path, body);
    let err = Credentials::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("bad.toml"), "names the file: {msg}");
    assert!(!msg.contains("0102030405060708") && !msg.contains("c0ffee"), "leaks the secret: {msg}");
    (err, msg)
}

fn context(extra: &str) -> String {
    format!(
        "[[context]]\npeer = \"p\"\nsender_id = \"hex:01\"\nrecipient_id = \"hex:02\"\nmaster_secret = \"hex:{SECRET_HEX}\"\n{extra}\n"
    )
}

#[test]
fn toml_errors_name_file_entry_and_problem() {
    let ok = context("");
    let (_, msg) = toml_error(&format!("{ok}\n[[context]]\npeer = \"q\"\nsender_id = \"hex:0g\"\nrecipient_id = \"hex:\"\nmaster_secret = \"hex:c0ffee\"\n"));
    assert!(
        msg.contains("context[1]") && msg.contains("sender_id") && msg.contains("not a hex digit at position 1"),
        "{msg}"
    );

    let (_, msg) = toml_error(&context("master_salt = \"hex:abc\""));
    assert!(msg.contains("context[0]") && msg.contains("master_salt") && msg.contains("odd number"), "{msg}");

    let (err, msg) = toml_error(&context("algorithm = \"ROT13\""));
    assert!(matches!(*err.kind, ErrorKind::UnknownAlgorithm { .. }), "{msg}");
    assert!(msg.contains("unknown AEAD algorithm \"ROT13\"") && msg.contains("AES-CCM-16-64-128 (10)"), "{msg}");

    let (err, msg) = toml_error(&context("algorithm = \"AES-CCM-16-64-256\""));
    assert!(matches!(*err.kind, ErrorKind::UnsupportedAlgorithm { .. }), "{msg}");
    assert!(msg.contains("not supported"), "{msg}");
    let (_, msg) = toml_error(&context("algorithm = 11"));
    assert!(msg.contains("AEAD algorithm 11 is not supported"), "{msg}");

    let (_, msg) = toml_error(&context("hkdf = \"sha384\""));
    assert!(msg.contains("HKDF hash \"sha384\""), "{msg}");

    let body = format!("[[context]]\nsender_id = \"hex:0102030405060708\"\nrecipient_id = \"hex:\"\nmaster_secret = \"hex:{SECRET_HEX}\"\n");
    let (err, msg) = toml_error(&body);
    assert!(matches!(*err.kind, ErrorKind::IdTooLong { len: 8, max: 7, .. }), "{msg}");
    assert!(
        msg.contains("sender_id is 8 bytes") && msg.contains("at most 7") && msg.contains("AES-CCM-16-64-128"),
        "{msg}"
    );
    // 7 bytes is fine for CCM but too long for GCM (12-byte nonce: 6).
    let body = format!("[[context]]\nsender_id = \"hex:01\"\nrecipient_id = \"hex:01020304050607\"\nmaster_secret = \"hex:{SECRET_HEX}\"\nalgorithm = \"A128GCM\"\n");
    let (_, msg) = toml_error(&body);
    assert!(msg.contains("recipient_id is 7 bytes") && msg.contains("at most 6") && msg.contains("A128GCM"), "{msg}");

    let (err, msg) = toml_error("[[context]]\nsender_id = \"hex:01\"\nrecipient_id = \"hex:02\"\n");
    assert!(matches!(&*err.kind, ErrorKind::Missing(f) if f == "master_secret"), "{msg}");
    assert!(msg.contains("context[0]: missing master_secret"), "{msg}");

    let (_, msg) =
        toml_error("[[context]]\nsender_id = \"01\"\nrecipient_id = \"hex:02\"\nmaster_secret = \"hex:c0ffee\"\n");
    assert!(msg.contains("sender_id") && msg.contains("missing encoding prefix"), "{msg}");

    let (_, msg) = toml_error(&context("master_secret_hex = \"c0ffee\""));
    assert!(msg.contains("unknown key \"master_secret_hex\""), "{msg}");
    let (_, msg) = toml_error(&format!("statedir = \"x\"\n{}", context("")));
    assert!(msg.contains("unknown key \"statedir\""), "{msg}");

    let (_, msg) = toml_error(&context("replay_window = 0"));
    assert!(msg.contains("replay_window") && msg.contains("1..=128"), "{msg}");

    let (err, msg) =
        toml_error("[[context]]\nsender_id = \"hex:01\"\nrecipient_id = \"hex:01\"\nmaster_secret = \"hex:c0ffee\"\n");
    assert!(matches!(*err.kind, ErrorKind::SameIds), "{msg}");

    let (_, msg) = toml_error(&format!("{}{}", context(""), context("").replace("\"p\"", "\"p2\"")));
    assert!(msg.contains("context[1]") && msg.contains("context[0]") && msg.contains("persist_key"), "{msg}");

    let (_, msg) = toml_error(&format!("{}{}", context(""), context("persist_key = \"x\"")));
    assert!(msg.contains("peer \"p\" also selects context[0]"), "{msg}");

    // Syntax errors: position and message, but not the offending line (it may hold a secret).
    let (err, msg) = toml_error("[[context]]\nmaster_secret = hex:c0ffee\n");
    assert!(matches!(*err.kind, ErrorKind::Syntax { line: 2, .. }), "{msg}");
    assert!(msg.contains("line 2"), "{msg}");
}

fn json_error(tmp: &Path, map: &str) -> (CredentialsError, String) {
    let path = tmp.join("bad.json");
    write(&path, map);
    let err = Credentials::load(&path).unwrap_err();
    let msg = err.to_string();
    assert!(!msg.contains(SECRET_HEX) && !msg.contains("c0ffee"), "leaks the secret: {msg}");
    (err, msg)
}

#[test]
fn aiocoap_errors_name_file_entry_and_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    plugtest_dirs(t);
    let map = |dir: &str| format!(r#"{{":peer": {{"oscore": {{"basedir": "{dir}"}}}}}}"#);

    // Bad hex in secret.json: the message names secret.json and the map key.
    write(&t.join("x1/settings.json"), r#"{"sender-id_hex": "01", "recipient-id_hex": ""}"#);
    write(&t.join("x1/secret.json"), r#"{"secret_hex": "c0ffeeZZ"}"#);
    let (_, msg) = json_error(t, &map("x1"));
    assert!(msg.contains("x1/secret.json") && msg.contains("\":peer\"") && msg.contains("secret_hex"), "{msg}");
    assert!(msg.contains("not a hex digit at position 6"), "{msg}");

    // Missing secret.
    write(&t.join("x2/settings.json"), r#"{"sender-id_hex": "01", "recipient-id_hex": ""}"#);
    let (err, msg) = json_error(t, &map("x2"));
    assert!(matches!(&*err.kind, ErrorKind::Missing(f) if f.starts_with("secret")), "{msg}");
    assert!(msg.contains("x2") && msg.contains("missing secret"), "{msg}");

    // Unknown algorithm, id too long: named with the file they are in.
    write(
        &t.join("x3/settings.json"),
        r#"{"sender-id_hex": "01", "recipient-id_hex": "", "algorithm": "AES-CCM-16-64-999"}"#,
    );
    write(&t.join("x3/secret.json"), &format!(r#"{{"secret_hex": "{SECRET_HEX}"}}"#));
    let (_, msg) = json_error(t, &map("x3"));
    assert!(msg.contains("x3/settings.json") && msg.contains("unknown AEAD algorithm \"AES-CCM-16-64-999\""), "{msg}");
    write(&t.join("x3/settings.json"), r#"{"sender-id_hex": "0102030405060708", "recipient-id_hex": ""}"#);
    let (_, msg) = json_error(t, &map("x3"));
    assert!(msg.contains("x3/settings.json") && msg.contains("sender-id is 8 bytes"), "{msg}");
    write(&t.join("x3/settings.json"), r#"{"sender-id_hex": "01", "recipient-id_hex": "", "algorithm": "A192GCM"}"#);
    let (_, msg) = json_error(t, &map("x3"));
    assert!(msg.contains("A192GCM is not supported"), "{msg}");

    // A key in both files; a byte value without suffix.
    write(&t.join("x4/settings.json"), r#"{"sender-id_hex": "01", "recipient-id_hex": "", "salt_hex": "00"}"#);
    write(&t.join("x4/secret.json"), &format!(r#"{{"secret_hex": "{SECRET_HEX}", "salt_ascii": "x"}}"#));
    let (_, msg) = json_error(t, &map("x4"));
    assert!(msg.contains("salt is given more than once") && msg.contains("secret.json"), "{msg}");
    write(&t.join("x4/settings.json"), r#"{"sender-id": "01", "recipient-id_hex": ""}"#);
    write(&t.join("x4/secret.json"), &format!(r#"{{"secret_hex": "{SECRET_HEX}"}}"#));
    let (_, msg) = json_error(t, &map("x4"));
    assert!(msg.contains("sender-id_hex") && msg.contains("sender-id_ascii"), "{msg}");

    // Bad window, bad sequence.json.
    write(&t.join("x5/settings.json"), r#"{"sender-id_hex": "01", "recipient-id_hex": "", "window": "32"}"#);
    write(&t.join("x5/secret.json"), &format!(r#"{{"secret_hex": "{SECRET_HEX}"}}"#));
    let (_, msg) = json_error(t, &map("x5"));
    assert!(msg.contains("window") && msg.contains("integer"), "{msg}");
    write(&t.join("x5/settings.json"), r#"{"sender-id_hex": "01", "recipient-id_hex": ""}"#);
    write(&t.join("x5/sequence.json"), r#"{"next-to-send": -1}"#);
    let (_, msg) = json_error(t, &map("x5"));
    assert!(msg.contains("x5/sequence.json") && msg.contains("next-to-send"), "{msg}");

    // Directory problems.
    let (err, msg) = json_error(t, &map("nope"));
    assert!(matches!(*err.kind, ErrorKind::BasedirNotFound { .. }), "{msg}");
    assert!(
        msg.contains("bad.json") && msg.contains("\":peer\"") && msg.contains("\"nope\" not found (tried"),
        "{msg}"
    );
    fs::create_dir_all(t.join("empty")).unwrap();
    let (_, msg) = json_error(t, &map("empty"));
    assert!(msg.contains("not an OSCORE context directory"), "{msg}");

    // Map problems.
    let (_, msg) = json_error(t, r#"{":peer": {"dtls": {"psk": "c0ffee"}}}"#);
    assert!(msg.contains("unsupported credential type \"dtls\""), "{msg}");
    let (_, msg) = json_error(t, r#"{"coap://x/*": ":nobody"}"#);
    assert!(msg.contains("\"coap://x/*\"") && msg.contains("reference \":nobody\""), "{msg}");
    let (_, msg) = json_error(t, r#"{"coap://x/*": "coap://y/*", "coap://y/*": "coap://x/*"}"#);
    assert!(msg.contains("does not lead to an \"oscore\" entry"), "{msg}");
    let (_, msg) = json_error(t, r#"{":peer": {"oscore": {"basedir": "a", "extra": 1}}}"#);
    assert!(msg.contains("unknown key \"oscore.extra\""), "{msg}");
    let (err, msg) = json_error(t, "{\":peer\": {\"oscore\": {\"basedir\": \"a\"}},\n}");
    assert!(matches!(*err.kind, ErrorKind::Syntax { line: 2, .. }), "{msg}");
    let (_, msg) = json_error(t, "[]");
    assert!(msg.contains("expected a JSON object"), "{msg}");
}

#[test]
fn unknown_extension_and_unreadable_file() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("creds.yaml");
    write(&path, "");
    let msg = Credentials::load(&path).unwrap_err().to_string();
    assert!(msg.contains("creds.yaml") && msg.contains(".toml") && msg.contains(".json"), "{msg}");
    let msg = Credentials::load(tmp.path().join("missing.toml")).unwrap_err().to_string();
    assert!(msg.contains("missing.toml") && msg.contains("cannot read"), "{msg}");
}
