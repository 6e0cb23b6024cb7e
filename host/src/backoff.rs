//! Exponential backoff with jitter, shared by event retries, re-publishing after a Kafka
//! error and stage restarts, so that many waiters never retry in lockstep.

use std::time::Duration;

use rand::Rng;

/// `initial` doubled `step` times, capped at `max`.
pub fn exponential(initial: Duration, max: Duration, step: u32) -> Duration {
    initial.saturating_mul(1u32 << step.min(30)).min(max)
}

/// "Equal jitter": a random delay between half of `full` and all of it.
pub fn equal_jitter(full: Duration) -> Duration {
    let half = full / 2;
    half + half.mul_f64(rand::rng().random::<f64>())
}

/// [`exponential`] with [`equal_jitter`].
pub fn jittered(initial: Duration, max: Duration, step: u32) -> Duration {
    equal_jitter(exponential(initial, max, step))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap() {
        let ms = Duration::from_millis;
        assert_eq!(exponential(ms(100), ms(1000), 0), ms(100));
        assert_eq!(exponential(ms(100), ms(1000), 1), ms(200));
        assert_eq!(exponential(ms(100), ms(1000), 3), ms(800));
        assert_eq!(exponential(ms(100), ms(1000), 4), ms(1000));
        assert_eq!(exponential(ms(100), ms(1000), u32::MAX), ms(1000));
    }

    #[test]
    fn jitter_stays_between_half_and_all_and_varies() {
        let full = Duration::from_millis(400);
        let delays: Vec<Duration> = (0..200).map(|_| equal_jitter(full)).collect();
        assert!(delays.iter().all(|d| *d >= full / 2 && *d <= full));
        let distinct: std::collections::HashSet<_> = delays.iter().collect();
        assert!(distinct.len() > 100, "jitter must spread the delays");
    }
}
