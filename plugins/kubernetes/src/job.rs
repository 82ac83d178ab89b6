//! The batch/v1 Job a job spec becomes.
//!
//! One container, `job`, runs the execution command as its argv (`command`,
//! so the image's entrypoint is not in the way, and never a shell) in
//! `image_ref`. CPU and memory are both requests and limits, so the job gets
//! what it asked for and no more; GPUs are `nvidia.com/gpu` limits (extended
//! resources take their request from the limit). `restartPolicy: Never` and
//! `backoffLimit: 0`, because a failed job is the workflow manager's to retry,
//! and the default of 6 retries would hide failures. `activeDeadlineSeconds`
//! comes from `time_hours`, `ttlSecondsAfterFinished` from settings.
//!
//! ```
//! # use hpc_plugin_kubernetes::job::{resources, Resources};
//! # use hpc_plugin_sdk::ResourceRequirements;
//! let r = ResourceRequirements { cpu: Some(4), memory_gb: Some(16.0), time_hours: Some(2.0),
//!     gpus: None, nodes: None, extra: vec![] };
//! let Resources { requests, deadline_seconds, .. } = resources(&r).unwrap();
//! assert_eq!(requests["cpu"].0, "4");
//! assert_eq!(requests["memory"].0, "16Gi");
//! assert_eq!(deadline_seconds, Some(7200));
//! ```

use hpc_plugin_sdk::resources::{hours_to_seconds, memory_kubernetes};
use hpc_plugin_sdk::spec::check_command;
use hpc_plugin_sdk::{BackendError, JobSpec, ResourceRequirements};
use k8s_openapi::api::batch::v1::{Job, JobSpec as K8sJobSpec};
use k8s_openapi::api::core::v1::{
    Container, EnvVar, PodSpec, PodTemplateSpec, ResourceRequirements as K8sResources,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use std::collections::BTreeMap;

/// The one container of every Job, by name (logs are read from it).
pub const CONTAINER: &str = "job";
/// The label that finds a Job by its id, with a set-based selector for many.
pub const ID_LABEL: &str = "hpc-host/job-id";
/// The label of a keyed job: the first 40 hex digits of its idempotency
/// key's SHA-256 (a label value takes at most 63 characters of a narrow set).
pub const KEY_LABEL: &str = "hpc-host/idempotency-key-sha256";
/// The annotation that holds a keyed job's idempotency key itself.
pub const KEY_ANNOTATION: &str = "hpc-host/idempotency-key";

/// The [`KEY_LABEL`] value of a key.
pub fn key_label(idempotency_key: &str) -> String {
    hpc_plugin_sdk::idempotency::digest(idempotency_key)[..40].to_owned()
}

/// Whether a Job was made by a submit with this key.
pub fn carries_key(job: &Job, idempotency_key: &str) -> bool {
    job.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(KEY_ANNOTATION))
        .is_some_and(|k| k == idempotency_key)
}
/// The label the Job controller puts on a Job's pods (every Kubernetes version).
pub const POD_LABEL: &str = "job-name";
/// Who made the Job, for people looking at the namespace.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "hpc-host");
/// The extended resource that asks for NVIDIA GPUs.
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
/// The longest `job_name` kept in the Job's annotation.
const MAX_ANNOTATION: usize = 1024;

/// The requests, limits and deadline of a Job.
#[derive(Debug, Default)]
pub struct Resources {
    pub requests: BTreeMap<String, Quantity>,
    pub limits: BTreeMap<String, Quantity>,
    pub deadline_seconds: Option<i64>,
}

/// Translate the spec's resources; anything a Job cannot express is refused.
pub fn resources(r: &ResourceRequirements) -> Result<Resources, BackendError> {
    let invalid = |m: String| Err(BackendError::InvalidRequest(m));
    let mut out = Resources::default();
    if let Some((key, _)) = r.extra.first() {
        return invalid(format!(
            "`resource_requirements.{key}` is not supported by the Kubernetes backend (it accepts cpu, memory_gb, time_hours, gpus and nodes = 1)"
        ));
    }
    if r.nodes.is_some_and(|n| n != 1) {
        return invalid("a Kubernetes job runs on one node: `nodes` must be 1".into());
    }
    if let Some(cpu) = r.cpu {
        if cpu == 0 {
            return invalid("`cpu` must be at least 1".into());
        }
        out.requests.insert("cpu".into(), Quantity(cpu.to_string()));
    }
    if let Some(gb) = r.memory_gb {
        out.requests.insert("memory".into(), Quantity(memory(gb)?));
    }
    // Requests and limits the same: the job gets what it asked for, and no more.
    out.limits = out.requests.clone();
    if let Some(gpus) = r.gpus.filter(|g| *g > 0) {
        out.limits
            .insert(GPU_RESOURCE.into(), Quantity(gpus.to_string()));
    }
    if let Some(h) = r.time_hours {
        // At least one second (a deadline of 0 is invalid to the API server),
        // at most a century, so the cast cannot saturate.
        let seconds = hours_to_seconds(h, "time_hours").map_err(BackendError::InvalidRequest)?;
        out.deadline_seconds = Some(i64::try_from(seconds).unwrap_or(i64::MAX));
    }
    Ok(out)
}

/// `16` -> `16Gi`; `0.5` -> `512Mi`; fractions of a MiB round up.
fn memory(gb: f64) -> Result<String, BackendError> {
    memory_kubernetes(gb, "memory_gb").map_err(BackendError::InvalidRequest)
}

/// The Job for `spec`, named `name`; `ttl` is `ttlSecondsAfterFinished`.
pub fn build(spec: &JobSpec, name: &str, ttl: Option<i32>) -> Result<Job, BackendError> {
    let image = spec
        .image_ref
        .as_deref()
        .map(str::trim)
        .filter(|i| !i.is_empty())
        .ok_or_else(|| {
            BackendError::InvalidRequest(
                "a Kubernetes job needs a container image: set `image_ref`".into(),
            )
        })?;
    check_command(&spec.execution_command, "execution_command")
        .map_err(BackendError::InvalidRequest)?;
    let r = resources(&spec.resource_requirements)?;
    let mut labels: BTreeMap<String, String> = [
        (ID_LABEL.to_owned(), name.to_owned()),
        (MANAGED_BY.0.to_owned(), MANAGED_BY.1.to_owned()),
    ]
    .into();
    let mut annotations = BTreeMap::new();
    let mut note = |key: &str, value: &Option<String>| {
        if let Some(v) = value {
            let v: String = v.chars().take(MAX_ANNOTATION).collect();
            annotations.insert(format!("hpc-host/{key}"), v);
        }
    };
    // Kept for people and provenance; a Job has no use for host paths.
    note("job-name", &spec.job_name);
    note("sif-path", &spec.sif_path);
    note("input-dir", &spec.input_dir);
    note("output-dir", &spec.output_dir);
    note("workspace-dir", &spec.workspace_dir);
    note("manifest-path", &spec.manifest_path);
    if let Some(key) = &spec.idempotency_key {
        // The host has checked the key (at most 200 characters).
        annotations.insert(KEY_ANNOTATION.to_owned(), key.clone());
        labels.insert(KEY_LABEL.to_owned(), key_label(key));
    }

    let env: Vec<EnvVar> = spec
        .environment_variables
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            value_from: None,
        })
        .collect();
    let container = Container {
        name: CONTAINER.into(),
        image: Some(image.into()),
        command: Some(spec.execution_command.clone()),
        env: (!env.is_empty()).then_some(env),
        resources: (!r.limits.is_empty()).then(|| K8sResources {
            requests: (!r.requests.is_empty()).then(|| r.requests.clone()),
            limits: Some(r.limits.clone()),
            ..Default::default()
        }),
        ..Default::default()
    };
    Ok(Job {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(labels.clone()),
            annotations: (!annotations.is_empty()).then_some(annotations),
            ..Default::default()
        },
        spec: Some(K8sJobSpec {
            backoff_limit: Some(0),
            active_deadline_seconds: r.deadline_seconds,
            ttl_seconds_after_finished: ttl,
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    containers: vec![container],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    })
}

/// The CPUs a Job's container requested (`4`, `1.5`, `500m`), if any.
pub fn requested_cpus(job: &Job) -> Option<f64> {
    let pod = job.spec.as_ref()?.template.spec.as_ref()?;
    let container = pod
        .containers
        .iter()
        .find(|c| c.name == CONTAINER)
        .or(pod.containers.first())?;
    let q = &container
        .resources
        .as_ref()?
        .requests
        .as_ref()?
        .get("cpu")?
        .0;
    match q.strip_suffix('m') {
        Some(milli) => milli.parse::<f64>().ok().map(|m| m / 1000.0),
        None => q.parse().ok(),
    }
    .filter(|c: &f64| c.is_finite() && *c > 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn spec() -> JobSpec {
        JobSpec {
            execution_command: vec![
                "python".into(),
                "reduce.py".into(),
                "--night".into(),
                "a b".into(),
            ],
            image_ref: Some("ghcr.io/ccat/reduce:1.2".into()),
            sif_path: None,
            input_dir: None,
            output_dir: None,
            workspace_dir: Some("/data/ws/42".into()),
            manifest_path: None,
            resource_requirements: ResourceRequirements {
                cpu: Some(4),
                memory_gb: Some(16.0),
                time_hours: Some(2.0),
                gpus: Some(1),
                nodes: None,
                extra: vec![],
            },
            environment_variables: vec![("OMP_NUM_THREADS".into(), "4".into())],
            job_name: Some("Reduce".into()),
            idempotency_key: None,
        }
    }

    #[test]
    fn the_job_matches_the_spec() {
        let job = build(&spec(), "reduce-x7k2q9", Some(86400)).unwrap();
        let v: Value = serde_json::to_value(&job).unwrap();
        assert_eq!(v["apiVersion"], "batch/v1");
        assert_eq!(v["kind"], "Job");
        assert_eq!(v["metadata"]["name"], "reduce-x7k2q9");
        assert_eq!(v["metadata"]["labels"][ID_LABEL], "reduce-x7k2q9");
        assert_eq!(v["metadata"]["annotations"]["hpc-host/job-name"], "Reduce");
        assert_eq!(
            v["metadata"]["annotations"]["hpc-host/workspace-dir"],
            "/data/ws/42"
        );
        let s = &v["spec"];
        assert_eq!(s["backoffLimit"], 0);
        assert_eq!(s["activeDeadlineSeconds"], 7200);
        assert_eq!(s["ttlSecondsAfterFinished"], 86400);
        assert_eq!(
            s["template"]["metadata"]["labels"][ID_LABEL],
            "reduce-x7k2q9"
        );
        let pod = &s["template"]["spec"];
        assert_eq!(pod["restartPolicy"], "Never");
        let c = &pod["containers"][0];
        assert_eq!(c["name"], CONTAINER);
        assert_eq!(c["image"], "ghcr.io/ccat/reduce:1.2");
        assert_eq!(
            c["command"],
            json!(["python", "reduce.py", "--night", "a b"])
        );
        assert!(c.get("args").is_none());
        assert_eq!(c["env"], json!([{"name": "OMP_NUM_THREADS", "value": "4"}]));
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "4", "memory": "16Gi"})
        );
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"})
        );
        assert_eq!(requested_cpus(&job), Some(4.0));
    }

    #[test]
    fn without_resources_the_container_has_none() {
        let mut s = spec();
        s.resource_requirements = ResourceRequirements {
            cpu: None,
            memory_gb: None,
            time_hours: None,
            gpus: None,
            nodes: Some(1),
            extra: vec![],
        };
        s.environment_variables.clear();
        let v = serde_json::to_value(build(&s, "x", None).unwrap()).unwrap();
        let c = &v["spec"]["template"]["spec"]["containers"][0];
        assert!(
            c.get("resources").is_none() && c.get("env").is_none(),
            "{c}"
        );
        assert!(v["spec"].get("activeDeadlineSeconds").is_none());
        assert!(v["spec"].get("ttlSecondsAfterFinished").is_none());
    }

    #[test]
    fn quantities() {
        assert_eq!(memory(16.0).unwrap(), "16Gi");
        assert_eq!(memory(0.5).unwrap(), "512Mi");
        assert_eq!(memory(1.0001).unwrap(), "1025Mi");
        assert!(memory(0.0).is_err() && memory(f64::NAN).is_err());
        let r = |h| ResourceRequirements {
            cpu: None,
            memory_gb: None,
            time_hours: Some(h),
            gpus: Some(0),
            nodes: None,
            extra: vec![],
        };
        assert_eq!(resources(&r(0.0001)).unwrap().deadline_seconds, Some(1));
        assert_eq!(resources(&r(1.5)).unwrap().deadline_seconds, Some(5400));
        assert!(
            resources(&r(1.0)).unwrap().limits.is_empty(),
            "no GPUs asked, none limited"
        );
        assert!(resources(&r(0.0)).is_err());
    }

    #[test]
    fn what_a_job_cannot_express_is_refused() {
        let mut s = spec();
        s.image_ref = None;
        assert!(
            matches!(build(&s, "x", None), Err(BackendError::InvalidRequest(m)) if m.contains("image_ref"))
        );
        let mut s = spec();
        s.resource_requirements.nodes = Some(2);
        assert!(
            matches!(build(&s, "x", None), Err(BackendError::InvalidRequest(m)) if m.contains("nodes"))
        );
        let mut s = spec();
        s.resource_requirements.extra = vec![("qos".into(), "high".into())];
        assert!(
            matches!(build(&s, "x", None), Err(BackendError::InvalidRequest(m)) if m.contains("`resource_requirements.qos`"))
        );
        let mut s = spec();
        s.resource_requirements.cpu = Some(0);
        assert!(build(&s, "x", None).is_err());
    }

    #[test]
    fn requested_cpus_reads_quantities() {
        let mut job = build(&spec(), "x", None).unwrap();
        let set = |job: &mut Job, q: &str| {
            let c = &mut job
                .spec
                .as_mut()
                .unwrap()
                .template
                .spec
                .as_mut()
                .unwrap()
                .containers[0];
            c.resources
                .as_mut()
                .unwrap()
                .requests
                .as_mut()
                .unwrap()
                .insert("cpu".into(), Quantity(q.into()));
        };
        set(&mut job, "500m");
        assert_eq!(requested_cpus(&job), Some(0.5));
        set(&mut job, "1.5");
        assert_eq!(requested_cpus(&job), Some(1.5));
        set(&mut job, "junk");
        assert_eq!(requested_cpus(&job), None);
    }
}
