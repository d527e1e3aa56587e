//! `kafka-cluster`: real Apache Kafka brokers on loopback ports, the same the tests start
//! (`kyufu_testservers::kafka`), for running the multi-process topology by hand
//! (`scripts/topology.sh`, `make run-topology`, `make bench-topology`). Prints the bootstrap
//! servers, writes them to `--addr-file` once every broker answers, then runs until it is killed;
//! the brokers go with it (the harness's watchdog kills them and removes their directories), so
//! nothing survives it. Not for production. `KYUFU_KAFKA_JVM=server` in its environment starts the
//! brokers with the full JIT instead of the tests' quick-start settings (for benchmarks), and
//! `--warm-up N` sends N messages through a scratch topic (produce with `acks=all`, replication,
//! a consumer group's fetches and commits) before the address is written, so a benchmark that
//! starts right after measures warm brokers, not the JIT compiling their hot paths.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use kyufu_testservers::kafka::KafkaCluster;

const USAGE: &str = "usage: kafka-cluster [--brokers N (1-9, default 3)] [--addr-file PATH] [--warm-up MESSAGES]";

fn main() -> ExitCode {
    let mut brokers = 3;
    let mut addr_file = None;
    let mut warm_up = 0usize;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match (arg.as_str(), args.next().map(|v| (v.parse::<usize>(), v))) {
            ("--brokers", Some((Ok(n @ 1..=9), _))) => brokers = n,
            ("--addr-file", Some((_, path))) => addr_file = Some(path),
            ("--warm-up", Some((Ok(n), _))) => warm_up = n,
            _ => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let cluster = KafkaCluster::start(brokers);
    let bootstrap = cluster.bootstrap();
    if warm_up > 0 {
        let started = std::time::Instant::now();
        match kyufu_testservers::kafka::warm_up(&bootstrap, warm_up) {
            Ok(()) => println!("kafka-cluster: {warm_up} messages through a scratch topic in {:.1} s", started.elapsed().as_secs_f64()),
            Err(e) => {
                eprintln!("kafka-cluster: warm-up failed: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(path) = &addr_file {
        if let Err(e) = std::fs::write(path, &bootstrap) {
            eprintln!("kafka-cluster: writing {path}: {e}");
            return ExitCode::FAILURE;
        }
    }
    let logs: Vec<String> = (0..brokers).map(|i| cluster.dir(i).join("server.log").display().to_string()).collect();
    println!("kafka-cluster: {brokers} broker(s) at {bootstrap}; logs {}. Kill this process to stop them.", logs.join(" "));
    loop {
        std::thread::park();
    }
}
