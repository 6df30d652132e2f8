//! Let go of the start-up code's pages before a worker runs (Linux only).
//!
//! Most of a worker's resident set is not data but this executable's code:
//! the kernel maps code 64 KiB (or a whole large folio) around each page
//! touched, and start-up touches code that never runs again (parsing the
//! command line with its every subcommand, reading the keyring, opening and
//! migrating the store). In a SQLite worker at concurrency 64 that was 8.7
//! MiB of code against 2.8 MiB of heap (`/proc/PID/smaps`,
//! docs/benchmarks.md, "Worker code pages (session 10)").
//!
//! [`release`] unmaps the executable's code once start-up is over; the code
//! the worker then runs is mapped again, from the page cache, as it first
//! runs (a minor fault per 64 KiB). The file's pages stay in the page cache:
//! nothing is read from disk again, and a second process running this
//! binary shares them as before. Only the mapping that holds this module's
//! own code is touched, and only if it is read-and-execute, private and
//! never writable: the executable's text.

/// Unmap this executable's code pages (see the module docs). Returns the
/// bytes of mappings released, 0 when nothing was done (another OS, or no
/// such mapping).
pub(crate) fn release() -> usize {
    #[cfg(target_os = "linux")]
    {
        let Ok(maps) = std::fs::read_to_string("/proc/self/maps") else {
            return 0;
        };
        let here = release as fn() -> usize as usize;
        let Some((start, end)) = text_mapping(&maps, here) else {
            return 0;
        };
        unmap(start, end);
        end - start
    }
    #[cfg(not(target_os = "linux"))]
    {
        0
    }
}

/// The start and end of the mapping in `maps` (`/proc/self/maps` text) that
/// holds `addr`, if it is read-and-execute, private, and not writable.
fn text_mapping(maps: &str, addr: usize) -> Option<(usize, usize)> {
    maps.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let (range, perms) = (fields.next()?, fields.next()?);
        let (start, end) = range.split_once('-')?;
        let start = usize::from_str_radix(start, 16).ok()?;
        let end = usize::from_str_radix(end, 16).ok()?;
        (start <= addr && addr < end && perms == "r-xp").then_some((start, end))
    })
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
fn unmap(start: usize, end: usize) {
    // SAFETY: `[start, end)` is, per `/proc/self/maps` read just before,
    // one whole mapping of this process that holds this function's code and
    // is mapped `r-xp`: readable, executable, never writable, and private.
    // A private file mapping that was never writable holds no page of its
    // own (a copy-on-write page needs a write), so every page in it is the
    // file's page-cache page. `MADV_DONTNEED` on it only removes page-table
    // entries: the next access (by any thread, at any time, including one
    // executing in the range right now) faults the same bytes back in from
    // the same file, which the kernel keeps from being written while it is
    // mapped for execution (`ETXTBSY`). No Rust value lives in the range
    // and no pointer is made from it, so no reference can observe a
    // change. A refused call (`EINVAL`, `ENOMEM` if the mapping changed
    // meanwhile) leaves the mapping as it was: its result needs no handling.
    let _ = unsafe { libc::madvise(start as *mut libc::c_void, end - start, libc::MADV_DONTNEED) };
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0b00000 r--p 00000000 fd:01 42 /usr/bin/sealq
55d0c0b00000-55d0c1800000 r-xp 00100000 fd:01 42 /usr/bin/sealq
55d0c1800000-55d0c1900000 rw-p 00e00000 fd:01 42 /usr/bin/sealq
7f0000000000-7f0000100000 rwxp 00000000 00:00 0
";

    #[test]
    fn worker_memory_finds_only_the_read_execute_private_mapping_holding_the_address() {
        let text = (0x55d0_c0b0_0000, 0x55d0_c180_0000);
        assert_eq!(text_mapping(MAPS, 0x55d0_c0b0_0000), Some(text));
        assert_eq!(text_mapping(MAPS, 0x55d0_c17f_ffff), Some(text));
        // Read-only data, writable data and a writable executable mapping
        // are never released, nor an address outside every mapping.
        assert_eq!(text_mapping(MAPS, 0x55d0_c0a0_0010), None);
        assert_eq!(text_mapping(MAPS, 0x55d0_c180_0010), None);
        assert_eq!(text_mapping(MAPS, 0x7f00_0000_0010), None);
        assert_eq!(text_mapping(MAPS, 0x10), None);
        assert_eq!(text_mapping("garbage\n", 0x10), None);
    }

    /// The resident KiB of the mapping starting at `start`, per
    /// `/proc/self/smaps`.
    #[cfg(target_os = "linux")]
    fn resident_kib(start: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{start:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head));
        lines
            .find_map(|l| l.strip_prefix("Rss:"))
            .and_then(|v| v.trim().trim_end_matches(" kB").parse().ok())
            .expect("Rss of the code mapping")
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn worker_memory_release_unmaps_this_executables_code_and_it_still_runs() {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let (start, _) =
            text_mapping(&maps, release as fn() -> usize as usize).expect("code mapping");
        let before = resident_kib(start);
        let released = release();
        let after = resident_kib(start);
        assert!(
            after < before,
            "resident code {before} KiB before, {after} KiB after"
        );
        assert!(released > 0, "the test binary's code mapping was found");
        // The code runs on after its pages were released (this function's
        // own included), and the mapping is still there to release again.
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        assert!(text_mapping(&maps, release as fn() -> usize as usize).is_some());
        assert_eq!(release(), released);
    }
}
