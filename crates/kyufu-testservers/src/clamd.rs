//! A real `clamd` (Debian's clamav-daemon) on a free loopback port, with a temporary configuration
//! and a signature database of test signatures only: there is no network for freshclam here, and a
//! test must not depend on the day's virus definitions. Two signatures: the EICAR test string
//! (`EICAR`) and a made-up marker (`MARKER`). clamd reports them as `Kyufu.Test.EICAR.UNOFFICIAL`
//! and `Kyufu.Test.Marker.UNOFFICIAL` (the suffix marks a database that is not ClamAV's own).

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::ServerProcess;

/// The industry-standard antivirus test string (harmless; every scanner flags it).
pub const EICAR: &[u8] = br"X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*";

/// A marker no real file contains, flagged by the second test signature.
pub const MARKER: &[u8] = b"KYUFU-TEST-MALWARE-MARKER-7f3a";

/// A running `clamd`; killed when dropped.
pub struct ClamdServer(ServerProcess);

impl ClamdServer {
    /// Starts clamd with the test database. Panics if `clamd` is missing or does not come up.
    pub fn start() -> Self {
        ClamdServer(ServerProcess::start("clamd", spawn))
    }

    pub fn port(&self) -> u16 {
        self.0.port()
    }

    /// `tcp:127.0.0.1:<port>`, the form `--clamd` takes.
    pub fn address(&self) -> String {
        format!("tcp:127.0.0.1:{}", self.0.port())
    }

    /// Kills clamd (SIGKILL).
    pub fn kill(&mut self) {
        self.0.kill();
    }

    /// Starts clamd again on the same port.
    pub fn restart(&mut self) {
        self.0.restart();
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

fn spawn(port: u16, dir: &Path) -> Child {
    let binary = crate::require_command("clamd");
    let db = dir.join("db");
    std::fs::create_dir_all(&db).unwrap_or_else(|e| panic!("creating {}: {e}", db.display()));
    // Extended (.ndb) signatures: Name:TargetType(0 = any file):Offset(* = anywhere):HexBytes.
    let signatures = format!("Kyufu.Test.EICAR:0:*:{}\nKyufu.Test.Marker:0:*:{}\n", hex(EICAR), hex(MARKER));
    std::fs::write(db.join("test.ndb"), signatures).unwrap_or_else(|e| panic!("writing the test signatures: {e}"));
    let config = format!(
        "Foreground yes\nTCPSocket {port}\nTCPAddr 127.0.0.1\nDatabaseDirectory {}\nLogFile {}\nPidFile {}\nStreamMaxLength 20M\n",
        db.display(),
        dir.join("clamd.log").display(),
        dir.join("clamd.pid").display(),
    );
    let config_path = dir.join("clamd.conf");
    std::fs::write(&config_path, config).unwrap_or_else(|e| panic!("writing {}: {e}", config_path.display()));
    let child = Command::new(binary)
        .arg(format!("--config-file={}", config_path.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("starting clamd on port {port}: {e}"));
    // Loading even a tiny database takes clamd a few seconds.
    crate::wait_for_port("clamd", port, Duration::from_secs(60));
    child
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn instream(port: u16, data: &[u8]) -> String {
        let exchange = || -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.write_all(b"zINSTREAM\0")?;
            s.write_all(&u32::try_from(data.len()).unwrap_or(u32::MAX).to_be_bytes())?;
            s.write_all(data)?;
            s.write_all(&[0, 0, 0, 0])?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply.trim_end_matches('\0').to_owned())
        };
        exchange().expect("INSTREAM exchange with clamd")
    }

    #[test]
    fn flags_the_test_signatures_only() {
        let server = ClamdServer::start();
        assert_eq!(instream(server.port(), EICAR), "stream: Kyufu.Test.EICAR.UNOFFICIAL FOUND");
        assert_eq!(instream(server.port(), MARKER), "stream: Kyufu.Test.Marker.UNOFFICIAL FOUND");
        assert_eq!(instream(server.port(), b"%PDF-1.4\nnothing to see\n%%EOF\n"), "stream: OK");
    }
}
