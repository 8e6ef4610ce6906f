//! How many worker threads the parallel passes (blit, scan, verify) run: the CPUs
//! this process may run on, at most eight — beyond that the passes are bound by
//! the filesystem, not by cores. Asked of the kernel directly
//! (`sched_getaffinity`): `std::thread::available_parallelism` also reads cgroup
//! files and costs 5 KiB of the static binary.

use nix::libc;

/// The number of worker threads to start: 1..=8.
pub fn count() -> usize {
    // SAFETY: an all-zero cpu_set_t is a valid empty set, and the kernel writes
    // at most its size.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } == 0;
    // SAFETY: `set` is an initialised cpu_set_t.
    let n = if ok { (unsafe { libc::CPU_COUNT(&set) }) as usize } else { 1 };
    n.clamp(1, 8)
}

#[cfg(test)]
mod tests {
    #[test]
    fn at_least_one_at_most_eight() {
        let n = super::count();
        assert!((1..=8).contains(&n), "{n}");
    }
}
