//! The sandbox a render worker puts itself in after its plugins are loaded and before it reads
//! any image. Four layers, each on its own enough to stop one kind of escape:
//!
//! 1. **Resource limits** (`setrlimit`, soft and hard): address space `limits.worker_memory_bytes`
//!    (a render that wants more fails its own request), no core files, no file written past
//!    the largest reduced copy (the only files a worker writes are the copies' files the
//!    server opens and hands it; a write past the limit fails, `SIGXFSZ` is ignored), few
//!    descriptors.
//! 2. **No capabilities, no new privileges**: every capability dropped (effective, permitted,
//!    inheritable, ambient and the bounding set: a worker of a server run as root is not
//!    privileged), `PR_SET_NO_NEW_PRIVS`, and not dumpable (no other process of the same user
//!    can attach to it).
//! 3. **Landlock** (kernel 5.13+, best effort): no filesystem access at all, no TCP bind or
//!    connect (ABI 4+), no signals to and no abstract Unix sockets of processes outside the
//!    worker (ABI 6+). On a kernel without Landlock this layer is reported missing and the
//!    seccomp filter still denies every call that opens a file or a socket.
//! 4. **seccomp-bpf** (required): an allowlist of the system calls decoding, rendering and
//!    encoding need on descriptors the worker already holds (read, write, memory, futexes,
//!    time, its own signals, threads; descriptors the server sends on its socket). Every other
//!    call fails with `EPERM`: no `open`, no
//!    `socket`, no `execve`, no `fork` (a `clone` without `CLONE_THREAD`), no `ptrace`, no
//!    `kill` of another process (nor `fcntl`'s `F_SETOWN`/`O_ASYNC`, which would have the
//!    kernel signal one), no raising of the limits above. A worker that cannot install the
//!    filter refuses to render.
//!
//! Processes run as root on some machines: none of this relies on file permissions.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

use super::protocol::SandboxReport;

/// Descriptors a worker may hold: its socket, stdio, and a few a library may open.
const MAX_FILES: u64 = 64;

/// Enters the sandbox: limits (files written up to `file_bytes`), no new privileges,
/// Landlock, seccomp, in that order (the filter last, since it forbids the calls the others
/// make).
pub fn enter(memory_bytes: u64, file_bytes: u64) -> Result<SandboxReport, String> {
    limit(libc::RLIMIT_AS, memory_bytes, "address space")?;
    limit(libc::RLIMIT_CORE, 0, "core files")?;
    limit(libc::RLIMIT_FSIZE, file_bytes, "file size")?;
    ignore_file_size_signal();
    limit(libc::RLIMIT_NOFILE, MAX_FILES, "open files")?;
    drop_capabilities()?;
    no_new_privileges()?;
    let (landlock_abi, note) = landlock();
    seccomp()?;
    Ok(SandboxReport {
        seccomp: true,
        landlock_abi,
        note,
    })
}

/// A write past `RLIMIT_FSIZE` fails with `EFBIG` instead of killing the worker.
#[allow(unsafe_code)]
fn ignore_file_size_signal() {
    // SAFETY: sets a standard signal's disposition to "ignore"; no handler runs.
    unsafe { libc::signal(libc::SIGXFSZ, libc::SIG_IGN) };
}

/// Sets `resource` to `value`, soft and hard, or to the hard limit the worker inherited if
/// that is lower (a server run under a tighter limit passes it on).
#[allow(unsafe_code)]
fn limit(resource: libc::__rlimit_resource_t, value: u64, what: &str) -> Result<(), String> {
    let mut inherited = libc::rlimit {
        rlim_cur: 0,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: getrlimit writes the struct passed by reference and nothing else.
    unsafe { libc::getrlimit(resource, &mut inherited) };
    let value = value.min(inherited.rlim_max);
    let limit = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: setrlimit reads the struct passed by reference and nothing else.
    if unsafe { libc::setrlimit(resource, &limit) } != 0 {
        return Err(format!(
            "cannot limit {what}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// Drops every capability: the bounding set first (which needs `CAP_SETPCAP`), then the
/// ambient set, then the effective, permitted and inheritable sets.
#[allow(unsafe_code)]
fn drop_capabilities() -> Result<(), String> {
    for cap in 0..64 {
        // SAFETY: prctl with integer arguments only. Past the last capability the kernel
        // answers EINVAL, and without CAP_SETPCAP (not root) EPERM: both leave nothing to drop.
        unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) };
    }
    // SAFETY: as above.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
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
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let none = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version 3 header and the two data words it describes, both
    // passed by reference and alive for the call.
    let set = unsafe { libc::syscall(libc::SYS_capset, &header, none.as_ptr()) };
    if set != 0 {
        return Err(format!(
            "cannot drop capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[allow(unsafe_code)]
fn no_new_privileges() -> Result<(), String> {
    // SAFETY: prctl with integer arguments only.
    let set = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if set != 0 {
        return Err(format!(
            "cannot set no_new_privs: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: as above. Not dumpable: no ptrace or /proc/PID/mem from other processes of the
    // same user, and no core file.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
    Ok(())
}

/// Landlock with nothing allowed: the ABI in force (0 without Landlock) and a note when it is
/// missing or partial.
fn landlock() -> (u8, Option<String>) {
    use landlock::{
        Access, AccessFs, AccessNet, CompatLevel, Compatible, LandlockStatus, Ruleset, RulesetAttr,
        RulesetStatus, Scope, ABI,
    };
    let abi = ABI::V6;
    let restricted = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.scope(Scope::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.restrict_self());
    match restricted {
        Ok(status) => {
            let in_force = match status.landlock {
                LandlockStatus::Available { effective_abi, .. } => effective_abi as u8,
                _ => 0,
            };
            let note = match status.ruleset {
                RulesetStatus::FullyEnforced => None,
                RulesetStatus::PartiallyEnforced => Some(format!(
                    "Landlock ABI {in_force}: some restrictions of ABI 6 are not enforced"
                )),
                RulesetStatus::NotEnforced => Some(
                    "no Landlock on this kernel: seccomp alone denies files and sockets".into(),
                ),
            };
            (in_force, note)
        }
        Err(e) => (0, Some(format!("Landlock failed: {e}"))),
    }
}

/// The system calls a worker keeps, by number; an empty rule list allows every call.
fn allowed() -> Result<BTreeMap<i64, Vec<SeccompRule>>, String> {
    let err = |e: seccompiler::BackendError| e.to_string();
    let arg = |index: u8, op: SeccompCmpOp, value: u64| {
        SeccompCondition::new(index, SeccompCmpArgLen::Qword, op, value).map_err(err)
    };
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for call in [
        // I/O on descriptors already open or sent (the sockets, stderr, reduced copies).
        libc::SYS_read,
        libc::SYS_write,
        libc::SYS_pread64,
        libc::SYS_pwrite64,
        libc::SYS_readv,
        libc::SYS_writev,
        libc::SYS_recvfrom,
        libc::SYS_sendto,
        libc::SYS_recvmsg,
        libc::SYS_sendmsg,
        libc::SYS_close,
        libc::SYS_fstat,
        libc::SYS_newfstatat,
        libc::SYS_statx,
        libc::SYS_lseek,
        // Memory.
        libc::SYS_mmap,
        libc::SYS_munmap,
        libc::SYS_mremap,
        libc::SYS_mprotect,
        libc::SYS_madvise,
        libc::SYS_brk,
        // Signals (its own), threads, synchronisation, time.
        libc::SYS_rt_sigaction,
        libc::SYS_rt_sigprocmask,
        libc::SYS_rt_sigreturn,
        libc::SYS_sigaltstack,
        libc::SYS_futex,
        libc::SYS_set_robust_list,
        libc::SYS_set_tid_address,
        libc::SYS_rseq,
        libc::SYS_sched_yield,
        libc::SYS_sched_getaffinity,
        libc::SYS_getpid,
        libc::SYS_gettid,
        libc::SYS_getuid,
        libc::SYS_geteuid,
        libc::SYS_getgid,
        libc::SYS_getegid,
        libc::SYS_clock_gettime,
        libc::SYS_clock_getres,
        libc::SYS_clock_nanosleep,
        libc::SYS_nanosleep,
        libc::SYS_gettimeofday,
        libc::SYS_getrandom,
        libc::SYS_getrusage,
        libc::SYS_sysinfo,
        libc::SYS_getrlimit,
        libc::SYS_exit,
        libc::SYS_exit_group,
    ] {
        rules.insert(call, Vec::new());
    }
    // Descriptor flags may be read and set, never asynchronous I/O or an owner (with them
    // the kernel would signal a process of the worker's choosing).
    let fcntl_cmd = |cmd: i32| -> Result<SeccompRule, String> {
        SeccompRule::new(vec![arg(1, SeccompCmpOp::Eq, cmd as u64)?]).map_err(err)
    };
    rules.insert(
        libc::SYS_fcntl,
        vec![
            fcntl_cmd(libc::F_GETFD)?,
            fcntl_cmd(libc::F_SETFD)?,
            fcntl_cmd(libc::F_GETFL)?,
            fcntl_cmd(libc::F_DUPFD_CLOEXEC)?,
            SeccompRule::new(vec![
                arg(1, SeccompCmpOp::Eq, libc::F_SETFL as u64)?,
                arg(2, SeccompCmpOp::MaskedEq(libc::O_ASYNC as u64), 0)?,
            ])
            .map_err(err)?,
        ],
    );
    // Answered ENOSYS by the filter installed before the allowlist.
    rules.insert(libc::SYS_clone3, Vec::new());
    // Limits may be read (a thread library asks for the stack size), never set: root could
    // raise them back.
    rules.insert(
        libc::SYS_prlimit64,
        vec![SeccompRule::new(vec![arg(2, SeccompCmpOp::Eq, 0)?]).map_err(err)?],
    );
    // Signals to itself only: abort() raises SIGABRT with tgkill on its own process.
    let me = u64::from(std::process::id());
    rules.insert(
        libc::SYS_tgkill,
        vec![SeccompRule::new(vec![arg(0, SeccompCmpOp::Eq, me)?]).map_err(err)?],
    );
    // Threads (a codec may start some), never processes.
    let thread = libc::CLONE_THREAD as u64;
    rules.insert(
        libc::SYS_clone,
        vec![SeccompRule::new(vec![arg(0, SeccompCmpOp::MaskedEq(thread), thread)?]).map_err(err)?],
    );
    Ok(rules)
}

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())
}

/// Installs a filter that answers `clone3` with `ENOSYS` (its flags are in memory, out of a
/// filter's reach, so threads must be made with `clone`, which glibc falls back to on
/// `ENOSYS`), then the allowlist, which lets `clone3` through to the first filter's answer
/// (the kernel takes the most restrictive of all filters' answers). The allowlist goes last:
/// it forbids installing filters.
fn seccomp() -> Result<(), String> {
    let allowlist = SeccompFilter::new(
        allowed()?,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch()?,
    )
    .map_err(|e| e.to_string())?;
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    let no_clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch()?,
    )
    .map_err(|e| e.to_string())?;
    for filter in [no_clone3, allowlist] {
        let program: BpfProgram = filter
            .try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())?;
        seccompiler::apply_filter_all_threads(&program)
            .map_err(|e| format!("cannot install the seccomp filter: {e}"))?;
    }
    Ok(())
}
