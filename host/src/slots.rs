//! A bound on how many supervised jobs run at once: the process policy's
//! `max_running_jobs` slots, each an exclusive `flock` on one file.
//!
//! A job's supervisor takes a slot before it starts the job and holds it
//! until it exits. The kernel drops a lock when its holder dies, so a killed
//! supervisor never leaks a slot, and every process of the user on the
//! machine (the daemon, one-shot CLIs, a second daemon) shares the bound
//! through the files, with no process in charge of it.
//!
//! A job that finds every slot taken waits in line: an exclusive lock on one
//! queue file. Its holder, the head of the line, tries the slots every few
//! milliseconds until one is free, then lets go of the queue, and the next
//! waiter becomes the head. Only the head polls; the rest sleep in the
//! kernel, which grants a contended `flock` in the order it was asked for
//! (since Linux 4.20 each blocked request waits on the one before it). A job
//! that arrives while others wait joins the end of the line instead of
//! trying the slots, so jobs start in about the order they were submitted.
//!
//! ```no_run
//! # fn demo() -> std::io::Result<()> {
//! use hpc_host::slots::{Slots, Taken};
//! let slots = Slots::new("/state/jobs/local/.slots/login1".into(), 4.try_into().unwrap());
//! let slot = match slots.take()? {
//!     Taken::Now(slot) => slot,
//!     // Tell the submitter the job is accepted, then wait.
//!     Taken::Wait(place) => match slots.wait(place, || false)? {
//!         Some(slot) => slot,
//!         None => return Ok(()), // cancelled while waiting
//!     },
//! };
//! // ... run the job; dropping `slot` (or exiting) frees it.
//! # drop(slot); Ok(()) }
//! ```

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most `max_running_jobs` may be. The head of the line opens and tries
/// every slot file on each poll: at this many, a poll costs a few
/// milliseconds of the head's CPU time, and no machine the host runs on runs
/// more jobs at once usefully.
pub const MAX_SLOTS: usize = 1024;

/// The first pause of the head of the line between two tries of the slots.
const FIRST_POLL: Duration = Duration::from_millis(2);
/// The longest pause: a freed slot is taken at most this late (and a job
/// cancelled while its supervisor is the head ends at most this late), while
/// the head wakes only 20 times a second however long it waits.
const LAST_POLL: Duration = Duration::from_millis(50);

/// The slots of one bound: files `0` to `count - 1` in `dir`, and the line
/// of waiting jobs, `queue-<count>`. Jobs under a different count (the
/// policy changed while jobs ran) share the slots they have in common but
/// wait in lines of their own, so neither blocks the other's head.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slots {
    pub dir: PathBuf,
    pub count: NonZeroUsize,
}

/// A slot taken: the job may run while this lives (or while its process does).
#[derive(Debug)]
pub struct Slot {
    _lock: File,
    index: usize,
}

impl Slot {
    /// Which slot (`0..count`).
    pub fn index(&self) -> usize {
        self.index
    }
}

/// A place in the line for a slot, to pass to [`Slots::wait`].
#[derive(Debug)]
pub struct Place {
    queue: File,
    /// This process holds the queue's lock: it is the head already.
    head: bool,
}

/// What [`Slots::take`] found.
#[derive(Debug)]
pub enum Taken {
    /// A free slot, and no job was waiting for one.
    Now(Slot),
    /// Every slot is taken, or jobs wait already: wait in line.
    Wait(Place),
}

impl Slots {
    pub fn new(dir: PathBuf, count: NonZeroUsize) -> Slots {
        Slots { dir, count }
    }

    /// A free slot now, unless every slot is taken or other jobs wait for
    /// one; then a place at the end of the line. Never blocks.
    pub fn take(&self) -> std::io::Result<Taken> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&self.dir)?;
        let queue = open(&self.dir.join(format!("queue-{}", self.count)))?;
        if !lock(&queue, libc::LOCK_EX | libc::LOCK_NB)? {
            return Ok(Taken::Wait(Place { queue, head: false }));
        }
        Ok(match self.try_free()? {
            Some(slot) => Taken::Now(slot),
            None => Taken::Wait(Place { queue, head: true }),
        })
    }

    /// Wait in line until a slot is free: `None` if `stop` says so first.
    /// `stop` is asked before each sleep and after each wake-up: as the head
    /// at least every [`LAST_POLL`], behind it whenever a signal with a
    /// handler interrupts the wait (see [`crate::supervisor`]).
    pub fn wait(&self, place: Place, stop: impl Fn() -> bool) -> std::io::Result<Option<Slot>> {
        if !place.head {
            loop {
                if stop() {
                    return Ok(None);
                }
                match lock(&place.queue, libc::LOCK_EX) {
                    Ok(_) => break,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
            }
        }
        let mut pause = FIRST_POLL;
        loop {
            if let Some(slot) = self.try_free()? {
                // Dropping `place` lets the next job in line be the head.
                return Ok(Some(slot));
            }
            if stop() {
                return Ok(None);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(LAST_POLL);
        }
    }

    /// The first slot whose lock is free, taken.
    fn try_free(&self) -> std::io::Result<Option<Slot>> {
        for index in 0..self.count.get() {
            let file = open(&self.dir.join(index.to_string()))?;
            if lock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
                return Ok(Some(Slot { _lock: file, index }));
            }
        }
        Ok(None)
    }
}

/// Open (or create) a lock file of this user's. Write access is what NFS
/// asks for an exclusive lock.
fn open(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// `flock(how)`: `Ok(false)` when a non-blocking lock is held elsewhere.
pub(crate) fn lock(file: &File, how: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == std::io::ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn slots(count: usize) -> (Slots, PathBuf) {
        let dir = std::env::temp_dir().join(format!("hpc-host-slots-{}", uuid::Uuid::new_v4()));
        let s = Slots::new(dir.join("node"), count.try_into().unwrap());
        (s, dir)
    }

    fn now(t: std::io::Result<Taken>) -> Slot {
        match t.unwrap() {
            Taken::Now(slot) => slot,
            Taken::Wait(_) => panic!("no slot free"),
        }
    }

    fn place(t: std::io::Result<Taken>) -> Place {
        match t.unwrap() {
            Taken::Now(slot) => panic!("slot {} was free", slot.index()),
            Taken::Wait(place) => place,
        }
    }

    // flock locks belong to open files, so two opens in one process
    // contend as two processes would: threads stand in for supervisors.

    #[test]
    fn at_most_count_slots_are_taken_and_a_freed_one_is_taken_again() {
        let (s, dir) = slots(2);
        let a = now(s.take());
        let b = now(s.take());
        assert_eq!((a.index(), b.index()), (0, 1));
        let p = place(s.take());
        assert!(p.head, "nobody waited: the first waiter is the head");
        assert!(matches!(s.take(), Ok(Taken::Wait(Place { head: false, .. }))));
        drop(p);
        drop(a);
        assert_eq!(now(s.take()).index(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn waiters_get_slots_in_the_order_they_lined_up() {
        let (s, dir) = slots(1);
        let held = now(s.take());
        let (tx, rx) = mpsc::channel();
        let mut waiters = Vec::new();
        for n in 0..3 {
            let place = place(s.take());
            let (s, tx) = (s.clone(), tx.clone());
            waiters.push(std::thread::spawn(move || {
                let slot = s.wait(place, || false).unwrap().unwrap();
                tx.send(n).unwrap();
                std::thread::sleep(Duration::from_millis(30));
                drop(slot);
            }));
            // Each waiter is in the kernel's line before the next lines up.
            std::thread::sleep(Duration::from_millis(50));
        }
        assert!(rx.try_recv().is_err(), "a waiter ran while the slot was held");
        drop(held);
        let order: Vec<i32> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(order, [0, 1, 2]);
        for w in waiters {
            w.join().unwrap();
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_head_stops_waiting_when_told() {
        let (s, dir) = slots(1);
        let _held = now(s.take());
        let p = place(s.take());
        let asked = std::cell::Cell::new(0);
        let got = s
            .wait(p, || {
                asked.set(asked.get() + 1);
                asked.get() > 3
            })
            .unwrap();
        assert!(got.is_none());
        // It left the line: the next job is the head at once.
        assert!(place(s.take()).head);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_slot_is_held_while_its_holder_lives_and_freed_when_it_dies() {
        // The slot's open file passed to a child process as its stdin: the
        // lock is the child's too, and goes when the child is killed.
        let (s, dir) = slots(1);
        let slot = now(s.take());
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .stdin(slot._lock.try_clone().unwrap())
            .spawn()
            .unwrap();
        drop(slot);
        drop(place(s.take()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(now(s.take()).index(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
