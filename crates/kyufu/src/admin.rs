//! `kyufu admin`: the operators' command line for the waiting room (status, pause, resume, rate,
//! message, queue-everyone, fail-open, session cap, opening time), a thin client of the admin API
//! on the staff port. Prints the queue after each change.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

#[derive(Args)]
pub struct AdminArgs {
    /// Staff address of the gateway (where `/admin/v1` is served). Nodes sharing a queue in Redis
    /// pass a change on to each other, so one node is enough; several (comma-separated or
    /// repeated) are each sent the change, and the command fails if any did not take it.
    #[arg(long, env = "KYUFU_ADMIN_URL", default_value = "http://127.0.0.1:8090", value_delimiter = ',', num_args = 1..)]
    url: Vec<String>,
    /// Admin token; read from the secrets file when not given.
    #[arg(long, env = "KYUFU_ADMIN_TOKEN", hide_env_values = true)]
    token: Option<String>,
    #[arg(long, env = "KYUFU_SECRETS_FILE", default_value = "./data/secrets.json")]
    secrets_file: PathBuf,
    /// Your name, for the audit log.
    #[arg(long, env = "USER", default_value = "operator")]
    operator: String,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand)]
enum Action {
    /// Show the queue: issued, admitted, waiting, paused, rate, message.
    Status,
    /// Stop admitting; everyone keeps their place.
    Pause,
    /// Admit again.
    Resume,
    /// Set admissions per second and burst.
    Rate { per_sec: u32, burst: u32 },
    /// Show a message to everyone waiting.
    Message { text: String },
    /// Remove the message.
    ClearMessage,
    /// Send every new visitor through the queue, even when there is capacity: `on` or `off`.
    QueueEveryone { state: OnOff },
    /// Admit everyone without queuing until an RFC 3339 time (at most 24 h); ends by itself.
    FailOpen {
        #[arg(long)]
        until: String,
    },
    /// End fail-open now.
    EndFailOpen,
    /// Most visitors admitted per pass lifetime; 0 removes the cap.
    SessionCap { max_sessions: u64 },
    /// Opening time (RFC 3339): visitors before it get a random place at opening.
    Opening { opens_at: String },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum OnOff {
    On,
    Off,
}

pub async fn run(args: AdminArgs) -> anyhow::Result<()> {
    let token = match args.token.map_or_else(|| crate::secrets::env_or_file("KYUFU_ADMIN_TOKEN"), |t| Ok(Some(t)))? {
        Some(t) => t,
        None => {
            let text = std::fs::read_to_string(&args.secrets_file)
                .with_context(|| format!("no --token and cannot read {}", args.secrets_file.display()))?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            v["admin_token"].as_str().context("no admin_token in the secrets file")?.to_owned()
        }
    };
    let client = reqwest::Client::new();
    let mut answers = serde_json::Map::new();
    let mut failed = Vec::new();
    for url in &args.url {
        let base = url.trim_end_matches('/');
        match send(&client, base, &args.action, &token, &args.operator).await {
            Ok((true, body)) => {
                answers.insert(base.to_owned(), body);
            }
            Ok((false, body)) => {
                failed.push(base.to_owned());
                answers.insert(base.to_owned(), body);
            }
            Err(e) => {
                failed.push(base.to_owned());
                answers.insert(base.to_owned(), serde_json::json!({"error": format!("{e:#}")}));
            }
        }
    }
    // One node: its answer as is; several: each node's answer under its address.
    let shown = if answers.len() == 1 { answers.into_iter().next().map(|(_, v)| v).unwrap_or_default() } else { answers.into() };
    println!("{}", serde_json::to_string_pretty(&shown)?);
    anyhow::ensure!(failed.is_empty(), "the change did not take on: {}", failed.join(", "));
    Ok(())
}

/// Sends `action` to one node; whether it succeeded, and its answer.
async fn send(client: &reqwest::Client, base: &str, action: &Action, token: &str, operator: &str) -> anyhow::Result<(bool, serde_json::Value)> {
    let req = match action {
        Action::Status => client.get(format!("{base}/admin/v1/queue")),
        Action::Pause => client.post(format!("{base}/admin/v1/pause")),
        Action::Resume => client.post(format!("{base}/admin/v1/resume")),
        Action::Rate { per_sec, burst } => {
            client.put(format!("{base}/admin/v1/rate")).json(&serde_json::json!({"per_sec": per_sec, "burst": burst}))
        }
        Action::Message { text } => client.put(format!("{base}/admin/v1/message")).json(&serde_json::json!({"message": text})),
        Action::ClearMessage => client.delete(format!("{base}/admin/v1/message")),
        Action::QueueEveryone { state } => client
            .put(format!("{base}/admin/v1/queue-everyone"))
            .json(&serde_json::json!({"enabled": matches!(state, OnOff::On)})),
        Action::FailOpen { until } => client.put(format!("{base}/admin/v1/fail-open")).json(&serde_json::json!({"until": until})),
        Action::EndFailOpen => client.delete(format!("{base}/admin/v1/fail-open")),
        Action::SessionCap { max_sessions } => {
            client.put(format!("{base}/admin/v1/session-cap")).json(&serde_json::json!({"max_sessions": max_sessions}))
        }
        Action::Opening { opens_at } => client.put(format!("{base}/admin/v1/opening")).json(&serde_json::json!({"opens_at": opens_at})),
    };
    let resp = req.bearer_auth(token).header("X-Operator", operator).send().await.with_context(|| format!("cannot reach {base}"))?;
    let ok = resp.status().is_success();
    Ok((ok, resp.json().await.unwrap_or(serde_json::Value::Null)))
}
