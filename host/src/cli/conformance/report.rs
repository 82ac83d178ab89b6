//! The kit's report: a table for people, JSON for programs, JUnit XML for a
//! site's CI (the `testsuite`/`testcase`/`failure`/`skipped` subset every CI
//! reads).

use super::Report;
use crate::runtime::sanitize::escape;

/// The table: one line per check, then the counts (plugin text escaped).
pub fn table(r: &Report) -> String {
    let mut out = format!("plugin `{}` ({})\n", escape(&r.plugin), r.contract);
    for c in &r.results {
        out.push_str(&format!(
            "  {:<4}  {:<16} {:>7.2} s  {}\n",
            c.outcome.word(),
            c.name,
            c.seconds,
            c.promise
        ));
        if let Some(m) = c.outcome.message() {
            out.push_str(&format!("        {}\n", escape(m)));
        }
    }
    out.push_str(&format!(
        "{} checks: {} passed, {} failed, {} skipped ({:.1} s)",
        r.results.len(),
        r.count("pass"),
        r.count("fail"),
        r.count("skip"),
        r.seconds
    ));
    out
}

/// The report as one JSON object.
pub fn to_json(r: &Report) -> serde_json::Value {
    let checks: Vec<serde_json::Value> = r
        .results
        .iter()
        .map(|c| {
            serde_json::json!({
                "name": c.name, "promise": c.promise, "outcome": c.outcome.word(),
                "message": c.outcome.message(), "seconds": c.seconds,
            })
        })
        .collect();
    serde_json::json!({
        "plugin": r.plugin, "contract": r.contract, "passed": r.passed(),
        "counts": {"pass": r.count("pass"), "fail": r.count("fail"), "skip": r.count("skip")},
        "seconds": r.seconds, "checks": checks,
    })
}

/// XML text: the five entities, and no control character XML 1.0 forbids.
fn xml(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&apos;"),
            '\t' | '\n' | '\r' => o.push(ch),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => o.push(c),
        }
    }
    o
}

/// The report as a JUnit XML document.
pub fn junit(r: &Report) -> String {
    let suite = format!("hpc-host plugins test {}", r.plugin);
    let mut o = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let (name, tests, failures, skipped) = (
        xml(&suite),
        r.results.len(),
        r.count("fail"),
        r.count("skip"),
    );
    let time = r.seconds;
    o.push_str(&format!(
        "<testsuites name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" skipped=\"{skipped}\" time=\"{time:.3}\">\n"
    ));
    o.push_str(&format!(
        "  <testsuite name=\"{name}\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time:.3}\">\n"
    ));
    o.push_str(&format!(
        "    <properties><property name=\"contract\" value=\"{}\"/></properties>\n",
        xml(&r.contract)
    ));
    for c in &r.results {
        o.push_str(&format!(
            "    <testcase classname=\"hpc-host.conformance.{}\" name=\"{}\" time=\"{:.3}\">",
            xml(&r.plugin),
            c.name,
            c.seconds
        ));
        match &c.outcome {
            super::Outcome::Pass => {}
            super::Outcome::Fail(m) => o.push_str(&format!(
                "\n      <failure message=\"{}\">{}</failure>\n    ",
                xml(c.promise),
                xml(m)
            )),
            super::Outcome::Skip(m) => {
                o.push_str(&format!("\n      <skipped message=\"{}\"/>\n    ", xml(m)))
            }
        }
        o.push_str("</testcase>\n");
    }
    o.push_str("  </testsuite>\n</testsuites>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::conformance::{CheckResult, Outcome};

    #[test]
    fn junit_escapes_and_counts() {
        let r = Report {
            plugin: "p<1>".into(),
            contract: "ccat:hpc@0.3.0".into(),
            results: vec![
                CheckResult {
                    name: "a",
                    promise: "x",
                    outcome: Outcome::Pass,
                    seconds: 0.5,
                },
                CheckResult {
                    name: "b",
                    promise: "y",
                    outcome: Outcome::Fail("got \"&\" \u{1b}".into()),
                    seconds: 1.0,
                },
                CheckResult {
                    name: "c",
                    promise: "z",
                    outcome: Outcome::Skip("no".into()),
                    seconds: 0.0,
                },
            ],
            seconds: 1.5,
        };
        let x = junit(&r);
        assert!(
            x.contains("tests=\"3\" failures=\"1\" errors=\"0\" skipped=\"1\""),
            "{x}"
        );
        assert!(
            x.contains("<failure message=\"y\">got &quot;&amp;&quot; \\u{1b}</failure>"),
            "{x}"
        );
        assert!(
            x.contains("classname=\"hpc-host.conformance.p&lt;1&gt;\""),
            "{x}"
        );
        assert!(x.contains("<skipped message=\"no\"/>"), "{x}");
        assert!(!r.passed());
        assert_eq!(to_json(&r)["counts"]["skip"], 1);
    }
}
