//! A small SMTP peer for the notifier tests: records what it is sent; and the coupon email they send.

use kyufu_domain::Program;
use kyufu_pipeline::notify::{email, MailFacts, MailKind, Notification};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

#[derive(Default)]
pub struct Seen {
    /// Each command verb, and whether it came over TLS.
    pub verbs: Vec<(String, bool)>,
    pub messages: Vec<String>,
}

/// One SMTP exchange on `stream` until QUIT or STARTTLS; `Some(reader)` back when the client asked
/// for STARTTLS (and `starttls` allows it).
pub async fn converse<S: AsyncRead + AsyncWrite + Unpin>(stream: S, tls: bool, starttls: bool, greet: bool, seen: &Mutex<Seen>) -> Option<S> {
    let mut stream = BufReader::new(stream);
    if greet {
        stream.write_all(b"220 test ESMTP\r\n").await.ok()?;
    }
    let (mut in_data, mut data, mut line) = (false, String::new(), String::new());
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if in_data {
            if l == "." {
                in_data = false;
                seen.lock().await.messages.push(std::mem::take(&mut data));
                stream.write_all(b"250 queued\r\n").await.ok()?;
            } else {
                data.push_str(l.strip_prefix('.').unwrap_or(l));
                data.push_str("\r\n");
            }
            continue;
        }
        let verb = l.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
        seen.lock().await.verbs.push((verb.clone(), tls));
        let reply: &[u8] = match verb.as_str() {
            "EHLO" if starttls && !tls => b"250-test\r\n250-STARTTLS\r\n250 8BITMIME\r\n",
            "EHLO" => b"250-test\r\n250-AUTH PLAIN LOGIN\r\n250 8BITMIME\r\n",
            "STARTTLS" if starttls && !tls => {
                stream.write_all(b"220 go ahead\r\n").await.ok()?;
                return Some(stream.into_inner());
            }
            "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
            "AUTH" => b"235 ok\r\n",
            "DATA" => {
                in_data = true;
                b"354 go ahead\r\n"
            }
            "QUIT" => {
                let _ = stream.write_all(b"221 bye\r\n").await;
                return None;
            }
            _ => b"500 what\r\n",
        };
        stream.write_all(reply).await.ok()?;
    }
}

/// The coupon email of application `id`, its id standing in for the reference.
pub fn coupon_email(program: &Program, id: uuid::Uuid, to: &str, who: &str, code: &str) -> Notification {
    let reference = id.to_string();
    let facts = MailFacts { program, who, reference: &reference, code: "AB12-CD34", status_link: "https://kyufu.example.jp/status", coupon_code: Some(code) };
    email(MailKind::CouponIssued, &facts, id, to)
}
