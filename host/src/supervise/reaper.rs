//! Ending every descendant of the job supervisor.
//!
//! The supervisor is a child subreaper (`PR_SET_CHILD_SUBREAPER`): a process
//! the job starts that loses its parent — a daemon that called `setsid`, a
//! double fork — is reparented to the supervisor instead of init, so it stays
//! findable. When the job ends (normally, cancelled or at its time limit) the
//! supervisor stops every descendant with SIGSTOP (so none can fork any
//! more), repeating until the tree stops growing, then SIGKILLs them all and
//! reaps them. Nothing the job started outlives it, as under a batch
//! scheduler.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Make this process the subreaper of its descendants.
pub fn become_subreaper() -> std::io::Result<()> {
    // SAFETY: plain prctl on this process.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Direct children of `pid` (every thread's).
fn children(pid: i32) -> Vec<i32> {
    let mut found = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return found;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            found.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    found
}

/// Every live descendant of `pid`.
pub fn descendants(pid: i32) -> BTreeSet<i32> {
    let mut all = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for c in children(p) {
            if all.insert(c) {
                todo.push(c);
            }
        }
    }
    all
}

/// Stop, kill and reap every descendant of this process, within `limit`.
/// Returns how many processes were killed.
pub fn end_descendants(limit: Duration) -> usize {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + limit;
    let mut killed = BTreeSet::new();
    loop {
        reap();
        // Freeze the tree first: a stopped process cannot fork.
        let mut seen = BTreeSet::new();
        loop {
            let now = descendants(me);
            let new: Vec<i32> = now.difference(&seen).copied().collect();
            if new.is_empty() {
                break;
            }
            for &p in &new {
                // SAFETY: plain syscall on a pid that is our descendant (and
                // unreaped, so not reused).
                unsafe { libc::kill(p, libc::SIGSTOP) };
            }
            seen.extend(new);
            if Instant::now() >= deadline {
                break;
            }
        }
        if seen.is_empty() {
            return killed.len();
        }
        for &p in &seen {
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        killed.extend(seen);
        std::thread::sleep(Duration::from_millis(5));
        if Instant::now() >= deadline {
            reap();
            return killed.len();
        }
    }
}

/// Reap every child that has ended, without blocking.
fn reap() {
    let mut status = 0;
    // SAFETY: plain syscall; reaps only our own children.
    while unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } > 0 {}
}
