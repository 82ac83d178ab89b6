//! Service mode against the other users of a login node, abusive clients and
//! faults: one test per escape found by an attack suite (issue 22). The other
//! user is `nobody` (`setpriv`); the tests run as root in CI, as the attack did.

use crate::common::{BIN, TestEnv, poll, run_ok};
use crate::daemon::Served;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const NOBODY: u32 = 65534;

/// Run `argv` as `nobody`.
fn as_nobody(argv: &[&str]) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .args(argv);
    c
}

/// A folder in `/tmp` that everyone may write (sticky, like `/tmp` itself).
fn shared_tmp(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("hpc-host-{tag}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir(&d).unwrap();
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o1777)).unwrap();
    d
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
}

fn serve_once(env: &TestEnv, extra: &[(&str, &str)]) -> std::process::Output {
    Command::new(BIN)
        .arg("serve")
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .envs(extra.iter().copied())
        .output()
        .unwrap()
}

/// A socket that `nobody` binds at `path` and that records whatever a
/// client sends it into `path.got`.
struct Squatter {
    child: std::process::Child,
    got: PathBuf,
}

impl Squatter {
    fn bind(path: &Path) -> Squatter {
        let got = path.with_extension("got");
        let script = format!(
            r#"
import socket, os
s = socket.socket(socket.AF_UNIX); s.bind({sock:?}); os.chmod({sock:?}, 0o777); s.listen(16)
while True:
    c, _ = s.accept(); c.settimeout(2)
    try:
        data = c.recv(65536)
    except OSError:
        data = b""
    with open({got:?}, "ab") as f: f.write(data)
    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{{}}"); c.close()
"#,
            sock = path.display().to_string(),
            got = got.display().to_string()
        );
        let child = as_nobody(&["/usr/bin/python3", "-c", &script])
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        poll(Duration::from_secs(10), "the squatter did not bind", || {
            path.exists().then_some(())
        });
        Squatter { child, got }
    }

    fn received(&self) -> String {
        String::from_utf8_lossy(&std::fs::read(&self.got).unwrap_or_default()).into_owned()
    }
}

impl Drop for Squatter {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn another_users_socket_never_sees_a_request_and_serve_refuses_it() {
    let shared = shared_tmp("squat");
    let sock = shared.join("hpc.sock");
    let squatter = Squatter::bind(&sock);
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_SOCKET", sock.to_str().unwrap());

    // serve: refuses the folder (others may write it) and leaves the socket.
    let out = serve_once(&env, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to serve") && err.contains("writable by group or others"),
        "{err}"
    );
    assert!(sock.exists(), "another user's socket was removed");

    // The CLI in `auto` mode: nothing reaches the squatter, the job still
    // runs (in-process), and a warning says why.
    let submit = [
        "submit",
        "--env-var",
        "API_TOKEN=s3cr3t-token",
        "--",
        "true",
    ];
    let out = env.run(&submit);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("owned by uid 65534"), "{err}");
    // `require`: refused, still nothing sent.
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "require");
    let out = env.run(&submit);
    assert_ne!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("refusing the daemon's socket"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        squatter.received(),
        "",
        "a request reached another user's socket"
    );
    drop(squatter);
    let _ = std::fs::remove_dir_all(&shared);
}

#[test]
fn serve_refuses_a_folder_another_user_made_or_anyone_may_write_and_changes_nothing() {
    let env = TestEnv::new();
    // A folder another user made (0777): refused, left as it was.
    let shared = shared_tmp("hijack");
    let theirs = shared.join("sockets");
    let out = as_nobody(&["mkdir", "-m", "0777", theirs.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(out.status.success());
    let sock = theirs.join("hpc.sock");
    let out = serve_once(
        &env,
        &[("CCAT_WORKFLOW_MANAGER_HPC_SOCKET", sock.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("owned by uid {NOBODY}")), "{err}");
    assert_eq!(std::fs::metadata(&theirs).unwrap().uid(), NOBODY);
    assert_eq!(
        mode(&theirs),
        0o777,
        "the daemon changed another user's folder"
    );
    assert!(!sock.exists());

    // This user's own folder, but shared (1777, like /tmp): refused, and its
    // mode is not touched (it once became 0700).
    let out = serve_once(
        &env,
        &[(
            "CCAT_WORKFLOW_MANAGER_HPC_SOCKET",
            shared.join("hpc.sock").to_str().unwrap(),
        )],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("writable by group or others (mode 1777)"),
        "{err}"
    );
    assert_eq!(mode(&shared), 0o1777);

    // Missing folders under a shared one are made 0700 and served.
    let fresh = shared.join("mine/deeper/hpc.sock");
    let served = Served::start_with(
        &env,
        &[("CCAT_WORKFLOW_MANAGER_HPC_SOCKET", fresh.to_str().unwrap())],
    );
    assert_eq!(mode(&shared.join("mine")), 0o700);
    assert_eq!(mode(&shared.join("mine/deeper")), 0o700);
    assert_eq!(mode(&fresh) & 0o777, 0o600);
    drop(served);
    let _ = std::fs::remove_dir_all(&shared);
}

#[test]
fn serve_never_removes_what_is_not_its_own_socket() {
    let env = TestEnv::new();
    let dir = env.home.join("run");
    std::fs::create_dir(&dir).unwrap();
    let file = dir.join("precious.txt");
    std::fs::write(&file, b"keep me").unwrap();
    let out = serve_once(
        &env,
        &[("CCAT_WORKFLOW_MANAGER_HPC_SOCKET", file.to_str().unwrap())],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
}

#[test]
fn a_policy_request_or_settings_file_another_user_could_write_is_refused() {
    // The site's plugins folder is shared and sticky: the plugin file is
    // this user's, and another user adds `<name>.policy.toml` beside it.
    let shared = shared_tmp("plugins");
    let mut env = TestEnv::new();
    env.set(
        "CCAT_WORKFLOW_MANAGER_HPC_PLUGINS_DIR",
        shared.to_str().unwrap(),
    );
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never");
    std::fs::copy(
        Path::new(crate::common::TEST_PLUGINS).join("misbehave.wasm"),
        shared.join("mysite.wasm"),
    )
    .unwrap();
    std::fs::set_permissions(
        shared.join("mysite.wasm"),
        std::fs::Permissions::from_mode(0o644),
    )
    .unwrap();
    let request = shared.join("mysite.policy.toml");
    run_ok(&mut as_nobody(&[
        "sh",
        "-c",
        &format!(
            "printf '[config]\\nHPC_APPTAINER = \"/tmp/evil\"\\n' > '{}'",
            request.display()
        ),
    ]));
    let err = env.fail(2, &["--backend", "mysite", "status", "x"]);
    assert!(
        err.contains("policy request is not trusted")
            && err.contains(&format!("owned by uid {NOBODY}")),
        "{err}"
    );
    let err = env.fail(
        2,
        &[
            "plugins",
            "inspect",
            shared.join("mysite.wasm").to_str().unwrap(),
        ],
    );
    assert!(err.contains("not trusted"), "{err}");

    // A settings file others may write is not this user's settings.
    let settings = env.home.join("settings.toml");
    std::fs::write(&settings, "[default]\nHPC_BACKEND = \"local\"\n").unwrap();
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o666)).unwrap();
    let err = env.fail(2, &["--config", settings.to_str().unwrap(), "status", "x"]);
    assert!(err.contains("settings file is not trusted"), "{err}");
    std::fs::set_permissions(&settings, std::fs::Permissions::from_mode(0o644)).unwrap();
    let id = "0b0c1d2e-0000-4000-8000-000000000000";
    let err = env.fail(3, &["--config", settings.to_str().unwrap(), "status", id]);
    assert!(err.contains("not-found") || err.contains(id), "{err}");
    let _ = std::fs::remove_dir_all(&shared);
}

/// `redis-server` on 127.0.0.1 with `listen` (its port options), keeping
/// nothing on disk but in `dir`.
fn redis_server(dir: &Path, listen: &[&str]) -> Command {
    let mut c = Command::new("redis-server");
    c.args(listen)
        .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
        .args(["--dir", dir.to_str().unwrap()])
        .stdout(Stdio::null());
    c
}

/// A Redis of the test's own with a password (and an ACL user).
struct AuthRedis {
    child: std::process::Child,
    port: u16,
}

impl AuthRedis {
    fn start(dir: &Path) -> AuthRedis {
        let port = 21000 + (std::process::id() % 9000) as u16;
        let child = redis_server(dir, &["--port", &port.to_string()])
            .args(["--requirepass", "pw-of-the-default-user"])
            .args(["--user", "hpc", "on", ">pw-of-hpc", "~*", "&*", "+@all"])
            .spawn()
            .unwrap();
        poll(
            Duration::from_secs(10),
            "redis-server did not start",
            || {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "ping"])
                    .output()
                    .unwrap();
                // Without a password: NOAUTH, which proves the server is up.
                String::from_utf8_lossy(&out.stdout)
                    .contains("NOAUTH")
                    .then_some(())
            },
        );
        AuthRedis { child, port }
    }
}

impl Drop for AuthRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
#[ignore = "needs redis"]
fn a_store_other_users_could_use_is_refused_and_authenticated_ones_work() {
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never");
    env.set(
        "CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL",
        "redis://127.0.0.1:6379/0",
    );
    let err = env.fail(2, &["submit", "--", "true"]);
    assert!(
        err.contains("refusing `HPC_REDIS_URL`") && err.contains("HPC_REDIS_ALLOW_UNAUTHENTICATED"),
        "{err}"
    );
    // The password never shows in a message; the job is not made.
    assert!(!env.state_dir().join("jobs").exists());

    let dir = env.home.join("redis");
    std::fs::create_dir_all(&dir).unwrap();
    let redis = AuthRedis::start(&dir);
    for url in [
        format!("redis://:pw-of-the-default-user@127.0.0.1:{}/0", redis.port),
        format!("redis://hpc:pw-of-hpc@127.0.0.1:{}/0", redis.port),
    ] {
        env.set("CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL", &url);
        let id = env.submit(&["sh", "-c", "echo authenticated"]);
        assert_eq!(env.wait(&id)["status"], "completed");
        // The record is in the password-protected Redis, out of others' reach.
        let out = as_nobody(&["redis-cli", "-p", &redis.port.to_string(), "keys", "*"])
            .output()
            .unwrap();
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("NOAUTH"),
            "{out:?}"
        );
    }
    // A wrong password is a clear `unavailable`, not a hang.
    env.set(
        "CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL",
        &format!("redis://:wrong@127.0.0.1:{}/0", redis.port),
    );
    let err = env.fail(3, &["submit", "--", "true"]);
    assert!(err.to_lowercase().contains("redis"), "{err}");
    assert!(!err.contains("wrong@"), "the password shows: {err}");
}

#[test]
fn serve_detach_on_a_fresh_account_writes_only_private_files() {
    let env = TestEnv::new();
    let out = run_ok(
        Command::new("sh")
            .arg("-c")
            .arg(format!("umask 022; exec '{BIN}' serve --detach"))
            .env_clear()
            .envs(env.vars.iter().map(|(k, v)| (k, v))),
    );
    let pid: i32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
    let state = env.state_dir();
    let (dir_mode, log_mode) = (mode(&state), mode(&state.join("hpc-host-serve.log")));
    unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(dir_mode, 0o700);
    assert_eq!(log_mode, 0o600);
}

/// Whether the daemon has closed `s` (a read returns end-of-file or an error).
fn closed_by_server(s: &mut UnixStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                return false;
            }
            Err(_) => return true,
        }
    }
}

#[test]
fn idle_and_half_sent_connections_are_closed() {
    let env = TestEnv::new();
    let served = Served::start(&env);
    let connect = || {
        let s = UnixStream::connect(&served.socket).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    };
    let mut silent = connect();
    let mut partial = connect();
    partial.write_all(b"GET /v1/health HTTP/1.1\r\nHo").unwrap();
    let mut idle = connect();
    idle.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let mut first = [0u8; 4096];
    assert!(
        idle.read(&mut first).unwrap() > 0,
        "no answer to a whole request"
    );
    let mut no_body = connect();
    no_body
        .write_all(b"POST /v1/jobs/status HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{")
        .unwrap();
    std::thread::sleep(Duration::from_secs(2));
    for (name, s) in [
        ("silent", &mut silent),
        ("partial", &mut partial),
        ("idle", &mut idle),
    ] {
        assert!(!closed_by_server(s), "{name} closed too early");
    }
    // Header and idle timeout 20 s; body timeout 20 s.
    std::thread::sleep(Duration::from_secs(21));
    for (name, s) in [
        ("silent", &mut silent),
        ("partial", &mut partial),
        ("idle", &mut idle),
    ] {
        assert!(closed_by_server(s), "the {name} connection is still held");
    }
    no_body
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut answer = String::new();
    let _ = no_body.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert_eq!(served.http("GET", "/v1/health", None).0, 200);
}

#[test]
fn a_flood_of_idle_connections_does_not_starve_a_real_request() {
    let env = TestEnv::new();
    // The daemon starts with systemd's default soft limit (1024) and raises it.
    let log = env.home.join("serve.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["-v", "serve"])
        .env_clear()
        .envs(env.vars.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            let mut r: libc::rlimit = std::mem::zeroed();
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
            r.rlim_cur = 1024;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    let socket = env.state_dir().join("hpc-host.sock");
    let deadline = Instant::now() + Duration::from_secs(60);
    while UnixStream::connect(&socket).is_err() {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // This test's own limit must hold the flood.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut r);
        r.rlim_cur = r.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &r);
    }
    let flood: Vec<UnixStream> = (0..2000)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (code, h) = crate::daemon::http(&socket, "GET", "/v1/health", None);
    assert_eq!(code, 200, "{h}");
    let spec = br#"{"execution_command": ["true"]}"#;
    let (code, v) = crate::daemon::http(&socket, "POST", "/v1/jobs", Some(spec));
    assert_eq!(code, 201, "{v}");
    drop(flood);
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn a_daemon_a_client_started_ends_when_idle_and_one_started_by_hand_does_not() {
    let env = TestEnv::new();
    let idle = [("CCAT_WORKFLOW_MANAGER_HPC_DAEMON_IDLE_SECONDS", "1")];
    let start = |auto: bool| {
        let mut c = Command::new(BIN);
        c.arg("serve");
        if auto {
            c.arg("--auto");
        }
        c.env_clear()
            .envs(env.vars.iter().map(|(k, v)| (k, v)))
            .envs(idle.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap()
    };
    let mut auto = start(true);
    let status = poll(
        Duration::from_secs(30),
        "an idle `serve --auto` kept running",
        || auto.try_wait().unwrap(),
    );
    assert!(status.success());
    let mut by_hand = start(false);
    std::thread::sleep(Duration::from_secs(4));
    assert!(
        by_hand.try_wait().unwrap().is_none(),
        "`serve` without --auto ended"
    );
    unsafe { libc::kill(by_hand.id() as i32, libc::SIGTERM) };
    assert!(by_hand.wait().unwrap().success());
}

/// The zygote of the daemon `daemon_pid`.
fn zygote_of(daemon_pid: u32) -> Option<i32> {
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
            continue;
        };
        let ppid = status
            .lines()
            .find_map(|l| l.strip_prefix("PPid:"))
            .and_then(|p| p.trim().parse::<u32>().ok());
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        if ppid == Some(daemon_pid) && String::from_utf8_lossy(&cmdline).contains("__zygote") {
            return Some(pid);
        }
    }
    None
}

#[test]
fn killing_the_zygote_under_load_runs_each_keyed_job_exactly_once() {
    const JOBS: usize = 120;
    let env = TestEnv::new();
    let served = Served::start(&env);
    let ran = env.home.join("ran");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let daemon_pid = served.child.id();
    let killer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut kills = 0;
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                if let Some(z) = zygote_of(daemon_pid) {
                    unsafe { libc::kill(z, libc::SIGKILL) };
                    kills += 1;
                }
                std::thread::sleep(Duration::from_millis(15));
            }
            kills
        })
    };
    let submit = |key: &str| {
        let spec = serde_json::json!({
            "execution_command": ["sh", "-c", format!("echo {key} >> '{}'", ran.display())],
            "idempotency_key": key,
        })
        .to_string();
        crate::daemon::http(&served.socket, "POST", "/v1/jobs", Some(spec.as_bytes()))
    };
    let keys: Vec<String> = (0..JOBS).map(|i| format!("zygote-kill-{i}")).collect();
    let first: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = keys
            .chunks(JOBS / 8)
            .map(|chunk| s.spawn(|| chunk.iter().map(|k| submit(k)).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let kills = killer.join().unwrap();
    assert!(kills >= 5, "the zygote was killed only {kills} times");
    for (key, (code, v)) in keys.iter().zip(&first) {
        assert_ne!(
            v["error"]["kind"], "invalid-request",
            "{key}: a killed zygote answered invalid-request: {v}"
        );
        assert!(
            *code == 201 || v["error"]["kind"] == "unavailable",
            "{key}: {code} {v}"
        );
    }
    // Every key again: the same id where one was returned, and a job for every key.
    for (key, (code, v)) in keys.iter().zip(&first) {
        let (code2, v2) = submit(key);
        assert!(code2 == 200 || code2 == 201, "{key}: {code2} {v2}");
        if *code == 201 {
            assert_eq!(v2["job_id"], v["job_id"], "{key}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&ran).unwrap_or_default();
        let mut per_key = std::collections::BTreeMap::<&str, usize>::new();
        for line in text.lines() {
            *per_key.entry(line).or_default() += 1;
        }
        assert!(
            per_key.values().all(|n| *n == 1),
            "a keyed job ran more than once: {:?}",
            per_key.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
        );
        if per_key.len() == JOBS {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of {JOBS} jobs ran",
            per_key.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Nothing more runs later.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(std::fs::read_to_string(&ran).unwrap().lines().count(), JOBS);
}

#[test]
fn status_of_more_than_ten_thousand_ids_is_answered_per_id() {
    let env = TestEnv::new();
    let served = Served::start(&env);
    let id = env.submit(&["true"]);
    let mut ids: Vec<String> = (0..12_000)
        .map(|i| format!("0b0c1d2e-0000-4000-8000-{i:012}"))
        .collect();
    ids.push(id.clone());
    let body = serde_json::json!({ "job_ids": ids }).to_string();
    let (code, v) = served.http("POST", "/v1/jobs/status", Some(body.as_bytes()));
    assert_eq!(code, 200, "{v}");
    let list = v.as_array().expect("a list");
    assert_eq!(list.len(), 12_001);
    assert_eq!(list[0]["error"]["kind"], "not-found", "{}", list[0]);
    assert_eq!(list[12_000]["job_id"], id.as_str());
    assert!(list[12_000]["status"].is_string(), "{}", list[12_000]);
}

/// A CA and a server certificate for 127.0.0.1, made with `openssl`.
fn tls_certs(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| run_ok(Command::new("openssl").args(args).current_dir(dir));
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=hpc-host test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ]);
    std::fs::write(dir.join("san.ext"), "subjectAltName = IP:127.0.0.1\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.pem",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[test]
#[ignore = "needs redis"]
fn a_tls_redis_is_verified_against_the_trust_store() {
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never");
    let dir = env.home.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (ca, cert, key) = tls_certs(&dir);
    let port = 30000 + (std::process::id() % 9000) as u16;
    let mut server = redis_server(&dir, &["--port", "0", "--tls-port", &port.to_string()])
        .args([
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
        ])
        .args([
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ])
        .args(["--requirepass", "tls-pw"])
        .spawn()
        .unwrap();
    poll(
        Duration::from_secs(10),
        "the TLS redis-server did not start",
        || std::net::TcpStream::connect(("127.0.0.1", port)).ok(),
    );
    env.set(
        "CCAT_WORKFLOW_MANAGER_HPC_REDIS_URL",
        &format!("rediss://:tls-pw@127.0.0.1:{port}/0"),
    );
    // Its CA is not one the system trusts: refused, as `unavailable`.
    let err = env.fail(3, &["submit", "--", "true"]);
    assert!(err.to_lowercase().contains("redis"), "{err}");
    // Trusted through SSL_CERT_FILE: the job's record goes over TLS.
    env.set("SSL_CERT_FILE", ca.to_str().unwrap());
    let id = env.submit(&["sh", "-c", "echo over-tls"]);
    assert_eq!(env.wait(&id)["status"], "completed");
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_jobs_terminal_escapes_reach_the_terminal_escaped_on_both_paths() {
    let mut env = TestEnv::new();
    env.set("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "require");
    let _served = Served::start(&env);
    // ESC ] 52: a terminal's clipboard write; on stderr, a colour change.
    let id = env.submit(&[
        "sh",
        "-c",
        r"printf '\033]52;c;cHduZWQ=\007out\n'; printf '\033[31merr\n' >&2",
    ]);
    assert_eq!(env.wait(&id)["status"], "completed");
    let through_daemon = env.run(&["logs", &id]);
    let mut never = env.vars.clone();
    never.retain(|(k, _)| k != "CCAT_WORKFLOW_MANAGER_HPC_DAEMON");
    let in_process = Command::new(BIN)
        .args(["logs", &id])
        .env_clear()
        .envs(never.iter().map(|(k, v)| (k, v)))
        .env("CCAT_WORKFLOW_MANAGER_HPC_DAEMON", "never")
        .output()
        .unwrap();
    for out in [&through_daemon, &in_process] {
        assert!(out.status.success());
        assert!(
            !out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b),
            "{out:?}"
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains(r"\x1b]52;c;cHduZWQ=\x07out"));
    }
    assert_eq!(through_daemon.stdout, in_process.stdout);
    assert_eq!(through_daemon.stderr, in_process.stderr);
}

#[test]
fn sixty_concurrent_reloads_all_succeed() {
    let env = TestEnv::new();
    let served = Served::start(&env);
    // Each reload builds a pooled engine (terabytes of reserved address
    // space); at once they ran out of it. They take turns now.
    let codes: Vec<(u16, serde_json::Value)> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..60)
            .map(|_| s.spawn(|| served.http("POST", "/v1/reload", None)))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (code, v) in &codes {
        assert_eq!(*code, 200, "{v}");
    }
    let id = env.submit(&["true"]);
    assert_eq!(env.wait(&id)["status"], "completed");
}
