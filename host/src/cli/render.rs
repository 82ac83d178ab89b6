//! The one place the CLI prints. stdout carries results only (text or JSON),
//! stderr progress, warnings and errors.
//!
//! Everything printed as text goes through [`escape`] (one line) or
//! [`escape_block`] (logs): job ids, states, reasons, error messages and logs
//! come from plugins and jobs, and a control character in them must not
//! reach a terminal (a job's `ESC ] 52` would write the clipboard). JSON is
//! exact: serde escapes what JSON must. The CLI answers in-process or through
//! the daemon with the same typed results, so both print the same bytes.

use super::args::Output;
use crate::runtime::bindings::{HpcJobInfo, JobLogs};
use crate::runtime::error::{ErrorKind, ExitStatus, HostError, kind_and_message};
use crate::runtime::host::PluginRow;
use crate::runtime::sanitize::{escape, escape_block};
use crate::submit::ledger::Submission;
use crate::submit::spec::{self, ErrorJson, JobInfoJson, SubmittedJson};
use std::io::Write;
use std::time::Duration;

/// A job's status as a command answers it: its info, or why it has none.
pub type Status = Result<HpcJobInfo, crate::runtime::bindings::BackendError>;

/// Where a command's output goes, and in which form.
pub struct Render {
    out: Output,
    stdout: Box<dyn Write>,
    stderr: Box<dyn Write>,
    /// Whether `wait` shows a progress line (stderr is a terminal).
    progress: bool,
}

impl Render {
    /// The process's stdout and stderr.
    pub fn stdio(out: Output) -> Render {
        Render {
            out,
            stdout: Box::new(std::io::stdout()),
            stderr: Box::new(std::io::stderr()),
            progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        }
    }

    /// Into any two writers (tests).
    pub fn to(out: Output, stdout: Box<dyn Write>, stderr: Box<dyn Write>) -> Render {
        Render {
            out,
            stdout,
            stderr,
            progress: false,
        }
    }

    pub fn output(&self) -> Output {
        self.out
    }

    pub fn shows_progress(&self) -> bool {
        self.progress
    }

    /// A line on stdout; a closed pipe (`| head`) is not an error.
    fn line(&mut self, text: &str) {
        let _ = writeln!(self.stdout, "{text}");
    }

    /// A line on stderr.
    fn note(&mut self, text: &str) {
        let _ = writeln!(self.stderr, "{text}");
    }

    /// `error: …` on stderr, escaped to one line.
    pub fn error_line(&mut self, message: &str) {
        self.note(&format!("error: {}", escape(message)));
    }

    /// A command that failed whole: its error (with the `hint:` lines the
    /// host adds below it; other controls escaped) and its exit status.
    pub fn error(&mut self, e: &HostError) -> ExitStatus {
        self.note(&format!("error: {}", escape_block(&e.report())));
        e.exit_status()
    }

    /// A value as JSON on stdout.
    pub fn json(&mut self, value: &impl serde::Serialize) {
        let text = serde_json::to_string(value).expect("answers serialize");
        self.line(&text);
    }

    /// Text the host wrote itself (tables, pretty JSON): printed as it is.
    pub fn text(&mut self, text: &str) {
        self.line(text);
    }

    /// A progress or status message on stderr (escaped).
    pub fn notice(&mut self, text: &str) {
        self.note(&escape(text));
    }

    /// One submitted job's id.
    pub fn submitted(&mut self, id: &str) -> ExitStatus {
        match self.out {
            Output::Text => self.line(&escape(id)),
            Output::Json => self.json(&serde_json::json!({ "job_id": id })),
        }
        ExitStatus::Success
    }

    /// A batch submit's answer: per spec, in order, its id on a line of its
    /// own (an empty line for a spec that has none, its error on stderr), or
    /// one JSON array; the exit status of the worst error.
    pub fn batch(&mut self, results: &[Result<String, HostError>]) -> ExitStatus {
        let mut worst = ExitStatus::Success;
        let mut json = Vec::with_capacity(results.len());
        for (i, r) in results.iter().enumerate() {
            match r {
                Ok(id) => {
                    if self.out == Output::Text {
                        self.line(&escape(id));
                    }
                    json.push(SubmittedJson {
                        job_id: Some(id.clone()),
                        error: None,
                    });
                }
                Err(e) => {
                    self.error_line(&format!("spec {i}: {}: {}", e.kind(), e.report_line()));
                    worst = worst.max(e.exit_status());
                    if self.out == Output::Text {
                        self.line("");
                    }
                    json.push(SubmittedJson {
                        job_id: None,
                        error: Some(ErrorJson::of(e)),
                    });
                }
            }
        }
        if self.out == Output::Json {
            self.json(&json);
        }
        worst
    }

    /// Statuses, one per id: a line each (text), or one object (one id) or a
    /// list (JSON); an id that has none gets its error on stderr.
    pub fn statuses(&mut self, ids: &[String], results: &[Status]) -> ExitStatus {
        let mut worst = ExitStatus::Success;
        let mut json = Vec::with_capacity(ids.len());
        for (id, r) in ids.iter().zip(results) {
            match r {
                Ok(info) => match self.out {
                    Output::Json => json.push(JobInfoJson::from(info)),
                    Output::Text => self.line(&escape(&text_line(info))),
                },
                Err(e) => {
                    let (kind, message) = kind_and_message(e);
                    self.error_line(&format!("{id}: {kind}: {message}"));
                    worst = worst.max(ExitStatus::of_backend_error(e));
                    json.push(JobInfoJson::failed(id, e));
                }
            }
        }
        if self.out == Output::Json {
            match json.as_slice() {
                [one] if ids.len() == 1 => self.json(one),
                all => self.json(&all),
            }
        }
        worst
    }

    /// `wait`'s progress line (only on a terminal).
    pub fn progress(&mut self, open: usize, total: usize, waited: Duration) {
        if self.progress {
            let _ = write!(
                self.stderr,
                "\r\x1b[Kwaiting: {open} of {total} jobs not finished ({:.0} s)",
                waited.as_secs_f64()
            );
            let _ = self.stderr.flush();
        }
    }

    /// Clear the progress line before the answer.
    pub fn end_progress(&mut self) {
        if self.progress {
            let _ = write!(self.stderr, "\r\x1b[K");
        }
    }

    /// `wait` ran out of time: the statuses, then why it exits 1.
    pub fn wait_timed_out(&mut self, ids: &[String], results: &[Status], waited: Duration) {
        self.statuses(ids, results);
        let open = super::jobs::open(results);
        self.error_line(&format!(
            "{open} of {} jobs still running after {:.0} s",
            ids.len(),
            waited.as_secs_f64()
        ));
    }

    /// One job cancelled (text says nothing: the exit status does).
    pub fn cancelled(&mut self, id: &str) {
        if self.out == Output::Json {
            self.json(&serde_json::json!({ "job_id": id, "cancelled": true }));
        }
    }

    /// A job's output on stdout and its error output on stderr (text), or
    /// both in one object (JSON).
    pub fn logs(&mut self, id: &str, logs: &JobLogs) -> ExitStatus {
        match self.out {
            Output::Text => {
                let _ = self.stdout.write_all(escape_block(&logs.stdout).as_bytes());
                let _ = self.stderr.write_all(escape_block(&logs.stderr).as_bytes());
            }
            Output::Json => self.json(
                &serde_json::json!({ "job_id": id, "stdout": logs.stdout, "stderr": logs.stderr }),
            ),
        }
        ExitStatus::Success
    }

    /// `find`'s answer: the id (exit 0), or why there is none (exit 3).
    pub fn submission(&mut self, key: &str, found: &Submission) -> ExitStatus {
        if self.out == Output::Json {
            self.json(&serde_json::json!({
                "idempotency_key": key, "state": found.state(), "job_id": found.job_id(),
            }));
        }
        let (kind, why) = match found {
            Submission::Made(id) => {
                if self.out == Output::Text {
                    self.line(&escape(id));
                }
                return ExitStatus::Success;
            }
            Submission::InProgress => (
                ErrorKind::Unavailable,
                format!(
                    "a submit with idempotency key `{key}` is still at work; ask again shortly"
                ),
            ),
            Submission::NeverMade => (
                ErrorKind::NotFound,
                format!("no job was made with idempotency key `{key}`"),
            ),
        };
        self.error_line(&format!("{kind}: {why}"));
        kind.exit_status()
    }

    /// `plugins list`: a line per plugin (`*` marks the backend), or a list.
    pub fn plugins(&mut self, rows: &[PluginRow]) -> ExitStatus {
        match self.out {
            Output::Json => self.json(&rows),
            Output::Text => {
                for r in rows {
                    let line = format!(
                        "{}{:<16} {:<10} sha256:{}  {}",
                        if r.selected { "* " } else { "  " },
                        r.name,
                        r.contract,
                        r.sha256.get(..12).unwrap_or(""),
                        r.source,
                    );
                    self.line(&escape(&line));
                }
            }
        }
        ExitStatus::Success
    }
}

/// A status as one line of text: id, status, then what is known.
fn text_line(i: &HpcJobInfo) -> String {
    let mut line = format!("{}  {}", i.job_id, spec::status_name(i.status));
    let mut field = |name: &str, v: Option<String>| {
        if let Some(v) = v {
            line.push_str(&format!("  {name}={v}"));
        }
    };
    field("exit", i.exit_code.map(|c| c.to_string()));
    field("wall", i.wall_time_seconds.map(|s| format!("{s:.1}s")));
    field("cpu", i.cpu_hours.map(|h| format!("{h:.6}h")));
    field("mem", i.peak_memory_gb.map(|g| format!("{g:.3}GB")));
    field("state", i.native_state.clone());
    if let Some(r) = &i.reason {
        line.push_str(&format!("  ({r})"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// A writer the test can read afterwards.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    fn render(out: Output) -> (Render, Buf, Buf) {
        let (o, e) = (Buf::default(), Buf::default());
        (
            Render::to(out, Box::new(o.clone()), Box::new(e.clone())),
            o,
            e,
        )
    }

    const OSC52: &str = "\x1b]52;c;aGk=\x07";

    #[test]
    fn text_never_carries_a_control_character_and_json_is_exact() {
        let info = HpcJobInfo {
            job_id: format!("j{OSC52}"),
            status: crate::runtime::bindings::JobStatus::Failed,
            exit_code: Some(1),
            wall_time_seconds: None,
            cpu_hours: None,
            peak_memory_gb: None,
            native_state: Some(format!("X{OSC52}")),
            reason: Some("line\nforged".into()),
        };
        let logs = JobLogs {
            stdout: format!("out{OSC52}\n"),
            stderr: format!("err{OSC52}\n"),
        };
        let err = HostError::Input(format!("bad {OSC52}"));
        let ids = vec![info.job_id.clone(), "gone".to_owned()];
        let results = vec![
            Ok(info.clone()),
            Err(crate::runtime::bindings::BackendError::NotFound(format!(
                "no {OSC52}"
            ))),
        ];

        let (mut r, o, e) = render(Output::Text);
        r.statuses(&ids, &results);
        r.logs("j", &logs);
        r.error(&err);
        r.batch(&[Ok(info.job_id.clone()), Err(err.duplicate())]);
        let (out, errs) = (o.text(), e.text());
        for text in [&out, &errs] {
            assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        }
        assert!(out.contains("\\x1b]52"), "{out}");
        assert!(
            !out.contains("line\nforged"),
            "a reason cannot start a line: {out}"
        );

        let (mut r, o, _) = render(Output::Json);
        r.statuses(&ids, &results);
        let v: serde_json::Value = serde_json::from_str(o.text().trim()).unwrap();
        assert_eq!(v[0]["job_id"], info.job_id, "JSON keeps the exact bytes");
        assert_eq!(v[1]["error"]["kind"], "not-found");
    }

    #[test]
    fn a_batch_exits_with_its_worst_error_and_keeps_the_order() {
        let (mut r, o, e) = render(Output::Text);
        let status = r.batch(&[
            Ok("1".into()),
            Err(HostError::Input("bad spec".into())),
            Ok("3".into()),
        ]);
        assert_eq!(status, ExitStatus::Usage);
        assert_eq!(o.text(), "1\n\n3\n");
        assert_eq!(e.text(), "error: spec 1: invalid-request: bad spec\n");
    }
}
