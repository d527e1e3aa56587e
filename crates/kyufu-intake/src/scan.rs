//! Virus scanning of uploaded documents before anything is stored: the `DocumentScanner` port and
//! its clamd adapter, a small client of clamd's `INSTREAM` command over TCP or a Unix socket.
//!
//! The protocol: send `zINSTREAM\0`, then the file in chunks each prefixed with its length as a
//! 4-byte big-endian number, then a zero-length chunk; clamd answers one line ended by `\0`:
//! `stream: OK`, `stream: <signature> FOUND`, or `<reason> ERROR`. Every step is bounded by a
//! timeout; anything but a clear OK or FOUND is an error, and intake fails closed on an error
//! (503 `scanner_unavailable`, nothing stored).

use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use kyufu_http::Readiness;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// What the scanner says of a document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Clean,
    /// Flagged; the signature name (a property of the malware, not of the applicant).
    Infected(String),
}

/// Why a document could not be scanned. Intake refuses the upload (fail closed).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    #[error("scanner unreachable: {0}")]
    Unreachable(std::io::Error),
    #[error("scanner did not answer within {0:?}")]
    Timeout(Duration),
    #[error("scanner error: {0}")]
    Failed(String),
}

/// Scans a document's bytes for malware. Owned by intake; clamd is one adapter, tests use fakes.
#[async_trait]
pub trait DocumentScanner: Send + Sync {
    async fn scan(&self, bytes: &[u8]) -> Result<Verdict, ScanError>;
    /// Cheap liveness check for `/readyz`.
    async fn ping(&self) -> Result<(), ScanError>;
}

/// Where clamd listens: `tcp:HOST:PORT` or `unix:/path/to/clamd.ctl`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClamdAddr {
    Tcp(String),
    Unix(PathBuf),
}

impl FromStr for ClamdAddr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(hostport) = s.strip_prefix("tcp:") {
            let ok = hostport.rsplit_once(':').is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok());
            if ok {
                return Ok(ClamdAddr::Tcp(hostport.to_owned()));
            }
        } else if let Some(path) = s.strip_prefix("unix:") {
            if !path.is_empty() {
                return Ok(ClamdAddr::Unix(PathBuf::from(path)));
            }
        }
        Err(format!("{s:?} is not a clamd address: expected tcp:HOST:PORT or unix:/path"))
    }
}

impl std::fmt::Display for ClamdAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClamdAddr::Tcp(a) => write!(f, "tcp:{a}"),
            ClamdAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// A clamd client; one connection per scan (clamd handles one command per connection here).
#[derive(Debug, Clone)]
pub struct Clamd {
    addr: ClamdAddr,
    /// Bound on connecting.
    pub connect_timeout: Duration,
    /// Bound on the whole exchange of one scan (sending up to 10 MiB and waiting for the verdict).
    pub scan_timeout: Duration,
    /// Bytes per INSTREAM chunk.
    pub chunk_bytes: usize,
}

/// Longest reply line read from clamd.
const MAX_REPLY: usize = 4096;

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

impl Clamd {
    pub fn new(addr: ClamdAddr) -> Self {
        Clamd { addr, connect_timeout: Duration::from_secs(3), scan_timeout: Duration::from_secs(30), chunk_bytes: 64 * 1024 }
    }

    pub fn addr(&self) -> &ClamdAddr {
        &self.addr
    }

    async fn connect(&self) -> Result<Box<dyn Stream>, ScanError> {
        let connect = async {
            match &self.addr {
                ClamdAddr::Tcp(a) => tokio::net::TcpStream::connect(a.as_str()).await.map(|s| Box::new(s) as Box<dyn Stream>),
                ClamdAddr::Unix(p) => tokio::net::UnixStream::connect(p).await.map(|s| Box::new(s) as Box<dyn Stream>),
            }
        };
        tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| ScanError::Timeout(self.connect_timeout))?
            .map_err(ScanError::Unreachable)
    }

    async fn command(&self, command: &[u8], body: Option<&[u8]>) -> Result<String, ScanError> {
        let mut stream = self.connect().await?;
        let exchange = async {
            stream.write_all(command).await?;
            if let Some(bytes) = body {
                for chunk in bytes.chunks(self.chunk_bytes.max(1)) {
                    // A chunk is at most `chunk_bytes`, far below u32::MAX.
                    let len = u32::try_from(chunk.len()).unwrap_or(u32::MAX);
                    stream.write_all(&len.to_be_bytes()).await?;
                    stream.write_all(chunk).await?;
                }
                stream.write_all(&0u32.to_be_bytes()).await?;
            }
            stream.flush().await?;
            read_reply(&mut stream).await
        };
        match tokio::time::timeout(self.scan_timeout, exchange).await {
            Err(_) => Err(ScanError::Timeout(self.scan_timeout)),
            Ok(Err(e)) => Err(ScanError::Unreachable(e)),
            Ok(Ok(reply)) => Ok(reply),
        }
    }
}

/// Reads one reply ended by `\0` (or end of stream), at most `MAX_REPLY` bytes.
async fn read_reply(stream: &mut (impl AsyncRead + Unpin)) -> std::io::Result<String> {
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
        if let Some(end) = reply.iter().position(|&b| b == 0) {
            reply.truncate(end);
            break;
        }
        if reply.len() > MAX_REPLY {
            break;
        }
    }
    Ok(String::from_utf8_lossy(&reply).trim().to_owned())
}

/// Reads clamd's answer to INSTREAM.
pub fn parse_reply(reply: &str) -> Result<Verdict, ScanError> {
    let Some(rest) = reply.strip_prefix("stream: ") else {
        return Err(ScanError::Failed(reply.chars().take(200).collect()));
    };
    if rest == "OK" {
        Ok(Verdict::Clean)
    } else if let Some(signature) = rest.strip_suffix(" FOUND") {
        Ok(Verdict::Infected(signature.to_owned()))
    } else {
        Err(ScanError::Failed(reply.chars().take(200).collect()))
    }
}

#[async_trait]
impl DocumentScanner for Clamd {
    async fn scan(&self, bytes: &[u8]) -> Result<Verdict, ScanError> {
        parse_reply(&self.command(b"zINSTREAM\0", Some(bytes)).await?)
    }

    async fn ping(&self) -> Result<(), ScanError> {
        let reply = self.command(b"zPING\0", None).await?;
        if reply == "PONG" {
            Ok(())
        } else {
            Err(ScanError::Failed(reply.chars().take(200).collect()))
        }
    }
}

/// Name of the readiness check that follows the scanner.
pub const READINESS_CHECK: &str = "virus_scanner";

/// Pings the scanner every `every` until `stop` says so, reporting into `readiness` as
/// `virus_scanner`, so `/readyz` answers 503 while uploads would be refused anyway.
pub async fn watch(
    scanner: Arc<dyn DocumentScanner>,
    readiness: Readiness,
    every: Duration,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let ok = scanner.ping().await.is_ok();
        if readiness.set_check(READINESS_CHECK, ok) {
            if ok {
                tracing::info!(service = "virus scanner", "reachable");
            } else {
                tracing::warn!(service = "virus scanner", "unreachable; uploads are refused with 503 until it is back");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.changed() => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_or_name_the_problem() {
        assert_eq!("tcp:127.0.0.1:3310".parse(), Ok(ClamdAddr::Tcp("127.0.0.1:3310".into())));
        assert_eq!("unix:/run/clamav/clamd.ctl".parse(), Ok(ClamdAddr::Unix("/run/clamav/clamd.ctl".into())));
        for bad in ["127.0.0.1:3310", "tcp:localhost", "tcp::3310", "tcp:host:99999", "unix:", ""] {
            let e = bad.parse::<ClamdAddr>().expect_err(bad);
            assert!(e.contains("tcp:HOST:PORT"), "{e}");
        }
    }

    #[test]
    fn replies_are_read_strictly() {
        assert_eq!(parse_reply("stream: OK").ok(), Some(Verdict::Clean));
        assert_eq!(parse_reply("stream: Eicar-Signature FOUND").ok(), Some(Verdict::Infected("Eicar-Signature".into())));
        assert!(matches!(parse_reply("INSTREAM size limit exceeded. ERROR"), Err(ScanError::Failed(_))));
        assert!(matches!(parse_reply("stream: Can't allocate memory ERROR"), Err(ScanError::Failed(_))));
        assert!(matches!(parse_reply(""), Err(ScanError::Failed(_))));
    }

    /// A one-shot fake clamd on a loopback port that records what it was sent.
    async fn fake_clamd(reply: &'static [u8]) -> (ClamdAddr, tokio::task::JoinHandle<Vec<u8>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = ClamdAddr::Tcp(listener.local_addr().expect("addr").to_string());
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            // Read until the zero-length terminator chunk (four zero bytes at the end).
            while !(got.len() > 10 && got.ends_with(&[0, 0, 0, 0])) {
                let n = s.read(&mut buf).await.expect("read");
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(reply).await.expect("reply");
            got
        });
        (addr, task)
    }

    #[tokio::test]
    async fn instream_frames_the_document_in_length_prefixed_chunks() {
        let (addr, sent) = fake_clamd(b"stream: Test.Sig FOUND\0").await;
        let mut clamd = Clamd::new(addr);
        clamd.chunk_bytes = 4;
        let verdict = clamd.scan(b"abcdefghij").await.expect("scan");
        assert_eq!(verdict, Verdict::Infected("Test.Sig".into()));
        let mut expected = b"zINSTREAM\0".to_vec();
        for chunk in [&b"abcd"[..], b"efgh", b"ij"] {
            expected.extend_from_slice(&u32::try_from(chunk.len()).expect("len").to_be_bytes());
            expected.extend_from_slice(chunk);
        }
        expected.extend_from_slice(&[0, 0, 0, 0]);
        assert_eq!(sent.await.expect("fake"), expected);
    }

    #[tokio::test]
    async fn a_silent_scanner_times_out_and_a_closed_port_is_unreachable() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let mut clamd = Clamd::new(ClamdAddr::Tcp(listener.local_addr().expect("addr").to_string()));
        clamd.scan_timeout = Duration::from_millis(200);
        // Accepts (the kernel backlog does) but never answers.
        assert!(matches!(clamd.scan(b"x").await, Err(ScanError::Timeout(_))));
        let port = listener.local_addr().expect("addr").port();
        drop(listener);
        let closed = Clamd::new(ClamdAddr::Tcp(format!("127.0.0.1:{port}")));
        assert!(matches!(closed.scan(b"x").await, Err(ScanError::Unreachable(_))));
    }
}
