//! 100,000 generated malformed submissions against a live intake: every one is answered with a
//! 4xx and a JSON error code, nothing panics (every request gets an answer), and no record, no
//! document and no bus message is left behind.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use kyufu_admission::{Keyring, PassClaims, Purpose};
use kyufu_domain::identity::IdentitySecret;
use kyufu_domain::Program;
use kyufu_embedded::EmbeddedStore;
use kyufu_intake::{IntakeConfig, StatusTokens};
use rand::{Rng, SeedableRng};

const TOTAL: u64 = 100_000;
const CONCURRENCY: usize = 16;

/// One malformed request: (content type, body, pass?).
fn malformed(rng: &mut rand::rngs::StdRng, pass: &str) -> (String, Vec<u8>, Option<String>) {
    let boundary = "XyZzY";
    let mp = |parts: &[(&str, &[u8])]| {
        let mut b = Vec::new();
        for (name, content) in parts {
            b.extend_from_slice(format!("--{boundary}\r\nContent-Disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes());
            b.extend_from_slice(content);
            b.extend_from_slice(b"\r\n");
        }
        b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
        b
    };
    let ct = format!("multipart/form-data; boundary={boundary}");
    let random_bytes = |rng: &mut rand::rngs::StdRng, n: usize| (0..n).map(|_| rng.gen::<u8>()).collect::<Vec<u8>>();
    let good_doc: &[u8] = b"%PDF-1.4 fake";
    let valid_json: &[u8] = r#"{"guardian":{"family_name":"A","given_name":"B","family_name_kana":"ア","given_name_kana":"イ","birth_date":"1990-01-01","email":"a@b.jp","phone":"0312345678","postal_code":"9300001"},"child":{"family_name":"A","given_name":"C","family_name_kana":"ア","given_name_kana":"ウ","birth_date":"2019-01-01"},"consent":true}"#.as_bytes();
    let p = Some(pass.to_owned());
    match rng.gen_range(0..14) {
        0 => {
            let n = rng.gen_range(0..2048);
            (ct, random_bytes(rng, n), p)
        }
        1 => ("application/json".into(), valid_json.to_vec(), p),
        2 => (ct, mp(&[("application", &random_bytes(rng, 300)), ("document", good_doc)]), p),
        3 => {
            let depth = rng.gen_range(100..5000);
            let bomb = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            (ct, mp(&[("application", bomb.as_bytes()), ("document", good_doc)]), p)
        }
        4 => (ct, mp(&[("application", valid_json)]), p),
        5 => (ct, mp(&[("document", good_doc)]), p),
        6 => (ct, mp(&[("application", valid_json), ("document", &random_bytes(rng, 500))]), p),
        7 => (ct, mp(&[("application", valid_json), ("document", b"")]), p),
        8 => (ct, mp(&[("application", valid_json), ("document", good_doc)]), None),
        9 => {
            let mut forged = pass.to_owned();
            forged.push('x');
            (ct, mp(&[("application", valid_json), ("document", good_doc)]), Some(forged))
        }
        10 => {
            let mut body = mp(&[("application", valid_json), ("document", good_doc)]);
            // Cut inside the parts, before the document's last byte (a cut in the closing boundary
            // leaves a complete, acceptable request).
            let cut = rng.gen_range(1..body.len().saturating_sub(30).max(2));
            body.truncate(cut);
            (ct, body, p)
        }
        11 => ("multipart/form-data".into(), mp(&[("application", valid_json), ("document", good_doc)]), p),
        12 => {
            let mut v: serde_json::Value = serde_json::from_slice(valid_json).unwrap_or_default();
            let fields = ["family_name", "given_name_kana", "birth_date", "email", "phone", "postal_code"];
            let f = fields[rng.gen_range(0..fields.len())];
            v["guardian"][f] = serde_json::Value::String(String::from_utf8_lossy(&random_bytes(rng, 20)).into_owned());
            v["consent"] = serde_json::Value::Bool(false);
            (ct, mp(&[("application", v.to_string().as_bytes()), ("document", good_doc)]), p)
        }
        _ => {
            let name = String::from_utf8_lossy(&random_bytes(rng, 40)).replace(['"', '\r', '\n'], "");
            (ct, mp(&[(name.as_str(), valid_json), ("document", good_doc)]), p)
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_malformed_requests_get_4xx_and_leave_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = EmbeddedStore::open(dir.path()).expect("open");
    let ports = store.ports();
    let keyring = Keyring::random();
    let config = IntakeConfig {
        program: Program::demo(Utc::now().date_naive()),
        pass_keyring: keyring.clone(),
        require_pass: true,
        submissions_per_pass: kyufu_intake::DEFAULT_SUBMISSIONS_PER_PASS,
        identity_secret: IdentitySecret::new(b"storm identity secret".to_vec()),
        status_tokens: StatusTokens::new(b"storm status secret".to_vec()),
        max_document_bytes: 64 * 1024,
        received_topic: "applications.received".to_owned(),
        scanner: None,
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}/api/v1/applications", listener.local_addr().expect("addr"));
    tokio::spawn(kyufu_intake::run(listener, config, ports.clone(), kyufu_telemetry::new_registry(), std::future::pending()));
    let now = u64::try_from(Utc::now().timestamp()).unwrap_or(0);
    let pass = keyring.sign(Purpose::Pass, &PassClaims::new("rice-demo", 1, now, 3600));

    let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).timeout(Duration::from_secs(30)).build().expect("client");
    let next = Arc::new(AtomicU64::new(0));
    let answered_4xx = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..CONCURRENCY {
        let (client, url, pass, next, answered) = (client.clone(), url.clone(), pass.clone(), next.clone(), answered_4xx.clone());
        workers.push(tokio::spawn(async move {
            let mut rng = rand::rngs::StdRng::seed_from_u64(w as u64);
            let mut failures = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < TOTAL {
                let (ct, body, p) = malformed(&mut rng, &pass);
                let mut req = client.post(&url).header("content-type", ct).body(body);
                if let Some(p) = p {
                    req = req.header("x-admission-pass", p);
                }
                match req.send().await {
                    Ok(resp) => {
                        let status = resp.status().as_u16();
                        let code = resp.json::<serde_json::Value>().await.ok().and_then(|v| v["code"].as_str().map(str::to_owned));
                        if (400..500).contains(&status) && code.is_some() {
                            answered.fetch_add(1, Ordering::Relaxed);
                        } else if failures.len() < 5 {
                            failures.push(format!("{status} {code:?}"));
                        }
                    }
                    Err(e) if failures.len() < 5 => failures.push(format!("no answer: {e}")),
                    Err(_) => {}
                }
            }
            failures
        }));
    }
    let mut failures = Vec::new();
    for w in workers {
        failures.extend(w.await.expect("worker"));
    }
    assert!(failures.is_empty(), "not every request got a 4xx with a code: {failures:?}");
    assert_eq!(answered_4xx.load(Ordering::Relaxed), TOTAL);
    let records: u64 = ports.status.count_by_status().await.expect("counts").iter().map(|(_, n)| n).sum();
    assert_eq!(records, 0, "no record from any malformed request");
    let mut consumer = ports.bus.subscribe("storm-check", &["applications.received"]).await.expect("sub");
    assert!(consumer.poll(Duration::from_millis(200)).await.expect("poll").is_none(), "nothing published");
}
