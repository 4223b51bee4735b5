//! Small fd-level helpers for the monitor's poll loop: pipes, pty window sizes, non-blocking
//! mode, and reads/writes that tell "would block" from "closed". (A container's pty is
//! allocated inside the container by hb-spawn, which hands back its master.)

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A pipe: `(read end, write end)`, both close-on-exec.
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid array of two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: pipe2 returned two fresh fds we now own.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Sets a pty's window size.
pub fn resize(master: &OwnedFd, rows: u16, cols: u16) -> io::Result<()> {
    let ws = libc::winsize {
        ws_row: if rows == 0 { 24 } else { rows },
        ws_col: if cols == 0 { 80 } else { cols },
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a winsize struct we own.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Opens /dev/null for reading (a container's stdin without `-i`).
pub fn dev_null() -> io::Result<OwnedFd> {
    let f = std::fs::File::open("/dev/null")?;
    Ok(OwnedFd::from(f))
}

/// Sets O_NONBLOCK on an fd.
pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a valid fd.
    let flags = unsafe { libc::fcntl(raw, libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a non-blocking read or write did.
pub enum Transfer {
    /// This many bytes moved.
    Bytes(usize),
    /// Nothing now; try when poll says so.
    WouldBlock,
    /// End of stream (read) or the other side is gone (EPIPE, EIO from a pty, reset).
    Closed,
}

/// Non-blocking read.
pub fn read(fd: RawFd, buf: &mut [u8]) -> Transfer {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n > 0 {
            return Transfer::Bytes(n as usize);
        }
        if n == 0 {
            return Transfer::Closed;
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Transfer::WouldBlock,
            _ => return Transfer::Closed,
        }
    }
}

/// Non-blocking write; SIGPIPE is ignored by the monitor, so a gone reader is `Closed`.
pub fn write(fd: RawFd, buf: &[u8]) -> Transfer {
    loop {
        // SAFETY: buf is valid for buf.len() bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n >= 0 {
            return Transfer::Bytes(n as usize);
        }
        match io::Error::last_os_error().raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Transfer::WouldBlock,
            _ => return Transfer::Closed,
        }
    }
}
