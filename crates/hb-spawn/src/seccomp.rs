//! Owns Docker's default seccomp profile for HyperBox containers: moby's
//! `profiles/seccomp/default.json` rewritten as Rust tables, compiled to classic BPF with
//! `seccompiler`, and the async-signal-safe installer the spawner calls right before exec.
//!
//! Architectures: x86_64 (tables of libc's `SYS_*` names) and aarch64 (asm-generic numbers,
//! written as (name, number) and checked by a unit test against asm-generic/unistd.h and, for
//! the numbers every architecture shares since 424, against the x86_64 table). Only x86_64 is
//! run against a kernel here; the aarch64 program is checked in a BPF interpreter. Other
//! architectures get [`SeccompError::UnsupportedArch`].
//!
//! What is included (matching moby's profile on a kernel >= 4.8):
//! - default action `ERRNO(EPERM)` (moby's `defaultErrnoRet: 1`);
//! - the unconditional allowlist (moby's big `names` list, the names that exist on the arch),
//!   plus `arch_prctl` and `modify_ldt` on x86_64 (moby's amd64-only entries; its arm64
//!   entries exist only in the 32-bit arm ABI);
//! - `ptrace`, `process_vm_readv`, `process_vm_writev` allowed when the running kernel is >= 4.8
//!   (moby's `minKernel: 4.8`; before 4.8 ptrace could bypass seccomp);
//! - `socket` allowed for every domain except `AF_ALG` (38) and `AF_VSOCK` (40);
//! - `personality` allowed only for 0, `PER_LINUX32`, `UNAME26`, `PER_LINUX32|UNAME26`, and the
//!   query value 0xffffffff;
//! - `clone` allowed only without `CLONE_NEW*` namespace flags, `clone3` answered with `ENOSYS`
//!   (so libc falls back to `clone`, whose flags the filter can inspect), unless `CAP_SYS_ADMIN`
//!   is granted, in which case both are allowed;
//! - the cap-gated groups (`CAP_SYS_ADMIN`, `CAP_DAC_READ_SEARCH`, `CAP_SYS_BOOT`,
//!   `CAP_SYS_CHROOT`, `CAP_SYS_MODULE`, `CAP_SYS_PACCT`, `CAP_SYS_PTRACE`, `CAP_SYS_RAWIO`,
//!   `CAP_SYS_TIME`, `CAP_SYS_TTY_CONFIG`, `CAP_SYS_NICE`, `CAP_SYSLOG`, `CAP_BPF`,
//!   `CAP_PERFMON`), each allowed when the container holds the capability (aarch64 has no
//!   `iopl`/`ioperm`, so `CAP_SYS_RAWIO` unlocks nothing there).
//!
//! Differences from Docker (libseccomp):
//! - only the native ABI is allowed: an i386 syscall (`int 0x80`, another audit arch) or a
//!   32-bit arm one on aarch64 kills the process, an x32 number (bit 30 set) matches nothing and
//!   gets EPERM, where Docker allows i386, x32 and arm binaries;
//! - arguments are compared on their low 32 bits (`Dword`): every argument moby inspects
//!   (`socket` domain, `personality` persona, `clone` flags mask) is 32 bits wide in the kernel;
//! - names of moby's list that do not exist on the architecture (`chown32`, `_llseek`, and on
//!   aarch64 also `open`, `fork`, `iopl`, ...) are left out,
//!   as libseccomp does; syscalls newer than moby's list get EPERM, as in Docker.
//!
//! Layout: `seccompiler` compiles rules into a linear list of comparisons with one match and
//! one mismatch action. Here it compiles only the argument checks (one small filter per
//! argument-checked syscall); this module emits the dispatch over syscall numbers as a binary
//! search (like libseccomp) and the per-syscall errno answers (`clone3` → ENOSYS) seccompiler
//! cannot express. That cuts the program from ~1600 to ~200 instructions, the longest path to
//! ~30, and the install time (the kernel precomputes a verdict per syscall number) from ~1 ms to
//! ~0.15 ms.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::io;

use seccompiler::{
    sock_filter, BackendError, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};

/// The kernel's limit on the length of a classic BPF program (`BPF_MAXINSNS`).
const BPF_MAX_LEN: usize = 4096;

/// Errors of this module (own type so the two engineers' code doesn't collide; the spawner wraps it).
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The profile tables exist only for x86_64 and aarch64.
    #[error("docker default seccomp profile is only written for x86_64 and aarch64, not {arch}")]
    UnsupportedArch {
        /// The architecture this binary was built for.
        arch: &'static str,
    },
    /// A rule of the profile could not be expressed with `seccompiler`.
    #[error("seccomp rule for syscall {syscall} ({what}): {source}")]
    Rule {
        /// Syscall number the rule is about.
        syscall: i64,
        /// Which rule of the profile.
        what: &'static str,
        /// The compiler's complaint.
        source: BackendError,
    },
    /// Compiling the argument checks of a syscall to BPF failed.
    #[error("compiling docker default seccomp profile for caps [{caps}] to BPF: {source}")]
    Compile {
        /// The granted capabilities, comma separated.
        caps: String,
        /// The compiler's complaint.
        source: BackendError,
    },
    /// A syscall number of the tables does not fit the kernel's 32-bit `nr`.
    #[error("syscall number {syscall} is out of range for a seccomp filter")]
    SyscallNumber {
        /// The offending number.
        syscall: i64,
    },
    /// The program is empty or longer than the kernel accepts.
    #[error("seccomp program has {len} BPF instructions; the kernel accepts 1 to {BPF_MAX_LEN}")]
    ProgramLength {
        /// Length of the program handed over.
        len: usize,
    },
    /// `seccomp(SECCOMP_SET_MODE_FILTER)` refused the filter (EACCES: neither no_new_privs nor
    /// CAP_SYS_ADMIN; EINVAL: malformed program).
    #[error("seccomp(SECCOMP_SET_MODE_FILTER) failed: {source}")]
    Install {
        /// The errno the kernel returned.
        source: io::Error,
    },
}

/// Namespace flags moby refuses in `clone` without CAP_SYS_ADMIN (moby's mask 0x7E020000).
pub const CLONE_NAMESPACE_FLAGS: u64 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP) as u64;

/// Docker's default profile for this architecture (x86_64 or aarch64), given the capabilities the
/// container will hold (names like "CAP_SYS_ADMIN"; the `CAP_` prefix and case are optional):
/// the cap-conditional rules of moby's profile apply when the cap is granted. Compiled once per
/// distinct cap set (the spawner caches it).
pub fn docker_default(granted_caps: &[String]) -> Result<BpfProgram, SeccompError> {
    #[cfg(target_arch = "x86_64")]
    {
        compile_profile(&X86_64_TABLES, granted_caps)
    }
    #[cfg(target_arch = "aarch64")]
    {
        compile_profile(&AARCH64_TABLES, granted_caps)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = granted_caps;
        Err(SeccompError::UnsupportedArch {
            arch: std::env::consts::ARCH,
        })
    }
}

/// Installs a compiled filter on the calling thread (prctl NO_NEW_PRIVS must already be set or
/// the caller must have CAP_SYS_ADMIN; uses SECCOMP_SET_MODE_FILTER with TSYNC off).
/// Async-signal-safe: it runs in a forked child right before exec, so it does not allocate
/// (the error carries a raw OS errno, which needs no allocation).
pub fn install(program: &BpfProgram) -> Result<(), SeccompError> {
    if program.is_empty() || program.len() > BPF_MAX_LEN {
        return Err(SeccompError::ProgramLength { len: program.len() });
    }
    /// `struct sock_fprog` of linux/filter.h, pointing at seccompiler's `sock_filter` (same
    /// layout as the kernel's).
    #[repr(C)]
    struct SockFprog {
        len: libc::c_ushort,
        filter: *const sock_filter,
    }
    let fprog = SockFprog {
        // Fits: checked against BPF_MAX_LEN above.
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr(),
    };
    // SAFETY: the kernel copies the program out of `fprog` during the call; both outlive it.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            0 as libc::c_ulong,
            &fprog as *const SockFprog,
        )
    };
    if rc != 0 {
        return Err(SeccompError::Install {
            source: io::Error::last_os_error(),
        });
    }
    Ok(())
}

/// What the filter answers for one syscall number.
#[derive(Debug, Clone)]
enum Verdict {
    /// Allowed whatever the arguments; wins over any other rule for the same syscall.
    Allow,
    /// Allowed when one of the rules matches (conditions of a rule ANDed), EPERM otherwise.
    AllowIf(Vec<SeccompRule>),
    /// Refused with this errno instead of the default EPERM.
    Errno(u16),
}

/// The profile under construction: syscall number to verdict; unlisted numbers get EPERM.
#[derive(Default, Clone)]
struct RuleSet {
    verdicts: BTreeMap<i64, Verdict>,
}

impl RuleSet {
    fn allow(&mut self, syscall: i64) {
        self.verdicts.insert(syscall, Verdict::Allow);
    }

    fn allow_all<S: SyscallEntry>(&mut self, syscalls: &[S]) {
        for syscall in syscalls {
            self.allow(syscall.number());
        }
    }

    /// Allows `syscall` when every condition holds (conditions ANDed; rules of one syscall ORed).
    fn allow_if(
        &mut self,
        syscall: i64,
        what: &'static str,
        conditions: Vec<SeccompCondition>,
    ) -> Result<(), SeccompError> {
        let rule = SeccompRule::new(conditions).map_err(|source| SeccompError::Rule {
            syscall,
            what,
            source,
        })?;
        match self.verdicts.entry(syscall) {
            Entry::Occupied(mut entry) => match entry.get_mut() {
                Verdict::Allow => {}
                Verdict::AllowIf(rules) => rules.push(rule),
                errno @ Verdict::Errno(_) => *errno = Verdict::AllowIf(vec![rule]),
            },
            Entry::Vacant(entry) => {
                entry.insert(Verdict::AllowIf(vec![rule]));
            }
        }
        Ok(())
    }

    /// Answers `syscall` with `errno` unless something already allows it.
    fn refuse_with(&mut self, syscall: i64, errno: i32) {
        self.verdicts
            .entry(syscall)
            .or_insert(Verdict::Errno(errno as u16));
    }
}

/// One condition on the low 32 bits of argument `arg`.
fn arg32(
    syscall: i64,
    what: &'static str,
    arg: u8,
    op: SeccompCmpOp,
    value: u64,
) -> Result<SeccompCondition, SeccompError> {
    SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).map_err(|source| {
        SeccompError::Rule {
            syscall,
            what,
            source,
        }
    })
}

/// Upper-case, `CAP_`-prefixed form of a capability name.
fn normalize_cap(cap: &str) -> String {
    let upper = cap.trim().to_ascii_uppercase();
    if upper.starts_with("CAP_") {
        upper
    } else {
        format!("CAP_{upper}")
    }
}

/// Whether the running kernel's release is at least `major.minor` (false when unreadable, the
/// conservative answer for moby's `minKernel`).
fn kernel_at_least(major: u32, minor: u32) -> bool {
    // SAFETY: utsname is plain data; uname fills it.
    let mut uts: libc::utsname = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer to a utsname we own.
    if unsafe { libc::uname(&mut uts) } != 0 {
        return false;
    }
    let release: String = uts
        .release
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8 as char)
        .collect();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|part| part.parse::<u32>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(found_major), Some(found_minor)) => (found_major, found_minor) >= (major, minor),
        _ => false,
    }
}

// Classic BPF opcodes and `struct seccomp_data` offsets used by the dispatcher.
const LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
const NR_OFFSET: u32 = 0;
const ARCH_OFFSET: u32 = 4;

fn insn(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// Where the dispatcher sends one range of syscall numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Leaf {
    /// Return this seccomp action.
    Return(u32),
    /// Jump to the argument-checking block with this index.
    Block(usize),
}

/// Dispatcher instruction before block offsets are known.
enum Pending {
    Ready(sock_filter),
    JumpToBlock(usize),
}

/// Compiles the verdicts into one program: arch check, a binary search over syscall-number
/// ranges (like libseccomp's tree, so a syscall costs ~log2(ranges) comparisons and the kernel's
/// per-number verdict cache is cheap to build at install time), and, after it, one block per
/// argument-checked syscall. Each block is a complete `seccompiler` filter for that one syscall
/// (its own arch check included), so its internal relative jumps stay valid wherever it sits
/// and every path through it ends in a return.
fn compile_program(
    verdicts: BTreeMap<i64, Verdict>,
    arch: TargetArch,
    audit_arch: u32,
    caps: &str,
) -> Result<BpfProgram, SeccompError> {
    let refuse = u32::from(SeccompAction::Errno(libc::EPERM as u32));
    let allow = u32::from(SeccompAction::Allow);

    // Ranges [start, next start) of the u32 syscall-number space, each with one leaf.
    let mut ranges: Vec<(u32, Leaf)> = Vec::new();
    let mut blocks: Vec<BpfProgram> = Vec::new();
    // Adjacent ranges with the same leaf merge, which keeps the tree small.
    let push_range = |ranges: &mut Vec<(u32, Leaf)>, start: u32, leaf: Leaf| match ranges.last() {
        Some(&(_, last)) if last == leaf => {}
        _ => ranges.push((start, leaf)),
    };
    let mut next_unlisted: u32 = 0;
    for (syscall, verdict) in verdicts {
        let number = u32::try_from(syscall).map_err(|_| SeccompError::SyscallNumber { syscall })?;
        if number > next_unlisted {
            push_range(&mut ranges, next_unlisted, Leaf::Return(refuse));
        }
        let leaf = match verdict {
            Verdict::Allow => Leaf::Return(allow),
            Verdict::Errno(errno) => {
                Leaf::Return(u32::from(SeccompAction::Errno(u32::from(errno))))
            }
            Verdict::AllowIf(rules) => {
                let block = SeccompFilter::new(
                    [(syscall, rules)].into_iter().collect(),
                    SeccompAction::Errno(libc::EPERM as u32),
                    SeccompAction::Allow,
                    arch,
                )
                .and_then(BpfProgram::try_from)
                .map_err(|source| SeccompError::Compile {
                    caps: caps.to_string(),
                    source,
                })?;
                blocks.push(block);
                Leaf::Block(blocks.len() - 1)
            }
        };
        push_range(&mut ranges, number, leaf);
        next_unlisted = number.saturating_add(1);
    }
    push_range(&mut ranges, next_unlisted, Leaf::Return(refuse));

    let tree = dispatch_tree(&ranges);
    let mut program = vec![
        insn(LD_W_ABS, 0, 0, ARCH_OFFSET),
        insn(JEQ_K, 1, 0, audit_arch),
        insn(RET_K, 0, 0, libc::SECCOMP_RET_KILL_PROCESS),
        insn(LD_W_ABS, 0, 0, NR_OFFSET),
    ];
    let tree_start = program.len();
    let mut block_starts = Vec::with_capacity(blocks.len());
    let mut next_block = tree_start + tree.len();
    for block in &blocks {
        block_starts.push(next_block);
        next_block += block.len();
    }
    if next_block > BPF_MAX_LEN {
        return Err(SeccompError::ProgramLength { len: next_block });
    }
    for (index, pending) in tree.into_iter().enumerate() {
        program.push(match pending {
            Pending::Ready(instruction) => instruction,
            // Forward jump: offset from the instruction after this one. Fits: < BPF_MAX_LEN.
            Pending::JumpToBlock(block) => insn(
                JA,
                0,
                0,
                (block_starts[block] - (tree_start + index + 1)) as u32,
            ),
        });
    }
    for block in blocks {
        program.extend(block);
    }
    Ok(program)
}

/// Binary search over `ranges` (sorted by start, covering 0..=u32::MAX): each node asks whether
/// the number is at least the start of the middle range. Far jumps (over more than 255 instructions, the limit of a
/// conditional jump) go through an unconditional `ja`.
fn dispatch_tree(ranges: &[(u32, Leaf)]) -> Vec<Pending> {
    if let [(_, leaf)] = ranges {
        return vec![match *leaf {
            Leaf::Return(action) => Pending::Ready(insn(RET_K, 0, 0, action)),
            Leaf::Block(block) => Pending::JumpToBlock(block),
        }];
    }
    let middle = ranges.len() / 2;
    let split = ranges[middle].0;
    let below = dispatch_tree(&ranges[..middle]);
    let above = dispatch_tree(&ranges[middle..]);
    let mut tree = Vec::with_capacity(below.len() + above.len() + 2);
    match u8::try_from(below.len()) {
        Ok(skip) => tree.push(Pending::Ready(insn(JGE_K, skip, 0, split))),
        Err(_) => {
            tree.push(Pending::Ready(insn(JGE_K, 0, 1, split)));
            tree.push(Pending::Ready(insn(JA, 0, 0, below.len() as u32)));
        }
    }
    tree.extend(below);
    tree.extend(above);
    tree
}

/// One architecture's syscall numbers for moby's profile.
struct ProfileTables<S: 'static> {
    /// seccompiler's name for the architecture (its blocks check it).
    target_arch: TargetArch,
    /// `AUDIT_ARCH_*` of linux/audit.h the dispatcher checks first.
    audit_arch: u32,
    /// moby's unconditional allowlist.
    allowed: &'static [S],
    /// moby's `minKernel: 4.8` group.
    allowed_since_4_8: &'static [S],
    /// moby's `includes: caps` groups.
    cap_gated: &'static [(&'static str, &'static [S])],
    socket: i64,
    personality: i64,
    clone: i64,
    clone3: i64,
}

/// An entry of a syscall table: a bare number (x86_64, checked by libc's names) or a
/// (name, number) pair (aarch64, whose numbers a unit test checks against asm-generic).
trait SyscallEntry {
    fn number(&self) -> i64;
}

impl SyscallEntry for i64 {
    fn number(&self) -> i64 {
        *self
    }
}

impl SyscallEntry for Syscall {
    fn number(&self) -> i64 {
        self.1
    }
}

/// A syscall by name (as moby's profile spells it) and number.
type Syscall = (&'static str, i64);

#[cfg(target_arch = "x86_64")]
const X86_64_TABLES: ProfileTables<i64> = ProfileTables {
    target_arch: TargetArch::x86_64,
    audit_arch: AUDIT_ARCH_X86_64,
    allowed: x86_64::ALLOWED,
    allowed_since_4_8: x86_64::ALLOWED_SINCE_4_8,
    cap_gated: x86_64::CAP_GATED,
    socket: libc::SYS_socket,
    personality: libc::SYS_personality,
    clone: libc::SYS_clone,
    clone3: libc::SYS_clone3,
};

/// Compiled on every architecture under test so x86_64 CI checks the aarch64 tables too.
#[cfg(any(target_arch = "aarch64", test))]
const AARCH64_TABLES: ProfileTables<Syscall> = ProfileTables {
    target_arch: TargetArch::aarch64,
    audit_arch: AUDIT_ARCH_AARCH64,
    allowed: aarch64::ALLOWED,
    allowed_since_4_8: aarch64::ALLOWED_SINCE_4_8,
    cap_gated: aarch64::CAP_GATED,
    socket: aarch64::SOCKET,
    personality: aarch64::PERSONALITY,
    clone: aarch64::CLONE,
    clone3: aarch64::CLONE3,
};

/// Normalizes the cap names, builds the verdicts and compiles them.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", test))]
fn compile_profile<S: SyscallEntry>(
    tables: &ProfileTables<S>,
    granted_caps: &[String],
) -> Result<BpfProgram, SeccompError> {
    let caps: Vec<String> = granted_caps.iter().map(|cap| normalize_cap(cap)).collect();
    let rules = profile_rules(tables, &caps)?;
    compile_program(
        rules.verdicts,
        tables.target_arch,
        tables.audit_arch,
        &caps.join(","),
    )
}

/// `AUDIT_ARCH_X86_64` of linux/audit.h: EM_X86_64 | 64-bit | little-endian.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;

/// `AUDIT_ARCH_AARCH64` of linux/audit.h: EM_AARCH64 | 64-bit | little-endian.
#[cfg(any(target_arch = "aarch64", test))]
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;

/// moby's profile as verdicts for one architecture, for normalized cap names.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64", test))]
fn profile_rules<S: SyscallEntry>(
    tables: &ProfileTables<S>,
    caps: &[String],
) -> Result<RuleSet, SeccompError> {
    let has = |cap: &str| caps.iter().any(|granted| granted == cap);
    let mut rules = RuleSet::default();

    rules.allow_all(tables.allowed);
    if kernel_at_least(4, 8) {
        rules.allow_all(tables.allowed_since_4_8);
    }
    for &(cap, syscalls) in tables.cap_gated {
        if has(cap) {
            rules.allow_all(syscalls);
        }
    }

    let socket = tables.socket;
    let what = "socket: every domain but AF_ALG and AF_VSOCK";
    rules.allow_if(
        socket,
        what,
        vec![arg32(
            socket,
            what,
            0,
            SeccompCmpOp::Lt,
            libc::AF_ALG as u64,
        )?],
    )?;
    rules.allow_if(
        socket,
        what,
        vec![arg32(
            socket,
            what,
            0,
            SeccompCmpOp::Eq,
            libc::AF_NFC as u64,
        )?],
    )?;
    rules.allow_if(
        socket,
        what,
        vec![arg32(
            socket,
            what,
            0,
            SeccompCmpOp::Gt,
            libc::AF_VSOCK as u64,
        )?],
    )?;

    let personality = tables.personality;
    let what = "personality: linux, linux32, uname26 and query";
    for persona in PERSONALITIES_ALLOWED {
        rules.allow_if(
            personality,
            what,
            vec![arg32(personality, what, 0, SeccompCmpOp::Eq, persona)?],
        )?;
    }

    if !has("CAP_SYS_ADMIN") {
        let clone = tables.clone;
        let what = "clone: no namespace flags without CAP_SYS_ADMIN";
        rules.allow_if(
            clone,
            what,
            vec![arg32(
                clone,
                what,
                0,
                SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
                0,
            )?],
        )?;
        // Its flags live in a struct the filter cannot read: ENOSYS makes libc fall back to clone.
        rules.refuse_with(tables.clone3, libc::ENOSYS);
    }

    Ok(rules)
}

/// `personality` values moby allows: PER_LINUX, PER_LINUX32, UNAME26, PER_LINUX32|UNAME26 and
/// 0xffffffff (query the current persona).
const PERSONALITIES_ALLOWED: [u64; 5] = [0x0, 0x8, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// moby's profile as x86_64 syscall numbers.
#[cfg(target_arch = "x86_64")]
mod x86_64 {
    // Syscalls newer than this libc's tables (numbers from arch/x86/entry/syscalls/syscall_64.tbl).
    const SYS_IO_PGETEVENTS: i64 = 333;
    const SYS_URETPROBE: i64 = 335;
    const SYS_CACHESTAT: i64 = 451;
    const SYS_MAP_SHADOW_STACK: i64 = 453;
    const SYS_FUTEX_WAKE: i64 = 454;
    const SYS_FUTEX_WAIT: i64 = 455;
    const SYS_FUTEX_REQUEUE: i64 = 456;
    const SYS_STATMOUNT: i64 = 457;
    const SYS_LISTMOUNT: i64 = 458;
    const SYS_LSM_GET_SELF_ATTR: i64 = 459;
    const SYS_LSM_SET_SELF_ATTR: i64 = 460;
    const SYS_LSM_LIST_MODULES: i64 = 461;
    const SYS_SETXATTRAT: i64 = 463;
    const SYS_GETXATTRAT: i64 = 464;
    const SYS_LISTXATTRAT: i64 = 465;
    const SYS_REMOVEXATTRAT: i64 = 466;

    /// moby's unconditional allowlist (the names that exist on x86_64) plus its amd64-only
    /// `arch_prctl` and `modify_ldt`.
    pub(super) const ALLOWED: &[i64] = &[
        libc::SYS_accept,
        libc::SYS_accept4,
        libc::SYS_access,
        libc::SYS_adjtimex,
        libc::SYS_alarm,
        libc::SYS_bind,
        libc::SYS_brk,
        SYS_CACHESTAT,
        libc::SYS_capget,
        libc::SYS_capset,
        libc::SYS_chdir,
        libc::SYS_chmod,
        libc::SYS_chown,
        libc::SYS_clock_adjtime,
        libc::SYS_clock_getres,
        libc::SYS_clock_gettime,
        libc::SYS_clock_nanosleep,
        libc::SYS_close,
        libc::SYS_close_range,
        libc::SYS_connect,
        libc::SYS_copy_file_range,
        libc::SYS_creat,
        libc::SYS_dup,
        libc::SYS_dup2,
        libc::SYS_dup3,
        libc::SYS_epoll_create,
        libc::SYS_epoll_create1,
        libc::SYS_epoll_ctl,
        libc::SYS_epoll_ctl_old,
        libc::SYS_epoll_pwait,
        libc::SYS_epoll_pwait2,
        libc::SYS_epoll_wait,
        libc::SYS_epoll_wait_old,
        libc::SYS_eventfd,
        libc::SYS_eventfd2,
        libc::SYS_execve,
        libc::SYS_execveat,
        libc::SYS_exit,
        libc::SYS_exit_group,
        libc::SYS_faccessat,
        libc::SYS_faccessat2,
        libc::SYS_fadvise64,
        libc::SYS_fallocate,
        libc::SYS_fanotify_mark,
        libc::SYS_fchdir,
        libc::SYS_fchmod,
        libc::SYS_fchmodat,
        libc::SYS_fchmodat2,
        libc::SYS_fchown,
        libc::SYS_fchownat,
        libc::SYS_fcntl,
        libc::SYS_fdatasync,
        libc::SYS_fgetxattr,
        libc::SYS_flistxattr,
        libc::SYS_flock,
        libc::SYS_fork,
        libc::SYS_fremovexattr,
        libc::SYS_fsetxattr,
        libc::SYS_fstat,
        libc::SYS_fstatfs,
        libc::SYS_fsync,
        libc::SYS_ftruncate,
        libc::SYS_futex,
        SYS_FUTEX_REQUEUE,
        SYS_FUTEX_WAIT,
        libc::SYS_futex_waitv,
        SYS_FUTEX_WAKE,
        libc::SYS_futimesat,
        libc::SYS_getcpu,
        libc::SYS_getcwd,
        libc::SYS_getdents,
        libc::SYS_getdents64,
        libc::SYS_getegid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getgroups,
        libc::SYS_getitimer,
        libc::SYS_getpeername,
        libc::SYS_getpgid,
        libc::SYS_getpgrp,
        libc::SYS_getpid,
        libc::SYS_getppid,
        libc::SYS_getpriority,
        libc::SYS_getrandom,
        libc::SYS_getresgid,
        libc::SYS_getresuid,
        libc::SYS_getrlimit,
        libc::SYS_get_robust_list,
        libc::SYS_getrusage,
        libc::SYS_getsid,
        libc::SYS_getsockname,
        libc::SYS_getsockopt,
        libc::SYS_get_thread_area,
        libc::SYS_gettid,
        libc::SYS_gettimeofday,
        libc::SYS_getuid,
        libc::SYS_getxattr,
        SYS_GETXATTRAT,
        libc::SYS_inotify_add_watch,
        libc::SYS_inotify_init,
        libc::SYS_inotify_init1,
        libc::SYS_inotify_rm_watch,
        libc::SYS_io_cancel,
        libc::SYS_ioctl,
        libc::SYS_io_destroy,
        libc::SYS_io_getevents,
        SYS_IO_PGETEVENTS,
        libc::SYS_ioprio_get,
        libc::SYS_ioprio_set,
        libc::SYS_io_setup,
        libc::SYS_io_submit,
        libc::SYS_kill,
        libc::SYS_landlock_add_rule,
        libc::SYS_landlock_create_ruleset,
        libc::SYS_landlock_restrict_self,
        libc::SYS_lchown,
        libc::SYS_lgetxattr,
        libc::SYS_link,
        libc::SYS_linkat,
        libc::SYS_listen,
        SYS_LISTMOUNT,
        libc::SYS_listxattr,
        SYS_LISTXATTRAT,
        libc::SYS_llistxattr,
        libc::SYS_lremovexattr,
        libc::SYS_lseek,
        libc::SYS_lsetxattr,
        libc::SYS_lstat,
        libc::SYS_madvise,
        SYS_MAP_SHADOW_STACK,
        libc::SYS_membarrier,
        libc::SYS_memfd_create,
        libc::SYS_memfd_secret,
        libc::SYS_mincore,
        libc::SYS_mkdir,
        libc::SYS_mkdirat,
        libc::SYS_mknod,
        libc::SYS_mknodat,
        libc::SYS_mlock,
        libc::SYS_mlock2,
        libc::SYS_mlockall,
        libc::SYS_mmap,
        libc::SYS_mprotect,
        libc::SYS_mq_getsetattr,
        libc::SYS_mq_notify,
        libc::SYS_mq_open,
        libc::SYS_mq_timedreceive,
        libc::SYS_mq_timedsend,
        libc::SYS_mq_unlink,
        libc::SYS_mremap,
        libc::SYS_mseal,
        libc::SYS_msgctl,
        libc::SYS_msgget,
        libc::SYS_msgrcv,
        libc::SYS_msgsnd,
        libc::SYS_msync,
        libc::SYS_munlock,
        libc::SYS_munlockall,
        libc::SYS_munmap,
        libc::SYS_name_to_handle_at,
        libc::SYS_nanosleep,
        libc::SYS_newfstatat,
        libc::SYS_open,
        libc::SYS_openat,
        libc::SYS_openat2,
        libc::SYS_pause,
        libc::SYS_pidfd_open,
        libc::SYS_pidfd_send_signal,
        libc::SYS_pipe,
        libc::SYS_pipe2,
        libc::SYS_pkey_alloc,
        libc::SYS_pkey_free,
        libc::SYS_pkey_mprotect,
        libc::SYS_poll,
        libc::SYS_ppoll,
        libc::SYS_prctl,
        libc::SYS_pread64,
        libc::SYS_preadv,
        libc::SYS_preadv2,
        libc::SYS_prlimit64,
        libc::SYS_process_mrelease,
        libc::SYS_pselect6,
        libc::SYS_pwrite64,
        libc::SYS_pwritev,
        libc::SYS_pwritev2,
        libc::SYS_read,
        libc::SYS_readahead,
        libc::SYS_readlink,
        libc::SYS_readlinkat,
        libc::SYS_readv,
        libc::SYS_recvfrom,
        libc::SYS_recvmmsg,
        libc::SYS_recvmsg,
        libc::SYS_remap_file_pages,
        libc::SYS_removexattr,
        SYS_REMOVEXATTRAT,
        libc::SYS_rename,
        libc::SYS_renameat,
        libc::SYS_renameat2,
        libc::SYS_restart_syscall,
        libc::SYS_rmdir,
        libc::SYS_rseq,
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigpending,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigqueueinfo,
        libc::SYS_rt_sigreturn,
        libc::SYS_rt_sigsuspend,
        libc::SYS_rt_sigtimedwait,
        libc::SYS_rt_tgsigqueueinfo,
        libc::SYS_sched_getaffinity,
        libc::SYS_sched_getattr,
        libc::SYS_sched_getparam,
        libc::SYS_sched_get_priority_max,
        libc::SYS_sched_get_priority_min,
        libc::SYS_sched_getscheduler,
        libc::SYS_sched_rr_get_interval,
        libc::SYS_sched_setaffinity,
        libc::SYS_sched_setattr,
        libc::SYS_sched_setparam,
        libc::SYS_sched_setscheduler,
        libc::SYS_sched_yield,
        libc::SYS_seccomp,
        libc::SYS_select,
        libc::SYS_semctl,
        libc::SYS_semget,
        libc::SYS_semop,
        libc::SYS_semtimedop,
        libc::SYS_sendfile,
        libc::SYS_sendmmsg,
        libc::SYS_sendmsg,
        libc::SYS_sendto,
        libc::SYS_setfsgid,
        libc::SYS_setfsuid,
        libc::SYS_setgid,
        libc::SYS_setgroups,
        libc::SYS_setitimer,
        libc::SYS_setpgid,
        libc::SYS_setpriority,
        libc::SYS_setregid,
        libc::SYS_setresgid,
        libc::SYS_setresuid,
        libc::SYS_setreuid,
        libc::SYS_setrlimit,
        libc::SYS_set_robust_list,
        libc::SYS_setsid,
        libc::SYS_setsockopt,
        libc::SYS_set_thread_area,
        libc::SYS_set_tid_address,
        libc::SYS_setuid,
        libc::SYS_setxattr,
        SYS_SETXATTRAT,
        libc::SYS_shmat,
        libc::SYS_shmctl,
        libc::SYS_shmdt,
        libc::SYS_shmget,
        libc::SYS_shutdown,
        libc::SYS_sigaltstack,
        libc::SYS_signalfd,
        libc::SYS_signalfd4,
        libc::SYS_socketpair,
        libc::SYS_splice,
        libc::SYS_stat,
        libc::SYS_statfs,
        SYS_STATMOUNT,
        libc::SYS_statx,
        libc::SYS_symlink,
        libc::SYS_symlinkat,
        libc::SYS_sync,
        libc::SYS_sync_file_range,
        libc::SYS_syncfs,
        libc::SYS_sysinfo,
        libc::SYS_tee,
        libc::SYS_tgkill,
        libc::SYS_time,
        libc::SYS_timer_create,
        libc::SYS_timer_delete,
        libc::SYS_timer_getoverrun,
        libc::SYS_timer_gettime,
        libc::SYS_timer_settime,
        libc::SYS_timerfd_create,
        libc::SYS_timerfd_gettime,
        libc::SYS_timerfd_settime,
        libc::SYS_times,
        libc::SYS_tkill,
        libc::SYS_truncate,
        libc::SYS_umask,
        libc::SYS_uname,
        libc::SYS_unlink,
        libc::SYS_unlinkat,
        SYS_URETPROBE,
        libc::SYS_utime,
        libc::SYS_utimensat,
        libc::SYS_utimes,
        libc::SYS_vfork,
        libc::SYS_vmsplice,
        libc::SYS_wait4,
        libc::SYS_waitid,
        libc::SYS_write,
        libc::SYS_writev,
        libc::SYS_arch_prctl,
        libc::SYS_modify_ldt,
    ];

    /// moby's `minKernel: 4.8` group.
    pub(super) const ALLOWED_SINCE_4_8: &[i64] = &[
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_ptrace,
    ];

    /// moby's `includes: caps` groups.
    pub(super) const CAP_GATED: &[(&str, &[i64])] = &[
        ("CAP_DAC_READ_SEARCH", &[libc::SYS_open_by_handle_at]),
        (
            "CAP_SYS_ADMIN",
            &[
                libc::SYS_bpf,
                libc::SYS_clone,
                libc::SYS_clone3,
                libc::SYS_fanotify_init,
                libc::SYS_fsconfig,
                libc::SYS_fsmount,
                libc::SYS_fsopen,
                libc::SYS_fspick,
                libc::SYS_lookup_dcookie,
                SYS_LSM_GET_SELF_ATTR,
                SYS_LSM_LIST_MODULES,
                SYS_LSM_SET_SELF_ATTR,
                libc::SYS_mount,
                libc::SYS_mount_setattr,
                libc::SYS_move_mount,
                libc::SYS_open_tree,
                libc::SYS_perf_event_open,
                libc::SYS_quotactl,
                libc::SYS_quotactl_fd,
                libc::SYS_setdomainname,
                libc::SYS_sethostname,
                libc::SYS_setns,
                libc::SYS_syslog,
                libc::SYS_umount2,
                libc::SYS_unshare,
            ],
        ),
        ("CAP_SYS_BOOT", &[libc::SYS_reboot]),
        ("CAP_SYS_CHROOT", &[libc::SYS_chroot]),
        (
            "CAP_SYS_MODULE",
            &[
                libc::SYS_delete_module,
                libc::SYS_init_module,
                libc::SYS_finit_module,
            ],
        ),
        ("CAP_SYS_PACCT", &[libc::SYS_acct]),
        (
            "CAP_SYS_PTRACE",
            &[
                libc::SYS_kcmp,
                libc::SYS_pidfd_getfd,
                libc::SYS_process_madvise,
                libc::SYS_process_vm_readv,
                libc::SYS_process_vm_writev,
                libc::SYS_ptrace,
            ],
        ),
        ("CAP_SYS_RAWIO", &[libc::SYS_iopl, libc::SYS_ioperm]),
        (
            "CAP_SYS_TIME",
            &[libc::SYS_settimeofday, libc::SYS_clock_settime],
        ),
        ("CAP_SYS_TTY_CONFIG", &[libc::SYS_vhangup]),
        (
            "CAP_SYS_NICE",
            &[
                libc::SYS_get_mempolicy,
                libc::SYS_mbind,
                libc::SYS_set_mempolicy,
                libc::SYS_set_mempolicy_home_node,
            ],
        ),
        ("CAP_SYSLOG", &[libc::SYS_syslog]),
        ("CAP_BPF", &[libc::SYS_bpf]),
        ("CAP_PERFMON", &[libc::SYS_perf_event_open]),
    ];
}

/// moby's profile as aarch64 syscall numbers (asm-generic's table with arm64's
/// `__ARCH_WANT_RENAMEAT`, `_NEW_STAT`, `_SET_GET_RLIMIT`, `_SYS_CLONE3` and `_MEMFD_SECRET`),
/// written as (name, number) so a unit test can check them against asm-generic/unistd.h.
/// moby's arm64-only entries (`arm_fadvise64_64`, `breakpoint`, `cacheflush`, `set_tls`, ...)
/// exist only in the 32-bit arm ABI, so none applies here.
#[cfg(any(target_arch = "aarch64", test))]
mod aarch64 {
    use super::Syscall;

    pub(super) const SOCKET: i64 = 198;
    pub(super) const PERSONALITY: i64 = 92;
    pub(super) const CLONE: i64 = 220;
    pub(super) const CLONE3: i64 = 435;

    /// moby's unconditional allowlist, the names that exist on aarch64.
    pub(super) const ALLOWED: &[Syscall] = &[
        ("accept", 202),
        ("accept4", 242),
        ("adjtimex", 171),
        ("bind", 200),
        ("brk", 214),
        ("cachestat", 451),
        ("capget", 90),
        ("capset", 91),
        ("chdir", 49),
        ("clock_adjtime", 266),
        ("clock_getres", 114),
        ("clock_gettime", 113),
        ("clock_nanosleep", 115),
        ("close", 57),
        ("close_range", 436),
        ("connect", 203),
        ("copy_file_range", 285),
        ("dup", 23),
        ("dup3", 24),
        ("epoll_create1", 20),
        ("epoll_ctl", 21),
        ("epoll_pwait", 22),
        ("epoll_pwait2", 441),
        ("eventfd2", 19),
        ("execve", 221),
        ("execveat", 281),
        ("exit", 93),
        ("exit_group", 94),
        ("faccessat", 48),
        ("faccessat2", 439),
        ("fadvise64", 223),
        ("fallocate", 47),
        ("fanotify_mark", 263),
        ("fchdir", 50),
        ("fchmod", 52),
        ("fchmodat", 53),
        ("fchmodat2", 452),
        ("fchown", 55),
        ("fchownat", 54),
        ("fcntl", 25),
        ("fdatasync", 83),
        ("fgetxattr", 10),
        ("flistxattr", 13),
        ("flock", 32),
        ("fremovexattr", 16),
        ("fsetxattr", 7),
        ("fstat", 80),
        ("fstatfs", 44),
        ("fsync", 82),
        ("ftruncate", 46),
        ("futex", 98),
        ("futex_requeue", 456),
        ("futex_wait", 455),
        ("futex_waitv", 449),
        ("futex_wake", 454),
        ("getcpu", 168),
        ("getcwd", 17),
        ("getdents64", 61),
        ("getegid", 177),
        ("geteuid", 175),
        ("getgid", 176),
        ("getgroups", 158),
        ("getitimer", 102),
        ("getpeername", 205),
        ("getpgid", 155),
        ("getpid", 172),
        ("getppid", 173),
        ("getpriority", 141),
        ("getrandom", 278),
        ("getresgid", 150),
        ("getresuid", 148),
        ("getrlimit", 163),
        ("get_robust_list", 100),
        ("getrusage", 165),
        ("getsid", 156),
        ("getsockname", 204),
        ("getsockopt", 209),
        ("gettid", 178),
        ("gettimeofday", 169),
        ("getuid", 174),
        ("getxattr", 8),
        ("getxattrat", 464),
        ("inotify_add_watch", 27),
        ("inotify_init1", 26),
        ("inotify_rm_watch", 28),
        ("io_cancel", 3),
        ("ioctl", 29),
        ("io_destroy", 1),
        ("io_getevents", 4),
        ("io_pgetevents", 292),
        ("ioprio_get", 31),
        ("ioprio_set", 30),
        ("io_setup", 0),
        ("io_submit", 2),
        ("kill", 129),
        ("landlock_add_rule", 445),
        ("landlock_create_ruleset", 444),
        ("landlock_restrict_self", 446),
        ("lgetxattr", 9),
        ("linkat", 37),
        ("listen", 201),
        ("listmount", 458),
        ("listxattr", 11),
        ("listxattrat", 465),
        ("llistxattr", 12),
        ("lremovexattr", 15),
        ("lseek", 62),
        ("lsetxattr", 6),
        ("madvise", 233),
        ("map_shadow_stack", 453),
        ("membarrier", 283),
        ("memfd_create", 279),
        ("memfd_secret", 447),
        ("mincore", 232),
        ("mkdirat", 34),
        ("mknodat", 33),
        ("mlock", 228),
        ("mlock2", 284),
        ("mlockall", 230),
        ("mmap", 222),
        ("mprotect", 226),
        ("mq_getsetattr", 185),
        ("mq_notify", 184),
        ("mq_open", 180),
        ("mq_timedreceive", 183),
        ("mq_timedsend", 182),
        ("mq_unlink", 181),
        ("mremap", 216),
        ("mseal", 462),
        ("msgctl", 187),
        ("msgget", 186),
        ("msgrcv", 188),
        ("msgsnd", 189),
        ("msync", 227),
        ("munlock", 229),
        ("munlockall", 231),
        ("munmap", 215),
        ("name_to_handle_at", 264),
        ("nanosleep", 101),
        ("newfstatat", 79),
        ("openat", 56),
        ("openat2", 437),
        ("pidfd_open", 434),
        ("pidfd_send_signal", 424),
        ("pipe2", 59),
        ("pkey_alloc", 289),
        ("pkey_free", 290),
        ("pkey_mprotect", 288),
        ("ppoll", 73),
        ("prctl", 167),
        ("pread64", 67),
        ("preadv", 69),
        ("preadv2", 286),
        ("prlimit64", 261),
        ("process_mrelease", 448),
        ("pselect6", 72),
        ("pwrite64", 68),
        ("pwritev", 70),
        ("pwritev2", 287),
        ("read", 63),
        ("readahead", 213),
        ("readlinkat", 78),
        ("readv", 65),
        ("recvfrom", 207),
        ("recvmmsg", 243),
        ("recvmsg", 212),
        ("remap_file_pages", 234),
        ("removexattr", 14),
        ("removexattrat", 466),
        ("renameat", 38),
        ("renameat2", 276),
        ("restart_syscall", 128),
        ("rseq", 293),
        ("rt_sigaction", 134),
        ("rt_sigpending", 136),
        ("rt_sigprocmask", 135),
        ("rt_sigqueueinfo", 138),
        ("rt_sigreturn", 139),
        ("rt_sigsuspend", 133),
        ("rt_sigtimedwait", 137),
        ("rt_tgsigqueueinfo", 240),
        ("sched_getaffinity", 123),
        ("sched_getattr", 275),
        ("sched_getparam", 121),
        ("sched_get_priority_max", 125),
        ("sched_get_priority_min", 126),
        ("sched_getscheduler", 120),
        ("sched_rr_get_interval", 127),
        ("sched_setaffinity", 122),
        ("sched_setattr", 274),
        ("sched_setparam", 118),
        ("sched_setscheduler", 119),
        ("sched_yield", 124),
        ("seccomp", 277),
        ("semctl", 191),
        ("semget", 190),
        ("semop", 193),
        ("semtimedop", 192),
        ("sendfile", 71),
        ("sendmmsg", 269),
        ("sendmsg", 211),
        ("sendto", 206),
        ("setfsgid", 152),
        ("setfsuid", 151),
        ("setgid", 144),
        ("setgroups", 159),
        ("setitimer", 103),
        ("setpgid", 154),
        ("setpriority", 140),
        ("setregid", 143),
        ("setresgid", 149),
        ("setresuid", 147),
        ("setreuid", 145),
        ("setrlimit", 164),
        ("set_robust_list", 99),
        ("setsid", 157),
        ("setsockopt", 208),
        ("set_tid_address", 96),
        ("setuid", 146),
        ("setxattr", 5),
        ("setxattrat", 463),
        ("shmat", 196),
        ("shmctl", 195),
        ("shmdt", 197),
        ("shmget", 194),
        ("shutdown", 210),
        ("sigaltstack", 132),
        ("signalfd4", 74),
        ("socketpair", 199),
        ("splice", 76),
        ("statfs", 43),
        ("statmount", 457),
        ("statx", 291),
        ("symlinkat", 36),
        ("sync", 81),
        ("sync_file_range", 84),
        ("syncfs", 267),
        ("sysinfo", 179),
        ("tee", 77),
        ("tgkill", 131),
        ("timer_create", 107),
        ("timer_delete", 111),
        ("timer_getoverrun", 109),
        ("timer_gettime", 108),
        ("timer_settime", 110),
        ("timerfd_create", 85),
        ("timerfd_gettime", 87),
        ("timerfd_settime", 86),
        ("times", 153),
        ("tkill", 130),
        ("truncate", 45),
        ("umask", 166),
        ("uname", 160),
        ("unlinkat", 35),
        ("utimensat", 88),
        ("vmsplice", 75),
        ("wait4", 260),
        ("waitid", 95),
        ("write", 64),
        ("writev", 66),
    ];

    /// moby's `minKernel: 4.8` group.
    pub(super) const ALLOWED_SINCE_4_8: &[Syscall] = &[
        ("process_vm_readv", 270),
        ("process_vm_writev", 271),
        ("ptrace", 117),
    ];

    /// moby's `includes: caps` groups (the names that exist on aarch64).
    pub(super) const CAP_GATED: &[(&str, &[Syscall])] = &[
        ("CAP_DAC_READ_SEARCH", &[("open_by_handle_at", 265)]),
        (
            "CAP_SYS_ADMIN",
            &[
                ("bpf", 280),
                ("clone", 220),
                ("clone3", 435),
                ("fanotify_init", 262),
                ("fsconfig", 431),
                ("fsmount", 432),
                ("fsopen", 430),
                ("fspick", 433),
                ("lookup_dcookie", 18),
                ("lsm_get_self_attr", 459),
                ("lsm_list_modules", 461),
                ("lsm_set_self_attr", 460),
                ("mount", 40),
                ("mount_setattr", 442),
                ("move_mount", 429),
                ("open_tree", 428),
                ("perf_event_open", 241),
                ("quotactl", 60),
                ("quotactl_fd", 443),
                ("setdomainname", 162),
                ("sethostname", 161),
                ("setns", 268),
                ("syslog", 116),
                ("umount2", 39),
                ("unshare", 97),
            ],
        ),
        ("CAP_SYS_BOOT", &[("reboot", 142)]),
        ("CAP_SYS_CHROOT", &[("chroot", 51)]),
        (
            "CAP_SYS_MODULE",
            &[
                ("delete_module", 106),
                ("init_module", 105),
                ("finit_module", 273),
            ],
        ),
        ("CAP_SYS_PACCT", &[("acct", 89)]),
        (
            "CAP_SYS_PTRACE",
            &[
                ("kcmp", 272),
                ("pidfd_getfd", 438),
                ("process_madvise", 440),
                ("process_vm_readv", 270),
                ("process_vm_writev", 271),
                ("ptrace", 117),
            ],
        ),
        // CAP_SYS_RAWIO: iopl, ioperm do not exist on aarch64.
        (
            "CAP_SYS_TIME",
            &[("settimeofday", 170), ("clock_settime", 112)],
        ),
        ("CAP_SYS_TTY_CONFIG", &[("vhangup", 58)]),
        (
            "CAP_SYS_NICE",
            &[
                ("get_mempolicy", 236),
                ("mbind", 235),
                ("set_mempolicy", 237),
                ("set_mempolicy_home_node", 450),
            ],
        ),
        ("CAP_SYSLOG", &[("syslog", 116)]),
        ("CAP_BPF", &[("bpf", 280)]),
        ("CAP_PERFMON", &[("perf_event_open", 241)]),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_mask_matches_moby() {
        assert_eq!(CLONE_NAMESPACE_FLAGS, 2_114_060_288);
    }

    #[test]
    fn cap_names_are_normalized() {
        assert_eq!(normalize_cap("sys_admin"), "CAP_SYS_ADMIN");
        assert_eq!(normalize_cap("CAP_SYS_ADMIN"), "CAP_SYS_ADMIN");
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn allowlist_has_no_duplicates_and_no_dangerous_syscalls() {
        let mut seen = std::collections::BTreeSet::new();
        for &nr in x86_64::ALLOWED {
            assert!(seen.insert(nr), "syscall {nr} listed twice");
        }
        for nr in [
            libc::SYS_mount,
            libc::SYS_unshare,
            libc::SYS_setns,
            libc::SYS_keyctl,
            libc::SYS_add_key,
            libc::SYS_request_key,
            libc::SYS_kexec_load,
            libc::SYS_init_module,
            libc::SYS_reboot,
            libc::SYS_bpf,
            libc::SYS_clone,
            libc::SYS_clone3,
            libc::SYS_socket,
            libc::SYS_personality,
            libc::SYS_open_by_handle_at,
        ] {
            assert!(
                !seen.contains(&nr),
                "syscall {nr} must not be unconditional"
            );
        }
    }

    /// Runs a classic BPF seccomp program the way the kernel does (the opcodes this module and
    /// seccompiler emit); returns the action and how many instructions ran.
    fn run_bpf(program: &[sock_filter], nr: u32, arch: u32, args: [u64; 6]) -> (u32, usize) {
        const ALU_AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
        const JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&nr.to_le_bytes());
        data[4..8].copy_from_slice(&arch.to_le_bytes());
        for (index, arg) in args.iter().enumerate() {
            data[16 + 8 * index..24 + 8 * index].copy_from_slice(&arg.to_le_bytes());
        }
        let (mut acc, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let insn = &program[pc];
            pc += 1;
            steps += 1;
            let jump = |taken: bool| usize::from(if taken { insn.jt } else { insn.jf });
            match insn.code {
                LD_W_ABS => {
                    let at = insn.k as usize;
                    acc = u32::from_le_bytes(data[at..at + 4].try_into().unwrap());
                }
                ALU_AND_K => acc &= insn.k,
                JA => pc += insn.k as usize,
                JEQ_K => pc += jump(acc == insn.k),
                JGT_K => pc += jump(acc > insn.k),
                JGE_K => pc += jump(acc >= insn.k),
                RET_K => return (insn.k, steps),
                other => panic!("unexpected BPF opcode {other:#x} at {}", pc - 1),
            }
        }
    }

    /// Syscall numbers of one architecture the spot checks need.
    struct SpotNumbers {
        read: i64,
        keyctl: i64,
        mount: i64,
    }

    /// The dispatch tree must answer exactly like seccompiler's own linear layout of the same
    /// rules, for every syscall number and a spread of first arguments; plus spot checks of the
    /// profile itself. Returns the program lengths for the caller to print.
    fn check_against_linear<S: SyscallEntry>(
        tables: &ProfileTables<S>,
        spot: &SpotNumbers,
        caps: &[String],
    ) -> (usize, usize, usize) {
        let perm = u32::from(SeccompAction::Errno(libc::EPERM as u32));
        let first_args: [u64; 14] = [
            0,
            8,
            0x2_0000,
            0x4_0000,
            0xffff_ffff,
            libc::AF_INET as u64,
            libc::AF_ALG as u64,
            libc::AF_NFC as u64,
            libc::AF_VSOCK as u64,
            41,
            libc::SIGCHLD as u64,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as u64,
            (libc::CLONE_NEWNET | libc::CLONE_VM) as u64,
            0x1_0000_0000,
        ];
        let audit_arch = tables.audit_arch;
        let rules = profile_rules(tables, caps).unwrap();
        let program = compile_profile(tables, caps).unwrap();
        let mut errnos = BTreeMap::new();
        let mut linear_rules = BTreeMap::new();
        for (&nr, verdict) in &rules.verdicts {
            match verdict {
                Verdict::Allow => {
                    linear_rules.insert(nr, vec![]);
                }
                Verdict::AllowIf(rules) => {
                    linear_rules.insert(nr, rules.clone());
                }
                Verdict::Errno(errno) => {
                    errnos.insert(nr as u32, *errno);
                }
            }
        }
        let linear: BpfProgram = SeccompFilter::new(
            linear_rules,
            SeccompAction::Errno(libc::EPERM as u32),
            SeccompAction::Allow,
            tables.target_arch,
        )
        .and_then(BpfProgram::try_from)
        .unwrap();
        let mut longest = 0;
        let numbers = (0..1100u32).chain([0x4000_0000, 0x4000_0027, u32::MAX]);
        for nr in numbers {
            for first in first_args {
                let args = [first, 0, 0, 0, 0, 0];
                let (action, steps) = run_bpf(&program, nr, audit_arch, args);
                longest = longest.max(steps);
                let expected = match errnos.get(&nr) {
                    Some(&errno) => u32::from(SeccompAction::Errno(u32::from(errno))),
                    None => run_bpf(&linear, nr, audit_arch, args).0,
                };
                assert_eq!(action, expected, "caps {caps:?}, nr {nr}, arg0 {first:#x}");
            }
        }
        let answer =
            |nr: i64, arg0: u64| run_bpf(&program, nr as u32, audit_arch, [arg0, 0, 0, 0, 0, 0]).0;
        assert_eq!(answer(spot.read, 0), libc::SECCOMP_RET_ALLOW);
        assert_eq!(answer(spot.keyctl, 0), perm);
        assert_eq!(answer(tables.socket, libc::AF_VSOCK as u64), perm);
        assert_eq!(answer(tables.socket, libc::AF_INET6 as u64), 0x7fff_0000);
        assert_eq!(answer(tables.personality, 0x4_0000), perm);
        assert_eq!(
            answer(tables.personality, 0xffff_ffff),
            libc::SECCOMP_RET_ALLOW
        );
        let clone_newuser = answer(tables.clone, libc::CLONE_NEWUSER as u64);
        let clone3 = answer(tables.clone3, 0);
        let mount = answer(spot.mount, 0);
        if caps.is_empty() {
            assert_eq!(clone_newuser, perm);
            assert_eq!(
                answer(tables.clone, libc::SIGCHLD as u64),
                libc::SECCOMP_RET_ALLOW
            );
            assert_eq!(clone3, libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
            assert_eq!(mount, perm);
        } else {
            assert_eq!(clone_newuser, libc::SECCOMP_RET_ALLOW);
            assert_eq!(clone3, libc::SECCOMP_RET_ALLOW);
            assert_eq!(mount, libc::SECCOMP_RET_ALLOW);
        }
        // A foreign arch (i386, and the other of x86_64/aarch64) is killed before dispatch.
        for foreign in [0x4000_0003, audit_arch ^ AUDIT_ARCH_FLIP] {
            let (action, _) = run_bpf(&program, 20, foreign, [0; 6]);
            assert_eq!(action, libc::SECCOMP_RET_KILL_PROCESS);
        }
        // Binary search: a few dozen instructions at most, not hundreds.
        assert!(longest < 40, "longest path {longest} instructions");
        (program.len(), linear.len(), longest)
    }

    /// XORed with one audit arch gives the other (aarch64 <-> x86_64): EM_AARCH64 ^ EM_X86_64.
    const AUDIT_ARCH_FLIP: u32 = 183 ^ 62;

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn tree_layout_matches_seccompilers_linear_layout() {
        let spot = SpotNumbers {
            read: libc::SYS_read,
            keyctl: libc::SYS_keyctl,
            mount: libc::SYS_mount,
        };
        for caps in [vec![], vec!["CAP_SYS_ADMIN".to_string()]] {
            let (len, linear, longest) = check_against_linear(&X86_64_TABLES, &spot, &caps);
            println!(
                "x86_64 caps {caps:?}: {len} instructions (linear layout {linear}), longest path {longest}"
            );
        }
    }

    #[test]
    fn aarch64_tree_layout_matches_seccompilers_linear_layout() {
        let spot = SpotNumbers {
            read: 63,
            keyctl: 219,
            mount: 40,
        };
        for caps in [vec![], vec!["CAP_SYS_ADMIN".to_string()]] {
            let (len, linear, longest) = check_against_linear(&AARCH64_TABLES, &spot, &caps);
            println!(
                "aarch64 caps {caps:?}: {len} instructions (linear layout {linear}), longest path {longest}"
            );
        }
    }

    /// The aarch64 numbers against the kernel's asm-generic table (installed with the kernel
    /// headers); syscalls newer than the installed headers (>= 451) share one number on every
    /// architecture and are checked against the x86_64 table instead.
    #[test]
    fn aarch64_numbers_match_asm_generic() {
        let header = "/usr/include/asm-generic/unistd.h";
        let Ok(text) = std::fs::read_to_string(header) else {
            println!("skipped: {header} missing (install the kernel headers)");
            return;
        };
        let mut defined: BTreeMap<String, i64> = BTreeMap::new();
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some("#define") {
                continue;
            }
            let (Some(name), Some(value)) = (words.next(), words.next()) else {
                continue;
            };
            let Some(name) = name
                .strip_prefix("__NR3264_")
                .or_else(|| name.strip_prefix("__NR_"))
            else {
                continue;
            };
            if let Ok(number) = value.parse::<i64>() {
                defined.insert(name.to_string(), number);
            }
        }
        // Not syscalls: the table's size and the start of the per-arch range.
        defined.remove("syscalls");
        defined.remove("arch_specific_syscall");
        // asm-generic spells the 64-bit fstatat `fstatat` (newfstatat is an alias).
        defined.insert("newfstatat".to_string(), defined["fstatat"]);
        let newest_in_header = defined.values().copied().max().unwrap();
        let all = aarch64::ALLOWED
            .iter()
            .chain(aarch64::ALLOWED_SINCE_4_8)
            .chain(
                aarch64::CAP_GATED
                    .iter()
                    .flat_map(|(_, group)| group.iter()),
            );
        let mut seen = std::collections::BTreeSet::new();
        for &(name, number) in all.clone() {
            match defined.get(name) {
                Some(&expected) => assert_eq!(number, expected, "aarch64 {name}"),
                None => assert!(
                    number > newest_in_header && number >= 451,
                    "aarch64 {name} ({number}) is not in {header}"
                ),
            }
        }
        for &(name, number) in aarch64::ALLOWED {
            assert!(seen.insert(number), "aarch64 {name} listed twice");
            assert!(
                ![
                    "mount",
                    "umount2",
                    "unshare",
                    "setns",
                    "keyctl",
                    "add_key",
                    "request_key",
                    "kexec_load",
                    "init_module",
                    "reboot",
                    "bpf",
                    "clone",
                    "clone3",
                    "socket",
                    "personality",
                    "open_by_handle_at",
                    "ptrace",
                ]
                .contains(&name),
                "aarch64 {name} must not be unconditional"
            );
        }
        for (name, number) in [
            ("socket", aarch64::SOCKET),
            ("personality", aarch64::PERSONALITY),
            ("clone", aarch64::CLONE),
            ("clone3", aarch64::CLONE3),
        ] {
            assert_eq!(defined.get(name), Some(&number), "aarch64 {name}");
        }
        // Since 424 (pidfd_send_signal) every architecture shares one numbering: the newest
        // entries must be the same numbers in both tables, group by group.
        #[cfg(target_arch = "x86_64")]
        {
            let unified = |numbers: &mut dyn Iterator<Item = i64>| {
                numbers
                    .filter(|&number| number >= 424)
                    .collect::<std::collections::BTreeSet<i64>>()
            };
            assert_eq!(
                unified(&mut aarch64::ALLOWED.iter().map(|entry| entry.1)),
                unified(&mut x86_64::ALLOWED.iter().copied()),
                "unconditional allowlists"
            );
            for (&(cap, arm), &(x86_cap, x86)) in aarch64::CAP_GATED
                .iter()
                .filter(|(_, group)| !group.is_empty())
                .zip(
                    x86_64::CAP_GATED
                        .iter()
                        .filter(|(cap, _)| *cap != "CAP_SYS_RAWIO"),
                )
            {
                assert_eq!(cap, x86_cap);
                assert_eq!(
                    unified(&mut arm.iter().map(|entry| entry.1)),
                    unified(&mut x86.iter().copied()),
                    "{cap}"
                );
            }
        }
    }

    #[test]
    fn far_jumps_go_through_ja() {
        // 300 alternating ranges: the left half of the root spans more than 255 instructions.
        let ranges: Vec<(u32, Leaf)> = (0..300u32)
            .map(|n| (n, Leaf::Return(if n % 2 == 0 { 1 } else { 2 })))
            .collect();
        let mut program = vec![insn(LD_W_ABS, 0, 0, NR_OFFSET)];
        for pending in dispatch_tree(&ranges) {
            match pending {
                Pending::Ready(instruction) => program.push(instruction),
                Pending::JumpToBlock(_) => unreachable!(),
            }
        }
        for nr in 0..310u32 {
            let expected = if nr.min(299) % 2 == 0 { 1 } else { 2 };
            assert_eq!(run_bpf(&program, nr, 0, [0; 6]).0, expected, "nr {nr}");
        }
    }

    #[test]
    fn program_fits_the_kernel_limit() {
        for caps in [vec![], vec!["CAP_SYS_ADMIN".to_string()]] {
            let program = docker_default(&caps).unwrap();
            assert!(!program.is_empty() && program.len() <= BPF_MAX_LEN);
        }
    }
}
