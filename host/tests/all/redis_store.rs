//! The local backend with its records in a real Redis.

use crate::common::TestEnv;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const SHARED_REDIS: &str = "redis://127.0.0.1:6379/0";

fn redis_env() -> TestEnv {
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL", SHARED_REDIS);
    let prefix = format!("hpc-host-test:{}:", uuid::Uuid::new_v4());
    env.set("CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__KV_PREFIX", &prefix);
    env
}

pub fn redis_cli(port: u16, args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .arg("-p")
        .arg(port.to_string())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
#[ignore = "needs redis"]
fn jobs_are_recorded_in_redis() {
    let env = redis_env();
    assert_eq!(
        redis_cli(6379, &["ping"]).trim(),
        "PONG",
        "the tests need Redis on 127.0.0.1:6379"
    );
    let id = env.submit(&["sh", "-c", "echo from-redis"]);
    let prefix = &env
        .vars
        .iter()
        .find(|(k, _)| k.ends_with("KV_PREFIX"))
        .unwrap()
        .1;
    let record = redis_cli(6379, &["get", &format!("{prefix}job/{id}")]);
    assert!(record.contains(&id), "record in Redis: {record}");
    assert_eq!(env.wait(&id)["status"], "completed");
    assert_eq!(
        String::from_utf8(env.run(&["logs", &id]).stdout).unwrap(),
        "from-redis\n"
    );
    // No embedded store was used.
    assert!(!env.state_dir().join("store.sqlite3").exists());
}

/// A Redis server of this test's own, which it can stop and start.
pub struct OwnRedis {
    port: u16,
    dir: std::path::PathBuf,
    child: Option<Child>,
    /// Keep data across restarts (append-only file), or start empty each time.
    persist: bool,
}

impl OwnRedis {
    pub fn start(dir: &Path, port: u16) -> OwnRedis {
        Self::start_with(dir, port, true)
    }

    /// A Redis that keeps nothing on disk: each restart starts empty (as the
    /// one on these machines).
    pub fn start_volatile(dir: &Path, port: u16) -> OwnRedis {
        Self::start_with(dir, port, false)
    }

    fn start_with(dir: &Path, port: u16, persist: bool) -> OwnRedis {
        let mut r = OwnRedis {
            port,
            dir: dir.to_owned(),
            child: None,
            persist,
        };
        r.restart();
        r
    }

    pub fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                if self.persist { "yes" } else { "no" },
            ])
            .args([
                "--appendfsync",
                "always",
                "--dir",
                self.dir.to_str().unwrap(),
            ])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis_cli(self.port, &["ping"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            c.wait().unwrap();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
#[ignore = "needs redis"]
fn redis_down_is_unavailable_and_loses_nothing() {
    let mut env = TestEnv::new();
    let port = 20000 + (std::process::id() % 20000) as u16;
    let dir = env.home.join("redis");
    std::fs::create_dir_all(&dir).unwrap();
    let mut redis = OwnRedis::start(&dir, port);
    env.set(
        "CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL",
        &format!("redis://127.0.0.1:{port}/0"),
    );

    let id = env.submit(&["sh", "-c", "sleep 1; echo finished while redis was down"]);
    redis.stop();

    let start = Instant::now();
    let err = env.fail(3, &["submit", "--", "true"]);
    assert!(
        err.contains("unavailable") && err.contains("Redis"),
        "{err}"
    );
    let err = env.fail(3, &["status", &id]);
    assert!(err.contains("unavailable"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "failing took {:?}",
        start.elapsed()
    );

    std::thread::sleep(Duration::from_millis(1500));
    redis.restart();
    let s = env.wait(&id);
    assert_eq!(s["status"], "completed", "{s}");
    assert_eq!(
        String::from_utf8(env.run(&["logs", &id]).stdout).unwrap(),
        "finished while redis was down\n"
    );
    // Exactly one record: the refused submit left none behind.
    let keys = redis_cli(port, &["--scan", "--pattern", "hpc-host:local:*"]);
    assert_eq!(keys.lines().count(), 1, "{keys}");
}

#[test]
#[ignore = "needs redis"]
fn a_job_seen_from_another_login_node_says_where_it_runs() {
    // Two "login nodes": separate state folders, one Redis, one key prefix.
    let mut a = redis_env();
    let prefix = a
        .vars
        .iter()
        .find(|(k, _)| k.ends_with("KV_PREFIX"))
        .unwrap()
        .1
        .clone();
    a.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__CONFIG__HPC_NODE",
        "node-a",
    );
    let mut b = redis_env();
    b.set("CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__KV_PREFIX", &prefix);
    b.set(
        "CCAT_WORKFLOW_MANAGER_PLUGINS__LOCAL__CONFIG__HPC_NODE",
        "node-b",
    );

    let id = a.submit(&["sleep", "30"]);
    assert_eq!(a.status(&id)["status"], "running");
    for args in [
        vec!["status", id.as_str()],
        vec!["logs", id.as_str()],
        vec!["cancel", id.as_str()],
    ] {
        let err = b.fail(3, &args);
        assert!(
            err.contains("runs on `node-a`") && err.contains("this is `node-b`"),
            "{args:?}: {err}"
        );
    }
    a.expect(0, &["cancel", &id]);
    // Once its end is recorded, every node can read it.
    assert_eq!(b.status(&id)["native_state"], "CANCELLED");
}
