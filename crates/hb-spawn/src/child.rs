//! The forked child's side of a start: everything is prepared by the parent as C strings and
//! file descriptors in a [`Plan`], so the child does only system calls (no allocation, no
//! locks) between fork and exec. A failure is written to the error pipe as a fixed-size record
//! (`step`, `errno`, `index`) that the parent turns into a message; exec closes the pipe
//! (close-on-exec), which is how the parent learns of success.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// Which step failed (the parent words the message).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// Joining the cgroup.
    Cgroup = 1,
    /// unshare(CLONE_NEWCGROUP).
    CgroupNs,
    /// setns into the network namespace.
    NetNs,
    /// Bringing lo up.
    Loopback,
    /// sethostname.
    Hostname,
    /// Making / private.
    Private,
    /// The overlay mount.
    Overlay,
    /// A system mount (index into the plan's list).
    SystemMount,
    /// A user mount destination escapes or cannot be made (index).
    MountTarget,
    /// A user mount (index).
    UserMount,
    /// pivot_root.
    PivotRoot,
    /// Masking or read-only paths.
    Mask,
    /// Read-only rootfs.
    ReadOnly,
    /// The working directory.
    Cwd,
    /// setgroups/setgid/setuid.
    User,
    /// Capabilities.
    Caps,
    /// no_new_privs.
    NoNewPrivs,
    /// seccomp.
    Seccomp,
    /// Executable not found (exit 127).
    NotFound,
    /// Not executable (exit 126).
    NotExecutable,
    /// exec failed otherwise.
    Exec,
    /// setns into the container (exec).
    JoinNs,
    /// fork.
    Fork,
    /// Controlling terminal.
    Tty,
}

impl Step {
    pub(crate) fn from_u32(v: u32) -> Option<Step> {
        use Step::*;
        [
            Cgroup,
            CgroupNs,
            NetNs,
            Loopback,
            Hostname,
            Private,
            Overlay,
            SystemMount,
            MountTarget,
            UserMount,
            PivotRoot,
            Mask,
            ReadOnly,
            Cwd,
            User,
            Caps,
            NoNewPrivs,
            Seccomp,
            NotFound,
            NotExecutable,
            Exec,
            JoinNs,
            Fork,
            Tty,
        ]
        .into_iter()
        .find(|s| *s as u32 == v)
    }
}

/// One mount(2) call.
pub struct MountCall {
    pub source: Option<CString>,
    pub target: CString,
    pub fstype: Option<CString>,
    pub flags: libc::c_ulong,
    pub data: Option<CString>,
    /// Create the target first: 0 no, 1 directory, 2 file.
    pub make: u8,
    /// Remount read-only after (bind mounts).
    pub readonly_remount: bool,
}

/// A user mount: its destination's path prefixes (to check for symlinks) and the call.
pub struct UserMount {
    pub prefixes: Vec<CString>,
    pub call: MountCall,
}

/// What a `volatile` overlay mount needs besides its options.
pub struct VolatileOverlay {
    /// `<work dir>/work/incompat/volatile` and the `dirty` file in it.
    pub marker: CString,
    pub marker_file: CString,
    /// The overlay's options without `volatile` (None for a layered overlay).
    pub plain_data: Option<CString>,
}

/// An overlay with too many layers for one page of mount options, mounted with the new mount
/// API one `lowerdir+` at a time (Linux 6.8+).
pub struct LayeredOverlay {
    pub lowers: Vec<CString>,
    pub upper: CString,
    pub work: CString,
    /// Set overlayfs's `volatile` flag.
    pub volatile: bool,
}

/// The process's terminal: allocated by the child itself, from the devpts mounted at /dev/pts
/// in its mount namespace (the container's own instance), so that the slave's name
/// (`/dev/pts/N`) resolves inside the container.
pub struct TerminalPlan {
    /// Window size set before anything runs on it.
    pub size: libc::winsize,
    /// The child's end of a unix socket pair: the master goes back to the parent over it
    /// (SCM_RIGHTS), the OCI runtimes' "console socket".
    pub socket: RawFd,
}

/// Where terminal setup failed: the failure record's index with [`Step::Tty`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum TtyStep {
    /// setsid (an exec'd process leads its own session).
    Session = 0,
    /// Opening /dev/pts/ptmx.
    OpenPtmx,
    /// Unlocking the new pty (TIOCSPTLCK).
    Unlock,
    /// Setting its window size.
    WindowSize,
    /// Opening its slave (TIOCGPTPEER).
    OpenSlave,
    /// Making the slave the controlling terminal.
    ControllingTerminal,
    /// Handing the slave to the process's user.
    Chown,
    /// Making the slave fds 0, 1 and 2.
    Stdio,
    /// Creating the /dev/console mount point.
    ConsoleFile,
    /// Bind-mounting the slave on /dev/console.
    ConsoleMount,
    /// Sending the master to the parent.
    SendMaster,
}

impl TtyStep {
    /// What was being done, for the parent's message.
    pub fn describe(index: u32) -> &'static str {
        use TtyStep::*;
        [
            (Session, "starting a session"),
            (OpenPtmx, "opening /dev/pts/ptmx"),
            (Unlock, "unlocking the pty"),
            (WindowSize, "setting its window size"),
            (OpenSlave, "opening its slave"),
            (ControllingTerminal, "making it the controlling terminal"),
            (Chown, "giving it to the process's user"),
            (Stdio, "making it stdin, stdout and stderr"),
            (ConsoleFile, "creating /dev/console"),
            (ConsoleMount, "mounting it on /dev/console"),
            (SendMaster, "passing its master back"),
        ]
        .into_iter()
        .find(|(s, _)| *s as u32 == index)
        .map_or("?", |(_, what)| what)
    }
}

/// Everything the child needs.
pub struct Plan {
    /// The caller's stdio descriptors, made fds 0, 1, 2 (unused with a terminal).
    pub stdio: [RawFd; 3],
    /// Allocate a terminal instead (its slave becomes the stdio).
    pub terminal: Option<TerminalPlan>,
    pub cgroup_procs: Vec<RawFd>,
    pub cgroup_ns: bool,
    pub netns_fd: Option<RawFd>,
    pub new_net: bool,
    pub hostname: CString,
    pub overlay_dir: Option<CString>,
    pub overlay: MountCall,
    /// Set when the options do not fit a page: `overlay` then only names the target.
    pub layered_overlay: Option<LayeredOverlay>,
    /// With a volatile overlay: the marker a previous volatile mount left in the work dir
    /// (removed first, or overlayfs refuses the remount of a restarted container), and the
    /// options without `volatile`, for kernels before 5.10 that do not know it.
    pub volatile: Option<VolatileOverlay>,
    pub system_mounts: Vec<MountCall>,
    pub symlinks: Vec<(CString, CString)>,
    /// Directories under the container's /dev that `--device` nodes need, parents first.
    pub device_dirs: Vec<CString>,
    pub devices: Vec<(CString, libc::mode_t, libc::dev_t)>,
    pub user_mounts: Vec<UserMount>,
    pub merged: CString,
    pub masked: Vec<CString>,
    pub readonly_paths: Vec<CString>,
    pub readonly_rootfs: bool,
    pub cwd_prefixes: Vec<CString>,
    pub cwd: CString,
    pub uid: libc::uid_t,
    pub gid: libc::gid_t,
    pub groups: Vec<libc::gid_t>,
    /// Capability numbers kept in the bounding set.
    pub keep_caps: u64,
    pub last_cap: u32,
    pub no_new_privs: bool,
    pub seccomp: Option<seccompiler::BpfProgram>,
    pub candidates: Vec<CString>,
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// For exec: namespace fds to join (in order), the container's root (for chroot-free join).
    pub join: Vec<(RawFd, libc::c_int)>,
}

/// Writes the failure record and exits.
pub fn fail(err_fd: RawFd, step: Step, errno: i32, index: u32, code: i32) -> ! {
    let mut rec = [0u8; 12];
    rec[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    rec[4..8].copy_from_slice(&errno.to_ne_bytes());
    rec[8..].copy_from_slice(&index.to_ne_bytes());
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(err_fd, rec.as_ptr().cast(), rec.len());
        libc::_exit(code)
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn ptr(c: &Option<CString>) -> *const libc::c_char {
    c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr())
}

/// mount(2) for a planned call, creating the target if asked.
unsafe fn do_mount(m: &MountCall) -> Result<(), i32> {
    if m.make == 1 {
        libc::mkdir(m.target.as_ptr(), 0o755);
    } else if m.make == 2 {
        // Read-only: opening an overlay file for writing would copy it up into the upper dir
        // even when it exists already.
        let fd = libc::open(
            m.target.as_ptr(),
            libc::O_CREAT | libc::O_RDONLY | libc::O_CLOEXEC,
            0o644,
        );
        if fd >= 0 {
            libc::close(fd);
        }
    }
    if libc::mount(
        ptr(&m.source),
        m.target.as_ptr(),
        ptr(&m.fstype),
        m.flags,
        ptr(&m.data).cast(),
    ) != 0
    {
        return Err(errno());
    }
    if m.readonly_remount {
        let flags = libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | (m.flags & libc::MS_REC);
        if libc::mount(
            std::ptr::null(),
            m.target.as_ptr(),
            std::ptr::null(),
            flags,
            std::ptr::null(),
        ) != 0
        {
            return Err(errno());
        }
    }
    Ok(())
}

// Kernel ABI constants of the new mount API (not all in libc).
const FSOPEN_CLOEXEC: libc::c_uint = 1;
const FSCONFIG_SET_FLAG: libc::c_uint = 0;
const FSCONFIG_SET_STRING: libc::c_uint = 1;
const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
const FSMOUNT_CLOEXEC: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 4;

/// fsopen/fsconfig/fsmount/move_mount for an overlay whose options exceed a page.
unsafe fn mount_layered_overlay(o: &LayeredOverlay, target: &CString) -> Result<(), i32> {
    let fs = libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), FSOPEN_CLOEXEC) as RawFd;
    if fs < 0 {
        return Err(errno());
    }
    let set = |key: &std::ffi::CStr, value: &CString| {
        libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        ) == 0
    };
    let configured = o.lowers.iter().all(|l| set(c"lowerdir+", l))
        && set(c"upperdir", &o.upper)
        && set(c"workdir", &o.work)
        && (!o.volatile
            || libc::syscall(
                libc::SYS_fsconfig,
                fs,
                FSCONFIG_SET_FLAG,
                c"volatile".as_ptr(),
                std::ptr::null::<libc::c_char>(),
                0,
            ) == 0)
        && libc::syscall(
            libc::SYS_fsconfig,
            fs,
            FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        ) == 0;
    if !configured {
        let e = errno();
        libc::close(fs);
        return Err(e);
    }
    let mnt = libc::syscall(libc::SYS_fsmount, fs, FSMOUNT_CLOEXEC, 0) as RawFd;
    let e = errno();
    libc::close(fs);
    if mnt < 0 {
        return Err(e);
    }
    let rc = libc::syscall(
        libc::SYS_move_mount,
        mnt,
        c"".as_ptr(),
        libc::AT_FDCWD,
        target.as_ptr(),
        MOVE_MOUNT_F_EMPTY_PATH,
    );
    let e = errno();
    libc::close(mnt);
    if rc != 0 {
        return Err(e);
    }
    Ok(())
}

unsafe fn loopback_up() -> Result<(), i32> {
    let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
    if fd < 0 {
        return Err(errno());
    }
    let mut req: libc::ifreq = std::mem::zeroed();
    req.ifr_name[0] = b'l' as libc::c_char;
    req.ifr_name[1] = b'o' as libc::c_char;
    if libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut req) != 0 {
        libc::close(fd);
        return Err(errno());
    }
    req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    let rc = libc::ioctl(fd, libc::SIOCSIFFLAGS, &req);
    libc::close(fd);
    if rc != 0 {
        return Err(errno());
    }
    Ok(())
}

/// [`fail`] at a step of the terminal's setup.
fn tty_fail(err: RawFd, step: TtyStep, errno: i32) -> ! {
    fail(err, Step::Tty, errno, step as u32, 125)
}

/// `fd` moved to a descriptor above 2 (close-on-exec) if it is one of 0, 1, 2, so that making
/// the slave stdio cannot close it (possible only if the caller's own stdio was closed).
unsafe fn above_stdio(fd: RawFd) -> Result<RawFd, i32> {
    if fd > 2 {
        return Ok(fd);
    }
    let moved = libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3);
    if moved < 0 {
        return Err(errno());
    }
    libc::close(fd);
    Ok(moved)
}

/// Sends `fd` over the unix socket `socket` (SCM_RIGHTS, one byte of payload: a stream or
/// seqpacket socket carries no ancillary data without it). Buffers on the stack only.
pub(crate) unsafe fn send_fd(socket: RawFd, fd: RawFd) -> Result<(), i32> {
    // Room for one cmsghdr and one int, aligned for cmsghdr.
    #[repr(C)]
    union Control {
        buf: [u8; 64],
        _align: libc::cmsghdr,
    }
    let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
    let mut control: Control = std::mem::zeroed();
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: byte.len(),
    };
    let mut msg: libc::msghdr = std::mem::zeroed();
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.buf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let cmsg = libc::CMSG_FIRSTHDR(&msg);
    if cmsg.is_null() || space > std::mem::size_of::<Control>() {
        return Err(libc::EINVAL);
    }
    (*cmsg).cmsg_level = libc::SOL_SOCKET;
    (*cmsg).cmsg_type = libc::SCM_RIGHTS;
    (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
    std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    loop {
        let n = libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL);
        if n == 1 {
            return Ok(());
        }
        if n < 0 && errno() == libc::EINTR {
            continue;
        }
        return Err(if n < 0 { errno() } else { libc::EIO });
    }
}

/// Allocates the process's terminal (see [`TerminalPlan`]): opens the ptmx of the devpts at
/// /dev/pts, unlocks the new pty and sets its size, opens its slave, makes that the controlling
/// terminal and fds 0, 1 and 2 (owned by `uid`, group unchanged, as runc leaves it: the user
/// may then reopen its own terminal), with `console` bind-mounts it on /dev/console, and sends
/// the master to the parent last, so a master only ever arrives fully set up. The caller leads
/// a session with no terminal yet.
unsafe fn setup_terminal(t: &TerminalPlan, uid: libc::uid_t, console: bool, err: RawFd) {
    let master = libc::open(
        c"/dev/pts/ptmx".as_ptr(),
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
    );
    if master < 0 {
        tty_fail(err, TtyStep::OpenPtmx, errno());
    }
    let master = above_stdio(master).unwrap_or_else(|e| tty_fail(err, TtyStep::OpenPtmx, e));
    let unlock: libc::c_int = 0;
    if libc::ioctl(master, libc::TIOCSPTLCK, &unlock) != 0 {
        tty_fail(err, TtyStep::Unlock, errno());
    }
    if libc::ioctl(master, libc::TIOCSWINSZ, &t.size) != 0 {
        tty_fail(err, TtyStep::WindowSize, errno());
    }
    // The slave of exactly this master, without a lookup by name.
    let slave = libc::ioctl(
        master,
        libc::TIOCGPTPEER,
        libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
    );
    if slave < 0 {
        tty_fail(err, TtyStep::OpenSlave, errno());
    }
    let slave = above_stdio(slave).unwrap_or_else(|e| tty_fail(err, TtyStep::OpenSlave, e));
    if libc::ioctl(slave, libc::TIOCSCTTY, 0) != 0 {
        tty_fail(err, TtyStep::ControllingTerminal, errno());
    }
    if uid != 0 && libc::fchown(slave, uid, libc::gid_t::MAX) != 0 {
        tty_fail(err, TtyStep::Chown, errno());
    }
    for fd in 0..3 {
        // dup2 gives the copies no close-on-exec.
        if libc::dup2(slave, fd) < 0 {
            tty_fail(err, TtyStep::Stdio, errno());
        }
    }
    libc::close(slave);
    if console {
        // The fresh /dev tmpfs has no console: a plain file to mount on, then the slave bound
        // over it, named through /proc/self/fd/0 (a fixed path: nothing to format here).
        if libc::mknod(c"/dev/console".as_ptr(), libc::S_IFREG | 0o600, 0) != 0
            && errno() != libc::EEXIST
        {
            tty_fail(err, TtyStep::ConsoleFile, errno());
        }
        if libc::mount(
            c"/proc/self/fd/0".as_ptr(),
            c"/dev/console".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND,
            std::ptr::null(),
        ) != 0
        {
            tty_fail(err, TtyStep::ConsoleMount, errno());
        }
    }
    if let Err(e) = send_fd(t.socket, master) {
        tty_fail(err, TtyStep::SendMaster, e);
    }
    libc::close(master);
    libc::close(t.socket);
}

/// Common start: signals, session, stdio.
unsafe fn reset_process(plan: &Plan, err: RawFd) {
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigemptyset(&mut set);
    libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
    for sig in 1..32 {
        if sig != libc::SIGKILL && sig != libc::SIGSTOP {
            libc::signal(sig, libc::SIG_DFL);
        }
    }
    libc::setsid();
    // A terminal's slave becomes the stdio later, once the container's devpts is reachable.
    if plan.terminal.is_none() {
        for (i, fd) in plan.stdio.iter().enumerate() {
            if *fd != i as RawFd && libc::dup2(*fd, i as RawFd) < 0 {
                fail(err, Step::Exec, errno(), i as u32, 125);
            }
        }
    }
}

/// The end of every start: working dir, identity, capabilities, no_new_privs, seccomp, exec.
unsafe fn become_and_exec(plan: &Plan, err: RawFd) -> ! {
    for p in &plan.cwd_prefixes {
        libc::mkdir(p.as_ptr(), 0o755);
    }
    if libc::chdir(plan.cwd.as_ptr()) != 0 {
        fail(err, Step::Cwd, errno(), 0, 125);
    }
    // Bounding set first (needs CAP_SETPCAP, which root has until setuid).
    for cap in 0..=plan.last_cap {
        if plan.keep_caps & (1u64 << cap) == 0
            && libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) != 0
        {
            fail(err, Step::Caps, errno(), cap, 125);
        }
    }
    // Raw system calls, not glibc's wrappers: those broadcast the change to every thread glibc
    // believes exists (SIGSETXID, then a futex wait), and after a raw clone of a multi-threaded
    // caller (tests) those threads are not in this process, so the wait never ends.
    if libc::syscall(libc::SYS_setgroups, plan.groups.len(), plan.groups.as_ptr()) != 0 {
        fail(err, Step::User, errno(), 0, 125);
    }
    if libc::syscall(libc::SYS_setresgid, plan.gid, plan.gid, plan.gid) != 0 {
        fail(err, Step::User, errno(), 1, 125);
    }
    if libc::syscall(libc::SYS_setresuid, plan.uid, plan.uid, plan.uid) != 0 {
        fail(err, Step::User, errno(), 2, 125);
    }
    // As root the sets become exactly the kept ones; a non-root user's were cleared by setuid
    // (Docker gives non-root users no effective capabilities either).
    if plan.uid == 0 {
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let h = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let lo = plan.keep_caps as u32;
        let hi = (plan.keep_caps >> 32) as u32;
        let d = [
            Data {
                effective: lo,
                permitted: lo,
                inheritable: 0,
            },
            Data {
                effective: hi,
                permitted: hi,
                inheritable: 0,
            },
        ];
        if libc::syscall(libc::SYS_capset, &h as *const Header, d.as_ptr()) != 0 {
            fail(err, Step::Caps, errno(), 64, 125);
        }
    }
    if plan.no_new_privs && libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
        fail(err, Step::NoNewPrivs, errno(), 0, 125);
    }
    if let Some(prog) = &plan.seccomp {
        if crate::seccomp::install(prog).is_err() {
            fail(err, Step::Seccomp, errno(), 0, 125);
        }
    }
    let mut argv: [*const libc::c_char; 256] = [std::ptr::null(); 256];
    for (i, a) in plan.argv.iter().take(255).enumerate() {
        argv[i] = a.as_ptr();
    }
    let mut envp: [*const libc::c_char; 1024] = [std::ptr::null(); 1024];
    for (i, e) in plan.envp.iter().take(1023).enumerate() {
        envp[i] = e.as_ptr();
    }
    let mut denied = false;
    for c in &plan.candidates {
        libc::execve(c.as_ptr(), argv.as_ptr(), envp.as_ptr());
        match errno() {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES | libc::EISDIR => denied = true,
            e => fail(err, Step::Exec, e, 0, 126),
        }
    }
    if denied {
        fail(err, Step::NotExecutable, libc::EACCES, 0, 126);
    }
    fail(err, Step::NotFound, libc::ENOENT, 0, 127)
}

/// The container's first process (pid 1 of its namespace). Never returns.
///
/// # Safety
/// Called right after clone in the child, with `plan` prepared by the parent.
pub unsafe fn container_main(plan: &Plan, err: RawFd) -> ! {
    reset_process(plan, err);
    for (i, fd) in plan.cgroup_procs.iter().enumerate() {
        if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(err, Step::Cgroup, errno(), i as u32, 125);
        }
    }
    if plan.cgroup_ns && libc::unshare(libc::CLONE_NEWCGROUP) != 0 {
        fail(err, Step::CgroupNs, errno(), 0, 125);
    }
    if let Some(fd) = plan.netns_fd {
        if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
            fail(err, Step::NetNs, errno(), 0, 125);
        }
    }
    if plan.new_net {
        if let Err(e) = loopback_up() {
            fail(err, Step::Loopback, e, 0, 125);
        }
    }
    let h = plan.hostname.as_bytes();
    if libc::sethostname(h.as_ptr().cast(), h.len()) != 0 {
        fail(err, Step::Hostname, errno(), 0, 125);
    }
    if libc::mount(
        std::ptr::null(),
        c"/".as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ) != 0
    {
        fail(err, Step::Private, errno(), 0, 125);
    }
    if let Some(d) = &plan.overlay_dir {
        if libc::chdir(d.as_ptr()) != 0 {
            fail(err, Step::Overlay, errno(), 1, 125);
        }
    }
    if let Some(v) = &plan.volatile {
        // Left by this container's previous run; overlayfs refuses to remount over it.
        libc::unlink(v.marker_file.as_ptr());
        libc::rmdir(v.marker.as_ptr());
    }
    let mut overlay = match &plan.layered_overlay {
        Some(o) => mount_layered_overlay(o, &plan.overlay.target),
        None => do_mount(&plan.overlay),
    };
    if let (Err(libc::EINVAL), Some(plain)) = (
        overlay,
        plan.volatile.as_ref().and_then(|v| v.plain_data.as_ref()),
    ) {
        // A kernel before 5.10 has no `volatile`: mount as before.
        overlay = if libc::mount(
            ptr(&plan.overlay.source),
            plan.overlay.target.as_ptr(),
            ptr(&plan.overlay.fstype),
            plan.overlay.flags,
            plain.as_ptr().cast(),
        ) == 0
        {
            Ok(())
        } else {
            Err(errno())
        };
    }
    if let Err(e) = overlay {
        fail(err, Step::Overlay, e, 0, 125);
    }
    for (i, m) in plan.system_mounts.iter().enumerate() {
        if let Err(e) = do_mount(m) {
            fail(err, Step::SystemMount, e, i as u32, 125);
        }
    }
    for d in &plan.device_dirs {
        if libc::mkdir(d.as_ptr(), 0o755) != 0 && errno() != libc::EEXIST {
            fail(err, Step::SystemMount, errno(), 1001, 125);
        }
    }
    for (path, mode, dev) in &plan.devices {
        if libc::mknod(path.as_ptr(), *mode, *dev) != 0 && errno() != libc::EEXIST {
            fail(err, Step::SystemMount, errno(), 1000, 125);
        }
        libc::chmod(path.as_ptr(), *mode & 0o7777);
    }
    for (target, link) in &plan.symlinks {
        libc::symlink(target.as_ptr(), link.as_ptr());
    }
    for (i, um) in plan.user_mounts.iter().enumerate() {
        // Every component of the destination must be a real directory inside the rootfs (a
        // symlink could point the mount anywhere on the host).
        let n = um.prefixes.len();
        for (k, p) in um.prefixes.iter().enumerate() {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::lstat(p.as_ptr(), &mut st) == 0 {
                if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
                    fail(err, Step::MountTarget, libc::ELOOP, i as u32, 125);
                }
            } else if k + 1 < n && libc::mkdir(p.as_ptr(), 0o755) != 0 {
                fail(err, Step::MountTarget, errno(), i as u32, 125);
            }
        }
        if let Err(e) = do_mount(&um.call) {
            fail(err, Step::UserMount, e, i as u32, 125);
        }
    }
    if libc::chdir(plan.merged.as_ptr()) != 0
        || libc::syscall(libc::SYS_pivot_root, c".".as_ptr(), c".".as_ptr()) != 0
    {
        fail(err, Step::PivotRoot, errno(), 0, 125);
    }
    if libc::umount2(c".".as_ptr(), libc::MNT_DETACH) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
        fail(err, Step::PivotRoot, errno(), 1, 125);
    }
    // Now /dev/pts is the container's devpts and /proc its proc: the terminal comes from there,
    // and is the container's console too (before masking, which never touches /dev).
    if let Some(t) = &plan.terminal {
        setup_terminal(t, plan.uid, true, err);
    }
    for (i, p) in plan.masked.iter().enumerate() {
        let mut st: libc::stat = std::mem::zeroed();
        if libc::stat(p.as_ptr(), &mut st) != 0 {
            continue;
        }
        let rc = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            libc::mount(
                c"tmpfs".as_ptr(),
                p.as_ptr(),
                c"tmpfs".as_ptr(),
                libc::MS_RDONLY,
                std::ptr::null(),
            )
        } else {
            libc::mount(
                c"/dev/null".as_ptr(),
                p.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            )
        };
        if rc != 0 {
            fail(err, Step::Mask, errno(), i as u32, 125);
        }
    }
    for (i, p) in plan.readonly_paths.iter().enumerate() {
        if libc::mount(
            p.as_ptr(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            if errno() == libc::ENOENT {
                continue;
            }
            fail(err, Step::Mask, errno(), 100 + i as u32, 125);
        }
        if libc::mount(
            std::ptr::null(),
            p.as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_REC,
            std::ptr::null(),
        ) != 0
        {
            fail(err, Step::Mask, errno(), 100 + i as u32, 125);
        }
    }
    if plan.readonly_rootfs
        && libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            std::ptr::null(),
        ) != 0
    {
        fail(err, Step::ReadOnly, errno(), 0, 125);
    }
    become_and_exec(plan, err)
}

/// `docker exec`'s child: joins the container's namespaces, clones (a pid namespace applies to
/// children) a sibling of itself (CLONE_PARENT: the caller's child), reports its pid on
/// `pid_fd` and exits; the new process execs.
///
/// # Safety
/// Called right after fork in the child.
pub unsafe fn exec_main(plan: &Plan, err: RawFd, pid_fd: RawFd) -> ! {
    reset_process(plan, err);
    for (i, fd) in plan.cgroup_procs.iter().enumerate() {
        if libc::write(*fd, b"0".as_ptr().cast(), 1) != 1 {
            fail(err, Step::Cgroup, errno(), i as u32, 125);
        }
    }
    for (i, (fd, kind)) in plan.join.iter().enumerate() {
        if libc::setns(*fd, *kind) != 0 {
            fail(err, Step::JoinNs, errno(), i as u32, 125);
        }
    }
    // CLONE_PARENT makes the caller (the monitor) the new process's parent, so it can reap it
    // and learn its exit code; a plain fork would leave it to the container's init once we exit
    // (orphans are not reparented across a pid namespace boundary to a subreaper).
    let pid = libc::syscall(
        libc::SYS_clone,
        (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
        0usize,
        0usize,
        0usize,
        0usize,
    ) as libc::pid_t;
    if pid < 0 {
        fail(err, Step::Fork, errno(), 0, 125);
    }
    if pid > 0 {
        let bytes = pid.to_ne_bytes();
        libc::write(pid_fd, bytes.as_ptr().cast(), bytes.len());
        libc::_exit(0);
    }
    if let Some(t) = &plan.terminal {
        // A session of its own, with the terminal as its controlling one. Not the one our
        // parent (the intermediate above) leads: when a session leader with a controlling
        // terminal exits, the kernel hangs the terminal up and SIGHUPs its foreground group,
        // which would be this process.
        if libc::setsid() < 0 {
            tty_fail(err, TtyStep::Session, errno());
        }
        // Joined the container's mount namespace: /dev/pts is its devpts. An exec is not the
        // container's console.
        setup_terminal(t, plan.uid, false, err);
    }
    become_and_exec(plan, err)
}

/// Raw fds of owned fds (the plan borrows them while the parent keeps them open).
pub fn raw(fds: &[OwnedFd]) -> Vec<RawFd> {
    fds.iter().map(|f| f.as_raw_fd()).collect()
}
