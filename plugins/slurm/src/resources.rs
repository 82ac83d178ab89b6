//! `resource-requirements` to `#SBATCH` directives.
//!
//! The seed's mapping, exactly: `{"cpu": 4, "memory_gb": 16, "time_hours": 2}`
//! becomes `--cpus-per-task=4 --mem=16G --time=02:00:00`.
//!
//! ```
//! use hpc_plugin_slurm::resources::{format_memory, format_time};
//!
//! assert_eq!(format_memory(16.0).unwrap(), "16G");
//! assert_eq!(format_memory(1.5).unwrap(), "1536M");
//! assert_eq!(format_time(0.5).unwrap(), "00:30:00");
//! assert_eq!(format_time(36.0).unwrap(), "1-12:00:00");
//! ```
//!
//! Rounding always goes up, never down, so a job gets at least what it asked
//! for: time to whole minutes (SLURM's granularity; a limit rounded down
//! could kill a job that would have finished), memory to whole MiB.
//!
//! `extra` is a guarded escape hatch (lessons-from-peers §6): only the keys in
//! [`EXTRA_ALLOWED`] pass; the directives this backend sets itself
//! ([`MANAGED`]) and anything else are refused as invalid-request, as is any
//! value with a control character (a newline must never reach an `#SBATCH`
//! line).

use hpc_plugin_sdk::ResourceRequirements;

use crate::quote::{check_directive_value, directive_quote};

/// The `extra` keys a request may set, as sbatch long options without `--`.
///
/// Each either only narrows where or how the job runs (`constraint`,
/// `exclude`, `nodelist`, `reservation`, `exclusive`), or labels it for
/// accounting and notification (`account`, `qos`, `wckey`, `comment`,
/// `mail-type`, `mail-user`), or orders it (`begin`, `dependency`), or asks
/// for site resources with no typed field (`gres`, `licenses`). None changes
/// what the script runs, where its output goes, or which cluster receives it
/// (`clusters` would hide the job from the plain `squeue`/`sacct` this backend
/// runs). `hold` is left out: nothing here could release the job.
pub const EXTRA_ALLOWED: &[&str] = &[
    "account",
    "begin",
    "comment",
    "constraint",
    "dependency",
    "exclude",
    "exclusive",
    "gres",
    "licenses",
    "mail-type",
    "mail-user",
    "nodelist",
    "qos",
    "reservation",
    "wckey",
];

/// Directives the backend sets from the spec or its settings, with the field
/// that controls each, for the error message when `extra` tries one.
pub const MANAGED: &[(&str, &str)] = &[
    ("partition", "the `SLURM_PARTITION` setting"),
    ("job-name", "`job-name`"),
    ("output", "the backend (logs go to the workspace)"),
    ("error", "the backend (logs go to the workspace)"),
    ("chdir", "`workspace-dir`"),
    ("cpus-per-task", "`resource-requirements.cpu`"),
    ("mem", "`resource-requirements.memory-gb`"),
    ("mem-per-cpu", "`resource-requirements.memory-gb`"),
    ("mem-per-gpu", "`resource-requirements.memory-gb`"),
    ("time", "`resource-requirements.time-hours`"),
    ("gpus", "`resource-requirements.gpus`"),
    ("nodes", "`resource-requirements.nodes`"),
    ("export", "`environment-variables`"),
    ("parsable", "the backend"),
    ("wrap", "`execution-command`"),
];

/// The most characters an `extra` value may have; enough for any real
/// constraint expression or node list, small enough to keep scripts readable.
pub const MAX_EXTRA_VALUE_CHARS: usize = 1024;

/// The directives (`--name=value`, without `#SBATCH `) for `req`, in a fixed
/// order: typed fields first, then `extra` in the order given.
pub fn directives(req: &ResourceRequirements) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    if let Some(cpu) = req.cpu {
        if cpu == 0 {
            return Err("`resource-requirements.cpu` must be at least 1".into());
        }
        out.push(format!("--cpus-per-task={cpu}"));
    }
    if let Some(gb) = req.memory_gb {
        out.push(format!("--mem={}", format_memory(gb)?));
    }
    if let Some(hours) = req.time_hours {
        out.push(format!("--time={}", format_time(hours)?));
    }
    // Zero GPUs is the same as not asking for any.
    if let Some(gpus) = req.gpus.filter(|&g| g > 0) {
        out.push(format!("--gpus={gpus}"));
    }
    if let Some(nodes) = req.nodes {
        if nodes == 0 {
            return Err("`resource-requirements.nodes` must be at least 1".into());
        }
        out.push(format!("--nodes={nodes}"));
    }
    let mut seen: Vec<String> = Vec::new();
    for (key, value) in &req.extra {
        let name = normalize_key(key);
        if seen.contains(&name) {
            return Err(format!("`extra` sets `{name}` twice"));
        }
        if let Some(directive) = extra_directive(&name, key, value)? {
            out.push(directive);
        }
        seen.push(name);
    }
    Ok(out)
}

/// `--mem` for `gb` (1 GB = 1024 MiB, as SLURM counts): whole GiB as `NG`,
/// anything else rounded up to whole MiB as `NM`. Never `--mem=0`, which
/// means "all the memory of the node" to SLURM.
pub fn format_memory(gb: f64) -> Result<String, String> {
    hpc_plugin_sdk::resources::memory_slurm(gb, "resource-requirements.memory-gb")
}

/// `--time` for `hours`: `HH:MM:SS`, or `D-HH:MM:SS` from one day on, rounded
/// up to whole minutes.
pub fn format_time(hours: f64) -> Result<String, String> {
    let seconds =
        hpc_plugin_sdk::resources::hours_to_seconds(hours, "resource-requirements.time-hours")?;
    let minutes = seconds.div_ceil(60).max(1);
    let (days, hh, mm) = (minutes / (24 * 60), (minutes / 60) % 24, minutes % 60);
    Ok(if days > 0 {
        format!("{days}-{hh:02}:{mm:02}:00")
    } else {
        format!("{hh:02}:{mm:02}:00")
    })
}

/// `Account`, `--account` and `mail_type` all name the same option.
fn normalize_key(key: &str) -> String {
    key.trim_start_matches('-')
        .to_ascii_lowercase()
        .replace('_', "-")
}

/// The directive for one `extra` entry, `None` when it asks for nothing
/// (`exclusive = false`).
fn extra_directive(name: &str, key: &str, value: &str) -> Result<Option<String>, String> {
    if let Some((_, field)) = MANAGED.iter().find(|(m, _)| *m == name) {
        return Err(format!(
            "`extra` may not set `{name}`: it is set by {field}"
        ));
    }
    if !EXTRA_ALLOWED.contains(&name) {
        return Err(format!(
            "`extra` key `{}` is not allowed\n\nhint: allowed keys are {}",
            key.escape_debug(),
            EXTRA_ALLOWED
                .iter()
                .map(|k| format!("`{k}`"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    check_directive_value(&format!("`extra` value for `{name}`"), value)?;
    if value.chars().count() > MAX_EXTRA_VALUE_CHARS {
        return Err(format!(
            "`extra` value for `{name}` is longer than {MAX_EXTRA_VALUE_CHARS} characters"
        ));
    }
    if name == "exclusive" {
        // A flag with an optional argument: only these spellings.
        return match value.to_ascii_lowercase().as_str() {
            "" | "true" | "yes" | "1" => Ok(Some("--exclusive".into())),
            "false" | "no" | "0" => Ok(None),
            v @ ("user" | "mcs") => Ok(Some(format!("--exclusive={v}"))),
            _ => Err(format!(
                "`extra` value for `exclusive` must be `true`, `false`, `user` or `mcs`, not `{}`",
                value.escape_debug()
            )),
        };
    }
    if value.trim().is_empty() {
        return Err(format!("`extra` value for `{name}` is empty"));
    }
    Ok(Some(format!("--{name}={}", directive_quote(value))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req() -> ResourceRequirements {
        hpc_plugin_sdk::fake::spec(&[]).resource_requirements
    }

    #[test]
    fn seed_mapping() {
        let r = ResourceRequirements {
            cpu: Some(4),
            memory_gb: Some(16.0),
            time_hours: Some(2.0),
            ..req()
        };
        assert_eq!(
            directives(&r).unwrap(),
            ["--cpus-per-task=4", "--mem=16G", "--time=02:00:00"]
        );
    }

    #[test]
    fn memory_rounds_up_to_mib() {
        assert_eq!(format_memory(1.5).unwrap(), "1536M");
        assert_eq!(format_memory(0.1).unwrap(), "103M");
        assert_eq!(format_memory(1e-9).unwrap(), "1M");
        assert_eq!(format_memory(1024.0).unwrap(), "1024G");
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e30] {
            assert!(format_memory(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_rounds_up_to_minutes() {
        assert_eq!(format_time(0.5).unwrap(), "00:30:00");
        assert_eq!(format_time(1.1).unwrap(), "01:06:00");
        assert_eq!(format_time(1.0 / 3600.0).unwrap(), "00:01:00");
        assert_eq!(format_time(1.0 / 60.0 + 1.0 / 3600.0).unwrap(), "00:02:00");
        assert_eq!(format_time(24.0).unwrap(), "1-00:00:00");
        assert_eq!(format_time(49.75).unwrap(), "2-01:45:00");
        for bad in [0.0, -2.0, f64::NAN, f64::INFINITY, 1e9] {
            assert!(format_time(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn optional_typed_fields() {
        let r = ResourceRequirements {
            gpus: Some(2),
            nodes: Some(3),
            ..req()
        };
        assert_eq!(directives(&r).unwrap(), ["--gpus=2", "--nodes=3"]);
        assert!(
            directives(&ResourceRequirements {
                gpus: Some(0),
                ..req()
            })
            .unwrap()
            .is_empty()
        );
        assert!(
            directives(&ResourceRequirements {
                nodes: Some(0),
                ..req()
            })
            .is_err()
        );
        assert!(
            directives(&ResourceRequirements {
                cpu: Some(0),
                ..req()
            })
            .is_err()
        );
    }

    fn extra(pairs: &[(&str, &str)]) -> Result<Vec<String>, String> {
        let extra = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        directives(&ResourceRequirements { extra, ..req() })
    }

    #[test]
    fn allowed_extra_is_quoted() {
        assert_eq!(
            extra(&[
                ("account", "proj-1"),
                ("--qos", "high"),
                ("Constraint", "a&b|[c*2]"),
                ("mail_type", "END,FAIL")
            ])
            .unwrap(),
            [
                r#"--account="proj-1""#,
                r#"--qos="high""#,
                r#"--constraint="a&b|[c*2]""#,
                r#"--mail-type="END,FAIL""#
            ]
        );
        assert_eq!(
            extra(&[("comment", r#"say "hi" # \o/"#)]).unwrap(),
            [r#"--comment="say \"hi\" # \\o/""#]
        );
    }

    #[test]
    fn exclusive_is_a_flag() {
        assert_eq!(extra(&[("exclusive", "")]).unwrap(), ["--exclusive"]);
        assert_eq!(extra(&[("exclusive", "true")]).unwrap(), ["--exclusive"]);
        assert_eq!(
            extra(&[("exclusive", "user")]).unwrap(),
            ["--exclusive=user"]
        );
        assert!(extra(&[("exclusive", "no")]).unwrap().is_empty());
        assert!(extra(&[("exclusive", "sometimes")]).is_err());
    }

    #[test]
    fn managed_unknown_and_unsafe_extra_are_refused() {
        let err = extra(&[("partition", "gpu")]).unwrap_err();
        assert_eq!(
            err,
            "`extra` may not set `partition`: it is set by the `SLURM_PARTITION` setting"
        );
        assert!(
            extra(&[("--mem", "1G")])
                .unwrap_err()
                .contains("`resource-requirements.memory-gb`")
        );
        assert!(extra(&[("output", "/etc/passwd")]).is_err());
        let err = extra(&[("clusters", "other")]).unwrap_err();
        assert!(
            err.starts_with("`extra` key `clusters` is not allowed"),
            "{err}"
        );
        assert!(extra(&[("hold", "")]).is_err());
        let err = extra(&[("account", "a\n#SBATCH --partition=x")]).unwrap_err();
        assert!(err.contains("`\\n` (newline)"), "{err}");
        assert!(extra(&[("qos", "a\rb")]).is_err());
        assert!(extra(&[("qos", "a\0b")]).is_err());
        assert!(extra(&[("qos", " ")]).is_err());
        assert!(extra(&[("qos", &"x".repeat(MAX_EXTRA_VALUE_CHARS + 1))]).is_err());
        assert_eq!(
            extra(&[("qos", "a"), ("QOS", "b")]).unwrap_err(),
            "`extra` sets `qos` twice"
        );
    }
}
