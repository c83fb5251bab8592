//! aiocoap's credentials map (JSON) and its OSCORE context directories (documented in the
//! parent module). Checked against aiocoap 0.4.17 (`aiocoap/credentials.py`,
//! `FilesystemSecurityContext` in `aiocoap/oscore.py`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};
use zeroize::Zeroizing;

use super::{
    algorithm_error, decode_ascii, decode_hex, read_text, validate, CredentialEntry, Credentials, CredentialsError,
    CredentialsFormat, ErrorKind, InitialReplay,
};
use crate::params::{aead_from_name, aead_from_number, hkdf_from_name, ContextParams};

/// Keys of `{"oscore": {...}}` besides `basedir` that aiocoap's `FilesystemSecurityContext`
/// accepts; they tune aiocoap's own sequence-number writes and do not matter here.
const IGNORED_OSCORE_KEYS: [&str; 2] = ["sequence_number_chunksize_start", "sequence_number_chunksize_limit"];
/// Longest chain of string references followed.
const MAX_REFERENCE_HOPS: usize = 16;

fn json_syntax(path: &Path, e: &serde_json::Error) -> CredentialsError {
    // serde_json's message ends in " at line L column C"; keep only the category.
    let full = e.to_string();
    let message = full.split(" at line ").next().unwrap_or(&full).to_string();
    CredentialsError::new(path, None, ErrorKind::Syntax { line: e.line(), column: e.column(), message })
}

pub(super) fn parse(path: &Path, base: &Path, text: &str) -> Result<Credentials, CredentialsError> {
    let value: Value = serde_json::from_str(text).map_err(|e| json_syntax(path, &e))?;
    let Value::Object(map) = value else {
        return Err(CredentialsError::new(
            path,
            None,
            ErrorKind::BadValue {
                field: "(top level)".into(),
                reason: "expected a JSON object (the credentials map)".into(),
            },
        ));
    };

    // Pass 1: direct `oscore` entries, grouped by directory; remember references.
    let mut by_dir: HashMap<PathBuf, usize> = HashMap::new();
    let mut entries: Vec<CredentialEntry> = Vec::new();
    let mut entry_of_key: BTreeMap<&str, usize> = BTreeMap::new();
    let mut references: Vec<(&str, &str)> = Vec::new();
    for (key, value) in &map {
        let err = |kind| CredentialsError::new(path, Some(format!("{key:?}")), kind);
        let basedir = match value {
            // aiocoap: `None` deletes an entry.
            Value::Null => continue,
            Value::String(target) => {
                references.push((key, target));
                continue;
            }
            Value::Object(item) => oscore_basedir(item).map_err(err)?,
            _ => {
                return Err(err(ErrorKind::BadValue {
                    field: key.clone(),
                    reason: "expected {\"oscore\": {\"basedir\": ...}}, a reference string or null".into(),
                }))
            }
        };
        let dir = resolve_basedir(base, basedir).map_err(err)?;
        let idx = match by_dir.get(&dir) {
            Some(&idx) => idx,
            None => {
                let entry = load_dir(&dir, key)?;
                entries.push(entry);
                by_dir.insert(dir, entries.len() - 1);
                entries.len() - 1
            }
        };
        entry_of_key.insert(key, idx);
    }
    // Pass 2: references (`"coap://host/*": ":label"`), followed to an `oscore` entry.
    for (key, first_target) in references {
        let mut target = first_target;
        let mut hops = 0;
        let idx = loop {
            if let Some(&idx) = entry_of_key.get(target) {
                break Some(idx);
            }
            match map.get(target) {
                Some(Value::String(next)) if hops < MAX_REFERENCE_HOPS => {
                    target = next;
                    hops += 1;
                }
                _ => break None,
            }
        };
        let Some(idx) = idx else {
            return Err(CredentialsError::new(
                path,
                Some(format!("{key:?}")),
                ErrorKind::BadReference(first_target.to_string()),
            ));
        };
        entry_of_key.insert(key, idx);
    }
    // Selectors: keys starting with ':' are labels (aiocoap's server-side claims), the rest URI
    // patterns. BTreeMap order = sorted keys, so labels come out deterministic.
    for (key, idx) in entry_of_key {
        let Some(entry) = entries.get_mut(idx) else { continue };
        if key.starts_with(':') {
            entry.peers.push(key.to_string());
        } else {
            entry.uris.push(key.to_string());
        }
    }
    Ok(Credentials { source: path.to_path_buf(), format: CredentialsFormat::AiocoapJson, entries, state_dir: None })
}

/// The `basedir` of `{"oscore": {"basedir": "..."}}`.
fn oscore_basedir(item: &Map<String, Value>) -> Result<&str, ErrorKind> {
    let mut keys = item.keys();
    let (Some(kind), None) = (keys.next(), keys.next()) else {
        // aiocoap: "Items in a credentials map must have exactly one key".
        return Err(ErrorKind::BadValue {
            field: "credential".into(),
            reason: format!("must have exactly one key (found {})", item.len()),
        });
    };
    if kind != "oscore" {
        return Err(ErrorKind::UnsupportedCredential(kind.clone()));
    }
    let Some(Value::Object(oscore)) = item.get("oscore") else {
        return Err(ErrorKind::BadValue { field: "oscore".into(), reason: "expected {\"basedir\": \"...\"}".into() });
    };
    for key in oscore.keys() {
        if key != "basedir" && !IGNORED_OSCORE_KEYS.contains(&key.as_str()) {
            return Err(ErrorKind::UnknownKey(format!("oscore.{key}")));
        }
    }
    match oscore.get("basedir") {
        Some(Value::String(b)) if !b.is_empty() => Ok(b),
        Some(_) => Err(ErrorKind::BadValue { field: "basedir".into(), reason: "expected a non-empty string".into() }),
        None => Err(ErrorKind::Missing("basedir".into())),
    }
}

/// An absolute basedir as is; a relative one against the JSON file's directory if it exists
/// there, else against the current directory (aiocoap's own behaviour).
fn resolve_basedir(base: &Path, basedir: &str) -> Result<PathBuf, ErrorKind> {
    let given = Path::new(basedir);
    let mut tried = Vec::new();
    let candidates: Vec<PathBuf> = if given.is_absolute() {
        vec![given.to_path_buf()]
    } else {
        let mut c = vec![base.join(given)];
        if let Ok(cwd) = std::env::current_dir() {
            c.push(cwd.join(given));
        }
        c
    };
    for candidate in candidates {
        if candidate.is_dir() {
            // Canonical, so two spellings of one directory give one context.
            return Ok(candidate.canonicalize().unwrap_or(candidate));
        }
        tried.push(candidate.display().to_string());
    }
    Err(ErrorKind::BasedirNotFound { basedir: basedir.to_string(), tried: tried.join(", ") })
}

/// One value of a context directory, after the `_hex` / `_ascii` suffix was applied.
enum Datum {
    Bytes(Zeroizing<Vec<u8>>),
    Raw(Value),
}

struct DirData {
    values: HashMap<String, (Datum, PathBuf)>,
    dir: PathBuf,
}

impl DirData {
    fn file_of(&self, key: &str) -> &Path {
        self.values.get(key).map_or(&self.dir, |(_, f)| f)
    }

    fn bytes(&self, key: &str, entry: &str) -> Result<Option<&[u8]>, CredentialsError> {
        match self.values.get(key) {
            None => Ok(None),
            Some((Datum::Bytes(b), _)) => Ok(Some(b)),
            Some((Datum::Raw(_), file)) => Err(CredentialsError::new(
                file,
                Some(entry.to_string()),
                ErrorKind::BadValue {
                    field: key.to_string(),
                    reason: format!("write it as \"{key}_hex\" or \"{key}_ascii\""),
                },
            )),
        }
    }

    fn required(&self, key: &str, entry: &str) -> Result<&[u8], CredentialsError> {
        self.bytes(key, entry)?.ok_or_else(|| {
            CredentialsError::new(
                &self.dir,
                Some(entry.to_string()),
                ErrorKind::Missing(format!("{key} (\"{key}_hex\" or \"{key}_ascii\" in settings.json or secret.json)")),
            )
        })
    }

    fn raw(&self, key: &str) -> Option<(&Value, &Path)> {
        match self.values.get(key) {
            Some((Datum::Raw(v), f)) => Some((v, f)),
            _ => None,
        }
    }
}

fn load_dir(dir: &Path, key: &str) -> Result<CredentialEntry, CredentialsError> {
    let entry = format!("{key:?}");
    let mut data = DirData { values: HashMap::new(), dir: dir.to_path_buf() };
    let mut found_any = false;
    // aiocoap reads secret.json first, then settings.json; a key may be in only one of them.
    for name in ["secret.json", "settings.json"] {
        let file = dir.join(name);
        if !file.exists() {
            continue;
        }
        found_any = true;
        let text = read_text(&file)?;
        let value: Value = serde_json::from_str(&text).map_err(|e| {
            let mut err = json_syntax(&file, &e);
            err.entry = Some(entry.clone());
            err
        })?;
        let fail = |kind| CredentialsError::new(&file, Some(entry.clone()), kind);
        let Value::Object(map) = value else {
            return Err(fail(ErrorKind::BadValue {
                field: "(top level)".into(),
                reason: "expected a JSON object".into(),
            }));
        };
        for (k, v) in map {
            let (name, datum) = if let Some(stem) = k.strip_suffix("_hex") {
                let Value::String(s) = &v else {
                    return Err(fail(ErrorKind::BadValue { field: k.clone(), reason: "expected a hex string".into() }));
                };
                let bytes = decode_hex(s).map_err(|reason| fail(ErrorKind::BadValue { field: k.clone(), reason }))?;
                (stem.to_string(), Datum::Bytes(bytes))
            } else if let Some(stem) = k.strip_suffix("_ascii") {
                let Value::String(s) = &v else {
                    return Err(fail(ErrorKind::BadValue { field: k.clone(), reason: "expected a string".into() }));
                };
                let bytes = decode_ascii(s).map_err(|reason| fail(ErrorKind::BadValue { field: k.clone(), reason }))?;
                (stem.to_string(), Datum::Bytes(bytes))
            } else {
                (k.clone(), Datum::Raw(v))
            };
            if let Some((_, other)) = data.values.get(&name) {
                // aiocoap: "Datum %r present in multiple input files".
                let other = other.file_name().map_or_else(String::new, |f| f.to_string_lossy().into_owned());
                return Err(fail(ErrorKind::Duplicate { field: name, detail: format!("also in {other}") }));
            }
            data.values.insert(name, (datum, file.clone()));
        }
    }
    if !found_any {
        return Err(CredentialsError::new(
            dir,
            Some(entry),
            ErrorKind::Missing("settings.json and secret.json (not an OSCORE context directory)".into()),
        ));
    }

    let secret = data.required("secret", &entry)?;
    let sender_id = data.required("sender-id", &entry)?;
    let recipient_id = data.required("recipient-id", &entry)?;
    let mut params = ContextParams::new(secret, sender_id, recipient_id);
    if let Some(salt) = data.bytes("salt", &entry)? {
        params = params.with_master_salt(salt);
    }
    if let Some(ctx) = data.bytes("id-context", &entry)? {
        params = params.with_id_context(Some(ctx));
    }
    let at = |key: &str, kind| CredentialsError::new(data.file_of(key), Some(entry.clone()), kind);
    if let Some((v, _)) = data.raw("algorithm") {
        let alg = match v {
            Value::String(s) => aead_from_name(s),
            Value::Number(n) => {
                n.as_i64().map_or(Err(crate::params::AlgorithmLookupError::Unknown(n.to_string())), aead_from_number)
            }
            _ => {
                return Err(at(
                    "algorithm",
                    ErrorKind::BadValue { field: "algorithm".into(), reason: "expected an algorithm name".into() },
                ))
            }
        };
        params = params.with_aead(alg.map_err(|e| at("algorithm", algorithm_error(e)))?);
    }
    if let Some((v, _)) = data.raw("kdf-hashfun") {
        let Value::String(s) = v else {
            return Err(at(
                "kdf-hashfun",
                ErrorKind::BadValue { field: "kdf-hashfun".into(), reason: "expected \"sha256\" or \"sha512\"".into() },
            ));
        };
        params = params
            .with_hkdf(hkdf_from_name(s).map_err(|_| at("kdf-hashfun", ErrorKind::UnknownHkdf { name: s.clone() }))?);
    }
    if let Some((v, _)) = data.raw("window") {
        // aiocoap: "Non-integer replay window".
        match v.as_u64().and_then(|w| u32::try_from(w).ok()) {
            Some(w @ 1..=128) => params = params.with_replay_window(w),
            _ => {
                return Err(at(
                    "window",
                    ErrorKind::BadValue { field: "window".into(), reason: "expected an integer in 1..=128".into() },
                ))
            }
        }
    }
    validate(&params, "sender-id", "recipient-id").map_err(|kind| {
        let key = match &kind {
            ErrorKind::IdTooLong { field, .. } => field.clone(),
            _ => "sender-id".to_string(),
        };
        at(&key, kind)
    })?;

    let (initial_sequence, initial_replay) = read_sequence(dir, &entry)?;
    Ok(CredentialEntry {
        name: entry,
        params,
        uris: Vec::new(),
        peers: Vec::new(),
        persist_key: None,
        initial_sequence,
        initial_replay,
        basedir: Some(dir.to_path_buf()),
        // aiocoap has no App. B.2 setting.
        rederive: false,
    })
}

/// aiocoap's `sequence.json`: `{"next-to-send": N, "received": "unknown" | {"index": I, "bitfield": B}}`.
fn read_sequence(dir: &Path, entry: &str) -> Result<(u64, InitialReplay), CredentialsError> {
    let file = dir.join("sequence.json");
    if !file.exists() {
        return Ok((0, InitialReplay::Fresh));
    }
    let fail = |reason: &str| {
        CredentialsError::new(
            &file,
            Some(entry.to_string()),
            ErrorKind::BadValue { field: "sequence".into(), reason: reason.to_string() },
        )
    };
    let text = read_text(&file)?;
    let value: Value = serde_json::from_str(&text).map_err(|e| {
        let mut err = json_syntax(&file, &e);
        err.entry = Some(entry.to_string());
        err
    })?;
    // Never guess a lower number: a sequence file we cannot read is an error, not 0.
    let next = value
        .get("next-to-send")
        .and_then(Value::as_u64)
        .ok_or_else(|| fail("\"next-to-send\" must be a non-negative integer"))?;
    let replay = match value.get("received") {
        // RFC 8613 App. B.1.2: aiocoap lost the window (it was not saved at shutdown).
        None | Some(Value::String(_)) => InitialReplay::Unknown,
        Some(Value::Object(w)) => {
            match (w.get("index").and_then(Value::as_u64), w.get("bitfield").and_then(Value::as_u64)) {
                (Some(0), Some(0)) => InitialReplay::Fresh,
                // Everything below `index` is invalid in aiocoap's window, so index − 1 counts as
                // the highest seen.
                (Some(index), Some(0)) => InitialReplay::Seen(index - 1),
                // Bit i = index + i seen; conservatively everything up to the highest set bit.
                (Some(index), Some(bits)) => {
                    InitialReplay::Seen(index.saturating_add(u64::from(63 - bits.leading_zeros())))
                }
                // A window wider than 64 bits (or anything unexpected): do not trust it.
                _ => InitialReplay::Unknown,
            }
        }
        Some(_) => InitialReplay::Unknown,
    };
    Ok((next, replay))
}
