//! Address management: one lease file per container (`<state_dir>/leases/<id>` holding its
//! address), written atomically, so leases survive restarts and a crash never hands one address
//! to two containers. The lowest free address after the gateway is taken.

use std::collections::HashSet;
use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::{NetConfig, NetError};

fn dir(c: &NetConfig) -> PathBuf {
    c.state_dir.join("leases")
}

fn read_all(c: &NetConfig) -> Vec<(String, Ipv4Addr)> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir(c)) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if let Ok(text) = std::fs::read_to_string(e.path()) {
                if let Ok(ip) = text.trim().parse() {
                    out.push((name, ip));
                }
            }
        }
    }
    out
}

/// Container ids holding a lease.
pub fn leased(c: &NetConfig) -> Vec<String> {
    read_all(c).into_iter().map(|(id, _)| id).collect()
}

/// The container's address: its existing lease, or the lowest free one.
pub fn lease(c: &NetConfig, id: &str) -> Result<Ipv4Addr, NetError> {
    let all = read_all(c);
    if let Some((_, ip)) = all.iter().find(|(i, _)| i == id) {
        return Ok(*ip);
    }
    let used: HashSet<Ipv4Addr> = all.iter().map(|(_, ip)| *ip).collect();
    let base = u32::from(c.subnet);
    let size = 1u32 << (32 - c.prefix);
    // .0 is the network, .1 the gateway, the last the broadcast address.
    let ip = (2..size - 1)
        .map(|n| Ipv4Addr::from(base + n))
        .find(|ip| !used.contains(ip))
        .ok_or_else(|| NetError::Exhausted(format!("{}/{}", c.subnet, c.prefix)))?;
    let d = dir(c);
    let tmp = d.join(format!(".{id}.tmp"));
    std::fs::write(&tmp, format!("{ip}\n"))
        .map_err(|e| NetError::os(format!("writing lease {}", tmp.display()), e))?;
    std::fs::rename(&tmp, d.join(id))
        .map_err(|e| NetError::os(format!("committing lease for {id}"), e))?;
    Ok(ip)
}

/// Frees the container's lease (no error if it has none).
pub fn release(c: &NetConfig, id: &str) -> Result<(), NetError> {
    match std::fs::remove_file(dir(c).join(id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::os(format!("removing the lease of {id}"), e)),
    }
}
