//! How long a failed job waits before its next attempt.

use std::time::Duration;

use crate::config::BackoffConfig;

/// The wait after failed attempt `attempt` (counting from 1): `min(cap, base * 2^(attempt-1))`,
/// less a part of it chosen by `unit_random` in `[0, 1)` times `jitter`.
///
/// With base 2s, cap 10m, no jitter: 2s, 4s, 8s, 16s, ... 512s, then 600s for every later one.
/// With jitter 0.2 the wait after attempt 3 is anywhere in (6.4s, 8s].
pub fn delay(config: &BackoffConfig, attempt: u32, unit_random: f64) -> Duration {
    let exponent = attempt.saturating_sub(1).min(32);
    let full = config
        .base
        .saturating_mul(1u32 << exponent.min(31))
        .min(config.cap);
    full.mul_f64(1.0 - config.jitter * unit_random.clamp(0.0, 1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_JITTER: BackoffConfig = BackoffConfig {
        base: Duration::from_secs(2),
        cap: Duration::from_secs(600),
        jitter: 0.0,
    };

    #[test]
    fn doubles_from_the_base_up_to_the_cap() {
        let waits: Vec<u64> = (1..=11)
            .map(|n| delay(&NO_JITTER, n, 0.5).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 16, 32, 64, 128, 256, 512, 600, 600]);
        assert_eq!(delay(&NO_JITTER, 500, 0.0), Duration::from_secs(600));
    }

    #[test]
    fn jitter_only_shortens_and_stays_in_range() {
        let config = BackoffConfig {
            jitter: 0.2,
            ..NO_JITTER
        };
        assert_eq!(delay(&config, 3, 0.0), Duration::from_secs(8));
        let shortest = delay(&config, 3, 0.999_999);
        assert!(shortest > Duration::from_millis(6400) && shortest < Duration::from_secs(8));
    }
}
