//! What the ledger writes in the store: one [`Entry`] per key, first a
//! claim, then the job's id, under a [`slot`] that holds only the key's digest.

use super::{DEADLINE_MARGIN, NAMESPACE};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Who holds a claim: a process on a machine (by boot id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct Claimant {
    pub(super) boot_id: String,
    pub(super) pid: i32,
    pub(super) start_ticks: u64,
}

impl Claimant {
    pub(super) fn this_process() -> Claimant {
        let pid = std::process::id() as i32;
        Claimant {
            boot_id: crate::supervise::jobs::boot_id(),
            pid,
            start_ticks: crate::supervise::jobs::proc_stat(pid)
                .map(|s| s.1)
                .unwrap_or_default(),
        }
    }

    /// Alive, as far as this machine can tell; `None` for another machine's.
    pub(super) fn alive_here(&self) -> Option<bool> {
        (self.boot_id == crate::supervise::jobs::boot_id() && !self.boot_id.is_empty())
            .then(|| crate::supervise::jobs::process_alive(self.pid, self.start_ticks))
    }
}

/// One ledger entry: a claim, then the job's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Entry {
    /// The caller's key (the store key holds only its digest).
    pub(super) key: String,
    pub(super) job_id: Option<String>,
    /// Unix seconds when the claim was made.
    pub(super) claimed_at: f64,
    /// Unix seconds after which another machine may take the claim over.
    pub(super) deadline: f64,
    pub(super) claimant: Claimant,
    /// The claimant's programs die with it (`PR_SET_PDEATHSIG`, the CLI):
    /// once it is dead, nothing it started can still make the job. Else (the
    /// daemon) a dead claimant's programs may still run until the deadline.
    #[serde(default)]
    pub(super) programs_die: bool,
    /// The claimant's submit call returned without an id (an error whose
    /// outcome is unknown): the scheduler alone can tell whether it made the job.
    #[serde(default)]
    pub(super) ended: bool,
}

impl Entry {
    /// A claim by this process on `key`, for a call of at most `wall_time`.
    pub(super) fn claim(key: &str, wall_time: Duration, programs_die: bool) -> Entry {
        let now = crate::supervise::jobs::now();
        Entry {
            key: key.to_owned(),
            job_id: None,
            claimed_at: now,
            deadline: now + (wall_time + DEADLINE_MARGIN).as_secs_f64(),
            claimant: Claimant::this_process(),
            programs_die,
            ended: false,
        }
    }

    pub(super) fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ledger entry serializes")
    }

    /// Whether its submitter may still make its job (it has no id yet).
    pub(super) fn may_still_submit(&self, now: f64) -> bool {
        let before_deadline = now < self.deadline;
        !self.ended
            && match self.claimant.alive_here() {
                Some(true) => true,
                // Dead: its programs died with it, or may run to the deadline.
                Some(false) => !self.programs_die && before_deadline,
                // Another machine's: only the deadline tells.
                None => before_deadline,
            }
    }
}

/// Where the ledger keeps a scheduler's key.
pub(super) fn slot(scheduler: &str, key: &str) -> String {
    format!(
        "{NAMESPACE}{scheduler}:{}",
        crate::runtime::engine::sha256_hex(key.as_bytes())
    )
}

/// The ledger update after a claimed submit returned: the job's id; or,
/// without one, the claim freed (refused: no job was made) or marked ended
/// (anything else may have made one, for `find-job` to settle).
pub(super) fn settle(
    slot: &str,
    mine: &Entry,
    mine_bytes: &[u8],
    id: Option<&str>,
    refused: bool,
) -> crate::store::Swap {
    let new = match id {
        Some(id) => Some(
            Entry {
                job_id: Some(id.to_owned()),
                ..mine.clone()
            }
            .encode(),
        ),
        None if refused => None,
        None => Some(
            Entry {
                ended: true,
                ..mine.clone()
            }
            .encode(),
        ),
    };
    crate::store::Swap {
        key: slot.to_owned(),
        expected: Some(mine_bytes.to_vec()),
        new,
    }
}
