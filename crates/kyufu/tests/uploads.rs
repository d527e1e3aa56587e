//! The `--clamd` flag end to end: the real binary (all-in-one) with a real clamd holding a local
//! test database. A file the scanner flags is refused through the public API, a clean one is
//! accepted, and while clamd is down uploads get 503 `scanner_unavailable` and `/readyz` names
//! `virus_scanner`.

mod common;

use std::time::Duration;

use common::*;
use kyufu_testservers::clamd::{ClamdServer, EICAR};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_in_one_scans_uploads_with_clamd_and_fails_closed() {
    let mut clamd = ClamdServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let address = clamd.address();
    let sys = System::start(dir.path(), &["--households", "50", "--clamd", &address]);
    let c = client();
    let registry = read_registry(&dir.path().join("registry.csv"));
    let fams = families(&registry, chrono::Local::now().date_naive());
    let pass = admit(&c, &sys.base).await;

    let mut infected = b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog >>\nendobj\n% ".to_vec();
    infected.extend_from_slice(EICAR);
    infected.extend_from_slice(b"\n%%EOF\n");
    let (code, body) = submit(&c, &sys.base, &pass, form(&application_json(&fams[0].0, &fams[0].1), infected)).await;
    assert_eq!((code, body["code"].as_str().unwrap_or_default()), (422, "document_infected"), "{body}");

    let (code, body) = submit(&c, &sys.base, &pass, form(&application_json(&fams[1].0, &fams[1].1), png_document())).await;
    assert_eq!(code, 202, "a clean upload is accepted: {body}");

    clamd.kill();
    let (code, body) = submit(&c, &sys.base, &pass, form(&application_json(&fams[2].0, &fams[2].1), png_document())).await;
    assert_eq!((code, body["code"].as_str().unwrap_or_default()), (503, "scanner_unavailable"), "{body}");

    // The readiness probe runs every 5 s: wait (bounded) for it to see clamd gone.
    let mut readyz = String::new();
    for _ in 0..30 {
        let resp = c.get(format!("{}/readyz", sys.base)).send().await.expect("readyz");
        if resp.status().as_u16() == 503 {
            readyz = resp.text().await.unwrap_or_default();
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(readyz.contains("virus_scanner"), "readyz names the scanner: {readyz:?}");
    let metrics = c.get(format!("{}/metrics", sys.staff)).send().await.expect("metrics").text().await.expect("text");
    for outcome in ["clean", "infected", "error"] {
        let line = format!("kyufu_intake_documents_scanned_total{{outcome=\"{outcome}\"}} 1");
        assert!(metrics.contains(&line), "{line} in /metrics");
    }
}
