//! A bound on how many supervised jobs run at once: the process policy's
//! `max_running_jobs` slots, each an exclusive `flock` on one file.
//!
//! A job's supervisor takes a slot before it starts the job and holds it
//! until the job (and what it left behind) has ended. The kernel drops a
//! lock when its holder dies, so a killed supervisor never leaks a slot, and
//! every process of the user on the machine (the daemon, one-shot CLIs, a
//! second daemon) shares the bound through the files, with no process in
//! charge of it.
//!
//! A job that finds every slot taken, or other jobs waiting, joins the end
//! of a line: a ticket file of its own, numbered after the last, which it
//! holds locked while it waits. Each waiter sleeps in the kernel on the lock
//! of the ticket before its own, so jobs start in the order they lined up,
//! whoever frees a slot and however they arrive (a lock freed and taken
//! again by a newcomer, as one queue lock would allow, cannot happen). The
//! first in line, the head, tries the slots whenever a holder says it freed
//! one (a byte written to the `wake` FIFO) and every [`FALLBACK_POLL`]
//! (a holder that was killed says nothing).
//!
//! Layout of the folder: slot locks `0` to `N-1`; `line-N/<ticket>`, one file
//! per waiting job; `line-N.lock`, held while a job takes its ticket; `wake`.
//! Jobs under another `N` (the policy changed while jobs waited) share the
//! slots but wait in a line of their own.
//!
//! ```no_run
//! # fn demo() -> std::io::Result<()> {
//! use hpc_host::supervise::slots::{Slots, Taken};
//! let slots = Slots::new("/state/jobs/local/.slots/login1".into(), 4.try_into().unwrap());
//! let slot = match slots.take()? {
//!     Taken::Now(slot) => slot,
//!     // Tell the submitter the job is accepted, then wait.
//!     Taken::Wait(place) => match slots.wait(place, || false)? {
//!         Some(slot) => slot,
//!         None => return Ok(()), // told to stop waiting
//!     },
//! };
//! // ... run the job; dropping `slot` (or exiting) frees it.
//! # drop(slot); Ok(()) }
//! ```

use serde::{Deserialize, Serialize};
use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::num::NonZeroUsize;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The most `max_running_jobs` may be: the head of the line opens and tries
/// every slot file on each try, a few milliseconds at this many.
pub const MAX_SLOTS: usize = 1024;

/// How often the head of the line tries the slots when no holder says it
/// freed one: a slot whose holder was killed is taken at most this late.
pub const FALLBACK_POLL: Duration = Duration::from_millis(200);

/// The slots of one bound: `count` lock files in `dir`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Slots {
    pub dir: PathBuf,
    pub count: NonZeroUsize,
}

/// A slot taken: the job may run while this lives (or while its process
/// does). Dropping it frees the slot and wakes the head of the line.
#[derive(Debug)]
pub struct Slot {
    lock: File,
    index: usize,
    wake: PathBuf,
}

impl Slot {
    /// Which slot (`0..count`).
    pub fn index(&self) -> usize {
        self.index
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // Unlocked before the byte is written, so the head that hears it
        // finds the slot free.
        let _ = lock(&self.lock, libc::LOCK_UN);
        // No reader (nobody waits): ENXIO; a full pipe: the head has bytes
        // to hear already. Either way there is nothing more to do.
        if let Ok(mut fifo) = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&self.wake)
        {
            let _ = fifo.write(b"x");
        }
    }
}

/// A place in the line, to pass to [`Slots::wait`]: its ticket file, held
/// locked; dropping it leaves the line.
#[derive(Debug)]
pub struct Place {
    ticket: u64,
    path: PathBuf,
    _lock: File,
}

impl Drop for Place {
    fn drop(&mut self) {
        // Removed before its lock goes, so the waiter behind, woken by the
        // unlock, no longer finds it.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// What [`Slots::take`] found.
#[derive(Debug)]
pub enum Taken {
    /// A free slot, and no job was waiting for one.
    Now(Slot),
    /// Every slot is taken, or jobs wait already: a place at the end of the line.
    Wait(Place),
}

impl Slots {
    pub fn new(dir: PathBuf, count: NonZeroUsize) -> Slots {
        Slots { dir, count }
    }

    fn line(&self) -> PathBuf {
        self.dir.join(format!("line-{}", self.count))
    }

    /// A free slot now, unless every slot is taken or other jobs wait for
    /// one; then a place at the end of the line. Blocks only while another
    /// job takes its ticket.
    pub fn take(&self) -> std::io::Result<Taken> {
        let line = self.line();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&line)?;
        let turnstile = open(&self.dir.join(format!("line-{}.lock", self.count)), false)?;
        while let Err(e) = lock(&turnstile, libc::LOCK_EX) {
            if e.kind() != ErrorKind::Interrupted {
                return Err(e);
            }
        }
        let last = tickets(&line)?.into_iter().max();
        if last.is_none()
            && let Some(slot) = self.try_free()?
        {
            return Ok(Taken::Now(slot));
        }
        let ticket = last.map_or(0, |t| t + 1);
        let path = line.join(ticket.to_string());
        let file = open(&path, true)?;
        // Nobody else has it open yet: only later tickets look at it, and
        // they are taken after the turnstile is let go.
        lock(&file, libc::LOCK_EX | libc::LOCK_NB)?;
        Ok(Taken::Wait(Place {
            ticket,
            path,
            _lock: file,
        }))
    }

    /// Wait in line until a slot is free: `None` if `stop` says so first.
    /// `stop` is asked before every sleep and after every wake-up, which a
    /// signal with a handler (not restarting) causes at any time; see
    /// [`crate::supervise::supervisor`].
    pub fn wait(&self, place: Place, stop: impl Fn() -> bool) -> std::io::Result<Option<Slot>> {
        let line = self.line();
        // Until no ticket is before ours: sleep on the nearest one's lock.
        loop {
            if stop() {
                return Ok(None);
            }
            let Some(before) = tickets(&line)?
                .into_iter()
                .filter(|&t| t < place.ticket)
                .max()
            else {
                break;
            };
            let path = line.join(before.to_string());
            let file = match open(&path, false) {
                Ok(f) => f,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            match lock(&file, libc::LOCK_EX) {
                // Its waiter is gone. One that died left its ticket behind.
                Ok(_) => {
                    let _ = std::fs::remove_file(&path);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        // The head. Listening before the first try, no freed slot goes unheard.
        let wake = self.listen();
        loop {
            if let Some(slot) = self.try_free()? {
                return Ok(Some(slot));
            }
            if stop() {
                return Ok(None);
            }
            match &wake {
                Some(fifo) => hear(fifo, FALLBACK_POLL),
                None => std::thread::sleep(FALLBACK_POLL),
            }
        }
    }

    /// The first slot whose lock is free, taken.
    fn try_free(&self) -> std::io::Result<Option<Slot>> {
        for index in 0..self.count.get() {
            let file = open(&self.dir.join(index.to_string()), false)?;
            if lock(&file, libc::LOCK_EX | libc::LOCK_NB)? {
                return Ok(Some(Slot {
                    lock: file,
                    index,
                    wake: self.dir.join("wake"),
                }));
            }
        }
        Ok(None)
    }

    /// The `wake` FIFO opened to hear freed slots (read and write, so that
    /// it never reads as closed by its last writer): `None` when it cannot
    /// be made, or is not a FIFO; the head then only polls.
    fn listen(&self) -> Option<File> {
        let path = self.dir.join("wake");
        let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).ok()?;
        // SAFETY: a NUL-terminated path; an existing FIFO is fine.
        unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
        let fifo = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&path)
            .ok()?;
        fifo.metadata()
            .is_ok_and(|m| m.file_type().is_fifo())
            .then_some(fifo)
    }
}

/// Sleep until a byte arrives on `fifo`, a signal interrupts, or `limit`
/// passes; then empty it.
fn hear(fifo: &File, limit: Duration) {
    let mut pfd = libc::pollfd {
        fd: fifo.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd; EINTR and a timeout are both just "try again".
    unsafe { libc::poll(&mut pfd, 1, limit.as_millis() as libc::c_int) };
    let mut buf = [0u8; 64];
    while matches!((&*fifo).read(&mut buf), Ok(n) if n > 0) {}
}

/// The tickets in a line (names that are not numbers are not tickets).
fn tickets(line: &Path) -> std::io::Result<Vec<u64>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(line)? {
        if let Some(t) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) {
            found.push(t);
        }
    }
    Ok(found)
}

/// Open (or make: `new` must) a lock file of this user's. Write access is
/// what NFS asks for an exclusive lock.
fn open(path: &Path, new: bool) -> std::io::Result<File> {
    let mut o = std::fs::OpenOptions::new();
    o.read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW);
    if new {
        o.create_new(true);
    } else {
        o.create(true).truncate(false);
    }
    o.open(path)
}

/// `flock(how)`: `Ok(false)` when a non-blocking lock is held elsewhere.
fn lock(file: &File, how: libc::c_int) -> std::io::Result<bool> {
    // SAFETY: plain syscall on a descriptor we own.
    if unsafe { libc::flock(file.as_raw_fd(), how) } == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    if e.kind() == ErrorKind::WouldBlock {
        Ok(false)
    } else {
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    // flock locks belong to open files, so two opens in one process
    // contend as two processes would: threads stand in for supervisors.

    fn slots(count: usize) -> (Slots, PathBuf) {
        let dir = std::env::temp_dir().join(format!("hpc-host-slots-{}", uuid::Uuid::new_v4()));
        let s = Slots::new(dir.join("node"), count.try_into().unwrap());
        (s, dir)
    }

    fn now(t: std::io::Result<Taken>) -> Slot {
        match t.unwrap() {
            Taken::Now(slot) => slot,
            Taken::Wait(p) => panic!("no slot free: ticket {}", p.ticket),
        }
    }

    fn place(t: std::io::Result<Taken>) -> Place {
        match t.unwrap() {
            Taken::Now(slot) => panic!("slot {} was free", slot.index()),
            Taken::Wait(place) => place,
        }
    }

    /// Start waiting on another thread; it sends `n` when it has its slot,
    /// holds it `hold`, and frees it.
    fn waiter(
        s: &Slots,
        place: Place,
        n: usize,
        tx: &mpsc::Sender<usize>,
        hold: Duration,
    ) -> std::thread::JoinHandle<()> {
        let (s, tx) = (s.clone(), tx.clone());
        std::thread::spawn(move || {
            let slot = s.wait(place, || false).unwrap().unwrap();
            tx.send(n).unwrap();
            std::thread::sleep(hold);
            drop(slot);
        })
    }

    #[test]
    fn at_most_count_slots_are_taken_and_a_freed_one_is_taken_again() {
        let (s, dir) = slots(2);
        let a = now(s.take());
        let b = now(s.take());
        assert_eq!((a.index(), b.index()), (0, 1));
        let p = place(s.take());
        assert_eq!(place(s.take()).ticket, p.ticket + 1);
        drop(p);
        drop(a);
        assert_eq!(now(s.take()).index(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn waiters_get_slots_in_the_order_they_lined_up_and_no_newcomer_goes_first() {
        let (s, dir) = slots(1);
        let held = now(s.take());
        let (tx, rx) = mpsc::channel();
        let hold = Duration::from_millis(30);
        let waiters: Vec<_> = (0..3)
            .map(|n| waiter(&s, place(s.take()), n, &tx, hold))
            .collect();
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            rx.try_recv().is_err(),
            "a waiter ran while the slot was held"
        );
        drop(held);
        // The slot is free or the first waiter's: a newcomer lines up either way.
        let late = place(s.take());
        let mut waiters = waiters;
        waiters.push(waiter(&s, late, 3, &tx, hold));
        let order: Vec<usize> = (0..4)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        assert_eq!(order, [0, 1, 2, 3]);
        for w in waiters {
            w.join().unwrap();
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_waiter_that_stops_leaves_the_line() {
        let (s, dir) = slots(1);
        let held = now(s.take());
        let first = place(s.take());
        let second = place(s.take());
        let asked = std::cell::Cell::new(0);
        let got = s
            .wait(first, || {
                asked.set(asked.get() + 1);
                asked.get() > 2
            })
            .unwrap();
        assert!(got.is_none());
        // The one behind it is the head now: it takes the slot once freed.
        drop(held);
        assert!(s.wait(second, || false).unwrap().is_some());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_ticket_of_a_waiter_that_died_is_passed_over() {
        let (s, dir) = slots(1);
        // A ticket nobody holds, as a killed supervisor leaves it.
        std::fs::create_dir_all(s.line()).unwrap();
        std::fs::write(s.line().join("0"), b"").unwrap();
        let p = place(s.take());
        assert_eq!(p.ticket, 1);
        let slot = s.wait(p, || false).unwrap().unwrap();
        assert_eq!(slot.index(), 0);
        assert_eq!(tickets(&s.line()).unwrap(), Vec::<u64>::new());
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_slot_is_held_while_its_holder_lives_and_freed_when_it_dies() {
        // A child process holds slot 0's lock (its stdin is the locked
        // file, ours is closed): a supervisor holding a slot. Killed, the
        // kernel frees the slot.
        let (s, dir) = slots(1);
        std::fs::create_dir_all(&s.dir).unwrap();
        let file = open(&s.dir.join("0"), false).unwrap();
        assert!(lock(&file, libc::LOCK_EX | libc::LOCK_NB).unwrap());
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .stdin(file)
            .spawn()
            .unwrap();
        drop(place(s.take()));
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(now(s.take()).index(), 0);
        std::fs::remove_dir_all(dir).unwrap();
    }
}
