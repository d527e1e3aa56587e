//! Personal data never reaches the logs or the metrics: a run with real submissions (accepted,
//! refused, duplicate, held for review) is grepped for every name, kana, birth date, resident id,
//! email and phone number the applications carried.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_and_metrics_carry_no_personal_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Debug logging: the most a deployment could ever log.
    std::env::set_var("RUST_LOG", "debug,hyper=info,h2=info,reqwest=info");
    let sys = System::start(dir.path(), &["--households", "100"]);
    let base = sys.base.clone();
    let c = client();
    let registry = read_registry(&dir.path().join("registry.csv"));
    let fams = families(&registry, chrono::Local::now().date_naive());
    let pass = admit(&c, &base).await;
    let mut secrets: Vec<String> = Vec::new();
    for (i, (g, child)) in fams.iter().take(4).enumerate() {
        let mut app = application_json(g, child);
        app["guardian"]["resident_id"] = json!(g.resident_id);
        app["guardian"]["email"] = json!(format!("private.person{i}@example.jp"));
        app["guardian"]["phone"] = json!(format!("090-7777-{:04}", 1000 + i));
        if i == 3 {
            app["child"]["given_name_kana"] = json!("ヒミツノナマエ"); // held for review
        }
        secrets.extend([
            g.family_name.clone() + &g.given_name,
            g.given_name_kana.clone(),
            child.given_name.clone(),
            child.given_name_kana.clone(),
            g.resident_id.clone(),
            child.birth_date.to_string(),
            format!("private.person{i}@example.jp"),
            format!("0907777{:04}", 1000 + i),
            "ヒミツノナマエ".to_owned(),
        ]);
        let (code, body) = submit(&c, &base, &pass, form(&app, png_document())).await;
        assert_eq!(code, 202, "{body}");
        wait_settled(&c, &base, body["application_id"].as_str().expect("id"), body["status_token"].as_str().expect("t"), Duration::from_secs(30)).await;
        // The same again (duplicate) and a refused one.
        let _ = submit(&c, &base, &pass, form(&app, png_document())).await;
        let mut bad = app.clone();
        bad["guardian"]["email"] = json!("broken-email");
        let (code, _) = submit(&c, &base, &pass, form(&bad, png_document())).await;
        assert_eq!(code, 422);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let metrics = c.get(format!("{}/metrics", sys.staff)).send().await.expect("metrics").text().await.expect("text");
    drop(sys);
    let log = std::fs::read_to_string(dir.path().join("test-system.log")).expect("log");
    assert!(log.len() > 1000, "the run logged something: {} bytes", log.len());
    for s in &secrets {
        assert!(!log.contains(s.as_str()), "the log contains personal data ({} chars)", s.chars().count());
        assert!(!metrics.contains(s.as_str()), "the metrics contain personal data");
    }
}
