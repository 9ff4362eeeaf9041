//! Percentiles and rates from raw samples.

use serde::Serialize;
use std::time::Duration;

/// Latencies in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    pub samples: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Throughput {
    pub sessions: usize,
    pub cells: usize,
    pub cells_per_second: f64,
}

impl Latency {
    /// The percentiles of `samples_ms` (nearest rank); zeros when there is none.
    pub fn of(samples_ms: &[f64]) -> Self {
        let mut sorted = samples_ms.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| {
            if sorted.is_empty() {
                return 0.0;
            }
            let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
            sorted[index]
        };
        Self {
            samples: sorted.len(),
            p50_ms: at(0.50),
            p99_ms: at(0.99),
        }
    }
}

impl Throughput {
    pub fn of(sessions: usize, cells: usize, elapsed: Duration) -> Self {
        Self {
            sessions,
            cells,
            cells_per_second: cells as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE),
        }
    }
}

pub fn ms(elapsed: Duration) -> f64 {
    elapsed.as_secs_f64() * 1000.0
}

/// Per sample, what `total` costs beyond `floor` (measured in the same session), so
/// that one slow session does not pair with another's fast floor.
pub fn overhead(total: &[f64], floor: &[f64]) -> Vec<f64> {
    total.iter().zip(floor).map(|(t, f)| t - f).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_take_the_nearest_rank_of_the_sorted_samples() {
        let samples: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let latency = Latency::of(&samples);
        assert_eq!(latency.samples, 100);
        assert_eq!(latency.p50_ms, 51.0);
        assert_eq!(latency.p99_ms, 99.0);
    }

    #[test]
    fn one_sample_is_every_percentile_and_none_gives_zeros() {
        assert_eq!(
            Latency::of(&[7.5]),
            Latency {
                samples: 1,
                p50_ms: 7.5,
                p99_ms: 7.5
            }
        );
        assert_eq!(
            Latency::of(&[]),
            Latency {
                samples: 0,
                p50_ms: 0.0,
                p99_ms: 0.0
            }
        );
    }

    #[test]
    fn overhead_pairs_each_total_with_the_floor_of_its_own_session() {
        assert_eq!(
            overhead(&[70.0, 90.0, 65.0], &[60.0, 61.0, 66.0]),
            vec![10.0, 29.0, -1.0]
        );
    }

    #[test]
    fn throughput_is_cells_over_elapsed_seconds() {
        let throughput = Throughput::of(8, 2000, Duration::from_millis(500));
        assert_eq!(throughput.cells_per_second, 4000.0);
        assert_eq!((throughput.sessions, throughput.cells), (8, 2000));
    }
}
