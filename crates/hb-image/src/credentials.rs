//! Registry credentials saved by `hb login`: one JSON file, mode 0600, replaced atomically
//! (temp file, fsync, rename) so a crash never leaves half a file.

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::ImageError;

/// A user name and secret for one registry.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Credential {
    /// User name.
    pub username: String,
    /// Password or token.
    pub password: String,
}

/// The saved credentials, keyed by registry host (`127.0.0.1:5000`, `docker.io`).
pub struct CredentialFile {
    path: PathBuf,
    entries: Mutex<BTreeMap<String, Credential>>,
}

impl CredentialFile {
    /// Reads the file if it exists (a missing file is an empty set).
    pub fn open(path: &Path) -> Result<CredentialFile, ImageError> {
        let entries = match fs::read(path) {
            Ok(data) => serde_json::from_slice(&data).map_err(|e| {
                ImageError::io(
                    format!("reading credentials {}", path.display()),
                    std::io::Error::new(std::io::ErrorKind::InvalidData, e),
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                return Err(ImageError::io(
                    format!("reading credentials {}", path.display()),
                    e,
                ))
            }
        };
        Ok(CredentialFile {
            path: path.to_path_buf(),
            entries: Mutex::new(entries),
        })
    }

    /// The credential for a registry, if one was saved.
    pub fn get(&self, registry: &str) -> Option<Credential> {
        self.lock().get(&normalise(registry)).cloned()
    }

    /// Saves (or with `None` forgets) the credential for a registry, durably.
    pub fn set(&self, registry: &str, cred: Option<Credential>) -> Result<(), ImageError> {
        let mut entries = self.lock();
        match cred {
            Some(c) => entries.insert(normalise(registry), c),
            None => entries.remove(&normalise(registry)),
        };
        let data =
            serde_json::to_vec_pretty(&*entries).map_err(|e| ImageError::Catalog(e.to_string()))?;
        write_private(&self.path, &data)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Credential>> {
        // A poisoned lock only means another thread panicked mid-insert of a map value.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Docker Hub has several names; keep one.
fn normalise(registry: &str) -> String {
    match registry {
        "index.docker.io" | "registry-1.docker.io" | "https://index.docker.io/v1/" => {
            "docker.io".to_string()
        }
        other => other
            .trim_start_matches("https://")
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string(),
    }
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), ImageError> {
    let ctx = |what: &str| format!("{what} {}", path.display());
    let dir = path.parent().unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| ImageError::io(ctx("creating directory for"), e))?;
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(|e| ImageError::io(ctx("writing"), e))?;
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .map_err(|e| ImageError::io(ctx("chmod"), e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| ImageError::io(ctx("writing"), e))?;
    fs::rename(&tmp, path).map_err(|e| ImageError::io(ctx("replacing"), e))?;
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saved_private_and_reloaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        let f = CredentialFile::open(&path).unwrap();
        assert!(f.get("docker.io").is_none());
        let c = Credential {
            username: "u".into(),
            password: "p".into(),
        };
        f.set("https://index.docker.io/v1/", Some(c.clone()))
            .unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = CredentialFile::open(&path).unwrap();
        assert_eq!(again.get("docker.io"), Some(c));
        again.set("docker.io", None).unwrap();
        assert!(CredentialFile::open(&path)
            .unwrap()
            .get("docker.io")
            .is_none());
    }

    #[test]
    fn corrupt_file_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("auth.json");
        fs::write(&path, b"{not json").unwrap();
        let err = CredentialFile::open(&path).err().unwrap();
        assert!(err.to_string().contains("auth.json"), "{err}");
    }
}
