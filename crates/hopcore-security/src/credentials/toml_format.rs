//! The hopcore TOML credentials format (documented in the parent module).
//!
//! The file is parsed into a `toml::Table` and walked by hand rather than deserialized into
//! structs: serde's type errors quote the offending value, which could be a secret.

use std::collections::HashMap;
use std::path::Path;

use toml::{Table, Value};

use super::{
    algorithm_error, decode_ascii, decode_hex, line_col, validate, CredentialEntry, Credentials, CredentialsError,
    CredentialsFormat, ErrorKind, InitialReplay,
};
use crate::params::{aead_from_name, aead_from_number, hkdf_from_name, ContextParams};

const TOP_KEYS: [&str; 2] = ["state_dir", "context"];
const CONTEXT_KEYS: [&str; 12] = [
    "uri",
    "peer",
    "sender_id",
    "recipient_id",
    "master_secret",
    "master_salt",
    "id_context",
    "algorithm",
    "hkdf",
    "replay_window",
    "persist_key",
    "rederive",
];

pub(super) fn parse(path: &Path, base: &Path, text: &str) -> Result<Credentials, CredentialsError> {
    let top_err = |kind| CredentialsError::new(path, None, kind);
    let table: Table = text.parse().map_err(|e: toml::de::Error| {
        let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
        // Only the message, never the source line the parser would quote.
        top_err(ErrorKind::Syntax { line, column, message: e.message().trim().to_string() })
    })?;
    for key in table.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            return Err(top_err(ErrorKind::UnknownKey(key.clone())));
        }
    }
    let state_dir = match table.get("state_dir") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(base.join(s)),
        Some(_) => {
            return Err(top_err(ErrorKind::BadValue {
                field: "state_dir".into(),
                reason: "expected a non-empty string (a directory path)".into(),
            }))
        }
    };
    let contexts: &[Value] = match table.get("context") {
        None => &[],
        Some(Value::Array(list)) => list,
        Some(_) => {
            return Err(top_err(ErrorKind::BadValue {
                field: "context".into(),
                reason: "expected [[context]] tables".into(),
            }))
        }
    };

    let mut entries = Vec::with_capacity(contexts.len());
    let mut uri_owner: HashMap<String, String> = HashMap::new();
    let mut peer_owner: HashMap<String, String> = HashMap::new();
    for (i, value) in contexts.iter().enumerate() {
        let name = format!("context[{i}]");
        let err = |kind| CredentialsError::new(path, Some(name.clone()), kind);
        let Value::Table(t) = value else {
            return Err(err(ErrorKind::BadValue { field: "context".into(), reason: "expected a table".into() }));
        };
        let entry = parse_context(t, &name).map_err(err)?;
        for uri in &entry.uris {
            if let Some(other) = uri_owner.insert(uri.clone(), name.clone()) {
                return Err(err(ErrorKind::ConflictingSelector { selector: "uri", value: uri.clone(), other }));
            }
        }
        for peer in &entry.peers {
            if let Some(other) = peer_owner.insert(peer.clone(), name.clone()) {
                return Err(err(ErrorKind::ConflictingSelector { selector: "peer", value: peer.clone(), other }));
            }
        }
        entries.push(entry);
    }
    Ok(Credentials { source: path.to_path_buf(), format: CredentialsFormat::HopcoreToml, entries, state_dir })
}

fn parse_context(t: &Table, name: &str) -> Result<CredentialEntry, ErrorKind> {
    for key in t.keys() {
        if !CONTEXT_KEYS.contains(&key.as_str()) {
            return Err(ErrorKind::UnknownKey(key.clone()));
        }
    }
    let required = |key: &str| bytes(t, key)?.ok_or_else(|| ErrorKind::Missing(key.to_string()));
    let master_secret = required("master_secret")?;
    let sender_id = required("sender_id")?;
    let recipient_id = required("recipient_id")?;
    let mut params = ContextParams::new(&master_secret, &sender_id, &recipient_id);
    if let Some(salt) = bytes(t, "master_salt")? {
        params = params.with_master_salt(&salt);
    }
    if let Some(ctx) = bytes(t, "id_context")? {
        params = params.with_id_context(Some(&ctx));
    }
    match t.get("algorithm") {
        None => {}
        Some(Value::String(s)) => params = params.with_aead(aead_from_name(s).map_err(algorithm_error)?),
        Some(Value::Integer(n)) => params = params.with_aead(aead_from_number(*n).map_err(algorithm_error)?),
        Some(_) => return Err(bad("algorithm", "expected a COSE algorithm name or number")),
    }
    match t.get("hkdf") {
        None => {}
        Some(Value::String(s)) => {
            params = params.with_hkdf(hkdf_from_name(s).map_err(|_| ErrorKind::UnknownHkdf { name: s.clone() })?)
        }
        Some(_) => return Err(bad("hkdf", "expected \"sha256\" or \"sha512\"")),
    }
    match t.get("replay_window") {
        None => {}
        Some(Value::Integer(n)) => match u32::try_from(*n) {
            Ok(w @ 1..=128) => params = params.with_replay_window(w),
            _ => return Err(bad("replay_window", &format!("{n} is not in 1..=128"))),
        },
        Some(_) => return Err(bad("replay_window", "expected an integer in 1..=128")),
    }
    validate(&params, "sender_id", "recipient_id")?;
    let persist_key = match t.get("persist_key") {
        None => None,
        Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
        Some(_) => return Err(bad("persist_key", "expected a non-empty string")),
    };
    // RFC 8613 App. B.2: whether this context may be re-derived (default: no).
    let rederive = match t.get("rederive") {
        None => false,
        Some(Value::Boolean(b)) => *b,
        Some(_) => return Err(bad("rederive", "expected true or false")),
    };
    Ok(CredentialEntry {
        name: name.to_string(),
        params,
        uris: strings(t, "uri")?,
        peers: strings(t, "peer")?,
        persist_key,
        initial_sequence: 0,
        initial_replay: InitialReplay::Fresh,
        basedir: None,
        rederive,
    })
}

fn bad(field: &str, reason: &str) -> ErrorKind {
    ErrorKind::BadValue { field: field.to_string(), reason: reason.to_string() }
}

/// A byte-string value: `"hex:..."` or `"ascii:..."`.
fn bytes(t: &Table, key: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, ErrorKind> {
    let Some(value) = t.get(key) else { return Ok(None) };
    let Value::String(s) = value else {
        return Err(bad(key, "expected a string \"hex:...\" or \"ascii:...\""));
    };
    let decoded = if let Some(hex) = s.strip_prefix("hex:") {
        decode_hex(hex)
    } else if let Some(ascii) = s.strip_prefix("ascii:") {
        decode_ascii(ascii)
    } else {
        Err("missing encoding prefix: write \"hex:...\" or \"ascii:...\" (\"hex:\" is the empty string)".to_string())
    };
    decoded.map(Some).map_err(|reason| ErrorKind::BadValue { field: key.to_string(), reason })
}

/// A string or a list of strings.
fn strings(t: &Table, key: &str) -> Result<Vec<String>, ErrorKind> {
    let reason = "expected a non-empty string or a list of them";
    match t.get(key) {
        None => Ok(Vec::new()),
        Some(Value::String(s)) if !s.is_empty() => Ok(vec![s.clone()]),
        Some(Value::Array(list)) => list
            .iter()
            .map(|v| match v {
                Value::String(s) if !s.is_empty() => Ok(s.clone()),
                _ => Err(bad(key, reason)),
            })
            .collect(),
        Some(_) => Err(bad(key, reason)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTEXT: &str = "[[context]]\npeer = \":c\"\nsender_id = \"hex:01\"\nrecipient_id = \"hex:\"\n\
                           master_secret = \"hex:0102030405060708090a0b0c0d0e0f10\"\n";

    fn load(extra: &str) -> Result<Credentials, CredentialsError> {
        parse(Path::new("c.toml"), Path::new(""), &format!("{CONTEXT}{extra}"))
    }

    #[test]
    fn rederive_flag_defaults_to_false() {
        assert!(!load("").unwrap().entries()[0].rederive);
        assert!(load("rederive = true\n").unwrap().entries()[0].rederive);
        assert!(!load("rederive = false\n").unwrap().entries()[0].rederive);
        let err = load("rederive = \"yes\"\n").unwrap_err().to_string();
        assert!(err.contains("rederive: expected true or false"), "{err}");
    }

    #[test]
    fn rederive_flag_reaches_the_store() {
        let creds = load("rederive = true\n").unwrap();
        let (store, index) = creds.into_store(None).unwrap();
        let id = index.for_peer(":c").unwrap();
        assert!(store.rederive_allowed(id));
        assert!(store.params(id).is_some());
        use crate::rederive::RederiveContexts;
        assert!(store.rederive_params(id).is_some());
        let (store, index) = load("").unwrap().into_store(None).unwrap();
        let id = index.for_peer(":c").unwrap();
        assert!(!store.rederive_allowed(id) && store.rederive_params(id).is_none());
    }
}
