//! A real `redis-server` (Debian's package) on a free loopback port, append-only file on, data in a
//! temporary directory. `restart` stops and starts it on the same port and directory, so tests can
//! check what survives a restart.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::ServerProcess;

/// A running `redis-server`; killed when dropped.
pub struct RedisServer(ServerProcess);

impl RedisServer {
    /// Starts a server with `appendonly yes` and `appendfsync always` (nothing acknowledged is lost
    /// on a restart). Panics if `redis-server` is missing or does not come up.
    pub fn start() -> Self {
        RedisServer(ServerProcess::start("redis-server", spawn))
    }

    /// `redis://127.0.0.1:<port>/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.0.port())
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// Kills the server (SIGKILL: no chance to save more than the append-only file already has).
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Starts the server again on the same port and data directory (after `kill`, or kills first).
    pub fn restart(&mut self) {
        self.0.restart();
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
    // A restarted server accepts connections while it replays the append-only file and answers
    // `-LOADING` until it is done; a test expects it ready once `restart` returns.
    let deadline = Instant::now() + Duration::from_secs(10);
    while ping(port).ok().as_deref() != Some("+PONG\r\n") {
        assert!(Instant::now() < deadline, "redis-server on port {port} did not answer PING within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

/// The first bytes of the answer to `PING`: `+PONG\r\n` when the server is ready.
fn ping(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    stream.read_exact(&mut reply)?;
    Ok(String::from_utf8_lossy(&reply).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ping(port: u16) -> String {
        super::ping(port).expect("PING exchange with redis-server")
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
