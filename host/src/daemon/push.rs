//! Job ends pushed from the job: `HPC_PUSH_ADDRESS`, the datagrams the
//! SLURM plugin's batch scripts send to it, and when they make a poll.
//!
//! With the setting, the SLURM plugin's batch script sends one UDP datagram,
//! `hpc-host-end <job id>\n`, when the job's command has ended (an `EXIT`
//! trap, `plugins/slurm/src/push.rs`), and the daemon serving that plugin
//! listens on the address. A datagram carries **no authority**: anyone who
//! can reach the port can send one, with any id, as often as they like. So
//! it never changes what the daemon believes about a job; it only changes
//! when the daemon next asks the scheduler ([`Hints`]):
//!
//! - a datagram naming a job this daemon does not track as open is dropped;
//! - one naming an open job marks it *named*; the daemon polls (one
//!   `get-statuses` of every open job, the ordinary poll) once every job
//!   some `wait` is waiting for has been named, after [`SETTLE`] (the end
//!   reaches the controller and its accounting a moment after the trap), and again with a
//!   growing delay while a named job is not yet final (the accounting
//!   database lags), [`RETRIES`] times at most;
//! - such polls spend tokens of a bucket ([`BURST`] tokens, one more per
//!   [`REFILL_PER_INTERVAL`]th of the poll interval): a flood of forged
//!   datagrams makes at most `BURST + 5 × elapsed / interval` extra polls,
//!   each the query a poll makes anyway;
//! - only a poll's answer makes a job final, so a forged or replayed
//!   datagram changes nothing but the time of a poll.
//!
//! Without the setting, or when nothing arrives (a firewall between compute
//! and login nodes), the daemon polls every interval exactly as before. The
//! local backend's supervisors announce ends on a Unix socket only the user
//! can write (`jobs::announce_end`); those are trusted to mean "poll now"
//! and poll at once, as before. Both end in the same poll.

use std::collections::HashMap;
use std::time::Duration;
use tokio::time::Instant;

/// What a datagram starts with; the job id follows (the plugin's format).
pub const MESSAGE_PREFIX: &str = "hpc-host-end ";

/// The longest job id a datagram may name.
const MAX_ID: usize = 64;

/// How long after the datagram that completes a `wait` the daemon polls.
/// The trap runs just before the job's shell exits; slurmctld learns of the
/// end tens of milliseconds later and the accounting database (whose
/// metrics a final answer carries) about 0.1 s later on the test cluster.
/// A poll too early costs a second squeue + sacct (at 60 ms, two rounds of
/// three in the bench); at 250 ms `wait` answered ~50 ms after a raw 0.2 s
/// sacct loop; at 150 ms, with it, one poll each (BENCHMARKS.md).
pub const SETTLE: Duration = Duration::from_millis(150);

/// How many times the daemon polls again for a named job that is not yet
/// final (its end not yet in slurmctld or the accounting database), at
/// 0.15, 0.3, 0.6, 1.2, 2.4 s: then it waits for the ordinary poll.
pub const RETRIES: u32 = 5;

/// The first retry's delay; each one doubles it.
const FIRST_RETRY: Duration = Duration::from_millis(150);

/// Polls that datagrams may cause at once (the bucket's size).
pub const BURST: f64 = 4.0;

/// The bucket gains one token per this fraction of the poll interval
/// (SLURM: one per 2 s at the default 10 s interval).
pub const REFILL_PER_INTERVAL: f64 = 5.0;

/// The job id a datagram names, if it is one: `hpc-host-end <id>`, an id of
/// at most 64 characters from `[A-Za-z0-9_.-]`.
pub fn job_id(datagram: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(datagram).ok()?;
    let id = text.strip_prefix(MESSAGE_PREFIX)?.trim_end_matches('\n');
    (!id.is_empty()
        && id.len() <= MAX_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-')))
    .then_some(id)
}

/// Which open jobs datagrams have named, and when they make a poll.
pub struct Hints {
    /// Named jobs not yet seen final, and when they were first named.
    named: HashMap<String, Instant>,
    /// When to poll for them, if a `wait` is complete.
    due: Option<Instant>,
    /// Polls made for the current set since it completed a `wait`.
    attempts: u32,
    tokens: f64,
    refilled: Instant,
    /// Time for one token.
    refill: Duration,
}

impl Hints {
    pub fn new(interval: Duration, now: Instant) -> Hints {
        Hints {
            named: HashMap::new(),
            due: None,
            attempts: 0,
            tokens: BURST,
            refilled: now,
            refill: interval.div_f64(REFILL_PER_INTERVAL),
        }
    }

    /// The poll interval changed (a reload, the back-off).
    pub fn set_interval(&mut self, interval: Duration) {
        self.refill = interval.div_f64(REFILL_PER_INTERVAL);
    }

    /// A datagram named open job `id`.
    pub fn named(&mut self, id: &str, now: Instant) {
        self.named.entry(id.to_owned()).or_insert(now);
    }

    /// Every open job of some `wait` has now been named: poll after
    /// [`SETTLE`] (unless a poll is due already).
    pub fn complete(&mut self, now: Instant) {
        if self.due.is_none() {
            self.due = Some(now + SETTLE);
            self.attempts = 0;
        }
    }

    /// When the next datagram-caused poll may run: its due time, or later
    /// when the bucket is empty. `None` while nothing is due.
    pub fn next_poll(&mut self, now: Instant) -> Option<Instant> {
        let due = self.due?;
        self.refill_to(now);
        if self.tokens >= 1.0 {
            return Some(due);
        }
        let wait = self.refill.mul_f64(1.0 - self.tokens);
        Some(due.max(now + wait))
    }

    /// A datagram-caused poll starts now: it spends a token.
    pub fn polling(&mut self, now: Instant) {
        self.refill_to(now);
        self.tokens = (self.tokens - 1.0).max(0.0);
        self.due = None;
        self.attempts += 1;
    }

    /// After any poll: forget the named jobs that are final or no longer
    /// tracked (`still_open` says which are open), and those named more than
    /// `stale` ago. While a `wait` stays complete (`completes`), poll again
    /// after a growing delay, at most [`RETRIES`] times.
    pub fn polled(
        &mut self,
        still_open: impl Fn(&str) -> bool,
        completes: impl Fn(&HashMap<String, Instant>) -> bool,
        stale: Duration,
        now: Instant,
    ) {
        self.named
            .retain(|id, at| still_open(id) && now.saturating_duration_since(*at) < stale);
        if self.due.is_some() {
            return; // a datagram completed another `wait` meanwhile
        }
        if self.attempts == 0 || !completes(&self.named) {
            self.attempts = 0;
            return;
        }
        if self.attempts > RETRIES {
            // The scheduler still says otherwise: the ordinary poll takes over.
            self.named.clear();
            self.attempts = 0;
            return;
        }
        self.due = Some(now + FIRST_RETRY * 2u32.pow(self.attempts - 1));
    }

    /// Whether `ids` (the open jobs of a `wait`) have all been named.
    pub fn covers<'a>(
        named: &HashMap<String, Instant>,
        mut ids: impl Iterator<Item = &'a String>,
    ) -> bool {
        ids.all(|id| named.contains_key(id))
    }

    /// The named set, for [`Hints::covers`].
    pub fn set(&self) -> &HashMap<String, Instant> {
        &self.named
    }

    fn refill_to(&mut self, now: Instant) {
        let gained = now.saturating_duration_since(self.refilled).as_secs_f64()
            / self.refill.as_secs_f64().max(1e-3);
        self.tokens = (self.tokens + gained).min(BURST);
        self.refilled = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datagrams_name_one_plausible_id_or_nothing() {
        assert_eq!(job_id(b"hpc-host-end 123\n"), Some("123"));
        assert_eq!(job_id(b"hpc-host-end 123_7"), Some("123_7"));
        for bad in [
            &b""[..],
            b"hpc-host-end \n",
            b"end 123\n",
            b"hpc-host-end 1 2\n",
            b"hpc-host-end \xff\n",
            &[b'x'; 100],
        ] {
            assert_eq!(job_id(bad), None, "{bad:?}");
        }
        let long = format!("hpc-host-end {}\n", "9".repeat(65));
        assert_eq!(job_id(long.as_bytes()), None);
    }

    /// A `wait` on "a" and "b": no poll until both are named; then one
    /// after SETTLE; retries while they are open; then nothing.
    #[test]
    fn a_wait_polls_once_all_its_jobs_are_named_and_retries_a_bounded_number_of_times() {
        let t0 = Instant::now();
        let mut h = Hints::new(Duration::from_secs(10), t0);
        let wait = |n: &HashMap<String, Instant>| {
            Hints::covers(n, ["a".to_string(), "b".to_string()].iter())
        };
        h.named("a", t0);
        assert_eq!(h.next_poll(t0), None);
        h.named("b", t0);
        h.complete(t0);
        assert_eq!(h.next_poll(t0), Some(t0 + SETTLE));
        let mut now = t0 + SETTLE;
        let mut polls = 0;
        while let Some(at) = h.next_poll(now) {
            now = at;
            h.polling(now);
            polls += 1;
            h.polled(|_| true, wait, Duration::from_secs(60), now);
        }
        assert_eq!(polls, 1 + RETRIES as usize);
        assert_eq!(h.set().len(), 0, "given up: the ordinary poll takes over");
        // The jobs ended at the first poll: no retry.
        let mut h = Hints::new(Duration::from_secs(10), t0);
        h.named("a", t0);
        h.named("b", t0);
        h.complete(t0);
        h.polling(t0 + SETTLE);
        h.polled(|_| false, wait, Duration::from_secs(60), t0 + SETTLE);
        assert_eq!(h.next_poll(t0 + SETTLE), None);
    }

    /// Datagrams completing a `wait` as fast as they can: the polls they
    /// cause are bounded by the bucket.
    #[test]
    fn a_flood_makes_a_bounded_number_of_polls() {
        let interval = Duration::from_secs(10);
        let t0 = Instant::now();
        let mut h = Hints::new(interval, t0);
        let mut polls = 0;
        let mut now = t0;
        let end = t0 + Duration::from_secs(60);
        while now < end {
            h.named("a", now);
            h.complete(now);
            if let Some(at) = h.next_poll(now)
                && at <= now
            {
                h.polling(now);
                polls += 1;
                h.polled(|_| true, |_| true, interval, now);
            }
            now += Duration::from_millis(1);
        }
        let bound = BURST as usize + (60.0 * REFILL_PER_INTERVAL / 10.0) as usize;
        assert!(polls <= bound, "{polls} polls, bound {bound}");
        assert!(polls >= bound - 2, "{polls}: the bucket is used");
    }
}
