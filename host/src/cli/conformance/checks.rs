//! The checks, one per promise of the contract. Each returns `Err` with what
//! the plugin did instead; none trusts a plugin's error to be the right
//! kind without looking.

use super::{CANCEL_BOUND, Kit, show};
use crate::runtime::bindings::{BackendError, JobStatus};
use crate::runtime::contract::Contract;
use crate::runtime::error::{HostError, kind_and_message};
use crate::submit::Submit;
use futures_util::future::LocalBoxFuture;
use std::time::{Duration, Instant};

type Run = for<'k, 'p> fn(&'k Kit<'p>) -> LocalBoxFuture<'k, Result<(), String>>;

/// One promise and how to check it.
pub struct Check {
    pub name: &'static str,
    pub promise: &'static str,
    /// Why the check does not apply to this plugin, if it says so itself.
    pub skip: fn(&Kit) -> Option<String>,
    pub run: Run,
}

fn always(_: &Kit) -> Option<String> {
    None
}

fn without_find_job(k: &Kit) -> Option<String> {
    (k.plugin.contract() == Contract::V0_1).then(|| {
        "the plugin is built against ccat:hpc@0.1.0, which has no `find-job`: its submits \
         cannot be found again after a crash"
            .to_owned()
    })
}

fn without_submit_many(k: &Kit) -> Option<String> {
    (k.plugin.contract() < Contract::V0_3).then(|| {
        format!(
            "the plugin is built against ccat:hpc@{}, which has no `submit-many`: the host \
             submits its batches one spec at a time",
            k.plugin.contract().version()
        )
    })
}

macro_rules! checks {
    ($($name:literal, $promise:literal, $skip:expr, $f:ident;)*) => {
        /// Every check, in the order reports list them.
        pub const ALL: &[Check] = &[$(Check {
            name: $name,
            promise: $promise,
            skip: $skip,
            run: |k| Box::pin($f(k)),
        }),*];
    };
}

checks! {
    "describe", "`describe` answers the same twice, with a name, a version and a description", always, describe;
    "completes", "a trivial job ends `completed` with exit code 0 and its wall time", always, completes;
    "exit-code", "a job that runs `exit 3` ends `failed` with exit code 3", always, exit_code;
    "logs", "what a job writes to stdout and stderr is in its logs", always, logs;
    "cancel-running", "cancelling a running job ends it, `failed`, within the bound", always, cancel_running;
    "cancel-ended", "cancelling a job that has ended is no error", always, cancel_ended;
    "unknown-id", "an unknown id is `not-found` in get-status, get-logs and cancel, never a trap", always, unknown_id;
    "statuses-order", "`get-statuses` answers in the order asked, with per-id errors", always, statuses_order;
    "time-limit", "a time limit is enforced: the job ends `failed`, with a reason", always, time_limit;
    "keyed-submit", "a keyed submit repeated makes one job; `find-job` finds it, also one whose id was never recorded; an unknown key finds none", without_find_job, keyed_submit;
    "monotone", "a job's states never go backwards (pending, running, ended; an end never changes)", always, monotone;
    "invalid-request", "an invalid spec (an empty command) is `invalid-request`", always, invalid_request;
    "submit-many", "`submit-many` answers each spec in order: every job its own id, end and logs (a keyed one found by `find-job`), an invalid spec its own `invalid-request`", without_submit_many, submit_many;
}

fn expect(cond: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if cond { Ok(()) } else { Err(msg()) }
}

/// The kind of a failed call, for messages: a backend error's kind, or
/// what went wrong in the host (a trap, a timeout).
fn kind(e: &HostError) -> String {
    match e {
        HostError::Backend { error, .. } => kind_and_message(error).0.to_owned(),
        other => format!("not a backend error ({other})"),
    }
}

fn is_not_found(r: &Result<impl Sized, HostError>) -> bool {
    matches!(
        r,
        Err(HostError::Backend {
            error: BackendError::NotFound(_),
            ..
        })
    )
}

async fn describe(k: &Kit<'_>) -> Result<(), String> {
    let a = k.plugin.describe().await.map_err(|e| e.to_string())?;
    let b = k.plugin.describe().await.map_err(|e| e.to_string())?;
    let same = (&a.name, &a.version, &a.description, &a.settings)
        == (&b.name, &b.version, &b.description, &b.settings);
    expect(same, || {
        format!("two calls answered differently: {a:?} then {b:?}")
    })?;
    expect(!a.name.trim().is_empty(), || "its `name` is empty".into())?;
    expect(!a.description.trim().is_empty(), || {
        "its `description` is empty".into()
    })?;
    let semver = a.version.split(['-', '+']).next().unwrap_or("");
    let parts: Vec<&str> = semver.split('.').collect();
    expect(
        parts.len() == 3 && parts.iter().all(|p| p.parse::<u64>().is_ok()),
        || format!("its `version` `{}` is not MAJOR.MINOR.PATCH", a.version),
    )?;
    let mut keys = a.settings.clone();
    keys.sort();
    keys.dedup();
    expect(keys.len() == a.settings.len(), || {
        format!("its `settings` name a key twice: {:?}", a.settings)
    })?;
    expect(a.settings.iter().all(|s| !s.trim().is_empty()), || {
        "its `settings` hold an empty key".into()
    })
}

async fn completes(k: &Kit<'_>) -> Result<(), String> {
    let job = k.trivial().await?;
    let i = &job.info;
    expect(
        i.status == JobStatus::Completed && i.exit_code == Some(0),
        || format!("ended {}", show(i)),
    )?;
    expect(i.job_id == job.id, || {
        format!("answered for `{}`", i.job_id)
    })?;
    expect(i.wall_time_seconds.is_some_and(|w| w >= 0.0), || {
        format!("ended without its wall time: {}", show(i))
    })
}

async fn exit_code(k: &Kit<'_>) -> Result<(), String> {
    let job = k.exit3().await?;
    let i = &job.info;
    expect(
        i.status == JobStatus::Failed && i.exit_code == Some(3),
        || format!("ended {}", show(i)),
    )
}

async fn logs(k: &Kit<'_>) -> Result<(), String> {
    let job = k.trivial().await?;
    let l = k
        .plugin
        .get_logs(&job.id)
        .await
        .map_err(|e| format!("get-logs failed: {e}"))?;
    expect(l.stdout.contains("hpc-kit-out"), || {
        format!("stdout lacks `hpc-kit-out`: {:?}", l.stdout)
    })?;
    // A scheduler that merges the streams (Kubernetes) keeps stderr in stdout.
    expect(
        l.stderr.contains("hpc-kit-err") || l.stdout.contains("hpc-kit-err"),
        || format!("stderr `hpc-kit-err` is in neither stream: {l:?}"),
    )
}

async fn cancel_running(k: &Kit<'_>) -> Result<(), String> {
    let id = k.submit(&k.spec(&["sleep", "600"])).await?;
    k.until(&id, k.opts.timeout, "running", &mut Vec::new(), |i| {
        i.status == JobStatus::Running
    })
    .await?;
    k.plugin
        .cancel(&id)
        .await
        .map_err(|e| format!("cancel failed: {e}"))?;
    let bound = CANCEL_BOUND.min(k.opts.timeout);
    let i = k
        .until(&id, bound, "ended after `cancel`", &mut Vec::new(), |i| {
            i.status.is_terminal()
        })
        .await?;
    expect(i.status == JobStatus::Failed, || {
        format!("a cancelled job ended {}", show(&i))
    })
}

async fn cancel_ended(k: &Kit<'_>) -> Result<(), String> {
    for job in [k.trivial().await?, k.exit3().await?] {
        k.plugin
            .cancel(&job.id)
            .await
            .map_err(|e| format!("cancelling ended job `{}` failed: {e}", job.id))?;
        let i = k
            .plugin
            .get_status(&job.id)
            .await
            .map_err(|e| e.to_string())?;
        expect(i.status == job.info.status, || {
            format!("cancel changed ended job `{}`: {}", job.id, show(&i))
        })?;
    }
    Ok(())
}

/// Ids no plugin made: a fresh UUID and a word.
fn unknown_ids() -> [String; 2] {
    let u = uuid::Uuid::new_v4();
    [u.to_string(), format!("hpc-kit-no-such-job-{}", u.simple())]
}

async fn unknown_id(k: &Kit<'_>) -> Result<(), String> {
    for id in unknown_ids() {
        let r = k.plugin.get_status(&id).await;
        expect(is_not_found(&r), || match &r {
            Ok(i) => format!("get-status of unknown `{id}` answered {}", show(i)),
            Err(e) => format!("get-status of unknown `{id}`: {}", kind(e)),
        })?;
        let r = k.plugin.get_logs(&id).await;
        expect(is_not_found(&r), || match &r {
            Ok(_) => format!("get-logs of unknown `{id}` answered logs"),
            Err(e) => format!("get-logs of unknown `{id}`: {}", kind(e)),
        })?;
        let r = k.plugin.cancel(&id).await;
        expect(is_not_found(&r), || match &r {
            Ok(()) => format!("cancel of unknown `{id}` answered ok"),
            Err(e) => format!("cancel of unknown `{id}`: {}", kind(e)),
        })?;
    }
    Ok(())
}

async fn statuses_order(k: &Kit<'_>) -> Result<(), String> {
    let (a, b) = (k.exit3().await?, k.trivial().await?);
    let [u, _] = unknown_ids();
    let ids = vec![a.id.clone(), u.clone(), b.id.clone(), a.id.clone()];
    let r = k
        .plugin
        .get_statuses(&ids)
        .await
        .map_err(|e| format!("get-statuses failed as a whole: {e}"))?;
    for (asked, got) in ids.iter().zip(&r) {
        match got {
            Ok(i) => expect(i.job_id == *asked && *asked != u, || {
                format!("asked {ids:?}, answered `{}` for `{asked}`", i.job_id)
            })?,
            Err(e) => expect(
                *asked == u && matches!(e, BackendError::NotFound(_)),
                || {
                    format!(
                        "asked {ids:?}: `{asked}` answered {}",
                        kind_and_message(e).0
                    )
                },
            )?,
        }
    }
    Ok(())
}

async fn time_limit(k: &Kit<'_>) -> Result<(), String> {
    let mut spec = k.spec(&["sleep", "600"]);
    spec.resource_requirements.time_hours = Some(k.opts.time_limit.as_secs_f64() / 3600.0);
    let start = Instant::now();
    let id = k.submit(&spec).await?;
    let i = k.ended(&id).await?;
    expect(i.status == JobStatus::Failed, || {
        format!("a job past its time limit ended {}", show(&i))
    })?;
    expect(start.elapsed() >= k.opts.time_limit, || {
        format!("ended before its time limit: {}", show(&i))
    })?;
    expect(
        i.reason.as_deref().is_some_and(|r| !r.trim().is_empty()),
        || format!("ended without a reason: {}", show(&i)),
    )
}

async fn keyed_submit(k: &Kit<'_>) -> Result<(), String> {
    let since = crate::supervise::jobs::now() - 5.0;
    let key = format!("hpc-kit-{}", uuid::Uuid::new_v4().simple());
    let mut spec = k.spec(&["/bin/sh", "-c", "exit 0"]);
    spec.idempotency_key = Some(key.clone());
    let (first, made) = k
        .plugin
        .submit_new(&spec)
        .await
        .map_err(|e| e.to_string())?;
    k.started(&first);
    let (again, made_again) = k
        .plugin
        .submit_new(&spec)
        .await
        .map_err(|e| e.to_string())?;
    expect(made && !made_again && first == again, || {
        format!("two submits with one key made `{first}` ({made}) and `{again}` ({made_again})")
    })?;
    let found = k
        .plugin
        .find_job(&key, since)
        .await
        .map_err(|e| e.to_string())?;
    expect(found.as_deref() == Some(first.as_str()), || {
        format!("find-job of the key answered {found:?}, not `{first}`")
    })?;
    // A submitter that died before recording the id: only the plugin knows.
    let lost = format!("hpc-kit-{}", uuid::Uuid::new_v4().simple());
    spec.idempotency_key = Some(lost.clone());
    let id = k.submit(&spec).await?;
    let found = k
        .plugin
        .find_job(&lost, since)
        .await
        .map_err(|e| e.to_string())?;
    expect(found.as_deref() == Some(id.as_str()), || {
        format!("find-job of a key whose id was never recorded answered {found:?}, not `{id}`")
    })?;
    let none = format!("hpc-kit-never-{}", uuid::Uuid::new_v4().simple());
    let found = k
        .plugin
        .find_job(&none, since)
        .await
        .map_err(|e| e.to_string())?;
    expect(found.is_none(), || {
        format!("find-job of an unknown key answered {found:?}")
    })
}

fn rank(s: JobStatus) -> u8 {
    match s {
        JobStatus::Pending => 0,
        JobStatus::Running => 1,
        JobStatus::Completed | JobStatus::Failed => 2,
    }
}

async fn monotone(k: &Kit<'_>) -> Result<(), String> {
    let id = k.submit(&k.spec(&["sleep", "1"])).await?;
    let mut seen = Vec::new();
    k.until(&id, k.opts.timeout, "ended", &mut seen, |i| {
        i.status.is_terminal()
    })
    .await?;
    // An end must stay what it is.
    for _ in 0..6 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        seen.push(k.plugin.get_status(&id).await.map_err(|e| e.to_string())?);
    }
    for w in seen.windows(2) {
        let (a, b) = (w[0].status, w[1].status);
        let back = rank(b) < rank(a) || (a.is_terminal() && a != b);
        expect(!back, || {
            let all: Vec<&str> = seen
                .iter()
                .map(|i| crate::submit::spec::status_name(i.status))
                .collect();
            format!(
                "went from {} to {}: {}",
                crate::submit::spec::status_name(a),
                crate::submit::spec::status_name(b),
                all.join(" → ")
            )
        })?;
    }
    Ok(())
}

async fn invalid_request(k: &Kit<'_>) -> Result<(), String> {
    let spec = k.spec(&[]);
    match k.plugin.submit_once(&spec).await {
        Err(HostError::Backend {
            error: BackendError::InvalidRequest(_),
            ..
        }) => Ok(()),
        Ok(id) => {
            k.started(&id);
            Err(format!(
                "a spec with an empty command was accepted as job `{id}`"
            ))
        }
        Err(e) => Err(format!("a spec with an empty command: {}", kind(&e))),
    }
}

async fn submit_many(k: &Kit<'_>) -> Result<(), String> {
    let since = crate::supervise::jobs::now() - 5.0;
    let key = format!("hpc-kit-many-{}", uuid::Uuid::new_v4().simple());
    let mut keyed = k.spec(&["/bin/sh", "-c", "echo hpc-kit-many-3"]);
    keyed.idempotency_key = Some(key.clone());
    let specs = [
        k.spec(&["/bin/sh", "-c", "echo hpc-kit-many-0"]),
        k.spec(&[]),
        k.spec(&["/bin/sh", "-c", "echo hpc-kit-many-2; exit 3"]),
        keyed,
    ];
    let r = k.plugin.submit_many_once(&specs).await;
    for id in r.iter().flatten() {
        k.started(id);
    }
    expect(r.len() == specs.len(), || {
        format!("answered {} results for {} specs", r.len(), specs.len())
    })?;
    match &r[1] {
        Err(HostError::Backend {
            error: BackendError::InvalidRequest(_),
            ..
        }) => {}
        Ok(id) => return Err(format!("spec 1 (an empty command) was accepted as `{id}`")),
        Err(e) => return Err(format!("spec 1 (an empty command): {}", kind(e))),
    }
    let mut ids = Vec::new();
    for i in [0, 2, 3] {
        match &r[i] {
            Ok(id) => ids.push(id.clone()),
            Err(e) => return Err(format!("spec {i} was refused: {e}")),
        }
    }
    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    expect(distinct.len() == ids.len(), || {
        format!("three specs got ids {ids:?}")
    })?;
    let want = [
        (JobStatus::Completed, 0),
        (JobStatus::Failed, 3),
        (JobStatus::Completed, 0),
    ];
    for ((id, (status, code)), marker) in ids.iter().zip(want).zip([0, 2, 3]) {
        let i = k.ended(id).await?;
        expect(i.status == status && i.exit_code == Some(code), || {
            format!("spec {marker} (`{id}`) ended {}", show(&i))
        })?;
        let l = k
            .plugin
            .get_logs(id)
            .await
            .map_err(|e| format!("get-logs of `{id}` failed: {e}"))?;
        let all = format!("{}{}", l.stdout, l.stderr);
        let others: Vec<String> = [0, 2, 3]
            .iter()
            .filter(|&&m| m != marker)
            .map(|m| format!("hpc-kit-many-{m}"))
            .collect();
        expect(
            all.contains(&format!("hpc-kit-many-{marker}"))
                && !others.iter().any(|o| all.contains(o.as_str())),
            || format!("the logs of spec {marker} (`{id}`) are not its own: {l:?}"),
        )?;
    }
    let found = k
        .plugin
        .find_job(&key, since)
        .await
        .map_err(|e| e.to_string())?;
    expect(found.as_deref() == Some(ids[2].as_str()), || {
        format!(
            "find-job of spec 3's key answered {found:?}, not `{}`",
            ids[2]
        )
    })
}
