//! Citizen emails: a receipt right after an application is accepted, one for each outcome a
//! citizen must hear of (coupon issued, duplicate, sent to a person, rejected), and the links again
//! on request ("lost your link?"). Each carries the short reference, the typeable code and the
//! status link. All wording lives in `compose` — (subject, plain text) per language — and `email`
//! puts Japanese first, English second.
//!
//! Sending is its own stage (`notify`): it consumes `applications.issued` (coupons),
//! `applications.received` (receipts), `applications.settled` (duplicate, review, rejected) and
//! `applications.resend` (links asked for again), so a mail outage never holds back a decision
//! while the stage retries (an unreachable server is retried until it answers; a refused message is
//! retried a few times, then dead-lettered). Each sent email is recorded (a claim per application
//! and kind), so a replay does not mail twice; a crash between sending and recording can, rarely,
//! send a second copy. Resent links are not recorded: intake limits how often they are asked for.
//!
//! Composition and transport are apart: this module composes each email (`email`) as a
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
use kyufu_domain::token::StatusTokens;
use kyufu_domain::{Program, Status};
use kyufu_ports::events::{topics, ApplicationEvent};
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
    /// What it is about (`MailKind::as_str`): one file per kind in the outbox.
    pub kind: &'static str,
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

/// What an email is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailKind {
    /// Right after acceptance.
    Receipt,
    CouponIssued,
    Duplicate,
    NeedsReview,
    Rejected,
    /// The links again, asked for on the "lost your link?" page.
    Links,
}

impl MailKind {
    pub fn as_str(self) -> &'static str {
        match self {
            MailKind::Receipt => "receipt",
            MailKind::CouponIssued => "coupon_issued",
            MailKind::Duplicate => "duplicate",
            MailKind::NeedsReview => "needs_review",
            MailKind::Rejected => "rejected",
            MailKind::Links => "links",
        }
    }

    /// The outcome email a status calls for, if any.
    pub fn for_status(status: Status) -> Option<MailKind> {
        match status {
            Status::CouponIssued => Some(MailKind::CouponIssued),
            Status::Duplicate => Some(MailKind::Duplicate),
            Status::NeedsReview => Some(MailKind::NeedsReview),
            Status::Rejected => Some(MailKind::Rejected),
            Status::Received | Status::Approved => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailLang {
    Ja,
    En,
}

/// What an email says about one application.
#[derive(Debug, Clone)]
pub struct MailFacts<'a> {
    pub program: &'a Program,
    /// The beneficiary's given name, as typed.
    pub who: &'a str,
    /// The short reference (`XXXXX-XXXXX`), or the application id if none could be assigned.
    pub reference: &'a str,
    /// The typeable lookup code.
    pub code: &'a str,
    /// The status page with id and token in the fragment.
    pub status_link: &'a str,
    pub coupon_code: Option<&'a str>,
}

/// Where the links in emails point, and the secret that makes their codes.
#[derive(Debug, Clone)]
pub struct MailLinks {
    pub tokens: StatusTokens,
    /// The public site, e.g. `https://kyufu.example.jp` (no trailing slash needed).
    pub public_url: String,
}

impl MailLinks {
    pub fn status_link(&self, id: Uuid) -> String {
        format!("{}/status#id={id}&token={}", self.public_url.trim_end_matches('/'), self.tokens.issue(id))
    }
}

/// The one place citizen emails are worded: the subject and the plain text of `kind` in `lang`.
/// The status words are the status page's (`Status::label`).
pub fn compose(kind: MailKind, f: &MailFacts<'_>, lang: MailLang) -> (String, String) {
    let ja = lang == MailLang::Ja;
    let pick = |l: (&'static str, &'static str)| if ja { l.0 } else { l.1 };
    let (headline, status) = match kind {
        MailKind::Receipt => (
            if ja { format!("{} さんの申請を受け付けました。", f.who) } else { format!("We have received the application for {}.", f.who) },
            Status::Received,
        ),
        MailKind::Links => (
            if ja { format!("{} さんの申請の確認用リンクを再送します。", f.who) } else { format!("Here again is the status link for {}'s application.", f.who) },
            Status::Received,
        ),
        MailKind::CouponIssued => (
            if ja { format!("{} さんの申請が承認され、クーポンを発行しました。", f.who) } else { format!("The application for {} was approved and the coupon issued.", f.who) },
            Status::CouponIssued,
        ),
        MailKind::Duplicate => (
            if ja {
                format!("{} さんの申請はすでに受け付けています。今回の申請は二重のため受け付けませんでした。最初の申請はそのまま審査されます。", f.who)
            } else {
                format!("An application for {} had already been received, so this second one was not taken. The first one goes on as before.", f.who)
            },
            Status::Duplicate,
        ),
        MailKind::NeedsReview => (
            if ja { format!("{} さんの申請は、担当者が確認しています。結果はメールでお知らせします。", f.who) } else { format!("A member of staff is checking the application for {}. We will email you the result.", f.who) },
            Status::NeedsReview,
        ),
        MailKind::Rejected => (
            if ja { format!("{} さんの申請は、担当者の確認の結果、承認されませんでした。詳しくは窓口にお問い合わせください。", f.who) } else { format!("After review, the application for {} was not approved. Please contact us for details.", f.who) },
            Status::Rejected,
        ),
    };
    let subject_tail = match kind {
        MailKind::Receipt => pick(("申請受付のお知らせ", "Application received")),
        MailKind::Links => pick(("確認用リンクの再送", "Your status link")),
        _ => pick(status.label()),
    };
    let subject = format!("【{}】{subject_tail}", f.program.name);
    let mut body = format!(
        "{headline}\n\n{sl}: {st}\n{rl}: {reference}\n{cl}: {code}\n{ll}: {link}\n",
        sl = pick(("現在の状況", "Current status")),
        st = pick(status.label()),
        rl = pick(("申請番号", "Application number")),
        reference = f.reference,
        cl = pick(("確認用コード", "Status code")),
        code = f.code,
        ll = pick(("状況の確認", "Check the status")),
        link = f.status_link,
    );
    if let (MailKind::CouponIssued, Some(coupon)) = (kind, f.coupon_code) {
        let _ = std::fmt::Write::write_fmt(
            &mut body,
            format_args!(
                "{cl}: {coupon}\n{rl}: {url}\n",
                cl = pick(("クーポン番号", "Coupon code")),
                rl = pick(("お米・食品の引き換え", "Redeem it for rice or food at")),
                url = f.program.redemption_url,
            ),
        );
    }
    body.push_str(pick((
        "\n申請番号と確認用コードは、状況確認のページで入力できます。このメールに心当たりがない場合は破棄してください。\n",
        "\nYou can type the application number and the code on the status page. If you did not apply, please ignore this email.\n",
    )));
    (subject, body)
}

/// The email as sent: the Japanese text first, then the English one; the HTML part says the
/// same, each language marked as such.
pub fn email(kind: MailKind, facts: &MailFacts<'_>, application_id: Uuid, to: &str) -> Notification {
    let (ja_subject, ja_body) = compose(kind, facts, MailLang::Ja);
    let (en_subject, en_body) = compose(kind, facts, MailLang::En);
    let html = format!(
        "<!DOCTYPE html><html lang=\"ja\"><head><meta charset=\"utf-8\"></head><body>\
         <div lang=\"ja\">{}</div><hr><div lang=\"en\">{}</div></body></html>\n",
        html_of(&ja_body),
        html_of(&en_body)
    );
    Notification {
        application_id,
        kind: kind.as_str(),
        to: to.to_owned(),
        subject: format!("{ja_subject} / {en_subject}"),
        text: format!("{ja_body}\n----\n\n{en_body}"),
        html,
    }
}

/// Plain text as HTML: a paragraph per blank-line-separated block, a line break per line, every
/// value escaped, and web addresses as links.
fn html_of(text: &str) -> String {
    let line = |l: &str| -> String {
        match l.find("https://").or_else(|| l.find("http://")) {
            Some(at) => {
                let (head, url) = l.split_at(at);
                let url = html_escape(url.trim_end());
                format!("{}<a href=\"{url}\">{url}</a>", html_escape(head))
            }
            None => html_escape(l),
        }
    };
    text.split("\n\n")
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| format!("<p>{}</p>", p.lines().map(line).collect::<Vec<_>>().join("<br>")))
        .collect()
}


/// Writes each email, as the complete message SMTP would carry, to
/// `<dir>/<application id>.<kind>.eml` (a resend overwrites).

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
        let path = self.dir.join(format!("{}.{}.eml", n.application_id, n.kind));
        let tmp = self.dir.join(format!(".{}.{}.eml.tmp", n.application_id, n.kind));
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

/// The notify stage: sends each application's receipt and outcome emails once, and its links
/// whenever intake asks for them again.
pub struct NotifyStage {
    pub status: Arc<dyn StatusStore>,
    pub notifier: Arc<dyn Notifier>,
    pub program: Program,
    pub links: MailLinks,
    pub metrics: StageMetrics,
}

impl NotifyStage {
    /// Which email a message calls for: by its topic, then by the application's status now.
    fn kind_of(topic: &str, status: Status) -> Option<MailKind> {
        if topic.ends_with(topics::RECEIVED) {
            Some(MailKind::Receipt)
        } else if topic.ends_with(topics::RESEND) {
            Some(MailKind::Links)
        } else {
            MailKind::for_status(status)
        }
    }

    /// Claim namespace recording that `kind` went out (the coupon's keeps its older name).
    fn sent_namespace(&self, kind: MailKind) -> String {
        match kind {
            MailKind::CouponIssued => format!("notified:{}", self.program.id),
            k => format!("notified-{}:{}", k.as_str(), self.program.id),
        }
    }
}

#[async_trait]
impl Stage for NotifyStage {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn handle(&self, ev: &ApplicationEvent, raw: &Message) -> Result<Handled, StageError> {
        let Some(record) = self.status.get(ev.application_id).await? else {
            return Err(StageError::Poison("no status record".into()));
        };
        let Some(kind) = Self::kind_of(&raw.topic, record.status) else { return Ok(Handled::Skipped) };
        if kind == MailKind::CouponIssued && record.coupon_code.is_none() {
            return Ok(Handled::Skipped);
        }
        let ns = self.sent_namespace(kind);
        let key = ev.application_id.to_string();
        // The claim reads `sent` once the email went out; a replay stops here (a read, no write).
        let recorded = kind != MailKind::Links;
        if recorded && self.status.claimed_by(&ns, &key).await?.as_deref() == Some(SENT) {
            return Ok(Handled::Skipped);
        }
        // Idempotent: intake claimed the reference at acceptance; this finds the same one.
        let reference = match kyufu_ports::reference::assign(&*self.status, &self.program.id, ev.application_id).await {
            Ok(r) => r.display(),
            Err(_) => ev.application_id.to_string(),
        };
        let (code, link) = (self.links.tokens.issue_code(ev.application_id), self.links.status_link(ev.application_id));
        let facts = MailFacts {
            program: &self.program,
            who: &ev.application.child.given_name,
            reference: &reference,
            code: &code,
            status_link: &link,
            coupon_code: record.coupon_code.as_deref(),
        };
        let mail = email(kind, &facts, ev.application_id, &ev.application.guardian.email);
        match self.notifier.send(&mail).await {
            Ok(()) => {
                // Data written before this stage looked first may hold a `pending` claim: handed on.
                if recorded {
                    self.status.reassign(&ns, &key, "pending", SENT).await?;
                }
                self.metrics.notifications.with_label_values(&["sent"]).inc();
                Ok(Handled::Done("sent"))
            }
            Err(NotifyError::Unavailable(e)) => {
                self.metrics.notifications.with_label_values(&["retried"]).inc();
                Err(StageError::Unavailable(e))
            }
            // A refused receipt or resend is dropped: dead-lettering would move an application
            // still in `received` to review, and the applicant has the completion page.
            Err(NotifyError::Refused(_)) if matches!(kind, MailKind::Receipt | MailKind::Links) => {
                self.metrics.notifications.with_label_values(&["refused"]).inc();
                Ok(Handled::Done("refused"))
            }
            Err(NotifyError::Refused(e)) => {
                self.metrics.notifications.with_label_values(&["refused"]).inc();
                Err(StageError::Failed(e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts<'a>(program: &'a Program, coupon: Option<&'a str>) -> MailFacts<'a> {
        MailFacts {
            program,
            who: "太郎",
            reference: "7K3QX-M2P9D",
            code: "AB12-CD34",
            status_link: "https://kyufu.example.jp/status#id=x&token=y",
            coupon_code: coupon,
        }
    }

    #[test]
    fn every_email_carries_the_number_the_code_and_the_link_in_both_languages() {
        let p = Program::demo(chrono::NaiveDate::from_ymd_opt(2026, 4, 1).expect("date"));
        let kinds = [MailKind::Receipt, MailKind::CouponIssued, MailKind::Duplicate, MailKind::NeedsReview, MailKind::Rejected, MailKind::Links];
        let mut subjects = std::collections::HashSet::new();
        for kind in kinds {
            for lang in [MailLang::Ja, MailLang::En] {
                let (subject, body) = compose(kind, &facts(&p, Some("RICE-1234")), lang);
                for needed in ["7K3QX-M2P9D", "AB12-CD34", "https://kyufu.example.jp/status#id=x&token=y", "太郎"] {
                    assert!(body.contains(needed), "{kind:?} {lang:?}: {needed} missing in {body}");
                }
                assert!(subject.contains(&p.name));
                subjects.insert(subject);
            }
        }
        assert_eq!(subjects.len(), kinds.len() * 2, "each kind and language has its own subject");
        let (_, coupon) = compose(MailKind::CouponIssued, &facts(&p, Some("RICE-1234")), MailLang::Ja);
        assert!(coupon.contains("RICE-1234") && coupon.contains(&p.redemption_url));
        let (_, review) = compose(MailKind::NeedsReview, &facts(&p, Some("RICE-1234")), MailLang::Ja);
        assert!(!review.contains("RICE-1234"), "only the coupon email carries the coupon");
        // The status words are the status page's.
        let (_, dup) = compose(MailKind::Duplicate, &facts(&p, None), MailLang::En);
        assert!(dup.contains(Status::Duplicate.label().1), "{dup}");
        let (_, rej) = compose(MailKind::Rejected, &facts(&p, None), MailLang::Ja);
        assert!(rej.contains(Status::Rejected.label().0) && !rej.contains(Status::NeedsReview.label().0), "{rej}");
        let both = email(MailKind::Receipt, &facts(&p, None), Uuid::nil(), "a@example.jp");
        assert!(both.text.find("受け付けました").zip(both.text.find("received")).is_some_and(|(ja, en)| ja < en), "Japanese first");
        // The HTML part says the same, escaped, with the status link clickable.
        let odd = MailFacts { who: "<b>太郎</b>", ..facts(&p, None) };
        let html = email(MailKind::Receipt, &odd, Uuid::nil(), "a@example.jp").html;
        assert!(html.contains("&lt;b&gt;太郎&lt;/b&gt;") && !html.contains("<b>"), "{html}");
        assert!(html.contains("<a href=\"https://kyufu.example.jp/status#id=x&amp;token=y\">"), "{html}");
        assert!(html.contains("<div lang=\"ja\">") && html.contains("<div lang=\"en\">"), "{html}");
    }

    #[test]
    fn the_topic_then_the_status_picks_the_email() {
        use MailKind::*;
        assert_eq!(NotifyStage::kind_of("applications.received", Status::CouponIssued), Some(Receipt));
        assert_eq!(NotifyStage::kind_of("pfx.applications.resend", Status::Received), Some(Links));
        assert_eq!(NotifyStage::kind_of("applications.settled", Status::Duplicate), Some(Duplicate));
        assert_eq!(NotifyStage::kind_of("applications.settled", Status::Rejected), Some(Rejected));
        assert_eq!(NotifyStage::kind_of("applications.issued", Status::CouponIssued), Some(CouponIssued));
        assert_eq!(NotifyStage::kind_of("applications.settled", Status::Approved), None);
    }
}
