//! The coupon email as mail servers see it: sent by the SMTP notifier to a small SMTP peer on
//! loopback and written by the outbox notifier, each message is read back with a real MIME parser
//! (`mail-parser`) — headers, the decoded subject, and the coupon code in both languages in both the
//! plain-text and the HTML part, so a wrong body fails. With `?tls=required` or `smtps://`, a server
//! that cannot do TLS gets no message and no credentials. An unreachable server is a retryable
//! failure.

use std::sync::Arc;

use chrono::NaiveDate;
use kyufu_domain::Program;
use kyufu_pipeline::notify::{Notifier, NotifyError, OutboxNotifier, SmtpNotifier};
use mail_parser::{MessageParser, MimeHeaders};
use tokio::net::TcpListener;
use tokio::sync::Mutex;

mod common;
use common::{converse, coupon_email, Seen};

const CODE: &str = "7KQ4-M2XH-9TRB-C3ND-E";

/// Accepts SMTP sessions (no STARTTLS offered) and records them in `seen`.
async fn smtp_peer(listener: TcpListener, seen: Arc<Mutex<Seen>>) {
    while let Ok((sock, _)) = listener.accept().await {
        let seen = seen.clone();
        tokio::spawn(async move { converse(sock, false, false, true, &seen).await });
    }
}

async fn start_peer() -> (u16, Arc<Mutex<Seen>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let seen = Arc::new(Mutex::new(Seen::default()));
    tokio::spawn(smtp_peer(listener, seen.clone()));
    (port, seen)
}

fn program() -> Program {
    Program::demo(NaiveDate::from_ymd_opt(2026, 4, 1).expect("date"))
}

/// `raw` is a valid coupon message for `id`: every header a mail server expects, the subject in
/// 7-bit form that decodes to the composed one, and the code in Japanese and English in both parts.
fn assert_coupon_message(raw: &[u8], id: uuid::Uuid) {
    let text = String::from_utf8_lossy(raw);
    assert!(raw.is_ascii(), "the message goes as 7-bit (encoded parts and subject):\n{text}");
    let msg = MessageParser::default().parse(raw).unwrap_or_else(|| panic!("not a MIME message:\n{text}"));
    let from = msg.from().and_then(|a| a.first()).and_then(|a| a.address()).unwrap_or_default();
    let to = msg.to().and_then(|a| a.first()).and_then(|a| a.address()).unwrap_or_default();
    assert_eq!((from, to), ("noreply@example.jp", "hanako@example.jp"), "{text}");
    assert!(msg.date().is_some(), "Date:\n{text}");
    assert!(msg.message_id().is_some_and(|m| m.ends_with("@example.jp")), "Message-ID:\n{text}");
    assert!(msg.header_raw("MIME-Version").is_some_and(|v| v.trim() == "1.0"), "MIME-Version:\n{text}");
    assert_eq!(msg.subject(), Some(coupon_email(&program(), id, "", "", "").subject.as_str()));
    let ct = msg.content_type().expect("Content-Type");
    assert_eq!((ct.ctype(), ct.subtype()), ("multipart", Some("alternative")), "{text}");
    let plain = msg.body_text(0).expect("text/plain part");
    let html = msg.body_html(0).expect("text/html part");
    assert_eq!(msg.text_body.len() + msg.html_body.len(), 2, "one plain and one HTML part");
    assert!(plain.contains(&format!("クーポン番号: {CODE}")) && plain.contains(&format!("Coupon code: {CODE}")), "{plain}");
    assert!(plain.contains("太郎 さんの申請") && plain.contains(&id.to_string()), "{plain}");
    assert!(html.contains(&format!("クーポン番号: {CODE}")) && html.contains(&format!("Coupon code: {CODE}")), "{html}");
    assert!(html.contains("太郎 さんの申請"), "{html}");
}

#[tokio::test]
async fn the_coupon_email_is_a_valid_message_over_smtp_and_in_the_outbox() {
    let (port, seen) = start_peer().await;
    let notifier = SmtpNotifier::new(&format!("smtp://clerk:secret@127.0.0.1:{port}"), "給付金窓口 <noreply@example.jp>")
        .expect("notifier");
    let id = uuid::Uuid::new_v4();
    let mail = coupon_email(&program(), id, "hanako@example.jp", "太郎", CODE);
    notifier.send(&mail).await.expect("sent");
    let got = std::mem::take(&mut seen.lock().await.messages);
    assert_eq!(got.len(), 1);
    assert_coupon_message(got[0].as_bytes(), id);
    assert!(seen.lock().await.verbs.iter().any(|(v, _)| v == "AUTH"), "credentials from the URL are used");

    let dir = tempfile::tempdir().expect("tempdir");
    let outbox = OutboxNotifier::new(dir.path().to_path_buf(), "給付金窓口 <noreply@example.jp>").expect("outbox");
    outbox.send(&mail).await.expect("written");
    assert_coupon_message(&std::fs::read(dir.path().join(format!("{id}.coupon_issued.eml"))).expect("the .eml"), id);

    // A name with markup stays text in the HTML part.
    let marked = coupon_email(&program(), id, "hanako@example.jp", "<b>太郎</b>", CODE);
    assert!(marked.html.contains("&lt;b&gt;太郎&lt;/b&gt;") && !marked.html.contains("<b>"), "{}", marked.html);

    let bad = coupon_email(&program(), id, "not an address", "太郎", "X");
    assert!(matches!(notifier.send(&bad).await, Err(NotifyError::Refused(_))));
    assert!(matches!(outbox.send(&bad).await, Err(NotifyError::Refused(_))));
}

#[tokio::test]
async fn tls_required_never_falls_back_to_the_clear() {
    let mail = coupon_email(&program(), uuid::Uuid::new_v4(), "hanako@example.jp", "太郎", CODE);
    for url in ["smtp://clerk:secret@127.0.0.1:{port}?tls=required", "smtps://clerk:secret@127.0.0.1:{port}"] {
        let (port, seen) = start_peer().await;
        let notifier = SmtpNotifier::new(&url.replace("{port}", &port.to_string()), "noreply@example.jp").expect("notifier");
        let sent = notifier.send(&mail).await;
        assert!(sent.is_err(), "{url}: a server without TLS must not get the message");
        let seen = seen.lock().await;
        assert!(seen.messages.is_empty(), "{url}");
        assert!(!seen.verbs.iter().any(|(v, _)| v == "AUTH" || v == "MAIL"), "{url}: {:?}", seen.verbs);
    }
}

#[tokio::test]
async fn an_unreachable_mail_server_is_a_retryable_failure_and_bad_urls_are_refused() {
    let port = std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("port").port();
    let notifier = SmtpNotifier::new(&format!("smtp://127.0.0.1:{port}"), "noreply@example.jp").expect("notifier");
    let mail = coupon_email(&program(), uuid::Uuid::new_v4(), "a@example.jp", "太郎", "CODE");
    assert!(matches!(notifier.send(&mail).await, Err(NotifyError::Unavailable(_))));
    for good in ["smtp://relay", "smtp://u:p@mail.example.jp:587?tls=required", "smtps://u:p@mail.example.jp"] {
        assert!(SmtpNotifier::new(good, "a@example.jp").is_ok(), "{good}");
    }
    for bad in ["http://x", "smtp://host:notaport", "relay:25"] {
        let e = SmtpNotifier::new(bad, "a@example.jp").err().unwrap_or_else(|| panic!("{bad} accepted"));
        assert!(!e.contains("host:notaport"), "the URL (it may hold a password) is not repeated: {e}");
    }
    assert!(SmtpNotifier::new("smtp://host", "not an address").is_err());
    assert!(SmtpNotifier::new("smtp://u:hunter2@host:notaport", "a@example.jp").err().is_some_and(|e| !e.contains("hunter2")));
}
