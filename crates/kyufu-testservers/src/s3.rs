//! A real S3 server for tests: `s3s-fs` (installed by `scripts/install-deps.sh` with
//! `cargo install s3s-fs@0.14.1 --locked --features binary`) on a free loopback port, storing
//! objects under a temporary directory, with fixed test credentials. `kill` and `restart` make
//! outages; the data directory survives a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ACCESS_KEY: &str = "kyufu-test-access";
const SECRET_KEY: &str = "kyufu-test-secret-0123456789";

/// A running `s3s-fs`; killed when dropped.
pub struct S3Server(crate::ServerProcess);

impl S3Server {
    /// Starts the server; panics if `s3s-fs` is missing or does not come up.
    pub fn start() -> Self {
        S3Server(crate::ServerProcess::start("s3s-fs", spawn))
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.0.port())
    }

    /// (access key id, secret access key).
    pub fn credentials(&self) -> (&'static str, &'static str) {
        (ACCESS_KEY, SECRET_KEY)
    }

    /// Where the objects are on disk (tests may damage one on purpose).
    pub fn root(&self) -> &Path {
        self.0.dir()
    }

    pub fn kill(&mut self) {
        self.0.kill();
    }

    pub fn restart(&mut self) {
        self.0.restart();
    }
}

fn spawn(port: u16, dir: &Path) -> Child {
    let binary = crate::require_command("s3s-fs");
    let child = Command::new(binary)
        .args(["--host", "127.0.0.1", "--port", &port.to_string(), "--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting s3s-fs on port {port}: {e}"));
    crate::wait_for_port("s3s-fs", port, Duration::from_secs(10));
    child
}

