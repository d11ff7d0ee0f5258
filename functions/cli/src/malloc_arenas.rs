//! `serve` asks glibc's allocator for one arena instead of up to 8 per core.
//!
//! glibc gives each thread that allocates an arena of its own and keeps in it what that
//! thread freed. serve's threads (the tokio workers, the queue's writer, up to 16 blocking
//! threads) each filled one under the throughput benchmark: peak RSS 29–30 MiB, against
//! 22–23 MiB with one arena, at no measured cost in latency or throughput (`BENCHMARKS.md`,
//! "`serve`'s memory after the throughput load"). Small allocations seldom reach the
//! arena's lock: each thread's cache (tcache) serves them first.
//!
//! glibc reads `MALLOC_ARENA_MAX` (and `GLIBC_TUNABLES`) only when the process starts, so
//! the default is set from inside with `mallopt`; an operator who sets either keeps theirs
//! (a many-core host under heavy load may want more arenas).

/// The arena limit serve sets, unless the environment already sets one.
pub const SERVE_ARENAS: i32 = 1;

/// Whether serve should set its own limit, given the `MALLOC_ARENA_MAX` and
/// `GLIBC_TUNABLES` variables: not when the operator set one of their own.
pub fn should_limit(malloc_arena_max: Option<&str>, glibc_tunables: Option<&str>) -> bool {
    malloc_arena_max.is_none()
        && !glibc_tunables.is_some_and(|tunables| {
            tunables
                .split(':')
                .any(|tunable| tunable.starts_with("glibc.malloc.arena_max="))
        })
}

/// Limits the arenas to [`SERVE_ARENAS`] unless the environment sets a limit; whether it
/// did. Call before any thread but the main one exists.
pub fn limit_for_serve() -> bool {
    let variable = |name| std::env::var(name).ok();
    should_limit(
        variable("MALLOC_ARENA_MAX").as_deref(),
        variable("GLIBC_TUNABLES").as_deref(),
    ) && set_arena_max(SERVE_ARENAS)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
fn set_arena_max(arenas: i32) -> bool {
    // SAFETY: `mallopt` takes two integers and only changes a parameter of the allocator,
    // under the allocator's own lock; M_ARENA_MAX with a positive value is documented in
    // mallopt(3). It returns 1 on success.
    unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn set_arena_max(_arenas: i32) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_operators_own_arena_limit_is_kept() {
        let cases = [
            (None, None, true),
            (Some("4"), None, false),
            (Some(""), None, false),
            (None, Some("glibc.malloc.arena_max=4"), false),
            (
                None,
                Some("glibc.malloc.tcache_count=0:glibc.malloc.arena_max=2"),
                false,
            ),
            (None, Some("glibc.malloc.tcache_count=0"), true),
            (None, Some("glibc.malloc.arena_test=2"), true),
            (None, Some(""), true),
        ];
        for (arena_max, tunables, limit) in cases {
            assert_eq!(
                should_limit(arena_max, tunables),
                limit,
                "{arena_max:?} {tunables:?}"
            );
        }
    }

    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[test]
    fn glibc_accepts_the_limit() {
        assert!(set_arena_max(SERVE_ARENAS));
    }
}
