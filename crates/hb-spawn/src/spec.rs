//! What a container is, for the spawner: the serde types the daemon builds and the monitor
//! hands to [`crate::Spawner`].

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Everything needed to start one container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ContainerSpec {
    /// Container id (64 hex digits).
    pub id: String,
    /// The overlay.
    pub rootfs: RootfsSpec,
    /// The main process.
    pub process: ProcessSpec,
    /// Hostname (UTS namespace).
    pub hostname: String,
    /// Bind and tmpfs mounts, in order (user mounts and /etc/hosts, hostname, resolv.conf).
    pub mounts: Vec<MountSpec>,
    /// Network namespace.
    pub network: NetworkMode,
    /// Capabilities held (`CAP_CHOWN`, …); ignored when privileged.
    pub capabilities: Vec<String>,
    /// Every capability, no seccomp, no masked or read-only paths, all devices.
    pub privileged: bool,
    /// Docker's default seccomp profile (unless privileged).
    pub seccomp: bool,
    /// `no_new_privs`.
    pub no_new_privileges: bool,
    /// cgroup limits.
    pub resources: Resources,
    /// cgroups live at `<hierarchy>/<cgroup_parent>/<id>`.
    pub cgroup_parent: String,
    /// Mount the rootfs read-only.
    pub readonly_rootfs: bool,
}

impl ContainerSpec {
    /// Whether the container could change its network namespace's settings, rather than only
    /// use it: privileged, CAP_NET_ADMIN or CAP_SYS_ADMIN (which can remount `/proc/sys`
    /// writable), or a bind mount that could bring a procfs in, whose `sys/net` files write to
    /// the writer's namespace: any directory (a procfs may be mounted anywhere below it) and
    /// any file on a procfs. Only a namespace whose container could not may serve another.
    /// Reads the bind sources' metadata.
    pub fn may_reconfigure_network(&self) -> bool {
        let powerful = |c: &String| {
            let up = c.to_ascii_uppercase();
            let name = up.strip_prefix("CAP_").unwrap_or(&up);
            name == "NET_ADMIN" || name == "SYS_ADMIN"
        };
        self.privileged
            || self.capabilities.iter().any(powerful)
            || self.mounts.iter().any(|m| match m {
                MountSpec::Bind { source, .. } => !is_plain_file(source),
                MountSpec::Tmpfs { .. } => false,
            })
    }
}

/// A regular file (after symlinks) on a filesystem other than procfs.
fn is_plain_file(path: &std::path::Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    const PROC_SUPER_MAGIC: i64 = 0x9fa0;
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return false;
    }
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills a plain struct from a NUL-terminated path.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    (unsafe { libc::statfs(c.as_ptr(), &mut st) }) == 0 && st.f_type as i64 != PROC_SUPER_MAGIC
}

/// The overlay a container runs on.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct RootfsSpec {
    /// Lower dirs, top layer first (overlay's order).
    pub lower_dirs: Vec<PathBuf>,
    /// Writable upper dir.
    pub upper_dir: PathBuf,
    /// Overlay work dir (same filesystem as upper).
    pub work_dir: PathBuf,
    /// Mount point.
    pub merged_dir: PathBuf,
    /// Mount with overlayfs's `volatile` option: no sync of the upper filesystem when the
    /// overlay goes away. For `--rm` containers, whose upper dir is deleted at exit anyway;
    /// without it every exit syncs the whole filesystem under the upper dir.
    #[serde(default)]
    pub volatile: bool,
}

/// A process to run.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessSpec {
    /// argv; `args[0]` is looked up in the container's PATH unless it has a `/`.
    pub args: Vec<String>,
    /// `KEY=VALUE` environment.
    pub env: Vec<String>,
    /// Working directory (created if missing, as Docker does).
    pub cwd: String,
    /// `""`, `name`, `uid`, `name:group`, `uid:gid`.
    pub user: String,
    /// A terminal (`-t`): the process gets a pty allocated inside the container as its stdio
    /// and controlling terminal (spawned with [`crate::Stdio::Terminal`]), and `TERM=xterm`
    /// unless its environment sets `TERM`.
    pub tty: bool,
}

/// A mount inside the container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum MountSpec {
    /// A host path bound in.
    Bind {
        /// Host path.
        source: PathBuf,
        /// Path inside the container.
        destination: String,
        /// Read-only.
        readonly: bool,
    },
    /// A tmpfs.
    Tmpfs {
        /// Path inside the container.
        destination: String,
        /// tmpfs options (`size=64m,mode=1777`).
        options: String,
    },
}

/// The container's network namespace.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkMode {
    /// The host's.
    Host,
    /// A new one with only `lo` up.
    None,
    /// Join the namespace bind-mounted at this path.
    Path(PathBuf),
}

/// cgroup limits.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Resources {
    /// Memory limit in bytes.
    pub memory_bytes: Option<u64>,
    /// CPUs in billionths (`--cpus 0.5` = 500 000 000).
    pub nano_cpus: Option<u64>,
    /// Most processes (-1: unlimited).
    pub pids_limit: Option<i64>,
    /// `--device`: host devices made available (a node in the container's /dev and a devices
    /// cgroup rule). Docker keeps them under its Resources too.
    #[serde(default)]
    pub devices: Vec<DeviceSpec>,
}

/// One device node given to a container.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceSpec {
    /// Where it appears; always under `/dev` (a fresh tmpfs, so no image symlink can redirect
    /// the node outside the container).
    pub path_in_container: String,
    /// `c` (character) or `b` (block).
    pub kind: char,
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Permission bits of the node (the host node's).
    pub file_mode: u32,
    /// cgroup access: a combination of `r`, `w`, `m`.
    pub permissions: String,
}
