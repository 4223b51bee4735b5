//! `hb-net`: container networking. Persistent network namespaces (nsfs bind mounts, as
//! `ip netns add` makes) created and wired before the container process exists, so the spawner
//! only `setns()`s into a ready one and the monitor can pool them; the bridge (`hb0`), veth
//! pairs, addresses from a small file-based IPAM, NAT to the outside and published ports.
//!
//! Everything a [`Networks`] creates is tagged with its bridge name (veth names, rule comments)
//! and lives under its own run and state dirs, so several daemons on one host (tests do this)
//! never touch each other's objects.

#![warn(missing_docs)]

mod ipam;
mod ns;
mod ports;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::process::Command;

pub use ports::{parse_port_mapping, PortMapping, Protocol};

/// Errors of container networking.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    /// A setting is invalid.
    #[error("network configuration: {0}")]
    Config(String),
    /// A system call or file operation failed.
    #[error("{what}: {source}")]
    Os {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An external tool (`ip`, `iptables`) failed.
    #[error("{what} failed: {detail}")]
    Tool {
        /// The command.
        what: String,
        /// Its stderr.
        detail: String,
    },
    /// A published host port is taken.
    #[error("bind {addr}: address already in use (port is taken on the host)")]
    PortTaken {
        /// `ip:port`.
        addr: String,
    },
    /// The subnet has no free address.
    #[error("no free address left in {0}")]
    Exhausted(String),
    /// A `-p` spec does not parse.
    #[error("invalid port mapping {spec:?}: {why}")]
    BadPort {
        /// The spec.
        spec: String,
        /// Why.
        why: String,
    },
}

impl NetError {
    pub(crate) fn os(what: impl Into<String>, source: std::io::Error) -> NetError {
        NetError::Os {
            what: what.into(),
            source,
        }
    }
}

/// Where and how a [`Networks`] works.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Bridge name (`hb0`).
    pub bridge: String,
    /// Network address of the subnet.
    pub subnet: Ipv4Addr,
    /// Prefix length (8..=29; the daemon config allows up to /24).
    pub prefix: u8,
    /// Namespace files (`<run_dir>/ns/<name>`); on a tmpfs such as /run.
    pub run_dir: PathBuf,
    /// IPAM leases and port records (`<state_dir>/leases/<id>`).
    pub state_dir: PathBuf,
}

impl NetConfig {
    /// Parses `subnet` (`10.89.0.0/16`) and checks the bridge name.
    pub fn new(
        bridge: &str,
        subnet: &str,
        run_dir: PathBuf,
        state_dir: PathBuf,
    ) -> Result<NetConfig, NetError> {
        if bridge.is_empty()
            || bridge.len() > 12
            || !bridge
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(NetError::Config(format!(
                "bridge name {bridge:?}: 1 to 12 letters, digits, '_' or '-' (veth names add 3 characters)"
            )));
        }
        let (ip, len) = subnet
            .split_once('/')
            .ok_or_else(|| NetError::Config(format!("subnet {subnet:?}: expected a.b.c.d/len")))?;
        let ip: Ipv4Addr = ip
            .parse()
            .map_err(|_| NetError::Config(format!("subnet {subnet:?}: bad address")))?;
        let prefix: u8 = len
            .parse()
            .ok()
            .filter(|l| (8..=29).contains(l))
            .ok_or_else(|| NetError::Config(format!("subnet {subnet:?}: prefix must be 8..=29")))?;
        let mask = u32::MAX << (32 - prefix);
        Ok(NetConfig {
            bridge: bridge.to_string(),
            subnet: Ipv4Addr::from(u32::from(ip) & mask),
            prefix,
            run_dir,
            state_dir,
        })
    }

    /// The bridge's own address (first of the subnet).
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.subnet) + 1)
    }
}

/// What a bridge attachment gave a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// Its address.
    pub ip: Ipv4Addr,
    /// Prefix length.
    pub prefix: u8,
    /// Default gateway (the bridge).
    pub gateway: Ipv4Addr,
    /// eth0's MAC.
    pub mac: String,
    /// Host end of the veth pair.
    pub host_veth: String,
    /// Published ports with chosen host ports, as `-p` specs (`127.0.0.1:8080:80/tcp`).
    pub ports: Vec<String>,
}

/// Container networking for one daemon.
pub struct Networks {
    config: NetConfig,
    bridge_ready: bool,
    ports: ports::PortReservations,
}

fn run_tool(what: &str, cmd: &mut Command) -> Result<String, NetError> {
    let out = cmd
        .output()
        .map_err(|e| NetError::os(format!("running {what}"), e))?;
    if !out.status.success() {
        return Err(NetError::Tool {
            what: what.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip -batch -` with the given lines (one exec for several changes).
fn ip_batch(netns: Option<&Path>, lines: &str) -> Result<(), NetError> {
    use std::io::Write;
    let mut cmd = Command::new("ip");
    if let Some(ns) = netns {
        // `ip -n` wants a name under /run/netns; ours are elsewhere, so run `ip` from a thread
        // that has joined the namespace (a child inherits its forking thread's namespace).
        let lines = lines.to_string();
        return ns::in_netns(ns, move || ip_batch(None, &lines))?;
    }
    cmd.arg("-batch").arg("-");
    cmd.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| NetError::os("running ip (is iproute2 installed?)", e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(lines.as_bytes())
            .map_err(|e| NetError::os("writing to ip -batch", e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::os("waiting for ip", e))?;
    if !out.status.success() {
        return Err(NetError::Tool {
            what: format!("ip -batch ({})", lines.lines().next().unwrap_or("")),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

/// Short, stable interface-name suffix for a container id.
fn veth_name(bridge: &str, container_id: &str) -> String {
    let keep = 15 - bridge.len() - 1;
    format!("{bridge}v{}", &container_id[..keep.min(container_id.len())])
}

impl Networks {
    /// Prepares dirs; the bridge is made on first use.
    pub fn open(config: NetConfig) -> Result<Networks, NetError> {
        for d in [config.run_dir.join("ns"), config.state_dir.join("leases")] {
            std::fs::create_dir_all(&d)
                .map_err(|e| NetError::os(format!("creating {}", d.display()), e))?;
        }
        Ok(Networks {
            ports: ports::PortReservations::default(),
            config,
            bridge_ready: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &NetConfig {
        &self.config
    }

    /// A new persistent netns with only `lo` up, at `<run_dir>/ns/<name>`.
    pub fn create_netns(&self, name: &str) -> Result<PathBuf, NetError> {
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(NetError::Config(format!("netns name {name:?}")));
        }
        let path = self.config.run_dir.join("ns").join(name);
        ns::create(&path)?;
        Ok(path)
    }

    fn ensure_bridge(&mut self) -> Result<(), NetError> {
        if self.bridge_ready {
            return Ok(());
        }
        let b = &self.config.bridge;
        let exists = Path::new("/sys/class/net").join(b).exists();
        if !exists {
            ip_batch(
                None,
                &format!(
                    "link add name {b} type bridge\naddr add {}/{} dev {b}\nlink set {b} up\n",
                    self.config.gateway(),
                    self.config.prefix
                ),
            )?;
        }
        std::fs::write("/proc/sys/net/ipv4/ip_forward", "1")
            .map_err(|e| NetError::os("enabling ip_forward", e))?;
        // 127.0.0.1:PORT from the host reaches published ports (DNAT in OUTPUT then routing
        // out of the bridge needs route_localnet), as docker does without its userland proxy.
        let _ = std::fs::write(format!("/proc/sys/net/ipv4/conf/{b}/route_localnet"), "1");
        ports::ensure_base_rules(&self.config)?;
        self.bridge_ready = true;
        Ok(())
    }

    /// Bridge mode for the namespace at `netns`: veth pair, address, route, NAT, ports.
    pub fn attach_bridge(
        &mut self,
        netns: &Path,
        container_id: &str,
        ports: &[PortMapping],
    ) -> Result<Attachment, NetError> {
        self.ensure_bridge()?;
        // Reserve host ports first: a taken port fails before anything is created.
        let chosen = self.ports.reserve(container_id, ports)?;
        let result = self.attach_inner(netns, container_id, &chosen);
        if result.is_err() {
            self.ports.release(container_id);
        }
        result
    }

    fn attach_inner(
        &mut self,
        netns: &Path,
        container_id: &str,
        ports: &[PortMapping],
    ) -> Result<Attachment, NetError> {
        let ip = ipam::lease(&self.config, container_id)?;
        let host = veth_name(&self.config.bridge, container_id);
        let b = &self.config.bridge;
        let mac = mac_for(ip);
        let setup = (|| -> Result<(), NetError> {
            // Made from inside the namespace, with the host end sent to the monitor's own
            // (host) namespace by pid: `ip` takes a pid there, not a namespace file.
            let me = std::process::id();
            ip_batch(
                Some(netns),
                &format!(
                    "link add eth0 address {mac} type veth peer name {host} netns {me}\naddr add {ip}/{} dev eth0\nlink set eth0 up\nroute add default via {}\n",
                    self.config.prefix,
                    self.config.gateway()
                ),
            )?;
            ip_batch(
                None,
                &format!("link set {host} master {b}\nlink set {host} up\n"),
            )?;
            ports::add_port_rules(&self.config, container_id, ip, ports)?;
            Ok(())
        })();
        if let Err(e) = setup {
            let _ = self.release(container_id, netns);
            return Err(e);
        }
        Ok(Attachment {
            ip,
            prefix: self.config.prefix,
            gateway: self.config.gateway(),
            mac,
            host_veth: host,
            ports: ports.iter().map(PortMapping::to_spec).collect(),
        })
    }

    /// Undoes an attachment and deletes the namespace file. Idempotent.
    pub fn release(&mut self, container_id: &str, netns: &Path) -> Result<(), NetError> {
        let host = veth_name(&self.config.bridge, container_id);
        if Path::new("/sys/class/net").join(&host).exists() {
            let _ = run_tool(
                "ip link del",
                Command::new("ip").args(["link", "del", &host]),
            );
        }
        ports::remove_port_rules(&self.config, container_id)?;
        self.ports.release(container_id);
        ipam::release(&self.config, container_id)?;
        ns::delete(netns)?;
        Ok(())
    }

    /// Releases everything of container ids not in `live`: netns files, veths, rules, leases.
    pub fn cleanup_stale(&mut self, live: &[String]) -> Result<Vec<String>, NetError> {
        let mut cleaned = Vec::new();
        let is_live = |name: &str| live.iter().any(|l| l == name);
        if let Ok(entries) = std::fs::read_dir(self.config.run_dir.join("ns")) {
            for e in entries.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if !is_live(&name) {
                    self.release(&name, &e.path())?;
                    cleaned.push(name);
                }
            }
        }
        for id in ipam::leased(&self.config) {
            if !is_live(&id) && !cleaned.contains(&id) {
                let ns = self.config.run_dir.join("ns").join(&id);
                self.release(&id, &ns)?;
                cleaned.push(id);
            }
        }
        for id in ports::rule_owners(&self.config)? {
            if !is_live(&id) && !cleaned.contains(&id) {
                ports::remove_port_rules(&self.config, &id)?;
                cleaned.push(id);
            }
        }
        Ok(cleaned)
    }

    /// resolv.conf for containers: the host's without loopback nameservers (unreachable from
    /// another namespace), or public resolvers when none remain; the host's as is for `host`.
    pub fn resolv_conf(&self, mode_host: bool) -> String {
        let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
        if mode_host {
            return host;
        }
        let mut out = String::new();
        let mut servers = 0;
        for line in host.lines() {
            if let Some(ns) = line.trim().strip_prefix("nameserver") {
                let ns = ns.trim();
                if ns.parse::<IpAddr>().is_ok_and(|a| a.is_loopback()) {
                    continue;
                }
                servers += 1;
            }
            out.push_str(line);
            out.push('\n');
        }
        if servers == 0 {
            out.push_str("nameserver 8.8.8.8\nnameserver 1.1.1.1\n");
        }
        out
    }
}

/// A locally administered MAC derived from the address (as docker does: 02:42:ip).
fn mac_for(ip: Ipv4Addr) -> String {
    let o = ip.octets();
    format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3])
}

#[cfg(test)]
mod tests;
