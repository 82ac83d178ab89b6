//! The scenario the Kubernetes backend's tests share: a [`Target`] (the fake
//! API server, or a real cluster named by `HPC_HOST_TEST_KUBECONFIG`) with a
//! test environment whose kubeconfig points at it, helpers that read the
//! cluster with a kube client, and the steps that run against both.

use super::objects::is_label;
use super::{FakeApi, Options};
use crate::common::TestEnv;
use serde_json::Value;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the scenario runs: the fake or a real cluster.
pub struct Target {
    pub env: TestEnv,
    pub ns: String,
    pub image: String,
    pub kubeconfig: PathBuf,
    pub fake: Option<FakeApi>,
    /// How long a job may take to start and end (a real cluster pulls images).
    pub patience: Duration,
}

impl Target {
    pub fn fake(opts: Options) -> Target {
        let fake = FakeApi::start(opts);
        let mut t = Target::with(
            |home| fake.write_kubeconfig(home, "ccat"),
            "ccat",
            "busybox:1.36",
            Duration::from_secs(30),
        );
        t.fake = Some(fake);
        t
    }

    /// A real cluster, if `HPC_HOST_TEST_KUBECONFIG` is set (namespace from
    /// `HPC_HOST_TEST_K8S_NAMESPACE`, default `default`).
    pub fn real() -> Option<Target> {
        let config = std::env::var_os("HPC_HOST_TEST_KUBECONFIG")?;
        let ns = std::env::var("HPC_HOST_TEST_K8S_NAMESPACE").unwrap_or_else(|_| "default".into());
        let image =
            std::env::var("HPC_HOST_TEST_K8S_IMAGE").unwrap_or_else(|_| "busybox:1.36".into());
        Some(Target::with(
            |_| PathBuf::from(config),
            &ns,
            &image,
            Duration::from_secs(300),
        ))
    }

    fn with(
        kubeconfig: impl FnOnce(&std::path::Path) -> PathBuf,
        ns: &str,
        image: &str,
        patience: Duration,
    ) -> Target {
        let mut env = TestEnv::new();
        let kubeconfig = kubeconfig(&env.home);
        env.set("KUBECONFIG", &kubeconfig.display().to_string());
        env.set("CCAT_WORKFLOW_MANAGER_HPC_BACKEND", "kubernetes");
        env.set("CCAT_WORKFLOW_MANAGER_K8S_NAMESPACE", ns);
        Target {
            env,
            ns: ns.into(),
            image: image.into(),
            kubeconfig,
            fake: None,
            patience,
        }
    }

    /// Submit `argv` in the target's image with extra `submit` flags; the job id.
    pub fn submit(&self, flags: &[&str], argv: &[&str]) -> String {
        let mut args = vec!["--output", "json", "submit", "--image-ref", &self.image];
        args.extend_from_slice(flags);
        args.push("--");
        args.extend_from_slice(argv);
        let v: Value = serde_json::from_str(&self.env.expect(0, &args)).unwrap();
        v["job_id"].as_str().unwrap().to_owned()
    }

    pub fn status(&self, id: &str) -> Value {
        self.env.status(id)
    }

    pub fn wait(&self, id: &str) -> Value {
        let timeout = self.patience.as_secs().to_string();
        serde_json::from_str(
            &self
                .env
                .expect(0, &["--output", "json", "wait", "--timeout", &timeout, id]),
        )
        .unwrap()
    }

    /// Poll `check` until it gives a value.
    pub fn until<T>(&self, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
        let deadline = Instant::now() + self.patience;
        loop {
            if let Some(v) = check() {
                return v;
            }
            assert!(Instant::now() < deadline, "never: {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// GET `path` from the API server with the kubeconfig's credentials.
    pub fn api_get(&self, path: &str) -> Result<Value, u16> {
        api(
            &self.kubeconfig,
            http::Request::get(path).body(vec![]).unwrap(),
        )
        .map(|t| serde_json::from_str(&t).unwrap())
    }

    pub fn job(&self, id: &str) -> Option<Value> {
        self.api_get(&format!("/apis/batch/v1/namespaces/{}/jobs/{id}", self.ns))
            .ok()
    }

    /// The job's pods, by the Job controller's label.
    pub fn pods(&self, id: &str) -> Vec<Value> {
        let v = self
            .api_get(&format!(
                "/api/v1/namespaces/{}/pods?labelSelector=job-name%3D{id}",
                self.ns
            ))
            .unwrap();
        v["items"].as_array().unwrap().clone()
    }
}

/// One request through a kube client built from `kubeconfig`; the body, or the HTTP status.
pub fn api(kubeconfig: &std::path::Path, req: http::Request<Vec<u8>>) -> Result<String, u16> {
    api_status(kubeconfig, req).map_err(|s| s.code)
}

/// One request; the body, or the server's `Status` as the client parsed it.
pub fn api_status(
    kubeconfig: &std::path::Path,
    req: http::Request<Vec<u8>>,
) -> Result<String, Box<::kube::core::Status>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let kc = ::kube::config::Kubeconfig::read_from(kubeconfig).unwrap();
        let config = ::kube::Config::from_custom_kubeconfig(kc, &Default::default())
            .await
            .unwrap();
        let client = ::kube::Client::try_from(config).unwrap();
        client.request_text(req).await.map_err(|e| match e {
            ::kube::Error::Api(s) => s,
            other => panic!("{other}"),
        })
    })
}

// ---- the steps: each runs against the fake and a real cluster ----

pub fn success_with_logs_and_wall_time(t: &Target) {
    let start = Instant::now();
    let id = t.submit(
        &[
            "--job-name",
            "Hello World",
            "--cpu",
            "1",
            "--memory-gb",
            "0.25",
            "--time-hours",
            "1",
            "--env-var",
            "GREETING=hi there",
        ],
        &[
            "sh",
            "-c",
            "echo \"hello $GREETING\"; echo oops >&2; sleep 2",
        ],
    );
    eprintln!("kube: submit through the CLI took {:?}", start.elapsed());
    assert!(
        id.starts_with("hello-world-") && id.len() == "hello-world-".len() + 6 && is_label(&id),
        "{id}"
    );

    let job = t.job(&id).expect("the Job exists");
    assert_eq!(job["metadata"]["labels"]["hpc-host/job-id"], id.as_str());
    assert!(job["metadata"]["uid"].is_string(), "server-filled: {job}");
    let spec = &job["spec"];
    assert_eq!(
        (
            spec["backoffLimit"].as_i64(),
            spec["activeDeadlineSeconds"].as_i64()
        ),
        (Some(0), Some(3600))
    );
    assert_eq!(spec["ttlSecondsAfterFinished"], 86400);
    let pod = &spec["template"]["spec"];
    assert_eq!(pod["restartPolicy"], "Never");
    let c = &pod["containers"][0];
    assert_eq!(c["image"], t.image.as_str());
    assert_eq!(
        c["command"],
        serde_json::json!([
            "sh",
            "-c",
            "echo \"hello $GREETING\"; echo oops >&2; sleep 2"
        ])
    );
    assert_eq!(
        c["resources"]["requests"],
        serde_json::json!({"cpu": "1", "memory": "256Mi"})
    );
    assert_eq!(
        c["resources"]["limits"],
        serde_json::json!({"cpu": "1", "memory": "256Mi"})
    );
    assert_eq!(
        c["env"],
        serde_json::json!([{"name": "GREETING", "value": "hi there"}])
    );

    let start = Instant::now();
    let s = t.status(&id);
    eprintln!("kube: status through the CLI took {:?}", start.elapsed());
    assert!(s["status"] == "pending" || s["status"] == "running", "{s}");

    let s = t.wait(&id);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(s["exit_code"], 0);
    assert_eq!(s["native_state"], "Complete");
    let wall = s["wall_time_seconds"].as_f64().unwrap();
    assert!((1.0..=30.0).contains(&wall), "wall time {wall}");
    let cpu = s["cpu_hours"].as_f64().unwrap();
    assert!(
        (cpu - wall / 3600.0).abs() < 1e-9,
        "cpu hours {cpu} for {wall} s on 1 CPU"
    );
    assert!(s["peak_memory_gb"].is_null(), "{s}");
    assert!(s["reason"].as_str().unwrap().contains("allocation"), "{s}");

    let logs: Value =
        serde_json::from_str(&t.env.expect(0, &["--output", "json", "logs", &id])).unwrap();
    let out = logs["stdout"].as_str().unwrap();
    assert!(
        out.contains("hello hi there\n") && out.contains("oops\n"),
        "{logs}"
    );
}

pub fn exit_3_fails_with_exit_code_3(t: &Target) {
    let id = t.submit(
        &["--job-name", "fails"],
        &["sh", "-c", "echo failing; exit 3"],
    );
    let s = t.wait(&id);
    assert_eq!(s["status"], "failed", "{s}");
    assert_eq!(s["exit_code"], 3);
    assert_eq!(s["native_state"], "Error");
    assert!(
        s["reason"]
            .as_str()
            .unwrap()
            .contains("exited with code 3 (Error); BackoffLimitExceeded"),
        "{s}"
    );
}

pub fn cancel_while_running_deletes_the_pods(t: &Target) {
    let id = t.submit(&["--job-name", "sleeper"], &["sleep", "300"]);
    t.until("running", || {
        (t.status(&id)["status"] == "running").then_some(())
    });
    assert_eq!(t.pods(&id).len(), 1);
    let pgids = t
        .fake
        .as_ref()
        .map(|f| f.pgids_of_job(&t.ns, &id))
        .unwrap_or_default();

    t.env.expect(0, &["cancel", &id]);
    t.until("the pods are gone", || t.pods(&id).is_empty().then_some(()));
    assert!(t.job(&id).is_none(), "the Job is deleted");
    for g in pgids {
        let alive = crate::common::group_members(g as i64);
        assert!(alive.is_empty(), "processes left behind: {alive:?}");
    }
    let s = t.status(&id);
    assert_eq!(
        (s["status"].as_str(), s["native_state"].as_str()),
        (Some("failed"), Some("CANCELLED")),
        "{s}"
    );
    // Cancelling again is not an error; cancelling what never was is.
    t.env.expect(0, &["cancel", &id]);
    let err = t.env.fail(3, &["cancel", "no-such-job-abc123"]);
    assert!(
        err.contains("not-found") && err.contains("no-such-job-abc123"),
        "{err}"
    );
}

pub fn hostile_job_names_become_valid_names(t: &Target) {
    let long = "x".repeat(300);
    let mut ids = Vec::new();
    for name in [
        "../../etc/passwd; rm -rf / `id`",
        "Ünïcödé Ω",
        &long,
        "---",
        "UPPER_case.name",
        "same",
        "same",
    ] {
        let id = t.submit(&[&format!("--job-name={name}")], &["true"]);
        assert!(is_label(&id), "{name:?} -> {id:?}");
        ids.push(id);
    }
    assert!(ids[0].starts_with("etc-passwd-rm-rf-id-"), "{}", ids[0]);
    assert_eq!(ids[2].len(), 63);
    assert!(ids[3].starts_with("hpc-job-"), "{}", ids[3]);
    assert_ne!(ids[5], ids[6], "the same name twice gives two jobs");
}

/// The plugin asks for a namespace its policy does not grant: its `config`
/// names `kube-system`, its policy only the target's namespace.
pub fn a_namespace_not_granted_is_denied(t: &mut Target) {
    let settings = t.env.home.join("settings.toml");
    std::fs::write(
        &settings,
        "[default.plugins.kubernetes.config]\nK8S_NAMESPACE = \"kube-system\"\n",
    )
    .unwrap();
    t.env
        .set("HPC_HOST_CONFIG", &settings.display().to_string());
    let err = t
        .env
        .fail(4, &["submit", "--image-ref", &t.image, "--", "true"]);
    assert!(
        err.contains("denied") && err.contains("may not use namespace `kube-system`"),
        "{err}"
    );
    std::fs::write(&settings, "").unwrap();
}
