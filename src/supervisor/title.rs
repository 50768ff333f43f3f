//! The process title `ps` shows: `siesta: master [NAME]` and
//! `siesta: worker [NAME]` (`-n`), for the master and every worker it forks.
//!
//! Linux shows a process's command line from the memory its argument
//! strings were placed in at `exec`, so the title is written over them, in
//! place, and cut to fit. The rest of that memory is filled with spaces
//! and the title ends with a NUL: the kernel then shows the title alone
//! (a last byte that is not NUL is its sign of a rewritten command line),
//! not the title and a run of NULs. The process name (`/proc/PID/comm`,
//! what `pgrep -x` and `killall` match) is left as it was. Nothing to
//! install, and no Python module to import: a title costs the master and
//! each worker no memory. Elsewhere (not Linux) it does nothing.

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

/// The longest title written: the kernel reads a rewritten command line
/// one page at most, and its NUL must be within it for the next title
/// (a worker's, after the fork) to find it.
const LONGEST: usize = 4095;

/// The bytes to write over an area of `len` bytes: the title, cut at a
/// character's start to leave room for the NUL that ends it (and to
/// `LONGEST`), then spaces. (An area of one byte or none takes no title.)
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn filled(title: &str, len: usize) -> Vec<u8> {
    let mut keep = title.len().min(len.saturating_sub(1)).min(LONGEST);
    while !title.is_char_boundary(keep) {
        keep -= 1;
    }
    let mut out = vec![b' '; len];
    out[..keep].copy_from_slice(&title.as_bytes()[..keep]);
    if let Some(end) = out.get_mut(keep) {
        *end = 0;
    }
    out
}

/// Whether `memory` (the argument area) is what the kernel shows as the
/// command line: the untouched strings (the whole area, its last byte
/// NUL), or a title written here (the kernel shows the area's start up to
/// the first NUL, with or without that NUL, and the last byte is a space).
#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
fn shown_from(memory: &[u8], cmdline: &[u8]) -> bool {
    match memory.last() {
        Some(0) => memory == cmdline,
        Some(_) => {
            memory.starts_with(cmdline)
                && (cmdline.last() == Some(&0) || memory.get(cmdline.len()) == Some(&0))
        }
        None => false,
    }
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
    use super::{argument_area, filled, shown_from};

    pub(super) fn set(title: &str) -> bool {
        let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
            return false;
        };
        let Some((start, len)) = argument_area(&stat) else {
            return false;
        };
        // The kernel reads /proc/self/cmdline from that very memory: when
        // the two agree, the area is the argument strings (as `exec` left
        // them or as a title before this one left them) and can be written
        // over.
        let Ok(cmdline) = std::fs::read("/proc/self/cmdline") else {
            return false;
        };
        // SAFETY: the kernel gives these `len` bytes at `start` as this
        // process's argument area, on the main thread's stack: mapped and
        // readable here. `now` is dropped before the write below.
        let now = unsafe { std::slice::from_raw_parts(start as *const u8, len) };
        if !shown_from(now, &cmdline) {
            return false;
        }
        let bytes = filled(title, len);
        // SAFETY: the same area, the argument strings `exec` placed on the
        // main thread's stack (writable memory). Python copied them at
        // start and nothing reads them since; no Rust reference to them is
        // alive.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), start as *mut u8, len) };
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
    fn the_title_is_cut_at_a_character_and_ends_with_a_nul() {
        assert_eq!(filled("abc", 6), b"abc\0  ");
        assert_eq!(filled("abcdef", 4), b"abc\0");
        assert_eq!(filled("abc", 4), b"abc\0");
        // "é" is two bytes: it is not cut in half.
        assert_eq!(filled("aé", 3), b"a\0 ");
        assert_eq!(filled("abc", 1), b"\0");
        assert_eq!(filled("abc", 0), b"");
        // Its NUL stays within the page the kernel reads.
        let long = "x".repeat(5000);
        assert_eq!(filled(&long, 6000)[LONGEST], 0);
        assert_eq!(filled(&long, 6000).len(), 6000);
    }

    #[test]
    fn only_the_shown_command_line_is_written_over() {
        assert!(shown_from(b"python\0app\0", b"python\0app\0"));
        assert!(!shown_from(b"python\0app\0", b"python\0"));
        // A title written before: the kernel shows it up to its NUL.
        assert!(shown_from(b"siesta\0   ", b"siesta\0"));
        assert!(shown_from(b"siesta\0   ", b"siesta"));
        assert!(!shown_from(b"siesta\0   ", b"siest"));
        assert!(!shown_from(b"siestax   ", b"siesta"));
        assert!(!shown_from(b"", b""));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_shows_the_title() {
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
        let (_, len) = argument_area(&stat).unwrap_or((0, 0));
        assert!(len > 1, "{stat}");
        let want = "siesta: test [a title longer than some command lines are]";
        assert!(set_title(want));
        // Shown alone (cut to fit this test binary's own arguments), as ps reads it.
        let shown = |cmdline: Vec<u8>| cmdline.strip_suffix(b"\0").unwrap_or(&cmdline).to_vec();
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
        let keep = want.len().min(len - 1);
        assert_eq!(shown(cmdline), want.as_bytes()[..keep].to_vec());
        // And again, over a title.
        assert!(set_title("siesta: again"));
        let cmdline = std::fs::read("/proc/self/cmdline").unwrap_or_default();
        assert_eq!(shown(cmdline), b"siesta: again"[..13.min(len - 1)].to_vec());
    }
}
