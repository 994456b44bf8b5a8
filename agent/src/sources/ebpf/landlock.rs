//! Keeps aya's loader from parsing the kernel's BTF.
//!
//! aya 0.14's `EbpfLoader::new()` reads and parses all of
//! /sys/kernel/btf/vmlinux (18.7 MiB at its peak on 6.18), even when it is
//! told right after to use no BTF, and no other constructor exists. The
//! programs need none of it (their offsets come in as globals), and the
//! agent has already read what it needs itself (`btf.rs`). So the loader
//! runs on a thread of its own that a Landlock ruleset forbids to read
//! files beneath /sys/kernel/btf, and nothing else: aya's read fails, it
//! goes on without BTF, and the thread ends. Landlock restricts only the
//! thread that asks and needs no privilege; where the kernel lacks it
//! (before 5.13, or not among the active LSMs) the loader parses as before.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

// The same numbers on every architecture (added after the tables were
// unified).
const SYS_LANDLOCK_CREATE_RULESET: libc::c_long = 444;
const SYS_LANDLOCK_ADD_RULE: libc::c_long = 445;
const SYS_LANDLOCK_RESTRICT_SELF: libc::c_long = 446;
const LANDLOCK_RULE_PATH_BENEATH: libc::c_int = 1;
const LANDLOCK_ACCESS_FS_READ_FILE: u64 = 1 << 2;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// Runs `f` on a thread that cannot read files beneath `hidden`, and says
/// whether the restriction took (`Err` with the kernel's reason if not:
/// `f` then ran unrestricted).
pub fn without_reading<T: Send>(hidden: &Path, f: impl FnOnce() -> T + Send) -> (T, Result<(), String>) {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let confined = restrict_this_thread(hidden);
                (f(), confined)
            })
            .join()
            .expect("the eBPF loader thread panicked")
    })
}

fn restrict_this_thread(hidden: &Path) -> Result<(), String> {
    let attr = RulesetAttr { handled_access_fs: LANDLOCK_ACCESS_FS_READ_FILE };
    // SAFETY: the attribute outlives the call and its size is passed.
    let fd = unsafe {
        libc::syscall(SYS_LANDLOCK_CREATE_RULESET, &attr as *const RulesetAttr, size_of::<RulesetAttr>(), 0u32)
    };
    if fd < 0 {
        return Err(format!("landlock_create_ruleset: {}", io::Error::last_os_error()));
    }
    // SAFETY: the kernel just returned this descriptor to us alone.
    let ruleset = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    // Landlock only allows: reading stays allowed beneath every sibling of
    // `hidden` and of each of its ancestors, which is everywhere else.
    for (dir, skip) in ancestors_with_child(hidden) {
        let entries = std::fs::read_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        for entry in entries.flatten() {
            if entry.file_name() == skip.as_os_str() {
                continue;
            }
            allow_reading(&ruleset, &entry.path())?;
        }
    }
    // SAFETY: plain prctl and syscall on this thread's own attributes.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(format!("prctl(PR_SET_NO_NEW_PRIVS): {}", io::Error::last_os_error()));
    }
    if unsafe { libc::syscall(SYS_LANDLOCK_RESTRICT_SELF, ruleset.as_raw_fd(), 0u32) } != 0 {
        return Err(format!("landlock_restrict_self: {}", io::Error::last_os_error()));
    }
    Ok(())
}

/// `/a/b/c` -> [("/", "a"), ("/a", "b"), ("/a/b", "c")].
fn ancestors_with_child(path: &Path) -> Vec<(PathBuf, PathBuf)> {
    let mut out: Vec<(PathBuf, PathBuf)> =
        path.ancestors().filter_map(|p| Some((p.parent()?.to_path_buf(), PathBuf::from(p.file_name()?)))).collect();
    out.reverse();
    out
}

fn allow_reading(ruleset: &OwnedFd, path: &Path) -> Result<(), String> {
    let name = CString::new(path.as_os_str().as_bytes()).map_err(|e| format!("{}: {e}", path.display()))?;
    // SAFETY: a NUL-terminated path; O_PATH opens without reading.
    let fd = unsafe { libc::open(name.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        // Gone since the listing, or a dangling link: nothing to allow.
        return Ok(());
    }
    // SAFETY: as above, ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let rule = PathBeneathAttr { allowed_access: LANDLOCK_ACCESS_FS_READ_FILE, parent_fd: fd.as_raw_fd() };
    // SAFETY: the rule outlives the call.
    let rc = unsafe {
        libc::syscall(
            SYS_LANDLOCK_ADD_RULE,
            ruleset.as_raw_fd(),
            LANDLOCK_RULE_PATH_BENEATH,
            &rule as *const PathBeneathAttr,
            0u32,
        )
    };
    if rc != 0 {
        return Err(format!("landlock_add_rule {}: {}", path.display(), io::Error::last_os_error()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_thread_cannot_read_the_kernel_btf_and_reads_everything_else() {
        let btf = Path::new(super::super::btf::VMLINUX);
        let ((btf_read, status_read, os_read), confined) = without_reading(Path::new("/sys/kernel/btf"), || {
            (
                std::fs::read(btf).map(|_| ()).map_err(|e| e.kind()),
                std::fs::read_to_string("/proc/self/status").is_ok(),
                std::fs::read_to_string("/sys/devices/system/cpu/possible").is_ok(),
            )
        });
        // This machine's kernel has Landlock among its LSMs
        // (/sys/kernel/security/lsm): the restriction must take here.
        assert_eq!(confined, Ok(()));
        assert_eq!(btf_read, Err(io::ErrorKind::PermissionDenied));
        assert!(status_read && os_read, "reading elsewhere must stay allowed");
        // The calling thread is untouched.
        assert!(std::fs::read(btf).is_ok());
    }

    #[test]
    fn ancestors_come_root_first() {
        let got = ancestors_with_child(Path::new("/sys/kernel/btf"));
        let want: Vec<(PathBuf, PathBuf)> = [("/", "sys"), ("/sys", "kernel"), ("/sys/kernel", "btf")]
            .iter()
            .map(|(a, b)| (PathBuf::from(a), PathBuf::from(b)))
            .collect();
        assert_eq!(got, want);
    }
}
