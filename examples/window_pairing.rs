//! One window on its own: riders and free drivers uniform in a 10 × 10 km square, pairs within
//! 2 km (the first radius step), total pickup distance of first-come nearest-first against the
//! optimal pairing, for several drivers-per-rider ratios: a window frozen in time, where joint
//! pairing shows most; `hexdispatch simulate` shows what it is worth in a city that moves
//! (docs/MATCHING.md has both).
//!
//! cargo run --release --example window_pairing -- [riders=50] [windows=200]

use hexdispatch::dispatch::batch::{DEFAULT_CAP, greedy, optimal, score};
use rand::{Rng, SeedableRng, rngs::StdRng};

fn arg(n: usize, default: usize) -> usize {
    std::env::args()
        .nth(n)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let riders = arg(1, 50);
    let windows = arg(2, 200);
    let mut rng = StdRng::seed_from_u64(11);
    println!(
        "| drivers per rider | riders | mean pickup, greedy → optimal | riders matched per window, greedy → optimal |"
    );
    println!("| ---: | ---: | --- | --- |");
    for ratio in [0.8, 1.0, 1.2, 2.0, 5.0] {
        let drivers = (riders as f64 * ratio).round() as usize;
        let (mut total_g, mut total_o, mut matched_g, mut matched_o) = (0u64, 0u64, 0, 0);
        for _ in 0..windows {
            let mut point = || {
                (
                    rng.random_range(0.0..10_000.0),
                    rng.random_range(0.0..10_000.0),
                )
            };
            let r: Vec<(f64, f64)> = (0..riders).map(|_| point()).collect();
            let d: Vec<(f64, f64)> = (0..drivers).map(|_| point()).collect();
            let costs: Vec<Vec<Option<u32>>> = r
                .iter()
                .map(|a| {
                    d.iter()
                        .map(|b| {
                            let m = ((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt();
                            (m <= 2_000.0).then_some(m.round() as u32)
                        })
                        .collect()
                })
                .collect();
            let (ug, g) = score(&costs, &greedy(&costs, drivers));
            let (uo, o) = score(&costs, &optimal(&costs, drivers, DEFAULT_CAP));
            total_g += g;
            total_o += o;
            matched_g += riders - ug;
            matched_o += riders - uo;
        }
        let (mean_g, mean_o) = (
            total_g as f64 / matched_g.max(1) as f64,
            total_o as f64 / matched_o.max(1) as f64,
        );
        println!(
            "| {ratio} | {riders} | {mean_g:.0} m → {mean_o:.0} m ({:+.0} %) | {:.1} → {:.1} |",
            (mean_o / mean_g - 1.0) * 100.0,
            matched_g as f64 / windows as f64,
            matched_o as f64 / windows as f64
        );
    }
}
