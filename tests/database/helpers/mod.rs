//! Shared test helpers: databases, a controllable clock, and full example records.

pub mod database;

use std::sync::{Arc, Mutex};

use abathur::domain::clock::Clock;
use abathur::domain::models::Task;
use chrono::{DateTime, Duration, TimeZone, Utc};

/// A clock that stands still until a test moves it.
#[derive(Debug)]
pub struct ManualClock(Mutex<DateTime<Utc>>);

impl ManualClock {
    pub fn new() -> Arc<Self> {
        Arc::new(Self(Mutex::new(
            Utc.with_ymd_and_hms(2026, 11, 28, 12, 0, 0).unwrap(),
        )))
    }

    pub fn advance(&self, by: Duration) {
        *self.0.lock().unwrap() += by;
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap()
    }
}

/// A valid pending task with every optional field empty: the base that the specification's
/// `// ... other fields` stands for.
pub fn spec_task() -> Task {
    Task::new("Test task", "Test description", "test-agent", Utc::now())
}
