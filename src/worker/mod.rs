//! The worker: claims tasks and runs a command for each, with heartbeats, timeouts and a
//! graceful shutdown.
