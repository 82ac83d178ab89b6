//! The ledger against a fake scheduler and the real embedded store (SQLite
//! in a temporary folder): every path of a keyed submit, a batch and a
//! lookup, without a plugin, a process or a clock longer than a fake call.

use super::entry::{Claimant, Entry, slot};
use super::*;
use std::sync::{Arc, Mutex};

/// The fake's name: its keys' namespace in the store.
const NAME: &str = "fake";
/// The fake's time limit per call (what `wall_seconds` is for a plugin).
const WALL: Duration = Duration::from_millis(300);
/// The fake's [`Scheduler::grace`]: its jobs show at once.
const FAKE_GRACE: Duration = Duration::from_millis(10);

/// What the fake does with a spec it is asked to make.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// Make the job and answer its id.
    Make,
    /// Refuse it (`invalid-request`): no job.
    Refuse,
    /// Refuse the spec with this key, make the others.
    RefuseOnly(&'static str),
    /// Fail (`unavailable`) without making the job.
    Fail,
    /// Make the job, then fail (the answer was lost on the way).
    FailAfterMaking,
    /// Never answer (the call times out after [`WALL`]), having made the
    /// job or not.
    Hang { makes: bool },
}

/// A job the fake scheduler holds.
struct Job {
    key: Option<String>,
    id: String,
    /// Unix seconds.
    made_at: f64,
}

/// A scheduler that keeps its jobs in memory, logs every call and does as
/// its [`Answer`] says; its ledger is an embedded store in a folder of its own.
struct Fake {
    contract: Contract,
    ledger: Ledger,
    answer: Mutex<Answer>,
    /// `find-job` fails (`unavailable`).
    find_fails: Mutex<bool>,
    /// How long a call takes before it answers.
    latency: Duration,
    jobs: Mutex<Vec<Job>>,
    /// Every call, in order: `submit <key>`, `submit-many <n>`, `find <key>`.
    calls: Mutex<Vec<String>>,
    dir: std::path::PathBuf,
}

impl Fake {
    fn new(contract: Contract) -> Fake {
        Fake::with(contract, true, Duration::ZERO)
    }

    fn with(contract: Contract, programs_die_with_host: bool, latency: Duration) -> Fake {
        let dir = std::env::temp_dir().join(format!("hpc-host-ledger-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let ledger = Ledger {
            store: Store::open(None, &dir).unwrap(),
            births: Births::new(&dir, None),
            programs_die_with_host,
        };
        Fake {
            contract,
            ledger,
            answer: Mutex::new(Answer::Make),
            find_fails: Mutex::new(false),
            latency,
            jobs: Mutex::new(Vec::new()),
            calls: Mutex::new(Vec::new()),
            dir,
        }
    }

    fn answer(&self, a: Answer) {
        *self.answer.lock().unwrap() = a;
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    fn jobs(&self) -> usize {
        self.jobs.lock().unwrap().len()
    }

    /// A job the scheduler holds, made `ago` seconds ago (as by a
    /// submitter that died before it recorded the id): its id.
    fn holds(&self, key: &str, ago: f64) -> String {
        let mut jobs = self.jobs.lock().unwrap();
        let id = format!("job-{}", jobs.len());
        jobs.push(Job {
            key: Some(key.to_owned()),
            id: id.clone(),
            made_at: crate::supervise::jobs::now() - ago,
        });
        id
    }

    fn log(&self, call: String) {
        self.calls.lock().unwrap().push(call);
    }

    fn make(&self, spec: &JobSpec) -> String {
        let mut jobs = self.jobs.lock().unwrap();
        let id = format!("job-{}", jobs.len());
        jobs.push(Job {
            key: spec.idempotency_key.clone(),
            id: id.clone(),
            made_at: crate::supervise::jobs::now(),
        });
        id
    }

    fn error(&self, function: &'static str, error: BackendError) -> HostError {
        HostError::Backend {
            plugin: NAME.into(),
            function,
            error,
        }
    }

    /// One call: its latency, then `work` within [`WALL`], as a plugin call.
    async fn call<T>(
        &self,
        function: &'static str,
        work: impl Future<Output = T>,
    ) -> Result<T, HostError> {
        tokio::time::sleep(self.latency).await;
        tokio::time::timeout(WALL, work)
            .await
            .map_err(|_| HostError::PluginTimeout {
                plugin: NAME.into(),
                function,
                seconds: WALL.as_secs(),
            })
    }

    /// What the fake does with one spec, per its [`Answer`].
    async fn one(&self, function: &'static str, spec: &JobSpec) -> Result<String, HostError> {
        let answer = self.answer.lock().unwrap().clone();
        match answer {
            Answer::Make => Ok(self.make(spec)),
            Answer::RefuseOnly(k) if spec.idempotency_key.as_deref() != Some(k) => {
                Ok(self.make(spec))
            }
            Answer::Refuse | Answer::RefuseOnly(_) => {
                Err(self.error(function, BackendError::InvalidRequest("refused".into())))
            }
            Answer::Fail => Err(self.error(function, BackendError::Unavailable("down".into()))),
            Answer::FailAfterMaking => {
                self.make(spec);
                Err(self.error(function, BackendError::Unavailable("lost".into())))
            }
            Answer::Hang { makes } => {
                if makes {
                    self.make(spec);
                }
                std::future::pending().await
            }
        }
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Scheduler for Fake {
    fn name(&self) -> &str {
        NAME
    }

    fn contract(&self) -> Contract {
        self.contract
    }

    fn wall_time(&self) -> Duration {
        WALL
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn grace(&self) -> Duration {
        FAKE_GRACE
    }

    async fn submit_once(&self, spec: &JobSpec) -> Result<String, HostError> {
        let key = spec.idempotency_key.as_deref().unwrap_or("-");
        self.log(format!("submit {key}"));
        self.call("submit", self.one("submit", spec)).await?
    }

    async fn submit_many_once(&self, specs: &[JobSpec]) -> Vec<Result<String, HostError>> {
        assert!(
            self.contract >= Contract::V0_3,
            "submit-many asked of {:?}",
            self.contract
        );
        assert!(
            specs.len() <= SUBMIT_CHUNK,
            "{} specs in one call",
            specs.len()
        );
        self.log(format!("submit-many {}", specs.len()));
        let work = async {
            let mut all = Vec::new();
            for spec in specs {
                all.push(self.one("submit-many", spec).await);
            }
            all
        };
        match self.call("submit-many", work).await {
            Ok(all) => all,
            Err(e) => specs.iter().map(|_| Err(e.duplicate())).collect(),
        }
    }

    async fn find_job(&self, key: &str, since: f64) -> Result<Option<String>, HostError> {
        assert!(
            self.contract.finds_jobs(),
            "find-job asked of {:?}",
            self.contract
        );
        self.log(format!("find {key}"));
        if *self.find_fails.lock().unwrap() {
            return Err(self.error("find-job", BackendError::Unavailable("down".into())));
        }
        self.call("find-job", async {
            let jobs = self.jobs.lock().unwrap();
            jobs.iter()
                .find(|j| j.key.as_deref() == Some(key) && j.made_at >= since)
                .map(|j| j.id.clone())
        })
        .await
    }
}

fn spec(key: Option<&str>) -> JobSpec {
    JobSpec {
        idempotency_key: key.map(str::to_owned),
        ..JobSpec::command(["true"])
    }
}

/// The ledger's entry for `key`, if any.
async fn entry(fake: &Fake, key: &str) -> Option<Entry> {
    get(&fake.ledger.store, &slot(NAME, key))
        .await
        .unwrap()
        .map(|b| serde_json::from_slice(&b).unwrap())
}

/// Put `entry` in the ledger, as a submitter before this one left it.
async fn put(fake: &Fake, entry: &Entry) {
    let slot = slot(NAME, &entry.key);
    assert!(
        fake.ledger
            .store
            .swap(slot, None, Some(entry.encode()))
            .await
            .unwrap()
    );
}

/// A claim made `ago` seconds ago by a process of this machine that is gone
/// (this pid, another start), with its deadline `left` seconds from now.
fn dead_claim(key: &str, programs_die: bool, ago: f64, left: f64) -> Entry {
    let mut e = Entry::claim(key, Duration::ZERO, programs_die);
    e.claimant.start_ticks += 1;
    e.claimed_at -= ago;
    e.deadline = crate::supervise::jobs::now() + left;
    e
}

fn is_unavailable(r: &Result<impl std::fmt::Debug, HostError>) -> bool {
    matches!(
        r,
        Err(HostError::Backend {
            error: BackendError::Unavailable(_),
            ..
        })
    )
}

#[tokio::test]
async fn a_fresh_key_makes_one_job_and_records_its_id() {
    let fake = Fake::new(Contract::V0_3);
    let (id, new) = submit(&fake, &spec(Some("k")), "k").await.unwrap();
    assert!(new);
    assert_eq!(fake.calls(), ["submit k"], "a new store is not asked about");
    let e = entry(&fake, "k").await.unwrap();
    assert_eq!(e.job_id.as_deref(), Some(id.as_str()));
    assert_eq!(e.key, "k");
    assert_eq!(e.claimant, Claimant::this_process());
    assert!(e.programs_die && !e.ended);
}

#[tokio::test]
async fn the_same_key_again_answers_its_job_without_a_call() {
    let fake = Fake::new(Contract::V0_3);
    let (id, _) = submit(&fake, &spec(Some("k")), "k").await.unwrap();
    for _ in 0..3 {
        assert_eq!(
            submit(&fake, &spec(Some("k")), "k").await.unwrap(),
            (id.clone(), false)
        );
    }
    assert_eq!(lookup(&fake, "k").await.unwrap(), Submission::Made(id));
    assert_eq!(fake.calls(), ["submit k"]);
    assert_eq!(fake.jobs(), 1);
}

#[tokio::test]
async fn an_invalid_key_is_refused_before_the_store_or_the_scheduler() {
    let fake = Fake::new(Contract::V0_3);
    let r = submit(&fake, &spec(Some("a b")), "a b").await;
    assert!(matches!(r, Err(HostError::Input(_))), "{r:?}");
    assert!(matches!(
        lookup(&fake, "$(x)").await,
        Err(HostError::Input(_))
    ));
    assert!(fake.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_submits_with_one_key_make_one_job() {
    // Shared as the daemon shares a plugin (`Arc`), each submit on its own task.
    let fake = Arc::new(Fake::with(Contract::V0_3, true, Duration::from_millis(50)));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let fake = fake.clone();
            tokio::spawn(async move { submit(&fake, &spec(Some("k")), "k").await })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    assert_eq!(fake.jobs(), 1);
    assert_eq!(fake.calls(), ["submit k"], "the others waited for its id");
    assert!(answers.iter().all(|(id, _)| *id == answers[0].0));
    assert_eq!(answers.iter().filter(|(_, new)| *new).count(), 1);
}

#[tokio::test]
async fn a_dead_cli_submitters_claim_is_taken_over_once_find_job_twice_says_no_job() {
    let fake = Fake::new(Contract::V0_3);
    // Its programs died with it; its deadline does not matter.
    put(&fake, &dead_claim("k", true, 5.0, 3600.0)).await;
    assert!(
        !entry(&fake, "k")
            .await
            .unwrap()
            .may_still_submit(crate::supervise::jobs::now())
    );
    let (id, new) = submit(&fake, &spec(Some("k")), "k").await.unwrap();
    assert!(new);
    assert_eq!(fake.calls(), ["find k", "find k", "submit k"]);
    let e = entry(&fake, "k").await.unwrap();
    assert_eq!(e.job_id, Some(id));
    assert_eq!(
        e.claimant,
        Claimant::this_process(),
        "the claim is this process's now"
    );
}

#[tokio::test]
async fn a_dead_submitters_job_in_the_scheduler_is_answered_and_recorded_not_made_again() {
    let fake = Fake::new(Contract::V0_3);
    put(&fake, &dead_claim("k", true, 5.0, 3600.0)).await;
    let made = fake.holds("k", 4.0);
    assert_eq!(
        submit(&fake, &spec(Some("k")), "k").await.unwrap(),
        (made.clone(), false)
    );
    assert_eq!(fake.calls(), ["find k"]);
    assert_eq!(entry(&fake, "k").await.unwrap().job_id, Some(made));
    assert_eq!(fake.jobs(), 1);
}

#[tokio::test]
async fn a_job_made_before_its_claim_is_not_the_claims() {
    // `find-job` looks from the claim on: an older job with the key is not
    // the one this claim was for.
    let fake = Fake::new(Contract::V0_3);
    fake.holds("k", 60.0);
    put(&fake, &dead_claim("k", true, 5.0, 3600.0)).await;
    let (id, new) = submit(&fake, &spec(Some("k")), "k").await.unwrap();
    assert!(new && id == "job-1", "{id}");
}

#[tokio::test]
async fn a_dead_daemons_claim_is_honoured_until_its_deadline() {
    // The daemon's programs may outlive it: until the deadline its claim
    // may still make the job, and nothing asks the scheduler yet.
    let fake = Fake::new(Contract::V0_3);
    put(&fake, &dead_claim("k", false, 5.0, 3600.0)).await;
    assert_eq!(lookup(&fake, "k").await.unwrap(), Submission::InProgress);
    assert!(fake.calls().is_empty());

    let fake = Fake::new(Contract::V0_3);
    put(&fake, &dead_claim("k", false, 5.0, -1.0)).await;
    assert_eq!(lookup(&fake, "k").await.unwrap(), Submission::NeverMade);
    assert_eq!(fake.calls(), ["find k", "find k"]);
    assert!(entry(&fake, "k").await.is_none(), "the claim is cleared");
}

#[tokio::test]
async fn another_machines_claim_is_honoured_until_its_deadline_then_taken_over() {
    let fake = Fake::new(Contract::V0_3);
    let mut elsewhere = Entry::claim("k", Duration::ZERO, true);
    elsewhere.claimant.boot_id = "another-machine".into();
    elsewhere.deadline = crate::supervise::jobs::now() + 3600.0;
    put(&fake, &elsewhere).await;
    assert_eq!(lookup(&fake, "k").await.unwrap(), Submission::InProgress);

    let fake = Fake::new(Contract::V0_3);
    elsewhere.claimed_at -= 10.0;
    elsewhere.deadline = crate::supervise::jobs::now() - 1.0;
    put(&fake, &elsewhere).await;
    let (_, new) = submit(&fake, &spec(Some("k")), "k").await.unwrap();
    assert!(new);
    assert_eq!(fake.calls(), ["find k", "find k", "submit k"]);
}

#[tokio::test]
async fn a_scheduler_that_cannot_find_jobs_takes_a_dead_claim_over_without_asking() {
    // Contract 0.1.0: documented to maybe make the job twice.
    let fake = Fake::new(Contract::V0_1);
    put(&fake, &dead_claim("k", true, 5.0, 3600.0)).await;
    let (_, new) = submit(&fake, &spec(Some("k")), "k").await.unwrap();
    assert!(new);
    assert_eq!(fake.calls(), ["submit k"]);
}

#[tokio::test]
async fn a_refused_submit_frees_the_claim() {
    let fake = Fake::new(Contract::V0_3);
    fake.answer(Answer::Refuse);
    let r = submit(&fake, &spec(Some("k")), "k").await;
    assert!(
        matches!(
            &r,
            Err(HostError::Backend {
                error: BackendError::InvalidRequest(_),
                ..
            })
        ),
        "{r:?}"
    );
    assert!(entry(&fake, "k").await.is_none());
    assert_eq!(lookup(&fake, "k").await.unwrap(), Submission::NeverMade);
    // The key is free: the next submit makes the job, asking nothing first.
    fake.answer(Answer::Make);
    assert!(submit(&fake, &spec(Some("k")), "k").await.unwrap().1);
    assert_eq!(fake.calls(), ["submit k", "find k", "submit k"]);
}

#[tokio::test]
async fn a_failed_submit_leaves_its_claim_for_find_job_to_settle() {
    // No job made: the next submit asks, finds none, and makes it.
    let fake = Fake::with(Contract::V0_3, false, Duration::ZERO);
    fake.answer(Answer::Fail);
    assert!(is_unavailable(&submit(&fake, &spec(Some("k")), "k").await));
    let e = entry(&fake, "k").await.unwrap();
    assert!(e.ended && e.job_id.is_none());
    assert!(
        !e.programs_die,
        "the ledger's `programs_die_with_host` is recorded"
    );
    fake.answer(Answer::Make);
    assert!(submit(&fake, &spec(Some("k")), "k").await.unwrap().1);
    assert_eq!(fake.calls(), ["submit k", "find k", "find k", "submit k"]);
    assert_eq!(fake.jobs(), 1);

    // The job made but its id lost: the next submit finds it.
    let fake = Fake::new(Contract::V0_3);
    fake.answer(Answer::FailAfterMaking);
    assert!(is_unavailable(&submit(&fake, &spec(Some("k")), "k").await));
    fake.answer(Answer::Make);
    let (id, new) = submit(&fake, &spec(Some("k")), "k").await.unwrap();
    assert_eq!((id.as_str(), new), ("job-0", false));
    assert_eq!(fake.calls(), ["submit k", "find k"]);
    assert_eq!(fake.jobs(), 1);
}

#[tokio::test]
async fn a_submit_that_hangs_past_its_wall_time_fails_and_its_job_is_found_by_the_waiter() {
    let fake = Fake::new(Contract::V0_3);
    fake.answer(Answer::Hang { makes: true });
    let keyed = spec(Some("k"));
    let first = submit(&fake, &keyed, "k");
    let second = async {
        // Starts while the first holds the claim and waits for it.
        tokio::time::sleep(WALL / 3).await;
        submit(&fake, &keyed, "k").await
    };
    let (first, second) = tokio::join!(first, second);
    assert!(
        matches!(first, Err(HostError::PluginTimeout { .. })),
        "{first:?}"
    );
    assert_eq!(second.unwrap(), ("job-0".to_owned(), false));
    assert_eq!(fake.calls(), ["submit k", "find k"]);
    assert_eq!(fake.jobs(), 1);
    assert_eq!(
        entry(&fake, "k").await.unwrap().job_id.as_deref(),
        Some("job-0")
    );
}

#[tokio::test]
async fn a_batch_with_two_specs_of_one_key_is_refused_whole() {
    let fake = Fake::new(Contract::V0_3);
    let specs = [spec(Some("a")), spec(None), spec(Some("a"))];
    let r = submit_many(&fake, &specs).await;
    assert!(matches!(r, Err(HostError::Input(_))), "{r:?}");
    assert!(fake.calls().is_empty());
    let keys = fake.ledger.store.list_keys(NAMESPACE.into()).await.unwrap();
    assert!(keys.is_empty(), "claimed: {keys:?}");
}

#[tokio::test]
async fn a_batch_makes_its_fresh_keys_in_one_call_and_answers_old_keys_with_their_jobs() {
    let fake = Fake::new(Contract::V0_3);
    let (old, _) = submit(&fake, &spec(Some("old")), "old").await.unwrap();
    let specs = [
        spec(Some("old")),
        spec(Some("new")),
        spec(None),
        spec(Some("not valid")),
    ];
    let r = submit_many(&fake, &specs).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap(), &(old, false));
    assert_eq!(r[1].as_ref().unwrap(), &("job-1".to_owned(), true));
    assert_eq!(r[2].as_ref().unwrap(), &("job-2".to_owned(), true));
    assert!(matches!(r[3], Err(HostError::Input(_))), "{:?}", r[3]);
    assert_eq!(fake.calls(), ["submit old", "submit-many 2"]);
    assert_eq!(
        entry(&fake, "new").await.unwrap().job_id.as_deref(),
        Some("job-1")
    );
    // Again: every key has its job, nothing is made.
    let again = submit_many(&fake, &specs[..2]).await.unwrap();
    assert!(again.iter().all(|r| !r.as_ref().unwrap().1));
    assert_eq!(fake.calls().len(), 2);
}

#[tokio::test]
async fn a_batch_element_refused_frees_its_claim_and_the_others_are_made() {
    let fake = Fake::new(Contract::V0_3);
    fake.answer(Answer::RefuseOnly("b"));
    let r = submit_many(&fake, &[spec(Some("a")), spec(Some("b"))])
        .await
        .unwrap();
    assert!(r[0].is_ok());
    assert!(matches!(
        r[1],
        Err(HostError::Backend {
            error: BackendError::InvalidRequest(_),
            ..
        })
    ));
    assert!(entry(&fake, "a").await.unwrap().job_id.is_some());
    assert!(entry(&fake, "b").await.is_none());
}

#[tokio::test]
async fn a_batch_whose_call_fails_whole_fails_each_element_and_leaves_each_claim_ended() {
    let fake = Fake::new(Contract::V0_3);
    fake.answer(Answer::Hang { makes: false });
    let specs = [spec(Some("a")), spec(None), spec(Some("b"))];
    let r = submit_many(&fake, &specs).await.unwrap();
    assert_eq!(r.len(), 3);
    for r in &r {
        assert!(matches!(r, Err(HostError::PluginTimeout { .. })), "{r:?}");
    }
    for key in ["a", "b"] {
        let e = entry(&fake, key).await.unwrap();
        assert!(e.ended && e.job_id.is_none(), "{key}: {e:?}");
    }
    // Again: each key's claim is settled by the scheduler (no job), taken
    // over and made, one call each.
    fake.answer(Answer::Make);
    let r = submit_many(&fake, &specs).await.unwrap();
    assert!(r.iter().all(|r| r.as_ref().unwrap().1));
    assert_eq!(
        fake.calls(),
        [
            "submit-many 3",
            "submit-many 1",
            "find a",
            "find a",
            "submit a",
            "find b",
            "find b",
            "submit b"
        ]
    );
}

#[tokio::test]
async fn a_batch_refused_whole_frees_every_claim() {
    let fake = Fake::new(Contract::V0_3);
    fake.answer(Answer::Refuse);
    let r = submit_many(&fake, &[spec(Some("a")), spec(Some("b"))])
        .await
        .unwrap();
    assert!(r.iter().all(Result::is_err));
    let keys = fake.ledger.store.list_keys(NAMESPACE.into()).await.unwrap();
    assert!(keys.is_empty(), "{keys:?}");
}

#[tokio::test]
async fn a_batch_for_an_older_contract_is_one_submit_per_spec() {
    let fake = Fake::new(Contract::V0_2);
    let r = submit_many(&fake, &[spec(Some("a")), spec(None), spec(Some("a2"))])
        .await
        .unwrap();
    assert!(r.iter().all(|r| r.as_ref().unwrap().1));
    assert_eq!(fake.calls(), ["submit a", "submit -", "submit a2"]);
    assert!(entry(&fake, "a2").await.unwrap().job_id.is_some());
}

#[tokio::test]
async fn a_batch_longer_than_a_chunk_is_one_call_per_chunk() {
    let fake = Fake::new(Contract::V0_3);
    let keys: Vec<String> = (0..=SUBMIT_CHUNK).map(|i| format!("k{i}")).collect();
    let specs: Vec<JobSpec> = keys.iter().map(|k| spec(Some(k))).collect();
    let r = submit_many(&fake, &specs).await.unwrap();
    assert_eq!(r.len(), SUBMIT_CHUNK + 1);
    assert!(r.iter().all(|r| r.as_ref().unwrap().1));
    assert_eq!(
        fake.calls(),
        [
            format!("submit-many {SUBMIT_CHUNK}"),
            "submit-many 1".into()
        ]
    );
    let last = entry(&fake, &keys[SUBMIT_CHUNK]).await.unwrap();
    assert_eq!(
        last.job_id.as_deref(),
        Some(format!("job-{SUBMIT_CHUNK}").as_str())
    );
}

#[tokio::test]
async fn submit_parsed_keeps_each_unparsed_elements_error_in_place() {
    let fake = Fake::new(Contract::V0_3);
    let items = vec![
        Ok(spec(None)),
        Err(HostError::Input("not a spec".into())),
        Ok(spec(Some("k"))),
    ];
    let r = submit_parsed(&fake, items).await.unwrap();
    assert_eq!(r[0].as_ref().unwrap().0, "job-0");
    assert!(matches!(&r[1], Err(HostError::Input(m)) if m == "not a spec"));
    assert_eq!(r[2].as_ref().unwrap().0, "job-1");
}

/// Empty the store, as a Redis without persistence comes back after a restart.
async fn lose_the_store(fake: &Fake) {
    let store = &fake.ledger.store;
    for key in store.list_keys("hpc-host::".into()).await.unwrap() {
        store.delete(key).await.unwrap();
    }
    // Its new birth is a later millisecond than the one it lost.
    tokio::time::sleep(Duration::from_millis(2)).await;
}

#[tokio::test]
async fn a_store_that_lost_its_keys_asks_the_scheduler_before_making_a_job() {
    let fake = Fake::new(Contract::V0_3);
    let (made, _) = submit(&fake, &spec(Some("k")), "k").await.unwrap();
    lose_the_store(&fake).await;
    // A key used before: its job is found, not made again, and recorded.
    assert_eq!(
        submit(&fake, &spec(Some("k")), "k").await.unwrap(),
        (made.clone(), false)
    );
    assert_eq!(entry(&fake, "k").await.unwrap().job_id, Some(made));
    // A fresh key, while recovering: asked, not found, made.
    assert!(submit(&fake, &spec(Some("f")), "f").await.unwrap().1);
    // A batch, while recovering: each fresh key asked first.
    fake.holds("lost", 0.0);
    let r = submit_many(&fake, &[spec(Some("lost")), spec(Some("g"))])
        .await
        .unwrap();
    assert_eq!(r[0].as_ref().unwrap(), &("job-2".to_owned(), false));
    assert!(r[1].as_ref().unwrap().1);
    assert_eq!(
        fake.calls(),
        [
            "submit k",
            "find k",
            "find f",
            "submit f",
            "find lost",
            "find g",
            "submit-many 1"
        ]
    );
}

#[tokio::test]
async fn a_failed_question_while_recovering_frees_the_claim_and_fails() {
    let fake = Fake::new(Contract::V0_3);
    submit(&fake, &spec(Some("k")), "k").await.unwrap();
    lose_the_store(&fake).await;
    *fake.find_fails.lock().unwrap() = true;
    assert!(is_unavailable(&submit(&fake, &spec(Some("k")), "k").await));
    assert!(entry(&fake, "k").await.is_none(), "nothing was made: free");
    assert_eq!(fake.jobs(), 1);
}

#[tokio::test]
async fn a_store_lost_under_a_scheduler_that_cannot_find_jobs_makes_the_job_again() {
    // Documented for contract 0.1.0: nothing can tell the job was made.
    let fake = Fake::new(Contract::V0_1);
    submit(&fake, &spec(Some("k")), "k").await.unwrap();
    lose_the_store(&fake).await;
    assert!(submit(&fake, &spec(Some("k")), "k").await.unwrap().1);
    assert_eq!(fake.calls(), ["submit k", "submit k"]);
    assert_eq!(fake.jobs(), 2);
}

#[tokio::test]
async fn a_store_another_machine_used_first_is_not_taken_for_one_that_lost_keys() {
    // The store has a birth this machine never saw: it is new to us.
    let fake = Fake::new(Contract::V0_3);
    fake.ledger
        .store
        .set(BORN.into(), b"1000".to_vec(), None)
        .await
        .unwrap();
    submit(&fake, &spec(Some("k")), "k").await.unwrap();
    assert_eq!(fake.calls(), ["submit k"]);
}

#[tokio::test]
async fn lookup_without_a_record_asks_the_scheduler_and_records_what_it_finds() {
    let fake = Fake::new(Contract::V0_3);
    assert_eq!(lookup(&fake, "k").await.unwrap(), Submission::NeverMade);
    assert!(entry(&fake, "k").await.is_none());
    let made = fake.holds("k", LOOKBACK - 60.0);
    assert_eq!(
        lookup(&fake, "k").await.unwrap(),
        Submission::Made(made.clone())
    );
    assert_eq!(entry(&fake, "k").await.unwrap().job_id, Some(made.clone()));
    assert_eq!(fake.calls(), ["find k", "find k"]);
    // Now recorded, a submit answers it without a call.
    assert_eq!(
        submit(&fake, &spec(Some("k")), "k").await.unwrap(),
        (made, false)
    );
    assert_eq!(fake.calls().len(), 2);
}

#[test]
fn an_entry_is_stored_as_before() {
    // Entries written by earlier versions must still read, and theirs by us:
    // the same fields, in the same order.
    let e = Entry {
        key: "k".into(),
        job_id: Some("j".into()),
        claimed_at: 1.5,
        deadline: 2.5,
        claimant: Claimant {
            boot_id: "b".into(),
            pid: 7,
            start_ticks: 9,
        },
        programs_die: true,
        ended: false,
    };
    assert_eq!(
        String::from_utf8(e.encode()).unwrap(),
        r#"{"key":"k","job_id":"j","claimed_at":1.5,"deadline":2.5,"claimant":{"boot_id":"b","pid":7,"start_ticks":9},"programs_die":true,"ended":false}"#
    );
    let old = br#"{"key":"k","job_id":null,"claimed_at":1.0,"deadline":2.0,"claimant":{"boot_id":"b","pid":1,"start_ticks":2}}"#;
    let e: Entry = serde_json::from_slice(old).unwrap();
    assert!(!e.programs_die && !e.ended);
    // A claim's deadline is one call's time limit and the margin past it.
    let e = Entry::claim("k", Duration::from_secs(5), true);
    assert!((e.deadline - e.claimed_at - 20.0).abs() < 1e-6);
}

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
fn slots_do_not_mix_schedulers_or_keys() {
    assert_ne!(slot("slurm", "k"), slot("local", "k"));
    assert_ne!(slot("slurm", "k1"), slot("slurm", "k2"));
    assert!(slot("slurm", "k").starts_with(NAMESPACE));
}

#[test]
fn a_claim_is_honoured_while_its_submitter_may_still_make_the_job() {
    let live = Entry::claim("k", Duration::from_secs(100), true);
    let now = live.claimed_at;
    assert!(live.may_still_submit(now), "this process is alive");
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
    assert!(!cli.may_still_submit(now));
    assert!(daemon.may_still_submit(now));
    assert!(!daemon.may_still_submit(daemon.deadline + 1.0));
    let elsewhere = Entry {
        claimant: Claimant {
            boot_id: "other".into(),
            ..live.claimant.clone()
        },
        ..live.clone()
    };
    assert!(elsewhere.may_still_submit(now));
    assert!(!elsewhere.may_still_submit(elsewhere.deadline + 1.0));
    // A claimant whose call returned (an error) makes nothing more.
    assert!(
        !Entry {
            ended: true,
            ..live
        }
        .may_still_submit(now)
    );
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
