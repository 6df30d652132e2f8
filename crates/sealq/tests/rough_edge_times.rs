//! Issue 21: APIs that took a time as bare Unix milliseconds also take a
//! `std::time::SystemTime` and a `jiff::Timestamp`, and old callers compile
//! as they were.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sealq::{EnqueueOptions, UnixMs};

const MS: i64 = 1_765_000_123_456;

#[test]
fn rough_edge_times_accept_system_time_jiff_and_millis() {
    let sys = UNIX_EPOCH + Duration::from_millis(MS as u64);
    let ts = jiff::Timestamp::from_millisecond(MS).unwrap();
    let zoned = ts.in_tz("Europe/Paris").unwrap();

    let from_sys = EnqueueOptions::new()
        .run_at(sys)
        .deadline(sys)
        .not_after(sys);
    let from_jiff = EnqueueOptions::new()
        .run_at(ts)
        .deadline(ts)
        .not_after(&zoned);
    let from_ms = EnqueueOptions::new().run_at(MS).deadline(MS).not_after(MS);
    // The old setters, unchanged.
    let old = EnqueueOptions::new()
        .run_at_ms(MS)
        .deadline_ms(MS)
        .not_after_ms(MS);
    for opts in [&from_sys, &from_jiff, &from_ms] {
        assert_eq!(opts, &old);
    }
    assert_eq!(old.run_at_ms, Some(MS));

    // And back.
    let t = UnixMs::from(ts);
    assert_eq!(SystemTime::from(t), sys);
    assert_eq!(jiff::Timestamp::from(t), ts);
    assert_eq!(i64::from(t), MS);
}

#[test]
fn rough_edge_times_before_1970_round_towards_the_past() {
    let sys = UNIX_EPOCH - Duration::from_micros(2_500);
    let opts = EnqueueOptions::new().run_at(sys);
    assert_eq!(opts.run_at_ms, Some(-3));
    let ts = jiff::Timestamp::try_from(sys).unwrap();
    assert_eq!(EnqueueOptions::new().run_at(ts).run_at_ms, Some(-3));
}
