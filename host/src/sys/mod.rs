//! What the operating system answers: file ownership and modes, this machine's name.

pub mod fsperm;

/// This machine's name (`${HOSTNAME}`, the local slots' folder).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}
