//! The MCP server: the queue, memory and session services as MCP tools, over stdio or
//! streamable HTTP.
