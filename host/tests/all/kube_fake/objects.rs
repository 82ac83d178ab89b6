//! The fake's objects as the real API server shapes them: server-filled
//! fields and defaults, validation (422 Invalid), Status bodies, label
//! selectors, and times to the second.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// Now, RFC 3339 to the second, as the API server writes times.
pub fn now() -> String {
    let now = jiff::Timestamp::now();
    jiff::Timestamp::from_second(now.as_second())
        .unwrap()
        .to_string()
}

/// Random lowercase letters and digits, as in generated names.
pub fn random(n: usize) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    uuid::Uuid::new_v4().as_bytes()[..n]
        .iter()
        .map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char)
        .collect()
}

/// A `Status` failure, as the API server answers every error.
pub fn status(code: u16, reason: &str, message: &str, details: Value) -> Response {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code,
    });
    if !details.is_null() {
        body["details"] = details;
    }
    (StatusCode::from_u16(code).unwrap(), axum::Json(body)).into_response()
}

/// 404 for an object of `kind` (`jobs`, `pods`) in `group` ("" for core).
pub fn not_found(group: &str, kind: &str, name: &str) -> Response {
    let qualified = if group.is_empty() {
        kind.to_owned()
    } else {
        format!("{kind}.{group}")
    };
    status(
        404,
        "NotFound",
        &format!("{qualified} \"{name}\" not found"),
        json!({"name": name, "group": group, "kind": kind}),
    )
}

/// 422 Invalid with one cause per field error.
pub fn invalid(
    kind: &str,
    group: &str,
    name: &str,
    causes: &[(String, String, String)],
) -> Response {
    let list: Vec<String> = causes
        .iter()
        .map(|(field, _, m)| format!("{field}: {m}"))
        .collect();
    let message = format!("{kind}.{group} \"{name}\" is invalid: {}", list.join(", "));
    let causes: Vec<Value> = causes
        .iter()
        .map(|(field, reason, m)| json!({"reason": reason, "message": m, "field": field}))
        .collect();
    status(
        422,
        "Invalid",
        &message,
        json!({"name": name, "group": group, "kind": kind, "causes": causes}),
    )
}

/// An RFC 1123 label (`job-name` values, container names).
pub fn is_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= 63
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && b.iter().all(|c| alnum(c) || *c == b'-')
}

/// An RFC 1123 subdomain (object names).
pub fn is_subdomain(s: &str) -> bool {
    s.len() <= 253 && !s.is_empty() && s.split('.').all(is_label)
}

/// Check a Job as the API server's validation does (the parts this backend
/// touches); the field errors, if any.
pub fn validate_job(job: &Value) -> Vec<(String, String, String)> {
    let mut errors = Vec::new();
    let mut bad = |field: &str, reason: &str, message: String| {
        errors.push((field.into(), reason.into(), message))
    };
    let name = job["metadata"]["name"].as_str().unwrap_or("");
    if !is_subdomain(name) {
        bad(
            "metadata.name",
            "FieldValueInvalid",
            format!(
                "Invalid value: {name:?}: a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character"
            ),
        );
    } else if name.len() > 63 {
        // The Job controller labels its pods `job-name=<name>`: a label value.
        bad(
            "spec.template.labels",
            "FieldValueInvalid",
            format!("Invalid value: {name:?}: must be no more than 63 characters"),
        );
    }
    let pod = &job["spec"]["template"]["spec"];
    match pod["restartPolicy"].as_str() {
        Some("Never" | "OnFailure") => {}
        other => bad(
            "spec.template.spec.restartPolicy",
            "FieldValueNotSupported",
            format!(
                "Unsupported value: {:?}: supported values: \"OnFailure\", \"Never\"",
                other.unwrap_or("Always")
            ),
        ),
    }
    let containers = pod["containers"].as_array().cloned().unwrap_or_default();
    if containers.is_empty() {
        bad(
            "spec.template.spec.containers",
            "FieldValueRequired",
            "Required value".into(),
        );
    }
    for (i, c) in containers.iter().enumerate() {
        if !c["name"].as_str().is_some_and(is_label) {
            bad(
                &format!("spec.template.spec.containers[{i}].name"),
                "FieldValueInvalid",
                format!("Invalid value: {}", c["name"]),
            );
        }
        if c["image"].as_str().is_none_or(str::is_empty) {
            bad(
                &format!("spec.template.spec.containers[{i}].image"),
                "FieldValueRequired",
                "Required value".into(),
            );
        }
    }
    errors
}

/// Fill what the API server fills in a new Job: identity, selector, the
/// controller's template labels, and the defaults.
pub fn fill_job(job: &mut Value, ns: &str, uid: &str, rv: u64) {
    let name = job["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let meta = obj(job, "metadata");
    meta.insert("namespace".into(), json!(ns));
    meta.insert("uid".into(), json!(uid));
    meta.insert("resourceVersion".into(), json!(rv.to_string()));
    meta.insert("generation".into(), json!(1));
    meta.insert("creationTimestamp".into(), json!(now()));
    let spec = obj(job, "spec");
    for (key, default) in [
        ("backoffLimit", json!(6)),
        ("completions", json!(1)),
        ("parallelism", json!(1)),
        ("completionMode", json!("NonIndexed")),
        ("suspend", json!(false)),
        ("podReplacementPolicy", json!("TerminatingOrFailed")),
    ] {
        spec.entry(key).or_insert(default);
    }
    spec.insert(
        "selector".into(),
        json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let template = obj(job, "spec")
        .entry("template")
        .or_insert_with(|| json!({}));
    let labels = obj(
        obj(template, "metadata")
            .entry("labels")
            .or_insert_with(|| json!({})),
        "",
    );
    for (k, v) in controller_labels(&name, uid) {
        labels.insert(k.into(), json!(v));
    }
    let pod = obj(obj(job, "spec").get_mut("template").unwrap(), "spec");
    pod.entry("terminationGracePeriodSeconds")
        .or_insert(json!(30));
    pod.entry("dnsPolicy").or_insert(json!("ClusterFirst"));
    pod.entry("schedulerName")
        .or_insert(json!("default-scheduler"));
    pod.entry("securityContext").or_insert(json!({}));
    if let Some(Value::Array(cs)) = pod.get_mut("containers") {
        for c in cs {
            let image = c["image"].as_str().unwrap_or_default();
            let policy = if image.ends_with(":latest")
                || !image.rsplit('/').next().unwrap_or("").contains(':')
            {
                "Always"
            } else {
                "IfNotPresent"
            };
            let c = obj(c, "");
            c.entry("imagePullPolicy").or_insert(json!(policy));
            c.entry("terminationMessagePath")
                .or_insert(json!("/dev/termination-log"));
            c.entry("terminationMessagePolicy").or_insert(json!("File"));
            c.entry("resources").or_insert(json!({}));
        }
    }
    job["status"] = json!({});
}

/// The four labels the Job controller puts on its pods.
pub fn controller_labels(job: &str, uid: &str) -> [(&'static str, String); 4] {
    [
        ("batch.kubernetes.io/controller-uid", uid.into()),
        ("batch.kubernetes.io/job-name", job.into()),
        ("controller-uid", uid.into()),
        ("job-name", job.into()),
    ]
}

/// `v[key]` as an object, created if missing (`""`: `v` itself).
pub fn obj<'a>(v: &'a mut Value, key: &str) -> &'a mut Map<String, Value> {
    let target = if key.is_empty() {
        v
    } else {
        v.as_object_mut()
            .unwrap()
            .entry(key)
            .or_insert_with(|| json!({}))
    };
    if !target.is_object() {
        *target = json!({});
    }
    target.as_object_mut().unwrap()
}

/// A parsed label selector: `a=b`, `a==b`, `a!=b`, `a in (x,y)`, `a notin (x)`, `a`, `!a`, joined by commas.
pub fn selector_matches(selector: &str, labels: &Value) -> Result<bool, String> {
    let label = |k: &str| labels.get(k).and_then(Value::as_str);
    let mut terms = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in selector.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                terms.push(&selector[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    terms.push(&selector[start..]);
    for term in terms.iter().map(|t| t.trim()).filter(|t| !t.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or(format!("unable to parse requirement: {term:?}"))?;
            Ok(inner.split(',').map(|v| v.trim().to_owned()).collect())
        };
        let ok = if let Some((k, v)) = term.split_once("!=") {
            label(k.trim()) != Some(v.trim())
        } else if let Some((k, v)) = term.split_once("==").or_else(|| term.split_once('=')) {
            label(k.trim()) == Some(v.trim())
        } else if let Some((k, rest)) = term.split_once(" notin ") {
            !label(k.trim()).is_some_and(|l| set(rest).is_ok_and(|s| s.iter().any(|v| v == l)))
        } else if let Some((k, rest)) = term.split_once(" in ") {
            let values = set(rest)?;
            label(k.trim()).is_some_and(|l| values.iter().any(|v| v == l))
        } else if let Some(k) = term.strip_prefix('!') {
            label(k.trim()).is_none()
        } else if term
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        {
            label(term).is_some()
        } else {
            return Err(format!("unable to parse requirement: {term:?}"));
        };
        if !ok {
            return Ok(false);
        }
    }
    Ok(true)
}

#[test]
fn selectors_match_like_the_api_server() {
    let labels = json!({"job-name": "a", "app": "x"});
    for (sel, want) in [
        ("job-name=a", true),
        ("job-name==a", true),
        ("job-name!=a", false),
        ("job-name in (b, a)", true),
        ("job-name in (b)", false),
        ("job-name notin (b)", true),
        ("job-name=a,app=x", true),
        ("job-name=a,app=y", false),
        ("app", true),
        ("!app", false),
        ("", true),
    ] {
        assert_eq!(selector_matches(sel, &labels).unwrap(), want, "{sel}");
    }
    assert!(selector_matches("job-name in b", &labels).is_err());
}
