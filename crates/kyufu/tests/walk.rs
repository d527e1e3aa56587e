//! The foundation's end-to-end walk through the public HTTP contract, against the real binary:
//! join, poll, submit a valid application for a registry child, reach `coupon_issued`; the same
//! child again is `duplicate`; a child not in the registry is `needs_review` with a reason; bad
//! input gets clear 4xx codes and leaves nothing behind.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_walk_through_the_public_contract() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = System::start(dir.path(), &["--households", "300"]);
    let base = sys.base.clone();
    let c = client();

    let registry = read_registry(&dir.path().join("registry.csv"));
    assert!(registry.len() > 300, "registry has {} residents", registry.len());
    let today = chrono::Utc::now().date_naive();
    let fams = families(&registry, today);
    assert!(fams.len() >= 3, "need registry children");

    // Join: a lone visitor is admitted at once and gets a pass.
    let joined: Value = c.post(format!("{base}/queue/join")).send().await.expect("join").json().await.expect("json");
    for field in ["ticket", "state", "position", "eta_seconds", "refresh_after_seconds"] {
        assert!(joined.get(field).is_some(), "join response lacks {field}: {joined}");
    }
    let pass = admit(&c, &base).await;

    // A valid application for a registry child reaches coupon_issued with a coupon code.
    let (g, child) = &fams[0];
    let app = application_json(g, child);
    let (code, accepted) = submit(&c, &base, &pass, form(&app, png_document())).await;
    assert_eq!(code, 202, "{accepted}");
    let id = accepted["application_id"].as_str().expect("id").to_owned();
    let token = accepted["status_token"].as_str().expect("token").to_owned();
    assert!(uuid::Uuid::parse_str(&id).is_ok());
    let settled = wait_settled(&c, &base, &id, &token, Duration::from_secs(30)).await;
    assert_eq!(settled["status"], "coupon_issued", "{settled}");
    let coupon = settled["coupon_code"].as_str().expect("coupon code");
    assert_eq!(coupon.len(), 21, "{coupon}");
    assert_eq!(settled["reasons"], json!([]));

    // The same child again is a duplicate pointing at the first.
    let (code, second) = submit(&c, &base, &pass, form(&app, png_document())).await;
    assert_eq!(code, 202);
    let dup = wait_settled(&c, &base, second["application_id"].as_str().expect("id"), second["status_token"].as_str().expect("t"), Duration::from_secs(30)).await;
    assert_eq!(dup["status"], "duplicate", "{dup}");
    assert_eq!(dup["duplicate_of"], json!(id));
    assert_eq!(dup["coupon_code"], Value::Null);

    // A child not in the registry goes to review with a reason.
    let mut stranger = application_json(&fams[1].0, &fams[1].1);
    stranger["child"]["given_name"] = json!("存在");
    stranger["child"]["given_name_kana"] = json!("ソンザイシナイ");
    let (code, body) = submit(&c, &base, &pass, form(&stranger, png_document())).await;
    assert_eq!(code, 202, "{body}");
    let review = wait_settled(&c, &base, body["application_id"].as_str().expect("id"), body["status_token"].as_str().expect("t"), Duration::from_secs(30)).await;
    assert_eq!(review["status"], "needs_review", "{review}");
    assert!(review["reasons"].as_array().expect("reasons").contains(&json!("child_not_in_registry")), "{review}");
    let explained = &review["explanations"][0];
    assert!(explained["ja"].as_str().is_some_and(|t| t.contains("担当者")), "{review}");
    assert!(explained["en"].as_str().is_some_and(|t| !t.is_empty()), "{review}");

    // Idempotency-Key: a retry returns the same id and token, and no second application.
    let (g2, c2) = &fams[2];
    let app2 = application_json(g2, c2);
    let mut ids = Vec::new();
    for _ in 0..2 {
        let resp = c
            .post(format!("{base}/api/v1/applications"))
            .header("X-Admission-Pass", &pass)
            .header("Idempotency-Key", "retry-key-0001")
            .multipart(form(&app2, png_document()))
            .send()
            .await
            .expect("submit");
        assert_eq!(resp.status().as_u16(), 202);
        let v: Value = resp.json().await.expect("json");
        ids.push((v["application_id"].clone(), v["status_token"].clone()));
    }
    assert_eq!(ids[0], ids[1]);
    let idem = wait_settled(&c, &base, ids[0].0.as_str().expect("id"), ids[0].1.as_str().expect("t"), Duration::from_secs(30)).await;
    assert_eq!(idem["status"], "coupon_issued", "a retry must not turn the child into a duplicate: {idem}");
    // Same key, different application: conflict.
    let resp = c
        .post(format!("{base}/api/v1/applications"))
        .header("X-Admission-Pass", &pass)
        .header("Idempotency-Key", "retry-key-0001")
        .multipart(form(&application_json(&fams[1].0, &fams[1].1), png_document()))
        .send()
        .await
        .expect("submit");
    assert_eq!(resp.status().as_u16(), 409);

    // Bad input: clear codes.
    let expect_error = |code: u16, body: &Value, want_status: u16, want_code: &str| {
        assert_eq!(code, want_status, "{body}");
        assert_eq!(body["code"], want_code, "{body}");
        assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    };
    let malformed = reqwest::multipart::Form::new()
        .part("application", reqwest::multipart::Part::text("{\"guardian\": "))
        .part("document", reqwest::multipart::Part::bytes(png_document()));
    let (code, body) = submit(&c, &base, &pass, malformed).await;
    expect_error(code, &body, 400, "invalid_json");

    let no_doc = reqwest::multipart::Form::new().part("application", reqwest::multipart::Part::text(app.to_string()));
    let (code, body) = submit(&c, &base, &pass, no_doc).await;
    expect_error(code, &body, 400, "missing_document");

    let mut huge = png_document();
    huge.resize(30 * 1024 * 1024, 0);
    let (code, body) = submit(&c, &base, &pass, form(&app, huge)).await;
    expect_error(code, &body, 413, "document_too_large");

    let (code, body) = submit(&c, &base, &pass, form(&app, b"GIF89a not allowed".to_vec())).await;
    expect_error(code, &body, 415, "unsupported_document_type");

    let mut invalid = app.clone();
    invalid["guardian"]["email"] = json!("nope");
    invalid["consent"] = json!(false);
    let (code, body) = submit(&c, &base, &pass, form(&invalid, png_document())).await;
    expect_error(code, &body, 422, "invalid_application");
    let fields: Vec<&str> = body["errors"].as_array().expect("errors").iter().filter_map(|e| e["field"].as_str()).collect();
    assert!(fields.contains(&"guardian.email") && fields.contains(&"consent"), "{body}");

    let (code, body) = submit(&c, &base, "not-a-pass", form(&app, png_document())).await;
    expect_error(code, &body, 403, "admission_invalid");
    let resp = c.post(format!("{base}/api/v1/applications")).multipart(form(&app, png_document())).send().await.expect("submit");
    assert_eq!(resp.status().as_u16(), 403);
    let body: Value = resp.json().await.expect("json");
    assert_eq!(body["code"], "admission_required");

    // Status lookups: wrong token and unknown id look the same.
    let (code, body) = lookup(&c, &base, &id, "AAAAAAAAAAAAAAAAAAAAAA").await;
    expect_error(code, &body, 404, "not_found");
    let (code, body) = lookup(&c, &base, &uuid::Uuid::new_v4().to_string(), &token).await;
    expect_error(code, &body, 404, "not_found");

    // Nothing from the refused submissions was recorded: the metrics count exactly the five
    // applications accepted above (one of them a replay).
    let metrics = c.get(format!("{}/metrics", sys.staff)).send().await.expect("metrics").text().await.expect("text");
    let accepted_new: f64 = metric_value(&metrics, "kyufu_intake_applications_accepted_total{replay=\"false\"}");
    assert_eq!(accepted_new, 4.0, "{metrics}");
    let decisions = metric_value(&metrics, "kyufu_pipeline_coupons_issued_total");
    assert_eq!(decisions, 2.0);
}

fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .find(|l| l.starts_with(series))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(f64::NAN)
}
