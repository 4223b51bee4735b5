//! The daemon's unix socket: created with its parent directory, mode 0660, and a stale socket
//! left by a crashed daemon replaced, while a live daemon's socket is never stolen.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::{bail, Context};
use tokio::net::UnixListener;

/// Binds `path`, refusing when another daemon is answering on it.
pub fn bind_unix(path: &Path) -> anyhow::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating socket directory {}", dir.display()))?;
    }
    refuse_if_served(path)?;
    if path.exists() {
        std::fs::remove_file(path)
            .with_context(|| format!("removing stale socket {}", path.display()))?;
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod 0660 {}", path.display()))?;
    Ok(listener)
}

/// Fails when a live daemon answers on `path`.
pub fn refuse_if_served(path: &Path) -> anyhow::Result<()> {
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another daemon is already listening on {}; stop it first or set [daemon] socket",
            path.display()
        );
    }
    Ok(())
}
