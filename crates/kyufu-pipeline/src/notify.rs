//! Coupon notifications: an email to the guardian with the coupon code and the redemption site,
//! in Japanese and English. The embedded default writes each email as a file into an outbox folder
//! (one file per application, so a resend overwrites instead of duplicating).

use std::path::PathBuf;

use async_trait::async_trait;
use kyufu_domain::Program;
use uuid::Uuid;

/// One email to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub application_id: Uuid,
    pub to: String,
    pub subject: String,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
#[error("notification failed: {0}")]
pub struct NotifyError(pub String);

#[async_trait]
pub trait Notifier: Send + Sync + 'static {
    /// Sends `n`. Sending the same notification twice must be harmless.
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

/// Writes each email to `<dir>/<application id>.eml`.
pub struct OutboxNotifier {
    pub dir: PathBuf,
}

#[async_trait]
impl Notifier for OutboxNotifier {
    async fn send(&self, n: &Notification) -> Result<(), NotifyError> {
        tokio::fs::create_dir_all(&self.dir).await.map_err(|e| NotifyError(e.to_string()))?;
        let text = format!(
            "To: {}\nSubject: {}\nContent-Type: text/plain; charset=utf-8\n\n{}",
            n.to, n.subject, n.body
        );
        let path = self.dir.join(format!("{}.eml", n.application_id));
        let tmp = self.dir.join(format!(".{}.eml.tmp", n.application_id));
        tokio::fs::write(&tmp, text).await.map_err(|e| NotifyError(e.to_string()))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| NotifyError(e.to_string()))
    }
}
