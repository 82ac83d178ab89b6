//! Quoting for the two languages an sbatch script is read in: bash (the body)
//! and sbatch's own `#SBATCH` line parser (the directives).
//!
//! ```
//! use hpc_plugin_slurm::quote::{bash_quote, directive_quote};
//!
//! assert_eq!(bash_quote("it's $(here)"), r"'it'\''s $(here)'");
//! assert_eq!(bash_quote("two\nlines"), r"$'two\x0alines'");
//! assert_eq!(directive_quote(r#"a "b" \c"#), r#""a \"b\" \\c""#);
//! ```

/// Whether `c` is an ASCII control character (C0 or DEL).
///
/// These are the characters that change how a line is read: newline ends a
/// line (and could start a new `#SBATCH` line or a new command), CR next to
/// LF makes sbatch refuse the script as "DOS line breaks", NUL cannot pass
/// through `exec` at all.
pub fn is_control(c: char) -> bool {
    c.is_ascii_control()
}

/// Quote `s` as one bash word that expands to exactly `s`, with no
/// expansion of any kind (`$`, backticks, globs, `~`, history).
///
/// Strings without control characters use single quotes, where bash takes
/// every byte literally and only `'` needs care (`'` -> `'\''`). Strings with
/// control characters use ANSI-C quoting (`$'...'`) with `\xHH` escapes, so
/// that the script itself never holds a raw newline or CR inside a value:
/// no value can then start a line of its own, which older sbatch versions
/// would scan for `#SBATCH` directives.
///
/// NUL cannot be represented in a bash word (nor passed to `exec`); callers
/// refuse it first with [`check_no_nul`]. Here it would be dropped by bash.
pub fn bash_quote(s: &str) -> String {
    if !s.chars().any(is_control) {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('\'');
        for c in s.chars() {
            if c == '\'' {
                out.push_str(r"'\''");
            } else {
                out.push(c);
            }
        }
        out.push('\'');
        return out;
    }
    let mut out = String::with_capacity(s.len() + 8);
    out.push_str("$'");
    for c in s.chars() {
        match c {
            '\\' => out.push_str(r"\\"),
            '\'' => out.push_str(r"\'"),
            // Always two hex digits: `\xHH` reads at most two, so a
            // following hex-digit character is never swallowed.
            c if is_control(c) => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Quote `s` as one argument on an `#SBATCH` line.
///
/// sbatch splits a directive line into arguments itself (not through a
/// shell): whitespace separates arguments, `"` or `'` group, `\` escapes the
/// next character, and an unquoted `#` starts a comment. Wrapping the value in
/// double quotes and escaping `\` and `"` therefore yields exactly `s`
/// (verified against sbatch 22.05 with spaces, `#`, quotes, backslashes and
/// UTF-8). Control characters cannot be quoted this way (a newline ends the
/// line); callers refuse them first with [`check_directive_value`].
pub fn directive_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '\\' || c == '"' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// Refuse a value bound for an `#SBATCH` line if it holds a control character.
///
/// `what` names the value in the message, e.g. ``"`extra` value for `account`"``.
pub fn check_directive_value(what: &str, value: &str) -> Result<(), String> {
    match value.chars().find(|&c| is_control(c)) {
        None => Ok(()),
        Some(c) => Err(format!(
            "{what} contains the control character {}, which cannot appear on an `#SBATCH` line",
            describe_control(c)
        )),
    }
}

/// A NUL in a value no program argument or environment value can carry.
pub use hpc_plugin_sdk::spec::check_no_nul;

/// A readable name for a control character in an error message.
fn describe_control(c: char) -> String {
    match c {
        '\n' => "`\\n` (newline)".to_string(),
        '\r' => "`\\r` (carriage return)".to_string(),
        '\0' => "`\\0` (NUL)".to_string(),
        '\t' => "`\\t` (tab)".to_string(),
        c => format!("`\\x{:02x}`", c as u32),
    }
}

/// Test support: how sbatch reads an `#SBATCH` line.
#[cfg(test)]
pub(crate) mod sbatch_model {
    /// A model of sbatch 22.05's `_get_argument` (src/sbatch/opt.c): split an
    /// `#SBATCH` line (after the magic word) into arguments.
    pub fn sbatch_split(line: &str) -> Vec<String> {
        let chars: Vec<char> = line.chars().collect();
        let (mut i, mut args) = (0, Vec::new());
        loop {
            while i < chars.len() && chars[i].is_ascii_whitespace() {
                i += 1;
            }
            if i == chars.len() {
                return args;
            }
            let (mut arg, mut quote, mut escape) = (String::new(), None, false);
            while i < chars.len() && (quote.is_some() || !chars[i].is_ascii_whitespace()) {
                let c = chars[i];
                i += 1;
                if escape {
                    escape = false;
                } else if c == '\\' {
                    escape = true;
                    continue;
                } else if let Some(q) = quote {
                    if c == q {
                        quote = None;
                        continue;
                    }
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                    continue;
                } else if c == '#' {
                    // An unquoted `#` ends the line.
                    i = chars.len();
                    break;
                }
                arg.push(c);
            }
            assert!(quote.is_none(), "sbatch: unmatched quote in {line:?}");
            // sbatch returns no argument, and stops, when nothing was copied.
            if arg.is_empty() {
                return args;
            }
            args.push(arg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sbatch_model::sbatch_split;

    #[test]
    fn single_quotes_for_plain_strings() {
        assert_eq!(bash_quote(""), "''");
        assert_eq!(bash_quote("a b"), "'a b'");
        assert_eq!(bash_quote("'"), r"''\'''");
        assert_eq!(bash_quote("$(rm -rf /); `x` ~ *"), "'$(rm -rf /); `x` ~ *'");
        assert_eq!(bash_quote("é ü 日本"), "'é ü 日本'");
    }

    #[test]
    fn ansi_c_quotes_for_control_characters() {
        assert_eq!(bash_quote("a\nb"), r"$'a\x0ab'");
        assert_eq!(bash_quote("\r\n"), r"$'\x0d\x0a'");
        assert_eq!(bash_quote("it's\t\\"), r"$'it\'s\x09\\'");
        // The escape is always two digits, so `\x0a` + `f` is not `\x0af`.
        assert_eq!(bash_quote("\nf"), r"$'\x0af'");
        assert!(!bash_quote("x\ny\r").contains(['\n', '\r']));
    }

    #[test]
    fn directive_quote_round_trips_through_sbatch_parser() {
        for s in [
            "plain",
            "a b",
            "x#y",
            r"back\slash",
            r#"q"u'o"te"#,
            "é ü",
            "",
            "%j",
        ] {
            let line = format!(" --comment={}", directive_quote(s));
            assert_eq!(sbatch_split(&line), vec![format!("--comment={s}")], "{s:?}");
        }
    }

    #[test]
    fn unquoted_hash_is_a_comment_in_the_model() {
        assert_eq!(sbatch_split(" --a=b #c d"), vec!["--a=b"]);
    }

    #[test]
    fn control_characters_are_refused_on_directive_lines() {
        assert!(check_directive_value("x", "a b\"#").is_ok());
        let err = check_directive_value("`extra` value for `account`", "a\nb").unwrap_err();
        assert_eq!(
            err,
            "`extra` value for `account` contains the control character `\\n` (newline), which cannot appear on an `#SBATCH` line"
        );
        assert!(check_directive_value("x", "a\rb").is_err());
        assert!(check_directive_value("x", "a\0b").is_err());
    }

    #[test]
    fn nul_is_refused_for_argv() {
        assert!(check_no_nul("x", "a\nb").is_ok());
        assert!(
            check_no_nul("argument 2", "a\0b")
                .unwrap_err()
                .contains("NUL")
        );
    }

    mod props {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(256))]
            #[test]
            fn directive_quote_round_trips(s in "[^\\x00-\\x1f\\x7f]{0,40}") {
                let line = format!(" --comment={}", directive_quote(&s));
                prop_assert_eq!(sbatch_split(&line), vec![format!("--comment={s}")]);
            }

            #[test]
            fn bash_quote_never_leaves_raw_line_breaks(s in "\\PC{0,20}|[\\x01-\\x1f'\\\\a]{0,20}") {
                let q = bash_quote(&s);
                prop_assert!(!q.contains('\n') && !q.contains('\r'));
            }
        }
    }
}
