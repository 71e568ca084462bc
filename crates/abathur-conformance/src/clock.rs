//! The suite's clock: it stands still until a case moves it.

use std::sync::{Arc, Mutex};

use abathur_core::clock::Clock;
use chrono::{DateTime, Duration, TimeZone, Utc};

/// A clock that stands still until a case moves it.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    /// A clock at 2026-11-28T12:00:00Z.
    pub fn new() -> Arc<Self> {
        let start = Utc
            .with_ymd_and_hms(2026, 11, 28, 12, 0, 0)
            .single()
            .unwrap_or_default();
        Arc::new(Self(Mutex::new(start)))
    }

    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}
