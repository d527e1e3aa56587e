//! Prints how long the registry takes to generate, write and load, and how much memory it holds:
//! `registry_figures write PATH [HOUSEHOLDS]` generates (400,000 households ≈ 1.4 million residents
//! by default) and writes a CSV; `registry_figures load PATH` loads one and answers lookups. Run the
//! two as separate processes so the peak resident memory of `load` is the loader's alone.

use std::error::Error;
use std::path::PathBuf;
use std::time::Instant;

use chrono::NaiveDate;
use kyufu_registry::{generate, GeneratorConfig, Registry};

fn peak_rss_mb() -> String {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmHWM:")).map(|l| l.trim_start_matches("VmHWM:").trim().to_owned()))
        .unwrap_or_else(|| "unknown".to_owned())
}

fn main() -> Result<(), Box<dyn Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let reference = NaiveDate::from_ymd_opt(2026, 4, 1).ok_or("date")?;
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["write", path, rest @ ..] => {
            let households = rest.first().map(|h| h.parse()).transpose()?.unwrap_or(400_000);
            let t = Instant::now();
            let r = generate(&GeneratorConfig { seed: 1, households, reference_date: reference, ..GeneratorConfig::default() });
            let generated = t.elapsed();
            r.write_path(&PathBuf::from(path))?;
            let size = std::fs::metadata(path)?.len();
            println!(
                "generated {} residents in {} households in {generated:.2?}, wrote {} MB in {:.2?}; peak RSS {}",
                r.len(),
                r.household_count(),
                size / 1_000_000,
                t.elapsed() - generated,
                peak_rss_mb()
            );
            println!("{}", r.special_cases(reference));
        }
        ["load", path] => {
            let t = Instant::now();
            let r = Registry::load_path(&PathBuf::from(path))?;
            let loaded = t.elapsed();
            println!("loaded {} residents in {loaded:.2?}; peak RSS {}", r.len(), peak_rss_mb());
            let t = Instant::now();
            let mut found = 0usize;
            for p in r.iter().step_by(7) {
                found += usize::from(r.by_id(&p.resident_id).is_some());
                found += r.find_by_kana_and_birth(&p.family_name_kana, &p.given_name_kana, p.birth_date).len().min(1);
                found += usize::from(!r.household(&p.household_id).is_empty());
            }
            println!("{found} lookups (id, kana + birth, household) in {:.2?}", t.elapsed());
            let t = Instant::now();
            let sample = r.sample_households(reference, 18, 10_000, 1);
            println!("sampled {} applicable households in {:.2?}", sample.len(), t.elapsed());
        }
        _ => return Err("usage: registry_figures write PATH [HOUSEHOLDS] | registry_figures load PATH".into()),
    }
    Ok(())
}
