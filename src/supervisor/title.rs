//! The process title `ps` and `top` show: `siesta: master [NAME]` and
//! `siesta: worker [NAME]` (`-n`), for the master and every worker it forks.
//!
//! Linux shows a process's command line from the memory its argument
//! strings were placed in at `exec`, so the title is written over them, in
//! place, and cut to fit; the thread name (`top`'s default column, 15
//! bytes) is set too. Nothing to install, and no Python module to import:
//! a title costs the master and each worker no memory. Elsewhere (not
//! Linux) it does nothing.

/// Where this process's argument strings lie, from `/proc/self/stat`'s
/// fields 48 and 49 (`arg_start`, `arg_end`): `(start, length)`.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn argument_area(stat: &str) -> Option<(usize, usize)> {
    // The command name (field 2) is in parentheses and may hold spaces or
    // parentheses itself: the fields after it start past the last ')'.
    let after = stat.get(stat.rfind(')')? + 1..)?;
    let mut fields = after.split_ascii_whitespace();
    // `after` starts at field 3, so field 48 is its 46th.
    let start: usize = fields.nth(45)?.parse().ok()?;
    let end: usize = fields.next()?.parse().ok()?;
    (start > 0 && end > start).then(|| (start, end - start))
}

/// The bytes to write over an area of `len` bytes: the title, cut to leave
/// its last byte NUL (so the kernel reads the area alone, not what follows
/// it), then NULs.
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn filled(title: &str, len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    let keep = title.len().min(len.saturating_sub(1));
    out[..keep].copy_from_slice(&title.as_bytes()[..keep]);
    out
}

/// Sets the title; false when it could not (not Linux, `/proc` unreadable,
/// or the area is not what the kernel says the command line is).
#[pyo3::pyfunction]
pub(crate) fn set_title(title: &str) -> bool {
    #[cfg(target_os = "linux")]
    {
        linux::set(title)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = title;
        false
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use super::{argument_area, filled};

    pub(super) fn set(title: &str) -> bool {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return false;
        };
        let Some((start, len)) = argument_area(&stat) else {
            return false;
        };
        // The kernel reads /proc/self/cmdline from that very memory: when
        // the two agree, byte for byte, the area is the argument strings
        // (and nothing else) and can be written over.
        let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else {
            return false;
        };
        if cmdline.len() != len {
            return false;
        }
        // SAFETY: the kernel just read these `len` bytes at `start` for
        // /proc/self/cmdline: they are mapped and readable in this process.
        let now = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
        if now != cmdline.as_slice() {
            return false;
        }
        let bytes = filled(title, len);
        // SAFETY: the same area, the argument strings `exec` placed on the
        // main thread's stack (writable memory). Python copied them at
        // start and nothing reads them since; no Rust reference to them is
        // alive (`now` is not used past the comparison).
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, len) };
        let mut name = [0u8; 16];
        let keep = title.len().min(15);
        name[..keep].copy_from_slice(&title.as_bytes()[..keep]);
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16
        // bytes; `name` is 16 bytes with its last one NUL.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr() as libc::c_ulong, 0, 0, 0) };
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_area_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let mut stat = String::from("4242 (py (x) y) S");
        for field in 4..=52 {
            stat.push_str(&format!(
                " {}",
                if field == 48 {
                    1000
                } else if field == 49 {
                    1040
                } else {
                    field
                }
            ));
        }
        assert_eq!(argument_area(&stat), Some((1000, 40)));
        assert_eq!(argument_area("4242 (x) S 1 2"), None);
        assert_eq!(argument_area("no parenthesis"), None);
    }

    #[test]
    fn the_title_is_cut_to_leave_a_nul_last() {
        assert_eq!(filled("abc", 6), b"abc\0\0\0");
        assert_eq!(filled("abcdef", 4), b"abc\0");
        assert_eq!(filled("abc", 0), b"");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_shows_the_title() {
        // The test binary's own argument strings: long enough for the title.
        assert!(set_title("siesta: test"));
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
        assert!(cmdline.starts_with(b"siesta: test\0"), "{cmdline:?}");
        // The name is the calling thread's (the main one, in the master
        // and in a worker).
        let comm = std::fs::read_to_string("/proc/thread-self/comm").unwrap_or_default();
        assert_eq!(comm.trim_end(), "siesta: test");
    }
}
