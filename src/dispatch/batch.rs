//! Batched assignment (SPEC §6 rule 5): the riders of one window and the drivers in reach of
//! them, paired to minimise the total pickup distance, instead of each rider taking the nearest
//! driver left in arrival order.
//!
//! The input is a rider × driver matrix of pickup distances in whole metres (`None`: the driver
//! is out of the rider's first radius). The optimal pairing is a Kuhn–Munkres solve (the
//! `pathfinding` crate): it first matches as many riders as can be matched, then minimises the
//! total distance among those pairings. The solve is O(n²·m), so it runs on each group of riders
//! linked through shared drivers separately, and within a group at most `cap` riders (in
//! arrival order) are solved jointly and the rest take the nearest driver left, one by one.

use pathfinding::kuhn_munkres::kuhn_munkres_min;
use pathfinding::matrix::Matrix;

/// For each rider (in the order given) the driver it is paired with, if any.
pub type Assignment = Vec<Option<usize>>;

/// Riders a window solves jointly by default; the rest are paired greedily.
pub const DEFAULT_CAP: usize = 300;

/// First come, nearest first: each rider in turn takes the nearest driver still free (today's
/// rule 1 applied to a window).
#[must_use]
pub fn greedy(costs: &[Vec<Option<u32>>], drivers: usize) -> Assignment {
    let mut taken = vec![false; drivers];
    greedy_from(costs, &mut taken)
}

fn greedy_from(costs: &[Vec<Option<u32>>], taken: &mut [bool]) -> Assignment {
    costs
        .iter()
        .map(|row| {
            let best = row
                .iter()
                .enumerate()
                .filter(|&(d, c)| c.is_some() && !taken.get(d).copied().unwrap_or(true))
                .min_by_key(|&(d, c)| (c.unwrap_or(u32::MAX), d))
                .map(|(d, _)| d)?;
            taken[best] = true;
            Some(best)
        })
        .collect()
}

/// The pairing that matches the most riders and, among those, has the least total pickup
/// distance. Riders that share no reachable driver cannot affect each other's pairing, so each
/// group of riders linked through shared drivers is solved on its own (a city's window falls
/// apart into many small groups); within a group, riders past the first `cap` are paired
/// greedily with the drivers left.
#[must_use]
pub fn optimal(costs: &[Vec<Option<u32>>], drivers: usize, cap: usize) -> Assignment {
    let rows: Vec<Vec<(usize, u32)>> = costs
        .iter()
        .map(|row| {
            row.iter()
                .take(drivers)
                .enumerate()
                .filter_map(|(d, c)| c.map(|c| (d, c)))
                .collect()
        })
        .collect();
    optimal_sparse(&rows, drivers, cap)
}

/// [`optimal`] over each rider's reachable drivers only, `(driver, metres)`: what a live window
/// has (each trip reads its few nearest drivers), without a riders × drivers matrix of mostly
/// empty cells.
#[must_use]
pub fn optimal_sparse(rows: &[Vec<(usize, u32)>], drivers: usize, cap: usize) -> Assignment {
    let mut out = vec![None; rows.len()];
    for (riders, cols) in groups(rows, drivers) {
        let mut col_of: rustc_hash::FxHashMap<usize, usize> = rustc_hash::FxHashMap::default();
        for (c, &d) in cols.iter().enumerate() {
            col_of.insert(d, c);
        }
        let sub: Vec<Vec<Option<u32>>> = riders
            .iter()
            .map(|&r| {
                let mut line = vec![None; cols.len()];
                for &(d, metres) in &rows[r] {
                    if let Some(&c) = col_of.get(&d) {
                        line[c] = Some(line[c].map_or(metres, |m: u32| m.min(metres)));
                    }
                }
                line
            })
            .collect();
        for (&r, pick) in riders.iter().zip(capped(&sub, cols.len(), cap)) {
            out[r] = pick.map(|c| cols[c]);
        }
    }
    out
}

/// The first `cap` riders solved jointly, the rest greedily over the drivers left.
fn capped(costs: &[Vec<Option<u32>>], drivers: usize, cap: usize) -> Assignment {
    let joint = costs.len().min(cap);
    let mut out = solve(&costs[..joint], drivers);
    let mut taken = vec![false; drivers];
    for d in out.iter().flatten() {
        taken[*d] = true;
    }
    out.extend(greedy_from(&costs[joint..], &mut taken));
    out
}

/// The connected groups of riders and drivers (linked by a reachable pair), riders in their
/// given order, drivers in ascending order; riders with no driver in reach are left out (they
/// stay unpaired).
fn groups(rows: &[Vec<(usize, u32)>], drivers: usize) -> Vec<(Vec<usize>, Vec<usize>)> {
    fn root(parent: &mut [usize], mut x: usize) -> usize {
        while parent[x] != x {
            parent[x] = parent[parent[x]];
            x = parent[x];
        }
        x
    }
    let riders = rows.len();
    // Riders are nodes 0..riders, drivers riders..riders + drivers.
    let mut parent: Vec<usize> = (0..riders + drivers).collect();
    for (r, row) in rows.iter().enumerate() {
        for &(d, _) in row.iter().filter(|(d, _)| *d < drivers) {
            let (a, b) = (root(&mut parent, r), root(&mut parent, riders + d));
            parent[a.max(b)] = a.min(b);
        }
    }
    let mut by_root: rustc_hash::FxHashMap<usize, (Vec<usize>, Vec<usize>)> =
        rustc_hash::FxHashMap::default();
    for r in 0..riders {
        let g = root(&mut parent, r);
        by_root.entry(g).or_default().0.push(r);
    }
    let mut seen = vec![false; drivers];
    for row in rows {
        for &(d, _) in row.iter().filter(|(d, _)| *d < drivers) {
            if !std::mem::replace(&mut seen[d], true) {
                let g = root(&mut parent, riders + d);
                if let Some(group) = by_root.get_mut(&g) {
                    group.1.push(d);
                }
            }
        }
    }
    let mut out: Vec<(Vec<usize>, Vec<usize>)> = by_root
        .into_values()
        .filter(|(_, cols)| !cols.is_empty())
        .map(|(rows, mut cols)| {
            cols.sort_unstable();
            (rows, cols)
        })
        .collect();
    out.sort_unstable_by_key(|(rows, _)| rows[0]);
    out
}

/// Kuhn–Munkres over the whole matrix. An out-of-reach pair costs more than any set of
/// reachable pairs could, so the solve prefers one more matched rider over any distance saved.
fn solve(costs: &[Vec<Option<u32>>], drivers: usize) -> Assignment {
    let riders = costs.len();
    if riders == 0 || drivers == 0 {
        return vec![None; riders];
    }
    let longest = costs
        .iter()
        .flatten()
        .flatten()
        .map(|&c| i64::from(c))
        .max()
        .unwrap_or(0);
    let unreachable = (longest + 1) * (riders.min(drivers) as i64 + 1);
    let cost = |r: usize, d: usize| {
        costs[r]
            .get(d)
            .copied()
            .flatten()
            .map_or(unreachable, i64::from)
    };
    // The solver wants no more rows than columns: put the shorter side in the rows.
    let pairs: Vec<(usize, usize)> = if riders <= drivers {
        let m = Matrix::from_fn(riders, drivers, |(r, d)| cost(r, d));
        let (_, cols) = kuhn_munkres_min(&m);
        cols.into_iter().enumerate().collect()
    } else {
        let m = Matrix::from_fn(drivers, riders, |(d, r)| cost(r, d));
        let (_, cols) = kuhn_munkres_min(&m);
        cols.into_iter().enumerate().map(|(d, r)| (r, d)).collect()
    };
    let mut out = vec![None; riders];
    for (r, d) in pairs {
        if cost(r, d) < unreachable {
            out[r] = Some(d);
        }
    }
    out
}

/// Riders left unmatched and the total pickup distance of the matched ones.
#[must_use]
pub fn score(costs: &[Vec<Option<u32>>], assignment: &[Option<usize>]) -> (usize, u64) {
    let mut unmatched = 0;
    let mut total = 0_u64;
    for (row, pick) in costs.iter().zip(assignment) {
        match pick.and_then(|d| row.get(d).copied().flatten()) {
            Some(c) => total += u64::from(c),
            None => unmatched += 1,
        }
    }
    (unmatched, total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Every pairing of riders to distinct drivers (or none), the best by (unmatched, total).
    fn brute_force(costs: &[Vec<Option<u32>>], drivers: usize) -> (usize, u64) {
        fn go(
            costs: &[Vec<Option<u32>>],
            r: usize,
            taken: &mut Vec<bool>,
            picks: &mut Vec<Option<usize>>,
            best: &mut (usize, u64),
        ) {
            if r == costs.len() {
                *best = (*best).min(score(costs, picks));
                return;
            }
            picks.push(None);
            go(costs, r + 1, taken, picks, best);
            picks.pop();
            for d in 0..taken.len() {
                if !taken[d] && costs[r][d].is_some() {
                    taken[d] = true;
                    picks.push(Some(d));
                    go(costs, r + 1, taken, picks, best);
                    picks.pop();
                    taken[d] = false;
                }
            }
        }
        let mut best = (usize::MAX, u64::MAX);
        go(
            costs,
            0,
            &mut vec![false; drivers],
            &mut Vec::new(),
            &mut best,
        );
        best
    }

    fn window(
        max_riders: usize,
        max_drivers: usize,
    ) -> impl Strategy<Value = (Vec<Vec<Option<u32>>>, usize)> {
        sparse_window(max_riders, max_drivers, 0.8)
    }

    fn sparse_window(
        max_riders: usize,
        max_drivers: usize,
        reach: f64,
    ) -> impl Strategy<Value = (Vec<Vec<Option<u32>>>, usize)> {
        (1..=max_riders, 1..=max_drivers).prop_flat_map(move |(riders, drivers)| {
            (
                prop::collection::vec(
                    prop::collection::vec(prop::option::weighted(reach, 0_u32..5_000), drivers),
                    riders,
                ),
                Just(drivers),
            )
        })
    }

    fn is_a_pairing(
        assignment: &[Option<usize>],
        costs: &[Vec<Option<u32>>],
        drivers: usize,
    ) -> bool {
        let mut seen = vec![false; drivers];
        assignment.iter().zip(costs).all(|(pick, row)| match pick {
            None => true,
            Some(d) => {
                let fresh = *d < drivers && !seen[*d] && row[*d].is_some();
                if *d < drivers {
                    seen[*d] = true;
                }
                fresh
            }
        })
    }

    proptest! {
        #[test]
        fn optimal_equals_brute_force_on_small_windows((costs, drivers) in window(5, 5)) {
            let got = optimal(&costs, drivers, DEFAULT_CAP);
            prop_assert!(is_a_pairing(&got, &costs, drivers));
            prop_assert_eq!(score(&costs, &got), brute_force(&costs, drivers));
        }

        #[test]
        fn optimal_equals_brute_force_when_the_window_falls_apart_into_groups(
            (costs, drivers) in sparse_window(6, 6, 0.25)
        ) {
            let got = optimal(&costs, drivers, DEFAULT_CAP);
            prop_assert!(is_a_pairing(&got, &costs, drivers));
            prop_assert_eq!(score(&costs, &got), brute_force(&costs, drivers));
        }

        #[test]
        fn optimal_is_never_worse_than_greedy((costs, drivers) in window(40, 40), cap in 1_usize..50) {
            let best = optimal(&costs, drivers, cap);
            let first_come = greedy(&costs, drivers);
            prop_assert!(is_a_pairing(&best, &costs, drivers));
            prop_assert!(is_a_pairing(&first_come, &costs, drivers));
            if cap >= costs.len() {
                prop_assert!(score(&costs, &best) <= score(&costs, &first_come));
            }
        }
    }

    #[test]
    fn the_line_of_the_spec_pairs_each_driver_with_the_far_rider_nearest_first_would_not() {
        // Riders A at 0 m and B at 1 000 m, driver 1 at 400 m and driver 2 at −700 m on one line.
        let costs = vec![vec![Some(400), Some(700)], vec![Some(600), Some(1_700)]];
        assert_eq!(
            greedy(&costs, 2),
            vec![Some(0), Some(1)],
            "A takes driver 1"
        );
        assert_eq!(score(&costs, &greedy(&costs, 2)), (0, 2_100));
        assert_eq!(optimal(&costs, 2, DEFAULT_CAP), vec![Some(1), Some(0)]);
        assert_eq!(score(&costs, &optimal(&costs, 2, DEFAULT_CAP)), (0, 1_300));
    }

    #[test]
    fn riders_past_the_cap_take_the_nearest_driver_left() {
        let costs = vec![vec![Some(400), Some(700)], vec![Some(600), Some(1_700)]];
        // Only A is solved jointly (it takes driver 1, its nearest); B gets what is left.
        assert_eq!(optimal(&costs, 2, 1), vec![Some(0), Some(1)]);
        assert_eq!(optimal(&[], 3, 10), Vec::<Option<usize>>::new());
        assert_eq!(optimal(&[vec![], vec![]], 0, 10), vec![None, None]);
    }
}
