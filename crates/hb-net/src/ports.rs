//! Published ports (`-p`): parsing Docker's syntax, reserving host ports by holding a bound
//! socket for the container's life (so a taken port fails clearly and two containers cannot
//! share one), and the iptables rules: NAT for the subnet, DNAT for published ports (from
//! outside and from the host itself), forwarding. Every rule carries the comment
//! `hb:<bridge>` or `hb:<bridge>:<container id>`, which is how cleanup finds exactly ours.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::Command;

use crate::{run_tool, NetConfig, NetError};

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// One `-p` mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// Host address to listen on (all when None).
    pub host_ip: Option<IpAddr>,
    /// Host port (0: pick a free one).
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// tcp or udp.
    pub protocol: Protocol,
}

impl PortMapping {
    /// Back to Docker's syntax: `[ip:]host:container/proto`.
    pub fn to_spec(&self) -> String {
        match self.host_ip {
            Some(ip) => format!(
                "{ip}:{}:{}/{}",
                self.host_port,
                self.container_port,
                self.protocol.as_str()
            ),
            None => format!(
                "{}:{}/{}",
                self.host_port,
                self.container_port,
                self.protocol.as_str()
            ),
        }
    }
}

/// Parses Docker's `-p` forms: `80`, `8080:80`, `127.0.0.1:8080:80`, `127.0.0.1::80`, each with
/// an optional `/tcp` or `/udp`.
pub fn parse_port_mapping(s: &str) -> Result<PortMapping, NetError> {
    let bad = |why: &str| NetError::BadPort {
        spec: s.to_string(),
        why: why.to_string(),
    };
    let (spec, proto) = match s.rsplit_once('/') {
        Some((a, "tcp")) => (a, Protocol::Tcp),
        Some((a, "udp")) => (a, Protocol::Udp),
        Some(_) => return Err(bad("protocol must be tcp or udp")),
        None => (s, Protocol::Tcp),
    };
    let parts: Vec<&str> = spec.split(':').collect();
    let port = |p: &str, allow_zero: bool| -> Result<u16, NetError> {
        if p.is_empty() && allow_zero {
            return Ok(0);
        }
        match p.parse::<u16>() {
            Ok(0) if !allow_zero => Err(bad("port 0 is not a port")),
            Ok(n) => Ok(n),
            Err(_) => Err(bad("ports are numbers from 1 to 65535")),
        }
    };
    let (ip, host, ctr) = match parts.as_slice() {
        [c] => (None, 0, port(c, false)?),
        [h, c] => (None, port(h, true)?, port(c, false)?),
        [i, h, c] => {
            let ip: IpAddr = i.parse().map_err(|_| bad("invalid host address"))?;
            if ip.is_ipv6() {
                return Err(bad("IPv6 host addresses are not offered"));
            }
            (Some(ip), port(h, true)?, port(c, false)?)
        }
        _ => return Err(bad("expected [IP:][HOST:]CONTAINER[/tcp|udp]")),
    };
    Ok(PortMapping {
        host_ip: ip,
        host_port: host,
        container_port: ctr,
        protocol: proto,
    })
}

/// Host ports held for containers.
#[derive(Default)]
pub struct PortReservations {
    held: HashMap<String, Vec<OwnedFd>>,
}

fn bind_socket(ip: IpAddr, port: u16, proto: Protocol) -> Result<(OwnedFd, u16), NetError> {
    let addr = SocketAddr::new(ip, port);
    let ty = match proto {
        Protocol::Tcp => libc::SOCK_STREAM,
        Protocol::Udp => libc::SOCK_DGRAM,
    };
    // SAFETY: socket() returns a new fd or -1.
    let fd = unsafe { libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(NetError::os("socket", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is fresh and ours.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let IpAddr::V4(v4) = ip else {
        return Err(NetError::Config(
            "IPv6 host addresses are not offered".into(),
        ));
    };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(v4).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: binding our socket to a sockaddr_in we own.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EADDRINUSE) {
            return Err(NetError::PortTaken {
                addr: addr.to_string(),
            });
        }
        return Err(NetError::os(format!("bind {addr}"), e));
    }
    // Learn the port the kernel chose for port 0.
    let mut out: libc::sockaddr_in = sin;
    let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: getsockname into a sockaddr_in we own.
    unsafe { libc::getsockname(fd, (&mut out as *mut libc::sockaddr_in).cast(), &mut len) };
    Ok((owned, u16::from_be(out.sin_port)))
}

impl PortReservations {
    /// Binds every mapping's host port; returns the mappings with chosen ports. All or nothing.
    pub fn reserve(
        &mut self,
        id: &str,
        ports: &[PortMapping],
    ) -> Result<Vec<PortMapping>, NetError> {
        let mut fds = Vec::new();
        let mut chosen = Vec::new();
        for p in ports {
            let ip = p.host_ip.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
            let (fd, port) = bind_socket(ip, p.host_port, p.protocol)?;
            fds.push(fd);
            chosen.push(PortMapping {
                host_port: port,
                ..p.clone()
            });
        }
        if !fds.is_empty() {
            self.held.insert(id.to_string(), fds);
        }
        Ok(chosen)
    }

    /// Closes the container's reserved sockets.
    pub fn release(&mut self, id: &str) {
        self.held.remove(id);
    }
}

/// The iptables flavour the host uses (`iptables-nft` or `iptables-legacy`): rules in the other
/// one would be invisible to the host's own tooling and, with both loaded, evaluated apart.
#[derive(Clone, Debug)]
pub struct Firewall {
    /// Path of `iptables`, `iptables-nft` or `iptables-legacy`.
    pub iptables: String,
}

/// Where a firewall tool lives (absolute: no PATH search per exec).
fn tool_path(name: &str) -> Option<String> {
    ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| std::path::Path::new(d).join(name))
        .find(|p| p.exists())
        .map(|p| p.to_string_lossy().into_owned())
}

fn tool_exists(name: &str) -> bool {
    tool_path(name).is_some()
}

/// Whether any iptables is installed (a file check: `open` must not exec).
pub fn iptables_present() -> bool {
    tool_exists("iptables") || tool_exists("iptables-nft") || tool_exists("iptables-legacy")
}

fn rule_count(save: &str) -> usize {
    let Some(save) = tool_path(save) else {
        return 0;
    };
    Command::new(save)
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.starts_with("-A "))
                .count()
        })
        .unwrap_or(0)
}

impl Firewall {
    /// Picks the flavour: when both exist, the one already holding rules (as Kubernetes'
    /// iptables-wrapper does: whoever set up this host's firewall used that one), else the
    /// system default `iptables`.
    pub fn detect() -> Result<Firewall, NetError> {
        let nft = tool_exists("iptables-nft");
        let legacy = tool_exists("iptables-legacy");
        let iptables = if nft && legacy {
            let n = rule_count("iptables-nft-save");
            let l = rule_count("iptables-legacy-save");
            if l > n {
                "iptables-legacy"
            } else if n > l {
                "iptables-nft"
            } else {
                "iptables"
            }
        } else if tool_exists("iptables") {
            "iptables"
        } else if nft {
            "iptables-nft"
        } else if legacy {
            "iptables-legacy"
        } else {
            return Err(NetError::Config(
                "no iptables found (bridge networking needs iptables-nft or iptables-legacy)"
                    .into(),
            ));
        };
        let iptables = tool_path(iptables).ok_or_else(|| {
            NetError::Config(format!("{iptables} vanished while detecting the firewall"))
        })?;
        Ok(Firewall { iptables })
    }

    fn run(&self, args: &[&str]) -> Result<String, NetError> {
        run_tool(
            &format!("{} {}", self.iptables, args.join(" ")),
            Command::new(&self.iptables).arg("-w").args(args),
        )
    }

    /// `<flavour>-save` / `-restore`.
    fn companion(&self, what: &str) -> String {
        format!("{}-{what}", self.iptables)
    }

    /// Feeds `iptables-restore --noflush` (one exec for many rule changes, applied atomically).
    fn restore(&self, input: &str) -> Result<(), NetError> {
        use std::io::Write;
        let tool = self.companion("restore");
        let mut child = Command::new(&tool)
            .args(["-w", "--noflush"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .map_err(|e| NetError::os(format!("running {tool}"), e))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|e| NetError::os(format!("writing to {tool}"), e))?;
        }
        let out = child
            .wait_with_output()
            .map_err(|e| NetError::os(format!("waiting for {tool}"), e))?;
        if !out.status.success() {
            return Err(NetError::Tool {
                what: format!("{tool} --noflush"),
                detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
            });
        }
        Ok(())
    }

    /// Adds a rule unless it is there (`-C` first).
    fn ensure_rule(&self, table: &str, chain: &str, rule: &[&str]) -> Result<(), NetError> {
        let mut check = vec!["-t", table, "-C", chain];
        check.extend_from_slice(rule);
        if self.run(&check).is_ok() {
            return Ok(());
        }
        let mut add = vec!["-t", table, "-I", chain];
        add.extend_from_slice(rule);
        self.run(&add).map(|_| ())
    }

    /// Bridge setup, once: NAT out of the subnet, NAT for host-originated (127.0.0.0/8)
    /// connections to published ports, forwarding to and from the bridge.
    pub fn ensure_base_rules(&self, c: &NetConfig) -> Result<(), NetError> {
        let subnet = format!("{}/{}", c.subnet, c.prefix);
        let tag = format!("hb:{}", c.bridge);
        let b = c.bridge.as_str();
        let comment = ["-m", "comment", "--comment", tag.as_str()];
        let with = |r: &[&'static str]| -> Vec<String> {
            r.iter()
                .chain(comment.iter())
                .map(|s| s.to_string())
                .collect()
        };
        let rules: Vec<(&str, &str, Vec<String>)> = vec![
            (
                "nat",
                "POSTROUTING",
                [
                    vec![
                        "-s".to_string(),
                        subnet.clone(),
                        "!".into(),
                        "-o".into(),
                        b.into(),
                    ],
                    with(&["-j", "MASQUERADE"]),
                ]
                .concat(),
            ),
            (
                "nat",
                "POSTROUTING",
                [
                    vec!["-o".to_string(), b.into()],
                    with(&["-m", "addrtype", "--src-type", "LOCAL", "-j", "MASQUERADE"]),
                ]
                .concat(),
            ),
            (
                "filter",
                "FORWARD",
                [vec!["-i".to_string(), b.into()], with(&["-j", "ACCEPT"])].concat(),
            ),
            (
                "filter",
                "FORWARD",
                [
                    vec!["-o".to_string(), b.into()],
                    with(&[
                        "-m",
                        "conntrack",
                        "--ctstate",
                        "RELATED,ESTABLISHED",
                        "-j",
                        "ACCEPT",
                    ]),
                ]
                .concat(),
            ),
        ];
        for (table, chain, rule) in &rules {
            let refs: Vec<&str> = rule.iter().map(String::as_str).collect();
            self.ensure_rule(table, chain, &refs)?;
        }
        Ok(())
    }

    /// A container's published ports: DNAT from outside (PREROUTING) and from the host itself
    /// (OUTPUT), and a FORWARD accept to the container port, in one `iptables-restore`. The
    /// port record (with the address) is written first, so a crash in between leaves
    /// something release finds.
    pub fn add_port_rules(
        &self,
        c: &NetConfig,
        id: &str,
        ip: Ipv4Addr,
        ports: &[PortMapping],
    ) -> Result<(), NetError> {
        if ports.is_empty() {
            return Ok(());
        }
        write_record(c, id, ip, ports)?;
        self.restore(&port_rules('A', c, id, ip, ports))
    }

    /// Deletes the bridge's base rules (comment exactly `hb:<bridge>`). Tolerates none.
    pub fn remove_base_rules(&self, c: &NetConfig) -> Result<(), NetError> {
        let tool = self.companion("save");
        let text = run_tool(&tool, &mut Command::new(&tool))?;
        let tag = format!("hb:{}", c.bridge);
        let mut table = String::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if let Some(rest) = line.strip_prefix("-A ") {
                if comment_of(line).as_deref() == Some(tag.as_str()) {
                    let mut args = vec!["-t".to_string(), table.clone(), "-D".to_string()];
                    args.extend(split_rule(rest));
                    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                    let _ = self.run(&refs);
                }
            }
        }
        Ok(())
    }

    /// Our rules (either table) as `(table, -A line)`, from one `iptables-save`.
    fn our_rules(&self, c: &NetConfig) -> Result<Vec<(String, String)>, NetError> {
        let tool = self.companion("save");
        let text = run_tool(&tool, &mut Command::new(&tool))?;
        let prefix = format!("hb:{}:", c.bridge);
        let mut table = String::new();
        let mut out = Vec::new();
        for line in text.lines() {
            if let Some(t) = line.strip_prefix('*') {
                table = t.to_string();
            } else if line.starts_with("-A ")
                && comment_of(line).is_some_and(|t| t.starts_with(&prefix))
            {
                out.push((table.clone(), line.to_string()));
            }
        }
        Ok(out)
    }

    /// Container ids that own rules of this bridge.
    pub fn rule_owners(&self, c: &NetConfig) -> Result<Vec<String>, NetError> {
        let prefix = format!("hb:{}:", c.bridge);
        let mut ids: Vec<String> = self
            .our_rules(c)?
            .iter()
            .filter_map(|(_, l)| Some(comment_of(l)?.strip_prefix(&prefix)?.to_string()))
            .collect();
        ids.sort();
        ids.dedup();
        Ok(ids)
    }

    /// Deletes the container's rules and its port record. Tolerates rules already gone. The
    /// exact rules are rebuilt from the record and deleted in one `iptables-restore`; only if
    /// that fails (some already gone, or no record) are the tables listed and searched.
    pub fn remove_port_rules(&self, c: &NetConfig, id: &str) -> Result<(), NetError> {
        if let Some((ip, ports)) = read_record(c, id) {
            if self.restore(&port_rules('D', c, id, ip, &ports)).is_ok() {
                return remove_record(c, id);
            }
        }
        let tag = format!("hb:{}:{id}", c.bridge);
        let rules: Vec<(String, String)> = self
            .our_rules(c)?
            .into_iter()
            .filter(|(_, l)| comment_of(l).as_deref() == Some(tag.as_str()))
            .collect();
        if !rules.is_empty() {
            let mut input = String::new();
            for table in ["nat", "filter"] {
                input.push_str(&format!("*{table}\n"));
                for (_, l) in rules.iter().filter(|(t, _)| t == table) {
                    input.push_str(&format!("-D {}\n", &l[3..]));
                }
                input.push_str("COMMIT\n");
            }
            if self.restore(&input).is_err() {
                // One vanished meanwhile (another cleanup): delete one by one, ignoring misses.
                for (table, l) in &rules {
                    let mut args = vec!["-t".to_string(), table.clone(), "-D".to_string()];
                    args.extend(split_rule(&l[3..]));
                    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
                    let _ = self.run(&refs);
                }
            }
        }
        remove_record(c, id)
    }
}

/// The `iptables-restore` input adding (`op` 'A') or deleting ('D') a container's port rules.
fn port_rules(op: char, c: &NetConfig, id: &str, ip: Ipv4Addr, ports: &[PortMapping]) -> String {
    let tag = format!("hb:{}:{id}", c.bridge);
    let mut nat = String::from("*nat\n");
    let mut filter = String::from("*filter\n");
    for p in ports {
        let proto = p.protocol.as_str();
        let dst = match p.host_ip.filter(|h| !h.is_unspecified()) {
            Some(h) => format!("-d {h}/32 "),
            None => String::new(),
        };
        for chain in ["PREROUTING", "OUTPUT"] {
            nat.push_str(&format!(
                "-{op} {chain} {dst}-p {proto} -m addrtype --dst-type LOCAL -m {proto} --dport {} -m comment --comment \"{tag}\" -j DNAT --to-destination {ip}:{}\n",
                p.host_port, p.container_port
            ));
        }
        filter.push_str(&format!(
            "-{op} FORWARD -d {ip}/32 -o {} -p {proto} -m {proto} --dport {} -m comment --comment \"{tag}\" -j ACCEPT\n",
            c.bridge, p.container_port
        ));
    }
    nat.push_str("COMMIT\n");
    filter.push_str("COMMIT\n");
    nat + &filter
}

fn record_path(c: &NetConfig, id: &str) -> std::path::PathBuf {
    c.state_dir.join("ports").join(id)
}

/// `<state_dir>/ports/<id>`: the container's address, then its published ports, one spec a
/// line (atomic write).
fn write_record(
    c: &NetConfig,
    id: &str,
    ip: Ipv4Addr,
    ports: &[PortMapping],
) -> Result<(), NetError> {
    let dir = c.state_dir.join("ports");
    let tmp = dir.join(format!(".{id}.tmp"));
    let text: String = std::iter::once(format!("{ip}\n"))
        .chain(ports.iter().map(|p| p.to_spec() + "\n"))
        .collect();
    std::fs::write(&tmp, text)
        .map_err(|e| NetError::os(format!("writing port record {}", tmp.display()), e))?;
    std::fs::rename(&tmp, record_path(c, id))
        .map_err(|e| NetError::os(format!("committing the port record of {id}"), e))
}

/// The record's address and ports, when it exists and parses.
fn read_record(c: &NetConfig, id: &str) -> Option<(Ipv4Addr, Vec<PortMapping>)> {
    let text = std::fs::read_to_string(record_path(c, id)).ok()?;
    let mut lines = text.lines();
    let ip = lines.next()?.parse().ok()?;
    let ports = lines
        .map(parse_port_mapping)
        .collect::<Result<Vec<_>, _>>()
        .ok()?;
    Some((ip, ports))
}

/// Whether the container has published ports recorded (release runs iptables only then).
pub fn has_record(c: &NetConfig, id: &str) -> bool {
    record_path(c, id).exists()
}

/// Ids with a port record.
pub fn recorded(c: &NetConfig) -> Vec<String> {
    std::fs::read_dir(c.state_dir.join("ports"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default()
}

fn remove_record(c: &NetConfig, id: &str) -> Result<(), NetError> {
    match std::fs::remove_file(record_path(c, id)) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::os(format!("removing the port record of {id}"), e)),
    }
}

/// The `--comment` value of a saved rule.
fn comment_of(line: &str) -> Option<String> {
    let parts = split_rule(line);
    let i = parts.iter().position(|p| p == "--comment")?;
    parts.get(i + 1).cloned()
}

/// Splits an `iptables -S` rule into arguments (quoted comments stay one argument).
pub(crate) fn split_rule(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for ch in s.chars() {
        match ch {
            '"' => quoted = !quoted,
            ' ' if !quoted => {
                if !cur.is_empty() {
                    out.push(std::mem::take(&mut cur));
                }
            }
            _ => cur.push(ch),
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_port_forms() {
        let p = parse_port_mapping("8080:80").unwrap();
        assert_eq!(
            (p.host_port, p.container_port, p.protocol),
            (8080, 80, Protocol::Tcp)
        );
        let p = parse_port_mapping("127.0.0.1:8080:80/udp").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!(p.protocol, Protocol::Udp);
        assert_eq!(p.to_spec(), "127.0.0.1:8080:80/udp");
        let p = parse_port_mapping("80").unwrap();
        assert_eq!(p.host_port, 0);
        let p = parse_port_mapping("127.0.0.1::80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        for bad in [
            "",
            "x",
            "80/sctp",
            "1:2:3:4",
            "70000:80",
            "8080:0",
            "bad.ip:1:2",
        ] {
            assert!(parse_port_mapping(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rules_split_with_quoted_comments() {
        assert_eq!(
            split_rule("OUTPUT -p tcp -m comment --comment \"hb:x:1\" -j DNAT"),
            vec![
                "OUTPUT",
                "-p",
                "tcp",
                "-m",
                "comment",
                "--comment",
                "hb:x:1",
                "-j",
                "DNAT"
            ]
        );
    }

    #[test]
    fn a_reserved_port_cannot_be_taken_twice() {
        let mut r = PortReservations::default();
        let got = r
            .reserve("a", &[parse_port_mapping("127.0.0.1::80").unwrap()])
            .unwrap();
        let port = got[0].host_port;
        assert_ne!(port, 0);
        let again = parse_port_mapping(&format!("127.0.0.1:{port}:80")).unwrap();
        let err = r.reserve("b", std::slice::from_ref(&again)).unwrap_err();
        assert!(err.to_string().contains("already in use"), "{err}");
        r.release("a");
        assert!(r.reserve("b", &[again]).is_ok());
    }
}
