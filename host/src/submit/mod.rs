//! Submitting jobs: a spec read and checked once ([`spec`]), and at most one
//! job per idempotency key however many callers, processes and login nodes
//! retry it ([`ledger`]). [`Submit`] adds both to a loaded plugin, whose own
//! calls make one job each and remember nothing.

pub mod ledger;
pub mod spec;

use crate::runtime::bindings::JobSpec;
use crate::runtime::contract::Contract;
use crate::runtime::error::HostError;
use crate::runtime::plugin::Plugin;
use ledger::{Births, Ledger, Scheduler, Submission, Submitted};
use std::future::Future;
use std::time::Duration;

/// Exactly-once submission through a loaded plugin.
pub trait Submit {
    /// Submit a job. With an idempotency key, at most one job is ever made
    /// for it: see [`ledger`].
    fn submit(&self, spec: &JobSpec) -> impl Future<Output = Result<String, HostError>> + Send;

    /// [`Submit::submit`], saying whether this call made the job (`false`
    /// when its idempotency key names a job made before).
    fn submit_new(
        &self,
        spec: &JobSpec,
    ) -> impl Future<Output = Result<(String, bool), HostError>> + Send;

    /// Submit many jobs: per spec, in order, its job's id and whether this
    /// call made it, or its own error. A plugin of contract 0.3.0 gets them
    /// in `submit-many` calls (one SLURM job array per shape); an older one
    /// one `submit` each. The outer error fails the whole batch before any of
    /// it was made (two specs with one key, a store that is down).
    fn submit_many(
        &self,
        specs: &[JobSpec],
    ) -> impl Future<Output = Result<Vec<Submitted>, HostError>> + Send;

    /// [`Submit::submit_many`] of specs read one by one: one that could not
    /// be read keeps its error in its place, the others are submitted.
    fn submit_parsed(
        &self,
        items: Vec<Result<JobSpec, HostError>>,
    ) -> impl Future<Output = Result<Vec<Submitted>, HostError>> + Send;

    /// The job an idempotency key made, if any.
    fn lookup(&self, key: &str) -> impl Future<Output = Result<Submission, HostError>> + Send;
}

impl Submit for Plugin {
    async fn submit(&self, spec: &JobSpec) -> Result<String, HostError> {
        self.submit_new(spec).await.map(|(id, _)| id)
    }

    async fn submit_new(&self, spec: &JobSpec) -> Result<(String, bool), HostError> {
        match &spec.idempotency_key {
            None => self.submit_once(spec).await.map(|id| (id, true)),
            Some(key) => ledger::submit(&Keyed::new(self), spec, key).await,
        }
    }

    async fn submit_many(&self, specs: &[JobSpec]) -> Result<Vec<Submitted>, HostError> {
        ledger::submit_many(&Keyed::new(self), specs).await
    }

    async fn submit_parsed(
        &self,
        items: Vec<Result<JobSpec, HostError>>,
    ) -> Result<Vec<Submitted>, HostError> {
        ledger::submit_parsed(&Keyed::new(self), items).await
    }

    async fn lookup(&self, key: &str) -> Result<Submission, HostError> {
        ledger::lookup(&Keyed::new(self), key).await
    }
}

/// A plugin and the ledger its keyed submits are recorded in (the store and
/// state folder of the host that loaded it): the ledger's [`Scheduler`].
struct Keyed<'a> {
    plugin: &'a Plugin,
    ledger: Ledger,
}

impl<'a> Keyed<'a> {
    fn new(plugin: &'a Plugin) -> Keyed<'a> {
        let r = plugin.records();
        Keyed {
            plugin,
            ledger: Ledger {
                store: r.store.clone(),
                births: Births::new(&r.state_dir, r.redis_url.as_deref()),
                programs_die_with_host: r.programs_die_with_host,
            },
        }
    }
}

/// Each method one call of the plugin, with nothing of the ledger in it.
impl Scheduler for Keyed<'_> {
    fn name(&self) -> &str {
        self.plugin.name()
    }

    fn contract(&self) -> Contract {
        self.plugin.contract()
    }

    fn wall_time(&self) -> Duration {
        self.plugin.wall_time()
    }

    fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    fn submit_once(
        &self,
        spec: &JobSpec,
    ) -> impl Future<Output = Result<String, HostError>> + Send {
        self.plugin.submit_once(spec)
    }

    fn submit_many_once(
        &self,
        specs: &[JobSpec],
    ) -> impl Future<Output = Vec<Result<String, HostError>>> + Send {
        self.plugin.submit_many_once(specs)
    }

    fn find_job(
        &self,
        key: &str,
        since: f64,
    ) -> impl Future<Output = Result<Option<String>, HostError>> + Send {
        self.plugin.find_job(key, since)
    }
}
