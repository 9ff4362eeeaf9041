//! Step (last): a seccomp allow-list. A session may make the system calls a Python data
//! session needs (CPython, numpy/pandas/matplotlib, IPython, threads, subprocesses of
//! ordinary tools, files, pipes, sockets, time, memory, signals, polling), some only with
//! the arguments listed beside them; every other call fails with EPERM before it reaches
//! the kernel, except the few that libraries probe and replace with an older call when
//! they are missing, which fail with ENOSYS. The filter is a second wall behind the
//! namespaces, not the only one.
//!
//! One BPF program, in four parts:
//! 1. [`prologue`]: a foreign architecture kills the process (an x86_64 process can still
//!    enter the kernel through the 32-bit `int 0x80` gate, with other numbers); an x32
//!    call (its number has `__X32_SYSCALL_BIT`, and it shares x86_64's architecture
//!    value) fails with EPERM; the [`PROBED`] calls fail with ENOSYS.
//! 2. [`dispatch`]: the calls of [`ALLOWED`] and [`ALLOWED_ARCH`] are allowed.
//! 3. The calls allowed with some arguments only ([`filtered_rules`]), compiled by
//!    `seccompiler`.
//! 4. EPERM for everything else (`seccompiler`'s mismatch action).
//!
//! Parts 1 and 2 are written by hand, as `seccompiler` cannot express them (a bit of the
//! number, answers other than its one match action, a search shorter than its linear
//! chain).

use crate::error::SandboxError;
use seccompiler::{
    apply_filter, sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp,
    SeccompCondition, SeccompFilter, SeccompRule, TargetArch,
};
use std::collections::BTreeMap;

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
compile_error!("the seccomp allow-list is written for x86_64 and aarch64");

/// Allowed whatever their arguments. Grouped by purpose; the calls of one architecture
/// are in [`ALLOWED_ARCH`].
const ALLOWED: &[libc::c_long] = &[
    // Processes and threads: glibc's pthread_create and fork, posix_spawn and exec of
    // ordinary tools (`clone` itself is in `filtered_rules`), waiting, exiting.
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_set_tid_address,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    libc::SYS_rseq,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_getpgid,
    libc::SYS_setpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_prctl,
    libc::SYS_getrusage,
    libc::SYS_times,
    libc::SYS_prlimit64,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_capget,
    // Scheduling: OpenBLAS/OpenMP read and pin CPU sets; the cgroup bounds the rest.
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_getattr,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_getcpu,
    // Who we are (reading only: the session cannot change its identity).
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    // Memory. numpy's allocator, OpenBLAS's NUMA hints, memory-mapped files; locking
    // is bounded by RLIMIT_MEMLOCK.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_msync,
    libc::SYS_mincore,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_munlock,
    libc::SYS_mlockall,
    libc::SYS_munlockall,
    libc::SYS_mseal,
    libc::SYS_membarrier,
    libc::SYS_mbind,
    libc::SYS_get_mempolicy,
    libc::SYS_set_mempolicy,
    libc::SYS_memfd_create,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    // Shared memory and semaphores of System V, private to the session's IPC namespace
    // (multiprocessing's own primitives use /dev/shm and futexes).
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmdt,
    libc::SYS_shmctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_semctl,
    // Files: reading, writing, metadata, directories. What can be reached is decided by
    // the mounts and Landlock, not here.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_lseek,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_readahead,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_vmsplice,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_mkdirat,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_umask,
    libc::SYS_utimensat,
    // Extended attributes (`ls -l`, `cp -a`, shutil.copystat).
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    // Watching files (IPython's autoreload, watchdog): counted per uid by the kernel.
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    // Pipes, polling and event descriptors (asyncio, subprocess, zmq-style loops).
    libc::SYS_pipe2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_eventfd2,
    libc::SYS_signalfd4,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    // Sockets, once created (which families may be created is in `filtered_rules`).
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // Time and timers (reading the clocks; setting them is refused).
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    libc::SYS_getitimer,
    libc::SYS_setitimer,
    // Signals, within the session's PID namespace.
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sigaltstack,
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    // The system, as the namespaces show it.
    libc::SYS_uname,
    libc::SYS_sysinfo,
    libc::SYS_getrandom,
    libc::SYS_restart_syscall,
];

/// Calls of one architecture only. On x86_64: the older forms of calls allowed above
/// (aarch64 has only the `*at`, `p*` and `prlimit64` forms), and `arch_prctl`, which
/// glibc calls to set up thread-local storage.
#[cfg(target_arch = "x86_64")]
const ALLOWED_ARCH: &[libc::c_long] = &[
    libc::SYS_fchmodat2,
    libc::SYS_sync_file_range,
    libc::SYS_getrlimit,
    libc::SYS_setrlimit,
    libc::SYS_renameat,
    libc::SYS_arch_prctl,
    libc::SYS_fork,
    libc::SYS_vfork,
    libc::SYS_getpgrp,
    libc::SYS_open,
    libc::SYS_creat,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_dup2,
    libc::SYS_getdents,
    libc::SYS_mkdir,
    libc::SYS_rmdir,
    libc::SYS_unlink,
    libc::SYS_rename,
    libc::SYS_link,
    libc::SYS_symlink,
    libc::SYS_readlink,
    libc::SYS_chmod,
    libc::SYS_chown,
    libc::SYS_lchown,
    libc::SYS_utime,
    libc::SYS_utimes,
    libc::SYS_futimesat,
    libc::SYS_inotify_init,
    libc::SYS_pipe,
    libc::SYS_poll,
    libc::SYS_select,
    libc::SYS_epoll_create,
    libc::SYS_epoll_wait,
    libc::SYS_eventfd,
    libc::SYS_signalfd,
    libc::SYS_time,
    libc::SYS_alarm,
    libc::SYS_pause,
];

/// On aarch64: fchmodat2 and sync_file_range, which the `libc` crate names for x86_64
/// only (the numbers come from the kernel's generic table).
#[cfg(target_arch = "aarch64")]
const ALLOWED_ARCH: &[libc::c_long] = &[452, 84];

/// Fail with ENOSYS ("this kernel does not have it"), the one error on which their
/// callers fall back to an older call; EPERM would be reported as a failure.
/// - `clone3`: glibc creates threads and processes with it and falls back to `clone`
///   only on ENOSYS. Its flags lie in memory seccomp cannot read; `clone`'s are checked.
/// - `io_uring_*`: runtimes and libraries that try io_uring use epoll or threads without.
/// - `landlock_*`: programs that sandbox themselves carry on unrestricted when the kernel
///   lacks Landlock (the session is already restricted by its own ruleset).
const PROBED: &[libc::c_long] = &[
    libc::SYS_clone3,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_restrict_self,
];

/// Namespace flags a `clone` must not carry. (CLONE_NEWTIME, 0x80, lies in the byte
/// `clone` reads as the exit signal, where no valid signal sets it; it is refused here
/// all the same, and `unshare`, the other way to a new time namespace, is refused.)
const NAMESPACE_FLAGS: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWTIME;

/// Families a socket may be created in: local sockets and TCP/UDP over IPv4 and IPv6 (the
/// network namespace has only a loopback). Not AF_VSOCK (it ignores network namespaces
/// and reaches the hypervisor's services in a VM), AF_PACKET, or any other.
const SOCKET_FAMILIES: &[libc::c_int] = &[libc::AF_UNIX, libc::AF_INET, libc::AF_INET6];

/// ioctl requests a session may make: terminals (IPython's `!cmd` and `pty` run a
/// pseudo-terminal, `isatty`, terminal sizes, job control), descriptor flags, and the
/// read-only interface queries of glibc's `if_nametoindex` family (the namespace has only
/// a loopback to show). Not TIOCSTI (pushing input into a terminal) or any other.
const IOCTL_REQUESTS: &[libc::Ioctl] = &[
    libc::TCGETS,
    libc::TCSETS,
    libc::TCSETSW,
    libc::TCSETSF,
    libc::TCGETS2,
    libc::TCSETS2,
    libc::TCSETSW2,
    libc::TCSETSF2,
    libc::TCFLSH,
    libc::TCXONC,
    libc::TCSBRK,
    libc::TIOCGWINSZ,
    libc::TIOCSWINSZ,
    libc::TIOCGPGRP,
    libc::TIOCSPGRP,
    libc::TIOCGSID,
    libc::TIOCSCTTY,
    libc::TIOCNOTTY,
    libc::TIOCOUTQ,
    // Opening a pseudo-terminal (glibc's openpty, grantpt, unlockpt, ptsname).
    libc::TIOCGPTN,
    libc::TIOCSPTLCK,
    libc::TIOCGPTPEER,
    // Descriptors: bytes waiting, non-blocking, close-on-exec, async.
    libc::FIONREAD,
    libc::FIONBIO,
    libc::FIOCLEX,
    libc::FIONCLEX,
    libc::FIOASYNC,
    // Reading what an interface is called, its index, flags, address, MTU.
    libc::SIOCGIFINDEX,
    libc::SIOCGIFNAME,
    libc::SIOCGIFCONF,
    libc::SIOCGIFFLAGS,
    libc::SIOCGIFADDR,
    libc::SIOCGIFHWADDR,
    libc::SIOCGIFMTU,
];

/// personality(2) values that only query or keep the default Linux personality.
const PERSONALITIES: &[u64] = &[0, 0xffff_ffff];

/// `__X32_SYSCALL_BIT`: set in the number of every x32 call.
#[cfg(target_arch = "x86_64")]
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// The audit architecture value of this build's system calls.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

/// Where `struct seccomp_data` keeps the call's number and architecture.
const SECCOMP_DATA_NR: u32 = 0;
const SECCOMP_DATA_ARCH: u32 = 4;

pub fn install() -> Result<(), SandboxError> {
    apply_filter(&program()?).map_err(seccomp_error)
}

/// The whole filter: its four parts in order (see the module's documentation).
fn program() -> Result<BpfProgram, SandboxError> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(seccomp_error)?;
    let filter = SeccompFilter::new(
        filtered_rules()?.into_iter().collect(),
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    )
    .map_err(seccomp_error)?;
    let filtered = BpfProgram::try_from(filter).map_err(seccomp_error)?;
    let mut program = prologue();
    program.extend(dispatch(ALLOWED.iter().chain(ALLOWED_ARCH)));
    program.extend(filtered);
    Ok(program)
}

/// Calls allowed only with some arguments: the call is allowed when any one of its rules
/// holds, and a rule holds when all its conditions do.
fn filtered_rules() -> Result<Vec<(i64, Vec<SeccompRule>)>, SandboxError> {
    let family_rules = |families: &[libc::c_int]| {
        families
            .iter()
            .map(|&family| rule(&[(0, SeccompCmpOp::Eq, family as u64)]))
            .collect::<Result<Vec<_>, _>>()
    };
    let mut socket = family_rules(SOCKET_FAMILIES)?;
    // AF_NETLINK for NETLINK_ROUTE only: glibc's getifaddrs and if_nameindex (Python's
    // socket.if_nameindex, psutil) and getaddrinfo's AI_ADDRCONFIG list the interfaces
    // through it. It shows only the session's own loopback, and changing anything needs
    // CAP_NET_ADMIN, which the session does not have.
    socket.push(rule(&[
        (0, SeccompCmpOp::Eq, libc::AF_NETLINK as u64),
        (2, SeccompCmpOp::Eq, libc::NETLINK_ROUTE as u64),
    ])?);
    let ioctl = IOCTL_REQUESTS
        .iter()
        // The kernel reads the request as an unsigned int: the low half is what counts.
        .map(|&request| rule(&[(1, SeccompCmpOp::Eq, u64::from(request as u32))]))
        .collect::<Result<Vec<_>, _>>()?;
    let personality = PERSONALITIES
        .iter()
        .map(|&persona| rule(&[(0, SeccompCmpOp::Eq, persona)]))
        .collect::<Result<Vec<_>, _>>()?;
    // Regular files, named pipes (os.mkfifo) and socket files; no device nodes (the
    // kernel refuses them without CAP_MKNOD too). A mode without a type is a regular file.
    let no_devices = |mode_arg: u8| {
        [0, libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK]
            .iter()
            .map(|&kind| {
                let mask = SeccompCmpOp::MaskedEq(u64::from(libc::S_IFMT));
                rule(&[(mode_arg, mask, u64::from(kind))])
            })
            .collect::<Result<Vec<_>, _>>()
    };
    let mut filtered = vec![
        // clone: flags (argument 0 on x86_64 and aarch64 alike) without namespace flags.
        (
            libc::SYS_clone,
            vec![rule(&[(
                0,
                SeccompCmpOp::MaskedEq(NAMESPACE_FLAGS as u64),
                0,
            )])?],
        ),
        (libc::SYS_socket, socket),
        // socketpair exists for local sockets only.
        (libc::SYS_socketpair, family_rules(&[libc::AF_UNIX])?),
        (libc::SYS_ioctl, ioctl),
        (libc::SYS_personality, personality),
        (libc::SYS_mknodat, no_devices(2)?),
    ];
    #[cfg(target_arch = "x86_64")]
    filtered.push((libc::SYS_mknod, no_devices(1)?));
    Ok(filtered)
}

/// One rule: all of `(argument, comparison, value)` must hold. Arguments are compared as
/// 32-bit values (the kernel reads all of these as `int` or `unsigned int`), except
/// masks, which see all 64 bits.
fn rule(conditions: &[(u8, SeccompCmpOp, u64)]) -> Result<SeccompRule, SandboxError> {
    conditions
        .iter()
        .map(|(arg, op, value)| {
            let width = match op {
                SeccompCmpOp::MaskedEq(_) => SeccompCmpArgLen::Qword,
                _ => SeccompCmpArgLen::Dword,
            };
            SeccompCondition::new(*arg, width, op.clone(), *value)
        })
        .collect::<Result<Vec<_>, _>>()
        .and_then(SeccompRule::new)
        .map_err(seccomp_error)
}

/// The architecture (kill on a foreign one), the x32 bit (EPERM), and the [`PROBED`]
/// calls (ENOSYS). Leaves the call's number in the accumulator.
fn prologue() -> Vec<sock_filter> {
    let mut program = vec![
        load(SECCOMP_DATA_ARCH),
        jump_if_equal(AUDIT_ARCH, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        load(SECCOMP_DATA_NR),
    ];
    #[cfg(target_arch = "x86_64")]
    program.extend([
        jump(libc::BPF_JSET, X32_SYSCALL_BIT, 0, 1),
        ret(errno(libc::EPERM)),
    ]);
    for &nr in PROBED {
        program.extend([jump_if_equal(nr as u32, 0, 1), ret(errno(libc::ENOSYS))]);
    }
    program
}

/// Numbers per bucket of [`dispatch`].
const BUCKET_SPAN: u32 = 32;

/// Allows the calls in `allowed` in a few instructions: a chain of comparisons picks the
/// bucket of [`BUCKET_SPAN`] numbers the call falls in, and the bucket compares it with
/// its allowed numbers. Any other call jumps past the end, to the rules that look at
/// arguments. One linear chain of 300 comparisons would do the same, but the kernel
/// runs the filter for every call number when it is installed (to cache the calls that
/// are always allowed), and the chain made that cost half a millisecond per session.
///
/// Expects the call's number in the accumulator (where [`prologue`] leaves it).
fn dispatch<'a>(allowed: impl Iterator<Item = &'a libc::c_long>) -> Vec<sock_filter> {
    let mut buckets: BTreeMap<u32, Vec<u32>> = BTreeMap::new();
    for &nr in allowed {
        let nr = nr as u32;
        buckets.entry(nr / BUCKET_SPAN).or_default().push(nr);
    }
    // Highest bucket first, so that "number >= the bucket's first" picks it.
    let buckets: Vec<(u32, Vec<u32>)> = buckets.into_iter().rev().collect();
    // Per bucket: its comparisons, then a jump past the end, then "allow".
    let body_len = |numbers: &Vec<u32>| numbers.len() + 2;
    let header_len = 2 * buckets.len() + 1;
    let total = header_len + buckets.iter().map(|(_, n)| body_len(n)).sum::<usize>();
    // A forward jump from the instruction at `from` to the one at `to`.
    let offset = |from: usize, to: usize| (to - from - 1) as u32;

    let mut header = Vec::with_capacity(header_len);
    let mut bodies = Vec::with_capacity(total - header_len);
    for (bucket, numbers) in &buckets {
        let body_start = header_len + bodies.len();
        header.push(jump(libc::BPF_JGE, bucket * BUCKET_SPAN, 0, 1));
        header.push(jump_always(offset(header.len(), body_start)));
        let count = numbers.len();
        for (i, &nr) in numbers.iter().enumerate() {
            // Equal: skip the rest of the comparisons and the jump, to "allow" (fewer
            // than BUCKET_SPAN instructions, so the offset fits its byte).
            bodies.push(jump_if_equal(nr, (count - i) as u8, 0));
        }
        bodies.push(jump_always(offset(header_len + bodies.len(), total)));
        bodies.push(ret(libc::SECCOMP_RET_ALLOW));
    }
    header.push(jump_always(offset(header.len(), total)));
    header.extend(bodies);
    header
}

fn jump_always(offset: u32) -> sock_filter {
    statement(libc::BPF_JMP | libc::BPF_JA, offset)
}

fn load(offset: u32) -> sock_filter {
    statement(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, offset)
}

fn jump_if_equal(value: u32, if_true: u8, if_false: u8) -> sock_filter {
    jump(libc::BPF_JEQ, value, if_true, if_false)
}

/// A conditional jump comparing the accumulator with `value` (`test` is BPF_JEQ, BPF_JSET…);
/// the offsets count the instructions skipped.
fn jump(test: u32, value: u32, if_true: u8, if_false: u8) -> sock_filter {
    sock_filter {
        code: (libc::BPF_JMP | test | libc::BPF_K) as u16,
        jt: if_true,
        jf: if_false,
        k: value,
    }
}

fn ret(action: u32) -> sock_filter {
    statement(libc::BPF_RET | libc::BPF_K, action)
}

fn statement(code: u32, k: u32) -> sock_filter {
    sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn errno(code: libc::c_int) -> u32 {
    libc::SECCOMP_RET_ERRNO | (code as u32 & libc::SECCOMP_RET_DATA)
}

fn seccomp_error(error: impl std::fmt::Display) -> SandboxError {
    SandboxError::Seccomp(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// The sixth argument that marks a probe.
    const MARK: u64 = 0x5a5d_ce11_0bad_f00d;
    /// The errno the marking filter answers with (below 4096, the largest errno).
    const MARKED: i32 = 4000;

    /// A filter, installed before the one under test, that answers every call whose
    /// sixth argument is [`MARK`] with [`MARKED`] and allows everything else. Of two
    /// filters answering with an errno the newer one wins: a probe the allow-list refuses
    /// returns its EPERM or ENOSYS, and one it allows returns MARKED. Either way the call
    /// never reaches the kernel, so probing every number is safe, even as root.
    fn marking_filter() -> BpfProgram {
        // The low and high halves of args[5] (little-endian on x86_64 and aarch64).
        let (low, high) = (16 + 5 * 8, 16 + 5 * 8 + 4);
        vec![
            load(low),
            jump_if_equal(MARK as u32, 0, 3),
            load(high),
            jump_if_equal((MARK >> 32) as u32, 0, 1),
            ret(errno(MARKED)),
            ret(libc::SECCOMP_RET_ALLOW),
        ]
    }

    /// x86_64's `uretprobe` (335) and `uprobe` (336): the kernel lets them past seccomp,
    /// since they work only from the trampolines the kernel maps for user probes, and
    /// answer any other caller with SIGILL (uretprobe) or ENXIO (uprobe). Nothing else
    /// is exempt.
    #[cfg(target_arch = "x86_64")]
    const SECCOMP_EXEMPT: &[libc::c_long] = &[335, 336];
    #[cfg(not(target_arch = "x86_64"))]
    const SECCOMP_EXEMPT: &[libc::c_long] = &[];

    /// Calls of [`filtered_rules`] that all-zero arguments satisfy: clone without flags,
    /// personality(0), mknod of a regular file.
    const ALLOWED_WITH_ZERO_ARGUMENTS: &[libc::c_long] = &[
        libc::SYS_clone,
        libc::SYS_personality,
        libc::SYS_mknodat,
        #[cfg(target_arch = "x86_64")]
        libc::SYS_mknod,
    ];

    /// A probe: (number, the first five arguments).
    type Probe = (libc::c_long, [u64; 5]);

    /// Runs each probe under the marking filter and the real filter, on a thread of its
    /// own (seccomp filters apply to the thread that installs them), and returns the
    /// errno of each: MARKED for a call the allow-list let through.
    fn probe(probes: Vec<Probe>) -> Vec<(Probe, i32)> {
        std::thread::spawn(move || {
            apply_filter(&marking_filter()).unwrap();
            let call = |(nr, a): Probe| {
                // SAFETY: a marked call never reaches the kernel: the marking filter or
                // the filter under test answers it.
                let result = unsafe { libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], MARK) };
                let errno = std::io::Error::last_os_error().raw_os_error();
                // The mark stays in its register after the call, where the next call of
                // a wrapper with fewer arguments (write, munmap) would carry it along:
                // overwrite it with an unmarked call.
                // SAFETY: getpid has no effect.
                unsafe { libc::syscall(libc::SYS_getpid, 0, 0, 0, 0, 0, 0) };
                assert_eq!(result, -1, "syscall {nr} reached the kernel");
                errno.unwrap()
            };
            assert_eq!(
                call((libc::SYS_getpid, [0; 5])),
                MARKED,
                "the marking filter works"
            );
            install().unwrap();
            probes.into_iter().map(|p| (p, call(p))).collect()
        })
        .join()
        .unwrap()
    }

    fn result_of(nr: libc::c_long, args: [u64; 5]) -> i32 {
        probe(vec![(nr, args)])[0].1
    }

    #[test]
    fn every_call_outside_the_allow_list_is_refused() {
        // Every number of the kernel's table (x86_64's and aarch64's end below 1024; the
        // kernel answers anything beyond with ENOSYS), plus a few far past it.
        let numbers: Vec<libc::c_long> = (0..1024)
            .filter(|nr| !SECCOMP_EXEMPT.contains(nr))
            .chain([4096, 65535, 0x3fff_ffff])
            .collect();
        let results = probe(numbers.iter().map(|&nr| (nr, [0; 5])).collect());
        let allowed: BTreeSet<libc::c_long> = ALLOWED
            .iter()
            .chain(ALLOWED_ARCH)
            .copied()
            .chain(ALLOWED_WITH_ZERO_ARGUMENTS.iter().copied())
            .collect();
        let mut wrong = Vec::new();
        for ((nr, _), errno) in results {
            let expected = if allowed.contains(&nr) {
                MARKED
            } else if PROBED.contains(&nr) {
                libc::ENOSYS
            } else {
                libc::EPERM
            };
            if errno != expected {
                wrong.push(format!("{nr}: errno {errno}, expected {expected}"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
    }

    #[test]
    #[cfg(target_arch = "x86_64")]
    fn x32_numbers_are_refused() {
        // Each allowed call under its x32 number, and every other x32 number.
        let results = probe(
            (0..1024)
                .map(|nr| (X32_SYSCALL_BIT as libc::c_long | nr, [0; 5]))
                .collect(),
        );
        let wrong: Vec<_> = results
            .iter()
            .filter(|(_, errno)| *errno != libc::EPERM)
            .collect();
        assert!(wrong.is_empty(), "{wrong:?}");
    }

    #[test]
    fn clone_with_a_namespace_flag_is_refused() {
        let sigchld = libc::SIGCHLD as u64;
        assert_eq!(result_of(libc::SYS_clone, [sigchld, 0, 0, 0, 0]), MARKED);
        let threads = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(result_of(libc::SYS_clone, [threads, 0, 0, 0, 0]), MARKED);
        for flag in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWCGROUP,
            libc::CLONE_NEWTIME,
        ] {
            let flags = flag as u64 | sigchld;
            assert_eq!(
                result_of(libc::SYS_clone, [flags, 0, 0, 0, 0]),
                libc::EPERM,
                "clone flag {flag:#x}"
            );
        }
        assert_eq!(result_of(libc::SYS_clone3, [0; 5]), libc::ENOSYS);
    }

    #[test]
    fn sockets_only_in_the_allowed_families() {
        let socket = |family: libc::c_int, protocol: libc::c_int| {
            let kind = libc::SOCK_STREAM as u64;
            result_of(
                libc::SYS_socket,
                [family as u64, kind, protocol as u64, 0, 0],
            )
        };
        for family in [libc::AF_UNIX, libc::AF_INET, libc::AF_INET6] {
            assert_eq!(socket(family, 0), MARKED, "family {family}");
        }
        for family in [
            libc::AF_VSOCK,
            libc::AF_PACKET,
            libc::AF_ALG,
            libc::AF_BLUETOOTH,
        ] {
            assert_eq!(socket(family, 0), libc::EPERM, "family {family}");
        }
        assert_eq!(socket(libc::AF_NETLINK, libc::NETLINK_ROUTE), MARKED);
        for protocol in [
            libc::NETLINK_AUDIT,
            libc::NETLINK_KOBJECT_UEVENT,
            libc::NETLINK_SOCK_DIAG,
        ] {
            assert_eq!(
                socket(libc::AF_NETLINK, protocol),
                libc::EPERM,
                "netlink {protocol}"
            );
        }
        let pair =
            |family: libc::c_int| result_of(libc::SYS_socketpair, [family as u64, 1, 0, 0, 0]);
        assert_eq!(pair(libc::AF_UNIX), MARKED);
        assert_eq!(pair(libc::AF_INET), libc::EPERM);
    }

    #[test]
    fn ioctl_only_with_listed_requests() {
        let ioctl = |request: u64| result_of(libc::SYS_ioctl, [0, request, 0, 0, 0]);
        // libc::Ioctl is c_ulong or c_int depending on the C library.
        let number = |request: libc::Ioctl| u64::from(request as u32);
        for request in [
            libc::TCGETS,
            libc::TIOCGWINSZ,
            libc::FIONREAD,
            libc::FIOCLEX,
        ] {
            assert_eq!(ioctl(number(request)), MARKED, "request {request:#x}");
        }
        // The kernel reads an unsigned int: high bits do not change the request.
        let high_bits = 0xffff_ffff_0000_0000 | number(libc::TCGETS);
        assert_eq!(ioctl(high_bits), MARKED);
        // Pushing input into a terminal, the console's ioctls, and reflinks are refused.
        let btrfs_ioc_clone = 0x4004_9409;
        for request in [
            number(libc::TIOCSTI),
            number(libc::TIOCLINUX),
            btrfs_ioc_clone,
        ] {
            assert_eq!(ioctl(request), libc::EPERM, "request {request:#x}");
        }
    }

    #[test]
    fn mknod_creates_no_device_nodes() {
        let mknodat = |mode: u32| {
            result_of(
                libc::SYS_mknodat,
                [libc::AT_FDCWD as u64, 0, u64::from(mode), 0, 0],
            )
        };
        for kind in [0, libc::S_IFREG, libc::S_IFIFO, libc::S_IFSOCK] {
            assert_eq!(mknodat(kind | 0o600), MARKED, "type {kind:#o}");
        }
        assert_eq!(mknodat(libc::S_IFCHR | 0o600), libc::EPERM);
        assert_eq!(mknodat(libc::S_IFBLK | 0o600), libc::EPERM);
    }
}
