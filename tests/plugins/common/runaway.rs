//! Runaway calls two test plugins make on request, which the host must
//! stop (included with `#[path]` by `hostile` and `misbehave`).

/// Spin without end: the host's CPU limit must end the call.
pub fn spin() -> ! {
    #[allow(clippy::empty_loop)]
    loop {}
}

/// Allocate 1 MiB after another without end (written to, so the pages are
/// real): the host's memory limit must end the call.
pub fn hoard() -> ! {
    let mut hoard: Vec<Vec<u8>> = Vec::new();
    loop {
        hoard.push(vec![7u8; 1 << 20]);
    }
}
