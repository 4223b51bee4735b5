//! Tests against the real kernel (root): a test bridge and subnet of their own per test.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::*;

static N: AtomicU32 = AtomicU32::new(0);

fn root() -> bool {
    // SAFETY: geteuid has no preconditions.
    let r = unsafe { libc::geteuid() } == 0;
    if !r {
        eprintln!("skipping: needs root");
    }
    r
}

/// A Networks on a bridge of its own, removed (with its rules) on drop.
struct TestNet {
    nets: Networks,
    _dir: tempfile::TempDir,
}

impl TestNet {
    fn new() -> TestNet {
        let n = N.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id() % 10_000;
        let dir = tempfile::tempdir().unwrap();
        let config = NetConfig::new(
            &format!("hbt{pid}n{n}"),
            &format!("10.{}.{}.0/24", 150 + pid % 40, n),
            dir.path().join("run"),
            dir.path().join("state"),
        )
        .unwrap();
        TestNet {
            nets: Networks::open(config).unwrap(),
            _dir: dir,
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        if let Err(e) = self.nets.remove_bridge() {
            eprintln!("removing test bridge {}: {e}", self.nets.config.bridge);
        }
    }
}

/// Whether the host link disappears within 3 s (namespace teardown takes the veth with it in
/// the background).
fn link_goes_away(name: &str) -> bool {
    let p = Path::new("/sys/class/net").join(name);
    for _ in 0..300 {
        if !p.exists() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    false
}

fn owners(n: &Networks) -> Vec<String> {
    ports::Firewall::detect()
        .unwrap()
        .rule_owners(&n.config)
        .unwrap()
}

fn iptables_save() -> String {
    let tool = format!("{}-save", ports::Firewall::detect().unwrap().iptables);
    let out = Command::new(tool).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn links_in(ns: &Path) -> String {
    ns::in_netns(ns, || {
        Command::new("ip")
            .args(["-o", "addr"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    })
    .unwrap()
}

#[test]
fn netns_has_only_loopback_up() {
    if !root() {
        return;
    }
    let t = TestNet::new();
    let ns = t.nets.create_netns("c1").unwrap();
    assert!(ns.exists());
    let links = ns::in_netns(&ns, || {
        Command::new("ip")
            .args(["-o", "link"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    })
    .unwrap();
    assert_eq!(links.lines().count(), 1, "{links}");
    assert!(links.contains("lo:") && links.contains("UP"), "{links}");
    ns::delete(&ns).unwrap();
    assert!(!ns.exists());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&ns.display().to_string()));
}

#[test]
fn remove_bridge_takes_the_base_rules() {
    if !root() {
        return;
    }
    let t = TestNet::new();
    let ns = t.nets.create_netns("base1").unwrap();
    t.nets.attach_bridge(&ns, "base1", &[]).unwrap();
    let tag = format!("\"hb:{}\"", t.nets.config.bridge);
    assert!(iptables_save().contains(&tag));
    t.nets.remove_bridge().unwrap();
    assert!(!iptables_save().contains(&tag));
    assert!(!Path::new("/sys/class/net")
        .join(&t.nets.config.bridge)
        .exists());
    assert!(!ns.exists());
}

#[test]
fn bridge_attach_publish_release() {
    if !root() {
        return;
    }
    let t = TestNet::new();
    let id = "aaaabbbbccccdddd0000";
    let ns = t.nets.create_netns(id).unwrap();
    let free = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mapping = parse_port_mapping(&format!("127.0.0.1:{free}:8000")).unwrap();
    let att = t
        .nets
        .attach_bridge(&ns, id, std::slice::from_ref(&mapping))
        .unwrap();
    assert_eq!(att.ports, vec![format!("127.0.0.1:{free}:8000/tcp")]);
    let addrs = links_in(&ns);
    assert!(addrs.contains(&format!("inet {}/", att.ip)), "{addrs}");
    let routes = ns::in_netns(&ns, || {
        Command::new("ip")
            .args(["-o", "route"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default()
    })
    .unwrap();
    assert!(
        routes.contains(&format!("default via {} dev eth0", att.gateway)),
        "{routes}"
    );
    let master = std::fs::read_link(format!("/sys/class/net/{}/master", att.host_veth)).unwrap();
    assert!(master.ends_with(&t.nets.config.bridge), "{master:?}");
    assert_eq!(owners(&t.nets), vec![id.to_string()]);
    // The gateway answers from inside.
    let gw = att.gateway.to_string();
    let ping = ns::in_netns(&ns, move || {
        Command::new("busybox")
            .args(["ping", "-c", "1", "-W", "2", &gw])
            .status()
            .map(|s| s.success())
    })
    .unwrap();
    assert!(ping.unwrap_or(false), "ping gateway failed");
    // A server in the namespace is reachable through the published port from the host.
    let server = ns::in_netns(&ns, || TcpListener::bind("0.0.0.0:8000").unwrap()).unwrap();
    let accept = std::thread::spawn(move || {
        let (mut s, _) = server.accept().unwrap();
        s.write_all(b"pong").unwrap();
    });
    let mut c = TcpStream::connect_timeout(
        &format!("127.0.0.1:{free}").parse().unwrap(),
        Duration::from_secs(5),
    )
    .unwrap();
    let mut buf = String::new();
    c.read_to_string(&mut buf).unwrap();
    assert_eq!(buf, "pong");
    accept.join().unwrap();
    // An open connection would keep the namespace (and so the veth) alive after release.
    drop(c);
    // A second container cannot take the port.
    let ns2 = t.nets.create_netns("other").unwrap();
    let err = t.nets.attach_bridge(&ns2, "other", &[mapping]).unwrap_err();
    assert!(err.to_string().contains("already in use"), "{err}");
    // Release removes the veth, the rules, the lease and the netns.
    t.nets.release(id, &ns).unwrap();
    assert!(link_goes_away(&att.host_veth), "{} stayed", att.host_veth);
    assert!(!ns.exists());
    assert!(owners(&t.nets).is_empty());
    let saved = iptables_save();
    assert!(!saved.contains(id), "{saved}");
    assert!(!t.nets.config.state_dir.join("ports").join(id).exists());
    assert!(ipam::leased(&t.nets.config).iter().all(|l| l != id));
}

#[test]
fn cleanup_after_a_crash_removes_everything() {
    if !root() {
        return;
    }
    let t = TestNet::new();
    let ns = t.nets.create_netns("crashed1").unwrap();
    let att = t
        .nets
        .attach_bridge(
            &ns,
            "crashed1",
            &[parse_port_mapping("127.0.0.1::80").unwrap()],
        )
        .unwrap();
    let keep = t.nets.create_netns("alive1").unwrap();
    // A new Networks (the monitor restarted) knows nothing in memory.
    let config = t.nets.config.clone();
    let fresh = Networks::open(config).unwrap();
    let cleaned = fresh.cleanup_stale(&["alive1".to_string()]).unwrap();
    assert!(cleaned.contains(&"crashed1".to_string()), "{cleaned:?}");
    assert!(!ns.exists());
    assert!(keep.exists());
    assert!(link_goes_away(&att.host_veth), "{} stayed", att.host_veth);
    assert!(owners(&fresh).is_empty());
    assert!(!iptables_save().contains("crashed1"));
    assert!(ipam::leased(&fresh.config).is_empty());
}

#[test]
fn leases_are_lowest_free_and_stable() {
    let dir = tempfile::tempdir().unwrap();
    let c = NetConfig::new(
        "hbx",
        "10.9.8.0/29",
        dir.path().join("r"),
        dir.path().join("s"),
    )
    .unwrap();
    std::fs::create_dir_all(dir.path().join("s/leases")).unwrap();
    let a = ipam::lease(&c, "a").unwrap();
    let b = ipam::lease(&c, "b").unwrap();
    assert_eq!(a.to_string(), "10.9.8.2");
    assert_eq!(b.to_string(), "10.9.8.3");
    assert_eq!(ipam::lease(&c, "a").unwrap(), a);
    ipam::release(&c, "a").unwrap();
    assert_eq!(ipam::lease(&c, "c").unwrap(), a);
    for x in ["d", "e", "f"] {
        ipam::lease(&c, x).unwrap();
    }
    assert!(matches!(ipam::lease(&c, "g"), Err(NetError::Exhausted(_))));
}

#[test]
fn veth_names_fit_and_differ() {
    let a = veth_name("hbt1234n5", "peer-a");
    let b = veth_name("hbt1234n5", "peer-b");
    assert!(a.len() <= 15 && b.len() <= 15, "{a} {b}");
    assert_ne!(a, b);
    assert_eq!(veth_name("hb0", "abc"), "hb0vabc");
    let long = "0123456789abcdef0123456789abcdef";
    assert_eq!(veth_name("hb0", long).len(), 15);
    assert_ne!(
        veth_name("hb0", long),
        veth_name("hb0", "0123456789abcdef0123456789abcdee")
    );
}

#[test]
fn config_is_checked() {
    let p = std::path::PathBuf::from("/tmp");
    assert!(NetConfig::new("", "10.0.0.0/16", p.clone(), p.clone()).is_err());
    assert!(NetConfig::new("way-too-long-name", "10.0.0.0/16", p.clone(), p.clone()).is_err());
    assert!(NetConfig::new("hb0", "10.0.0.0/30", p.clone(), p.clone()).is_err());
    assert!(NetConfig::new("hb0", "nonsense", p.clone(), p.clone()).is_err());
    let c = NetConfig::new("hb0", "10.89.3.7/16", p.clone(), p).unwrap();
    assert_eq!(c.subnet.to_string(), "10.89.0.0");
    assert_eq!(c.gateway().to_string(), "10.89.0.1");
}

#[test]
fn resolv_conf_drops_loopback_servers() {
    let dir = tempfile::tempdir().unwrap();
    let c = NetConfig::new(
        "hbx",
        "10.9.8.0/24",
        dir.path().join("r"),
        dir.path().join("s"),
    )
    .unwrap();
    let n = Networks::open(c).unwrap();
    let r = n.resolv_conf(false);
    assert!(!r.contains("nameserver 127."), "{r}");
    assert!(r.contains("nameserver"), "{r}");
}

#[test]
fn a_port_taken_by_a_host_process_fails_clearly_and_leaves_nothing() {
    if !root() {
        return;
    }
    let t = TestNet::new();
    let held = TcpListener::bind("0.0.0.0:0").unwrap();
    let port = held.local_addr().unwrap().port();
    let ns = t.nets.create_netns("taken1").unwrap();
    let err = t
        .nets
        .attach_bridge(
            &ns,
            "taken1",
            &[parse_port_mapping(&format!("{port}:80")).unwrap()],
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("bind 0.0.0.0:{port}: address already in use (port is taken on the host)")
    );
    assert!(ipam::leased(&t.nets.config).is_empty());
    assert!(!Path::new("/sys/class/net")
        .join(veth_name(&t.nets.config.bridge, "taken1"))
        .exists());
    // A container without ports on the same namespace file still attaches, and release is
    // idempotent.
    let att = t.nets.attach_bridge(&ns, "taken1", &[]).unwrap();
    assert!(att.ports.is_empty());
    t.nets.release("taken1", &ns).unwrap();
    t.nets.release("taken1", &ns).unwrap();
    assert!(!ns.exists());
}

#[test]
fn two_containers_on_one_bridge_reach_each_other() {
    if !root() {
        return;
    }
    let t = TestNet::new();
    let a = t.nets.create_netns("peer-a").unwrap();
    let b = t.nets.create_netns("peer-b").unwrap();
    let att_a = t.nets.attach_bridge(&a, "peer-a", &[]).unwrap();
    let att_b = t.nets.attach_bridge(&b, "peer-b", &[]).unwrap();
    assert_ne!(att_a.ip, att_b.ip);
    let target = att_b.ip.to_string();
    let ok = ns::in_netns(&a, move || {
        Command::new("busybox")
            .args(["ping", "-c", "1", "-W", "2", &target])
            .output()
            .map(|o| o.status.success())
    })
    .unwrap();
    if !ok.unwrap_or(false) {
        let br = Command::new("ip")
            .args(["-o", "link", "show", "master", &t.nets.config.bridge])
            .output()
            .unwrap();
        panic!(
            "ping {} from peer-a failed\nA: {}\nB: {}\nbridge: {}",
            att_b.ip,
            links_in(&a),
            links_in(&b),
            String::from_utf8_lossy(&br.stdout)
        );
    }
    t.nets.release("peer-a", &a).unwrap();
    t.nets.release("peer-b", &b).unwrap();
}

#[test]
fn udp_port_is_published_and_host_port_zero_is_chosen() {
    if !root() {
        return;
    }
    let t = TestNet::new();
    let ns = t.nets.create_netns("udp1").unwrap();
    let att = t
        .nets
        .attach_bridge(
            &ns,
            "udp1",
            &[parse_port_mapping("127.0.0.1::5353/udp").unwrap()],
        )
        .unwrap();
    let chosen = att.mappings[0].host_port;
    assert_ne!(chosen, 0);
    assert_eq!(att.ports, vec![format!("127.0.0.1:{chosen}:5353/udp")]);
    let server = ns::in_netns(&ns, || std::net::UdpSocket::bind("0.0.0.0:5353").unwrap()).unwrap();
    let echo = std::thread::spawn(move || {
        server
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 16];
        let (n, from) = server.recv_from(&mut buf).unwrap();
        server.send_to(&buf[..n], from).unwrap();
    });
    let client = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    client
        .send_to(b"hello", format!("127.0.0.1:{chosen}"))
        .unwrap();
    let mut buf = [0u8; 16];
    let (n, _) = client.recv_from(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"hello");
    echo.join().unwrap();
    t.nets.release("udp1", &ns).unwrap();
    assert!(!iptables_save().contains("udp1"));
}

/// Runs `f` on a thread that joined the namespace held by `fd`.
fn in_held<T: Send + 'static>(
    fd: &std::os::fd::OwnedFd,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    ns::on_thread_in(fd.try_clone().unwrap(), "(test)".into(), move || Ok(f())).unwrap()
}

#[test]
fn a_held_netns_is_untouched_until_a_socket_or_a_packet_shows_use() {
    if !root() {
        return;
    }
    use std::os::fd::AsFd;
    let t = TestNet::new();
    let untouched = |fd: &std::os::fd::OwnedFd| t.nets.held_netns_untouched(fd.as_fd()).unwrap();

    let fd = t.nets.create_held_netns().unwrap();
    assert!(untouched(&fd), "a new namespace");

    // An open socket (here a listener a process could have handed out) is use; once closed,
    // with no packet sent, nothing of it is left.
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
    let holder = {
        let fd = fd.try_clone().unwrap();
        std::thread::spawn(move || {
            in_held(&fd, move || {
                let l = TcpListener::bind("127.0.0.1:0").unwrap();
                ready_tx.send(()).unwrap();
                rx.recv().unwrap();
                drop(l);
            })
        })
    };
    ready_rx.recv().unwrap();
    assert!(!untouched(&fd), "a listening socket is open in it");
    tx.send(()).unwrap();
    holder.join().unwrap();
    // A TCP listener is freed after an RCU grace period (SOCK_RCU_FREE), and only then leaves
    // the namespace's `sockets: used`: under load that lags the close by milliseconds.
    let closed = std::time::Instant::now();
    while !untouched(&fd) && closed.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(untouched(&fd), "the listener is closed and no packet moved");

    // One datagram over lo marks it used for good.
    in_held(&fd, || {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        s.send_to(b"x", s.local_addr().unwrap()).unwrap();
    });
    assert!(!untouched(&fd), "a packet went over lo");

    // A TCP connection leaves TIME_WAIT behind as well as packets.
    let fd = t.nets.create_held_netns().unwrap();
    in_held(&fd, || {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (s, _) = l.accept().unwrap();
        drop(c);
        drop(s);
    });
    assert!(!untouched(&fd), "a TCP connection was made in it");
}
