//! How the processes use the C allocator. glibc raises its mmap threshold each time
//! a large block mapped with mmap is freed, so that later blocks of that size come
//! from the heap arenas — and stay resident after they are freed. Each argon2id
//! verification takes 19 MiB and runs on whichever blocking thread is free, and each
//! thread gets an arena of its own: after a wave of logins an edge kept hundreds of
//! megabytes resident that it no longer used. A fixed threshold turns that off: large
//! blocks (verifications, big message bodies) are mapped and returned when freed.
#![allow(unsafe_code)] // mallopt(3); see below.

/// Blocks from this size on are mapped individually and returned when freed.
const MMAP_THRESHOLD: i32 = 1024 * 1024;

/// Fixes the allocator's mmap threshold; call once at start.
pub fn return_large_blocks() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; called at start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD);
    }
}
