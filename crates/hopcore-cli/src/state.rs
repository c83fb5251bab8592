//! Where the CLI keeps durable OSCORE state.

use std::path::{Path, PathBuf};

use hopcore_security::Credentials;

/// RFC 8613 App. B.1.1: a sender must never reuse a sequence number, also across restarts, so
/// the CLI keeps OSCORE state durably by default: in `--state-dir` if given, else in the
/// credentials file's own `state_dir`, else in `<file stem>.state/` beside the credentials
/// file (`client.toml` → `client.state/`). Only one process at a time can use a state
/// directory; give concurrent processes their own with `--state-dir`.
pub fn state_dir_for(credentials: &Credentials, explicit: Option<&Path>) -> Option<PathBuf> {
    if let Some(dir) = explicit {
        return Some(dir.to_path_buf());
    }
    if credentials.state_dir().is_some() {
        // The loader uses the file's own setting.
        return None;
    }
    let source = credentials.source();
    let stem = source.file_stem()?.to_string_lossy().into_owned();
    Some(source.with_file_name(format!("{stem}.state")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_is_beside_the_credentials_file() {
        let dir = std::env::temp_dir().join(format!("hopcore-state-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("client.toml");
        std::fs::write(
            &file,
            "[[context]]\nsender_id = \"hex:01\"\nrecipient_id = \"hex:\"\nmaster_secret = \"hex:0102030405060708090a0b0c0d0e0f10\"\nuri = \"coap://127.0.0.1/*\"\n",
        )
        .unwrap();
        let creds = Credentials::load(&file).unwrap();
        assert_eq!(state_dir_for(&creds, None), Some(dir.join("client.state")));
        assert_eq!(state_dir_for(&creds, Some(Path::new("/x"))), Some(PathBuf::from("/x")));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
