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
        let _ = self.nets.cleanup_stale(&[]);
        let b = self.nets.config.bridge.clone();
        let tag = format!("hb:{b}");
        if let Ok(out) = Command::new("iptables-save").output() {
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            let mut table = "filter".to_string();
            for line in text.lines() {
                if let Some(t) = line.strip_prefix('*') {
                    table = t.to_string();
                }
                if line.contains(&tag) {
                    if let Some(rest) = line.strip_prefix("-A ") {
                        let mut args =
                            vec!["-w".to_string(), "-t".into(), table.clone(), "-D".into()];
                        args.extend(ports::tests_split(rest));
                        let _ = Command::new("iptables").args(&args).output();
                    }
                }
            }
        }
        let _ = Command::new("ip").args(["link", "del", &b]).output();
    }
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
fn bridge_attach_publish_release() {
    if !root() {
        return;
    }
    let mut t = TestNet::new();
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
    // A second container cannot take the port.
    let ns2 = t.nets.create_netns("other").unwrap();
    let err = t.nets.attach_bridge(&ns2, "other", &[mapping]).unwrap_err();
    assert!(err.to_string().contains("already in use"), "{err}");
    // Release removes the veth, the rules, the lease and the netns.
    t.nets.release(id, &ns).unwrap();
    assert!(!Path::new("/sys/class/net").join(&att.host_veth).exists());
    assert!(!ns.exists());
    assert!(ports::rule_owners(&t.nets.config).unwrap().is_empty());
    assert!(ipam::leased(&t.nets.config).iter().all(|l| l != id));
}

#[test]
fn cleanup_after_a_crash_removes_everything() {
    if !root() {
        return;
    }
    let mut t = TestNet::new();
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
    let mut fresh = Networks::open(config).unwrap();
    let cleaned = fresh.cleanup_stale(&["alive1".to_string()]).unwrap();
    assert!(cleaned.contains(&"crashed1".to_string()), "{cleaned:?}");
    assert!(!ns.exists());
    assert!(keep.exists());
    assert!(!Path::new("/sys/class/net").join(&att.host_veth).exists());
    assert!(ports::rule_owners(&fresh.config).unwrap().is_empty());
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
