//! Secrets of a deployment: the keyring that signs tickets and passes, the identity-key secret and
//! the status-token secret. Read from environment variables when set (production: from a secret
//! store), otherwise from a JSON file that `all-in-one` creates on first start with fresh random
//! values (mode 0600), so tickets, passes and status tokens survive a restart.
//!
//! Every secret variable `NAME` may instead be given as `NAME_FILE`, the path of a file holding
//! the value (how Docker and Kubernetes mount secrets), so no secret has to sit in an environment
//! listing or in the repository.
//!
//! Rotation (restart each process with the new value; see docs/runbook.md):
//! - pass keys: `kid:secret[,kid:secret...]`, the first signs, all verify; put the new key first,
//!   drop the old one after the pass lifetime;
//! - status-token secret: `current[,previous...]`, the first issues, all verify; drop a previous
//!   secret when its links may stop working;
//! - admin token and reviewer accounts: replaced outright, the old ones stop working at restart;
//! - identity secret: only between programmes (it keys the dedupe index).

use std::path::Path;

use anyhow::Context;
use kyufu_admission::Keyring;
use kyufu_domain::identity::IdentitySecret;
use kyufu_intake::StatusTokens;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SecretsFile {
    /// `kid:secret[,kid:secret...]`, first is current.
    pass_keys: String,
    identity_secret: String,
    status_secret: String,
    /// Review console accounts, `name:<argon2id hash>` entries separated by newlines or `;`
    /// (`kyufu reviewer-entry NAME` makes one).
    #[serde(default)]
    reviewers: Option<String>,
    /// The demo reviewer's password, kept so `make run` can show it (delete it in production).
    #[serde(default)]
    demo_reviewer_password: Option<String>,
    /// Bearer token of the operators' admin API.
    #[serde(default)]
    admin_token: Option<String>,
}

pub struct Secrets {
    /// Review console accounts (`KYUFU_REVIEWERS` or the file), if any.
    pub reviewers: Option<String>,
    pub demo_reviewer_password: Option<String>,
    /// Admin API token (`KYUFU_ADMIN_TOKEN` or the file), if any.
    pub admin_token: Option<String>,
    pub keyring: Keyring,
    pub identity: IdentitySecret,
    pub status_tokens: StatusTokens,
}

fn random_hex() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The value of the environment variable `name`, or else the contents of the file named by
/// `name_FILE` (one trailing newline removed); `None` when neither is set.
pub fn env_or_file(name: &str) -> anyhow::Result<Option<String>> {
    if let Ok(value) = std::env::var(name) {
        return Ok(Some(value));
    }
    let Ok(path) = std::env::var(format!("{name}_FILE")) else { return Ok(None) };
    let text = std::fs::read_to_string(&path).with_context(|| format!("{name}_FILE: reading {path}"))?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(Some(text.strip_suffix('\r').unwrap_or(text).to_owned()))
}

/// Loads secrets from `KYUFU_PASS_KEYS`, `KYUFU_IDENTITY_SECRET`, `KYUFU_STATUS_SECRET`, falling back
/// to `path`; creates `path` when `create` is set and it does not exist.
pub fn load(path: &Path, create: bool) -> anyhow::Result<Secrets> {
    let from_file = if path.exists() {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading secrets file {}", path.display()))?;
        Some(serde_json::from_str::<SecretsFile>(&text).with_context(|| format!("secrets file {} is not valid", path.display()))?)
    } else if create {
        let password: String = random_hex().chars().take(16).collect();
        let fresh = SecretsFile {
            pass_keys: format!("k1:{}", random_hex()),
            identity_secret: random_hex(),
            status_secret: random_hex(),
            reviewers: Some(format!("reviewer:{}", kyufu_review::auth::hash_password(&password))),
            demo_reviewer_password: Some(password),
            admin_token: Some(random_hex()),
        };
        write_private(path, &serde_json::to_string_pretty(&fresh)?)?;
        tracing::info!(path = %path.display(), "created fresh secrets");
        Some(fresh)
    } else {
        None
    };
    let pick = |env: &str, file: Option<&String>| -> anyhow::Result<String> {
        env_or_file(env)?
            .or_else(|| file.cloned())
            .with_context(|| format!("{env} is not set and there is no secrets file at {}", path.display()))
    };
    let pass_keys = pick("KYUFU_PASS_KEYS", from_file.as_ref().map(|f| &f.pass_keys))?;
    let identity = pick("KYUFU_IDENTITY_SECRET", from_file.as_ref().map(|f| &f.identity_secret))?;
    let status = pick("KYUFU_STATUS_SECRET", from_file.as_ref().map(|f| &f.status_secret))?;
    anyhow::ensure!(identity.len() >= 32, "KYUFU_IDENTITY_SECRET must be at least 32 characters");
    let mut status_secrets = status.split(',').map(str::trim);
    let current_status = status_secrets.next().unwrap_or_default().to_owned();
    let previous_status: Vec<Vec<u8>> = status_secrets.map(|s| s.as_bytes().to_vec()).collect();
    anyhow::ensure!(
        current_status.len() >= 32 && previous_status.iter().all(|s| s.len() >= 32),
        "KYUFU_STATUS_SECRET: each comma-separated secret must be at least 32 characters"
    );
    let reviewers = env_or_file("KYUFU_REVIEWERS")?.or_else(|| from_file.as_ref().and_then(|f| f.reviewers.clone()));
    let admin_token = env_or_file("KYUFU_ADMIN_TOKEN")?.or_else(|| from_file.as_ref().and_then(|f| f.admin_token.clone()));
    Ok(Secrets {
        reviewers,
        demo_reviewer_password: from_file.as_ref().and_then(|f| f.demo_reviewer_password.clone()),
        admin_token,
        keyring: Keyring::from_spec(&pass_keys).context("KYUFU_PASS_KEYS / pass_keys")?,
        identity: IdentitySecret::new(identity.into_bytes()),
        status_tokens: StatusTokens::new(current_status.into_bytes()).with_previous(previous_status),
    })
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).with_context(|| format!("creating secrets file {}", path.display()))?;
    f.write_all(text.as_bytes())?;
    f.sync_all()?;
    Ok(())
}
