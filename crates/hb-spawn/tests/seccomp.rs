//! Owns the integration tests of `hb_spawn::seccomp`: each case forks a child that sets
//! no_new_privs, installs the compiled Docker default filter, makes one syscall and reports its
//! errno through the exit code. Blocked cases also run a control child without the filter, so a
//! test fails if the kernel itself would have answered EPERM. Needs root (skips otherwise).

use std::ffi::CString;
use std::time::{Duration, Instant};

use hb_spawn::seccomp::{docker_default, install};
use seccompiler::BpfProgram;

/// Exit code a child uses when installing the filter failed (no errno is that large).
const INSTALL_FAILED: i32 = 255;

/// How a forked case ended.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Outcome {
    /// The syscall succeeded.
    Ok,
    /// The syscall failed with this errno.
    Errno(i32),
    /// The child was killed by this signal.
    Killed(i32),
}

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: seccomp tests need root (fork, no_new_privs, privileged syscalls)");
        return false;
    }
    true
}

fn caps(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| name.to_string()).collect()
}

fn compile(granted: &[&str]) -> BpfProgram {
    docker_default(&caps(granted)).unwrap()
}

fn errno() -> i32 {
    // SAFETY: errno location of the calling thread.
    unsafe { *libc::__errno_location() }
}

/// Forks; the child sets no_new_privs, installs `program` (if any) and runs `case`, which
/// returns the raw syscall result (-1 with errno set on failure). Only async-signal-safe work
/// happens in the child: everything it needs is prepared before the fork.
fn run_case(program: Option<&BpfProgram>, case: impl FnOnce() -> i64) -> Outcome {
    // SAFETY: the child only makes raw syscalls and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // SAFETY: plain prctl/_exit in the forked child.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                libc::_exit(INSTALL_FAILED);
            }
            if let Some(program) = program {
                if install(program).is_err() {
                    libc::_exit(INSTALL_FAILED);
                }
            }
            let rc = case();
            libc::_exit(if rc == -1 { errno() } else { 0 });
        }
    }
    wait_outcome(pid)
}

fn wait_outcome(pid: libc::pid_t) -> Outcome {
    let mut status = 0;
    loop {
        // SAFETY: waiting for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, 0) };
        if rc == pid {
            break;
        }
        assert!(rc == -1 && errno() == libc::EINTR, "waitpid({pid}) failed");
    }
    if libc::WIFSIGNALED(status) {
        return Outcome::Killed(libc::WTERMSIG(status));
    }
    match libc::WEXITSTATUS(status) {
        0 => Outcome::Ok,
        INSTALL_FAILED => panic!("child could not install the seccomp filter"),
        code => Outcome::Errno(code),
    }
}

/// Asserts the filter answers EPERM while the kernel alone would not.
fn assert_blocked(name: &str, program: &BpfProgram, case: impl Fn() -> i64) {
    let control = run_case(None, &case);
    assert_ne!(
        control,
        Outcome::Errno(libc::EPERM),
        "{name}: the kernel itself answers EPERM, the test could not tell the filter apart"
    );
    let filtered = run_case(Some(program), &case);
    assert_eq!(
        filtered,
        Outcome::Errno(libc::EPERM),
        "{name} under the filter"
    );
}

/// Asserts the filter lets the call through: same outcome as without filter.
fn assert_passes(name: &str, program: &BpfProgram, case: impl Fn() -> i64) {
    let control = run_case(None, &case);
    let filtered = run_case(Some(program), &case);
    assert_eq!(filtered, control, "{name}: filter changed the outcome");
    assert_ne!(filtered, Outcome::Errno(libc::EPERM), "{name}");
}

/// Reaps a child created by a raw clone in a case; returns 0 when it exited with 0.
fn reap(pid: i64) -> i64 {
    if pid == 0 {
        // SAFETY: we are the freshly cloned grandchild.
        unsafe { libc::_exit(0) };
    }
    if pid < 0 {
        return -1;
    }
    let mut status = 0;
    // SAFETY: waiting for the grandchild we just created.
    let rc = unsafe { libc::waitpid(pid as libc::pid_t, &mut status, libc::__WALL) };
    if rc as i64 == pid && libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0 {
        0
    } else {
        // SAFETY: set errno for the reporting path.
        unsafe { *libc::__errno_location() = libc::ECHILD };
        -1
    }
}

const MISSING_PATH: &str = "/nonexistent-hb-seccomp-test";

#[test]
fn allowed_syscalls_work() {
    if !is_root() {
        return;
    }
    let program = compile(&[]);
    let dev_null = CString::new("/dev/null").unwrap();
    // SAFETY: opening a path we own the CString of.
    let null_fd = unsafe { libc::open(dev_null.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    assert!(null_fd >= 0);

    // SAFETY (all cases below): raw syscalls with valid or deliberately invalid arguments.
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(libc::SYS_getpid)
        }),
        Outcome::Ok
    );
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(libc::SYS_write, null_fd, b"x".as_ptr(), 1)
        }),
        Outcome::Ok
    );
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(
                libc::SYS_openat,
                libc::AT_FDCWD,
                dev_null.as_ptr(),
                libc::O_RDONLY,
            )
        }),
        Outcome::Ok
    );
    // fork: clone without namespace flags.
    assert_eq!(
        run_case(Some(&program), || reap(unsafe {
            libc::syscall(libc::SYS_clone, libc::SIGCHLD, 0, 0, 0, 0)
        })),
        Outcome::Ok
    );
    // Query the persona (0xffffffff) and set PER_LINUX: both in moby's list.
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(libc::SYS_personality, 0xffff_ffffu64)
        }),
        Outcome::Ok
    );
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(libc::SYS_personality, 0)
        }),
        Outcome::Ok
    );
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0)
        }),
        Outcome::Ok
    );
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(libc::SYS_socket, libc::AF_UNIX, libc::SOCK_STREAM, 0)
        }),
        Outcome::Ok
    );
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(null_fd) };
}

#[test]
fn execve_of_bin_true_runs_under_the_filter() {
    if !is_root() {
        return;
    }
    let program = compile(&[]);
    let path = CString::new("/bin/true").unwrap();
    let argv = [path.as_ptr(), std::ptr::null()];
    let envp = [std::ptr::null::<libc::c_char>()];
    // /bin/true's dynamic loader and libc start-up run under the filter too; exit 0 means all
    // of them were allowed.
    let outcome = run_case(Some(&program), || unsafe {
        libc::syscall(
            libc::SYS_execve,
            path.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
        )
    });
    assert_eq!(outcome, Outcome::Ok);
}

#[test]
fn privileged_syscalls_are_blocked_with_eperm() {
    if !is_root() {
        return;
    }
    let program = compile(&[]);
    let missing = CString::new(MISSING_PATH).unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    let empty = CString::new("").unwrap();

    // SAFETY (all cases): raw syscalls whose arguments make the kernel fail harmlessly
    // (missing paths, bad magic, bad flags) when the filter lets them through.
    assert_blocked("mount", &program, || unsafe {
        libc::syscall(
            libc::SYS_mount,
            tmpfs.as_ptr(),
            missing.as_ptr(),
            tmpfs.as_ptr(),
            0,
            0,
        )
    });
    assert_blocked("umount2", &program, || unsafe {
        libc::syscall(libc::SYS_umount2, missing.as_ptr(), 0)
    });
    assert_blocked("unshare(CLONE_NEWNS)", &program, || unsafe {
        libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS)
    });
    assert_blocked("setns", &program, || unsafe {
        libc::syscall(libc::SYS_setns, -1, 0)
    });
    assert_blocked("keyctl(GET_KEYRING_ID)", &program, || unsafe {
        libc::syscall(libc::SYS_keyctl, 0, -2, 1)
    });
    assert_blocked("add_key", &program, || unsafe {
        libc::syscall(libc::SYS_add_key, empty.as_ptr(), 0, 0, 0, 0)
    });
    assert_blocked("init_module", &program, || unsafe {
        libc::syscall(libc::SYS_init_module, 0, 0, empty.as_ptr())
    });
    assert_blocked("finit_module", &program, || unsafe {
        libc::syscall(libc::SYS_finit_module, -1, empty.as_ptr(), 0)
    });
    assert_blocked("delete_module", &program, || unsafe {
        libc::syscall(libc::SYS_delete_module, missing.as_ptr(), 0)
    });
    // Bad magic: the kernel answers EINVAL after the capability check, never reboots.
    assert_blocked("reboot", &program, || unsafe {
        libc::syscall(libc::SYS_reboot, 0, 0, 0, 0)
    });
    // Unknown flag 0x8000: rejected before anything is loaded or unloaded.
    assert_blocked("kexec_load", &program, || unsafe {
        libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0x8000)
    });
    assert_blocked("open_by_handle_at", &program, || unsafe {
        libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0)
    });
    assert_blocked("bpf", &program, || unsafe {
        libc::syscall(libc::SYS_bpf, 0xffff, 0, 0)
    });
    assert_blocked("clone(CLONE_NEWUSER)", &program, || {
        reap(unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWUSER | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        })
    });
    assert_blocked("clone(CLONE_NEWNET)", &program, || {
        reap(unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWNET | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        })
    });
    assert_blocked("clock_settime", &program, || unsafe {
        libc::syscall(libc::SYS_clock_settime, libc::CLOCK_REALTIME, 0)
    });
    assert_blocked("chroot", &program, || unsafe {
        libc::syscall(libc::SYS_chroot, missing.as_ptr())
    });
    assert_blocked("socket(AF_VSOCK)", &program, || unsafe {
        libc::syscall(libc::SYS_socket, libc::AF_VSOCK, libc::SOCK_STREAM, 0)
    });
    assert_blocked("socket(AF_ALG)", &program, || unsafe {
        libc::syscall(libc::SYS_socket, libc::AF_ALG, libc::SOCK_SEQPACKET, 0)
    });
    assert_blocked("personality(ADDR_NO_RANDOMIZE)", &program, || unsafe {
        libc::syscall(libc::SYS_personality, 0x0040000)
    });
    // A number no kernel knows: the default action, not ENOSYS.
    assert_blocked("syscall 1000", &program, || unsafe { libc::syscall(1000) });
}

#[test]
fn clone3_answers_enosys_so_libc_falls_back_to_clone() {
    if !is_root() {
        return;
    }
    // SAFETY: clone3 with a null, zero-sized argument is refused by the kernel (EINVAL).
    let case = || unsafe { libc::syscall(libc::SYS_clone3, 0, 0) };
    assert_eq!(run_case(None, case), Outcome::Errno(libc::EINVAL));
    assert_eq!(
        run_case(Some(&compile(&[])), case),
        Outcome::Errno(libc::ENOSYS)
    );
    assert_eq!(
        run_case(Some(&compile(&["CAP_SYS_ADMIN"])), case),
        Outcome::Errno(libc::EINVAL)
    );
}

#[test]
fn ptrace_is_allowed_like_moby_on_kernels_since_4_8() {
    if !is_root() {
        return;
    }
    // moby allows ptrace without CAP_SYS_PTRACE from kernel 4.8 on (seccomp is re-checked
    // after a tracer changes the syscall); the kernel then applies its own permission checks.
    // PTRACE_GETREGS on init, which we do not trace: ESRCH from the kernel.
    assert_passes("ptrace", &compile(&[]), || unsafe {
        libc::syscall(libc::SYS_ptrace, libc::PTRACE_GETREGS, 1, 0, 0)
    });
    // process_vm_readv likewise (zero iovecs from our own pid: success).
    assert_passes("process_vm_readv", &compile(&[]), || unsafe {
        libc::syscall(libc::SYS_process_vm_readv, libc::getpid(), 0, 0, 0, 0, 0)
    });
    // kcmp stays behind CAP_SYS_PTRACE.
    let kcmp = || unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            libc::getpid(),
            libc::getpid(),
            0, /* KCMP_FILE */
            0,
            0,
        )
    };
    assert_blocked("kcmp", &compile(&[]), kcmp);
    assert_passes(
        "kcmp with CAP_SYS_PTRACE",
        &compile(&["CAP_SYS_PTRACE"]),
        kcmp,
    );
}

#[test]
fn cap_sys_admin_unlocks_mount_unshare_and_namespace_clone() {
    if !is_root() {
        return;
    }
    let program = compile(&["CAP_SYS_ADMIN"]);
    let missing = CString::new(MISSING_PATH).unwrap();
    let tmpfs = CString::new("tmpfs").unwrap();
    // The kernel answers ENOENT for the missing mountpoint: the filter let the call through.
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(
                libc::SYS_mount,
                tmpfs.as_ptr(),
                missing.as_ptr(),
                tmpfs.as_ptr(),
                0,
                0,
            )
        }),
        Outcome::Errno(libc::ENOENT)
    );
    // The new namespace dies with the child.
    assert_eq!(
        run_case(Some(&program), || unsafe {
            libc::syscall(libc::SYS_unshare, libc::CLONE_NEWNS)
        }),
        Outcome::Ok
    );
    assert_eq!(
        run_case(Some(&program), || reap(unsafe {
            libc::syscall(
                libc::SYS_clone,
                libc::CLONE_NEWUSER | libc::SIGCHLD,
                0,
                0,
                0,
                0,
            )
        })),
        Outcome::Ok
    );
    // Still blocked: not gated by CAP_SYS_ADMIN in moby's profile.
    assert_blocked("keyctl with CAP_SYS_ADMIN", &program, || unsafe {
        libc::syscall(libc::SYS_keyctl, 0, -2, 1)
    });
    assert_blocked("reboot with CAP_SYS_ADMIN", &program, || unsafe {
        libc::syscall(libc::SYS_reboot, 0, 0, 0, 0)
    });
}

#[test]
fn other_caps_unlock_their_groups() {
    if !is_root() {
        return;
    }
    let empty = CString::new("").unwrap();
    let missing = CString::new(MISSING_PATH).unwrap();
    // SAFETY (all cases): raw syscalls the kernel refuses harmlessly.
    assert_passes(
        "reboot with CAP_SYS_BOOT",
        &compile(&["CAP_SYS_BOOT"]),
        || unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, 0) },
    );
    assert_passes(
        "finit_module with CAP_SYS_MODULE",
        &compile(&["CAP_SYS_MODULE"]),
        || unsafe { libc::syscall(libc::SYS_finit_module, -1, empty.as_ptr(), 0) },
    );
    assert_passes(
        "clock_settime with CAP_SYS_TIME",
        &compile(&["CAP_SYS_TIME"]),
        || unsafe { libc::syscall(libc::SYS_clock_settime, libc::CLOCK_REALTIME, 0) },
    );
    assert_passes(
        "chroot with sys_chroot",
        &compile(&["sys_chroot"]),
        || unsafe { libc::syscall(libc::SYS_chroot, missing.as_ptr()) },
    );
    assert_passes("bpf with CAP_BPF", &compile(&["CAP_BPF"]), || unsafe {
        libc::syscall(libc::SYS_bpf, 0xffff, 0, 0)
    });
    assert_passes(
        "open_by_handle_at with CAP_DAC_READ_SEARCH",
        &compile(&["CAP_DAC_READ_SEARCH"]),
        || unsafe { libc::syscall(libc::SYS_open_by_handle_at, -1, 0, 0) },
    );
    // A granted cap unlocks only its own group.
    assert_blocked(
        "mount with CAP_SYS_BOOT",
        &compile(&["CAP_SYS_BOOT"]),
        || unsafe { libc::syscall(libc::SYS_umount2, missing.as_ptr(), 0) },
    );
}

#[cfg(target_arch = "x86_64")]
#[test]
fn foreign_abis_are_refused() {
    if !is_root() {
        return;
    }
    let program = compile(&[]);
    // i386 getpid (20) through int 0x80: another audit arch, so the arch check kills.
    let i386_getpid = || {
        let ret: i32;
        // SAFETY: int 0x80 with a valid i386 syscall number; it may clobber r8-r11.
        unsafe {
            std::arch::asm!(
                "int 0x80",
                inlateout("eax") 20i32 => ret,
                out("r8") _, out("r9") _, out("r10") _, out("r11") _,
                options(nostack)
            );
        }
        i64::from(ret)
    };
    if run_case(None, i386_getpid) != Outcome::Ok {
        println!("i386 emulation unavailable: int 0x80 case skipped");
    } else {
        assert_eq!(
            run_case(Some(&program), i386_getpid),
            Outcome::Killed(libc::SIGSYS)
        );
    }
    // x32 getpid: the x32 bit makes the number match nothing, so EPERM.
    const X32_SYSCALL_BIT: i64 = 0x4000_0000;
    assert_blocked("x32 getpid", &program, || unsafe {
        libc::syscall(X32_SYSCALL_BIT | libc::SYS_getpid)
    });
}

#[test]
fn install_refuses_an_empty_program() {
    assert!(install(&Vec::new()).is_err());
}

/// Sends one u64 through a pipe from the child to the parent.
fn measure_in_child(program: &BpfProgram, measure: impl Fn(&BpfProgram) -> u64) -> u64 {
    let mut fds = [0; 2];
    // SAFETY: fds is a valid two-int array.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    let outcome = run_case(None, || {
        let value = measure(program);
        // SAFETY: writing 8 bytes from a local to the pipe's write end.
        unsafe { libc::write(fds[1], (&value as *const u64).cast(), 8) as i64 }
    });
    assert_eq!(outcome, Outcome::Ok);
    let mut value = 0u64;
    // SAFETY: reading 8 bytes into a local; closing our pipe ends.
    unsafe {
        assert_eq!(libc::read(fds[0], (&mut value as *mut u64).cast(), 8), 8);
        libc::close(fds[0]);
        libc::close(fds[1]);
    }
    value
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid timespec pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[test]
fn measure_compile_and_install_time() {
    if !is_root() {
        return;
    }
    for granted in [vec![], vec!["CAP_SYS_ADMIN"]] {
        let rounds = 50;
        let start = Instant::now();
        let mut program = compile(&granted);
        for _ in 1..rounds {
            program = compile(&granted);
        }
        let compile_time = start.elapsed() / rounds;
        let install_ns = measure_in_child(&program, |program| {
            let start = monotonic_ns();
            if install(program).is_err() {
                return u64::MAX;
            }
            monotonic_ns() - start
        });
        assert_ne!(install_ns, u64::MAX, "install failed in the child");
        // Cost of a syscall the filter must inspect (personality's argument) and of a plain
        // allowed one, per call, under the filter and without.
        let loops = 200_000;
        let per_call = |filtered: bool, nr: i64, arg: u64| {
            measure_in_child(&program, move |program| {
                if filtered && install(program).is_err() {
                    return u64::MAX;
                }
                let start = monotonic_ns();
                for _ in 0..loops {
                    // SAFETY: getpid / personality query have no side effects.
                    unsafe { libc::syscall(nr, arg) };
                }
                (monotonic_ns() - start) / loops
            })
        };
        println!(
            "caps {granted:?}: {} BPF instructions, compile {:?}, install {:?}, getpid {} ns \
             (unfiltered {} ns), personality query {} ns (unfiltered {} ns)",
            program.len(),
            compile_time,
            Duration::from_nanos(install_ns),
            per_call(true, libc::SYS_getpid, 0),
            per_call(false, libc::SYS_getpid, 0),
            per_call(true, libc::SYS_personality, 0xffff_ffff),
            per_call(false, libc::SYS_personality, 0xffff_ffff),
        );
        assert!(compile_time < Duration::from_millis(100));
    }
    // Baseline: installing a 6-instruction filter, to separate the kernel's fixed cost from
    // the per-instruction cost (verifier and the per-syscall-number verdict cache).
    let tiny: BpfProgram = seccompiler::SeccompFilter::new(
        [(libc::SYS_keyctl, vec![])].into_iter().collect(),
        seccompiler::SeccompAction::Allow,
        seccompiler::SeccompAction::Errno(libc::EPERM as u32),
        seccompiler::TargetArch::x86_64,
    )
    .and_then(BpfProgram::try_from)
    .unwrap();
    let tiny_ns = measure_in_child(&tiny, |program| {
        let start = monotonic_ns();
        if install(program).is_err() {
            return u64::MAX;
        }
        monotonic_ns() - start
    });
    println!(
        "baseline: {} BPF instructions install {:?}",
        tiny.len(),
        Duration::from_nanos(tiny_ns)
    );
}
