//! Network namespaces for containers, with a pool of ready `--network none` namespaces.
//!
//! Creating a network namespace is the slowest kernel step of a start (about 0.7 ms of the
//! 1.1 ms of `unshare` here), so the monitor makes a few in advance while it is idle and hands
//! one out per `--network none` start. Those are held by a descriptor only: nothing outside
//! the monitor needs to find them, so they cost no file, bind mount or unmount, and a
//! container's goes when the descriptor is dropped and its processes are gone. It comes back
//! to the pool instead when its container could not change its settings and left no trace in
//! it (see [`NetPool::give_back_none`]): making one and having the kernel's cleanup worker
//! tear it down cost about 7% of all CPU at 8 concurrent `run --rm`. Bridge namespaces are
//! made at start as files (they need the container's id for rules and leases, and a path for
//! netlink).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use hb_net::{Attachment, NetConfig, NetError, Networks};

/// The monitor's view of networking.
pub struct NetPool {
    networks: Networks,
    ready: Vec<OwnedFd>,
    target: usize,
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
        match self.networks.create_held_netns() {
            // At the bottom: a namespace given back goes out first (see `give_back_none`).
            Ok(fd) => self.ready.insert(0, fd),
            Err(e) => {
                tracing::warn!("pre-creating a network namespace: {e}");
                self.target = self.ready.len();
            }
        }
    }

    /// A namespace with only `lo`: from the pool when it has one.
    pub fn take_none(&mut self) -> Result<OwnedFd, NetError> {
        match self.ready.pop() {
            Some(fd) => Ok(fd),
            None => self.networks.create_held_netns(),
        }
    }

    /// Takes back the namespace of an exited `--network none` container that could not change
    /// its settings (the caller's check): it joins the pool when the pool has room and the
    /// namespace is untouched (no socket left, no packet ever moved, `lo` alone), so the next
    /// start skips making one and the kernel skips tearing this one down. Otherwise it goes.
    pub fn give_back_none(&mut self, fd: OwnedFd) {
        use std::os::fd::AsFd;
        // Up to twice the refill target: the idle refill usually topped the pool up while the
        // container ran, and a namespace turned away here is one the kernel must tear down.
        if self.ready.len() >= 2 * self.target {
            return;
        }
        match self.networks.held_netns_untouched(fd.as_fd()) {
            Ok(true) => self.ready.push(fd),
            Ok(false) => {}
            Err(e) => tracing::warn!("checking a used network namespace: {e}"),
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
        self.ready.clear();
        if let Err(e) = self.networks.remove_bridge() {
            tracing::warn!("removing the bridge: {e}");
        }
    }
}
