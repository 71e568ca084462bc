//! Where "now" comes from. Every write takes its time from a [`Clock`], so tests can move time
//! instead of sleeping.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

use crate::timestamp::truncate_to_micros;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// The current instant, at microsecond precision (the precision the stores keep).
    fn now(&self) -> DateTime<Utc>;
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_micros(Utc::now())
    }
}
