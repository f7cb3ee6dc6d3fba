//! The distance a driver drove, from the positions it reported: only plausible movement counts.
//!
//! Each point is timed by when the server received it (a client's own `ts_ms` may be wrong or
//! hostile: alternating it between 0 and now would make any jump look slow). A segment faster
//! than [`MAX_PLAUSIBLE_SPEED_MPS`] is a GPS jump or a forged point: it is not counted, and the
//! trail stays anchored at the last accepted point, so the jump back is not counted either.

use crate::geo::LatLng;

/// A segment faster than this (m/s) is not driving.
pub const MAX_PLAUSIBLE_SPEED_MPS: f64 = 70.0;

/// A trail being driven.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Trail {
    /// The last accepted point and when it was received, epoch ms.
    anchor: Option<(LatLng, i64)>,
    /// Metres counted so far.
    driven_m: f64,
}

impl Trail {
    /// A trail that has already counted `driven_m` (a trip resumed after a restart).
    #[must_use]
    pub const fn resumed(driven_m: f64) -> Self {
        Self {
            anchor: None,
            driven_m,
        }
    }

    /// Adds the point received at `at_ms`; returns whether it was accepted.
    pub fn push(&mut self, point: LatLng, at_ms: i64) -> bool {
        let Some((last, last_ms)) = self.anchor else {
            self.anchor = Some((point, at_ms));
            return true;
        };
        let metres = last.distance_m(point);
        let seconds = (at_ms - last_ms) as f64 / 1_000.0;
        if metres == 0.0 {
            self.anchor = Some((point, at_ms.max(last_ms)));
            return true;
        }
        if seconds > 0.0 && metres / seconds <= MAX_PLAUSIBLE_SPEED_MPS {
            self.driven_m += metres;
            self.anchor = Some((point, at_ms));
            true
        } else {
            false
        }
    }

    /// Metres counted.
    #[must_use]
    pub const fn driven_m(&self) -> f64 {
        self.driven_m
    }
}

/// The plausible distance along `points` (each with its time, epoch ms), in order.
pub fn plausible_distance_m(points: impl IntoIterator<Item = (LatLng, i64)>) -> f64 {
    let mut trail = Trail::default();
    for (point, at_ms) in points {
        trail.push(point, at_ms);
    }
    trail.driven_m()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(lat: f64, lng: f64) -> LatLng {
        LatLng::new(lat, lng).unwrap()
    }

    #[test]
    fn steady_driving_counts_in_full() {
        // ~111 m per 0.001° of latitude, every 10 s: 11 m/s.
        let points = (0..10).map(|i| (p(48.0 + f64::from(i) * 0.001, 2.0), i64::from(i) * 10_000));
        let d = plausible_distance_m(points);
        assert!((d - 1_000.0).abs() < 10.0, "{d}");
    }

    #[test]
    fn a_jump_and_the_jump_back_count_nothing() {
        let mut t = Trail::default();
        assert!(t.push(p(48.0, 2.0), 0));
        assert!(!t.push(p(49.0, 2.0), 1_000), "111 km in a second");
        assert!(t.push(p(48.0001, 2.0), 2_000), "back near the anchor");
        assert!(t.driven_m() < 20.0, "{}", t.driven_m());
    }

    #[test]
    fn points_received_together_cannot_inflate_the_fare_whatever_their_stamps() {
        // A client alternating far-apart points a few ms apart: nothing plausible to count.
        let mut t = Trail::default();
        for i in 0..100 {
            let point = if i % 2 == 0 {
                p(48.0, 2.0)
            } else {
                p(48.1, 2.1)
            };
            t.push(point, 1_000 + i);
        }
        assert!(t.driven_m() < 1.0, "{}", t.driven_m());
    }

    #[test]
    fn a_resumed_trail_keeps_its_distance() {
        let mut t = Trail::resumed(500.0);
        t.push(p(48.0, 2.0), 0);
        t.push(p(48.001, 2.0), 10_000);
        assert!((t.driven_m() - 611.0).abs() < 5.0, "{}", t.driven_m());
    }
}
