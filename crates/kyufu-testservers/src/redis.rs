//! A real `redis-server` (Debian's package) on a free loopback port, append-only file on, data in a
//! temporary directory. `restart` stops and starts it on the same port and directory, so tests can
//! check what survives a restart.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A running `redis-server`; killed when dropped.
pub struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server with `appendonly yes` and `appendfsync always` (nothing acknowledged is lost
    /// on a restart). Panics if `redis-server` is missing or does not come up.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory for redis-server");
        let port = crate::free_port();
        let child = spawn(port, dir.path());
        Self { child: Some(child), port, dir }
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: no chance to save more than the append-only file already has).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and data directory (after `kill`, or kills first).
    pub fn restart(&mut self) {
        self.kill();
        self.child = Some(spawn(self.port, self.dir.path()));
    }
}

fn spawn(port: u16, dir: &Path) -> Child {
    let binary = crate::require_command("redis-server");
    let child = Command::new(binary)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""])
        .args(["--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "yes"])
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting redis-server on port {port}: {e}"));
    crate::wait_for_port("redis-server", port, Duration::from_secs(10));
    child
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn ping(port: u16) -> String {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream.write_all(b"PING\r\n").unwrap();
        let mut reply = [0u8; 7];
        stream.read_exact(&mut reply).unwrap();
        String::from_utf8_lossy(&reply).into_owned()
    }

    #[test]
    fn starts_answers_and_restarts_on_the_same_port() {
        let mut server = RedisServer::start();
        assert_eq!(ping(server.port()), "+PONG\r\n");
        server.restart();
        assert_eq!(ping(server.port()), "+PONG\r\n");
        let port = server.port();
        drop(server);
        assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "server still answering after drop");
    }
}
