//! Network namespaces for containers, with a pool of ready `--network none` namespaces.
//!
//! Creating a network namespace is the slowest kernel step of a start (about 0.7 ms of the
//! 1.1 ms of `unshare` here, and more with the bind mount that keeps it), so the monitor makes a
//! few in advance while it is idle and hands one out per `--network none` start. Bridge
//! namespaces are made at start (they need the container's id for rules and leases).

use std::path::{Path, PathBuf};

use hb_net::{Attachment, NetConfig, NetError, Networks};

/// The monitor's view of networking.
pub struct NetPool {
    networks: Networks,
    ready: Vec<PathBuf>,
    target: usize,
    serial: u64,
}

impl NetPool {
    /// Opens networking; `target` ready namespaces are kept (0 disables the pool).
    pub fn open(config: NetConfig, target: usize) -> Result<NetPool, NetError> {
        let networks = Networks::open(config)?;
        // Namespaces pooled by a previous monitor are unknown to this one: clean them all.
        let _ = networks.cleanup_stale(&[]);
        Ok(NetPool {
            networks,
            ready: Vec::new(),
            target,
            serial: 0,
        })
    }

    /// How long the poll loop may sleep: refill soon while the pool is short, else forever.
    pub fn idle_timeout_ms(&self) -> i32 {
        if self.ready.len() < self.target {
            0
        } else {
            -1
        }
    }

    /// Makes one pooled namespace, when the pool is short.
    pub fn refill_one(&mut self) {
        if self.ready.len() >= self.target {
            return;
        }
        self.serial += 1;
        let name = format!("pool-{}-{}", std::process::id(), self.serial);
        match self.networks.create_netns(&name) {
            Ok(p) => self.ready.push(p),
            Err(e) => {
                tracing::warn!("pre-creating a network namespace: {e}");
                self.target = self.ready.len();
            }
        }
    }

    /// A namespace with only `lo` for container `id`: from the pool when it has one.
    pub fn take_none(&mut self, id: &str) -> Result<PathBuf, NetError> {
        match self.ready.pop() {
            Some(p) => Ok(p),
            None => self.networks.create_netns(id),
        }
    }

    /// A namespace on the bridge with `ports` published.
    pub fn bridge(
        &mut self,
        id: &str,
        ports: &[String],
    ) -> Result<(PathBuf, Attachment), NetError> {
        let mappings = ports
            .iter()
            .map(|p| hb_net::parse_port_mapping(p))
            .collect::<Result<Vec<_>, _>>()?;
        let ns = self.networks.create_netns(id)?;
        match self.networks.attach_bridge(&ns, id, &mappings) {
            Ok(att) => Ok((ns, att)),
            Err(e) => {
                let _ = self.networks.release(id, &ns);
                Err(e)
            }
        }
    }

    /// Releases what container `id` holds.
    pub fn release(&mut self, id: &str, netns: &Path) -> Result<(), NetError> {
        self.networks.release(id, netns)
    }

    /// Deletes the pooled namespaces and the bridge with its rules (the monitor is stopping,
    /// after its containers: nothing of ours is left on the host).
    pub fn drain_pool(&mut self) {
        self.drain_namespaces();
        if let Err(e) = self.networks.remove_bridge() {
            tracing::warn!("removing the bridge: {e}");
        }
    }

    fn drain_namespaces(&mut self) {
        for p in self.ready.drain(..) {
            let name = p
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let _ = self.networks.release(&name, &p);
        }
    }
}
