//! Throwaway real servers for the adapters' tests: each starts on a free loopback port with its own
//! temporary directory and is killed when dropped. A server that cannot be started fails the test
//! loudly with how to install it (`make deps`); nothing here ever lets a test pass silently.
#![forbid(unsafe_code)]

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
