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

fn iptables(args: &[&str]) -> Result<String, NetError> {
    run_tool(
        &format!("iptables {}", args.join(" ")),
        Command::new("iptables").arg("-w").args(args),
    )
}

/// Adds a rule unless it is there (`-C` first).
fn ensure_rule(table: &str, chain: &str, rule: &[&str]) -> Result<(), NetError> {
    let mut check = vec!["-t", table, "-C", chain];
    check.extend_from_slice(rule);
    if iptables(&check).is_ok() {
        return Ok(());
    }
    let mut add = vec!["-t", table, "-I", chain];
    add.extend_from_slice(rule);
    iptables(&add).map(|_| ())
}

/// NAT out of the subnet, NAT for host-originated connections to published ports, forwarding.
pub fn ensure_base_rules(c: &NetConfig) -> Result<(), NetError> {
    let subnet = format!("{}/{}", c.subnet, c.prefix);
    let tag = format!("hb:{}", c.bridge);
    let b = c.bridge.as_str();
    ensure_rule(
        "nat",
        "POSTROUTING",
        &[
            "-s",
            &subnet,
            "!",
            "-o",
            b,
            "-j",
            "MASQUERADE",
            "-m",
            "comment",
            "--comment",
            &tag,
        ],
    )?;
    ensure_rule(
        "nat",
        "POSTROUTING",
        &[
            "-o",
            b,
            "-m",
            "addrtype",
            "--src-type",
            "LOCAL",
            "-j",
            "MASQUERADE",
            "-m",
            "comment",
            "--comment",
            &tag,
        ],
    )?;
    ensure_rule(
        "filter",
        "FORWARD",
        &["-i", b, "-j", "ACCEPT", "-m", "comment", "--comment", &tag],
    )?;
    ensure_rule(
        "filter",
        "FORWARD",
        &["-o", b, "-j", "ACCEPT", "-m", "comment", "--comment", &tag],
    )?;
    Ok(())
}

/// DNAT rules for a container's published ports.
pub fn add_port_rules(
    c: &NetConfig,
    id: &str,
    ip: Ipv4Addr,
    ports: &[PortMapping],
) -> Result<(), NetError> {
    let tag = format!("hb:{}:{id}", c.bridge);
    for p in ports {
        let dport = p.host_port.to_string();
        let to = format!("{ip}:{}", p.container_port);
        for chain in ["PREROUTING", "OUTPUT"] {
            let mut rule: Vec<&str> = vec!["-t", "nat", "-A", chain, "-p", p.protocol.as_str()];
            let host_ip;
            if let Some(hip) = p.host_ip.filter(|h| !h.is_unspecified()) {
                host_ip = hip.to_string();
                rule.extend_from_slice(&["-d", &host_ip]);
            }
            rule.extend_from_slice(&[
                "-m",
                "addrtype",
                "--dst-type",
                "LOCAL",
                "--dport",
                &dport,
                "-j",
                "DNAT",
                "--to-destination",
                &to,
                "-m",
                "comment",
                "--comment",
                &tag,
            ]);
            iptables(&rule)?;
        }
    }
    Ok(())
}

/// Rules of ours in the nat table as `-S` lines.
fn our_rules(c: &NetConfig) -> Result<Vec<String>, NetError> {
    let prefix = format!("hb:{}:", c.bridge);
    Ok(iptables(&["-t", "nat", "-S"])?
        .lines()
        .filter(|l| l.contains(&prefix))
        .map(str::to_string)
        .collect())
}

/// Container ids that own nat rules of this bridge.
pub fn rule_owners(c: &NetConfig) -> Result<Vec<String>, NetError> {
    let prefix = format!("hb:{}:", c.bridge);
    let mut ids: Vec<String> = our_rules(c)
        .unwrap_or_default()
        .iter()
        .filter_map(|l| {
            let i = l.find(&prefix)? + prefix.len();
            let id: String = l[i..]
                .chars()
                .take_while(|ch| ch.is_ascii_alphanumeric() || *ch == '-')
                .collect();
            (!id.is_empty()).then_some(id)
        })
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Deletes the container's nat rules.
pub fn remove_port_rules(c: &NetConfig, id: &str) -> Result<(), NetError> {
    if !std::path::Path::new("/usr/sbin/iptables").exists()
        && !std::path::Path::new("/sbin/iptables").exists()
    {
        return Ok(());
    }
    let tag = format!("hb:{}:{id}", c.bridge);
    let Ok(rules) = our_rules(c) else {
        return Ok(());
    };
    for line in rules.iter().filter(|l| l.contains(&tag)) {
        let Some(rest) = line.strip_prefix("-A ") else {
            continue;
        };
        let mut args = vec!["-t".to_string(), "nat".to_string(), "-D".to_string()];
        args.extend(split_rule(rest));
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        iptables(&refs)?;
    }
    Ok(())
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

/// For tests: the same splitting as rule deletion uses.
#[cfg(test)]
pub(crate) fn tests_split(s: &str) -> Vec<String> {
    split_rule(s)
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
