//! Counting what arrived: distinct sequence numbers, duplicates, order,
//! and latency percentiles.

use serde_json::{Value, json};

/// Which sequence numbers of one publisher a subscriber has seen.
#[derive(Debug, Clone)]
pub struct SeqTracker {
    capacity: u64,
    seen: Vec<u64>,
    distinct: u64,
    duplicates: u64,
    out_of_order: u64,
    unexpected: u64,
    highest: Option<u64>,
}

impl SeqTracker {
    /// A tracker for sequence numbers `0..capacity`.
    pub fn new(capacity: u64) -> Self {
        let words = usize::try_from(capacity.div_ceil(64)).unwrap_or(usize::MAX);
        Self {
            capacity,
            seen: vec![0; words],
            distinct: 0,
            duplicates: 0,
            out_of_order: 0,
            unexpected: 0,
            highest: None,
        }
    }

    /// Records one arrival.
    pub fn record(&mut self, seq: u64) {
        let (word, bit) = (usize::try_from(seq / 64).unwrap_or(usize::MAX), 1u64 << (seq % 64));
        let Some(slot) = self.seen.get_mut(word).filter(|_| seq < self.capacity) else {
            self.unexpected += 1;
            return;
        };
        if *slot & bit != 0 {
            self.duplicates += 1;
            return;
        }
        *slot |= bit;
        self.distinct += 1;
        match self.highest {
            Some(h) if seq < h => self.out_of_order += 1,
            _ => self.highest = Some(seq),
        }
    }

    /// Distinct sequence numbers seen.
    pub fn distinct(&self) -> u64 {
        self.distinct
    }

    /// Arrivals of a sequence number already seen.
    pub fn duplicates(&self) -> u64 {
        self.duplicates
    }

    /// Arrivals lower than one seen before (first arrivals only).
    pub fn out_of_order(&self) -> u64 {
        self.out_of_order
    }

    /// Arrivals outside `0..capacity` (never sent by this run).
    pub fn unexpected(&self) -> u64 {
        self.unexpected
    }

    /// Sequence numbers recorded here and not in `other`: with the
    /// messages a broker took charge of here and a subscriber's arrivals
    /// in `other`, the messages that subscriber lost.
    pub fn count_not_in(&self, other: &Self) -> u64 {
        let missing = |(i, word): (usize, &u64)| word & !other.seen.get(i).copied().unwrap_or(0);
        self.seen.iter().enumerate().map(missing).map(|w| u64::from(w.count_ones())).sum()
    }
}

/// Latency samples in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Latencies {
    samples: Vec<u64>,
}

impl Latencies {
    /// Records one sample.
    pub fn record(&mut self, nanos: u64) {
        self.samples.push(nanos);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: Self) {
        self.samples.extend(other.samples);
    }

    /// Samples recorded.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// No sample recorded.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }

    /// p50, p90, p99, p99.9, max and mean in microseconds (nearest rank),
    /// and the sample count; nulls without samples.
    pub fn summary(&mut self) -> Value {
        if self.samples.is_empty() {
            return json!({ "samples": 0, "p50": null, "p90": null, "p99": null, "p999": null, "max": null, "mean": null });
        }
        self.samples.sort_unstable();
        let n = self.samples.len();
        let at = |q: f64| {
            // Nearest rank: the smallest sample with at least q of them at or below it.
            let rank = ((q * n as f64).ceil() as usize).clamp(1, n);
            micros(self.samples[rank - 1])
        };
        let mean = self.samples.iter().map(|&s| s as f64).sum::<f64>() / n as f64 / 1000.0;
        json!({
            "samples": n,
            "p50": at(0.50),
            "p90": at(0.90),
            "p99": at(0.99),
            "p999": at(0.999),
            "max": micros(self.samples[n - 1]),
            "mean": round1(mean),
        })
    }
}

fn micros(nanos: u64) -> f64 {
    round1(nanos as f64 / 1000.0)
}

/// `x` rounded to one decimal.
pub fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn tracker_counts_distinct_duplicates_order_and_strays() {
        let mut t = SeqTracker::new(100);
        for seq in [0, 1, 2, 2, 5, 3, 99, 100, 1000] {
            t.record(seq);
        }
        assert_eq!(t.distinct(), 6);
        assert_eq!(t.duplicates(), 1);
        assert_eq!(t.out_of_order(), 1);
        assert_eq!(t.unexpected(), 2);
    }

    #[test]
    fn count_not_in_is_a_set_difference() {
        let (mut settled, mut arrived) = (SeqTracker::new(200), SeqTracker::new(200));
        for seq in [0, 1, 63, 64, 150, 199] {
            settled.record(seq);
        }
        for seq in [1, 64, 100, 199] {
            arrived.record(seq);
        }
        assert_eq!(settled.count_not_in(&arrived), 3);
        assert_eq!(arrived.count_not_in(&settled), 1);
        assert_eq!(settled.count_not_in(&SeqTracker::new(0)), 6);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let mut l = Latencies::default();
        for us in 1..=100u64 {
            l.record(us * 1000);
        }
        let s = l.summary();
        assert_eq!(s["p50"], 50.0);
        assert_eq!(s["p99"], 99.0);
        assert_eq!(s["max"], 100.0);
        assert_eq!(s["samples"], 100);
    }

    #[test]
    fn empty_summary_is_null() {
        assert_eq!(Latencies::default().summary()["p50"], Value::Null);
    }
}
