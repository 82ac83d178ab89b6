//! Bounding and escaping what a plugin says.
//!
//! Everything a plugin returns is untrusted text that reaches people (a
//! terminal), programs (the workflow manager parsing stdout) and the host's
//! log. Two rules hold for all of it:
//!
//! - **Bounded.** Every string is cut to a size that can be printed and
//!   stored: [`MAX_FIELD`] for fields and messages, [`MAX_ID`] for a job id
//!   (a longer one is refused, not cut: a cut id names another job), and the
//!   policy's `output_bytes` for job logs.
//! - **Escaped in text.** Text output shows control characters as escapes
//!   (`\x1b`, `\r`, `\n`, `\u{9b}`), so a plugin cannot move the cursor, set
//!   the terminal title, write the clipboard (OSC 52) or forge a line. JSON
//!   output is exact (serde escapes what JSON must) but bounded.

use crate::runtime::bindings::{BackendError, HpcJobInfo, JobLogs, PluginInfo};
use std::borrow::Cow;
use std::fmt::Write as _;

/// Longest text kept from a field of a plugin's answer (a state, a reason,
/// an error message, a description).
pub const MAX_FIELD: usize = 64 << 10;
/// Longest job id a plugin may return from `submit`. SLURM ids are a few
/// digits, Kubernetes names at most 253 bytes.
pub const MAX_ID: usize = 1024;
/// Appended to whatever was cut.
pub const CUT_MARK: &str = " [truncated by hpc-host]";

/// Cut `s` to at most `max` bytes (on a character boundary), marking the cut.
pub fn bound(s: &mut String, max: usize) {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push_str(CUT_MARK);
    }
}

/// Whether a character must be shown escaped in text output: C0 controls
/// (newline and tab included), DEL, C1 controls (U+0080–U+009F, which some
/// terminals read as CSI/OSC), and the bidirectional overrides that reorder
/// what a reader sees.
fn needs_escape(c: char, keep_newlines: bool) -> bool {
    match c {
        '\n' | '\t' if keep_newlines => false,
        '\u{0}'..='\u{1f}' | '\u{7f}'..='\u{9f}' => true,
        '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => true,
        _ => false,
    }
}

fn escape_with(s: &str, keep_newlines: bool) -> Cow<'_, str> {
    if !s.chars().any(|c| needs_escape(c, keep_newlines)) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if !needs_escape(c, keep_newlines) {
            out.push(c);
            continue;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x80 => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
        }
    }
    Cow::Owned(out)
}

/// One line of text output: every control character escaped, newlines too,
/// so a value can never start a line of its own.
pub fn escape(s: &str) -> Cow<'_, str> {
    escape_with(s, false)
}

/// A block of text output (job logs): line breaks and tabs kept, every other
/// control character escaped.
pub fn escape_block(s: &str) -> Cow<'_, str> {
    escape_with(s, true)
}

/// The message of a backend error, bounded.
pub fn backend_error(mut e: BackendError) -> BackendError {
    match &mut e {
        BackendError::InvalidRequest(m)
        | BackendError::NotFound(m)
        | BackendError::Denied(m)
        | BackendError::Unavailable(m)
        | BackendError::Internal(m) => bound(m, MAX_FIELD),
    }
    e
}

/// Every text field of a status answer, bounded.
pub fn job_info(mut info: HpcJobInfo) -> HpcJobInfo {
    for field in [
        Some(&mut info.job_id),
        info.native_state.as_mut(),
        info.reason.as_mut(),
    ]
    .into_iter()
    .flatten()
    {
        bound(field, MAX_FIELD);
    }
    info
}

/// A job id from `submit`: refused (the message says why) when too long or
/// holding control characters, since a cut or escaped id names another job.
pub fn job_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("answered an empty job id".into());
    }
    if id.len() > MAX_ID {
        return Err(format!(
            "answered a job id of {} bytes (at most {MAX_ID})",
            id.len()
        ));
    }
    if id.chars().any(|c| needs_escape(c, false)) {
        return Err(format!(
            "answered a job id with control characters: `{}`",
            escape(id)
        ));
    }
    Ok(())
}

/// A job's logs, each stream cut to `max` bytes (its tail: the end of a log
/// is what explains a failure).
pub fn logs(mut l: JobLogs, max: usize) -> JobLogs {
    for s in [&mut l.stdout, &mut l.stderr] {
        if s.len() > max {
            let mut start = s.len() - max;
            while !s.is_char_boundary(start) {
                start += 1;
            }
            *s = format!(
                "[cut by hpc-host: {start} bytes before this]\n{}",
                &s[start..]
            );
        }
    }
    l
}

/// `describe`'s answer, bounded: short fields, at most 256 settings names.
pub fn plugin_info(mut i: PluginInfo) -> PluginInfo {
    bound(&mut i.name, 256);
    bound(&mut i.version, 256);
    bound(&mut i.description, MAX_FIELD);
    i.settings.truncate(256);
    for s in &mut i.settings {
        bound(s, 256);
    }
    i
}

/// A name a shell could set: `[A-Za-z_][A-Za-z0-9_]*`.
pub fn is_env_name(k: &str) -> bool {
    !k.is_empty()
        && !k.starts_with(|c: char| c.is_ascii_digit())
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("plain"), "plain");
        assert_eq!(
            escape("a\x1b]52;c;eA==\x07b\r\ncompleted"),
            "a\\x1b]52;c;eA==\\x07b\\r\\ncompleted"
        );
        assert_eq!(escape("\u{9b}31m\u{202e}x"), "\\u{9b}31m\\u{202e}x");
        assert_eq!(escape_block("l1\n\tl2\x1b[2J"), "l1\n\tl2\\x1b[2J");
    }

    #[test]
    fn bounds_cut_on_a_char_boundary() {
        let mut s = "é".repeat(MAX_FIELD);
        bound(&mut s, MAX_FIELD);
        assert!(s.len() <= MAX_FIELD + CUT_MARK.len() && s.ends_with(CUT_MARK));
        let l = logs(
            JobLogs {
                stdout: "é".repeat(100),
                stderr: "ok".into(),
            },
            11,
        );
        assert!(l.stdout.ends_with("éééé") && l.stdout.starts_with("[cut by hpc-host"));
        assert_eq!(l.stderr, "ok");
        assert!(job_id(&"1".repeat(MAX_ID + 1)).is_err());
        assert!(job_id("12\r\n").unwrap_err().contains("\\r\\n"));
        assert!(job_id("4711").is_ok());
    }
}
