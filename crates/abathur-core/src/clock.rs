//! Where "now" comes from. Every write takes its time from a [`Clock`], so tests can move time
//! instead of sleeping.

use std::fmt::Debug;

use chrono::{DateTime, Utc};

use crate::timestamp::truncate_to_micros;

/// A source of the current time.
pub trait Clock: Send + Sync + Debug {
    /// The current instant, at microsecond precision (the precision the stores keep).
    fn now(&self) -> DateTime<Utc>;

    /// The time a store records for a write: `Now::Store` when the store is to read its own
    /// clock once it holds the write lock (production), `Now::At` to pin it (tests).
    fn store_time(&self) -> Now {
        Now::At(self.now())
    }
}

/// When a store operation takes place, as handed to a store.
///
/// A time read before the operation waited for the write lock can be earlier than the commit
/// of an operation that held the lock meanwhile, so the history would disagree with the
/// commit order. With [`Now::Store`] the store reads the time after it holds the lock: the
/// system clock on SQLite, the server's clock on a database server. Tests pin the time with
/// [`Now::At`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Now {
    /// The store reads its own clock once it holds the write lock.
    Store,
    /// This instant.
    At(DateTime<Utc>),
}

impl Now {
    /// The instant, reading the system clock for [`Now::Store`]: a store on this machine calls
    /// it once it holds the write lock.
    pub fn resolve(self) -> DateTime<Utc> {
        match self {
            Now::Store => SystemClock.now(),
            Now::At(at) => at,
        }
    }
}

/// The machine's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        truncate_to_micros(Utc::now())
    }

    fn store_time(&self) -> Now {
        Now::Store
    }
}
