//! The overlay mount data string, with docker-overlay2-style short symlinks (`<root>/l/<id>`)
//! when the plain lower dir paths do not fit in one page.
//!
//! Limits: the kernel copies legacy mount data into one page, so the string must stay below
//! 4096 bytes (4095 plus the NUL). With full layer paths (`<root>/<64 hex>`, ~90 bytes each)
//! that is about 40 layers; with short links (`<root>/l/<12 hex>`, ~40 bytes each) about 100,
//! more than images have in practice (overlayfs itself stops at 500 lowers). overlayfs follows
//! the links once, when it looks the lowers up at mount time. If even the short form is too
//! long, `TooManyLayers` says so; the spawner can then add lowers one at a time with the new
//! mount API (`fsconfig(lowerdir+)`, Linux 6.8+), which has no whole-string limit.

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::{LayerStore, RootfsError};

/// Mount data must fit one page including its NUL.
pub const MOUNT_DATA_MAX: usize = 4095;

/// Overlay's option parser splits on `,` and lowerdir on `:`; a backslash escapes them.
fn escaped(p: &Path) -> String {
    let mut out = String::new();
    for ch in p.to_string_lossy().chars() {
        if matches!(ch, ',' | ':' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

fn data_string(lowers: &[PathBuf], upper: &Path, work: &Path) -> String {
    let lower: Vec<String> = lowers.iter().map(|p| escaped(p)).collect();
    format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.join(":"),
        escaped(upper),
        escaped(work)
    )
}

/// A short, stable symlink `<root>/l/<name>` → `target`; reuses one that already points there.
fn short_link(links: &Path, target: &Path) -> Result<PathBuf, RootfsError> {
    let digest = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(target.as_os_str().as_bytes()))
    };
    // 12 hex chars is enough in practice; longer names only on a (harmless) collision.
    for len in [12usize, 20, 32, 64] {
        let link = links.join(&digest[..len]);
        match std::fs::read_link(&link) {
            Ok(existing) if existing == target => return Ok(link),
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // Made under a temp name and renamed, so a reader never sees a half link.
                let tmp = links.join(format!(".tmp-{}-{}", &digest[..len], std::process::id()));
                let _ = std::fs::remove_file(&tmp);
                std::os::unix::fs::symlink(target, &tmp).map_err(|e| {
                    RootfsError::io(format!("creating short link {}", tmp.display()), e)
                })?;
                std::fs::rename(&tmp, &link).map_err(|e| {
                    RootfsError::io(format!("creating short link {}", link.display()), e)
                })?;
                return Ok(link);
            }
            Err(e) => {
                return Err(RootfsError::io(
                    format!("reading short link {}", link.display()),
                    e,
                ))
            }
        }
    }
    Err(RootfsError::io(
        format!("no free short link name for {}", target.display()),
        std::io::Error::from(std::io::ErrorKind::AlreadyExists),
    ))
}

/// The `-o` data for an overlay mount of `lowers` (top first), `upper` and `work`. Uses the
/// lower paths as given when the string fits a page, short symlinks under `<root>/l/`
/// otherwise; errors with `TooManyLayers` when even those do not fit.
pub fn overlay_mount_data(
    layer_store: &LayerStore,
    lowers: &[PathBuf],
    upper: &Path,
    work: &Path,
) -> Result<String, RootfsError> {
    let plain = data_string(lowers, upper, work);
    if plain.len() <= MOUNT_DATA_MAX {
        return Ok(plain);
    }
    let links = layer_store.root().join("l");
    std::fs::create_dir_all(&links)
        .map_err(|e| RootfsError::io(format!("creating {}", links.display()), e))?;
    let short = lowers
        .iter()
        .map(|p| short_link(&links, p))
        .collect::<Result<Vec<_>, _>>()?;
    let data = data_string(&short, upper, work);
    if data.len() > MOUNT_DATA_MAX {
        return Err(RootfsError::TooManyLayers {
            layers: lowers.len(),
            bytes: data.len(),
        });
    }
    Ok(data)
}
