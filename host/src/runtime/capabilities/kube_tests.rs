//! The kube capability's pure parts: URLs, names, bodies, error mapping.

use super::*;

#[test]
fn api_errors_map_onto_the_contract() {
    let api = |code: u16| {
        let status =
            ::kube::core::Status::failure("jobs.batch \"x\" not found", "NotFound").with_code(code);
        convert(&::kube::Error::Api(status.boxed()))
    };
    assert!(matches!(api(404), KubeError::NotFound(m) if m == "jobs.batch \"x\" not found"));
    assert!(matches!(api(409), KubeError::Conflict(_)));
    assert!(matches!(api(400), KubeError::Invalid(_)) && matches!(api(422), KubeError::Invalid(_)));
    assert!(
        matches!(api(401), KubeError::Unauthorized(_))
            && matches!(api(403), KubeError::Unauthorized(_))
    );
    for code in [429, 500, 503, 504] {
        assert!(
            matches!(api(code), KubeError::Unavailable(m) if m.contains(&code.to_string())),
            "{code}"
        );
    }
    assert!(matches!(api(418), KubeError::Other(_)));
}

#[test]
fn collections_are_the_contract_urls() {
    let url = |api: &str, kind: &str| {
        collection(api, kind, "ccat")
            .unwrap()
            .list(&ListParams::default())
            .unwrap()
    };
    assert_eq!(
        url("batch/v1", "Job").uri().path(),
        "/apis/batch/v1/namespaces/ccat/jobs"
    );
    assert_eq!(
        url("v1", "Pod").uri().path(),
        "/api/v1/namespaces/ccat/pods"
    );
    for (api, kind) in [
        ("../v1", "Job"),
        ("batch/v1/x", "Job"),
        ("", "Job"),
        ("v1", "Po/d"),
        ("v1", ""),
    ] {
        assert!(collection(api, kind, "ccat").is_err(), "{api} {kind}");
    }
}

#[test]
fn names_in_paths_are_kubernetes_names() {
    for ok in ["a", "job-1", "a.b-c", &"x".repeat(253)] {
        assert!(check_name("name", ok).is_ok(), "{ok}");
    }
    for bad in [
        "",
        "..",
        ".",
        "a/b",
        "a?b",
        "a#b",
        "A",
        "-a",
        "a-",
        "a%2F",
        &"x".repeat(254),
    ] {
        assert!(check_name("name", bad).is_err(), "{bad}");
    }
}

#[test]
fn bodies_must_match_the_call() {
    let ok = r#"{"apiVersion":"batch/v1","kind":"Job","metadata":{"name":"a","namespace":"ccat"}}"#;
    assert!(check_body("batch/v1", "Job", "ccat", ok).is_ok());
    assert!(check_body("batch/v1", "Job", "ccat", r#"{"metadata":{"name":"a"}}"#).is_ok());
    for bad in [
        r#"{"kind":"Secret"}"#,
        r#"{"apiVersion":"v1","kind":"Job"}"#,
        r#"{"kind":"Job","metadata":{"namespace":"kube-system"}}"#,
        "[]",
        "not json",
    ] {
        assert!(
            matches!(
                check_body("batch/v1", "Job", "ccat", bad),
                Err(KubeError::Invalid(_))
            ),
            "{bad}"
        );
    }
}
