//! The process's memory. The `collective` binary allocates with jemalloc (`main.rs`); here its
//! background thread is started, so pages freed after a transient peak (a snapshot's copy of the
//! state, a restart's decoding) go back to the system within jemalloc's dirty decay time (10 s) whatever the
//! freeing thread does next, and its statistics are read for `Cluster.Status`. In a process
//! that allocates otherwise (the tests), these calls reach an idle jemalloc and report nothing.

/// Starts jemalloc's background purging; a failure is logged (memory is then returned lazily).
pub fn start_background_purging() {
    if let Err(error) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(%error, "starting jemalloc's background purging");
    }
}

/// Bytes the allocator has handed out and not had back (live heap), when jemalloc allocates.
pub fn heap_allocated_bytes() -> Option<u64> {
    tikv_jemalloc_ctl::epoch::advance().ok()?;
    let allocated = tikv_jemalloc_ctl::stats::allocated::read().ok()? as u64;
    (allocated > 0).then_some(allocated)
}
