//! When to try a failed delivery again, and when to give up.

use sha2::{Digest, Sha256};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Receives after which a still-failing message is dead-lettered with its reason. Keep
    /// it below the queue's own `maxReceiveCount`, so fluxrelay, not the queue, decides.
    pub max_attempts: u32,
    pub base_delay_secs: u32,
    pub max_delay_secs: u32,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 8,
            base_delay_secs: 5,
            max_delay_secs: 900,
        }
    }
}

impl RetryPolicy {
    pub fn exhausted(&self, receive_count: u32) -> bool {
        receive_count >= self.max_attempts
    }

    /// Exponential backoff by receive count, capped, with jitter in the upper half.
    /// The jitter is a hash of the message id and attempt, so it spreads messages apart
    /// without a random source and is the same every time it is computed.
    pub fn delay_secs(&self, receive_count: u32, message_id: &str) -> u32 {
        let exponent = receive_count.saturating_sub(1).min(20);
        let ceiling = self
            .base_delay_secs
            .max(1)
            .saturating_mul(1 << exponent)
            .min(self.max_delay_secs.max(1));
        let half = ceiling / 2;
        let digest = Sha256::new()
            .chain_update(message_id.as_bytes())
            .chain_update(receive_count.to_be_bytes())
            .finalize();
        let spread = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
        ceiling - half + spread % (half + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_exponentially_within_jitter_and_stop_at_the_cap() {
        let policy = RetryPolicy::default();
        for (attempt, low, high) in [
            (1, 3, 5),
            (2, 5, 10),
            (3, 10, 20),
            (4, 20, 40),
            (8, 320, 640),
            (9, 450, 900),
            (30, 450, 900),
        ] {
            for id in ["a", "b", "c", "d"] {
                let delay = policy.delay_secs(attempt, id);
                assert!(
                    (low..=high).contains(&delay),
                    "attempt {attempt} id {id}: {delay}"
                );
            }
        }
        assert_eq!(policy.delay_secs(3, "x"), policy.delay_secs(3, "x"));
        let spread: std::collections::BTreeSet<u32> = (0..50)
            .map(|i| policy.delay_secs(6, &i.to_string()))
            .collect();
        assert!(spread.len() > 10, "jitter spreads messages: {spread:?}");
    }

    #[test]
    fn odd_inputs_do_not_panic() {
        let zero = RetryPolicy {
            max_attempts: 0,
            base_delay_secs: 0,
            max_delay_secs: 0,
        };
        assert_eq!(zero.delay_secs(0, ""), 1);
        assert!(zero.exhausted(0));
        let huge = RetryPolicy {
            max_attempts: u32::MAX,
            base_delay_secs: u32::MAX,
            max_delay_secs: u32::MAX,
        };
        assert!(huge.delay_secs(u32::MAX, "x") >= u32::MAX / 2);
    }

    #[test]
    fn exhausted_at_max_attempts() {
        let policy = RetryPolicy::default();
        assert!(!policy.exhausted(7));
        assert!(policy.exhausted(8));
    }
}
