//! The citizen's pages in a real browser: headless Debian Chromium driven by playwright-core
//! (`e2e/walk.mjs`) against a real all-in-one with a slow door, so the visitor really waits.
//! Queue → admitted → the form for two siblings with uploads (a mistake shown next to its field
//! first) → check page → sent → the status page with the coupon; a case needing review; English;
//! an expectant mother applies in a second browser, her completion page survives a reload, and a
//! third browser finds her application with only the number and code from that page, and again
//! with only the link in her receipt email; the "lost your link?" page.
//!
//! Needs `node`, `chromium` and `e2e/node_modules` (all installed by `make deps`); fails loudly
//! without them. `KYUFU_SCREENSHOTS=docs/screenshots` keeps the phone-width screenshots.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::{json, Value};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn person(r: &Resident) -> Value {
    json!({
        "family_name": r.family_name, "given_name": r.given_name,
        "family_name_kana": r.family_name_kana, "given_name_kana": r.given_name_kana,
        "birth_date": r.birth_date.to_string(),
    })
}

/// The first expectant mother in the registry, as the form's guardian fields plus her due date.
fn expectant_mother(registry: &Path) -> Value {
    let mut rdr = csv::Reader::from_path(registry).expect("registry.csv readable");
    let headers = rdr.headers().expect("header row").clone();
    let rows: Vec<csv::StringRecord> = rdr.records().map(|r| r.expect("row")).collect();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name} missing"));
    let row = rows.iter().find(|r| !r[col("expecting")].is_empty() && r[col("postal_code")].starts_with('9')).expect("an expectant mother in the registry");
    let mut m = json!({"postal_code": row[col("postal_code")], "email": "mother@example.jp", "phone": "080-2222-3333"});
    for k in ["family_name", "given_name", "family_name_kana", "given_name_kana", "birth_date"] {
        m[k] = json!(row[col(k)]);
    }
    json!({ "guardian": m, "due": row[col("expecting")] })
}

/// The Chromium to drive, after checking node, Chromium and playwright-core are there.
fn browser_tools() -> String {
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is missing: run `make deps` (scripts/install-deps.sh)");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: run `make deps` (scripts/install-deps.sh)");
    assert!(
        repo().join("e2e/node_modules/playwright-core").exists(),
        "e2e/node_modules is missing: run `make deps` (npm ci in e2e/)"
    );
    chromium
}

/// Runs `e2e/<script>` with `input` on the blocking pool; its log, after asserting it passed.
async fn run_script(script: &'static str, input: &Path, chromium: &str, shots: Option<PathBuf>) -> String {
    let (input, chromium) = (input.to_owned(), chromium.to_owned());
    let out = tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("node");
        cmd.arg(repo().join("e2e").join(script)).arg(&input).env("CHROMIUM", &chromium);
        if let Some(shots) = shots {
            cmd.env("SHOTS", shots);
        }
        cmd.output().expect("run node")
    })
    .await
    .expect("join");
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{log}");
    assert!(out.status.success(), "{script} failed:\n{log}");
    log
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_applies_for_two_siblings_in_a_phone_browser() {
    let chromium = browser_tools();

    let dir = tempfile::tempdir().expect("tempdir");
    // A slow door (1 admission a second) and three people ahead, so the waiting room is seen.
    let sys = System::start(dir.path(), &["--households", "200", "--rate", "1", "--burst", "1"]);
    let c = client();

    // A household with two children.
    let registry = read_registry(&dir.path().join("registry.csv"));
    let fams = families(&registry, chrono::Local::now().date_naive());
    let mut by_guardian: BTreeMap<String, Vec<&(Resident, Resident)>> = BTreeMap::new();
    for f in &fams {
        by_guardian.entry(f.0.resident_id.clone()).or_default().push(f);
    }
    let siblings = by_guardian.values().find(|v| v.len() >= 2).expect("a household with two children");
    let guardian = &siblings[0].0;
    let mut g = person(guardian);
    g["postal_code"] = json!(guardian.postal_code);
    g["email"] = json!("parent@example.jp");
    g["phone"] = json!("090-1234-5678");

    // A case for a person, submitted through the API, for the status page.
    let other = fams.iter().find(|f| f.0.resident_id != guardian.resident_id).expect("another family");
    let mut stranger = application_json(&other.0, &other.1);
    stranger["child"]["given_name"] = json!("存在");
    stranger["child"]["given_name_kana"] = json!("ソンザイシナイ");
    let pass = admit(&c, &sys.base).await;
    let (code, body) = submit(&c, &sys.base, &pass, form(&stranger, png_document())).await;
    assert_eq!(code, 202, "{body}");
    let (id, token) = (body["application_id"].as_str().expect("id"), body["status_token"].as_str().expect("token"));
    let review = wait_settled(&c, &sys.base, id, token, Duration::from_secs(30)).await;
    assert_eq!(review["status"], "needs_review");

    // An expectant mother, as the registry has her (with her registered due date).
    let mother = expectant_mother(&dir.path().join("registry.csv"));

    let document = dir.path().join("id-card.png");
    std::fs::write(&document, card_png(320, 200)).expect("write document");
    let input = json!({
        "base": sys.base,
        "guardian": g,
        "children": [person(&siblings[0].1), person(&siblings[1].1)],
        "document": document,
        "review_link": format!("/status#id={id}&token={token}"),
        "mother": mother,
        "outbox": dir.path().join("outbox"),
    });
    let input_path = dir.path().join("walk.json");
    std::fs::write(&input_path, input.to_string()).expect("write input");
    let shots = std::env::var("KYUFU_SCREENSHOTS").map(|p| repo().join(p)).unwrap_or_else(|_| dir.path().join("shots"));
    std::fs::create_dir_all(&shots).expect("screenshot dir");

    // Five people just ahead: the browser's visitor waits a few seconds in the queue.
    for _ in 0..5 {
        let r = c.post(format!("{}/queue/join", sys.base)).send().await.expect("join");
        assert_eq!(r.status(), 200);
    }
    let log = run_script("walk.mjs", &input_path, &chromium, Some(shots)).await;
    assert!(log.contains("walk passed"));
    // Each browser's form spent its pass once (the parent's and the mother's); the API visitor
    // above never spent theirs.
    let public = c.get(format!("{}/metrics", sys.base)).send().await.expect("public metrics");
    assert_eq!(public.status().as_u16(), 404, "no metrics on the public port");
    let metrics = c.get(format!("{}/metrics", sys.staff)).send().await.expect("metrics").text().await.expect("text");
    assert!(metrics.lines().any(|l| l == "kyufu_gateway_passes_spent_total 2"), "{metrics}");
    assert!(metrics.lines().any(|l| l == "kyufu_intake_passes_spent_total 2"), "{metrics}");
}

/// The part named `name` of a multipart body.
fn multipart_part<'a>(body: &'a [u8], name: &str) -> &'a [u8] {
    let delimiter_end = body.windows(2).position(|w| w == b"\r\n").expect("first boundary");
    let mut delimiter = b"\r\n".to_vec();
    delimiter.extend_from_slice(&body[..delimiter_end]);
    let header = format!("name=\"{name}\"");
    let at = body.windows(header.len()).position(|w| w == header.as_bytes()).expect("the part");
    let start = at + body[at..].windows(4).position(|w| w == b"\r\n\r\n").expect("part headers end") + 4;
    let len = body[start..].windows(delimiter.len()).position(|w| w == delimiter.as_slice()).expect("part end");
    &body[start..start + len]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_phone_photo_leaves_the_browser_small_upright_and_without_metadata() {
    use kyufu_domain::imagefile::metadata_kinds;
    use loadtest::photos::{camera_jpeg, looks_upright, CAMERA_12MP};
    let chromium = browser_tools();
    let dir = tempfile::tempdir().expect("tempdir");
    let sys = System::start(dir.path(), &["--households", "200"]);
    let registry = read_registry(&dir.path().join("registry.csv"));
    let fams = families(&registry, chrono::Local::now().date_naive());
    let (guardian, child) = &fams[0];
    let mut g = person(guardian);
    g["postal_code"] = json!(guardian.postal_code);
    g["email"] = json!("parent@example.jp");
    g["phone"] = json!("090-1234-5678");

    // A 12-megapixel photo taken with the phone turned (orientation 6), GPS in EXIF and XMP.
    let (w, h) = CAMERA_12MP;
    let jpeg = camera_jpeg(w, h, 6, 11);
    assert!(metadata_kinds(&jpeg).contains(&"gps") && metadata_kinds(&jpeg).contains(&"xmp"));
    let photo = dir.path().join("IMG_0001.jpg");
    std::fs::write(&photo, &jpeg).expect("write photo");
    let capture = dir.path().join("upload.bin");
    let input = json!({ "base": sys.base, "guardian": g, "child": person(child), "document": photo, "capture": capture });
    let input_path = dir.path().join("photo.json");
    std::fs::write(&input_path, input.to_string()).expect("write input");
    let log = run_script("photo.mjs", &input_path, &chromium, None).await;
    assert!(log.contains("photo passed"));

    let body = std::fs::read(&capture).expect("the captured upload");
    let sent = multipart_part(&body, "document");
    println!("camera photo {} bytes -> uploaded {} bytes", jpeg.len(), sent.len());
    assert!(sent.len() <= 800 * 1024, "uploaded {} bytes", sent.len());
    assert!(sent.starts_with(&[0xFF, 0xD8, 0xFF]), "a JPEG");
    assert_eq!(metadata_kinds(sent), Vec::<&str>::new(), "no EXIF, XMP or GPS leaves the phone");
    let img = image::load_from_memory(sent).expect("decodes").to_rgb8();
    assert_eq!(img.dimensions(), (2000, 1500), "longer side 2,000 px, turned upright");
    assert!(looks_upright(&img), "red band on top");
}
