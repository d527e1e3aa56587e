//! Telemetry shared by every process: one Prometheus registry per process (components register
//! their own metrics on it, so tests can run several systems in one process without clashes), the
//! process collector (CPU, memory, file descriptors), and tracing set up as text or JSON.
//!
//! Metric names follow `kyufu_<subsystem>_<name>_<unit>`; labels come from small fixed sets
//! (route pattern, stage, outcome, error code), never from applicant data.
#![forbid(unsafe_code)]

use prometheus::{Encoder, Registry, TextEncoder};

/// Namespace of every metric the project exports.
pub const NAMESPACE: &str = "kyufu";

/// A fresh registry with the process collector (on Linux) and `kyufu_build_info{version}`
/// registered.
pub fn new_registry() -> Registry {
    let registry = Registry::new();
    // Static definition: construction fails only on a programming error.
    let info = prometheus::IntGaugeVec::new(
        prometheus::Opts::new("kyufu_build_info", "Always 1; the version label tells which build is running"),
        &["version"],
    )
    .expect("static metric");
    info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
    let _ = registry.register(Box::new(info));
    #[cfg(target_os = "linux")]
    {
        let pc = prometheus::process_collector::ProcessCollector::for_self();
        // Registration fails only on a name clash, which a fresh registry cannot have.
        let _ = registry.register(Box::new(pc));
    }
    registry
}

/// The registry in Prometheus text exposition format.
pub fn encode(registry: &Registry) -> String {
    let mut buf = Vec::new();
    let encoder = TextEncoder::new();
    if let Err(e) = encoder.encode(&registry.gather(), &mut buf) {
        tracing::warn!(error = %e, "metrics encoding failed");
    }
    String::from_utf8(buf).unwrap_or_default()
}

/// Content type of `encode`'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Registers `collector` on `registry`, logging (not failing) on a clash so a metric bug never
/// takes a process down.
pub fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, collector: C) -> C {
    if let Err(e) = registry.register(Box::new(collector.clone())) {
        tracing::warn!(error = %e, "metric registration failed");
    }
    collector
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the global tracing subscriber; `RUST_LOG` overrides `default_filter`. Calling it twice
/// is harmless (the second call does nothing).
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colours only on a terminal, so log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(true).with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_exports_registered_and_process_metrics() {
        let r = new_registry();
        let c = register(&r, prometheus::IntCounter::new("kyufu_test_things_total", "things").expect("metric"));
        c.inc_by(3);
        let text = encode(&r);
        assert!(text.contains("kyufu_test_things_total 3"), "{text}");
        assert!(text.contains(&format!("kyufu_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))), "{text}");
        #[cfg(target_os = "linux")]
        assert!(text.contains("process_resident_memory_bytes"), "{text}");
    }
}
