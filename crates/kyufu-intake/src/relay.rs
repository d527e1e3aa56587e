//! The outbox relay: republishes applications that reached the commit point (their `received`
//! record exists) but may never have reached the bus, because intake died or the bus failed right
//! after the commit. The full event was saved in the document store before the commit, so the relay
//! can always rebuild the message. Republishing is safe: every stage is idempotent.
//!
//! A record is republished only once it has sat in `received` for `after`, and at most `batch`
//! records a round, so a lagging pipeline is not flooded with copies.

use std::future::Future;
use std::time::Duration;

use chrono::Utc;
use kyufu_domain::Status;
use kyufu_ports::events::ApplicationEvent;
use kyufu_ports::AdapterError;
use prometheus::{IntCounter, Opts, Registry};

use crate::IntakePorts;

#[derive(Debug, Clone)]
pub struct RelayConfig {
    pub topic: String,
    /// How long a record may stay in `received` before it is republished.
    pub after: Duration,
    /// How often the relay looks.
    pub interval: Duration,
    /// Most records republished per round.
    pub batch: usize,
}

impl RelayConfig {
    pub fn new(topic: &str) -> Self {
        RelayConfig {
            topic: topic.to_owned(),
            after: Duration::from_secs(600),
            interval: Duration::from_secs(60),
            batch: 500,
        }
    }
}

/// Runs the relay until `shutdown` resolves.
pub async fn run(ports: IntakePorts, config: RelayConfig, registry: Registry, shutdown: impl Future<Output = ()>) {
    let republished = kyufu_telemetry::register(
        &registry,
        IntCounter::with_opts(Opts::new(
            "kyufu_intake_relay_republished_total",
            "Applications the outbox relay republished after they sat in `received`",
        ))
        .expect("static metric"),
    );
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(config.interval) => {}
        }
        match round(&ports, &config).await {
            Ok(n) if n > 0 => {
                republished.inc_by(n);
                tracing::info!(count = n, "outbox relay republished stuck applications");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox relay round failed"),
        }
    }
}

/// One pass over the oldest `received` records; returns how many were republished.
pub async fn round(ports: &IntakePorts, config: &RelayConfig) -> Result<u64, AdapterError> {
    let cutoff = Utc::now() - chrono::Duration::from_std(config.after).unwrap_or(chrono::Duration::MAX);
    let mut count = 0;
    for record in ports.status.list_by_status(Status::Received, config.batch).await? {
        if record.updated_at > cutoff {
            break; // oldest first: the rest are younger still
        }
        let key = crate::payload_key(&record.program_id, record.application_id);
        let Some(doc) = ports.documents.get(&key).await? else {
            tracing::error!(application_id = %record.application_id, "no saved payload for a received application");
            continue;
        };
        let event = match ApplicationEvent::from_json(&doc.bytes) {
            Ok(ev) => ev,
            Err(e) => {
                tracing::error!(application_id = %record.application_id, error = %e, "saved payload unreadable");
                continue;
            }
        };
        ports.bus.publish(&config.topic, event.identity_key.as_bytes(), &doc.bytes).await?;
        count += 1;
    }
    Ok(count)
}
