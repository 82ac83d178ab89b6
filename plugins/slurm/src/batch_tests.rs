//! Tests for [`super`] over the fake host: one `sbatch` per shape, errors
//! per element and per array, the records, and `find-job`/`get-logs` of
//! array elements after a kill at each point of a submit.

use super::*;
use crate::backend::{find_job, logs};
use crate::host::fake::{Fake, FakeHost, fail, ok};
use std::path::{Path, PathBuf};

fn workspace(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "hpc-plugin-slurm-batch-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn spec(ws: &Path, word: &str) -> JobSpec {
    let mut s = hpc_plugin_sdk::fake::spec(&["echo", word]);
    s.workspace_dir = Some(ws.to_str().unwrap().into());
    s.resource_requirements.cpu = Some(1);
    s
}

fn keyed(ws: &Path, n: usize) -> Vec<JobSpec> {
    (0..n)
        .map(|i| {
            let mut s = spec(ws, &format!("job {i}"));
            s.idempotency_key = Some(format!("night-7/{i}"));
            s
        })
        .collect()
}

fn ids(r: &[Result<String, BackendError>]) -> Vec<&str> {
    r.iter()
        .map(|r| r.as_ref().map(String::as_str).unwrap_or("ERR"))
        .collect()
}

fn script_of(h: &FakeHost, call: usize) -> String {
    let args = &h.calls_to("sbatch")[call].args;
    std::fs::read_to_string(args.last().unwrap()).unwrap()
}

#[test]
fn one_shape_is_one_sbatch_array_with_one_id_per_spec() {
    let ws = workspace("one");
    let mut h = Fake::new();
    h.answer("sbatch", ok("77;cluster\n"));
    let r = submit_many(&mut h, &keyed(&ws, 5));
    assert_eq!(ids(&r), ["77_0", "77_1", "77_2", "77_3", "77_4"]);
    let call = &h.calls_to("sbatch")[0];
    assert_eq!(&call.args[..2], ["--parsable", "--array=0-4"]);
    let script = script_of(&h, 0);
    assert!(script.contains("4)\nexec -- 'echo' 'job 4'\n"), "{script}");
    // Records: one per key, the batch, the array.
    let rec: ArrayRecord = hpc_plugin_sdk::record::decode(&h.kv["array/77"]).unwrap();
    assert_eq!(rec.array_id.as_deref(), Some("77"));
    assert_eq!(rec.tasks, 5);
    assert_eq!(h.kv[&batch_key(&rec.batch)], h.kv["array/77"]);
    assert!(script.contains(&format!("hpc-host-batch={}\"\n", rec.batch)));
    let kr: KeyRecord = hpc_plugin_sdk::record::decode(&h.kv[&key_key("night-7/3")]).unwrap();
    assert_eq!(
        kr,
        KeyRecord {
            batch: rec.batch.clone(),
            index: 3
        }
    );
    assert_eq!(h.kv.len(), 5 + 2);
    // find-job of any key: from the store alone, no scheduler command.
    let before = h.calls.len();
    assert_eq!(
        find_job(&mut h, "night-7/3", 0.0).unwrap().as_deref(),
        Some("77_3")
    );
    assert_eq!(h.calls.len(), before);
    // get-logs of an element reads its own files.
    std::fs::write(log_path_of(&rec, "77", 2, "out"), "two\n").unwrap();
    assert_eq!(logs(&mut h, "77_2").unwrap().stdout, "two\n");
    assert_eq!(logs(&mut h, "77_4").unwrap().stdout, "");
    assert!(matches!(
        logs(&mut h, "77_5"),
        Err(BackendError::NotFound(_))
    ));
    assert!(matches!(
        logs(&mut h, "78_0"),
        Err(BackendError::NotFound(_))
    ));
    std::fs::remove_dir_all(ws).unwrap();
}

fn log_path_of(rec: &ArrayRecord, id: &str, i: u32, ext: &str) -> String {
    array::log_path(&rec.base, id, i, ext)
}

#[test]
fn shapes_group_and_a_lone_spec_is_a_plain_job() {
    let ws = workspace("mixed");
    let mut specs: Vec<JobSpec> = (0..7).map(|i| spec(&ws, &i.to_string())).collect();
    for i in [1, 3, 5] {
        specs[i].resource_requirements.memory_gb = Some(2.0);
    }
    specs[6].resource_requirements.extra = vec![("account".into(), "a".into())];
    let mut h = Fake::new();
    h.answer("sbatch", ok("10\n"))
        .answer("sbatch", ok("11\n"))
        .answer("sbatch", ok("12\n"));
    let r = submit_many(&mut h, &specs);
    assert_eq!(
        ids(&r),
        ["10_0", "11_0", "10_1", "11_1", "10_2", "11_2", "12"]
    );
    let calls = h.calls_to("sbatch");
    assert_eq!(calls.len(), 3);
    assert_eq!(calls[0].args[1], "--array=0-2");
    assert_eq!(calls[1].args[1], "--array=0-2");
    assert!(!calls[2].args[1].starts_with("--array"));
    assert!(script_of(&h, 1).contains("#SBATCH --mem=2G\n"));
    assert!(script_of(&h, 1).contains("1)\nexec -- 'echo' '3'\n"));
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn an_invalid_spec_gets_its_own_error_and_the_rest_go() {
    let ws = workspace("invalid");
    let mut specs = keyed(&ws, 4);
    specs[2].environment_variables = vec![("BAD NAME".into(), "x".into())];
    let mut h = Fake::new();
    h.answer("sbatch", ok("5\n"));
    let r = submit_many(&mut h, &specs);
    assert_eq!(ids(&r), ["5_0", "5_1", "ERR", "5_2"]);
    assert!(matches!(&r[2], Err(BackendError::InvalidRequest(m)) if m.contains("BAD NAME")));
    assert_eq!(h.calls_to("sbatch").len(), 1);
    assert!(!h.kv.contains_key(&key_key("night-7/2")));
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn a_refused_array_fails_its_elements_only() {
    let ws = workspace("refused");
    let mut specs: Vec<JobSpec> = (0..4).map(|i| spec(&ws, &i.to_string())).collect();
    specs[2].resource_requirements.extra = vec![("account".into(), "nosuch".into())];
    specs[3].resource_requirements.extra = vec![("account".into(), "nosuch".into())];
    let mut h = Fake::new();
    h.answer("sbatch", ok("20\n")).answer(
        "sbatch",
        fail("sbatch: error: Batch job submission failed: Invalid account or account/partition combination specified\n"),
    );
    let r = submit_many(&mut h, &specs);
    assert_eq!(&ids(&r)[..2], ["20_0", "20_1"]);
    for e in &r[2..] {
        assert!(matches!(e, Err(BackendError::InvalidRequest(m)) if m.contains("Invalid account")));
    }
    // The refused array left no script and no batch record.
    let scripts = std::fs::read_dir(&ws)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sbatch")
        })
        .count();
    assert_eq!(scripts, 1);
    assert_eq!(h.kv.keys().filter(|k| k.starts_with("batch/")).count(), 1);
    std::fs::remove_dir_all(ws).unwrap();
}

#[test]
fn settings_bound_and_split_arrays() {
    let ws = workspace("settings");
    let mut h = Fake::new()
        .with_setting(SETTING_ARRAY_MAX_SIZE, "2")
        .with_setting(SETTING_ARRAY_MAX_RUNNING, " 3 ");
    h.answer("sbatch", ok("30\n"))
        .answer("sbatch", ok("31\n"))
        .answer("sbatch", ok("32\n"));
    let specs: Vec<JobSpec> = (0..5).map(|i| spec(&ws, &i.to_string())).collect();
    let r = submit_many(&mut h, &specs);
    assert_eq!(ids(&r), ["30_0", "30_1", "31_0", "31_1", "32"]);
    assert_eq!(h.calls_to("sbatch")[0].args[1], "--array=0-1%3");
    for bad in ["0", "-1", "x", "4000001"] {
        let mut h = Fake::new().with_setting(SETTING_ARRAY_MAX_RUNNING, bad);
        let r = submit_many(&mut h, &specs);
        assert!(
            r.iter().all(|r| matches!(r, Err(BackendError::InvalidRequest(m)) if m.contains(SETTING_ARRAY_MAX_RUNNING))),
            "{bad}: {r:?}"
        );
        assert!(h.calls.is_empty());
    }
    let mut h = Fake::new();
    h.settings.clear();
    let r = submit_many(&mut h, &specs);
    assert!(r.iter().all(
        |r| matches!(r, Err(BackendError::InvalidRequest(m)) if m.contains("SLURM_PARTITION"))
    ));
    std::fs::remove_dir_all(ws).unwrap();
}

/// `find-job` for each key after a submit killed at each point, then the
/// retry's own records.
#[test]
fn find_job_after_a_kill_at_each_point() {
    let ws = workspace("kill");
    let specs = keyed(&ws, 3);

    // Killed before any record: not an array; the single-job search finds nothing.
    let mut h = Fake::new();
    h.answer("squeue", ok("")).answer("sacct", ok(""));
    assert_eq!(find_job(&mut h, "night-7/1", 0.0).unwrap(), None);

    // Killed after the key records, before the batch record: never submitted,
    // known without asking the scheduler.
    let mut h = Fake::new();
    h.kv_fail_after = Some(3);
    let r = submit_many(&mut h, &specs);
    assert!(
        r.iter()
            .all(|r| matches!(r, Err(BackendError::Unavailable(_)))),
        "{r:?}"
    );
    assert!(h.calls.is_empty());
    h.kv_fail_after = None;
    assert_eq!(find_job(&mut h, "night-7/1", 0.0).unwrap(), None);
    assert!(h.calls.is_empty());

    // Killed after the batch record, before sbatch answered (here: sbatch
    // timed out): the tag decides, in squeue or else in sacct.
    let mut h = Fake::new();
    h.answer(
        "sbatch",
        Err(hpc_plugin_sdk::host::process::ProcessError::TimedOut(
            "20000 ms".into(),
        )),
    );
    let r = submit_many(&mut h, &specs);
    assert!(
        r.iter()
            .all(|r| matches!(r, Err(BackendError::Unavailable(_)))),
        "{r:?}"
    );
    let tag =
        h.kv.keys()
            .find_map(|k| k.strip_prefix("batch/"))
            .unwrap()
            .to_owned();
    // Not made: neither lists the tag.
    h.answer("squeue", ok("3|hpc-host-key=night-7/9\n"))
        .answer("sacct", ok(""));
    assert_eq!(find_job(&mut h, "night-7/1", 0.0).unwrap(), None);
    // Made: squeue lists it folded; the id found is remembered for the others.
    h.answer("squeue", ok(&format!("40_[0-2]|hpc-host-batch={tag}\n")));
    assert_eq!(
        find_job(&mut h, "night-7/1", 0.0).unwrap().as_deref(),
        Some("40_1")
    );
    let n = h.calls.len();
    assert_eq!(
        find_job(&mut h, "night-7/2", 0.0).unwrap().as_deref(),
        Some("40_2")
    );
    assert_eq!(h.calls.len(), n, "the second key needs no query");
    assert!(h.kv.contains_key("array/40"));

    // Ended and gone from the controller: sacct's element rows.
    let mut h2 = Fake::new();
    h2.kv = h.kv.clone();
    h2.kv.retain(|k, _| !k.starts_with("array/"));
    let mut rec: ArrayRecord = hpc_plugin_sdk::record::decode(&h2.kv[&batch_key(&tag)]).unwrap();
    rec.array_id = None;
    h2.kv.insert(
        batch_key(&tag),
        hpc_plugin_sdk::record::encode(&rec).unwrap(),
    );
    h2.answer("squeue", ok("")).answer(
        "sacct",
        ok(&format!(
            "41_0|hpc-host-batch={tag}\n41_1|hpc-host-batch={tag}\n"
        )),
    );
    assert_eq!(
        find_job(&mut h2, "night-7/0", 0.0).unwrap().as_deref(),
        Some("41_0")
    );

    // A retry of one key as a single job clears its key record, so find-job
    // looks for that job by its key, not for the old array.
    let mut single = specs[1].clone();
    single.workspace_dir = Some(ws.to_str().unwrap().into());
    h.answer("sbatch", ok("50\n"));
    assert_eq!(crate::backend::submit(&mut h, &single).unwrap(), "50");
    assert!(!h.kv.contains_key(&key_key("night-7/1")));
    h.answer("squeue", ok("50|hpc-host-key=night-7/1\n"));
    assert_eq!(
        find_job(&mut h, "night-7/1", 0.0).unwrap().as_deref(),
        Some("50")
    );
    std::fs::remove_dir_all(ws).unwrap();
}
