//! Job names: what the workflow manager asks for, made a valid, unique
//! Kubernetes name.
//!
//! A Job's name ends up as the value of its pods' `job-name` label, so it must
//! be an RFC 1123 label: at most 63 characters of `a-z`, `0-9` and `-`,
//! starting and ending with a letter or digit. Any `job_name` becomes one:
//! lowercased, runs of other characters turned into one `-`, cut to leave room
//! for a random suffix that keeps two jobs of the same name apart.
//!
//! ```
//! let name = hpc_plugin_kubernetes::name::job_name(Some("Reduce night 2026-11-24!"), "x7k2q9");
//! assert_eq!(name, "reduce-night-2026-11-24-x7k2q9");
//! ```

/// The longest Kubernetes label value, and so the longest Job name.
pub const MAX_NAME: usize = 63;
/// Characters of the random suffix (27^6, about 3.9e8, names per base).
pub const SUFFIX_LEN: usize = 6;
/// The base of a job without a usable name.
const DEFAULT_BASE: &str = "hpc-job";
/// The alphabet Kubernetes uses for generated names: no vowels, so no words,
/// and no characters that look alike.
const SUFFIX_ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The Job name for a requested `job_name` and a random `suffix`.
pub fn job_name(requested: Option<&str>, suffix: &str) -> String {
    let mut base = String::new();
    for c in requested.unwrap_or("").chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            base.push(c);
        } else if !base.is_empty() && !base.ends_with('-') {
            base.push('-');
        }
    }
    base.truncate(MAX_NAME - 1 - suffix.len());
    let base = base.trim_end_matches('-');
    let base = if base.is_empty() { DEFAULT_BASE } else { base };
    format!("{base}-{suffix}")
}

/// A random suffix from 16 random bytes (a UUID v4's, from the host's WASI random).
pub fn suffix() -> String {
    uuid::Uuid::new_v4()
        .as_bytes()
        .iter()
        .take(SUFFIX_LEN)
        .map(|b| SUFFIX_ALPHABET[*b as usize % SUFFIX_ALPHABET.len()] as char)
        .collect()
}

/// Characters of the suffix of a keyed job's name (27^12, about 1.5e17,
/// names per base): the same key always gives the same name.
pub const KEYED_SUFFIX_LEN: usize = 12;

/// The suffix of a keyed job's name, from the key's digest.
pub fn keyed_suffix(idempotency_key: &str) -> String {
    let digest = hpc_plugin_sdk::idempotency::digest(idempotency_key);
    digest
        .as_bytes()
        .chunks(2)
        .take(KEYED_SUFFIX_LEN)
        .map(|pair| {
            let byte =
                u8::from_str_radix(std::str::from_utf8(pair).unwrap_or("0"), 16).unwrap_or(0);
            SUFFIX_ALPHABET[byte as usize % SUFFIX_ALPHABET.len()] as char
        })
        .collect()
}

/// Whether `name` is an RFC 1123 label of at most 63 characters: the only
/// ids this backend hands out, and the only text it puts into a URL path or a
/// label selector.
pub fn is_valid(name: &str) -> bool {
    let b = name.as_bytes();
    let edge = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= MAX_NAME
        && edge(b[0])
        && edge(b[b.len() - 1])
        && b.iter().all(|&c| edge(c) || c == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_keep_what_they_can() {
        let cases = [
            (Some("reduce"), "reduce-abcdef"),
            (Some("Reduce_Night.2026"), "reduce-night-2026-abcdef"),
            (
                Some("../../etc/passwd; rm -rf / `id`"),
                "etc-passwd-rm-rf-id-abcdef",
            ),
            (Some("--a--b--"), "a-b-abcdef"),
            (Some("Ünïcödé Ω 名前"), "n-c-d-abcdef"),
            (Some("---"), "hpc-job-abcdef"),
            (Some(""), "hpc-job-abcdef"),
            (None, "hpc-job-abcdef"),
            (Some("a\nb\0c"), "a-b-c-abcdef"),
        ];
        for (requested, want) in cases {
            let got = job_name(requested, "abcdef");
            assert_eq!(got, want, "{requested:?}");
            assert!(is_valid(&got), "{got}");
        }
    }

    #[test]
    fn long_names_are_cut_to_63_without_a_trailing_dash() {
        let long = "a".repeat(300);
        let got = job_name(Some(&long), "abcdef");
        assert_eq!(got.len(), MAX_NAME);
        assert!(is_valid(&got));
        // A cut that lands on a dash drops it.
        let dashed = format!("{}-{}", "b".repeat(55), "c".repeat(20));
        let got = job_name(Some(&dashed), "abcdef");
        assert_eq!(got, format!("{}-abcdef", "b".repeat(55)));
        assert!(is_valid(&got));
    }

    #[test]
    fn validity() {
        for ok in ["a", "a-1", "0abc", &"x".repeat(63)] {
            assert!(is_valid(ok), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "A",
            "a_b",
            "a.b",
            "a/b",
            "a b",
            "../x",
            &"x".repeat(64),
        ] {
            assert!(!is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn suffixes_differ_and_fit() {
        let (a, b) = (suffix(), suffix());
        assert_ne!(a, b);
        assert_eq!(a.len(), SUFFIX_LEN);
        assert!(is_valid(&a));
    }
}
