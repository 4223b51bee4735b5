//! A minimal synchronous rtnetlink client: the few link, address and route requests a bridge
//! attachment needs (bridge and veth creation, master, up, address, default route, delete),
//! hand-built over a raw `NETLINK_ROUTE` socket. The crates that do this pull in an async
//! runtime or a large type tree; what we send is about a dozen attribute kinds.
//!
//! A socket belongs to the network namespace it was opened in, whatever thread uses it later,
//! so a socket opened once inside a container namespace (see `ns::netlink_in`) configures that
//! namespace from the caller's thread without it ever changing namespace.

use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// Message types and flags (linux/rtnetlink.h, linux/netlink.h).
const NLMSG_ERROR: u16 = 2;
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;
// Attributes (linux/if_link.h, linux/if_addr.h, linux/rtnetlink.h, linux/veth.h).
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 0x8000;

/// Where a request failed: the operation and the kernel's errno.
#[derive(Debug)]
pub struct NetlinkError {
    /// What was asked (`create veth hbv1 ↔ eth0`).
    pub what: String,
    /// The kernel's answer.
    pub source: std::io::Error,
}

impl NetlinkError {
    /// The errno, for callers that tolerate some (EEXIST, ENODEV).
    pub fn errno(&self) -> Option<i32> {
        self.source.raw_os_error()
    }
}

/// A request being built: header, fixed part, attributes (nests patched on close).
struct Message {
    buf: Vec<u8>,
    nests: Vec<usize>,
}

impl Message {
    fn new(kind: u16, flags: u16) -> Message {
        let mut buf = Vec::with_capacity(256);
        buf.extend_from_slice(&0u32.to_ne_bytes()); // length, patched in `finish`
        buf.extend_from_slice(&kind.to_ne_bytes());
        buf.extend_from_slice(&(flags | NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes());
        buf.extend_from_slice(&1u32.to_ne_bytes()); // sequence
        buf.extend_from_slice(&0u32.to_ne_bytes()); // port id: the kernel's
        Message {
            buf,
            nests: Vec::new(),
        }
    }

    fn pad(&mut self) {
        while self.buf.len() & 3 != 0 {
            self.buf.push(0);
        }
    }

    /// `struct ifinfomsg`: family, type, index, flags, change mask.
    fn ifinfo(&mut self, index: i32, flags: u32, change: u32) -> &mut Self {
        self.buf
            .extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
        self.buf.extend_from_slice(&index.to_ne_bytes());
        self.buf.extend_from_slice(&flags.to_ne_bytes());
        self.buf.extend_from_slice(&change.to_ne_bytes());
        self
    }

    fn attr(&mut self, kind: u16, data: &[u8]) -> &mut Self {
        let len = (4 + data.len()) as u16;
        self.buf.extend_from_slice(&len.to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(data);
        self.pad();
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Self {
        let mut v = s.as_bytes().to_vec();
        v.push(0);
        self.attr(kind, &v)
    }

    fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Self {
        self.attr(kind, &v.to_ne_bytes())
    }

    fn begin(&mut self, kind: u16) -> &mut Self {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&0u16.to_ne_bytes());
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end(&mut self) -> &mut Self {
        if let Some(start) = self.nests.pop() {
            self.pad();
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    fn finish(&mut self) -> &[u8] {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        &self.buf
    }
}

/// A `NETLINK_ROUTE` socket bound to the namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
}

/// Parses a MAC (`02:42:0a:00:00:02`) into bytes.
fn mac_bytes(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for b in out.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace.
    pub fn open() -> std::io::Result<Netlink> {
        // SAFETY: socket() returns a new fd or -1.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the fd is new and ours.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: sockaddr_nl is plain data; zero pid lets the kernel pick our port id.
        let rc = unsafe {
            let mut sa: libc::sockaddr_nl = std::mem::zeroed();
            sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_nl).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Netlink { fd })
    }

    /// Sends one request and waits for its acknowledgement; returns any data reply first seen.
    fn request(&self, what: &str, msg: &mut Message) -> Result<Vec<u8>, NetlinkError> {
        let fail = |source: std::io::Error| NetlinkError {
            what: what.to_string(),
            source,
        };
        let bytes = msg.finish();
        // SAFETY: sending our buffer on our socket (to the kernel: no address needed).
        let sent =
            unsafe { libc::send(self.fd.as_raw_fd(), bytes.as_ptr().cast(), bytes.len(), 0) };
        if sent < 0 {
            return Err(fail(std::io::Error::last_os_error()));
        }
        let mut data = Vec::new();
        let mut buf = vec![0u8; 16384];
        loop {
            // SAFETY: receiving into our buffer.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(fail(e));
            }
            let mut at = 0usize;
            let n = n as usize;
            while at + 16 <= n {
                let len =
                    u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]) as usize;
                let kind = u16::from_ne_bytes([buf[at + 4], buf[at + 5]]);
                if len < 16 || at + len > n {
                    return Err(fail(std::io::Error::other("truncated netlink reply")));
                }
                if kind == NLMSG_ERROR {
                    if len < 20 {
                        return Err(fail(std::io::Error::other("short netlink error")));
                    }
                    let code = i32::from_ne_bytes([
                        buf[at + 16],
                        buf[at + 17],
                        buf[at + 18],
                        buf[at + 19],
                    ]);
                    if code == 0 {
                        return Ok(data);
                    }
                    return Err(fail(std::io::Error::from_raw_os_error(-code)));
                }
                if data.is_empty() {
                    data = buf[at + 16..at + len].to_vec();
                }
                at += (len + 3) & !3;
            }
        }
    }

    /// Index of the link named `name` in this socket's namespace.
    pub fn link_index(&self, name: &str) -> Result<i32, NetlinkError> {
        let mut m = Message::new(RTM_GETLINK, 0);
        m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
        let reply = self.request(&format!("looking up link {name}"), &mut m)?;
        if reply.len() < 16 {
            return Err(NetlinkError {
                what: format!("looking up link {name}"),
                source: std::io::Error::other("no link in the reply"),
            });
        }
        Ok(i32::from_ne_bytes([reply[4], reply[5], reply[6], reply[7]]))
    }

    /// Creates a bridge, up.
    pub fn add_bridge(&self, name: &str) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfo(0, libc::IFF_UP as u32, libc::IFF_UP as u32)
            .attr_str(IFLA_IFNAME, name)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end();
        self.request(&format!("creating bridge {name}"), &mut m)
            .map(drop)
    }

    /// Creates a veth pair: `host` here, up and enslaved to `master`; `peer` (with `mac`)
    /// directly in the namespace open at `peer_ns`, down until configured there.
    pub fn add_veth(
        &self,
        host: &str,
        master: i32,
        peer: &str,
        mac: &str,
        peer_ns: &impl AsRawFd,
    ) -> Result<(), NetlinkError> {
        let what = format!("creating veth {host} <-> {peer}");
        let mac = mac_bytes(mac).ok_or_else(|| NetlinkError {
            what: what.clone(),
            source: std::io::Error::other(format!("bad MAC {mac}")),
        })?;
        let mut m = Message::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL);
        m.ifinfo(0, libc::IFF_UP as u32, libc::IFF_UP as u32)
            .attr_str(IFLA_IFNAME, host)
            .attr_u32(IFLA_MASTER, master as u32)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin(IFLA_INFO_DATA)
            .begin(VETH_INFO_PEER)
            .ifinfo(0, 0, 0)
            .attr_str(IFLA_IFNAME, peer)
            .attr(IFLA_ADDRESS, &mac)
            .attr_u32(IFLA_NET_NS_FD, peer_ns.as_raw_fd() as u32)
            .end()
            .end()
            .end();
        self.request(&what, &mut m).map(drop)
    }

    /// Sets a link up.
    pub fn set_up(&self, index: i32) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWLINK, 0);
        m.ifinfo(index, libc::IFF_UP as u32, libc::IFF_UP as u32);
        self.request(&format!("setting link {index} up"), &mut m)
            .map(drop)
    }

    /// Sets the link named `name` down.
    pub fn set_down_by_name(&self, name: &str) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWLINK, 0);
        m.ifinfo(0, 0, libc::IFF_UP as u32)
            .attr_str(IFLA_IFNAME, name);
        self.request(&format!("setting link {name} down"), &mut m)
            .map(drop)
    }

    /// Deletes the link named `name`.
    pub fn del_link(&self, name: &str) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_DELLINK, 0);
        m.ifinfo(0, 0, 0).attr_str(IFLA_IFNAME, name);
        self.request(&format!("deleting link {name}"), &mut m)
            .map(drop)
    }

    /// Adds `ip/prefix` (with its broadcast address) to link `index`.
    pub fn add_addr(&self, index: i32, ip: Ipv4Addr, prefix: u8) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL);
        m.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, 0 /* universe */]);
        m.buf.extend_from_slice(&(index as u32).to_ne_bytes());
        let host_mask = if prefix >= 32 { 0 } else { u32::MAX >> prefix };
        let brd = Ipv4Addr::from(u32::from(ip) | host_mask);
        m.attr(IFA_LOCAL, &ip.octets())
            .attr(IFA_ADDRESS, &ip.octets())
            .attr(IFA_BROADCAST, &brd.octets());
        self.request(&format!("adding {ip}/{prefix} to link {index}"), &mut m)
            .map(drop)
    }

    /// Adds the default route via `gateway` in the main table.
    pub fn add_default_route(&self, gateway: Ipv4Addr) -> Result<(), NetlinkError> {
        let mut m = Message::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL);
        // struct rtmsg: family, dst_len, src_len, tos, table main, proto boot, scope
        // universe, type unicast; flags.
        m.buf
            .extend_from_slice(&[libc::AF_INET as u8, 0, 0, 0, 254, 3, 0, 1]);
        m.buf.extend_from_slice(&0u32.to_ne_bytes());
        m.attr(RTA_GATEWAY, &gateway.octets());
        self.request(&format!("adding default route via {gateway}"), &mut m)
            .map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_are_sized_and_aligned() {
        let mut m = Message::new(RTM_NEWLINK, 0);
        m.ifinfo(0, 0, 0)
            .begin(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end();
        let b = m.finish().to_vec();
        assert_eq!(b.len() % 4, 0);
        assert_eq!(
            u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize,
            b.len()
        );
        // The nest: 4 header + 4 + "veth\0" (5) padded to 8 = 16.
        let nest = 16 + 16;
        assert_eq!(u16::from_ne_bytes([b[nest], b[nest + 1]]), 16);
        assert_eq!(
            u16::from_ne_bytes([b[nest + 2], b[nest + 3]]),
            IFLA_LINKINFO | NLA_F_NESTED
        );
    }

    #[test]
    fn macs_parse() {
        assert_eq!(mac_bytes("02:42:0a:00:00:02"), Some([2, 0x42, 10, 0, 0, 2]));
        assert_eq!(mac_bytes("02:42"), None);
        assert_eq!(mac_bytes("02:42:0a:00:00:02:03"), None);
    }
}
