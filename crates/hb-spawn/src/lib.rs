//! `hb-spawn`: turns a [`ContainerSpec`] into an isolated running process with Docker's default
//! isolation: mount, pid, ipc, uts, network and cgroup namespaces; an overlay rootfs with /proc,
//! a minimal /dev, /dev/pts, /dev/shm, /dev/mqueue, read-only /sys and /sys/fs/cgroup;
//! pivot_root; Docker's
//! masked and read-only paths; its default capabilities, no_new_privs and seccomp profile; the
//! image's user, environment and working directory; cgroup limits (v1 or v2).
//!
//! It is called from a single-threaded process (the monitor): [`Spawner::spawn`] forks with
//! `clone`, and the child only makes system calls prepared by the parent (`child.rs`), so a
//! start costs little more than the kernel work. Failures before exec come back as errors
//! carrying Docker's exit code (127 not found, 126 not executable, 125 otherwise). A process
//! with a TTY allocates its pty itself in the container's devpts and sends the master back
//! ([`Stdio::Terminal`]).

#![warn(missing_docs)]

mod cgroup;
mod child;
mod console;
mod devfilter;
pub mod seccomp;
mod spec;
mod user;

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub use cgroup::{remove_parent_if_empty, remove_stale_cgroups, Cgroup, CgroupStats};
pub use spec::{
    ContainerSpec, DeviceSpec, MountSpec, NetworkMode, ProcessSpec, Resources, RootfsSpec,
};
pub use user::ResolvedUser;

use child::{
    LayeredOverlay, MountCall, Plan, Step, TerminalPlan, TtyStep, UserMount, VolatileOverlay,
};

/// Docker's exit-code class of a failed start.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpawnErrorKind {
    /// The command was not found (127).
    CommandNotFound,
    /// It exists but cannot be executed (126).
    NotExecutable,
    /// Anything else (125).
    Other,
}

/// A start that failed, worded for the user.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SpawnError {
    kind: SpawnErrorKind,
    message: String,
}

impl SpawnError {
    pub(crate) fn setup(message: impl Into<String>) -> SpawnError {
        SpawnError {
            kind: SpawnErrorKind::Other,
            message: message.into(),
        }
    }
    pub(crate) fn user(message: impl Into<String>) -> SpawnError {
        Self::setup(message)
    }
    pub(crate) fn io(what: impl Into<String>, e: std::io::Error) -> SpawnError {
        Self::setup(format!("{}: {e}", what.into()))
    }
    /// Its class.
    pub fn kind(&self) -> SpawnErrorKind {
        self.kind
    }
    /// Docker's exit code for it.
    pub fn exit_code(&self) -> i32 {
        match self.kind {
            SpawnErrorKind::CommandNotFound => 127,
            SpawnErrorKind::NotExecutable => 126,
            SpawnErrorKind::Other => 125,
        }
    }
}

/// A process's stdio.
pub enum Stdio {
    /// Descriptors the caller made (pipe ends, /dev/null): they become fds 0, 1 and 2. For a
    /// process without [`ProcessSpec::tty`].
    Fds {
        /// stdin.
        stdin: OwnedFd,
        /// stdout.
        stdout: OwnedFd,
        /// stderr.
        stderr: OwnedFd,
    },
    /// A terminal of this size, for a process with [`ProcessSpec::tty`]. The process allocates
    /// it itself from the container's own devpts (a pty made on the host would have no name
    /// inside: `tty` would say "not a tty"), as runc and crun do: its slave becomes fds 0, 1
    /// and 2 and the controlling terminal, and for a container also /dev/console. Its master
    /// comes back to the caller in [`Spawned::terminal`] or [`ExecProcess::terminal`].
    Terminal(WindowSize),
}

/// A terminal's size in character cells.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WindowSize {
    /// Rows (0: 24).
    pub rows: u16,
    /// Columns (0: 80).
    pub cols: u16,
}

impl WindowSize {
    fn winsize(self) -> libc::winsize {
        libc::winsize {
            ws_row: if self.rows == 0 { 24 } else { self.rows },
            ws_col: if self.cols == 0 { 80 } else { self.cols },
            ws_xpixel: 0,
            ws_ypixel: 0,
        }
    }
}

/// A started container.
#[derive(Debug)]
pub struct Spawned {
    /// Host pid of its first process (the caller reaps it).
    pub pid: i32,
    /// Its cgroup.
    pub cgroup: Cgroup,
    /// With [`Stdio::Terminal`], its pty master (close-on-exec, blocking): the caller takes it
    /// to read output, write input and set the window size; reads fail with EIO once every
    /// process holding the terminal is gone.
    pub terminal: Option<OwnedFd>,
}

/// A process started in a running container by [`Spawner::exec`].
#[derive(Debug)]
pub struct ExecProcess {
    /// Its host pid (the caller's child: the caller reaps it).
    pub pid: i32,
    /// With [`Stdio::Terminal`], its pty master, as [`Spawned::terminal`].
    pub terminal: Option<OwnedFd>,
}

/// Docker's default capability set.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

/// Capability names in kernel order (bit n is `CAPABILITIES[n]`).
pub const CAPABILITIES: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// Longest overlay option string mount(2) accepts (one page, with its NUL).
const PAGE_OPTIONS: usize = 4095;

/// Docker's masked paths.
const MASKED: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];
/// Docker's read-only paths.
const READONLY: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

fn cstr(s: impl AsRef<[u8]>) -> Result<CString, SpawnError> {
    CString::new(s.as_ref().to_vec())
        .map_err(|_| SpawnError::setup("a path or argument contains a NUL byte"))
}

fn cpath(p: &Path) -> Result<CString, SpawnError> {
    use std::os::unix::ffi::OsStrExt;
    cstr(p.as_os_str().as_bytes())
}

/// `root` joined with an absolute container path.
fn inside(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

/// Prepared once per monitor: capability numbers, cgroup layout, compiled seccomp programs.
pub struct Spawner {
    last_cap: u32,
    /// Our own permitted set: "all capabilities" for a privileged container means these (root
    /// here may lack some, e.g. CAP_SYS_RESOURCE, and capset cannot grant more).
    own_caps: u64,
    /// Docker's masked paths plus this host's per-CPU thermal_throttle directories (as moby).
    masked: Vec<CString>,
    cgroup_ns: bool,
    seccomp: RefCell<HashMap<Vec<String>, seccompiler::BpfProgram>>,
}

impl Spawner {
    /// Reads what every start needs from the host.
    pub fn new() -> Result<Spawner, SpawnError> {
        cgroup::layout()?;
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(40u32)
            .min(63);
        let s = Spawner {
            last_cap,
            own_caps: own_permitted_caps()?,
            masked: masked_paths()?,
            cgroup_ns: Path::new("/proc/self/ns/cgroup").exists(),
            seccomp: RefCell::new(HashMap::new()),
        };
        // The common case compiled up front.
        let default: Vec<String> = DEFAULT_CAPABILITIES.iter().map(|c| c.to_string()).collect();
        s.seccomp_for(&default)?;
        Ok(s)
    }

    fn seccomp_for(&self, caps: &[String]) -> Result<seccompiler::BpfProgram, SpawnError> {
        let mut key: Vec<String> = caps.to_vec();
        key.sort();
        if let Some(p) = self.seccomp.borrow().get(&key) {
            return Ok(p.clone());
        }
        let prog = seccomp::docker_default(&key)
            .map_err(|e| SpawnError::setup(format!("seccomp: {e}")))?;
        self.seccomp.borrow_mut().insert(key, prog.clone());
        Ok(prog)
    }

    fn cap_mask(&self, spec: &ContainerSpec) -> Result<u64, SpawnError> {
        if spec.privileged {
            return Ok(self.own_caps);
        }
        let mut mask = 0u64;
        for c in &spec.capabilities {
            let up = c.to_ascii_uppercase();
            let name = if up.starts_with("CAP_") {
                up
            } else {
                format!("CAP_{up}")
            };
            let n = CAPABILITIES
                .iter()
                .position(|x| *x == name)
                .ok_or_else(|| SpawnError::setup(format!("unknown capability {c:?}")))?;
            if n as u32 <= self.last_cap {
                mask |= 1u64 << n;
            }
        }
        Ok(mask)
    }

    /// Builds the process half of a plan (identity, caps, seccomp, argv, env, cwd).
    fn process_plan(
        &self,
        spec: &ContainerSpec,
        process: &ProcessSpec,
        root_for_cwd: &Path,
    ) -> Result<Plan, SpawnError> {
        if process.args.is_empty() {
            return Err(SpawnError::setup("no command specified"));
        }
        let user = user::resolve(&spec.rootfs, &process.user)?;
        let mut env: Vec<String> = process.env.clone();
        let has = |env: &[String], k: &str| env.iter().any(|e| e.split('=').next() == Some(k));
        if !has(&env, "PATH") {
            env.push(format!("PATH={}", user::DEFAULT_PATH));
        }
        if !has(&env, "HOSTNAME") {
            env.push(format!("HOSTNAME={}", spec.hostname));
        }
        if !has(&env, "HOME") {
            env.push(format!("HOME={}", user.home));
        }
        if process.tty && !has(&env, "TERM") {
            env.push("TERM=xterm".into());
        }
        let candidates = user::exec_candidates(&process.args[0], &env);
        let cwd = if process.cwd.is_empty() {
            "/".to_string()
        } else {
            process.cwd.clone()
        };
        let keep_caps = self.cap_mask(spec)?;
        let seccomp = if spec.seccomp && !spec.privileged {
            let names: Vec<String> = (0..=self.last_cap)
                .filter(|c| keep_caps & (1u64 << c) != 0)
                .filter_map(|c| CAPABILITIES.get(c as usize).map(|s| s.to_string()))
                .collect();
            Some(self.seccomp_for(&names)?)
        } else {
            None
        };
        Ok(Plan {
            stdio: [0, 1, 2],
            terminal: None,
            cgroup_procs: Vec::new(),
            cgroup_ns: false,
            netns_fd: None,
            new_net: false,
            hostname: cstr(&spec.hostname)?,
            overlay_dir: None,
            overlay: MountCall {
                source: None,
                target: cstr("/")?,
                fstype: None,
                flags: 0,
                data: None,
                make: 0,
                readonly_remount: false,
            },
            layered_overlay: None,
            volatile: None,
            system_mounts: Vec::new(),
            symlinks: Vec::new(),
            device_dirs: Vec::new(),
            devices: Vec::new(),
            user_mounts: Vec::new(),
            merged: cstr("/")?,
            masked: Vec::new(),
            readonly_paths: Vec::new(),
            readonly_rootfs: false,
            cwd_prefixes: user::prefixes(root_for_cwd, &cwd)
                .iter()
                .map(|p| cpath(p))
                .collect::<Result<_, _>>()?,
            cwd: cstr(&cwd)?,
            uid: user.uid,
            gid: user.gid,
            groups: user.groups.clone(),
            keep_caps,
            last_cap: self.last_cap,
            no_new_privs: spec.no_new_privileges,
            seccomp,
            candidates: candidates.iter().map(cstr).collect::<Result<_, _>>()?,
            argv: process.args.iter().map(cstr).collect::<Result<_, _>>()?,
            envp: env.iter().map(cstr).collect::<Result<_, _>>()?,
            join: Vec::new(),
        })
    }

    fn mount_plan(&self, spec: &ContainerSpec, plan: &mut Plan) -> Result<(), SpawnError> {
        let r = &spec.rootfs;
        let merged = &r.merged_dir;
        // Lower dirs usually share one parent (the layer store): mount from there with relative
        // names so many layers still fit overlay's one-page option string.
        let common = r
            .lower_dirs
            .first()
            .and_then(|p| p.parent())
            .filter(|parent| r.lower_dirs.iter().all(|l| l.parent() == Some(*parent)));
        let lowers: Vec<String> = match common {
            Some(_) => r
                .lower_dirs
                .iter()
                .map(|l| {
                    l.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                })
                .collect(),
            None => r
                .lower_dirs
                .iter()
                .map(|l| l.display().to_string())
                .collect(),
        };
        if lowers.is_empty() {
            return Err(SpawnError::setup("the image has no layers"));
        }
        let plain = format!(
            "lowerdir={},upperdir={},workdir={}",
            lowers.join(":"),
            r.upper_dir.display(),
            r.work_dir.display()
        );
        let data = if r.volatile {
            format!("{plain},volatile")
        } else {
            plain.clone()
        };
        let marker_dir = r.work_dir.join("work/incompat/volatile");
        let marker_file = cpath(&marker_dir.join("dirty"))?;
        let marker = cpath(&marker_dir)?;
        // mount(2) copies at most one page of options; past that (about 60 layers with
        // 64-hex names) the new mount API takes the layers one by one.
        if data.len() >= PAGE_OPTIONS {
            plan.volatile = r.volatile.then_some(VolatileOverlay {
                marker,
                marker_file,
                plain_data: None,
            });
            plan.layered_overlay = Some(LayeredOverlay {
                lowers: r
                    .lower_dirs
                    .iter()
                    .map(|l| cpath(l))
                    .collect::<Result<_, _>>()?,
                upper: cpath(&r.upper_dir)?,
                work: cpath(&r.work_dir)?,
                volatile: r.volatile,
            });
            plan.overlay = MountCall {
                source: None,
                target: cpath(merged)?,
                fstype: None,
                flags: 0,
                data: None,
                make: 0,
                readonly_remount: false,
            };
        } else {
            if r.volatile {
                plan.volatile = Some(VolatileOverlay {
                    marker,
                    marker_file,
                    plain_data: Some(cstr(plain)?),
                });
            }
            plan.overlay_dir = common.map(cpath).transpose()?;
            plan.overlay = MountCall {
                source: Some(cstr("overlay")?),
                target: cpath(merged)?,
                fstype: Some(cstr("overlay")?),
                flags: 0,
                data: Some(cstr(data)?),
                make: 0,
                readonly_remount: false,
            };
        }
        let m = |p: &str| cpath(&inside(merged, p));
        let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
        let mut sys = vec![
            MountCall {
                source: Some(cstr("proc")?),
                target: m("/proc")?,
                fstype: Some(cstr("proc")?),
                flags: nosuid_nodev_noexec,
                data: None,
                make: 1,
                readonly_remount: false,
            },
            MountCall {
                source: Some(cstr("tmpfs")?),
                target: m("/dev")?,
                fstype: Some(cstr("tmpfs")?),
                flags: libc::MS_NOSUID | libc::MS_STRICTATIME,
                data: Some(cstr("mode=755,size=65536k")?),
                make: 1,
                readonly_remount: false,
            },
            MountCall {
                source: Some(cstr("devpts")?),
                target: m("/dev/pts")?,
                fstype: Some(cstr("devpts")?),
                flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                data: Some(cstr("newinstance,ptmxmode=0666,mode=0620,gid=5")?),
                make: 1,
                readonly_remount: false,
            },
            MountCall {
                source: Some(cstr("shm")?),
                target: m("/dev/shm")?,
                fstype: Some(cstr("tmpfs")?),
                flags: nosuid_nodev_noexec,
                data: Some(cstr("mode=1777,size=65536k")?),
                make: 1,
                readonly_remount: false,
            },
            MountCall {
                source: Some(cstr("mqueue")?),
                target: m("/dev/mqueue")?,
                fstype: Some(cstr("mqueue")?),
                flags: nosuid_nodev_noexec,
                data: None,
                make: 1,
                readonly_remount: false,
            },
        ];
        if matches!(spec.network, NetworkMode::Host) {
            // sysfs can only be mounted by the owner of the network namespace: bind the host's.
            sys.push(MountCall {
                source: Some(cstr("/sys")?),
                target: m("/sys")?,
                fstype: None,
                flags: libc::MS_BIND | libc::MS_REC,
                data: None,
                make: 1,
                readonly_remount: !spec.privileged,
            });
        } else {
            let ro = if spec.privileged { 0 } else { libc::MS_RDONLY };
            sys.push(MountCall {
                source: Some(cstr("sysfs")?),
                target: m("/sys")?,
                fstype: Some(cstr("sysfs")?),
                flags: nosuid_nodev_noexec | ro,
                data: None,
                make: 1,
                readonly_remount: false,
            });
        }
        if self.cgroup_ns {
            sys.extend(cgroup_mounts(&m("/sys/fs/cgroup")?, spec.privileged)?);
        }
        plan.system_mounts = sys;
        for (name, major, minor) in [
            ("null", 1, 3),
            ("zero", 1, 5),
            ("full", 1, 7),
            ("random", 1, 8),
            ("urandom", 1, 9),
            ("tty", 5, 0),
        ] {
            plan.devices.push((
                m(&format!("/dev/{name}"))?,
                libc::S_IFCHR | 0o666,
                libc::makedev(major, minor),
            ));
        }
        for d in &spec.resources.devices {
            let rel = d
                .path_in_container
                .strip_prefix("/dev/")
                .filter(|r| {
                    !r.is_empty() && !r.split('/').any(|c| c.is_empty() || c == "." || c == "..")
                })
                .ok_or_else(|| {
                    SpawnError::setup(format!(
                        "device path {:?} in the container must be a plain path under /dev",
                        d.path_in_container
                    ))
                })?;
            // Parents first (`/dev/net/tun`, `/dev/snd/pcmC0D0p`).
            let mut dir = String::from("/dev");
            for part in rel
                .split('/')
                .collect::<Vec<_>>()
                .split_last()
                .map_or(&[][..], |(_, p)| p)
            {
                dir.push('/');
                dir.push_str(part);
                plan.device_dirs.push(m(&dir)?);
            }
            let kind = if d.kind == 'b' {
                libc::S_IFBLK
            } else {
                libc::S_IFCHR
            };
            plan.devices.push((
                m(&d.path_in_container)?,
                kind | (d.file_mode & 0o7777),
                libc::makedev(d.major, d.minor),
            ));
        }
        for (target, link) in [
            ("pts/ptmx", "/dev/ptmx"),
            ("/proc/self/fd", "/dev/fd"),
            ("/proc/self/fd/0", "/dev/stdin"),
            ("/proc/self/fd/1", "/dev/stdout"),
            ("/proc/self/fd/2", "/dev/stderr"),
            ("/proc/kcore", "/dev/core"),
        ] {
            plan.symlinks.push((cstr(target)?, m(link)?));
        }
        for mount in &spec.mounts {
            let (dest, call) = match mount {
                MountSpec::Bind {
                    source,
                    destination,
                    readonly,
                } => {
                    let meta = std::fs::metadata(source).map_err(|_| {
                        SpawnError::setup(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            source.display()
                        ))
                    })?;
                    (
                        destination,
                        MountCall {
                            source: Some(cpath(source)?),
                            target: m(destination)?,
                            fstype: None,
                            flags: libc::MS_BIND | libc::MS_REC,
                            data: None,
                            make: if meta.is_dir() { 1 } else { 2 },
                            readonly_remount: *readonly,
                        },
                    )
                }
                MountSpec::Tmpfs {
                    destination,
                    options,
                } => {
                    let data = if options.is_empty() {
                        None
                    } else {
                        Some(cstr(options)?)
                    };
                    (
                        destination,
                        MountCall {
                            source: Some(cstr("tmpfs")?),
                            target: m(destination)?,
                            fstype: Some(cstr("tmpfs")?),
                            flags: libc::MS_NOSUID | libc::MS_NODEV,
                            data,
                            make: 1,
                            readonly_remount: false,
                        },
                    )
                }
            };
            if !dest.starts_with('/') || dest.split('/').any(|c| c == "..") {
                return Err(SpawnError::setup(format!(
                    "invalid mount destination {dest:?}: must be absolute, without .."
                )));
            }
            plan.user_mounts.push(UserMount {
                prefixes: user::prefixes(merged, dest)
                    .iter()
                    .map(|p| cpath(p))
                    .collect::<Result<_, _>>()?,
                call,
            });
        }
        plan.merged = cpath(merged)?;
        if !spec.privileged {
            plan.masked = self.masked.clone();
            plan.readonly_paths = READONLY.iter().map(cstr).collect::<Result<_, _>>()?;
        }
        plan.readonly_rootfs = spec.readonly_rootfs;
        Ok(())
    }

    /// Starts the container; returns after its process exec'd (or failed to). `stdio` is a
    /// [`Stdio::Terminal`] exactly when `spec.process.tty` is set.
    pub fn spawn(&self, spec: &ContainerSpec, stdio: Stdio) -> Result<Spawned, SpawnError> {
        self.spawn_with_netns(spec, stdio, None)
    }

    /// As [`Spawner::spawn`]; with [`NetworkMode::None`] and `held` given, the container joins
    /// that namespace (one with only `lo` up, made ahead of time and held open by the caller)
    /// instead of a new one.
    pub fn spawn_with_netns(
        &self,
        spec: &ContainerSpec,
        stdio: Stdio,
        held: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<Spawned, SpawnError> {
        let held = held.filter(|_| matches!(spec.network, NetworkMode::None));
        let cgroup = Cgroup::create(
            &spec.cgroup_parent,
            &spec.id,
            &spec.resources,
            spec.privileged,
        )?;
        match self.spawn_in(spec, stdio, &cgroup, held) {
            Ok((pid, terminal)) => Ok(Spawned {
                pid,
                cgroup,
                terminal,
            }),
            Err(e) => {
                let _ = cgroup.remove();
                Err(e)
            }
        }
    }

    fn spawn_in(
        &self,
        spec: &ContainerSpec,
        stdio: Stdio,
        cgroup: &Cgroup,
        held_netns: Option<std::os::fd::BorrowedFd<'_>>,
    ) -> Result<(i32, Option<OwnedFd>), SpawnError> {
        let mut plan = self.process_plan(spec, &spec.process, Path::new("/"))?;
        let (console, console_child) = plan_stdio(&mut plan, &spec.process, &stdio)?.unzip();
        self.mount_plan(spec, &mut plan)?;
        // v2: the child is born in its cgroup (clone3 CLONE_INTO_CGROUP), which takes no global
        // lock; elsewhere (v1, or a kernel without it) it joins by writing to the procs files.
        let cgroup_dir = match cgroup.unified_dir() {
            Some(d) => Some(open_dir_path(d)?),
            None => None,
        };
        let mut procs = Vec::new();
        if cgroup_dir.is_none() {
            procs = cgroup.procs_files()?;
            plan.cgroup_procs = child::raw(&procs);
        }
        plan.cgroup_ns = self.cgroup_ns;
        let netns_file = match &spec.network {
            NetworkMode::Path(p) => Some(
                std::fs::File::open(p)
                    .map_err(|e| SpawnError::io(format!("opening netns {}", p.display()), e))?,
            ),
            _ => None,
        };
        plan.netns_fd = netns_file
            .as_ref()
            .map(|f| f.as_raw_fd())
            .or(held_netns.map(|fd| fd.as_raw_fd()));
        plan.new_net = matches!(spec.network, NetworkMode::None) && held_netns.is_none();
        let (err_r, err_w) = pipe()?;
        let mut flags =
            libc::CLONE_NEWNS | libc::CLONE_NEWPID | libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
        if plan.new_net {
            flags |= libc::CLONE_NEWNET;
        }
        let mut pid = match &cgroup_dir {
            Some(dir) => clone_child(flags, Some(dir.as_raw_fd())),
            None => Err(libc::ENOSYS),
        };
        if cgroup_dir.is_some() && matches!(pid, Err(libc::ENOSYS | libc::E2BIG | libc::EINVAL)) {
            // No clone3 or CLONE_INTO_CGROUP here: join through cgroup.procs instead.
            procs = cgroup.procs_files()?;
            plan.cgroup_procs = child::raw(&procs);
        }
        if cgroup_dir.is_none() || matches!(pid, Err(libc::ENOSYS | libc::E2BIG | libc::EINVAL)) {
            pid = clone_child(flags, None);
        }
        let pid = match pid {
            Ok(0) => {
                // SAFETY: in the child: it runs only async-signal-safe code from the prepared
                // plan and never returns.
                unsafe { child::container_main(&plan, err_w.as_raw_fd()) }
            }
            Ok(pid) => pid,
            Err(e) => {
                return Err(SpawnError::io(
                    "clone",
                    std::io::Error::from_raw_os_error(e),
                ))
            }
        };
        drop(procs);
        drop(err_w);
        drop(stdio);
        // Only the child may hold its end: then a child that dies before sending leaves EOF.
        drop(console_child);
        self.await_exec(pid, &err_r, spec, &spec.process)?;
        let Some(console) = console else {
            return Ok((pid, None));
        };
        match console::receive_master(&console) {
            Ok(master) => Ok((pid, Some(master))),
            Err(e) => {
                // Running, but unreachable: it must not stay behind (the caller removes the
                // cgroup on this error, which needs it empty).
                let _ = cgroup.kill_all(libc::SIGKILL);
                let mut status = 0;
                // SAFETY: reaping our own child.
                unsafe { libc::waitpid(pid, &mut status, 0) };
                Err(e)
            }
        }
    }

    /// Reads the error pipe: EOF with nothing means exec happened.
    fn await_exec(
        &self,
        pid: i32,
        err_r: &OwnedFd,
        spec: &ContainerSpec,
        process: &ProcessSpec,
    ) -> Result<(), SpawnError> {
        let mut rec = [0u8; 12];
        let mut got = 0;
        while got < rec.len() {
            // SAFETY: reading into our buffer.
            let n = unsafe {
                libc::read(
                    err_r.as_raw_fd(),
                    rec[got..].as_mut_ptr().cast(),
                    rec.len() - got,
                )
            };
            if n < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            if n <= 0 {
                break;
            }
            got += n as usize;
        }
        if got == 0 {
            return Ok(());
        }
        // The child exits after reporting: reap it so it never shows up as a container exit.
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        let step = u32::from_ne_bytes([rec[0], rec[1], rec[2], rec[3]]);
        let errno = i32::from_ne_bytes([rec[4], rec[5], rec[6], rec[7]]);
        let index = u32::from_ne_bytes([rec[8], rec[9], rec[10], rec[11]]);
        Err(describe(Step::from_u32(step), errno, index, spec, process))
    }

    /// `docker exec`: a new process in the running container. `stdio` is a
    /// [`Stdio::Terminal`] exactly when `process.tty` is set.
    pub fn exec(
        &self,
        container: &Spawned,
        spec: &ContainerSpec,
        process: &ProcessSpec,
        stdio: Stdio,
    ) -> Result<ExecProcess, SpawnError> {
        // The cwd is created inside the container's mount namespace: paths are container paths.
        let mut plan = self.process_plan(spec, process, Path::new("/"))?;
        let (console, console_child) = plan_stdio(&mut plan, process, &stdio)?.unzip();
        // As in spawn: born in the cgroup on v2, joining through the procs files otherwise.
        let cgroup_dir = match container.cgroup.unified_dir() {
            Some(d) => Some(open_dir_path(d)?),
            None => None,
        };
        let mut procs = Vec::new();
        if cgroup_dir.is_none() {
            procs = container.cgroup.procs_files()?;
            plan.cgroup_procs = child::raw(&procs);
        }
        let mut ns_files = Vec::new();
        for (name, kind) in [
            ("ipc", libc::CLONE_NEWIPC),
            ("uts", libc::CLONE_NEWUTS),
            ("net", libc::CLONE_NEWNET),
            ("cgroup", libc::CLONE_NEWCGROUP),
            ("pid", libc::CLONE_NEWPID),
            ("mnt", libc::CLONE_NEWNS),
        ] {
            let p = format!("/proc/{}/ns/{name}", container.pid);
            match std::fs::File::open(&p) {
                Ok(f) => ns_files.push((f, kind)),
                Err(e) if name == "cgroup" && e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(SpawnError::io(format!("container is not running ({p})"), e)),
            }
        }
        plan.join = ns_files.iter().map(|(f, k)| (f.as_raw_fd(), *k)).collect();
        let (err_r, err_w) = pipe()?;
        let (pid_r, pid_w) = pipe()?;
        let mut child = match &cgroup_dir {
            Some(dir) => clone_child(0, Some(dir.as_raw_fd())),
            None => Err(libc::ENOSYS),
        };
        if cgroup_dir.is_some() && matches!(child, Err(libc::ENOSYS | libc::E2BIG | libc::EINVAL)) {
            procs = container.cgroup.procs_files()?;
            plan.cgroup_procs = child::raw(&procs);
        }
        if cgroup_dir.is_none() || matches!(child, Err(libc::ENOSYS | libc::E2BIG | libc::EINVAL)) {
            child = clone_child(0, None);
        }
        let child = match child {
            Ok(0) => {
                // SAFETY: in the child (forked from the single-threaded caller): it runs
                // prepared code only and never returns.
                unsafe { child::exec_main(&plan, err_w.as_raw_fd(), pid_w.as_raw_fd()) }
            }
            Ok(pid) => pid,
            Err(e) => return Err(SpawnError::io("fork", std::io::Error::from_raw_os_error(e))),
        };
        drop(procs);
        drop(err_w);
        drop(pid_w);
        drop(stdio);
        drop(console_child);
        let mut buf = [0u8; 4];
        // SAFETY: reading the grandchild's pid into our buffer.
        let n = unsafe { libc::read(pid_r.as_raw_fd(), buf.as_mut_ptr().cast(), 4) };
        let mut status = 0;
        // SAFETY: reaping the intermediate child.
        unsafe { libc::waitpid(child, &mut status, 0) };
        if n != 4 {
            // The intermediate failed before forking: its record is in the error pipe.
            self.await_exec(child, &err_r, spec, process)?;
            return Err(SpawnError::setup("exec: the process could not be started"));
        }
        let pid = i32::from_ne_bytes(buf);
        self.await_exec(pid, &err_r, spec, process)?;
        let Some(console) = console else {
            return Ok(ExecProcess {
                pid,
                terminal: None,
            });
        };
        match console::receive_master(&console) {
            Ok(master) => Ok(ExecProcess {
                pid,
                terminal: Some(master),
            }),
            Err(e) => {
                // Running, but unreachable: it must not stay behind.
                let mut status = 0;
                // SAFETY: killing and reaping our own child (CLONE_PARENT made it ours).
                unsafe {
                    libc::kill(pid, libc::SIGKILL);
                    libc::waitpid(pid, &mut status, 0);
                }
                Err(e)
            }
        }
    }
}

/// Puts `stdio` into `plan`: the caller's descriptors, or a terminal with the socket its
/// master comes back on, whose two ends (ours, the child's) are returned. A terminal goes with
/// `process.tty` and only with it (TERM, and the pty that `tty` expects).
fn plan_stdio(
    plan: &mut Plan,
    process: &ProcessSpec,
    stdio: &Stdio,
) -> Result<Option<(OwnedFd, OwnedFd)>, SpawnError> {
    match stdio {
        Stdio::Fds {
            stdin,
            stdout,
            stderr,
        } => {
            if process.tty {
                return Err(SpawnError::setup(
                    "a process with a TTY needs a terminal (Stdio::Terminal), not descriptors",
                ));
            }
            plan.stdio = [stdin.as_raw_fd(), stdout.as_raw_fd(), stderr.as_raw_fd()];
            Ok(None)
        }
        Stdio::Terminal(size) => {
            if !process.tty {
                return Err(SpawnError::setup(
                    "a terminal (Stdio::Terminal) was given for a process without a TTY",
                ));
            }
            let (ours, child) = console::socket_pair()?;
            plan.terminal = Some(TerminalPlan {
                size: size.winsize(),
                socket: child.as_raw_fd(),
            });
            Ok(Some((ours, child)))
        }
    }
}

/// Linux's CLONE_INTO_CGROUP (clone3 only; not in every libc).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// clone3's argument, version 2 (with `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// A fork-like clone (no CLONE_VM: the child gets a copy of our memory and stack) with
/// namespace `flags`, born in the cgroup directory `cgroup_dir` when given (clone3). Returns
/// 0 in the child, its pid in the parent, or the errno.
fn clone_child(flags: libc::c_int, cgroup_dir: Option<RawFd>) -> Result<i32, i32> {
    let rc = match cgroup_dir {
        Some(dir) => {
            let args = CloneArgs {
                flags: flags as u64 | CLONE_INTO_CGROUP,
                exit_signal: libc::SIGCHLD as u64,
                cgroup: dir as u64,
                ..CloneArgs::default()
            };
            // SAFETY: clone3 without CLONE_VM and without a stack behaves as fork; args is a
            // valid version-2 struct of the size passed.
            unsafe {
                libc::syscall(
                    libc::SYS_clone3,
                    &args as *const CloneArgs,
                    std::mem::size_of::<CloneArgs>(),
                )
            }
        }
        // SAFETY: a fork-like clone (no CLONE_VM, no stack).
        None => unsafe {
            libc::syscall(
                libc::SYS_clone,
                (flags | libc::SIGCHLD) as libc::c_ulong,
                0usize,
                0usize,
                0usize,
                0usize,
            )
        },
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    Ok(rc as i32)
}

/// An O_PATH descriptor of a directory (for CLONE_INTO_CGROUP).
fn open_dir_path(dir: &Path) -> Result<OwnedFd, SpawnError> {
    let c = cpath(dir)?;
    // SAFETY: open with a valid C path; the fd is owned right away.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(SpawnError::io(
            format!("opening {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: a fresh fd from open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// [`MASKED`] and the host's `/sys/devices/system/cpu/cpuN/thermal_throttle` directories.
fn masked_paths() -> Result<Vec<CString>, SpawnError> {
    let mut paths: Vec<String> = MASKED.iter().map(|p| p.to_string()).collect();
    if let Ok(cpus) = std::fs::read_dir("/sys/devices/system/cpu") {
        let mut throttles: Vec<String> = cpus
            .flatten()
            .filter(|e| {
                let n = e.file_name();
                let n = n.to_string_lossy();
                n.strip_prefix("cpu")
                    .is_some_and(|d| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit()))
            })
            .map(|e| e.path().join("thermal_throttle"))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        throttles.sort();
        paths.extend(throttles);
    }
    paths.iter().map(cstr).collect()
}

/// The calling process's permitted capabilities (capget, version 3).
fn own_permitted_caps() -> Result<u64, SpawnError> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget with a v3 header and room for two data structs.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut Header, d.as_mut_ptr()) } != 0 {
        return Err(SpawnError::io(
            "capget (reading our own capabilities)",
            std::io::Error::last_os_error(),
        ));
    }
    Ok(u64::from(d[0].permitted) | (u64::from(d[1].permitted) << 32))
}

fn pipe() -> Result<(OwnedFd, OwnedFd), SpawnError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is valid for two ints.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(SpawnError::io("pipe", std::io::Error::last_os_error()));
    }
    // SAFETY: fresh fds from pipe2.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Docker-like wording for a child's failure record.
fn describe(
    step: Option<Step>,
    errno: i32,
    index: u32,
    spec: &ContainerSpec,
    process: &ProcessSpec,
) -> SpawnError {
    let os = std::io::Error::from_raw_os_error(errno);
    let arg0 = process.args.first().cloned().unwrap_or_default();
    let (kind, message) = match step {
        Some(Step::NotFound) if arg0.contains('/') => (
            SpawnErrorKind::CommandNotFound,
            format!("exec: \"{arg0}\": stat {arg0}: no such file or directory"),
        ),
        Some(Step::NotFound) => (
            SpawnErrorKind::CommandNotFound,
            format!("exec: \"{arg0}\": executable file not found in $PATH"),
        ),
        Some(Step::NotExecutable) => (
            SpawnErrorKind::NotExecutable,
            format!("exec: \"{arg0}\": permission denied"),
        ),
        Some(Step::Exec) => (SpawnErrorKind::NotExecutable, format!("exec {arg0}: {os}")),
        Some(Step::UserMount) | Some(Step::MountTarget) => {
            let m = spec.mounts.get(index as usize);
            let dest = match m {
                Some(MountSpec::Bind { destination, .. })
                | Some(MountSpec::Tmpfs { destination, .. }) => destination.as_str(),
                None => "?",
            };
            let why = if errno == libc::ELOOP {
                "the destination is a symlink".to_string()
            } else {
                os.to_string()
            };
            (
                SpawnErrorKind::Other,
                format!("mounting {dest} in the container: {why}"),
            )
        }
        Some(Step::Overlay) => (
            SpawnErrorKind::Other,
            format!(
                "mounting the rootfs overlay ({} layers) on {}: {os}",
                spec.rootfs.lower_dirs.len(),
                spec.rootfs.merged_dir.display()
            ),
        ),
        Some(Step::Tty) => (
            SpawnErrorKind::Other,
            format!(
                "setting up the terminal: {}: {os}",
                TtyStep::describe(index)
            ),
        ),
        Some(Step::Cwd) => (
            SpawnErrorKind::Other,
            format!(
                "chdir to cwd (\"{}\") set in config.json failed: {os}",
                process.cwd
            ),
        ),
        Some(s) => (
            SpawnErrorKind::Other,
            format!("container setup failed at {s:?} (#{index}): {os}"),
        ),
        None => (
            SpawnErrorKind::Other,
            format!("container setup failed: {os}"),
        ),
    };
    SpawnError { kind, message }
}

/// `--device HOST[:CONTAINER[:PERMS]]` resolved on the host, as dockerd does: a device node,
/// or every device node below a directory (`/dev/snd`). `permissions` defaults to `rwm`.
pub fn resolve_devices(
    path_on_host: &str,
    path_in_container: &str,
    permissions: &str,
) -> Result<Vec<DeviceSpec>, SpawnError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let perms = if permissions.is_empty() {
        "rwm"
    } else {
        permissions
    };
    if !perms.chars().all(|c| matches!(c, 'r' | 'w' | 'm')) {
        return Err(SpawnError::setup(format!(
            "invalid device permissions {perms:?} for {path_on_host}: use a combination of r, w and m"
        )));
    }
    let target = if path_in_container.is_empty() {
        path_on_host
    } else {
        path_in_container
    };
    let gathering = |e: std::io::Error| {
        SpawnError::setup(format!(
            "error gathering device information while adding custom device {path_on_host:?}: {e}"
        ))
    };
    let meta = std::fs::metadata(path_on_host).map_err(gathering)?;
    let one = |meta: &std::fs::Metadata, to: String| -> Option<DeviceSpec> {
        let ft = meta.file_type();
        let kind = if ft.is_char_device() {
            'c'
        } else if ft.is_block_device() {
            'b'
        } else {
            return None;
        };
        Some(DeviceSpec {
            path_in_container: to,
            kind,
            major: libc::major(meta.rdev()),
            minor: libc::minor(meta.rdev()),
            file_mode: meta.mode() & 0o7777,
            permissions: perms.to_string(),
        })
    };
    if !meta.is_dir() {
        return one(&meta, target.to_string())
            .map(|d| vec![d])
            .ok_or_else(|| SpawnError::setup(format!("{path_on_host} is not a device node")));
    }
    let mut found = Vec::new();
    let mut stack = vec![PathBuf::from(path_on_host)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).map_err(gathering)? {
            let entry = entry.map_err(gathering)?;
            let path = entry.path();
            // Symlinks are not followed: they could lead anywhere on the host.
            let meta = std::fs::symlink_metadata(&path).map_err(gathering)?;
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(path_on_host).unwrap_or(&path);
            let to = format!("{}/{}", target.trim_end_matches('/'), rel.display());
            found.extend(one(&meta, to));
        }
    }
    found.sort_by(|a, b| a.path_in_container.cmp(&b.path_in_container));
    Ok(found)
}

/// `/sys/fs/cgroup` as Docker shows it (read-only unless privileged), for a child that has
/// entered its own cgroup namespace: v2's unified mount, or on v1 a tmpfs holding each
/// controller's hierarchy and then made read-only itself.
fn cgroup_mounts(root: &CString, privileged: bool) -> Result<Vec<MountCall>, SpawnError> {
    let nosuid_nodev_noexec = libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
    let ro = if privileged { 0 } else { libc::MS_RDONLY };
    let views = cgroup::container_views()?;
    let sub = |dir: &str| -> Result<CString, SpawnError> {
        let mut p = root.as_bytes().to_vec();
        if !dir.is_empty() {
            p.push(b'/');
            p.extend_from_slice(dir.as_bytes());
        }
        CString::new(p).map_err(|_| SpawnError::setup("a NUL byte in a cgroup path"))
    };
    let mut calls = Vec::new();
    let v1 = views.iter().any(|v| !v.dir.is_empty());
    if v1 {
        calls.push(MountCall {
            source: Some(cstr("tmpfs")?),
            target: root.clone(),
            fstype: Some(cstr("tmpfs")?),
            flags: nosuid_nodev_noexec,
            data: Some(cstr("mode=755")?),
            make: 1,
            readonly_remount: false,
        });
    }
    for v in views {
        calls.push(MountCall {
            source: Some(cstr("cgroup")?),
            target: sub(&v.dir)?,
            fstype: Some(cstr(v.fstype)?),
            flags: nosuid_nodev_noexec | ro,
            data: (!v.options.is_empty())
                .then(|| cstr(&v.options))
                .transpose()?,
            make: 1,
            readonly_remount: false,
        });
    }
    if v1 && !privileged {
        // The tmpfs's directories exist now; nothing may add to it.
        calls.push(MountCall {
            source: None,
            target: root.clone(),
            fstype: None,
            flags: libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | nosuid_nodev_noexec,
            data: None,
            make: 0,
            readonly_remount: false,
        });
    }
    Ok(calls)
}

#[cfg(test)]
mod tests;
