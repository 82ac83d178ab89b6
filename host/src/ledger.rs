//! Exactly-once submit: the host's ledger of idempotency keys.
//!
//! A submit with an idempotency key first claims the key in the store, then
//! asks the plugin to make the job (the plugin attaches the key to it in the
//! scheduler), then records the job's id under the key. The claim is written
//! before the job can exist, so whatever moment a submitter dies at, the next
//! submit with the same key finds one of:
//!
//! - **an id**: the job exists; its id is the answer (however long ago it ran);
//! - **a claim whose submitter is still at work** (the same process on this
//!   machine, alive; or, from another machine, before the claim's deadline):
//!   wait for it to record the id;
//! - **a claim whose submitter is gone**: ask the plugin (`find-job`) whether
//!   the scheduler holds a job with this key. If it does, record it and
//!   answer it; if it does not, the job was never made: take the claim over
//!   (compare-and-swap, so only one taker wins) and submit.
//!
//! Two submits racing for one key meet at the claim: one makes the job, the
//! other waits for its id. The store's compare-and-swap
//! ([`Store::swap`](crate::store::Store::swap)) makes every step atomic across
//! processes and login nodes that share the store.
//!
//! A CLI submitter's programs get `SIGKILL` when it dies (`PR_SET_PDEATHSIG`,
//! see `capabilities::process`), so a dead submitter makes no job later; a
//! request it had already sent is in the scheduler within [`GRACE`], which is
//! why a gone submitter's claim is looked up twice, [`GRACE`] apart, before
//! it is taken over. The daemon's programs are started without it (it costs a
//! `fork` of the daemon per program): a dead daemon's claim is honoured until
//! its deadline (the plugin's `wall_seconds` + 15 s), by when every program
//! it started has ended.
//!
//! **A store that lost its keys.** The ledger lives in the store, and a Redis
//! without persistence comes back empty after a restart: a submit with a key
//! used before would find no claim, and a backend that does not derive the
//! job from the key (SLURM) would make a second job. So the store carries a
//! birth record ([`BORN`]: when the ledger first found it without one), and
//! each machine keeps, in its state folder ([`Births`]), the birth it last
//! saw of each store it used. A store whose birth changed came back empty:
//! for [`RECOVERY`] after this machine noticed, a fresh claim asks the
//! plugin's `find-job` (back to the lost store's birth) before it submits.
//! A store this machine has not used before is taken as new. Otherwise a
//! fresh claim costs a store read and a small file read.
//!
//! A plugin built against contract 0.1.0 has no `find-job`: its claims still
//! make concurrent and repeated submits return one job, but a submitter that
//! died between making the job and recording its id leaves a claim that is
//! taken over (and the job may be made twice). The host logs a warning then.

use crate::bindings::{BackendError, JobSpec};
use crate::contract::Contract;
use crate::error::HostError;
use crate::plugin::Plugin;
use crate::store::Store;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

/// The store namespace of the ledger, inside the host's own
/// ([`crate::store::HOST_NAMESPACE`]), which no plugin can write.
pub const NAMESPACE: &str = "hpc-host::submit:";
/// The longest idempotency key.
pub const MAX_KEY_LEN: usize = 200;
/// How long after its submitter died a request it sent may take to show in
/// the scheduler.
pub const GRACE: Duration = Duration::from_secs(1);
/// How often a waiting submit looks at a claim another submitter holds.
const POLL: Duration = Duration::from_millis(200);
/// Beyond the plugin's `wall_seconds`, how long a claim from another machine
/// is honoured.
const DEADLINE_MARGIN: Duration = Duration::from_secs(15);
/// The ledger's birth record: when the host first found the store without
/// it (a new store, or one that lost its data), in Unix seconds.
pub const BORN: &str = "hpc-host::ledger-born";
/// How long after a machine found the store reborn (it lost its keys) a
/// fresh claim asks the scheduler first whether the key's job exists already
/// (a retry after the store was lost comes within hours; a day covers it).
pub const RECOVERY: f64 = 86_400.0;
/// How far back `find-job` looks for a job the store no longer knows: as
/// far as a scheduler's records are worth asking.
pub const LOOKBACK: f64 = 30.0 * 86_400.0;

/// Check an idempotency key: 1 to [`MAX_KEY_LEN`] characters of
/// `A-Z a-z 0-9 . _ : @ / + = -`, safe in a scheduler comment, a label value
/// (after hashing) and a file name (after hashing), and never shell syntax.
pub fn check_key(key: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "._:@/+=-".contains(c);
    if key.is_empty() || key.len() > MAX_KEY_LEN || !key.chars().all(ok_char) {
        return Err(format!(
            "idempotency key `{}`{} is not valid: use 1 to {MAX_KEY_LEN} of `A-Z a-z 0-9 . _ : @ / + = -`",
            crate::sanitize::escape(&key.chars().take(64).collect::<String>()),
            if key.chars().count() > 64 {
                " (cut)"
            } else {
                ""
            }
        ));
    }
    Ok(())
}

/// Who holds a claim: a process on a machine (by boot id).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Claimant {
    boot_id: String,
    pid: i32,
    start_ticks: u64,
}

impl Claimant {
    fn this_process() -> Claimant {
        let pid = std::process::id() as i32;
        Claimant {
            boot_id: crate::jobs::boot_id(),
            pid,
            start_ticks: crate::jobs::proc_stat(pid).map(|s| s.1).unwrap_or_default(),
        }
    }

    /// Alive, as far as this machine can tell; `None` for another machine's.
    fn alive_here(&self) -> Option<bool> {
        (self.boot_id == crate::jobs::boot_id() && !self.boot_id.is_empty())
            .then(|| crate::jobs::process_alive(self.pid, self.start_ticks))
    }
}

/// One ledger entry: a claim, then the job's id.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    /// The caller's key (the store key holds only its digest).
    key: String,
    job_id: Option<String>,
    /// Unix seconds when the claim was made.
    claimed_at: f64,
    /// Unix seconds after which another machine may take the claim over.
    deadline: f64,
    claimant: Claimant,
    /// The claimant's programs die with it (`PR_SET_PDEATHSIG`, the CLI):
    /// once it is dead, nothing it started can still make the job. Else (the
    /// daemon) a dead claimant's programs may still run until the deadline.
    #[serde(default)]
    programs_die: bool,
    /// The claimant's submit call returned without an id (an error whose
    /// outcome is unknown): the scheduler alone can tell whether it made the job.
    #[serde(default)]
    ended: bool,
}

impl Entry {
    fn claim(key: &str, wall_time: Duration) -> Entry {
        let now = crate::jobs::now();
        Entry {
            key: key.to_owned(),
            job_id: None,
            claimed_at: now,
            deadline: now + (wall_time + DEADLINE_MARGIN).as_secs_f64(),
            claimant: Claimant::this_process(),
            programs_die: crate::capabilities::process::programs_die_with_host(),
            ended: false,
        }
    }

    fn encode(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a ledger entry serializes")
    }
}

/// Where the ledger keeps a plugin's key.
fn slot(plugin: &str, key: &str) -> String {
    format!(
        "{NAMESPACE}{plugin}:{}",
        crate::engine::sha256_hex(key.as_bytes())
    )
}

fn store_error(e: crate::store::StoreError) -> HostError {
    HostError::Store(e)
}

/// What a pending claim turned out to be.
enum Pending {
    /// The scheduler has the job.
    Found(String),
    /// Its submitter may still make the job: wait.
    InFlight,
    /// No job was made and none will be: the claim may be taken over.
    NeverMade,
}

/// Submit `spec` at most once for `key`: the id of the one job, and whether
/// this call made it (`false`: an earlier submit with the key did).
pub async fn submit(
    plugin: &Plugin,
    spec: &JobSpec,
    key: &str,
) -> Result<(String, bool), HostError> {
    check_key(key).map_err(HostError::Input)?;
    let store = plugin.store();
    let slot = slot(plugin.name(), key);
    let wall_time = plugin.policy().limits.wall_time;
    // A waiting submit never waits longer than a claim can live.
    let give_up = Instant::now() + wall_time + DEADLINE_MARGIN + GRACE * 4;
    loop {
        let mine = Entry::claim(key, wall_time);
        let mine_bytes = mine.encode();
        if store
            .swap(slot.clone(), None, Some(mine_bytes.clone()))
            .await
            .map_err(store_error)?
        {
            if let Some(id) =
                made_before_the_store_was_lost(plugin, &slot, key, &mine_bytes).await?
            {
                return Ok((id, false));
            }
            return submit_claimed(plugin, store, &slot, spec, mine, mine_bytes)
                .await
                .map(|id| (id, true));
        }
        let Some(bytes) = get(store, &slot).await? else {
            continue; // the claim was released meanwhile: claim again
        };
        let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| {
            HostError::Internal(anyhow::anyhow!(
                "the submission ledger entry `{slot}` is not readable: {e}"
            ))
        })?;
        if entry.key != key {
            return Err(HostError::Internal(anyhow::anyhow!(
                "the submission ledger entry `{slot}` belongs to another key"
            )));
        }
        if let Some(id) = entry.job_id {
            tracing::info!(plugin = %plugin.name(), key, job_id = %id, "idempotency key already used: its job");
            return Ok((id, false));
        }
        match pending(plugin, &entry).await? {
            Pending::Found(id) => {
                let done = Entry {
                    job_id: Some(id.clone()),
                    ..entry
                };
                // Whoever records it first, the id is the same job's.
                store
                    .swap(slot.clone(), Some(bytes), Some(done.encode()))
                    .await
                    .map_err(store_error)?;
                tracing::info!(plugin = %plugin.name(), key, job_id = %id, "found the job of an interrupted submit");
                return Ok((id, false));
            }
            Pending::InFlight => {
                if Instant::now() > give_up {
                    return Err(HostError::Backend {
                        plugin: plugin.name().to_owned(),
                        function: "submit",
                        error: BackendError::Unavailable(format!(
                            "another submit with idempotency key `{key}` is still at work; try again later"
                        )),
                    });
                }
                tokio::time::sleep(POLL).await;
            }
            Pending::NeverMade => {
                if !plugin.contract().finds_jobs() {
                    tracing::warn!(
                        plugin = %plugin.name(), key,
                        "an earlier submit with this key was interrupted; the plugin (contract 0.1.0) \
                         cannot tell whether it made a job, so this submit may make a second one"
                    );
                }
                let mine = Entry::claim(key, wall_time);
                let mine_bytes = mine.encode();
                if store
                    .swap(slot.clone(), Some(bytes), Some(mine_bytes.clone()))
                    .await
                    .map_err(store_error)?
                {
                    return submit_claimed(plugin, store, &slot, spec, mine, mine_bytes)
                        .await
                        .map(|id| (id, true));
                }
                // Another submitter took it over first: look again.
            }
        }
    }
}

/// What this machine saw of the stores it used: for each (by a digest of
/// its Redis URL or its file), the birth it last saw, and when it found the
/// store reborn (it lost its keys) and the birth before. A JSON file in the
/// state folder, private to the user; unreadable or missing is "never seen".
#[derive(Debug, Clone)]
pub struct Births {
    path: std::path::PathBuf,
    store: String,
}

/// One store's entry in [`Births`].
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Seen {
    /// The store's birth record (Unix milliseconds).
    born: i64,
    /// When this machine found the store reborn (Unix seconds), and the
    /// birth it had before (Unix milliseconds).
    reborn: Option<(f64, i64)>,
}

impl Births {
    pub fn new(state_dir: &std::path::Path, redis_url: Option<&str>) -> Births {
        let store = match redis_url {
            Some(url) => format!("redis:{url}"),
            None => format!("embedded:{}", state_dir.join("store.sqlite3").display()),
        };
        Births {
            path: state_dir.join("ledger-births.json"),
            store: crate::engine::sha256_hex(store.as_bytes()),
        }
    }

    fn load(&self) -> std::collections::BTreeMap<String, Seen> {
        std::fs::read(&self.path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Note the store's birth as seen now; `Some(since)` while the store is
    /// recovering from a loss (`find-job` should look back to `since`).
    fn observe(&self, born: i64, now: f64) -> Option<f64> {
        let mut all = self.load();
        let seen = match all.get(&self.store) {
            None => Seen { born, reborn: None },
            Some(s) if s.born == born => *s,
            Some(s) => Seen {
                born,
                reborn: Some((now, s.born)),
            },
        };
        if all.get(&self.store) != Some(&seen) {
            all.insert(self.store.clone(), seen);
            if let Err(e) = self.save(&all) {
                tracing::warn!(
                    "cannot record the store's birth in `{}`: {e}",
                    self.path.display()
                );
            }
        }
        let (noticed, before) = seen.reborn?;
        (now - noticed < RECOVERY).then_some((before as f64 / 1000.0).max(noticed - LOOKBACK))
    }

    /// Written whole or not at all (a temporary file of this writer's own,
    /// renamed), 0600; two writers at once each leave a whole file.
    fn save(&self, all: &std::collections::BTreeMap<String, Seen>) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let tmp = self
            .path
            .with_extension(format!("{}.tmp", uuid::Uuid::new_v4().simple()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&serde_json::to_vec(all)?)?;
        std::fs::rename(&tmp, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&tmp);
        })
    }
}

/// When the ledger first found this store without its birth record.
/// In Unix milliseconds: an integer, compared exactly (a float read back
/// from JSON may differ in its last bit, which would look like a new birth).
async fn born(store: &Store) -> Result<i64, HostError> {
    let parse = |b: Vec<u8>| String::from_utf8_lossy(&b).parse::<i64>().ok();
    if let Some(t) = get(store, BORN).await?.and_then(parse) {
        return Ok(t);
    }
    let now = (crate::jobs::now() * 1000.0) as i64;
    // Whoever writes it first, every host reads the same birth (a record
    // that is not a number is replaced: the store's birth is unknown).
    let old = get(store, BORN).await?;
    store
        .swap(BORN.to_owned(), old, Some(now.to_string().into_bytes()))
        .await
        .map_err(store_error)?;
    Ok(get(store, BORN).await?.and_then(parse).unwrap_or(now))
}

/// Whether the store may have lost keys (it came back empty less than
/// [`RECOVERY`] ago): since when `find-job` should look, or `None`.
async fn recovering_since(plugin: &Plugin) -> Result<Option<f64>, HostError> {
    if !plugin.contract().finds_jobs() {
        return Ok(None);
    }
    let born = born(plugin.store()).await?;
    Ok(plugin.births().observe(born, crate::jobs::now()))
}

/// With a fresh claim on `key` held (`mine`): if the store may have lost the
/// key's record, ask the plugin whether the scheduler holds the key's job,
/// and if it does, record and return its id. A failed question frees the
/// claim (nothing was submitted) and fails.
async fn made_before_the_store_was_lost(
    plugin: &Plugin,
    slot: &str,
    key: &str,
    mine: &[u8],
) -> Result<Option<String>, HostError> {
    match recovering_since(plugin).await? {
        Some(since) => found_while_recovering(plugin, slot, key, mine, since).await,
        None => Ok(None),
    }
}

/// [`made_before_the_store_was_lost`] once the store is known to be recovering.
async fn found_while_recovering(
    plugin: &Plugin,
    slot: &str,
    key: &str,
    mine: &[u8],
    since: f64,
) -> Result<Option<String>, HostError> {
    let store = plugin.store();
    let found = match plugin.find_job(key, since).await {
        Ok(found) => found,
        Err(e) => {
            let _ = store.swap(slot.to_owned(), Some(mine.to_vec()), None).await;
            return Err(e);
        }
    };
    let Some(id) = found else {
        return Ok(None);
    };
    let mut done = Entry::claim(key, Duration::ZERO);
    done.job_id = Some(id.clone());
    store
        .swap(slot.to_owned(), Some(mine.to_vec()), Some(done.encode()))
        .await
        .map_err(store_error)?;
    tracing::info!(plugin = %plugin.name(), key, job_id = %id, "found the job of a key the store had lost");
    Ok(Some(id))
}

/// One element of [`submit_many`]: its job's id and whether this call made
/// it, or why it has none.
pub type Submitted = Result<(String, bool), HostError>;

/// Submit many specs, each keyed one at most once for its key, with as few
/// store round trips and plugin calls as the batch allows. Per chunk of
/// [`crate::plugin::SUBMIT_CHUNK`] specs (one `submit-many` call: a claim's
/// deadline is one call's time limit), every fresh key is claimed in one
/// round trip, every spec this call may make goes to the plugin in one
/// call, and every id is recorded in one round trip. A key claimed before (a
/// repeat, or a submit at work elsewhere) goes the way of [`submit`]: its
/// job's id, without a new job. A plugin older than contract 0.3.0 gets one
/// [`submit`] per spec (each claimed on its own, as a single submit is).
///
/// Per spec, in order: its result. A spec with an invalid key gets its own
/// error and the others go on; two specs with one key are refused whole
/// (which of them the key names would be a guess), before any is made.
pub async fn submit_many(plugin: &Plugin, specs: &[JobSpec]) -> Result<Vec<Submitted>, HostError> {
    let mut seen = std::collections::HashSet::new();
    for key in specs.iter().filter_map(|s| s.idempotency_key.as_deref()) {
        if !seen.insert(key) {
            return Err(HostError::Input(format!(
                "two specs of the batch have the idempotency key `{}`: each job needs its own",
                crate::sanitize::escape(key)
            )));
        }
    }
    let mut all = Vec::with_capacity(specs.len());
    if plugin.contract() < Contract::V0_3 {
        for spec in specs {
            all.push(match &spec.idempotency_key {
                None => plugin.submit_once(spec).await.map(|id| (id, true)),
                Some(key) => submit(plugin, spec, key).await,
            });
        }
        return Ok(all);
    }
    for chunk in specs.chunks(crate::plugin::SUBMIT_CHUNK) {
        match submit_chunk(plugin, chunk).await {
            Ok(r) => all.extend(r),
            // Nothing of this chunk was made (its keys could not be
            // claimed); the chunks before keep their jobs.
            Err(e) => all.extend(chunk.iter().map(|_| Err(e.duplicate()))),
        }
    }
    Ok(all)
}

/// [`submit_many`] for at most one plugin call's specs.
async fn submit_chunk(plugin: &Plugin, specs: &[JobSpec]) -> Result<Vec<Submitted>, HostError> {
    let store = plugin.store();
    let wall_time = plugin.policy().limits.wall_time;
    let mut results: Vec<Option<Submitted>> = specs.iter().map(|_| None).collect();
    // Claim every valid key in one round trip.
    let mut claims = Vec::new(); // (index, slot, entry, bytes)
    for (i, spec) in specs.iter().enumerate() {
        let Some(key) = &spec.idempotency_key else {
            continue;
        };
        if let Err(e) = check_key(key) {
            results[i] = Some(Err(HostError::Input(e)));
            continue;
        }
        let mine = Entry::claim(key, wall_time);
        let bytes = mine.encode();
        claims.push((i, slot(plugin.name(), key), mine, bytes));
    }
    let won = store
        .swap_many(
            claims
                .iter()
                .map(|(_, slot, _, bytes)| crate::store::Swap {
                    key: slot.clone(),
                    expected: None,
                    new: Some(bytes.clone()),
                })
                .collect(),
        )
        .await
        .map_err(store_error)?;
    let mut held = Vec::new();
    let mut taken = Vec::new(); // indices whose key was claimed before
    for (claim, won) in claims.into_iter().zip(won) {
        if won { held.push(claim) } else { taken.push(claim.0) }
    }
    // A store that lost its keys: the scheduler may hold a fresh key's job.
    let recovering = match held.is_empty() {
        true => None,
        false => match recovering_since(plugin).await {
            Ok(since) => since,
            Err(e) => {
                // Nothing was made: free the claims.
                let free = held
                    .iter()
                    .map(|(_, slot, _, bytes)| crate::store::Swap {
                        key: slot.clone(),
                        expected: Some(bytes.clone()),
                        new: None,
                    })
                    .collect();
                let _ = store.swap_many(free).await;
                return Err(e);
            }
        },
    };
    if let Some(since) = recovering {
        let mut still = Vec::new();
        for (i, slot, mine, bytes) in held {
            let key = specs[i].idempotency_key.as_deref().unwrap_or_default();
            match found_while_recovering(plugin, &slot, key, &bytes, since).await {
                Ok(None) => still.push((i, slot, mine, bytes)),
                Ok(Some(id)) => results[i] = Some(Ok((id, false))),
                Err(e) => results[i] = Some(Err(e)),
            }
        }
        held = still;
    }
    // Make, in one plugin call per chunk, every job this call holds the key
    // of and every unkeyed one.
    let claimed: std::collections::HashMap<usize, usize> =
        held.iter().enumerate().map(|(n, c)| (c.0, n)).collect();
    let order: Vec<usize> = (0..specs.len())
        .filter(|&i| {
            results[i].is_none()
                && (specs[i].idempotency_key.is_none() || claimed.contains_key(&i))
        })
        .collect();
    let to_make: Vec<JobSpec> = order.iter().map(|&i| specs[i].clone()).collect();
    let made = plugin.submit_many_once(&to_make).await;
    let mut updates = Vec::new();
    for (&i, r) in order.iter().zip(made) {
        if let Some(&n) = claimed.get(&i) {
            let (_, slot, mine, bytes) = &held[n];
            let id = r.as_ref().ok().map(String::as_str);
            let refused = r.as_ref().err().is_some_and(refused);
            updates.push(settle(slot, mine, bytes, id, refused));
        }
        results[i] = Some(r.map(|id| (id, true)));
    }
    match store.swap_many(updates).await {
        Ok(done) if done.iter().all(|&d| d) => {}
        Ok(_) => tracing::warn!(
            plugin = %plugin.name(),
            "a claim of this batch was taken over while its submit ran"
        ),
        // The jobs exist and their ids go to the caller; the claims stay,
        // and the next submit with a key finds its job.
        Err(e) => tracing::warn!(plugin = %plugin.name(), "cannot record a batch's jobs: {e}"),
    }
    // Keys claimed before: each finds its job (or waits for it) on its own.
    for i in taken {
        let key = specs[i].idempotency_key.as_deref().unwrap_or_default();
        results[i] = Some(submit(plugin, &specs[i], key).await);
    }
    Ok(results
        .into_iter()
        .map(|r| r.expect("every spec of a batch has a result"))
        .collect())
}

/// [`submit_many`] for a batch some of whose elements are not specs (they
/// did not parse): each of those keeps its error, the rest are submitted.
pub async fn submit_parsed(
    plugin: &Plugin,
    items: Vec<Result<JobSpec, HostError>>,
) -> Result<Vec<Submitted>, HostError> {
    let specs: Vec<JobSpec> = items.iter().filter_map(|i| i.as_ref().ok().cloned()).collect();
    let mut made = submit_many(plugin, &specs).await?.into_iter();
    Ok(items
        .into_iter()
        .map(|item| match item {
            Ok(_) => made.next().expect("one result per spec"),
            Err(e) => Err(e),
        })
        .collect())
}

/// Whether a failed submit was refused (it made no job: free the key).
fn refused(e: &HostError) -> bool {
    matches!(
        e,
        HostError::Backend {
            error: BackendError::InvalidRequest(_) | BackendError::Denied(_),
            ..
        } | HostError::Input(_)
            | HostError::PluginDenied { .. }
    )
}

/// The ledger update after a claimed submit returned: the job's id; or,
/// without one, the claim freed (refused: no job was made) or marked ended
/// (anything else may have made one, for `find-job` to settle).
fn settle(
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

/// What became of the submission with a key, as [`lookup`] finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Submission {
    /// The job exists (or existed): its id.
    Made(String),
    /// A submit with the key is still at work (its submitter lives, or its
    /// claim from another machine has not expired): ask again shortly.
    InProgress,
    /// No job was made with the key, and none will be: a submit with it now
    /// makes the job.
    NeverMade,
}

impl Submission {
    /// The name of the state in JSON: `made`, `in-progress`, `never-made`.
    pub fn state(&self) -> &'static str {
        match self {
            Submission::Made(_) => "made",
            Submission::InProgress => "in-progress",
            Submission::NeverMade => "never-made",
        }
    }

    pub fn job_id(&self) -> Option<&str> {
        match self {
            Submission::Made(id) => Some(id),
            _ => None,
        }
    }
}

/// What became of the submission with `key`, settling an interrupted one:
/// a claim whose submitter is gone is resolved by the scheduler (the job
/// found is recorded; no job found clears the claim). Without any record,
/// the scheduler is asked too (the store may have been emptied). Makes no job.
pub async fn lookup(plugin: &Plugin, key: &str) -> Result<Submission, HostError> {
    check_key(key).map_err(HostError::Input)?;
    let store = plugin.store();
    let slot = slot(plugin.name(), key);
    let Some(bytes) = get(store, &slot).await? else {
        // Nothing recorded: the store may have lost it.
        let since = crate::jobs::now() - LOOKBACK;
        return Ok(match plugin.find_job(key, since).await? {
            Some(id) => {
                let mut done = Entry::claim(key, Duration::ZERO);
                done.job_id = Some(id.clone());
                let _ = store.swap(slot, None, Some(done.encode())).await;
                Submission::Made(id)
            }
            None => Submission::NeverMade,
        });
    };
    let entry: Entry = serde_json::from_slice(&bytes).map_err(|e| {
        HostError::Internal(anyhow::anyhow!(
            "the submission ledger entry `{slot}` is not readable: {e}"
        ))
    })?;
    if let Some(id) = entry.job_id {
        return Ok(Submission::Made(id));
    }
    Ok(match pending(plugin, &entry).await? {
        Pending::Found(id) => {
            let done = Entry {
                job_id: Some(id.clone()),
                ..entry
            };
            store
                .swap(slot, Some(bytes), Some(done.encode()))
                .await
                .map_err(store_error)?;
            Submission::Made(id)
        }
        Pending::InFlight => Submission::InProgress,
        Pending::NeverMade => {
            // Clear the claim (unless a submit took it over meanwhile).
            store
                .swap(slot, Some(bytes), None)
                .await
                .map_err(store_error)?;
            Submission::NeverMade
        }
    })
}

async fn get(store: &Store, slot: &str) -> Result<Option<Vec<u8>>, HostError> {
    Ok(store
        .get_many(vec![slot.to_owned()])
        .await
        .map_err(store_error)?
        .pop()
        .flatten())
}

/// Whether the submitter of a claim without an id may still make its job.
fn may_still_submit(entry: &Entry, now: f64) -> bool {
    let before_deadline = now < entry.deadline;
    !entry.ended
        && match entry.claimant.alive_here() {
            Some(true) => true,
            // Dead: its programs died with it, or may run to the deadline.
            Some(false) => !entry.programs_die && before_deadline,
            // Another machine's: only the deadline tells.
            None => before_deadline,
        }
}

/// Settle a claim that has no id yet.
async fn pending(plugin: &Plugin, entry: &Entry) -> Result<Pending, HostError> {
    if may_still_submit(entry, crate::jobs::now()) {
        return Ok(Pending::InFlight);
    }
    if let Some(id) = plugin.find_job(&entry.key, entry.claimed_at).await? {
        return Ok(Pending::Found(id));
    }
    // A request the dead submitter sent may reach the scheduler a moment later.
    tokio::time::sleep(GRACE).await;
    Ok(match plugin.find_job(&entry.key, entry.claimed_at).await? {
        Some(id) => Pending::Found(id),
        None => Pending::NeverMade,
    })
}

/// Make the job under a claim this process holds, and record its id.
async fn submit_claimed(
    plugin: &Plugin,
    store: &Store,
    slot: &str,
    spec: &JobSpec,
    mine: Entry,
    mine_bytes: Vec<u8>,
) -> Result<String, HostError> {
    let r = plugin.submit_once(spec).await;
    let update = match &r {
        Ok(id) => settle(slot, &mine, &mine_bytes, Some(id), false),
        Err(e) => settle(slot, &mine, &mine_bytes, None, refused(e)),
    };
    match (&r, store.swap_many(vec![update]).await) {
        (_, Ok(done)) if done == [true] => {}
        (Ok(id), Ok(_)) => tracing::warn!(
            plugin = %plugin.name(), job_id = %id,
            "the claim on this idempotency key was taken over while the submit ran"
        ),
        // The job exists and its id goes to the caller; the claim stays,
        // and the next submit with this key finds the job.
        (Ok(id), Err(e)) => tracing::warn!(
            plugin = %plugin.name(), job_id = %id,
            "cannot record the job of an idempotency key: {e}"
        ),
        (Err(_), Ok(_)) => {}
        (Err(_), Err(se)) => {
            tracing::warn!(plugin = %plugin.name(), "cannot update the submission ledger: {se}")
        }
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked() {
        for good in [
            "exec-42",
            "a",
            "wm:run/7@site+x=y_z.1",
            &"k".repeat(MAX_KEY_LEN),
        ] {
            assert!(check_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            " ",
            "a b",
            "a;b",
            "$(x)",
            "`x`",
            "a\nb",
            "ü",
            &"k".repeat(MAX_KEY_LEN + 1),
        ] {
            assert!(check_key(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_store_reborn_is_recovering_for_a_day_and_a_new_one_never() {
        let dir = std::env::temp_dir().join(format!("hpc-host-births-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let redis = Births::new(&dir, Some("redis://r/0"));
        let embedded = Births::new(&dir, None);
        let t = 1_000_000_000.0;
        let ms = |s: f64| (s * 1000.0) as i64;
        // First use here: new, not recovering; the same birth again: still not.
        assert_eq!(redis.observe(ms(t), t + 1.0), None);
        assert_eq!(redis.observe(ms(t), t + 2.0), None);
        assert_eq!(
            embedded.observe(ms(t + 5.0), t + 6.0),
            None,
            "another store"
        );
        // Reborn (it came back empty): recovering, back to the old birth...
        assert_eq!(redis.observe(ms(t + 100.0), t + 101.0), Some(t));
        assert_eq!(redis.observe(ms(t + 100.0), t + 500.0), Some(t));
        // ... for a day after it was noticed.
        assert_eq!(redis.observe(ms(t + 100.0), t + 101.0 + RECOVERY), None);
        // A store reborn long after its birth looks back at most LOOKBACK.
        let late = t + 100.0 + 2.0 * LOOKBACK;
        assert_eq!(redis.observe(ms(late), late), Some(late - LOOKBACK));
        // The other store was never touched; the file is private.
        assert_eq!(embedded.observe(ms(t + 5.0), t + 7.0), None);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("ledger-births.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // A file that cannot be read is "never seen", not an error.
        std::fs::write(dir.join("ledger-births.json"), b"not json").unwrap();
        assert_eq!(redis.observe(ms(t + 100.0), t + 200.0), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn slots_do_not_mix_plugins_or_keys() {
        assert_ne!(slot("slurm", "k"), slot("local", "k"));
        assert_ne!(slot("slurm", "k1"), slot("slurm", "k2"));
        assert!(slot("slurm", "k").starts_with(NAMESPACE));
    }

    #[test]
    fn a_claim_is_honoured_while_its_submitter_may_still_make_the_job() {
        let live = Entry::claim("k", Duration::from_secs(100));
        let now = live.claimed_at;
        assert!(may_still_submit(&live, now), "this process is alive");
        let dead = Entry {
            claimant: Claimant {
                start_ticks: live.claimant.start_ticks + 1,
                ..live.claimant.clone()
            },
            ..live.clone()
        };
        // A dead CLI's programs died with it; a dead daemon's may run on.
        let cli = Entry {
            programs_die: true,
            ..dead.clone()
        };
        let daemon = Entry {
            programs_die: false,
            ..dead.clone()
        };
        assert!(!may_still_submit(&cli, now));
        assert!(may_still_submit(&daemon, now));
        assert!(!may_still_submit(&daemon, daemon.deadline + 1.0));
        let elsewhere = Entry {
            claimant: Claimant {
                boot_id: "other".into(),
                ..live.claimant.clone()
            },
            ..live.clone()
        };
        assert!(may_still_submit(&elsewhere, now));
        assert!(!may_still_submit(&elsewhere, elsewhere.deadline + 1.0));
        // A claimant whose call returned (an error) makes nothing more.
        assert!(!may_still_submit(
            &Entry {
                ended: true,
                ..live
            },
            now
        ));
    }

    #[test]
    fn this_process_is_alive_and_a_stranger_is_not_known() {
        let me = Claimant::this_process();
        assert_eq!(me.alive_here(), Some(true));
        let gone = Claimant {
            start_ticks: me.start_ticks + 1,
            ..me.clone()
        };
        assert_eq!(gone.alive_here(), Some(false));
        let elsewhere = Claimant {
            boot_id: "another-machine".into(),
            ..me
        };
        assert_eq!(elsewhere.alive_here(), None);
    }
}
