//! Throwaway real servers for the adapters' tests: each starts on a free loopback port with its own
//! temporary directory and is killed when dropped. A server that cannot be started fails the test
//! loudly with how to install it (`make deps`); nothing here ever lets a test pass silently.
#![forbid(unsafe_code)]

pub mod clamd;
pub mod kafka;
pub mod redis;
pub mod s3;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// A loopback port nobody listens on right now. The port is released before it is returned, so a
/// race with another process is possible but rare; servers started on it fail loudly if it is lost.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("binding an ephemeral loopback port");
    listener.local_addr().expect("local address of a bound listener").port()
}

/// Waits until something accepts TCP connections on `port`, or panics naming `what` after `limit`.
pub fn wait_for_port(what: &str, port: u16, limit: Duration) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let started = Instant::now();
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(started.elapsed() < limit, "{what} did not accept connections on {addr} within {limit:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Finds `command` on `PATH`, or panics with how to get it.
pub fn require_command(command: &str) -> std::path::PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let home_cargo = std::env::var_os("HOME").map(|h| std::path::PathBuf::from(h).join(".cargo/bin"));
    std::env::split_paths(&path)
        .chain(home_cargo)
        .map(|dir| dir.join(command))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| panic!("`{command}` is not installed; run `make deps` (scripts/install-deps.sh) first"))
}

/// A server process on a fixed loopback port with its own temporary data directory: started by
/// `spawn(port, dir)`, killed with SIGKILL by `kill` and on drop, started again on the same port
/// and directory by `restart`. The servers of this crate are thin wrappers around it.
pub(crate) struct ServerProcess {
    child: Option<std::process::Child>,
    port: u16,
    dir: tempfile::TempDir,
    spawn: fn(u16, &std::path::Path) -> std::process::Child,
}

impl ServerProcess {
    pub(crate) fn start(what: &str, spawn: fn(u16, &std::path::Path) -> std::process::Child) -> Self {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("temporary directory for {what}: {e}"));
        Self::start_in(dir, free_port(), spawn)
    }

    /// Starts on a port and in a directory chosen (and prepared) by the caller: a server whose
    /// configuration names other servers' ports (Kafka's quorum) is written before any starts.
    pub(crate) fn start_in(dir: tempfile::TempDir, port: u16, spawn: fn(u16, &std::path::Path) -> std::process::Child) -> Self {
        let child = spawn(port, dir.path());
        ServerProcess { child: Some(child), port, dir, spawn }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    pub(crate) fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Started and not killed since (it may still have exited by itself: see `exited`).
    pub(crate) fn is_started(&self) -> bool {
        self.child.is_some()
    }

    /// How the process ended, if it was started and has exited by itself.
    pub(crate) fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.as_mut().and_then(|c| c.try_wait().ok().flatten())
    }

    pub(crate) fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub(crate) fn restart(&mut self) {
        self.kill();
        self.child = Some((self.spawn)(self.port, self.dir.path()));
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        self.kill();
    }
}
