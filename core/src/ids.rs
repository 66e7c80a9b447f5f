//! Client ids the broker assigns to clients that sent an empty one
//! ([MQTT-3.1.3-6]): the configured prefix and a UUID-shaped random part,
//! as Mosquitto 2 does, from a generator seeded by the caller.

/// SplitMix64: tiny, seedable, and good enough for unique-looking ids.
#[derive(Debug, Clone)]
pub(crate) struct IdGenerator {
    state: u64,
}

impl IdGenerator {
    pub(crate) fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `prefix` followed by a random id in UUID form.
    pub(crate) fn next_id(&mut self, prefix: &str) -> String {
        let hi = self.next_u64();
        let lo = self.next_u64();
        format!(
            "{prefix}{:08X}-{:04X}-{:04X}-{:04X}-{:012X}",
            hi >> 32,
            (hi >> 16) & 0xffff,
            hi & 0xffff,
            lo >> 48,
            lo & 0xffff_ffff_ffff
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_prefix_and_uuid_shape_and_differ() {
        let mut g = IdGenerator::new(1);
        let a = g.next_id("auto-");
        let b = g.next_id("auto-");
        assert_ne!(a, b);
        assert!(a.starts_with("auto-"));
        assert_eq!(a.len(), 5 + 36);
        assert_eq!(a.matches('-').count(), 5);
    }
}
