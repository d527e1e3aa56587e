//! `make bench-launch`: the simulated launch. A million visitors join within 60 s against 200
//! admissions per second: steady FIFO, with a pre-queue drawn at opening, and with abandonment and
//! a rate dip; prints admission order against arrival order and the ETA shown against the actual
//! wait. Runs the gateway's admission core on virtual time (see `kyufu_gateway::sim` for what is
//! real and what is simulated). `LAUNCH_SIM_VISITORS` changes the crowd size.

use kyufu_gateway::sim::{run, Dip, Params};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let visitors = std::env::var("LAUNCH_SIM_VISITORS").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    println!("launch simulation: the gateway's admission core on a virtual clock.");
    println!("real: queue state, Admission::pump_at (opening, pre-queue draw, session cap, cursor), governor's");
    println!("  GCRA bucket (on governor's FakeRelativeClock), rate meter and ETA, pre-queue places, queue::decide");
    println!("  (each join's ticket signed). simulated: the clock, the visitors (no HTTP, no signature checks on");
    println!("  polls), and polls sampled at join/first poll, +60 s, +600 s, +1800 s instead of every 5 s.");
    println!("actual wait = until the cursor reaches the visitor's place (the next poll adds up to 5 s).");
    let base = Params {
        visitors,
        arrival_secs: 60,
        rate_per_sec: 200,
        burst: 400,
        opens_after_secs: None,
        seed: 2026,
        abandon: 0.0,
        dip: None,
    };
    let scenarios = [
        ("A. steady admission, FIFO", base.clone()),
        ("B. pre-queue opening at t=30 s", Params { opens_after_secs: Some(30), ..base.clone() }),
        (
            "C. 20 % abandon after joining; rate halved for 10 min at t=20 min",
            Params { abandon: 0.2, dip: Some(Dip { at_secs: 1200, secs: 600, rate: 100 }), ..base.clone() },
        ),
    ];
    for (name, params) in scenarios {
        println!();
        println!("== {name}");
        print!("{}", run(params).await);
    }
}
