//! Fixed keys: `KATTILA_PSK` or a key file, which override DNS.

use std::path::Path;

use kattila_proto::Psk;

/// Why a fixed key could not be loaded. Never contains the key.
#[derive(Debug, thiserror::Error)]
pub enum FixedKeyError {
    /// Both `KATTILA_PSK` and a key file were given.
    #[error("give either KATTILA_PSK or a key file, not both")]
    Both,
    /// `KATTILA_PSK` is set but blank.
    #[error("KATTILA_PSK is empty")]
    EmptyEnv,
    /// The key file could not be read.
    #[error("reading key file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// What went wrong.
        source: std::io::Error,
    },
    /// The key file holds only whitespace.
    #[error("key file {0} is empty")]
    EmptyFile(String),
}

/// Loads the fixed key from the value of `KATTILA_PSK` or from `file`;
/// `Ok(None)` when neither is given (DNS is then the source).
pub fn load_fixed_key(
    env_value: Option<&str>,
    file: Option<&Path>,
) -> Result<Option<Psk>, FixedKeyError> {
    match (env_value, file) {
        (Some(_), Some(_)) => Err(FixedKeyError::Both),
        (Some(text), None) => Psk::new(text).map(Some).ok_or(FixedKeyError::EmptyEnv),
        (None, Some(path)) => read_key_file(path).map(Some),
        (None, None) => Ok(None),
    }
}

/// Reads a key file (surrounding whitespace trimmed), warning when group or
/// others may read it.
pub fn read_key_file(path: &Path) -> Result<Psk, FixedKeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|source| FixedKeyError::Read { path: shown.clone(), source })?;
    warn_if_readable_by_others(path);
    Psk::new(&text).ok_or(FixedKeyError::EmptyFile(shown))
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(path = %path.display(), "key file is readable by group or others; chmod 600 it");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn precedence_and_errors() {
        let dir = std::env::temp_dir().join(format!("kattila-keyfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("psk");
        std::fs::write(&file, "from-file\n").unwrap();
        assert!(load_fixed_key(None, None).unwrap().is_none());
        let k = load_fixed_key(None, Some(&file)).unwrap().unwrap();
        assert!(k.same_as(&Psk::new("from-file").unwrap()));
        assert!(matches!(load_fixed_key(Some("x"), Some(&file)), Err(FixedKeyError::Both)));
        assert!(matches!(load_fixed_key(Some("  "), None), Err(FixedKeyError::EmptyEnv)));
        std::fs::write(&file, "\n").unwrap();
        let err = load_fixed_key(None, Some(&file)).unwrap_err();
        assert!(matches!(err, FixedKeyError::EmptyFile(_)));
        let missing = dir.join("missing");
        let err = load_fixed_key(None, Some(&missing)).unwrap_err();
        assert!(err.to_string().contains("missing"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
