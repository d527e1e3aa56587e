//! Test harness for the whole system: starts the real `kyufu` binary on a free loopback port with
//! its own data directory, and talks to it only through the public HTTP contract.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[allow(unused_imports)] // not every test binary needs it
pub use kyufu_testservers::free_port;

pub struct System {
    pub child: Child,
    pub base: String,
    /// The staff address: `/metrics`, the review console, the admin API (never on `base`).
    pub staff: String,
    pub data_dir: PathBuf,
}

impl System {
    /// Starts `kyufu all-in-one` on `data_dir` with `extra` arguments and waits until it serves.
    pub fn start(data_dir: &Path, extra: &[&str]) -> System {
        Self::start_with(data_dir, extra, "127.0.0.1:0")
    }

    /// Like `start`, with the staff port (review console, admin API) at `staff`.
    pub fn start_with(data_dir: &Path, extra: &[&str], staff: &str) -> System {
        let addr_file = data_dir.join("test-addr");
        let _ = std::fs::remove_file(&addr_file);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(data_dir.join("test-system.log"))
            .expect("log file");
        let child = Command::new(env!("CARGO_BIN_EXE_kyufu"))
            .arg("all-in-one")
            .arg("--data-dir")
            .arg(data_dir)
            .args(["--listen", "127.0.0.1:0", "--review-listen", staff, "--addr-file"])
            .arg(&addr_file)
            .args(extra)
            // The tests send many children through one admission pass, more than a household's bound.
            .env("KYUFU_SUBMISSIONS_PER_PASS", "0")
            .stdout(Stdio::from(log.try_clone().expect("log file")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start kyufu binary");
        let deadline = Instant::now() + Duration::from_secs(60);
        // The file holds the public address, then the staff address, one a line.
        let (base, staff) = loop {
            if let Ok(addrs) = std::fs::read_to_string(&addr_file) {
                let mut lines = addrs.lines().map(str::trim).filter(|l| !l.is_empty());
                if let (Some(public), Some(staff)) = (lines.next(), lines.next()) {
                    break (format!("http://{public}"), format!("http://{staff}"));
                }
            }
            assert!(Instant::now() < deadline, "kyufu did not start; see {}", data_dir.join("test-system.log").display());
            std::thread::sleep(Duration::from_millis(50));
        };
        System { child, base, staff, data_dir: data_dir.to_owned() }
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill(); // SIGKILL on Unix
        let _ = self.child.wait();
    }
}

impl Drop for System {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A resident row of the registry CSV the system wrote.
#[derive(Debug, Clone)]
pub struct Resident {
    pub resident_id: String,
    pub household_id: String,
    pub family_name: String,
    pub given_name: String,
    pub family_name_kana: String,
    pub given_name_kana: String,
    pub birth_date: chrono::NaiveDate,
    pub postal_code: String,
}

/// Reads `registry.csv` by its documented header names.
pub fn read_registry(path: &Path) -> Vec<Resident> {
    let mut rdr = csv::Reader::from_path(path).expect("registry.csv readable");
    let headers = rdr.headers().expect("header row").clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap_or_else(|| panic!("column {name} missing"));
    let cols = [
        "resident_id", "household_id", "family_name", "given_name", "family_name_kana", "given_name_kana", "birth_date",
        "postal_code",
    ]
    .map(col);
    rdr.records()
        .map(|r| {
            let r = r.expect("row");
            Resident {
                resident_id: r[cols[0]].to_owned(),
                household_id: r[cols[1]].to_owned(),
                family_name: r[cols[2]].to_owned(),
                given_name: r[cols[3]].to_owned(),
                family_name_kana: r[cols[4]].to_owned(),
                given_name_kana: r[cols[5]].to_owned(),
                birth_date: r[cols[6]].parse().expect("birth_date YYYY-MM-DD"),
                postal_code: r[cols[7]].to_owned(),
            }
        })
        .collect()
}

/// (guardian, child) pairs: an adult and a child under 18 of the same household, each child once.
pub fn families(registry: &[Resident], today: chrono::NaiveDate) -> Vec<(Resident, Resident)> {
    let mut by_household: HashMap<&str, Vec<&Resident>> = HashMap::new();
    for r in registry {
        by_household.entry(&r.household_id).or_default().push(r);
    }
    let age = |r: &Resident| kyufu_domain::program::age_on(r.birth_date, today).unwrap_or(0);
    let mut out = Vec::new();
    let mut households: Vec<_> = by_household.into_iter().collect();
    households.sort_by(|a, b| a.0.cmp(b.0));
    for (_, members) in households {
        let Some(guardian) = members.iter().find(|r| (25..=60).contains(&age(r))) else { continue };
        for child in members.iter().filter(|r| age(r) < 17 && r.birth_date < today) {
            out.push(((*guardian).clone(), (*child).clone()));
        }
    }
    out
}

pub fn application_json(guardian: &Resident, child: &Resident) -> Value {
    json!({
        "guardian": {
            "resident_id": guardian.resident_id,
            "family_name": guardian.family_name,
            "given_name": guardian.given_name,
            "family_name_kana": guardian.family_name_kana,
            "given_name_kana": guardian.given_name_kana,
            "birth_date": guardian.birth_date.to_string(),
            "email": "guardian@example.jp",
            "phone": "090-1234-5678",
            "postal_code": guardian.postal_code,
        },
        "child": {
            "family_name": child.family_name,
            "given_name": child.given_name,
            "family_name_kana": child.family_name_kana,
            "given_name_kana": child.given_name_kana,
            "birth_date": child.birth_date.to_string(),
        },
        "consent": true
    })
}

/// A small real PNG (intake decodes images completely, so magic bytes alone are refused).
pub fn png_document() -> Vec<u8> {
    card_png(64, 40)
}

/// A real PNG (an identity card drawn in flat colours), so the page's preview shows something.
pub fn card_png(w: u32, h: u32) -> Vec<u8> {
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

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(30)).build().expect("client")
}

/// Joins the queue and polls until admitted; returns the admission pass.
pub async fn admit(client: &reqwest::Client, base: &str) -> String {
    let joined: Value = client.post(format!("{base}/queue/join")).send().await.expect("join").json().await.expect("join json");
    let ticket = joined["ticket"].as_str().expect("ticket").to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status: Value = client
            .get(format!("{base}/queue/status"))
            .header("X-Queue-Ticket", &ticket)
            .send()
            .await
            .expect("status")
            .json()
            .await
            .expect("status json");
        if status["state"] == "admitted" {
            return status["pass"].as_str().expect("pass once admitted").to_owned();
        }
        assert!(Instant::now() < deadline, "not admitted in time: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

pub fn form(application: &Value, document: Vec<u8>) -> reqwest::multipart::Form {
    reqwest::multipart::Form::new()
        .part("application", reqwest::multipart::Part::text(application.to_string()))
        .part("document", reqwest::multipart::Part::bytes(document).file_name("id.png").mime_str("image/png").expect("mime"))
}

pub async fn submit(client: &reqwest::Client, base: &str, pass: &str, f: reqwest::multipart::Form) -> (u16, Value) {
    let resp = client
        .post(format!("{base}/api/v1/applications"))
        .header("X-Admission-Pass", pass)
        .multipart(f)
        .send()
        .await
        .expect("submit");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

pub async fn lookup(client: &reqwest::Client, base: &str, id: &str, token: &str) -> (u16, Value) {
    let resp = client
        .get(format!("{base}/api/v1/applications/{id}"))
        .header("Authorization", format!("Bearer {token}"))
        .send()
        .await
        .expect("lookup");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// Polls until the application reaches a settled status (or the deadline passes).
pub async fn wait_settled(client: &reqwest::Client, base: &str, id: &str, token: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let (code, body) = lookup(client, base, id, token).await;
        assert_eq!(code, 200, "lookup of {id}: {body}");
        let status = body["status"].as_str().unwrap_or_default();
        if matches!(status, "coupon_issued" | "duplicate" | "needs_review" | "rejected") {
            return body;
        }
        assert!(Instant::now() < deadline, "{id} stuck in {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One of our processes, started by a test; killed and reaped when dropped.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `url` answers at all (any status), for at most 30 s.
pub async fn wait_http(url: &str) {
    wait_http_logged(url, None).await;
}

/// Like `wait_http`; on giving up, the panic shows the text of `log` (the processes' output).
pub async fn wait_http_logged(url: &str, log: Option<&Path>) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(url).await.is_err() {
        if Instant::now() >= deadline {
            let text = log.map(|p| std::fs::read_to_string(p).unwrap_or_default()).unwrap_or_default();
            panic!("{url} never answered\n{text}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// On a failing test, prints every process's log (they live in the temporary directory, which
/// goes away with the test).
pub struct LogsOnPanic(pub PathBuf);

impl Drop for LogsOnPanic {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            return;
        }
        for entry in std::fs::read_dir(&self.0).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let tail: Vec<&str> = text.lines().rev().take(40).collect();
                eprintln!("===== {} (last 40 lines)", path.display());
                for line in tail.iter().rev() {
                    eprintln!("{line}");
                }
            }
        }
    }
}

/// Every document of a (multi-document) YAML file, merge keys (`<<:`) applied.
pub fn yaml_docs(path: &Path) -> Vec<serde_yaml::Value> {
    use serde::Deserialize as _;
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::Deserializer::from_str(&text)
        .map(|d| {
            let mut v = serde_yaml::Value::deserialize(d).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            v.apply_merge().unwrap_or_else(|e| panic!("{}: merge keys: {e}", path.display()));
            v
        })
        .filter(|v| !v.is_null())
        .collect()
}
