//! `-u` / image `USER` resolution against the container's own /etc/passwd and /etc/group,
//! read from its layers (upper dir first, then lower dirs top first) before the container
//! exists, as Docker resolves them in the container's filesystem.

use std::path::{Path, PathBuf};

use crate::{RootfsSpec, SpawnError};

/// Who the process runs as.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResolvedUser {
    /// uid.
    pub uid: u32,
    /// Primary gid.
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
    /// Home directory (for HOME).
    pub home: String,
}

/// The file at `rel` in the topmost layer that has it (a whiteout ends the search).
fn layered_file(rootfs: &RootfsSpec, rel: &str) -> Option<String> {
    let dirs: Vec<&PathBuf> = std::iter::once(&rootfs.upper_dir)
        .chain(rootfs.lower_dirs.iter())
        .collect();
    for d in dirs {
        let p = d.join(rel);
        match std::fs::symlink_metadata(&p) {
            Ok(m) if m.is_file() => return std::fs::read_to_string(&p).ok(),
            Ok(_) => return None,
            Err(_) => continue,
        }
    }
    None
}

struct Passwd {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(text: &str) -> Vec<Passwd> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(Passwd {
                name: f.first()?.to_string(),
                uid: f.get(2)?.parse().ok()?,
                gid: f.get(3)?.parse().ok()?,
                home: f.get(5).unwrap_or(&"/").to_string(),
            })
        })
        .collect()
}

fn groups(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some((
                f.first()?.to_string(),
                f.get(2)?.parse().ok()?,
                f.get(3)
                    .map(|m| {
                        m.split(',')
                            .filter(|s| !s.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            ))
        })
        .collect()
}

/// Resolves `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`) in the container's files.
pub fn resolve(rootfs: &RootfsSpec, spec: &str) -> Result<ResolvedUser, SpawnError> {
    let pw = passwd(&layered_file(rootfs, "etc/passwd").unwrap_or_default());
    let gr = groups(&layered_file(rootfs, "etc/group").unwrap_or_default());
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entry = match u.parse::<u32>() {
        Ok(n) => pw.iter().find(|p| p.uid == n),
        Err(_) => Some(pw.iter().find(|p| p.name == u).ok_or_else(|| {
            SpawnError::user(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        })?),
    };
    let uid = match u.parse::<u32>() {
        Ok(n) => n,
        Err(_) => entry.map_or(0, |e| e.uid),
    };
    let mut gid = entry.map_or(0, |e| e.gid);
    if let Some(g) = g {
        gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => gr
                .iter()
                .find(|(name, _, _)| name == g)
                .map(|(_, id, _)| *id)
                .ok_or_else(|| {
                    SpawnError::user(format!(
                        "unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
    }
    let mut extra: Vec<u32> = Vec::new();
    if g.is_none() {
        if let Some(e) = entry {
            for (_, id, members) in &gr {
                if members.contains(&e.name) && *id != gid && !extra.contains(id) {
                    extra.push(*id);
                }
            }
        }
    }
    Ok(ResolvedUser {
        uid,
        gid,
        groups: extra,
        home: entry.map_or_else(|| "/".to_string(), |e| e.home.clone()),
    })
}

/// Candidate paths for `arg0` inside the container: itself when it has a `/`, else each
/// `$PATH` entry joined with it.
pub fn exec_candidates(arg0: &str, env: &[String]) -> Vec<String> {
    if arg0.contains('/') {
        return vec![arg0.to_string()];
    }
    let path = env
        .iter()
        .find_map(|kv| kv.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{}/{arg0}", d.trim_end_matches('/')))
        .collect()
}

/// Docker's PATH when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Component prefixes of an absolute path under `root` (`/a/b` → `root/a`, `root/a/b`).
pub fn prefixes(root: &Path, abs: &str) -> Vec<PathBuf> {
    let mut cur = root.to_path_buf();
    let mut out = Vec::new();
    for c in abs.split('/').filter(|c| !c.is_empty() && *c != ".") {
        cur.push(c);
        out.push(cur.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rootfs(dir: &Path) -> RootfsSpec {
        std::fs::create_dir_all(dir.join("l/etc")).unwrap();
        std::fs::create_dir_all(dir.join("u")).unwrap();
        std::fs::write(
            dir.join("l/etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1001:app:/home/app:/bin/sh\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("l/etc/group"),
            "root:x:0:\napp:x:1001:\nwheel:x:10:app\n",
        )
        .unwrap();
        RootfsSpec {
            lower_dirs: vec![dir.join("l")],
            upper_dir: dir.join("u"),
            work_dir: dir.join("w"),
            merged_dir: dir.join("m"),
            volatile: false,
        }
    }

    #[test]
    fn users_resolve_like_docker() {
        let d = tempfile::tempdir().unwrap();
        let r = rootfs(d.path());
        assert_eq!(resolve(&r, "").unwrap().uid, 0);
        let app = resolve(&r, "app").unwrap();
        assert_eq!(
            (app.uid, app.gid, app.groups.clone(), app.home.as_str()),
            (1000, 1001, vec![10], "/home/app")
        );
        let n = resolve(&r, "1000:1000").unwrap();
        assert_eq!((n.uid, n.gid), (1000, 1000));
        assert_eq!(resolve(&r, "4242").unwrap().uid, 4242);
        assert_eq!(resolve(&r, "app:root").unwrap().gid, 0);
        assert!(resolve(&r, "ghost")
            .unwrap_err()
            .to_string()
            .contains("unable to find user ghost"));
        assert!(resolve(&r, "app:ghosts").is_err());
    }

    #[test]
    fn path_candidates() {
        assert_eq!(exec_candidates("/bin/x", &[]), vec!["/bin/x"]);
        assert_eq!(
            exec_candidates("ls", &["PATH=/a:/b/".into()]),
            vec!["/a/ls", "/b/ls"]
        );
        assert_eq!(exec_candidates("ls", &[]).len(), 6);
    }
}
