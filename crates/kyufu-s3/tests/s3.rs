//! The S3 document store against a real S3 server (`s3s-fs` on a free loopback port): round trips
//! with content type and checksum, no overwrite, missing keys, a damaged object, a 10 MB document,
//! and an outage of the server.

use std::time::{Duration, Instant};

use bytes::Bytes;
use kyufu_ports::{AdapterError, Document, DocumentStore};
use kyufu_s3::{S3Config, S3DocumentStore};
use kyufu_testservers::s3::S3Server;
use sha2::{Digest, Sha256};

fn doc(content_type: &str, bytes: Vec<u8>) -> Document {
    let sha256 = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
    Document { content_type: content_type.into(), sha256, bytes: Bytes::from(bytes) }
}

async fn store(server: &S3Server, bucket: &str) -> S3DocumentStore {
    let (key, secret) = server.credentials();
    let mut config = S3Config::new(bucket);
    config.endpoint = Some(server.endpoint());
    config.access_key_id = Some(key.into());
    config.secret_access_key = Some(secret.into());
    config.create_bucket = true;
    config.operation_timeout = Duration::from_secs(5);
    S3DocumentStore::connect(config).await.expect("connect to s3s-fs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_round_trip_and_are_never_overwritten() {
    let server = S3Server::start();
    let s = store(&server, "kyufu-docs").await;
    let jpeg = doc("image/jpeg", [&[0xFF, 0xD8, 0xFF, 0xE0][..], &[7u8; 3000][..]].concat());
    let pdf = doc("application/pdf", b"%PDF-1.7\n1 0 obj <<>> endobj\n%%EOF".to_vec());
    s.put("rice-demo/11111111-1111-4111-8111-111111111111/document", &jpeg).await.expect("put jpeg");
    s.put("rice-demo/22222222-2222-4222-8222-222222222222/document", &pdf).await.expect("put pdf");
    assert_eq!(s.get("rice-demo/11111111-1111-4111-8111-111111111111/document").await.expect("get"), Some(jpeg.clone()));
    assert_eq!(s.get("rice-demo/22222222-2222-4222-8222-222222222222/document").await.expect("get"), Some(pdf));
    assert_eq!(s.get("rice-demo/33333333-3333-4333-8333-333333333333/document").await.expect("get"), None);

    let other = doc("image/png", vec![0x89, b'P', b'N', b'G', 1, 2, 3]);
    assert_eq!(s.put("rice-demo/11111111-1111-4111-8111-111111111111/document", &other).await, Err(AdapterError::AlreadyExists));
    assert_eq!(s.get("rice-demo/11111111-1111-4111-8111-111111111111/document").await.expect("get"), Some(jpeg), "first content kept");

    for bad in ["../etc/passwd", "/abs", "a b", "a//b"] {
        assert!(matches!(s.put(bad, &other).await, Err(AdapterError::Corrupt(_))), "{bad} accepted");
    }
}

/// The store honours `If-None-Match: *` (s3s-fs 0.14.1 does): the probe at connect finds that out,
/// and a put is then one request, no look first; forced to look, it is two. Either way an
/// overwrite is refused and counted requests match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_looks_first_only_where_the_store_ignores_if_none_match() {
    let server = S3Server::start();
    let (key, secret) = server.credentials();
    for (look, want_look, bucket) in
        [(kyufu_s3::LookBeforePut::Probe, false, "kyufu-probe"), (kyufu_s3::LookBeforePut::Always, true, "kyufu-look")]
    {
        let registry = prometheus::Registry::new();
        let mut config = S3Config::new(bucket);
        config.endpoint = Some(server.endpoint());
        config.access_key_id = Some(key.into());
        config.secret_access_key = Some(secret.into());
        config.create_bucket = true;
        config.look_before_put = look;
        config.metrics = Some(registry.clone());
        let s = S3DocumentStore::connect(config).await.expect("connect");
        assert_eq!(s.looks_before_put(), want_look, "{look:?}");
        let count = |op: &str| -> f64 {
            let text = kyufu_telemetry::encode(&registry);
            let series = format!("kyufu_s3_requests_total{{operation=\"{op}\"}} ");
            text.lines().find_map(|l| l.strip_prefix(series.as_str())?.parse().ok()).unwrap_or(0.0)
        };
        let (heads, puts) = (count("head_object"), count("put_object"));
        let d = doc("image/png", vec![0x89, b'P', b'N', b'G', 1]);
        s.put("p/55555555-5555-4555-8555-555555555555/document", &d).await.expect("put");
        assert_eq!(count("head_object") - heads, if want_look { 1.0 } else { 0.0 }, "{look:?}");
        assert_eq!(count("put_object") - puts, 1.0);
        let other = doc("image/png", vec![0x89, b'P', b'N', b'G', 2]);
        assert_eq!(s.put("p/55555555-5555-4555-8555-555555555555/document", &other).await, Err(AdapterError::AlreadyExists));
        assert_eq!(s.get("p/55555555-5555-4555-8555-555555555555/document").await.expect("get"), Some(d), "first content kept");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ten_megabyte_document_round_trips() {
    let server = S3Server::start();
    let s = store(&server, "kyufu-big").await;
    let bytes: Vec<u8> = (0..10 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let big = doc("application/pdf", bytes);
    s.put("p/44444444-4444-4444-8444-444444444444/document", &big).await.expect("put");
    assert_eq!(s.get("p/44444444-4444-4444-8444-444444444444/document").await.expect("get"), Some(big));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_object_is_corrupt_not_a_document() {
    let server = S3Server::start();
    let s = store(&server, "kyufu-damage").await;
    let key = "p/55555555-5555-4555-8555-555555555555/document";
    s.put(key, &doc("image/jpeg", vec![0xFF, 0xD8, 0xFF, 1, 2, 3, 4, 5])).await.expect("put");
    // Flip the bytes on the server's disk.
    let path = server.root().join("kyufu-damage").join(key);
    std::fs::write(&path, [0xFF, 0xD8, 0xFF, 9, 9, 9, 9, 9]).expect("damage the object");
    assert!(matches!(s.get(key).await, Err(AdapterError::Corrupt(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_unavailable_in_bounded_time_and_heals() {
    let mut server = S3Server::start();
    let s = store(&server, "kyufu-outage").await;
    let d = doc("image/jpeg", vec![0xFF, 0xD8, 0xFF, 0xE0, 1]);
    s.put("p/66666666-6666-4666-8666-666666666666/document", &d).await.expect("put");
    server.kill();
    let started = Instant::now();
    let err = s.put("p/77777777-7777-4777-8777-777777777777/document", &d).await.expect_err("server down");
    assert!(matches!(err, AdapterError::Unavailable(_)), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10), "answered after {:?}", started.elapsed());
    server.restart();
    s.put("p/77777777-7777-4777-8777-777777777777/document", &d).await.expect("put after restart");
    assert_eq!(s.get("p/66666666-6666-4666-8666-666666666666/document").await.expect("get"), Some(d), "kept across the restart");
}
