//! The citizen's pages in a real browser: headless Debian Chromium driven by playwright-core
//! (`e2e/walk.mjs`) against a real all-in-one with a slow door, so the visitor really waits.
//! Queue → admitted → the form for two siblings with uploads (a mistake shown next to its field
//! first) → check page → sent → the status page with the coupon; a case needing review; English.
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

/// A real PNG (an identity card drawn in flat colours), so the page's preview shows something.
fn card_png(w: u32, h: u32) -> Vec<u8> {
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 { 0xEDB8_8320 ^ (crc >> 1) } else { crc >> 1 };
            }
        }
        !crc
    }
    fn chunk(out: &mut Vec<u8>, kind: &[u8], data: &[u8]) {
        out.extend_from_slice(&u32::try_from(data.len()).expect("chunk size").to_be_bytes());
        let mut body = kind.to_vec();
        body.extend_from_slice(data);
        out.extend_from_slice(&body);
        out.extend_from_slice(&crc32(&body).to_be_bytes());
    }
    let mut raw = Vec::new();
    for y in 0..h {
        raw.push(0); // no filter
        for x in 0..w {
            let px: [u8; 3] = if y < h / 5 {
                [11, 79, 138] // header band
            } else if (w / 12..w / 3).contains(&x) && (h / 3..h * 5 / 6).contains(&y) {
                [170, 180, 190] // photo
            } else if x > w * 2 / 5 && y % (h / 8) < 3 && y > h / 3 {
                [60, 60, 60] // text lines
            } else {
                [245, 240, 228]
            };
            raw.extend_from_slice(&px);
        }
    }
    // zlib with stored (uncompressed) deflate blocks.
    let mut z = vec![0x78, 0x01];
    for (i, block) in raw.chunks(65_535).enumerate() {
        let last = u8::from((i + 1) * 65_535 >= raw.len());
        let len = u16::try_from(block.len()).expect("block");
        z.push(last);
        z.extend_from_slice(&len.to_le_bytes());
        z.extend_from_slice(&(!len).to_le_bytes());
        z.extend_from_slice(block);
    }
    let (mut a, mut b) = (1u32, 0u32);
    for &x in &raw {
        a = (a + u32::from(x)) % 65_521;
        b = (b + a) % 65_521;
    }
    z.extend_from_slice(&((b << 16) | a).to_be_bytes());
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = Vec::new();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut png, b"IHDR", &ihdr);
    chunk(&mut png, b"IDAT", &z);
    chunk(&mut png, b"IEND", &[]);
    png
}

fn person(r: &Resident) -> Value {
    json!({
        "family_name": r.family_name, "given_name": r.given_name,
        "family_name_kana": r.family_name_kana, "given_name_kana": r.given_name_kana,
        "birth_date": r.birth_date.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parent_applies_for_two_siblings_in_a_phone_browser() {
    let node = Command::new("node").arg("--version").output();
    assert!(node.is_ok_and(|o| o.status.success()), "node is missing: run `make deps` (scripts/install-deps.sh)");
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned());
    assert!(Path::new(&chromium).exists(), "{chromium} is missing: run `make deps` (scripts/install-deps.sh)");
    assert!(
        repo().join("e2e/node_modules/playwright-core").exists(),
        "e2e/node_modules is missing: run `make deps` (npm ci in e2e/)"
    );

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

    let document = dir.path().join("id-card.png");
    std::fs::write(&document, card_png(320, 200)).expect("write document");
    let input = json!({
        "base": sys.base,
        "guardian": g,
        "children": [person(&siblings[0].1), person(&siblings[1].1)],
        "document": document,
        "review_link": format!("/status#id={id}&token={token}"),
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
    let out = tokio::task::spawn_blocking(move || {
        Command::new("node")
            .arg(repo().join("e2e/walk.mjs"))
            .arg(&input_path)
            .env("SHOTS", &shots)
            .env("CHROMIUM", &chromium)
            .output()
            .expect("run node")
    })
    .await
    .expect("join");
    let log = format!("{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    eprintln!("{log}");
    assert!(out.status.success(), "browser walk failed:\n{log}");
    assert!(log.contains("walk passed"));
}
