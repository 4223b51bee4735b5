//! Persistent network namespaces: created by a short-lived thread that unshares its network
//! namespace, brings `lo` up and bind-mounts `/proc/thread-self/ns/net` onto a file, so the
//! namespace lives without any process in it. The caller's threads never change namespace.
//!
//! Mount propagation: the bind mount lives in the caller's mount namespace, which is where the
//! spawner opens the file to `setns()`, so it sticks whatever the propagation of `run_dir`.
//! `run_dir` is deliberately not turned into a mount point of its own (as `ip netns` does with
//! a shared `/run/netns`): that would leave a mount behind every test's temporary dir. Copies
//! of these mounts that a container's new mount namespace inherits go away when the spawner
//! detaches the old root after `pivot_root`; until then they keep that namespace alive (the
//! veth with it, set down by release), which is harmless. A daemon that wants the files visible
//! in other mount namespaces can make `run_dir/ns` a shared mount itself.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::path::Path;

use crate::NetError;

fn cstr(p: &Path) -> Result<CString, NetError> {
    CString::new(p.as_os_str().as_encoded_bytes())
        .map_err(|_| NetError::Config(format!("path {} has a NUL byte", p.display())))
}

/// Runs `f` on a short-lived thread that joins the namespace behind `fd` (`shown` names it in
/// errors). The caller's threads never change namespace; what `f` opens there (a socket)
/// stays bound to it.
pub(crate) fn on_thread_in<T: Send + 'static>(
    fd: std::os::fd::OwnedFd,
    shown: String,
    f: impl FnOnce() -> Result<T, NetError> + Send + 'static,
) -> Result<T, NetError> {
    std::thread::spawn(move || {
        // SAFETY: setns on this thread only, which ends right after, with an fd it owns.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(NetError::os(
                format!("joining netns {shown}"),
                std::io::Error::last_os_error(),
            ));
        }
        f()
    })
    .join()
    .map_err(|_| NetError::Config("netns thread panicked".into()))?
}

/// Opens the namespace file at `netns`.
fn open_netns(netns: &Path) -> Result<std::fs::File, NetError> {
    std::fs::File::open(netns)
        .map_err(|e| NetError::os(format!("opening netns {}", netns.display()), e))
}

/// Runs `f` on a fresh thread that has joined the namespace at `netns` (tests look inside).
#[cfg(test)]
pub fn in_netns<T: Send + 'static>(
    netns: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let fd = open_netns(netns)?.into();
    on_thread_in(fd, netns.display().to_string(), move || Ok(f()))
}

/// A netlink socket inside the namespace at `netns` (opened on a short-lived thread that joins
/// it; the socket stays bound to that namespace), plus the namespace file, kept open.
pub fn netlink_in(netns: &Path) -> Result<(crate::netlink::Netlink, std::fs::File), NetError> {
    let file = open_netns(netns)?;
    let fd = file
        .try_clone()
        .map_err(|e| NetError::os(format!("duplicating netns fd {}", netns.display()), e))?;
    let shown = netns.display().to_string();
    let sock = on_thread_in(fd.into(), shown.clone(), move || {
        crate::netlink::Netlink::open()
            .map_err(|e| NetError::os(format!("netlink socket in {shown}"), e))
    })?;
    Ok((sock, file))
}

/// Brings `lo` up in the calling thread's network namespace.
fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket for the interface ioctls; closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: ifreq is plain data; the name fits.
    let result = unsafe {
        let mut req: libc::ifreq = std::mem::zeroed();
        for (i, b) in b"lo\0".iter().enumerate() {
            req.ifr_name[i] = *b as libc::c_char;
        }
        if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
            Err(std::io::Error::last_os_error())
        } else {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            if libc::ioctl(fd, libc::SIOCSIFFLAGS, &req) != 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        }
    };
    // SAFETY: closing the socket we opened.
    unsafe { libc::close(fd) };
    result
}

/// Creates the namespace file at `path` (replacing a stale one).
pub fn create(path: &Path) -> Result<(), NetError> {
    let _ = delete(path);
    std::fs::File::create(path)
        .map_err(|e| NetError::os(format!("creating {}", path.display()), e))?;
    let target = cstr(path)?;
    let shown = path.display().to_string();
    let made = std::thread::spawn(move || -> Result<(), NetError> {
        // SAFETY: unshare affects only this thread, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(NetError::os(
                "unshare(CLONE_NEWNET)",
                std::io::Error::last_os_error(),
            ));
        }
        loopback_up().map_err(|e| NetError::os("bringing lo up", e))?;
        let src = c"/proc/thread-self/ns/net";
        // SAFETY: bind mount between two valid C strings.
        let rc = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            return Err(NetError::os(
                format!("bind-mounting the netns onto {shown}"),
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    })
    .join()
    .map_err(|_| NetError::Config("netns thread panicked".into()))?;
    if made.is_err() {
        let _ = std::fs::remove_file(path);
    }
    made
}

/// A new namespace with only `lo` up, held by the returned descriptor alone: no file, no
/// bind mount, nothing to unmount; it goes when the descriptor and every process in it do.
pub fn create_held() -> Result<std::os::fd::OwnedFd, NetError> {
    std::thread::spawn(move || -> Result<std::os::fd::OwnedFd, NetError> {
        // SAFETY: unshare affects only this thread, which ends right after.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(NetError::os(
                "unshare(CLONE_NEWNET)",
                std::io::Error::last_os_error(),
            ));
        }
        loopback_up().map_err(|e| NetError::os("bringing lo up", e))?;
        std::fs::File::open("/proc/thread-self/ns/net")
            .map(std::os::fd::OwnedFd::from)
            .map_err(|e| NetError::os("opening the new netns", e))
    })
    .join()
    .map_err(|_| NetError::Config("netns thread panicked".into()))?
}

/// Whether the namespace behind `fd` is as [`create_held`] made it: no socket open in it, no
/// TCP socket waiting in TIME_WAIT, and `lo` its only device, with no packet ever sent or
/// received. A namespace that passes holds nothing of whoever used it, provided they could
/// not change its settings (the caller's part: no CAP_NET_ADMIN or CAP_SYS_ADMIN, and no
/// writable path to `/proc/sys/net`), so it can serve the next `--network none` container.
pub fn is_untouched(fd: std::os::fd::BorrowedFd<'_>) -> Result<bool, NetError> {
    let fd = fd
        .try_clone_to_owned()
        .map_err(|e| NetError::os("duplicating a netns fd", e))?;
    on_thread_in(fd, "(held)".into(), || {
        let read = |name: &str| {
            let path = format!("/proc/thread-self/net/{name}");
            std::fs::read_to_string(&path).map_err(|e| NetError::os(format!("reading {path}"), e))
        };
        Ok(sockstat_is_empty(&read("sockstat")?) && only_silent_loopback(&read("dev")?))
    })
}

/// `/proc/net/sockstat` of a namespace with no socket (of any family) and no TIME_WAIT.
fn sockstat_is_empty(text: &str) -> bool {
    let field = |line: &str, key: &str| -> Option<u64> {
        let mut words = line.split_whitespace();
        words.find(|w| *w == key)?;
        words.next()?.parse().ok()
    };
    let used = text
        .lines()
        .find(|l| l.starts_with("sockets:"))
        .and_then(|l| field(l, "used"));
    let tw = text
        .lines()
        .find(|l| l.starts_with("TCP:"))
        .and_then(|l| field(l, "tw"));
    used == Some(0) && tw == Some(0)
}

/// `/proc/net/dev` listing `lo` alone, with zero packets each way.
fn only_silent_loopback(text: &str) -> bool {
    let devices: Vec<&str> = text.lines().skip(2).collect();
    let [lo] = devices.as_slice() else {
        return false;
    };
    let Some(("lo", counters)) = lo.split_once(':').map(|(n, c)| (n.trim(), c)) else {
        return false;
    };
    let counters: Vec<&str> = counters.split_whitespace().collect();
    // Receive: bytes packets ...(8 fields); transmit: bytes packets ...
    counters.len() == 16 && counters[1] == "0" && counters[9] == "0"
}

/// Unmounts and removes a namespace file. Idempotent.
pub fn delete(path: &Path) -> Result<(), NetError> {
    if !path.exists() {
        return Ok(());
    }
    let c = cstr(path)?;
    // SAFETY: umount2 of a path; MNT_DETACH so a busy namespace does not fail the release.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(NetError::os(format!("removing {}", path.display()), e)),
    }
}

#[cfg(test)]
mod parse_tests {
    use super::{only_silent_loopback, sockstat_is_empty};

    const DEV_HEAD: &str = "Inter-|   Receive  |  Transmit\n face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n";

    #[test]
    fn sockstat_needs_no_socket_and_no_time_wait() {
        let s = |used: u32, tw: u32| {
            format!("sockets: used {used}\nTCP: inuse 0 orphan 0 tw {tw} alloc 0 mem 0\nUDP: inuse 0 mem 0\n")
        };
        assert!(sockstat_is_empty(&s(0, 0)));
        assert!(!sockstat_is_empty(&s(1, 0)));
        assert!(!sockstat_is_empty(&s(0, 2)));
        assert!(
            !sockstat_is_empty("sockets: used 0\n"),
            "no TCP line: unknown"
        );
        assert!(!sockstat_is_empty(""));
    }

    #[test]
    fn dev_needs_lo_alone_and_silent() {
        let lo = |rx: u32, tx: u32| {
            format!("    lo:       0       {rx}    0    0    0     0          0         0        0       {tx}    0    0    0     0       0          0\n")
        };
        assert!(only_silent_loopback(&format!("{DEV_HEAD}{}", lo(0, 0))));
        assert!(!only_silent_loopback(&format!("{DEV_HEAD}{}", lo(3, 0))));
        assert!(!only_silent_loopback(&format!("{DEV_HEAD}{}", lo(0, 3))));
        let dummy = lo(0, 0).replace("lo:", "d0:");
        assert!(
            !only_silent_loopback(&format!("{DEV_HEAD}{}{dummy}", lo(0, 0))),
            "another device"
        );
        assert!(
            !only_silent_loopback(&format!("{DEV_HEAD}{dummy}")),
            "not lo"
        );
        assert!(!only_silent_loopback(DEV_HEAD));
    }
}
