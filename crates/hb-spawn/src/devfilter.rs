//! The device filter of a cgroup v2 container. v2 has no `devices.allow` file: the kernel asks
//! a `BPF_PROG_TYPE_CGROUP_DEVICE` program attached to the cgroup for every open and mknod of a
//! device node. This module turns the same rules the v1 devices cgroup gets ("c 1:3 rwm") into
//! such a program, loads it and attaches it. The program is a straight list of rule checks, so
//! it is small enough to build by hand rather than through an eBPF toolchain.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::SpawnError;

/// One rule: device type (`None`: both), major and minor (`None`: any), access bits allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeviceRule {
    /// `BPF_DEVCG_DEV_BLOCK` (1) or `BPF_DEVCG_DEV_CHAR` (2); `None` for `a`.
    pub kind: Option<u32>,
    /// Major number, or any.
    pub major: Option<u32>,
    /// Minor number, or any.
    pub minor: Option<u32>,
    /// `BPF_DEVCG_ACC_MKNOD` (1) | `READ` (2) | `WRITE` (4).
    pub access: u32,
}

impl DeviceRule {
    /// Parses a devices-cgroup rule as v1 writes it: `c 1:3 rwm`, `b *:* m`, `a`.
    pub fn parse(rule: &str) -> Result<DeviceRule, SpawnError> {
        let bad = || SpawnError::setup(format!("invalid device rule {rule:?}"));
        let mut parts = rule.split_whitespace();
        let kind = match parts.next().ok_or_else(bad)? {
            "a" => {
                return Ok(DeviceRule {
                    kind: None,
                    major: None,
                    minor: None,
                    access: 7,
                })
            }
            "b" => Some(1),
            "c" => Some(2),
            _ => return Err(bad()),
        };
        let (major, minor) = parts
            .next()
            .ok_or_else(bad)?
            .split_once(':')
            .ok_or_else(bad)?;
        let number = |n: &str| -> Result<Option<u32>, SpawnError> {
            match n {
                "*" => Ok(None),
                n => n.parse().map(Some).map_err(|_| bad()),
            }
        };
        let mut access = 0;
        for c in parts.next().ok_or_else(bad)?.chars() {
            access |= match c {
                'm' => 1,
                'r' => 2,
                'w' => 4,
                _ => return Err(bad()),
            };
        }
        Ok(DeviceRule {
            kind,
            major: number(major)?,
            minor: number(minor)?,
            access,
        })
    }
}

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Insn {
    code: u8,
    /// dst in the low nibble, src in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}

// Opcodes used (linux/bpf.h: class | op | source).
const LDX_MEM_W: u8 = 0x61;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_AND_K: u8 = 0x57;
const ALU64_RSH_K: u8 = 0x77;
const JMP_JNE_K: u8 = 0x55;
const JMP_EXIT: u8 = 0x95;

/// The program: registers r2 = type, r3 = access, r4 = major, r5 = minor from
/// `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`; then for each rule
/// "if everything matches and the access asked for is within the rule's, return 1"; else 0.
fn program(rules: &[DeviceRule]) -> Vec<Insn> {
    let mut p = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),        // r2 = access_type
        insn(ALU64_MOV_X, 3, 2, 0, 0),      // r3 = access_type
        insn(ALU64_AND_K, 2, 0, 0, 0xffff), // r2 = type
        insn(ALU64_RSH_K, 3, 0, 0, 16),     // r3 = access
        insn(LDX_MEM_W, 4, 1, 4, 0),        // r4 = major
        insn(LDX_MEM_W, 5, 1, 8, 0),        // r5 = minor
    ];
    for r in rules {
        let mut checks: Vec<Insn> = Vec::new();
        if let Some(k) = r.kind {
            checks.push(insn(JMP_JNE_K, 2, 0, 0, k as i32));
        }
        if let Some(m) = r.major {
            checks.push(insn(JMP_JNE_K, 4, 0, 0, m as i32));
        }
        if let Some(m) = r.minor {
            checks.push(insn(JMP_JNE_K, 5, 0, 0, m as i32));
        }
        if r.access != 7 {
            // r6 = access & ~allowed; anything left means "not this rule".
            checks.push(insn(ALU64_MOV_X, 6, 3, 0, 0));
            checks.push(insn(ALU64_AND_K, 6, 0, 0, (!r.access & 7) as i32));
            checks.push(insn(JMP_JNE_K, 6, 0, 0, 0));
        }
        // Each failed check jumps past the rest of this rule (and its "allow").
        let n = checks.len();
        for (i, c) in checks.iter_mut().enumerate() {
            if c.code == JMP_JNE_K {
                c.off = (n - i - 1 + 2) as i16;
            }
        }
        p.extend(checks);
        p.push(insn(ALU64_MOV_K, 0, 0, 0, 1));
        p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    }
    p.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    p.push(insn(JMP_EXIT, 0, 0, 0, 0));
    p
}

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

/// `union bpf_attr` for BPF_PROG_LOAD, up to the fields used (the rest zero).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
    _rest: [u64; 8],
}

/// `union bpf_attr` for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    _rest: [u32; 11],
}

/// Loads the program for `rules` and attaches it to the cgroup directory `dir`; from then on
/// every process in that cgroup opens or creates only the devices the rules allow. The program
/// stays attached for the cgroup's life.
pub fn attach(dir: &Path, rules: &[DeviceRule]) -> Result<(), SpawnError> {
    let insns = program(rules);
    let mut log = vec![0u8; 4096];
    let mut name = [0u8; 16];
    name[..8].copy_from_slice(b"hb_devcg");
    let load = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: c"Apache-2.0".as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        prog_name: name,
        ..Default::default()
    };
    // SAFETY: the attr points at live buffers of the sizes given, for the call's duration.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &load as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        let verifier = String::from_utf8_lossy(&log);
        let verifier = verifier.trim_end_matches('\0').trim();
        return Err(SpawnError::io(
            format!(
                "loading the device filter (cgroup v2) for {}: {verifier}",
                dir.display()
            ),
            e,
        ));
    }
    // SAFETY: a new fd the kernel just returned, owned here.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cgroup = std::fs::File::open(dir)
        .map_err(|e| SpawnError::io(format!("opening {}", dir.display()), e))?;
    let att = ProgAttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..Default::default()
    };
    // SAFETY: as above.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &att as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc != 0 {
        return Err(SpawnError::io(
            format!("attaching the device filter to {}", dir.display()),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_parse_like_the_v1_files() {
        assert_eq!(
            DeviceRule::parse("c 1:3 rwm").unwrap(),
            DeviceRule {
                kind: Some(2),
                major: Some(1),
                minor: Some(3),
                access: 7
            }
        );
        assert_eq!(
            DeviceRule::parse("b *:* m").unwrap(),
            DeviceRule {
                kind: Some(1),
                major: None,
                minor: None,
                access: 1
            }
        );
        assert_eq!(DeviceRule::parse("c 136:* rw").unwrap().minor, None);
        for bad in ["", "x 1:3 r", "c 1 r", "c 1:3 q", "c a:3 r", "c 1:3"] {
            assert!(DeviceRule::parse(bad).is_err(), "{bad:?}");
        }
    }

    /// The real kernel: a shell placed in a v2 cgroup with the filter opens what the rules
    /// allow and nothing else. Runs wherever a cgroup2 hierarchy is mounted and we are root
    /// (this machine: the hybrid layout's /sys/fs/cgroup/unified).
    #[test]
    fn the_kernel_enforces_the_filter() {
        let Some(root) = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
            .iter()
            .map(Path::new)
            .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.subtree_control").exists())
        else {
            eprintln!("skipping: no cgroup2 hierarchy mounted");
            return;
        };
        // SAFETY: getuid has no preconditions.
        if unsafe { libc::getuid() } != 0 {
            eprintln!("skipping: needs root");
            return;
        }
        let dir = root.join(format!("hb-devfilter-test-{}", std::process::id()));
        std::fs::create_dir(&dir).unwrap();
        let rules: Vec<DeviceRule> = ["c 1:3 rwm", "c 1:5 r"]
            .iter()
            .map(|r| DeviceRule::parse(r).unwrap())
            .collect();
        attach(&dir, &rules).unwrap();
        let script = format!(
            "echo $$ > {}/cgroup.procs || exit 9; \
             (exec 3<>/dev/null) 2>&- && echo null-rw; \
             (exec 3</dev/zero) 2>&- && echo zero-r; \
             (exec 3>/dev/zero) 2>&- && echo zero-w; \
             (exec 3</dev/full) 2>&- && echo full-r; true",
            dir.display()
        );
        let out = std::process::Command::new("sh")
            .args(["-c", &script])
            .output()
            .unwrap();
        let _ = std::fs::remove_dir(&dir);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "null-rw\nzero-r\n");
    }

    #[test]
    fn every_failed_check_skips_its_rules_allow() {
        let p = program(&[DeviceRule::parse("c 1:3 r").unwrap()]);
        // 6 loads, 3 compares + 3 access insns, allow (2), deny (2).
        assert_eq!(p.len(), 6 + 6 + 2 + 2);
        let deny = p.len() - 2;
        for (i, x) in p.iter().enumerate() {
            if x.code == JMP_JNE_K {
                assert_eq!(i as i64 + 1 + x.off as i64, deny as i64, "insn {i}");
            }
        }
    }
}
