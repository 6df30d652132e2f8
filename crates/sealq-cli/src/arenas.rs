//! One malloc arena for the whole process (glibc only).
//!
//! glibc gives every thread that allocates under contention an arena of its
//! own (up to eight per core), and each arena keeps its free memory. A
//! worker's threads (the runtime workers, the SQLite writer, checkpointer
//! and commit watcher, the blocking pool) held 7.8-11 MiB in four to six
//! arenas at a SQLite worker's peak, against 5.8 MiB of live allocations;
//! one arena took the peak down by about 3 MiB at no measured cost in rate
//! or CPU: glibc's per-thread caches serve the small allocations without
//! the arena's lock (docs/benchmarks.md, "SQLite worker memory and
//! quiet-machine ratios").
//!
//! An operator's own setting wins: with `MALLOC_ARENA_MAX` or
//! `GLIBC_TUNABLES` in the environment (glibc read them at start-up),
//! nothing is changed.

/// The arena cap sealq sets when the environment does not.
const ARENA_MAX: i32 = 1;

/// Whether the environment already tells glibc how many arenas to use.
fn environment_decides(var: impl Fn(&str) -> bool) -> bool {
    var("MALLOC_ARENA_MAX") || var("GLIBC_TUNABLES")
}

/// Cap glibc's malloc arenas at [`ARENA_MAX`] unless the environment sets
/// them. Call first thing in `main`, before any thread is started.
pub(crate) fn limit() {
    if environment_decides(|name| std::env::var_os(name).is_some()) {
        return;
    }
    set_arena_max(ARENA_MAX);
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(n: i32) {
    // SAFETY: `mallopt(3)` takes two integers by value and returns an
    // integer: no pointer crosses the call, so it cannot touch memory Rust
    // owns. glibc documents it as MT-safe (it takes the main arena's lock,
    // initialising malloc first if needed), and `M_ARENA_MAX` only sets the
    // limit that later arena creations read; arenas that exist stay valid.
    // It is called from `main` before the runtime or any other thread
    // starts, so no allocation is racing with it anyway. The return value
    // (0 on a rejected value) needs no handling: glibc then keeps its
    // default, which is correct, only larger.
    let _ = unsafe { libc::mallopt(libc::M_ARENA_MAX, n) };
}

/// Other C libraries keep their own allocator policy.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_n: i32) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_malloc_setting_is_left_alone() {
        assert!(environment_decides(|n| n == "MALLOC_ARENA_MAX"));
        assert!(environment_decides(|n| n == "GLIBC_TUNABLES"));
        assert!(!environment_decides(|n| n == "MALLOC_TOP_PAD_"));
        assert!(!environment_decides(|_| false));
    }
}
