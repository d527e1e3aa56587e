//! The production document store on S3 or any S3-compatible store (MinIO, s3s-fs, ...).
//!
//! - **Keys** come from intake (`{program}/{application id}/document`: a random UUID, never user
//!   input); the adapter still refuses anything outside `[A-Za-z0-9._/-]`, absolute keys and `..`.
//! - **Private**: no ACL is ever set; the bucket's own policy (private, block public access)
//!   applies. The bucket is created at connect only when asked (`create_bucket`, for tests and the
//!   compose stack); in production it is made by the deployment with encryption and versioning.
//! - **Recorded**: the content type as the object's `Content-Type`, and the lower-case hex SHA-256
//!   as user metadata `x-amz-meta-sha256`. `get` recomputes the hash and answers `Corrupt` on a
//!   mismatch, so a damaged object never reaches a reviewer as if it were the upload.
//! - **No overwrite**: `PutObject` carries `If-None-Match: *` (AWS S3 since 2024, MinIO, s3s-fs
//!   0.14.1); the store refuses the write when the key exists (412), which we answer as
//!   `AlreadyExists`. A store that ignores the header would overwrite, so at connect the adapter
//!   finds out which kind it talks to: it writes a probe object twice with the header
//!   (`_kyufu/if-none-match/<uuid>`, deleted afterwards). When the second write is refused, a put
//!   is that one request; otherwise (or when the probe cannot tell) every put looks first
//!   (`HeadObject`) and refuses a taken key, as before: one round trip more per document. With
//!   random keys the remaining window between the look and the write needs two writers of the
//!   same fresh UUID, which intake never has. `look_before_put` forces either behaviour.
//! - **Bounded**: connect and operation timeouts, the SDK's standard retries (3 attempts) for
//!   throttling and 5xx; what still fails is `Unavailable`, and intake answers 503 without
//!   accepting the application.
//! - Path-style addressing (`force_path_style`) so any S3-compatible endpoint works.
//! - **Counted**: every request by operation in `kyufu_s3_requests_total{operation}` (when given
//!   a registry), so a benchmark can divide them by applications.

use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation, StalledStreamProtectionConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::Client;
use bytes::Bytes;
use kyufu_ports::{AdapterError, Document, DocumentStore};
use sha2::{Digest, Sha256};

/// Where the documents live and how to reach the store.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// Endpoint URL for S3-compatible stores (`http://127.0.0.1:9000`); `None` for AWS S3.
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    /// Static credentials; when absent, `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` are read.
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    /// Create the bucket at connect if it does not exist (tests, compose).
    pub create_bucket: bool,
    pub connect_timeout: Duration,
    /// Bound on one whole operation, retries included.
    pub operation_timeout: Duration,
    /// Whether a put looks first (`HeadObject`) because the store may ignore `If-None-Match`.
    pub look_before_put: LookBeforePut,
    /// Where the request counts go; none when `None`.
    pub metrics: Option<prometheus::Registry>,
}

/// Whether a put looks for the key first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookBeforePut {
    /// Find out at connect whether the store honours `If-None-Match: *`; look only if it does not.
    Probe,
    /// Always look first (a store known to ignore the header).
    Always,
    /// Never look (a store known to honour the header).
    Never,
}

/// Operations counted in `kyufu_s3_requests_total`.
const OPERATIONS: [&str; 6] = ["put_object", "get_object", "head_object", "head_bucket", "create_bucket", "delete_object"];

impl S3Config {
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            endpoint: None,
            bucket: bucket.into(),
            region: "us-east-1".to_owned(),
            access_key_id: None,
            secret_access_key: None,
            create_bucket: false,
            connect_timeout: Duration::from_secs(3),
            operation_timeout: Duration::from_secs(30),
            look_before_put: LookBeforePut::Probe,
            metrics: None,
        }
    }
}

/// The S3 [`DocumentStore`].
#[derive(Clone)]
pub struct S3DocumentStore {
    client: Client,
    bucket: String,
    /// Whether a put looks for the key first (decided at connect).
    look_first: bool,
    requests: Option<prometheus::IntCounterVec>,
}

fn unavailable<E: ProvideErrorMetadata + std::fmt::Debug, R>(what: &str, e: &SdkError<E, R>) -> AdapterError {
    let detail = match e {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("service error").to_owned(),
        SdkError::TimeoutError(_) => "timed out".to_owned(),
        SdkError::DispatchFailure(_) => "cannot reach the store".to_owned(),
        _ => "request failed".to_owned(),
    };
    AdapterError::Unavailable(format!("s3 {what}: {detail}"))
}

fn status_of<E, R: HttpStatus>(e: &SdkError<E, R>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status_code()),
        _ => None,
    }
}

trait HttpStatus {
    fn status_code(&self) -> u16;
}

impl HttpStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Keys are made by intake; anything else is a bug, refused before it reaches the store.
fn check_key(key: &str) -> Result<(), AdapterError> {
    let ok = !key.is_empty()
        && key.len() <= 512
        && !key.starts_with('/')
        && !key.split('/').any(|part| part.is_empty() || part == "." || part == "..")
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'/'));
    if ok {
        Ok(())
    } else {
        Err(AdapterError::Corrupt("document key outside the allowed form".into()))
    }
}

/// A random number for probe keys (not a secret; the std hasher's random seed is enough).
fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos());
    h.finish()
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

impl S3DocumentStore {
    /// Builds the client, checks the bucket answers (creating it when configured to).
    pub async fn connect(config: S3Config) -> Result<S3DocumentStore, AdapterError> {
        let key = config.access_key_id.clone().or_else(|| std::env::var("AWS_ACCESS_KEY_ID").ok());
        let secret = config.secret_access_key.clone().or_else(|| std::env::var("AWS_SECRET_ACCESS_KEY").ok());
        let (Some(key), Some(secret)) = (key, secret) else {
            return Err(AdapterError::Unavailable("s3: no credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY)".into()));
        };
        let timeouts = aws_sdk_s3::config::timeout::TimeoutConfig::builder()
            .connect_timeout(config.connect_timeout)
            .operation_timeout(config.operation_timeout)
            .build();
        let mut builder = aws_sdk_s3::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(key, secret, None, None, "kyufu-config"))
            .force_path_style(true)
            .timeout_config(timeouts)
            .retry_config(aws_sdk_s3::config::retry::RetryConfig::standard().with_max_attempts(3))
            // We send our own SHA-256 and verify it on read; no streaming checksum trailers, which
            // not every S3-compatible store understands.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
            // No stalled-upload watch: it re-arms a timer and wakes every request in flight on a
            // short interval until its answer comes (the largest single share of intake's CPU
            // under load, measured with perf), and it failed uploads whose store was only busy (a
            // 503 and a retry, two more objects). Documents are small; the operation timeout still
            // bounds a stalled upload. Downloads keep it.
            .stalled_stream_protection(StalledStreamProtectionConfig::enabled().upload_enabled(false).build());
        if let Some(endpoint) = &config.endpoint {
            builder = builder.endpoint_url(endpoint);
        }
        let client = Client::from_conf(builder.build());
        let requests = config.metrics.as_ref().map(|registry| {
            let c = kyufu_telemetry::register(
                registry,
                prometheus::IntCounterVec::new(
                    prometheus::Opts::new("kyufu_s3_requests_total", "Requests to the S3 document store, by operation"),
                    &["operation"],
                )
                .expect("static metric"),
            );
            for op in OPERATIONS {
                c.with_label_values(&[op]);
            }
            c
        });
        let mut store = S3DocumentStore { client, bucket: config.bucket.clone(), look_first: true, requests };
        store.count("head_bucket");
        match store.client.head_bucket().bucket(&store.bucket).send().await {
            Ok(_) => {}
            Err(e) if status_of(&e) == Some(404) && config.create_bucket => {
                store.count("create_bucket");
                match store.client.create_bucket().bucket(&store.bucket).send().await {
                    Ok(_) => tracing::info!(bucket = %store.bucket, "created document bucket"),
                    // Another process made it at the same moment.
                    Err(e) if store.ping().await.is_ok() => tracing::debug!(error = ?e.code(), "bucket created concurrently"),
                    Err(e) => return Err(unavailable("create bucket", &e)),
                }
            }
            Err(e) if status_of(&e) == Some(404) => {
                return Err(AdapterError::Unavailable(format!("s3: bucket {} does not exist", store.bucket)))
            }
            Err(e) => return Err(unavailable("head bucket", &e)),
        }
        store.look_first = match config.look_before_put {
            LookBeforePut::Always => true,
            LookBeforePut::Never => false,
            LookBeforePut::Probe => !store.honours_if_none_match().await,
        };
        tracing::info!(bucket = %store.bucket, look_before_put = store.look_first, "document store ready");
        Ok(store)
    }

    fn count(&self, operation: &'static str) {
        if let Some(c) = &self.requests {
            c.with_label_values(&[operation]).inc();
        }
    }

    /// Writes a probe object twice with `If-None-Match: *`: true when the store refused the second
    /// write. Anything that does not give a clear answer counts as "not honoured" (the adapter
    /// then looks before every put, which is always safe).
    async fn honours_if_none_match(&self) -> bool {
        let key = format!("_kyufu/if-none-match/{:016x}{:016x}", rand_u64(), rand_u64());
        let probe = Document {
            content_type: "application/octet-stream".to_owned(),
            sha256: sha256_hex(b"probe"),
            bytes: Bytes::from_static(b"probe"),
        };
        let honoured = match self.put_object(&key, &probe).await {
            Ok(()) => matches!(self.put_object(&key, &probe).await, Err(AdapterError::AlreadyExists)),
            Err(e) => {
                tracing::warn!(error = %e, "s3: could not probe If-None-Match; every put looks first");
                false
            }
        };
        self.count("delete_object");
        if let Err(e) = self.client.delete_object().bucket(&self.bucket).key(&key).send().await {
            tracing::debug!(error = ?e.code(), "s3: probe object left behind");
        }
        honoured
    }

    /// One round trip to the bucket (readiness).
    pub async fn ping(&self) -> Result<(), AdapterError> {
        self.count("head_bucket");
        self.client.head_bucket().bucket(&self.bucket).send().await.map(|_| ()).map_err(|e| unavailable("head bucket", &e))
    }

    /// Whether a put looks for the key first (the store may ignore `If-None-Match`).
    pub fn looks_before_put(&self) -> bool {
        self.look_first
    }

    async fn exists(&self, key: &str) -> Result<bool, AdapterError> {
        self.count("head_object");
        match self.client.head_object().bucket(&self.bucket).key(key).send().await {
            Ok(_) => Ok(true),
            Err(e) if status_of(&e) == Some(404) => Ok(false),
            Err(e) => Err(unavailable("head object", &e)),
        }
    }
}

impl S3DocumentStore {
    /// The write itself, with `If-None-Match: *` (412 is `AlreadyExists`).
    async fn put_object(&self, key: &str, doc: &Document) -> Result<(), AdapterError> {
        self.count("put_object");
        let digest = Sha256::digest(&doc.bytes);
        let checksum = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, digest);
        let result = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .if_none_match("*")
            .content_type(&doc.content_type)
            .content_length(i64::try_from(doc.bytes.len()).unwrap_or(i64::MAX))
            .checksum_sha256(checksum)
            .metadata("sha256", &doc.sha256)
            .body(ByteStream::from(doc.bytes.clone()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) if status_of(&e) == Some(412) => Err(AdapterError::AlreadyExists),
            Err(e) => Err(unavailable("put object", &e)),
        }
    }
}

#[async_trait]
impl DocumentStore for S3DocumentStore {
    async fn put(&self, key: &str, doc: &Document) -> Result<(), AdapterError> {
        check_key(key)?;
        if self.look_first && self.exists(key).await? {
            return Err(AdapterError::AlreadyExists);
        }
        self.put_object(key, doc).await
    }

    async fn get(&self, key: &str) -> Result<Option<Document>, AdapterError> {
        check_key(key)?;
        self.count("get_object");
        let out = match self.client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(out) => out,
            Err(e) if status_of(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(unavailable("get object", &e)),
        };
        let content_type = out.content_type().unwrap_or("application/octet-stream").to_owned();
        let recorded = out.metadata().and_then(|m| m.get("sha256")).cloned();
        let bytes: Bytes = out
            .body
            .collect()
            .await
            .map_err(|_| AdapterError::Unavailable("s3 get object: body interrupted".into()))?
            .into_bytes();
        let actual = sha256_hex(&bytes);
        match recorded {
            Some(r) if r == actual => Ok(Some(Document { content_type, sha256: actual, bytes })),
            Some(_) => Err(AdapterError::Corrupt("document does not match its recorded SHA-256".into())),
            None => Err(AdapterError::Corrupt("document without a recorded SHA-256".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_from_intake_pass_and_anything_else_is_refused() {
        assert!(check_key("rice-demo/0b6f2c1e-8d9a-4c4e-9d55-0a1b2c3d4e5f/document").is_ok());
        assert!(check_key("rice-demo/0b6f2c1e-8d9a-4c4e-9d55-0a1b2c3d4e5f/application.json").is_ok());
        for bad in ["", "/abs", "a/../b", "a//b", "a/./b", "a b", "a/%2e%2e", "ｆｕｌｌ", "a/b/", &"x".repeat(513)] {
            assert!(check_key(bad).is_err(), "{bad:?} accepted");
        }
    }
}
