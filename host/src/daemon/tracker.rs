//! The daemon's memory of jobs and the one poller per backend.
//!
//! Every job the daemon sees (submitted through it or asked about) is kept
//! with its last status and when the backend reported it. One worker task per
//! backend refreshes all non-final jobs with one `get-statuses` per interval
//! and fetches ids it has not seen (all the ids queued meanwhile in one call).
//! A status request is answered from memory while the entry is fresher than
//! the interval, so K callers asking about N jobs cost the scheduler one
//! batched query per interval. Every change goes to the event channel.

use super::api::ApiError;
use super::{Daemon, now};
use crate::runtime::bindings::{BackendError, HpcJobInfo, JobStatus};
use crate::runtime::error::HostError;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, oneshot};

/// The longest a backend backs off to while it answers `unavailable`, in intervals.
const MAX_BACKOFF: u32 = 8;
/// The poll interval is never shorter than this many times the last query's duration.
const DURATION_FACTOR: u32 = 5;
/// How long a fetch waits for other requests to join its batch.
const BATCH_WINDOW: Duration = Duration::from_millis(2);

/// A job's answer: its info and when the backend gave it, or the backend's error.
pub type Answer = Result<(HpcJobInfo, f64), BackendError>;

/// A status change, as the event stream sends it.
#[derive(Debug, Clone)]
pub struct Event {
    pub backend: String,
    pub previous: Option<JobStatus>,
    pub info: HpcJobInfo,
    pub observed_at: f64,
}

impl Event {
    pub fn json(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(super::api::WireJob::known(
            &self.info,
            self.observed_at,
            &self.backend,
        ))
        .unwrap_or_default();
        v["previous"] = self
            .previous
            .map(|s| crate::submit::spec::status_name(s).into())
            .unwrap_or(serde_json::Value::Null);
        v
    }
}

struct Entry {
    info: HpcJobInfo,
    observed_at: f64,
}

/// How a backend's poller is doing, for freshness and back-off.
#[derive(Clone)]
struct PollState {
    /// The interval in force: the setting, at least 5× the last query, times the back-off.
    interval: Duration,
    last_duration: Duration,
    backoff: u32,
    /// When the last call answered `unavailable`, and what it said.
    unavailable: Option<(Instant, String)>,
}

struct Fetch {
    ids: Vec<String>,
    reply: oneshot::Sender<Result<HashMap<String, Answer>, ApiError>>,
}

/// Jobs by (backend, id), the per-backend workers and the event channel.
pub struct Tracker {
    jobs: Mutex<HashMap<(String, String), Entry>>,
    polls: Mutex<HashMap<String, PollState>>,
    workers: Mutex<HashMap<String, mpsc::UnboundedSender<Fetch>>>,
    /// Per backend: whether this daemon held the shared poll lease at its last tick.
    leases: Mutex<HashMap<String, bool>>,
    pub events: broadcast::Sender<Arc<Event>>,
    /// Plugin calls made by the pollers and fetches (for tests and `health`).
    pub calls: std::sync::atomic::AtomicU64,
    /// The `wait` requests in progress: their backend and ids, by a number.
    waits: Mutex<HashMap<u64, (String, Vec<String>)>>,
    next_wait: std::sync::atomic::AtomicU64,
    /// Woken when a `wait` starts: its jobs may all have been named already.
    wait_started: tokio::sync::Notify,
}

/// A `wait` in progress, known to the tracker until dropped: job-end
/// datagrams that name all its open jobs make the poller poll
/// ([`super::push`]).
pub struct Waiting<'a> {
    tracker: &'a Tracker,
    id: u64,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.tracker
            .waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.id);
    }
}

impl Default for Tracker {
    fn default() -> Self {
        Self::new()
    }
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker {
            jobs: Mutex::new(HashMap::new()),
            polls: Mutex::new(HashMap::new()),
            workers: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            events: broadcast::channel(16 * 1024).0,
            calls: Default::default(),
            waits: Mutex::new(HashMap::new()),
            next_wait: Default::default(),
            wait_started: tokio::sync::Notify::new(),
        }
    }

    /// Register a `wait` for `ids` on `backend` while the guard lives.
    pub fn waiting(&self, backend: &str, ids: &[String]) -> Waiting<'_> {
        let id = self
            .next_wait
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.waits
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, (backend.to_owned(), ids.to_vec()));
        self.wait_started.notify_waiters();
        Waiting { tracker: self, id }
    }

    /// Whether `id` is a job of `backend` this daemon tracks and has not seen end.
    fn is_open(&self, backend: &str, id: &str) -> bool {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.get(&(backend.to_owned(), id.to_owned()))
            .is_some_and(|e| !e.info.status.is_terminal())
    }

    /// Whether some `wait` on `backend` has open jobs and `named` holds all of them.
    fn wait_is_named(&self, backend: &str, named: &HashMap<String, tokio::time::Instant>) -> bool {
        let waits = self.waits.lock().unwrap_or_else(|p| p.into_inner());
        waits
            .values()
            .filter(|(b, _)| b == backend)
            .any(|(_, ids)| {
                let mut open = ids.iter().filter(|id| self.is_open(backend, id)).peekable();
                open.peek().is_some() && super::push::Hints::covers(named, open)
            })
    }

    /// Record what the backend said about a job; a new status is an event.
    pub fn observe(&self, backend: &str, info: HpcJobInfo, observed_at: f64) {
        let mut jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let key = (backend.to_owned(), info.job_id.clone());
        let previous = jobs.get(&key).map(|e| e.info.status);
        if jobs.get(&key).is_some_and(|e| e.observed_at > observed_at) {
            return; // an older answer that arrived late
        }
        let changed = previous != Some(info.status);
        jobs.insert(
            key,
            Entry {
                info: info.clone(),
                observed_at,
            },
        );
        drop(jobs);
        if changed {
            let _ = self.events.send(Arc::new(Event {
                backend: backend.to_owned(),
                previous,
                info,
                observed_at,
            }));
        }
    }

    /// Every job of `backend` this daemon knows, as last observed, by id.
    pub fn known(&self, backend: &str) -> Vec<super::api::WireJob> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let mut known: Vec<_> = jobs
            .iter()
            .filter(|((b, _), _)| b == backend)
            .map(|((b, _), e)| super::api::WireJob::known(&e.info, e.observed_at, b))
            .collect();
        drop(jobs);
        known.sort_by(|a, b| a.info.job_id.cmp(&b.info.job_id));
        known
    }

    fn set_lease(&self, backend: &str, held: bool) {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(backend.to_owned(), held);
    }

    /// Per backend, whether this daemon polls for the others (shared Redis only).
    pub fn leases(&self) -> HashMap<String, bool> {
        self.leases
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// How many jobs the daemon remembers, and how many of them are not final.
    pub fn counts(&self) -> (usize, usize) {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let open = jobs
            .values()
            .filter(|e| !e.info.status.is_terminal())
            .count();
        (jobs.len(), open)
    }

    fn open_ids(&self, backend: &str) -> Vec<String> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        jobs.iter()
            .filter(|((b, _), e)| b == backend && !e.info.status.is_terminal())
            .map(|((_, id), _)| id.clone())
            .collect()
    }

    /// The remembered answer for an id, if it is still fresh: a final status
    /// always is; another one while younger than the poller's interval.
    fn fresh(&self, backend: &str, id: &str, limit: f64, at: f64) -> Option<(HpcJobInfo, f64)> {
        let jobs = self.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let e = jobs.get(&(backend.to_owned(), id.to_owned()))?;
        (e.info.status.is_terminal() || at - e.observed_at < limit)
            .then(|| (e.info.clone(), e.observed_at))
    }

    fn poll_state(&self, backend: &str, configured: Duration) -> PollState {
        self.polls
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(backend.to_owned())
            .or_insert(PollState {
                interval: configured,
                last_duration: Duration::ZERO,
                backoff: 1,
                unavailable: None,
            })
            .clone()
    }

    /// How old a non-final answer may be and still be served: the poller
    /// refreshes it every interval, plus the time a poll takes.
    fn freshness(&self, backend: &str, configured: Duration) -> f64 {
        let p = self.poll_state(backend, configured);
        (p.interval + p.last_duration * 2 + Duration::from_secs(1)).as_secs_f64()
    }
}

impl Daemon {
    /// Statuses of `ids` on `backend`, in order: fresh ones from memory, the
    /// rest in one batched plugin call (shared with concurrent requests).
    pub async fn statuses(
        self: &Arc<Self>,
        backend: &str,
        ids: &[String],
    ) -> Result<Vec<Answer>, ApiError> {
        let config = self.config();
        config.plugin(backend)?; // an unknown backend fails the whole request
        let limit = self
            .tracker
            .freshness(backend, config.poll_interval(backend));
        let at = now();
        let mut out: Vec<Option<Answer>> = ids
            .iter()
            .map(|id| self.tracker.fresh(backend, id, limit, at).map(Ok))
            .collect();
        let missing: Vec<String> = ids
            .iter()
            .zip(&out)
            .filter(|(_, a)| a.is_none())
            .map(|(id, _)| id.clone())
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        if !missing.is_empty() {
            let (reply, answer) = oneshot::channel();
            self.worker(backend)
                .send(Fetch {
                    ids: missing,
                    reply,
                })
                .map_err(|_| ApiError::unavailable("the daemon's poller has stopped"))?;
            let mut fetched = answer
                .await
                .map_err(|_| ApiError::unavailable("the daemon's poller has stopped"))??;
            for (slot, id) in out.iter_mut().zip(ids) {
                if slot.is_none() {
                    *slot = Some(fetched.get(id).cloned().unwrap_or_else(|| {
                        Err(BackendError::Internal(format!("no answer for `{id}`")))
                    }));
                }
            }
            fetched.clear();
        }
        Ok(out.into_iter().map(|a| a.expect("filled")).collect())
    }

    /// A job just submitted is pending until the backend says otherwise.
    pub fn track_submitted(self: &Arc<Self>, backend: &str, id: &str) {
        self.tracker.observe(
            backend,
            HpcJobInfo {
                job_id: id.to_owned(),
                status: JobStatus::Pending,
                exit_code: None,
                wall_time_seconds: None,
                cpu_hours: None,
                peak_memory_gb: None,
                native_state: None,
                reason: Some("submitted".into()),
            },
            now(),
        );
        self.worker(backend);
    }

    /// The worker of a backend, started on first use.
    fn worker(self: &Arc<Self>, backend: &str) -> mpsc::UnboundedSender<Fetch> {
        let mut workers = self
            .tracker
            .workers
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(w) = workers.get(backend)
            && !w.is_closed()
        {
            return w.clone();
        }
        let (tx, rx) = mpsc::unbounded_channel();
        workers.insert(backend.to_owned(), tx.clone());
        tokio::spawn(worker(self.clone(), backend.to_owned(), rx));
        tx
    }

    /// One `get-statuses` call; what it answers is remembered.
    async fn fetch(&self, backend: &str, ids: &[String]) -> Result<Vec<Answer>, ApiError> {
        let plugin = self.config().plugin(backend)?;
        self.tracker
            .calls
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let started = Instant::now();
        let result = plugin.get_statuses(ids).await;
        let at = now();
        let took = started.elapsed();
        let unavailable = match &result {
            Err(HostError::Backend {
                error: BackendError::Unavailable(m),
                ..
            }) => Some(m.clone()),
            Ok(list)
                if !list.is_empty()
                    && list
                        .iter()
                        .all(|r| matches!(r, Err(BackendError::Unavailable(_)))) =>
            {
                match &list[0] {
                    Err(BackendError::Unavailable(m)) => Some(m.clone()),
                    _ => None,
                }
            }
            _ => None,
        };
        self.record_poll(backend, took, unavailable);
        let list = result?;
        Ok(ids
            .iter()
            .zip(list)
            .map(|(id, r)| match r {
                Ok(mut info) => {
                    info.job_id = id.clone();
                    self.tracker.observe(backend, info.clone(), at);
                    Ok((info, at))
                }
                Err(e) => Err(e),
            })
            .collect())
    }

    fn record_poll(&self, backend: &str, took: Duration, unavailable: Option<String>) {
        let configured = self.config().poll_interval(backend);
        let mut polls = self.tracker.polls.lock().unwrap_or_else(|p| p.into_inner());
        let p = polls.entry(backend.to_owned()).or_insert(PollState {
            interval: configured,
            last_duration: took,
            backoff: 1,
            unavailable: None,
        });
        p.last_duration = took;
        match unavailable {
            Some(m) => {
                p.backoff = (p.backoff * 2).min(MAX_BACKOFF);
                p.unavailable = Some((Instant::now(), m));
            }
            None => {
                p.backoff = 1;
                p.unavailable = None;
            }
        }
        p.interval = configured.max(took * DURATION_FACTOR) * p.backoff;
    }
}

/// The socket on which a backend's supervised jobs announce their end
/// ([`crate::supervise::jobs::announce_end`]), for a backend whose policy grants
/// `supervise`: its jobs run here, and their ends reach the daemon at once
/// rather than at the next poll. `None` when the backend supervises no jobs
/// or another daemon listens already (this one then relies on its poll).
fn ended_listener(d: &Daemon, backend: &str) -> Option<tokio::net::UnixDatagram> {
    let config = d.config();
    let plugin = config.plugin(backend).ok()?;
    if !plugin.policy().grants.process.supervise {
        return None;
    }
    let folder = config.settings.state_dir.join("jobs").join(backend);
    std::os::unix::fs::DirBuilderExt::mode(std::fs::DirBuilder::new().recursive(true), 0o700)
        .create(&folder)
        .ok()?;
    let path = folder.join(crate::supervise::jobs::ENDED_SOCKET);
    if path.exists() {
        let probe = std::os::unix::net::UnixDatagram::unbound().ok()?;
        if probe.send_to(b"", &path).is_ok() {
            tracing::info!(backend, socket = %path.display(), "another daemon hears this backend's job ends; polling only");
            return None;
        }
        let _ = std::fs::remove_file(&path);
    }
    match tokio::net::UnixDatagram::bind(&path) {
        Ok(sock) => {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
            Some(sock)
        }
        Err(e) => {
            tracing::warn!(backend, socket = %path.display(), "cannot listen for job ends ({e}); polling only");
            None
        }
    }
}

/// The UDP socket on which a backend's batch jobs announce their end
/// ([`super::push`]): the `HPC_PUSH_ADDRESS` its plugin reads, when set.
/// `None` without one, or when it cannot be bound (another daemon has it,
/// or the address is not this machine's): this daemon then polls as usual.
fn push_listener(d: &Daemon, backend: &str) -> Option<tokio::net::UdpSocket> {
    let plugin = d.config().plugin(backend).ok()?;
    let text = plugin
        .policy()
        .grants
        .config
        .get(crate::runtime::settings::daemon::PUSH_ADDRESS)?
        .clone();
    let addr = match crate::runtime::settings::daemon::parse_push_address(&text) {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(backend, "{e}; polling only");
            return None;
        }
    };
    let std_sock = match std::net::UdpSocket::bind(addr) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(backend, %addr, "cannot listen for job ends ({e}); polling only");
            return None;
        }
    };
    let _ = std_sock.set_nonblocking(true);
    match tokio::net::UdpSocket::from_std(std_sock) {
        Ok(sock) => {
            tracing::info!(backend, %addr, "listening for job ends");
            Some(sock)
        }
        Err(e) => {
            tracing::warn!(backend, %addr, "cannot listen for job ends ({e}); polling only");
            None
        }
    }
}

/// The next datagram on the push socket that names a job id, or never
/// without a socket.
async fn next_push(listener: &Option<tokio::net::UdpSocket>) -> String {
    let Some(sock) = listener else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; 128];
    loop {
        if let Ok(n) = sock.recv(&mut buf).await
            && let Some(id) = super::push::job_id(&buf[..n])
        {
            return id.to_owned();
        }
    }
}

/// Sleep until `at`, or forever.
async fn until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The next job-end announcement, or never without a listener.
async fn next_end(listener: &Option<tokio::net::UnixDatagram>) {
    let Some(sock) = listener else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; 128];
    let _ = sock.recv(&mut buf).await;
}

/// One backend's worker: serves fetches (batched), polls every interval, and
/// polls at once when a supervised job announces its end, or when batch
/// jobs' end datagrams name every job of a `wait` ([`super::push`]).
async fn worker(d: Arc<Daemon>, backend: String, mut rx: mpsc::UnboundedReceiver<Fetch>) {
    let configured = d.config().poll_interval(&backend);
    let interval = d.tracker.poll_state(&backend, configured).interval;
    let mut next_poll = tokio::time::Instant::now() + interval;
    let ended = ended_listener(&d, &backend);
    let pushed = push_listener(&d, &backend);
    let mut hints = super::push::Hints::new(interval, tokio::time::Instant::now());
    loop {
        let hinted_poll = hints.next_poll(tokio::time::Instant::now());
        tokio::select! {
            () = next_end(&ended) => {
                // Ends often come together (a batch of short jobs): one poll for them.
                tokio::time::sleep(BATCH_WINDOW).await;
                if let Some(sock) = &ended {
                    let mut buf = [0u8; 128];
                    while sock.try_recv(&mut buf).is_ok() {}
                }
                poll(&d, &backend).await;
            }
            id = next_push(&pushed) => {
                // No authority: it only names a job, which the poll checks.
                if d.tracker.is_open(&backend, &id) {
                    let now = tokio::time::Instant::now();
                    hints.named(&id, now);
                    if d.tracker.wait_is_named(&backend, hints.set()) {
                        hints.complete(now);
                    }
                }
            }
            () = d.tracker.wait_started.notified(), if pushed.is_some() => {
                if d.tracker.wait_is_named(&backend, hints.set()) {
                    hints.complete(tokio::time::Instant::now());
                }
            }
            () = until(hinted_poll) => {
                hints.polling(tokio::time::Instant::now());
                poll_hinted(&d, &backend).await;
                after_poll(&d, &backend, &mut hints, &mut next_poll);
            }
            first = rx.recv() => {
                let Some(first) = first else { return };
                tokio::time::sleep(BATCH_WINDOW).await;
                let mut batch = vec![first];
                while let Ok(f) = rx.try_recv() {
                    batch.push(f);
                }
                serve_fetches(&d, &backend, batch).await;
            }
            _ = tokio::time::sleep_until(next_poll) => {
                poll(&d, &backend).await;
                after_poll(&d, &backend, &mut hints, &mut next_poll);
            }
        }
    }
}

/// After an ordinary or a datagram-caused poll: the next ordinary one is an
/// interval away (this one refreshed every open job), and the named jobs it
/// saw end are forgotten. Without datagrams this is the schedule as before.
fn after_poll(
    d: &Daemon,
    backend: &str,
    hints: &mut super::push::Hints,
    next_poll: &mut tokio::time::Instant,
) {
    let configured = d.config().poll_interval(backend);
    let interval = d.tracker.poll_state(backend, configured).interval;
    let now = tokio::time::Instant::now();
    *next_poll = now + interval;
    hints.set_interval(interval);
    hints.polled(
        |id| d.tracker.is_open(backend, id),
        |named| d.tracker.wait_is_named(backend, named),
        interval * 2,
        now,
    );
}

/// A poll that job-end datagrams asked for. A follower of the shared poll
/// lease fetches its own open jobs: the holder does not hear the ends of
/// this daemon's jobs, and its observations are up to an interval old.
async fn poll_hinted(d: &Arc<Daemon>, backend: &str) {
    let shared = d.shared.is_some() && !d.config().node_local(backend);
    let holder = d.tracker.leases().get(backend).copied().unwrap_or(false);
    if !shared || holder {
        return poll(d, backend).await;
    }
    let ids = d.tracker.open_ids(backend);
    if !ids.is_empty()
        && let Err(e) = d.fetch(backend, &ids).await
    {
        tracing::warn!(backend, "poll failed: {}", e.message);
    }
}

/// One poll tick: alone, as the lease holder (every daemon's open jobs,
/// published), or as a follower (the holder's observations from Redis).
async fn poll(d: &Arc<Daemon>, backend: &str) {
    let ids = d.tracker.open_ids(backend);
    let configured = d.config().poll_interval(backend);
    let interval = d.tracker.poll_state(backend, configured).interval;
    let shared = d
        .shared
        .as_ref()
        .filter(|_| !d.config().node_local(backend));
    let Some(shared) = shared else {
        if !ids.is_empty()
            && let Err(e) = d.fetch(backend, &ids).await
        {
            tracing::warn!(backend, "poll failed: {}", e.message);
        }
        return;
    };
    let scope = d.scope(backend);
    // Two periods of the interval: a dead holder is replaced within two leases.
    let lease = (interval * 2).max(Duration::from_secs(2));
    let held = match shared.hold(&scope, lease).await {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!(
                backend,
                "the shared poll lease is out of reach ({e}); polling alone"
            );
            true
        }
    };
    d.tracker.set_lease(backend, held);
    if held {
        let mut all: HashSet<String> = ids.into_iter().collect();
        all.extend(shared.wanted(&scope).await.unwrap_or_default());
        let all: Vec<String> = all.into_iter().collect();
        if all.is_empty() {
            return;
        }
        match d.fetch(backend, &all).await {
            Ok(list) => {
                let seen: Vec<_> = list.into_iter().filter_map(Result::ok).collect();
                if let Err(e) = shared.publish(&scope, &seen).await {
                    tracing::warn!(backend, "cannot publish the poll: {e}");
                }
            }
            Err(e) => tracing::warn!(backend, "poll failed: {}", e.message),
        }
    } else if !ids.is_empty() {
        let read = async {
            shared.want(&scope, &ids).await?;
            shared.observed(&scope, &ids).await
        };
        match read.await {
            Ok(seen) => {
                for (info, at) in seen.into_iter().flatten() {
                    d.tracker.observe(backend, info, at);
                }
            }
            Err(e) => {
                tracing::warn!(backend, "cannot read the shared poll ({e}); polling alone");
                if let Err(e) = d.fetch(backend, &ids).await {
                    tracing::warn!(backend, "poll failed: {}", e.message);
                }
            }
        }
    }
}

/// Answer a batch of fetch requests with one plugin call for the ids that
/// are still not fresh (an earlier batch may have answered them).
async fn serve_fetches(d: &Arc<Daemon>, backend: &str, batch: Vec<Fetch>) {
    let configured = d.config().poll_interval(backend);
    let limit = d.tracker.freshness(backend, configured);
    let at = now();
    let mut answers: HashMap<String, Answer> = HashMap::new();
    let mut wanted = Vec::new();
    for f in &batch {
        for id in &f.ids {
            if answers.contains_key(id) || wanted.contains(id) {
                continue;
            }
            match d.tracker.fresh(backend, id, limit, at) {
                Some(a) => {
                    answers.insert(id.clone(), Ok(a));
                }
                None => wanted.push(id.clone()),
            }
        }
    }
    if let Some(shared) = d
        .shared
        .as_ref()
        .filter(|_| !wanted.is_empty() && !d.config().node_local(backend))
    {
        let scope = d.scope(backend);
        if let Ok(seen) = shared.observed(&scope, &wanted).await {
            for (id, s) in wanted.clone().iter().zip(seen) {
                if let Some((info, observed)) = s.filter(|(_, t)| at - t < limit) {
                    d.tracker.observe(backend, info.clone(), observed);
                    answers.insert(id.clone(), Ok((info, observed)));
                }
            }
            wanted.retain(|id| !answers.contains_key(id));
        }
    }
    let state = d.tracker.poll_state(backend, configured);
    let failed = if wanted.is_empty() {
        None
    } else if let Some((t, m)) = &state.unavailable
        && t.elapsed() < state.interval / 2
    {
        // The backend said `unavailable` moments ago: spare it.
        Some(ApiError::of_backend(
            &BackendError::Unavailable(m.clone()),
            format!(
                "plugin `{backend}`: get-statuses: unavailable: {m} (the daemon retries later)"
            ),
        ))
    } else {
        match d.fetch(backend, &wanted).await {
            Ok(list) => {
                answers.extend(wanted.iter().cloned().zip(list));
                None
            }
            Err(e) => Some(e),
        }
    };
    for f in batch {
        let reply = match &failed {
            Some(e) if f.ids.iter().any(|id| !answers.contains_key(id)) => Err(e.clone()),
            _ => Ok(f
                .ids
                .iter()
                .filter_map(|id| answers.get(id).map(|a| (id.clone(), a.clone())))
                .collect()),
        };
        let _ = f.reply.send(reply);
    }
}
