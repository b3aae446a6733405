//! The process allocator, chosen for memory that goes back to the operating system after a
//! burst of work (docs/design.md#memory).
//!
//! * feature `jemalloc` (default): jemalloc with a background thread that purges unused pages
//!   after `dirty_decay_ms`, also while the server sits idle (without it, jemalloc purges only
//!   when the process allocates);
//! * feature `mimalloc`: mimalloc with its defaults (kept for comparison in `pbs-bench memory`);
//! * neither: the system allocator (glibc) with two arenas and a periodic `malloc_trim`, see
//!   [`tune_system_allocator`].
//!
//! Being in the library, the choice also applies to `pbs-bench`, whose `gc` benchmark runs the
//! datastore in its own process.

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// jemalloc's start-up options (read by jemalloc itself through this symbol, under the
/// prefixed name the `tikv-jemalloc-sys` build uses): purge freed pages within a second, from a
/// background thread, and use few arenas (the server's threads are tokio workers and a
/// blocking pool whose threads come and go; one arena per CPU would keep more pages cached).
#[cfg(feature = "jemalloc")]
#[export_name = "_rjem_malloc_conf"]
static MALLOC_CONF: ConfPtr =
    ConfPtr(c"background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0,narenas:2".as_ptr());

/// A C string pointer that may live in a `static` (it points to a literal).
#[cfg(feature = "jemalloc")]
#[repr(transparent)]
struct ConfPtr(*const std::ffi::c_char);

// SAFETY: the pointer refers to an immutable, 'static C string literal.
#[cfg(feature = "jemalloc")]
unsafe impl Sync for ConfPtr {}

/// Which allocator this build uses (logged at start-up).
pub fn name() -> &'static str {
    if cfg!(feature = "jemalloc") {
        "jemalloc"
    } else if cfg!(feature = "mimalloc") {
        "mimalloc"
    } else {
        "system (glibc)"
    }
}

/// Interval of `malloc_trim` with the system allocator.
#[cfg(all(
    not(any(feature = "jemalloc", feature = "mimalloc")),
    target_env = "gnu"
))]
const TRIM_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// With the system allocator (glibc): at most two malloc arenas (glibc creates up to eight per
/// CPU, each keeping freed memory), and a thread that hands free pages of every arena back to
/// the OS every [`TRIM_INTERVAL`] (glibc trims only the top of the main heap by itself). Does
/// nothing with jemalloc or mimalloc, which purge on their own.
pub fn tune_system_allocator() {
    #[cfg(all(
        not(any(feature = "jemalloc", feature = "mimalloc")),
        target_env = "gnu"
    ))]
    {
        // M_ARENA_MAX from glibc's malloc.h
        const M_ARENA_MAX: libc::c_int = -8;
        // SAFETY: mallopt and malloc_trim only adjust and walk the allocator's own state.
        unsafe {
            libc::mallopt(M_ARENA_MAX, 2);
        }
        let spawned = std::thread::Builder::new()
            .name("malloc-trim".into())
            .spawn(|| loop {
                std::thread::sleep(TRIM_INTERVAL);
                // SAFETY: see above.
                unsafe {
                    libc::malloc_trim(0);
                }
            });
        if let Err(e) = spawned {
            tracing::warn!("could not start the malloc_trim thread: {e}");
        }
    }
}
