//! `kyufu eval-triage`: a realistic day (default 70,000 applications) against a registry the size
//! of the prefecture (default 370,000 households, about 1.4 million residents) with a known,
//! labelled share of defects, run through the real pipeline stages on embedded storage; prints the
//! confusion matrix of the automatic decisions against the labels and the two targets: at least
//! 90 % of correct applications approved automatically, every injected defect sent to review.

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use kyufu_pipeline::notify::OutboxNotifier;
use kyufu_pipeline::synthetic::{evaluate, generate_day, DayMix};
use kyufu_pipeline::{PipelineDeps, StageKind, StageMetrics};
use kyufu_registry::GeneratorConfig;
use tokio::sync::watch;

use crate::ProgramArgs;

#[derive(Args)]
pub struct EvalArgs {
    /// Applications in the day.
    #[arg(long, default_value_t = 70_000)]
    applications: usize,
    /// Households in the registry (about 3.8 residents each: 370,000 give about 1.4 million).
    #[arg(long, default_value_t = 370_000)]
    households: usize,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Share of exact duplicates.
    #[arg(long, default_value_t = 0.05)]
    duplicate_share: f64,
    /// Share of each of the seven kinds of defect.
    #[arg(long, default_value_t = 0.02)]
    defect_share: f64,
    #[command(flatten)]
    program: ProgramArgs,
}

pub async fn run(args: EvalArgs) -> anyhow::Result<()> {
    let program = args.program.program();
    let t = Instant::now();
    let registry = Arc::new(kyufu_registry::generate(&GeneratorConfig {
        seed: args.seed,
        households: args.households,
        reference_date: program.reference_date,
        ..GeneratorConfig::default()
    }));
    println!("registry: {} residents in {} households ({:.1} s)", registry.len(), args.households, t.elapsed().as_secs_f64());
    let mix = DayMix { duplicate: args.duplicate_share, defect_each: args.defect_share };
    let apps = generate_day(&registry, program.reference_date, program.age_limit, args.applications, args.seed, &mix);
    println!("day: {} applications", apps.len());

    let dir = tempfile::tempdir()?;
    let store = kyufu_embedded::EmbeddedStore::open(dir.path()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let identity = kyufu_domain::identity::IdentitySecret::new(rand::random::<[u8; 32]>().to_vec());
    let deps = PipelineDeps {
        bus: store.bus(),
        status: store.status_store(),
        documents: store.document_store(),
        units: store.units(),
        registry,
        identity_secret: identity.clone(),
        program,
        notifier: Arc::new(OutboxNotifier::new(dir.path().join("outbox"), "kyufu <noreply@example.jp>").map_err(anyhow::Error::msg)?),
        mail_links: kyufu_pipeline::notify::MailLinks {
            tokens: kyufu_domain::token::StatusTokens::new(rand::random::<[u8; 32]>().to_vec()),
            public_url: "http://localhost".into(),
        },
        metrics: StageMetrics::new(&kyufu_telemetry::new_registry()),
    };
    let (stop, rx) = watch::channel(false);
    let stages: Vec<_> = StageKind::ALL.into_iter().map(|k| kyufu_pipeline::spawn_stage(k, &deps, rx.clone())).collect();
    let c = evaluate(&deps, &identity, &apps, Duration::from_secs(3600)).await.map_err(|e| anyhow::anyhow!("{e}"))?;
    let _ = stop.send(true);
    for s in stages {
        let _ = s.await;
    }
    println!("\n{}", c.table());
    #[allow(clippy::cast_precision_loss)]
    let rate = apps.len() as f64 / c.seconds.max(1e-9);
    println!("processed in {:.1} s ({rate:.0} applications/s through dedupe, ID check and coupon)", c.seconds);
    println!("unsettled: {}", c.unsettled);
    let auto = c.correct_auto_approved();
    let review = c.defects_to_review();
    println!("correct applications approved automatically: {:.2} % (target >= 90 %)", auto * 100.0);
    println!("injected defects sent to review:             {:.2} % (target 100 %)", review * 100.0);
    println!("duplicates marked duplicate:                 {:.2} %", c.duplicates_caught() * 100.0);
    anyhow::ensure!(c.unsettled == 0 && auto >= 0.90 && (review - 1.0).abs() < f64::EPSILON, "triage targets missed");
    Ok(())
}
