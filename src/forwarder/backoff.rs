//! Retry timing: capped exponential backoff with full jitter, as a pure function of the attempt
//! count and a random draw, so it is tested without clocks and survives restarts (the result is
//! stored in the row's `next_attempt_at`).

/// The delay before retry number `attempts` (1 for the first retry): uniform in
/// `[0, min(max_ms, base_ms · 2^(attempts-1))]`, drawn from `draw`. A server's `Retry-After`
/// (ms) is a floor, itself capped at `max_ms` so a hostile or broken value cannot park a
/// message for days.
pub fn delay_ms(
    attempts: u32,
    base_ms: u64,
    max_ms: u64,
    retry_after_ms: Option<u64>,
    draw: u64,
) -> u64 {
    let exp = attempts.saturating_sub(1).min(62);
    let ceiling = base_ms.saturating_mul(1u64 << exp).min(max_ms);
    let jittered = draw % ceiling.saturating_add(1);
    match retry_after_ms {
        Some(after) => jittered.max(after.min(max_ms)),
        None => jittered,
    }
}

/// A random draw for [`delay_ms`].
pub fn draw() -> u64 {
    fastrand::u64(..)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn grows_then_caps() {
        // With the largest draw the delay is the ceiling itself.
        let top = |a| delay_ms(a, 100, 1_000, None, u64::MAX - 1 - (u64::MAX - 1) % 1_001);
        assert_eq!(delay_ms(1, 100, 1_000, None, 100), 100);
        assert_eq!(delay_ms(2, 100, 1_000, None, 200), 200);
        assert_eq!(delay_ms(3, 100, 1_000, None, 400), 400);
        assert!(top(40) <= 1_000);
        assert_eq!(delay_ms(63, 100, 1_000, None, 1_000), 1_000);
        assert_eq!(delay_ms(u32::MAX, 100, 1_000, None, 1_000), 1_000);
    }

    #[test]
    fn retry_after_is_a_capped_floor() {
        assert_eq!(delay_ms(1, 100, 1_000, Some(700), 0), 700);
        assert_eq!(delay_ms(1, 100, 1_000, Some(86_400_000), 0), 1_000);
    }

    proptest! {
        #[test]
        fn always_within_bounds(attempts in 0u32..200, base in 1u64..100_000, extra in 0u64..10_000_000, draw in any::<u64>()) {
            let max = base + extra;
            let d = delay_ms(attempts, base, max, None, draw);
            let ceiling = base.saturating_mul(1u64 << attempts.saturating_sub(1).min(62)).min(max);
            prop_assert!(d <= ceiling);
        }
    }
}
