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
//! Delivery is SMTP in production (`SmtpNotifier`, through the deployment's mail relay) and a
//! folder of `.eml` files under the embedded default (`OutboxNotifier`).

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use kyufu_domain::{Program, Status};
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::{Message, StatusStore};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use uuid::Uuid;

use crate::metrics::StageMetrics;
use crate::runner::{Handled, Stage, StageError};

pub const NAME: &str = "notify";

/// Owner of the `notified:` claim of an application whose email went out.
const SENT: &str = "sent";

/// One email to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub application_id: Uuid,
    pub to: String,
    pub subject: String,
    pub body: String,
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
    let body = format!(
        "{child_given_name} さんの申請が承認されました。\n\
         クーポン番号: {code}\n\
         お米・食品の引き換えはこちら: {url}\n\
         申請番号: {application_id}\n\
         \n\
         The application for {child_given_name} has been approved.\n\
         Coupon code: {code}\n\
         Redeem it for rice or food at: {url}\n\
         Application id: {application_id}\n",
        url = program.redemption_url,
    );
    Notification { application_id, to: to.to_owned(), subject, body }
}

/// Writes each email to `<dir>/<application id>.eml` (a resend overwrites).
pub struct OutboxNotifier {
    pub dir: PathBuf,
}

#[async_trait]
impl Notifier for OutboxNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let io = |e: std::io::Error| NotifyError::Unavailable(e.to_string());
        tokio::fs::create_dir_all(&self.dir).await.map_err(io)?;
        let text = format!("To: {}\nSubject: {}\nContent-Type: text/plain; charset=utf-8\n\n{}", n.to, n.subject, n.body);
        let path = self.dir.join(format!("{}.eml", n.application_id));
        let tmp = self.dir.join(format!(".{}.eml.tmp", n.application_id));
        tokio::fs::write(&tmp, text).await.map_err(io)?;
        tokio::fs::rename(&tmp, &path).await.map_err(io)
    }
}

/// Sends through an SMTP relay (plain SMTP with optional AUTH, as to a local or in-cluster relay
/// that handles TLS onwards).
pub struct SmtpNotifier {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
}

impl SmtpNotifier {
    /// `url` is `smtp://[user:password@]host[:port]`; `from` an address like
    /// `"給付金窓口 <noreply@example.jp>"`.
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let rest = url.strip_prefix("smtp://").ok_or("the SMTP URL must start with smtp://")?;
        let (auth, hostport) = match rest.rsplit_once('@') {
            Some((a, h)) => (Some(a), h),
            None => (None, rest),
        };
        let hostport = hostport.trim_end_matches('/');
        let (host, port) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, p.parse::<u16>().map_err(|_| format!("bad SMTP port {p:?}"))?),
            None => (hostport, 25),
        };
        if host.is_empty() {
            return Err("the SMTP URL has no host".to_owned());
        }
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host).port(port);
        if let Some(a) = auth {
            let (user, pass) = a.split_once(':').unwrap_or((a, ""));
            builder = builder.credentials(Credentials::new(user.to_owned(), pass.to_owned()));
        }
        let from = from.parse::<Mailbox>().map_err(|e| format!("bad sender address: {e}"))?;
        Ok(SmtpNotifier { transport: builder.build(), from })
    }
}

#[async_trait]
impl Notifier for SmtpNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        let to = n.to.parse::<Mailbox>().map_err(|e| NotifyError::Refused(format!("recipient: {e}")))?;
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(n.subject.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(n.body.clone())
            .map_err(|e| NotifyError::Refused(e.to_string()))?;
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
