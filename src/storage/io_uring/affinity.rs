//! Pinning the ring thread to one CPU ([`IoUringConfig::ring_cpu`](super::IoUringConfig)).

use crate::error::{WalError, WalResult};

/// Checks that `cpu` is one this process may run on.
pub(crate) fn check_cpu(cpu: u32) -> WalResult<()> {
    let allowed = allowed_cpus().map_err(|errno| WalError::InvalidConfig {
        field: "ring_cpu",
        reason: format!("cannot read this process's CPU affinity (errno {errno})"),
    })?;
    if allowed.contains(&cpu) {
        return Ok(());
    }
    Err(WalError::InvalidConfig {
        field: "ring_cpu",
        reason: format!("is {cpu}, but this process may only run on CPUs {allowed:?}"),
    })
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Result<Vec<u32>, i32> {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is valid for writes of its own size, which is the size passed.
    let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
    if ret != 0 {
        return Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO));
    }
    let bits = 8 * std::mem::size_of_val(&set);
    Ok((0..bits)
        // SAFETY: `cpu` is below the set's size in bits, so the test stays inside `set`.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .map(|cpu| cpu as u32)
        .collect())
}

/// Pins the calling thread to `cpu`. Returns the errno on failure.
pub(crate) fn pin_current_thread(cpu: u32) -> Result<(), i32> {
    // SAFETY: cpu_set_t is a plain bit array; all zeros is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: CPU_SET writes one bit inside `set`, indexing its bit array with a bounds check
    // (`check_cpu` only lets CPUs inside the set through).
    unsafe { libc::CPU_SET(cpu as usize, &mut set) };
    // SAFETY: `set` is valid for reads of its own size, which is the size passed.
    let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
    if ret == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO))
    }
}
