//! Container cgroups on cgroup v1 (one directory per controller hierarchy, as on this host's
//! hybrid layout, where the v2 mount beside them has no controllers) and on pure v2 hosts (one
//! directory in the unified tree). The layout is read once from /proc/self/mountinfo.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use crate::SpawnError;

/// Where the controllers are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Layout {
    /// v1: controller name → mount point.
    V1(Vec<(String, PathBuf)>),
    /// v2: the unified mount point.
    V2(PathBuf),
}

/// v1 controllers a container gets a directory in.
const V1_CONTROLLERS: &[&str] = &[
    "memory", "cpu", "cpuacct", "pids", "devices", "freezer", "cpuset",
];

fn parse_layout(mountinfo: &str) -> Option<Layout> {
    let mut v1: Vec<(String, PathBuf)> = Vec::new();
    let mut v2: Option<PathBuf> = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mount_point = left.split_whitespace().nth(4)?;
        let mut r = right.split_whitespace();
        let fstype = r.next()?;
        let _source = r.next();
        let opts = r.next().unwrap_or("");
        match fstype {
            "cgroup" => {
                for c in opts.split(',') {
                    if V1_CONTROLLERS.contains(&c) && !v1.iter().any(|(n, _)| n == c) {
                        v1.push((c.to_string(), PathBuf::from(mount_point)));
                    }
                }
            }
            "cgroup2" => {
                let controllers =
                    std::fs::read_to_string(Path::new(mount_point).join("cgroup.controllers"))
                        .unwrap_or_default();
                if !controllers.trim().is_empty() {
                    v2 = Some(PathBuf::from(mount_point));
                }
            }
            _ => {}
        }
    }
    if v1.iter().any(|(c, _)| c == "memory") {
        Some(Layout::V1(v1))
    } else {
        v2.map(Layout::V2)
    }
}

/// The host's layout (read once).
pub fn layout() -> Result<&'static Layout, SpawnError> {
    static LAYOUT: OnceLock<Option<Layout>> = OnceLock::new();
    LAYOUT
        .get_or_init(|| {
            let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
            parse_layout(&text)
        })
        .as_ref()
        .ok_or_else(|| {
            SpawnError::setup(
                "no usable cgroup hierarchy (need v1 memory or a v2 tree with controllers)",
            )
        })
}

/// One filesystem a container sees under `/sys/fs/cgroup`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupView {
    /// Where, relative to `/sys/fs/cgroup` (empty: `/sys/fs/cgroup` itself).
    pub dir: String,
    /// `cgroup` (v1) or `cgroup2`.
    pub fstype: &'static str,
    /// Mount data: the hierarchy's controllers on v1 (a v1 hierarchy can only be mounted again
    /// with exactly its own set), empty on v2.
    pub options: String,
}

/// v1 super options that name a hierarchy (controllers, `name=`); the rest (`rw`, `xattr`,
/// `clone_children`) do not pick the hierarchy.
fn hierarchy_options(super_options: &str) -> String {
    const KNOWN: &[&str] = &[
        "cpuset",
        "cpu",
        "cpuacct",
        "blkio",
        "memory",
        "devices",
        "freezer",
        "net_cls",
        "perf_event",
        "net_prio",
        "hugetlb",
        "pids",
        "rdma",
        "misc",
    ];
    super_options
        .split(',')
        .filter(|o| KNOWN.contains(o) || o.starts_with("name="))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_views(layout: &Layout, mountinfo: &str) -> Vec<CgroupView> {
    match layout {
        Layout::V2(_) => vec![CgroupView {
            dir: String::new(),
            fstype: "cgroup2",
            options: String::new(),
        }],
        Layout::V1(controllers) => {
            let mut views = Vec::new();
            for (controller, mount_point) in controllers {
                let options = mountinfo.lines().find_map(|line| {
                    let (left, right) = line.split_once(" - ")?;
                    let mp = left.split_whitespace().nth(4)?;
                    let mut r = right.split_whitespace();
                    let (fstype, _source, opts) = (r.next()?, r.next()?, r.next()?);
                    (fstype == "cgroup" && Path::new(mp) == mount_point)
                        .then(|| hierarchy_options(opts))
                });
                if let Some(options) = options.filter(|o| !o.is_empty()) {
                    views.push(CgroupView {
                        dir: controller.clone(),
                        fstype: "cgroup",
                        options,
                    });
                }
            }
            views
        }
    }
}

/// What a container in its own cgroup namespace sees under `/sys/fs/cgroup`, as with Docker:
/// the unified hierarchy on v2; on v1 one directory per controller the container is limited
/// by (co-mounted controllers such as `cpu,cpuacct` appear under each name). The namespace
/// makes each show the container's own cgroup as its root, so no other cgroup is visible.
/// Hierarchies the container is not placed in (for instance `name=systemd`) are left out: their
/// root would be the monitor's cgroup.
pub fn container_views() -> Result<&'static [CgroupView], SpawnError> {
    static VIEWS: OnceLock<Vec<CgroupView>> = OnceLock::new();
    let layout = layout()?;
    Ok(VIEWS.get_or_init(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        parse_views(layout, &mountinfo)
    }))
}

/// Figures from a container's cgroup.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Memory in use (bytes).
    pub memory_usage: u64,
    /// Memory limit (host memory when unlimited).
    pub memory_limit: u64,
    /// CPU time used (ns).
    pub cpu_usage_ns: u64,
    /// Processes now.
    pub pids_current: u64,
}

/// One container's cgroup (a directory per hierarchy on v1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cgroup {
    /// Controller (or "unified") → directory.
    pub(crate) dirs: Vec<(String, PathBuf)>,
}

fn write(path: &Path, value: &str) -> Result<(), SpawnError> {
    std::fs::write(path, value)
        .map_err(|e| SpawnError::io(format!("writing {value:?} to {}", path.display()), e))
}

fn read_u64(path: &Path) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |k| k * 1024)
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

impl Cgroup {
    /// The cgroup of container `id` under `parent` (not created; for a running container).
    pub fn open(parent: &str, id: &str) -> Result<Cgroup, SpawnError> {
        if !valid_name(parent) || !valid_name(id) {
            return Err(SpawnError::setup(format!(
                "invalid cgroup name {parent}/{id}"
            )));
        }
        let dirs = match layout()? {
            Layout::V1(ctrls) => ctrls
                .iter()
                .map(|(c, m)| (c.clone(), m.join(parent).join(id)))
                .collect(),
            Layout::V2(m) => vec![("unified".to_string(), m.join(parent).join(id))],
        };
        Ok(Cgroup { dirs })
    }

    pub(crate) fn dir(&self, controller: &str) -> Option<&Path> {
        self.dirs
            .iter()
            .find(|(c, _)| c == controller || c == "unified")
            .map(|(_, d)| d.as_path())
    }

    /// Its directories: (controller, or "unified" on v2; path).
    pub fn dirs(&self) -> &[(String, PathBuf)] {
        &self.dirs
    }

    /// Its one directory on a v2 host (None on v1).
    pub(crate) fn unified_dir(&self) -> Option<&Path> {
        match self.dirs.as_slice() {
            [(c, d)] if c == "unified" => Some(d),
            _ => None,
        }
    }

    /// Whether it exists.
    pub fn exists(&self) -> bool {
        self.dirs.iter().any(|(_, d)| d.is_dir())
    }

    /// Creates the directories and applies limits. Impossible limits fail here.
    pub fn create(
        parent: &str,
        id: &str,
        r: &crate::Resources,
        privileged: bool,
    ) -> Result<Cgroup, SpawnError> {
        validate(r)?;
        let cg = Cgroup::open(parent, id)?;
        let v2 = matches!(layout()?, Layout::V2(_));
        for (c, d) in &cg.dirs {
            let parent_dir = d.parent().unwrap_or(d);
            let mut inherits_cpuset = prepare_parent(c, parent_dir, v2)?;
            let mut made = std::fs::create_dir(d);
            if matches!(&made, Err(e) if e.kind() == std::io::ErrorKind::NotFound) {
                // The parent was removed behind our back since we prepared it: make it again.
                std::fs::create_dir_all(parent_dir)
                    .map_err(|e| SpawnError::io(format!("creating {}", parent_dir.display()), e))?;
                if v2 {
                    let _ = std::fs::write(
                        parent_dir.join("cgroup.subtree_control"),
                        "+memory +pids +cpu",
                    );
                }
                if c == "cpuset" {
                    copy_cpuset(parent_dir)?;
                }
                inherits_cpuset = false;
                made = std::fs::create_dir(d);
            }
            match made {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(SpawnError::io(format!("creating {}", d.display()), e)),
            }
            if c == "cpuset" && !inherits_cpuset {
                copy_cpuset(d)?;
            }
        }
        if let Err(e) = cg.apply(r, privileged, v2) {
            let _ = cg.remove();
            return Err(e);
        }
        Ok(cg)
    }

    fn apply(&self, r: &crate::Resources, privileged: bool, v2: bool) -> Result<(), SpawnError> {
        if let Some(m) = r.memory_bytes {
            if let Some(d) = self.dir("memory") {
                if v2 {
                    write(&d.join("memory.max"), &m.to_string())?;
                    let _ = std::fs::write(d.join("memory.swap.max"), "0");
                } else {
                    write(&d.join("memory.limit_in_bytes"), &m.to_string())?;
                    let memsw = d.join("memory.memsw.limit_in_bytes");
                    if memsw.exists() {
                        write(&memsw, &m.to_string())?;
                    }
                }
            }
        }
        if let Some(n) = r.nano_cpus {
            let period = 100_000u64;
            let quota = (n.saturating_mul(period) / 1_000_000_000).max(1000);
            if let Some(d) = self.dir("cpu") {
                if v2 {
                    write(&d.join("cpu.max"), &format!("{quota} {period}"))?;
                } else {
                    write(&d.join("cpu.cfs_period_us"), &period.to_string())?;
                    write(&d.join("cpu.cfs_quota_us"), &quota.to_string())?;
                }
            }
        }
        if let Some(p) = r.pids_limit {
            if let Some(d) = self.dir("pids") {
                let v = if p <= 0 {
                    "max".to_string()
                } else {
                    p.to_string()
                };
                write(&d.join("pids.max"), &v)?;
            }
        }
        if !privileged && v2 {
            if let Some(d) = self.dir("unified") {
                let rules = DEVICE_RULES
                    .iter()
                    .map(|r| r.to_string())
                    .chain(r.devices.iter().map(device_rule))
                    .map(|r| crate::devfilter::DeviceRule::parse(&r))
                    .collect::<Result<Vec<_>, _>>()?;
                crate::devfilter::attach(d, &rules)?;
            }
        }
        if !privileged && !v2 {
            if let Some(d) = self.dir("devices") {
                write(&d.join("devices.deny"), "a")?;
                // One open file for all rules: the kernel takes one rule per write.
                let path = d.join("devices.allow");
                let mut allow = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(|e| SpawnError::io(format!("opening {}", path.display()), e))?;
                let given = r
                    .devices
                    .iter()
                    .map(|d| format!("{} {}:{} {}", d.kind, d.major, d.minor, d.permissions));
                for rule in DEVICE_RULES.iter().map(|r| r.to_string()).chain(given) {
                    std::io::Write::write_all(&mut allow, rule.as_bytes()).map_err(|e| {
                        SpawnError::io(format!("writing {rule:?} to {}", path.display()), e)
                    })?;
                }
            }
        }
        Ok(())
    }

    /// The files a forked, single-threaded child writes "0" to in order to join, opened for
    /// writing. On v1 these are `tasks`, not `cgroup.procs`: moving only the calling thread
    /// lets the kernel skip the global threadgroup rwsem, whose write side waits for an RCU
    /// grace period (measured here: several ms per start under load). The child has one
    /// thread, so moving it moves the process.
    pub fn procs_files(&self) -> Result<Vec<OwnedFd>, SpawnError> {
        let file = match layout()? {
            Layout::V1(_) => "tasks",
            Layout::V2(_) => "cgroup.procs",
        };
        let mut seen: Vec<&Path> = Vec::new();
        self.dirs
            .iter()
            // Co-mounted controllers (cpu,cpuacct) share one directory: join it once.
            .filter(|(_, d)| {
                let first = !seen.contains(&d.as_path());
                seen.push(d);
                first
            })
            .map(|(_, d)| {
                let p = d.join(file);
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&p)
                    .map(OwnedFd::from)
                    .map_err(|e| SpawnError::io(format!("opening {}", p.display()), e))
            })
            .collect()
    }

    /// Memory, CPU and process figures.
    pub fn stats(&self) -> Result<CgroupStats, SpawnError> {
        let mut s = CgroupStats::default();
        let v2 = matches!(layout()?, Layout::V2(_));
        if let Some(d) = self.dir("memory") {
            if !d.is_dir() {
                return Err(SpawnError::setup(format!("cgroup {} is gone", d.display())));
            }
            if v2 {
                s.memory_usage = read_u64(&d.join("memory.current")).unwrap_or(0);
                s.memory_limit = read_u64(&d.join("memory.max")).unwrap_or(0);
            } else {
                s.memory_usage = read_u64(&d.join("memory.usage_in_bytes")).unwrap_or(0);
                s.memory_limit = read_u64(&d.join("memory.limit_in_bytes")).unwrap_or(0);
            }
        }
        let host = host_memory();
        if s.memory_limit == 0 || s.memory_limit > host {
            s.memory_limit = host;
        }
        if v2 {
            if let Some(d) = self.dir("cpu") {
                let stat = std::fs::read_to_string(d.join("cpu.stat")).unwrap_or_default();
                s.cpu_usage_ns = stat
                    .lines()
                    .find_map(|l| l.strip_prefix("usage_usec "))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map_or(0, |u| u * 1000);
            }
        } else if let Some(d) = self.dir("cpuacct") {
            s.cpu_usage_ns = read_u64(&d.join("cpuacct.usage")).unwrap_or(0);
        }
        if let Some(d) = self.dir("pids") {
            s.pids_current = read_u64(&d.join("pids.current")).unwrap_or(0);
        }
        Ok(s)
    }

    /// Whether the kernel's OOM killer killed something in it.
    pub fn oom_killed(&self) -> bool {
        let Some(d) = self.dir("memory") else {
            return false;
        };
        let text = std::fs::read_to_string(d.join("memory.oom_control"))
            .or_else(|_| std::fs::read_to_string(d.join("memory.events")))
            .unwrap_or_default();
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
    }

    /// Processes in it.
    pub fn pids(&self) -> Result<Vec<i32>, SpawnError> {
        let d = self
            .dir("pids")
            .or_else(|| self.dir("memory"))
            .ok_or_else(|| SpawnError::setup("no cgroup directory"))?;
        let text = std::fs::read_to_string(d.join("cgroup.procs"))
            .map_err(|e| SpawnError::io(format!("reading {}", d.display()), e))?;
        Ok(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Sends `signal` to every process in it.
    pub fn kill_all(&self, signal: i32) -> Result<(), SpawnError> {
        for pid in self.pids().unwrap_or_default() {
            // SAFETY: kill with a pid read from the cgroup.
            unsafe { libc::kill(pid, signal) };
        }
        Ok(())
    }

    /// Removes the directories (waiting briefly for exiting processes). Idempotent.
    pub fn remove(&self) -> Result<(), SpawnError> {
        let mut last = None;
        for (_, d) in &self.dirs {
            for attempt in 0..50 {
                match std::fs::remove_dir(d) {
                    Ok(()) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
                    Err(e) => {
                        if attempt == 49 {
                            last = Some(SpawnError::io(format!("removing {}", d.display()), e));
                        } else {
                            std::thread::sleep(std::time::Duration::from_millis(2));
                        }
                    }
                }
            }
        }
        last.map_or(Ok(()), Err)
    }
}

/// Devices a container may use (v1 devices cgroup): mknod of anything, plus the nodes its /dev
/// has (null, zero, full, random, urandom, tty, console, ptmx, pts).
const DEVICE_RULES: &[&str] = &[
    "c *:* m",
    "b *:* m",
    "c 1:3 rwm",
    "c 1:5 rwm",
    "c 1:7 rwm",
    "c 1:8 rwm",
    "c 1:9 rwm",
    "c 5:0 rwm",
    "c 5:1 rwm",
    "c 5:2 rwm",
    "c 136:* rwm",
    "c 10:200 rwm",
];

/// A `--device`'s rule, as the v1 file takes it.
fn device_rule(d: &crate::DeviceSpec) -> String {
    format!("{} {}:{} {}", d.kind, d.major, d.minor, d.permissions)
}

/// Refuses limits Docker refuses, before anything is created.
fn validate(r: &crate::Resources) -> Result<(), SpawnError> {
    if let Some(m) = r.memory_bytes {
        if m < 6 * 1024 * 1024 {
            return Err(SpawnError::setup("Minimum memory limit allowed is 6MB"));
        }
    }
    if let Some(n) = r.nano_cpus {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
        if !(10_000_000..=cpus * 1_000_000_000).contains(&n) {
            return Err(SpawnError::setup(format!(
                "range of CPUs is from 0.01 to {cpus}.00, as there are only {cpus} CPUs available"
            )));
        }
    }
    Ok(())
}

/// Creates `cgroup_parent` in a hierarchy once per process (delegating v2 controllers, and on
/// v1 making new cpuset children copy the parent's cpus/mems). Returns whether cpuset
/// children inherit by themselves (else the caller copies).
fn prepare_parent(controller: &str, parent: &Path, v2: bool) -> Result<bool, SpawnError> {
    static PREPARED: std::sync::Mutex<Vec<(PathBuf, bool)>> = std::sync::Mutex::new(Vec::new());
    let mut prepared = PREPARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some((_, inherits)) = prepared.iter().find(|(p, _)| p == parent) {
        return Ok(*inherits);
    }
    std::fs::create_dir_all(parent)
        .map_err(|e| SpawnError::io(format!("creating {}", parent.display()), e))?;
    if v2 {
        // Best effort: a controller the root does not offer is simply not limited.
        let _ = std::fs::write(parent.join("cgroup.subtree_control"), "+memory +pids +cpu");
    }
    let mut inherits = false;
    if controller == "cpuset" {
        copy_cpuset(parent)?;
        inherits = std::fs::write(parent.join("cgroup.clone_children"), "1").is_ok();
    }
    prepared.push((parent.to_path_buf(), inherits));
    Ok(inherits)
}

/// A new cpuset cgroup starts with empty cpus/mems: copy the parent's.
fn copy_cpuset(d: &Path) -> Result<(), SpawnError> {
    let Some(parent) = d.parent() else {
        return Ok(());
    };
    for f in ["cpuset.cpus", "cpuset.mems"] {
        let own = std::fs::read_to_string(d.join(f)).unwrap_or_default();
        if own.trim().is_empty() {
            let v = std::fs::read_to_string(parent.join(f)).unwrap_or_default();
            if !v.trim().is_empty() {
                write(&d.join(f), v.trim())?;
            }
        }
    }
    Ok(())
}

/// Removes the parent cgroup in every hierarchy if it is empty (the monitor is stopping and
/// its containers are gone). A parent that still has children is left alone.
pub fn remove_parent_if_empty(parent: &str) -> Result<(), SpawnError> {
    if !valid_name(parent) {
        return Err(SpawnError::setup(format!("invalid cgroup parent {parent}")));
    }
    let roots: Vec<PathBuf> = match layout()? {
        Layout::V1(c) => c.iter().map(|(_, m)| m.join(parent)).collect(),
        Layout::V2(m) => vec![m.join(parent)],
    };
    for root in roots {
        // rmdir fails with EBUSY/ENOTEMPTY while children exist: exactly what we want.
        let _ = std::fs::remove_dir(&root);
    }
    Ok(())
}

/// Removes cgroups under `parent` whose container id is not in `live` (after a crash);
/// processes left in them are killed first. Returns the ids removed.
pub fn remove_stale_cgroups(parent: &str, live: &[String]) -> Result<Vec<String>, SpawnError> {
    if !valid_name(parent) {
        return Err(SpawnError::setup(format!("invalid cgroup parent {parent}")));
    }
    let roots: Vec<PathBuf> = match layout()? {
        Layout::V1(c) => c.iter().map(|(_, m)| m.join(parent)).collect(),
        Layout::V2(m) => vec![m.join(parent)],
    };
    let mut removed = Vec::new();
    for root in roots {
        let Ok(entries) = std::fs::read_dir(&root) else {
            continue;
        };
        for e in entries.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !e.path().is_dir() || live.contains(&id) {
                continue;
            }
            if let Ok(cg) = Cgroup::open(parent, &id) {
                let _ = cg.kill_all(libc::SIGKILL);
                let _ = cg.remove();
            }
            if !removed.contains(&id) {
                removed.push(id);
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_are_recognised() {
        let hybrid =
            "30 25 0:26 / /sys/fs/cgroup/memory rw,relatime shared:9 - cgroup cgroup rw,memory\n\
                      31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n\
                      32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        match parse_layout(hybrid) {
            Some(Layout::V1(c)) => {
                assert!(c.contains(&("memory".into(), "/sys/fs/cgroup/memory".into())));
                assert!(c.contains(&("cpuacct".into(), "/sys/fs/cgroup/cpu,cpuacct".into())));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(parse_layout("1 2 3 / /proc rw - proc proc rw\n"), None);
    }

    #[test]
    fn views_remount_each_hierarchy_with_its_own_controller_set() {
        let hybrid = "30 25 0:26 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n\
                      31 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,xattr,cpu,cpuacct\n\
                      33 25 0:29 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd\n\
                      32 25 0:28 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw\n";
        let layout = parse_layout(hybrid).expect("v1");
        let views = parse_views(&layout, hybrid);
        let v = |dir: &str| {
            views
                .iter()
                .find(|v| v.dir == dir)
                .map(|v| v.options.as_str())
        };
        assert_eq!(v("memory"), Some("memory"));
        assert_eq!(v("cpu"), Some("cpu,cpuacct"));
        assert_eq!(v("cpuacct"), Some("cpu,cpuacct"));
        // Not a hierarchy the container is placed in.
        assert!(views.iter().all(|v| !v.options.contains("systemd")));
        let v2 = parse_views(&Layout::V2("/sys/fs/cgroup".into()), "");
        assert_eq!(v2.len(), 1);
        assert_eq!((v2[0].dir.as_str(), v2[0].fstype), ("", "cgroup2"));
    }
}
