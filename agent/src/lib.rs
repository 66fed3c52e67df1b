//! `kattila-agent`: builds signed reports and pushes them to the receiver.
//! The same report builder and push client serve the real agent and the
//! fleet simulator, so the simulator cannot drift from the real format.
#![forbid(unsafe_code)]

pub mod api;
pub mod cli;
pub mod collect;
pub mod config;
pub mod error;
pub mod identity;
pub mod node;
pub mod push;
pub mod report;
pub mod reset;
pub mod retry;
pub mod simulate;
pub mod spool;

// The fleet builds are static musl binaries. musl's allocator returns freed
// blocks of a few KiB and up to the kernel at once and maps them again on
// the next use: two system calls and fresh page faults for each, about 80
// times per collection cycle, most of the cycle's CPU time. dlmalloc (pure
// Rust, one heap) keeps freed memory for reuse and trims only beyond 2 MiB,
// without the per-thread heaps that cost mimalloc about 1 MB more idle RSS.
// Builds against glibc keep glibc's allocator.
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOCATOR: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

/// Seconds since the Unix epoch.
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
