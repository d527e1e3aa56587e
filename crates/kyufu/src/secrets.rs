//! Secrets of a deployment: the keyring that signs tickets and passes, the identity-key secret and
//! the status-token secret. Read from environment variables when set (production: from a secret
//! store), otherwise from a JSON file that `all-in-one` creates on first start with fresh random
//! values (mode 0600), so tickets, passes and status tokens survive a restart.

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
    /// Review console accounts, `name:sha256(password)[,...]`.
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
        std::env::var(env)
            .ok()
            .or_else(|| file.cloned())
            .with_context(|| format!("{env} is not set and there is no secrets file at {}", path.display()))
    };
    let pass_keys = pick("KYUFU_PASS_KEYS", from_file.as_ref().map(|f| &f.pass_keys))?;
    let identity = pick("KYUFU_IDENTITY_SECRET", from_file.as_ref().map(|f| &f.identity_secret))?;
    let status = pick("KYUFU_STATUS_SECRET", from_file.as_ref().map(|f| &f.status_secret))?;
    for (name, value) in [("KYUFU_IDENTITY_SECRET", &identity), ("KYUFU_STATUS_SECRET", &status)] {
        anyhow::ensure!(value.len() >= 32, "{name} must be at least 32 characters");
    }
    let reviewers = std::env::var("KYUFU_REVIEWERS").ok().or_else(|| from_file.as_ref().and_then(|f| f.reviewers.clone()));
    Ok(Secrets {
        reviewers,
        demo_reviewer_password: from_file.as_ref().and_then(|f| f.demo_reviewer_password.clone()),
        admin_token: std::env::var("KYUFU_ADMIN_TOKEN").ok().or_else(|| from_file.as_ref().and_then(|f| f.admin_token.clone())),
        keyring: Keyring::from_spec(&pass_keys).context("KYUFU_PASS_KEYS / pass_keys")?,
        identity: IdentitySecret::new(identity.into_bytes()),
        status_tokens: StatusTokens::new(status.into_bytes()),
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
