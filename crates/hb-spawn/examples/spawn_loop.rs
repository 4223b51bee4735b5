//! Spawn-loop benchmark: starts `/bin/true` N times (default 200) in a busybox overlay with
//! Docker's default isolation and NetworkMode::None, waits for each, removes its cgroup, and
//! prints median and p99 of each phase, wall-clock and CPU (the child's own CPU from wait4's
//! rusage, the caller's from getrusage: CPU time is what stays meaningful on a loaded machine).
//! Run as root: `[HB_NET=host|pool] cargo run --release -p hb-spawn --example spawn_loop -- [N]`
//! (`pool`: NetworkMode::Path into namespaces made before the timed loop, as the monitor's pool).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use hb_spawn::{
    Cgroup, ContainerSpec, NetworkMode, ProcessSpec, Resources, RootfsSpec, Spawner, Stdio,
};

/// A new network namespace, kept alive by the returned file (we switch into it and back).
fn new_netns() -> Result<std::fs::File, Box<dyn std::error::Error>> {
    let ours = std::fs::File::open("/proc/thread-self/ns/net")?;
    // SAFETY: unshare/setns affect only this thread's network namespace.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNET) != 0 {
            return Err(std::io::Error::last_os_error().into());
        }
    }
    let made = std::fs::File::open("/proc/thread-self/ns/net");
    // SAFETY: back to the namespace we came from.
    if unsafe { libc::setns(ours.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(made?)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<36} median {:>8.3} ms   p99 {:>8.3} ms",
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.99).as_secs_f64() * 1e3
    );
}

fn tv(t: libc::timeval) -> Duration {
    Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
}

/// This process's CPU time (user + system), from a per-thread clock precise to the ns.
fn self_cpu() -> Duration {
    // SAFETY: an all-zero timespec is valid.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn null() -> Result<OwnedFd, Box<dyn std::error::Error>> {
    Ok(OwnedFd::from(
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")?,
    ))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || !Path::new("/bin/busybox").exists() {
        eprintln!("spawn_loop needs root and /bin/busybox");
        std::process::exit(2);
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(200);
    let dir = tempfile::tempdir()?;
    let lower = dir.path().join("layers/base");
    for d in ["bin", "etc", "proc", "sys", "dev", "tmp"] {
        std::fs::create_dir_all(lower.join(d))?;
    }
    std::fs::copy("/bin/busybox", lower.join("bin/busybox"))?;
    std::os::unix::fs::symlink("busybox", lower.join("bin/true"))?;
    std::fs::write(lower.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    let c = dir.path().join("c");
    for d in ["upper", "work", "merged"] {
        std::fs::create_dir_all(c.join(d))?;
    }
    let t = Instant::now();
    let spawner = Spawner::new()?;
    println!("Spawner::new: {:.3} ms", t.elapsed().as_secs_f64() * 1e3);
    let mut spec = ContainerSpec {
        id: String::new(),
        rootfs: RootfsSpec {
            lower_dirs: vec![lower],
            upper_dir: c.join("upper"),
            work_dir: c.join("work"),
            merged_dir: c.join("merged"),
            volatile: false,
        },
        process: ProcessSpec {
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            user: String::new(),
            tty: false,
        },
        hostname: "bench".into(),
        mounts: vec![],
        // HB_NET=host or pool to see the cost of a new network namespace.
        network: if std::env::var("HB_NET").as_deref() == Ok("host") {
            NetworkMode::Host
        } else {
            NetworkMode::None
        },
        capabilities: hb_spawn::DEFAULT_CAPABILITIES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        privileged: false,
        seccomp: true,
        no_new_privileges: true,
        resources: Resources::default(),
        cgroup_parent: "hb-spawn-bench".into(),
        readonly_rootfs: false,
    };
    // Calibration on this (possibly busy) machine: plain fork+exec+wait of /bin/true on the host.
    let mut plain = vec![];
    for _ in 0..n {
        let t = Instant::now();
        std::process::Command::new("/bin/true").status()?;
        plain.push(t.elapsed());
    }
    let (mut total, mut to_exec, mut wait, mut remove, mut cg_create, mut cg_remove) =
        (vec![], vec![], vec![], vec![], vec![], vec![]);
    let (mut child_cpu, mut parent_cpu) = (vec![], vec![]);
    let pooled = std::env::var("HB_NET").as_deref() == Ok("pool");
    let mut pool: Vec<std::fs::File> = Vec::new();
    if pooled {
        for _ in 0..n + 5 {
            pool.push(new_netns()?);
        }
    }
    for i in 0..n + 5 {
        spec.id = format!("bench{}x{i}", std::process::id());
        // Keeps this start's pooled namespace open until the start is done.
        let _netns = if pooled {
            let f = pool.pop().ok_or("netns pool ran dry")?;
            spec.network = NetworkMode::Path(format!("/proc/self/fd/{}", f.as_raw_fd()).into());
            Some(f)
        } else {
            None
        };
        let p0 = self_cpu();
        let t0 = Instant::now();
        let s = spawner.spawn(
            &spec,
            Stdio::Fds {
                stdin: null()?,
                stdout: null()?,
                stderr: null()?,
            },
        )?;
        let t1 = Instant::now();
        let mut status = 0;
        // SAFETY: an all-zero rusage is valid.
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: reaping our own child into valid out-pointers.
        unsafe { libc::wait4(s.pid, &mut status, 0, &mut usage) };
        let t2 = Instant::now();
        s.cgroup.remove()?;
        let t3 = Instant::now();
        let p1 = self_cpu();
        if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            return Err(format!("/bin/true ended with status {status:#x}").into());
        }
        // Cgroup directories alone (no process), for the share of mkdir/rmdir in a start.
        let cg_id = format!("{}-cg", spec.id);
        let t4 = Instant::now();
        let cg = Cgroup::create(&spec.cgroup_parent, &cg_id, &spec.resources, false)?;
        let t5 = Instant::now();
        cg.remove()?;
        let t6 = Instant::now();
        if i >= 5 {
            total.push(t3 - t0);
            to_exec.push(t1 - t0);
            wait.push(t2 - t1);
            remove.push(t3 - t2);
            cg_create.push(t5 - t4);
            cg_remove.push(t6 - t5);
            child_cpu.push(tv(usage.ru_utime) + tv(usage.ru_stime));
            parent_cpu.push(p1 - p0);
        }
    }
    println!(
        "{n} starts of /bin/true ({}, seccomp, default caps):",
        if pooled {
            "NetworkMode::Path into a pre-made netns".to_string()
        } else {
            format!("{:?}", spec.network)
        }
    );
    report("host fork+exec+wait (no isolation)", plain);
    report("spawn+wait+cgroup remove", total);
    report("  spawn (until exec)", to_exec);
    report("  wait (exit)", wait);
    report("  cgroup remove", remove);
    report("CPU: child (until its exit)", child_cpu);
    report("CPU: caller (spawn..remove)", parent_cpu);
    report("cgroup create alone", cg_create);
    report("cgroup remove alone", cg_remove);
    // The parent cgroup directories this run made.
    for (_, d) in Cgroup::open(&spec.cgroup_parent, "x")?.dirs() {
        if let Some(p) = d.parent() {
            let _ = std::fs::remove_dir(p);
        }
    }
    Ok(())
}
