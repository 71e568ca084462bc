//! Integration tests of `abathur mcp`: each test starts the real binary and drives it as an MCP
//! client would, over stdio (rmcp's client, or raw JSON-RPC lines) or HTTP, against its own
//! database.

mod client;

mod concurrency;
mod errors;
mod http;
mod http_limits;
mod lifecycle;
mod memory;
mod protocol;
mod python;
mod queue;
mod ranges;
mod sessions;
mod submit_options;
mod tools;
mod waiting;
