//! [`UnixMs`]: a point in time as sealq stores it, from whatever time type
//! the caller holds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A point in time in milliseconds since the Unix epoch (UTC), the form
/// every stored and sealed time takes (see [`crate::model::clock`]).
///
/// APIs that take a time take `impl Into<UnixMs>`, so they accept a
/// [`SystemTime`], a [`jiff::Timestamp`], a `&jiff::Zoned` or bare Unix
/// milliseconds (`i64`) alike. Conversions round towards the past to whole
/// milliseconds and saturate at `i64::MIN`/`i64::MAX` ms (about 292 million
/// years either side of 1970).
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use sealq::{EnqueueOptions, UnixMs};
///
/// let in_an_hour = SystemTime::now() + Duration::from_secs(3600);
/// let tomorrow = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24);
/// let opts = EnqueueOptions::new()
///     .run_at(in_an_hour)            // std::time::SystemTime
///     .not_after(tomorrow)           // jiff::Timestamp
///     .deadline(1_900_000_000_000);  // Unix ms, as before
/// assert_eq!(opts.deadline_ms, Some(1_900_000_000_000));
/// assert_eq!(UnixMs::from(tomorrow).as_millis(), tomorrow.as_millisecond());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMs(i64);

impl UnixMs {
    /// This many milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Self {
        UnixMs(ms)
    }

    /// Milliseconds since the Unix epoch.
    pub const fn as_millis(self) -> i64 {
        self.0
    }

    /// As a [`SystemTime`].
    pub fn to_system_time(self) -> SystemTime {
        let magnitude = Duration::from_millis(self.0.unsigned_abs());
        if self.0 >= 0 {
            // Cannot overflow where `SystemTime` holds 64-bit seconds
            // (i64::MAX ms is 9.2e15 s); elsewhere, the epoch is the answer
            // least likely to schedule something forever.
            UNIX_EPOCH.checked_add(magnitude).unwrap_or(UNIX_EPOCH)
        } else {
            UNIX_EPOCH.checked_sub(magnitude).unwrap_or(UNIX_EPOCH)
        }
    }

    /// As a [`jiff::Timestamp`], clamped to jiff's range (years -9999 to
    /// 9999).
    pub fn to_timestamp(self) -> jiff::Timestamp {
        match jiff::Timestamp::from_millisecond(self.0) {
            Ok(t) => t,
            Err(_) if self.0 > 0 => jiff::Timestamp::MAX,
            Err(_) => jiff::Timestamp::MIN,
        }
    }
}

impl From<i64> for UnixMs {
    /// Bare Unix milliseconds.
    fn from(ms: i64) -> Self {
        UnixMs(ms)
    }
}

impl From<UnixMs> for i64 {
    fn from(t: UnixMs) -> Self {
        t.0
    }
}

impl From<SystemTime> for UnixMs {
    fn from(t: SystemTime) -> Self {
        match t.duration_since(UNIX_EPOCH) {
            Ok(after) => UnixMs(i64::try_from(after.as_millis()).unwrap_or(i64::MAX)),
            Err(e) => {
                // Before 1970: round towards the past, like the case above.
                let before = e.duration();
                let mut ms = i64::try_from(before.as_millis()).unwrap_or(i64::MAX);
                if before.as_nanos() % 1_000_000 != 0 {
                    ms = ms.saturating_add(1);
                }
                UnixMs(ms.saturating_neg())
            }
        }
    }
}

impl From<jiff::Timestamp> for UnixMs {
    fn from(t: jiff::Timestamp) -> Self {
        // `as_millisecond` rounds towards zero; before 1970 that is towards
        // the future, so step back one for a partial millisecond.
        let ms = t.as_millisecond();
        if t.subsec_nanosecond() % 1_000_000 < 0 {
            UnixMs(ms.saturating_sub(1))
        } else {
            UnixMs(ms)
        }
    }
}

impl From<&jiff::Zoned> for UnixMs {
    fn from(t: &jiff::Zoned) -> Self {
        UnixMs::from(t.timestamp())
    }
}

impl From<UnixMs> for SystemTime {
    fn from(t: UnixMs) -> Self {
        t.to_system_time()
    }
}

impl From<UnixMs> for jiff::Timestamp {
    fn from(t: UnixMs) -> Self {
        t.to_timestamp()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_time_jiff_and_millis_agree() {
        let ms = 1_765_000_123_456_i64;
        let sys = UNIX_EPOCH + Duration::from_millis(ms as u64);
        let ts = jiff::Timestamp::from_millisecond(ms).unwrap();
        assert_eq!(UnixMs::from(sys), UnixMs::from(ms));
        assert_eq!(UnixMs::from(ts), UnixMs::from(ms));
        assert_eq!(
            UnixMs::from(&ts.to_zoned(jiff::tz::TimeZone::UTC)).as_millis(),
            ms
        );
        assert_eq!(UnixMs::from(ms).to_system_time(), sys);
        assert_eq!(UnixMs::from(ms).to_timestamp(), ts);
    }

    #[test]
    fn rounds_towards_the_past_and_saturates() {
        let sys = UNIX_EPOCH + Duration::from_micros(1_500);
        assert_eq!(UnixMs::from(sys).as_millis(), 1);
        let before = UNIX_EPOCH - Duration::from_micros(1_500);
        assert_eq!(UnixMs::from(before).as_millis(), -2);
        let ts = jiff::Timestamp::try_from(before).unwrap();
        assert_eq!(UnixMs::from(ts).as_millis(), -2);
        assert_eq!(UnixMs::from(i64::MAX).to_timestamp(), jiff::Timestamp::MAX);
        assert_eq!(
            UnixMs::from(-5_000).to_system_time(),
            UNIX_EPOCH - Duration::from_secs(5)
        );
    }
}
