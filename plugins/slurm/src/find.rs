//! Idempotency keys in SLURM: a keyed job carries `hpc-host-key=<key>` at
//! the end of its comment (`--comment`, after any comment of the spec's own,
//! which keeps its place), and `find-job` looks for it, first in the controller's memory
//! (`squeue --me --states=all`: pending, running and recently ended jobs),
//! then in the accounting database (`sacct`, jobs since the submit began).
//!
//! `sacct` sees comments only where slurmdbd stores them
//! (`AccountingStoreFlags=job_comment` in slurm.conf); without it a job that
//! ended more than `MinJobAge` (300 s by default) before the lookup is not
//! found. The host looks a key up only after its submitter died, so that
//! window is rarely reached.
//!
//! An array element's key is not in its comment (a thousand keys would not
//! fit one): the array's comment ends with `hpc-host-batch=<tag>` instead,
//! and the plugin's store maps each key to its batch tag and task index
//! ([`crate::batch`]). [`array_in`] finds the array by its tag the same
//! two ways.

use hpc_plugin_sdk::ResourceRequirements;

/// The prefix of the comment of a keyed job.
pub const TAG: &str = "hpc-host-key=";

/// The prefix of the comment of an array submitted by `submit-many`.
pub const BATCH_TAG: &str = "hpc-host-batch=";

/// How much earlier than the submit's start the accounting query looks
/// (clock skew between this machine and the controller).
pub const SLACK_SECONDS: u64 = 300;

/// The comment tag of `key`.
pub fn tag(key: &str) -> String {
    format!("{TAG}{key}")
}

/// The comment tag of batch `batch`.
pub fn batch_tag(batch: &str) -> String {
    format!("{BATCH_TAG}{batch}")
}

/// `requirements` with the key's tag at the end of the comment.
pub fn with_key(requirements: &ResourceRequirements, key: &str) -> ResourceRequirements {
    with_tag(requirements, &tag(key))
}

/// `requirements` with `tag` (one word) at the end of the comment.
pub fn with_tag(requirements: &ResourceRequirements, tag: &str) -> ResourceRequirements {
    let mut r = requirements.clone();
    match r.extra.iter_mut().find(|(name, _)| name == "comment") {
        Some((_, comment)) => *comment = format!("{comment} {tag}"),
        None => r.extra.push(("comment".into(), tag.to_string())),
    }
    r
}

/// Whether a job's comment carries `key` (a key has no spaces, so the tag is
/// the comment's last word).
pub fn carries(comment: &str, key: &str) -> bool {
    ends_with_word(comment, &tag(key))
}

/// Whether `tag` is `comment`'s last word.
fn ends_with_word(comment: &str, tag: &str) -> bool {
    comment == tag
        || comment
            .strip_suffix(tag)
            .is_some_and(|rest| rest.ends_with(' '))
}

/// `squeue` arguments: every job of this user the controller holds, with its comment.
pub fn squeue_args() -> Vec<String> {
    ["--me", "-h", "-t", "all", "-o", "%i|%k"]
        .map(String::from)
        .to_vec()
}

/// `sacct` arguments: this user's jobs (allocations only) that started to
/// exist in the last `seconds`, with their comments.
pub fn sacct_args(seconds: u64) -> Vec<String> {
    vec![
        "-X".into(),
        "-P".into(),
        "-n".into(),
        format!("--starttime=now-{seconds}"),
        "--endtime=now".into(),
        "-o".into(),
        "JobID,Comment".into(),
    ]
}

/// The first job id in `id|comment` lines whose comment carries `key`.
pub fn find_in(output: &str, key: &str) -> Option<String> {
    output.lines().find_map(|line| {
        let (id, comment) = line.split_once('|')?;
        carries(comment.trim_end(), key).then(|| id.trim().to_owned())
    })
}

/// The array id in `id|comment` lines whose comment carries batch `batch`'s
/// tag: the part of the id before `_` (`12_3`, or `12_[4-9]` for pending
/// elements folded into one line).
pub fn array_in(output: &str, batch: &str) -> Option<String> {
    let tag = batch_tag(batch);
    output.lines().find_map(|line| {
        let (id, comment) = line.split_once('|')?;
        let (array, _) = id.trim().split_once('_')?;
        (ends_with_word(comment.trim_end(), &tag) && crate::command::is_plain_job_id(array))
            .then(|| array.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rr(extra: &[(&str, &str)]) -> ResourceRequirements {
        ResourceRequirements {
            extra: extra
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect(),
            ..hpc_plugin_sdk::fake::spec(&["true"]).resource_requirements
        }
    }

    #[test]
    fn the_key_ends_the_comment() {
        assert_eq!(
            with_key(&rr(&[]), "k1").extra,
            [("comment".into(), "hpc-host-key=k1".into())]
        );
        assert_eq!(
            with_key(&rr(&[("comment", "night 42"), ("account", "a")]), "k1").extra,
            [
                ("comment".into(), "night 42 hpc-host-key=k1".into()),
                ("account".into(), "a".into())
            ]
        );
    }

    #[test]
    fn a_key_is_found_only_whole() {
        let out = "10|hpc-host-key=k10\n11|night hpc-host-key=k1\n12|\n13|hpc-host-key=k\n";
        assert_eq!(find_in(out, "k1").as_deref(), Some("11"));
        assert_eq!(find_in(out, "k10").as_deref(), Some("10"));
        assert_eq!(find_in(out, "k").as_deref(), Some("13"));
        assert_eq!(find_in(out, "k2"), None);
        assert_eq!(find_in("", "k1"), None);
        // The tag must be the last word, whole.
        assert_eq!(find_in("14|hpc-host-key=k1 later\n", "k1"), None);
        assert_eq!(find_in("15|xhpc-host-key=k1\n", "k1"), None);
    }

    #[test]
    fn an_array_is_found_by_its_batch_tag() {
        let out = "9|hpc-host-key=b1\n10_[3-9%2]|night hpc-host-batch=b1\n10_1|night hpc-host-batch=b1\n11_0|hpc-host-batch=b10\n";
        assert_eq!(array_in(out, "b1").as_deref(), Some("10"));
        assert_eq!(array_in(out, "b10").as_deref(), Some("11"));
        assert_eq!(array_in(out, "b"), None);
        // A plain job with the tag is not an array.
        assert_eq!(array_in("12|hpc-host-batch=b2\n", "b2"), None);
        assert_eq!(
            with_tag(&rr(&[("comment", "c")]), &batch_tag("b")).extra,
            [("comment".into(), "c hpc-host-batch=b".into())]
        );
    }
}
