//! The caller's side of a terminal allocated inside the container: a unix socket pair made
//! before the clone, over which the child sends the pty master (SCM_RIGHTS) once it has set
//! the terminal up, as OCI runtimes do with their "console socket". The child's side is
//! `child::setup_terminal`.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::SpawnError;

/// A connected pair of unix seqpacket sockets, both close-on-exec: `(ours, the child's)`. The
/// child's end survives the clone (not an exec), so nothing leaks into the container.
pub(crate) fn socket_pair() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is valid for two ints.
    let rc = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return Err(SpawnError::io(
            "creating the socket for the container's terminal",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fresh fds from socketpair, owned from here on.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// The pty master the child sent on `socket`. Called once the process exec'd: the child sends
/// it before exec, so it is waiting in the socket (nothing blocks here).
pub(crate) fn receive_master(socket: &OwnedFd) -> Result<OwnedFd, SpawnError> {
    #[repr(C)]
    union Control {
        buf: [u8; 64],
        _align: libc::cmsghdr,
    }
    let fail =
        |what: &str| SpawnError::setup(format!("receiving the container's terminal: {what}"));
    // SAFETY: all-zero is a valid cmsghdr buffer and msghdr.
    let mut control: Control = unsafe { std::mem::zeroed() };
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    // SAFETY: reading a field of a plain-data union.
    msg.msg_control = unsafe { control.buf.as_mut_ptr() }.cast();
    msg.msg_controllen = std::mem::size_of::<Control>() as _;
    let n = loop {
        // SAFETY: msg points at our iovec and control buffer, valid for their lengths.
        let n = unsafe {
            libc::recvmsg(
                socket.as_raw_fd(),
                &mut msg,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
            continue;
        }
        break n;
    };
    if n < 0 {
        return Err(fail(&std::io::Error::last_os_error().to_string()));
    }
    if n == 0 {
        return Err(fail("the process ended without sending it"));
    }
    // Every descriptor that arrived is owned (and so closed) whatever happens next.
    let mut fds: Vec<OwnedFd> = Vec::new();
    // SAFETY: CMSG_FIRSTHDR/CMSG_NXTHDR walk the control data recvmsg filled in, within
    // msg_controllen; each SCM_RIGHTS payload is a run of ints the kernel installed for us.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(c);
                let len = (*c).cmsg_len as usize - (data as usize - c as usize);
                for i in 0..len / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    fds.push(OwnedFd::from_raw_fd(fd));
                }
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        return Err(fail("its control message was truncated"));
    }
    if fds.len() != 1 {
        return Err(fail(&format!("{} descriptors arrived, not one", fds.len())));
    }
    let master = fds.remove(0);
    // Only a pty master answers TIOCGPTN.
    let mut index: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes one unsigned int into `index`.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut index) } != 0 {
        return Err(fail("what arrived is not a pty master"));
    }
    Ok(master)
}
