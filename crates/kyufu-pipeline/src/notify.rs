//! Coupon notifications: an email to the guardian with the coupon code and the redemption site, in
//! Japanese and English.
//!
//! Sending is its own stage (`notify`, consumer of `applications.issued`), so a mail outage never
//! holds back issuance: the coupon is issued and visible in the status lookup whatever the mail
//! server does, while the notify stage retries (an unreachable server is retried until it answers;
//! a refused message is retried a few times, then dead-lettered). A sent notification is recorded
//! (a claim per application), so a replay does not mail twice; a crash between sending and
//! recording can, rarely, send a second copy of the same email.
//!
//! Composition and transport are apart: this module composes each email (`coupon_email`) as a
//! subject and the same text twice, plain and HTML (`Notification`); `mime_message` makes any
//! notification a complete message (From, To, Date, Message-ID, MIME-Version, the subject encoded
//! per RFC 2047, `multipart/alternative` with `text/plain` and `text/html` in UTF-8), and both
//! transports send exactly that: SMTP in production (`SmtpNotifier`, lettre with rustls: plain,
//! STARTTLS or implicit TLS, from the URL) and a folder of `.eml` files under the embedded default
//! (`OutboxNotifier`).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use kyufu_domain::html::escape as html_escape;
use kyufu_domain::{Program, Status};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::{Message, StatusStore};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use uuid::Uuid;

use crate::metrics::StageMetrics;
use crate::runner::{Handled, Stage, StageError};

pub const NAME: &str = "notify";

/// Owner of the `notified:` claim of an application whose email went out.
const SENT: &str = "sent";

/// One email to send: what it says, composed here; how it goes is the transport's business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub application_id: Uuid,
    pub to: String,
    pub subject: String,
    /// The plain-text part.
    pub text: String,
    /// The HTML part: the same content (values escaped with `kyufu_domain::html::escape`).
    pub html: String,
}

/// Why a notification was not sent.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// The mail server could not be reached; try again later.
    #[error("mail server unavailable: {0}")]
    Unavailable(String),
    /// The message was refused (bad address, policy); retrying the same will not help.
    #[error("notification refused: {0}")]
    Refused(String),
}

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError>;
}

/// The coupon email, Japanese first.
pub fn coupon_email(program: &Program, application_id: Uuid, to: &str, child_given_name: &str, code: &str) -> Notification {
    let subject = format!("【{}】クーポンのお知らせ / Your coupon", program.name);
    let url = &program.redemption_url;
    let text = format!(
        "{child_given_name} さんの申請が承認されました。\n\
         クーポン番号: {code}\n\
         お米・食品の引き換えはこちら: {url}\n\
         申請番号: {application_id}\n\
         \n\
         The application for {child_given_name} has been approved.\n\
         Coupon code: {code}\n\
         Redeem it for rice or food at: {url}\n\
         Application id: {application_id}\n",
    );
    let (name, code, url) = (html_escape(child_given_name), html_escape(code), html_escape(url));
    let html = format!(
        "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"></head><body>\
         <p>{name} さんの申請が承認されました。</p>\
         <p>クーポン番号: <strong>{code}</strong></p>\
         <p>お米・食品の引き換えはこちら: <a href=\"{url}\">{url}</a></p>\
         <p>申請番号: {application_id}</p>\
         <hr><div lang=\"en\">\
         <p>The application for {name} has been approved.</p>\
         <p>Coupon code: <strong>{code}</strong></p>\
         <p>Redeem it for rice or food at: <a href=\"{url}\">{url}</a></p>\
         <p>Application id: {application_id}</p></div></body></html>\n",
    );
    Notification { application_id, to: to.to_owned(), subject, text, html }
}


/// The sender of every email: `"給付金窓口 <noreply@example.jp>"` or a bare address.
pub fn sender(from: &str) -> Result<Mailbox, String> {
    from.parse::<Mailbox>().map_err(|e| format!("bad sender address: {e}"))
}

/// `n` as a complete message from `from`: From, To, Date, a fresh Message-ID at the sender's
/// domain, MIME-Version, the subject encoded (RFC 2047) and `multipart/alternative` with the plain
/// text and the HTML. A recipient that is not an address is `Refused`.
pub fn mime_message(from: &Mailbox, n: &Notification) -> Result<lettre::Message, NotifyError> {
    let to = n.to.parse::<Mailbox>().map_err(|e| NotifyError::Refused(format!("recipient: {e}")))?;
    lettre::Message::builder()
        .from(from.clone())
        .to(to)
        .subject(n.subject.clone())
        .message_id(Some(format!("<{}@{}>", Uuid::new_v4(), from.email.domain())))
        .multipart(MultiPart::alternative_plain_html(n.text.clone(), n.html.clone()))
        .map_err(|e| NotifyError::Refused(e.to_string()))
}

/// Writes each email, as the complete message SMTP would carry, to `<dir>/<application id>.eml`
/// (a resend overwrites).
pub struct OutboxNotifier {
    dir: PathBuf,
    from: Mailbox,
}

impl OutboxNotifier {
    pub fn new(dir: PathBuf, from: &str) -> Result<Self, String> {
        Ok(OutboxNotifier { dir, from: sender(from)? })
    }
}

#[async_trait]
impl Notifier for OutboxNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let message = mime_message(&self.from, n)?;
        let io = |e: std::io::Error| NotifyError::Unavailable(e.to_string());
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        let path = self.dir.join(format!("{}.eml", n.application_id));
        let tmp = self.dir.join(format!(".{}.eml.tmp", n.application_id));
        tokio::fs::write(&tmp, message.formatted()).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)
    }
}

/// Sends through an SMTP server, with TLS as the URL says (lettre's own URL parsing):
/// `smtp://host[:port]` plain (port 25; a relay on the same host or pod), `smtp://host:587?tls=required`
/// STARTTLS, refusing to go on without it, and `smtps://host[:port]` implicit TLS (port 465);
/// `user:password@` before the host adds AUTH. Certificates are checked against the system's
/// trust store (`SSL_CERT_FILE` / `SSL_CERT_DIR` add to it).
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpNotifier {
    /// `url` as above; `from` an address like `"給付金窓口 <noreply@example.jp>"`. The error never
    /// repeats the URL (it may carry a password).
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(url)
            .map_err(|e| format!("bad SMTP URL (smtp://, smtps:// or smtp://…?tls=required): {e}"))?;
        Ok(SmtpNotifier { transport: builder.build(), from: sender(from)? })
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let message = mime_message(&self.from, n)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(NotifyError::Refused(e.to_string())),
            Err(e) => Err(NotifyError::Unavailable(e.to_string())),
        }
    }
}

/// The notify stage: sends the coupon email of each issued application once.
pub struct NotifyStage {
    pub status: Arc<dyn StatusStore>,
    pub notifier: Arc<dyn Notifier>,
    pub program: Program,
    pub metrics: StageMetrics,
}

#[async_trait]
impl Stage for NotifyStage {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, _raw: &Message) -> Result<Handled, StageError> {
        let Some(record) = self.status.get(ev.application_id).await? else {
            return Err(StageError::Poison("no status record".into()));
        };
        let (Status::CouponIssued, Some(code)) = (record.status, record.coupon_code.as_deref()) else {
            return Ok(Handled::Skipped);
        };
        let ns = format!("notified:{}", ev.program_id);
        let key = ev.application_id.to_string();
        let mail = coupon_email(&self.program, ev.application_id, &ev.application.guardian.email, &ev.application.child.given_name, code);
        // The claim reads `sent` once the email went out; a replay stops here (a read, no write).
        if self.status.claimed_by(&ns, &key).await?.as_deref() == Some(SENT) {
            return Ok(Handled::Skipped);
        }
        match self.notifier.send(&mail).await {
            Ok(()) => {
                // Data written before this stage looked first may hold a `pending` claim: handed on.
                self.status.reassign(&ns, &key, "pending", SENT).await?;
                self.metrics.notifications.with_label_values(&["sent"]).inc();
                Ok(Handled::Done("sent"))
            }
            Err(NotifyError::Unavailable(e)) => {
                self.metrics.notifications.with_label_values(&["retried"]).inc();
                Err(StageError::Unavailable(e))
            }
            Err(NotifyError::Refused(e)) => {
                self.metrics.notifications.with_label_values(&["refused"]).inc();
                Err(StageError::Failed(e))
            }
        }
    }
}
