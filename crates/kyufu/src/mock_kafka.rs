//! `kyufu mock-kafka`: librdkafka's mock Kafka cluster (the real protocol over loopback TCP, data
//! in memory) with the pipeline's topics, for trying the multi-process topology on one machine
//! without a Kafka installation (`scripts/topology.sh`, `make bench-topology`). Not for production:
//! nothing survives the process.

use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

#[derive(Args)]
pub struct MockKafkaArgs {
    /// Brokers in the mock cluster.
    #[arg(long, default_value_t = 3)]
    brokers: i32,
    /// Partitions per topic.
    #[arg(long, default_value_t = 8)]
    partitions: i32,
    /// Topic prefix (as the roles' `--kafka-topic-prefix`).
    #[arg(long, default_value = "")]
    topic_prefix: String,
    /// Write the bootstrap servers to this file once the cluster is up.
    #[arg(long)]
    addr_file: Option<PathBuf>,
}

pub async fn run(args: MockKafkaArgs) -> anyhow::Result<()> {
    let cluster = rdkafka::mocking::MockCluster::new(args.brokers).context("starting librdkafka's mock cluster")?;
    for topic in kyufu_ports::events::topics::ALL {
        let name = format!("{}{}", args.topic_prefix, topic);
        cluster.create_topic(&name, args.partitions, 1).with_context(|| format!("creating topic {name}"))?;
    }
    let servers = cluster.bootstrap_servers();
    if let Some(path) = &args.addr_file {
        std::fs::write(path, &servers).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("mock Kafka cluster: bootstrap servers {servers} ({} brokers, {} partitions per topic). Ctrl-C stops it.", args.brokers, args.partitions);
    crate::all_in_one::shutdown_signal().await;
    drop(cluster);
    Ok(())
}
