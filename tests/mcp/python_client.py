"""Drives `abathur mcp` over stdio with the official MCP Python SDK (the `mcp` package).

Usage: python_client.py ABATHUR_BINARY DATABASE_PATH

Initializes, lists the tools, enqueues a small DAG, claims and completes it, writes and reads
back a memory, and checks that a bad argument is a tool error after which the server still
answers. Exits non-zero, with the reason on stderr, when anything is not as expected; prints
one JSON summary line on stdout when everything is.
"""

import json
import sys

import anyio
from mcp import ClientSession, StdioServerParameters, stdio_client

EXPECTED_TOOLS = {
    "task_enqueue", "task_get", "task_list", "task_queue_status", "task_cancel",
    "task_execution_plan", "task_claim", "task_heartbeat", "task_complete", "task_fail",
    "memory_add", "memory_get", "memory_search", "memory_update", "memory_delete",
    "memory_history", "session_create", "session_append_event", "session_get_state",
    "session_set_state",
}


def fail(message: str) -> None:
    raise AssertionError(message)


def body(result) -> dict:
    """The JSON document in a tool result's single text block."""
    if len(result.content) != 1 or result.content[0].type != "text":
        fail(f"expected one text block, got {result.content!r}")
    return json.loads(result.content[0].text)


async def call(session: ClientSession, tool: str, arguments: dict) -> dict:
    result = await session.call_tool(tool, arguments)
    if result.is_error:
        fail(f"{tool} failed: {result.content[0].text}")
    return body(result)


async def call_err(session: ClientSession, tool: str, arguments: dict) -> dict:
    result = await session.call_tool(tool, arguments)
    if not result.is_error:
        fail(f"{tool} succeeded, but an error was expected: {result.content[0].text}")
    return body(result)["error"]


async def main(binary: str, database: str) -> None:
    params = StdioServerParameters(
        command=binary, args=["--db", database, "mcp"], env={"RUST_LOG": "off"}
    )
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            if init.server_info.name != "abathur":
                fail(f"unexpected server {init.server_info!r}")

            tools = await session.list_tools()
            names = {tool.name for tool in tools.tools}
            if names != EXPECTED_TOOLS:
                fail(f"tools differ: missing {EXPECTED_TOOLS - names}, extra {names - EXPECTED_TOOLS}")
            for tool in tools.tools:
                if tool.input_schema.get("type") != "object":
                    fail(f"{tool.name} has no object schema: {tool.input_schema}")

            # A small DAG: two roots, and a task that waits for both.
            first = await call(session, "task_enqueue", {"description": "collect the inputs"})
            second = await call(session, "task_enqueue", {"description": "read the config", "priority": 8})
            last = await call(
                session,
                "task_enqueue",
                {"description": "combine", "depends_on": [first["id"], second["id"]], "input": {"k": 1}},
            )
            if last["status"] != "blocked":
                fail(f"the dependent should be blocked: {last}")

            claimed = await call(session, "task_claim", {"worker_id": "python", "max": 5})
            roots = sorted(c["task"]["id"] for c in claimed["claimed"])
            if roots != sorted([first["id"], second["id"]]):
                fail(f"expected the two roots, claimed {roots}")
            ready = []
            for claim in claimed["claimed"]:
                done = await call(
                    session,
                    "task_complete",
                    {"attempt_id": claim["lease"]["attempt_id"], "result": {"ok": True}},
                )
                ready += done["ready"]
            if ready != [last["id"]]:
                fail(f"completing both roots should release the dependent, released {ready}")
            claimed = await call(session, "task_claim", {"worker_id": "python"})
            if [c["task"]["id"] for c in claimed["claimed"]] != [last["id"]]:
                fail(f"expected to claim the dependent: {claimed}")
            if claimed["claimed"][0]["task"]["input_data"] != {"k": 1}:
                fail(f"the input did not survive: {claimed}")
            await call(
                session,
                "task_complete",
                {"attempt_id": claimed["claimed"][0]["lease"]["attempt_id"], "result": [1, 2]},
            )
            stored = await call(session, "task_get", {"task_id": last["id"]})
            if stored["status"] != "completed" or stored["result_data"] != [1, 2]:
                fail(f"the dependent is not completed with its result: {stored}")

            # Memory, written and read back.
            await call(
                session,
                "memory_add",
                {"namespace": "py/notes", "key": "greeting", "value": {"text": "hello"}},
            )
            memory = await call(session, "memory_get", {"namespace": "py/notes", "key": "greeting"})
            if memory["value"] != {"text": "hello"}:
                fail(f"memory did not round-trip: {memory}")
            found = await call(session, "memory_search", {"prefix": "py/"})
            if [m["key"] for m in found["memories"]] != ["greeting"]:
                fail(f"search did not find the memory: {found}")

            # Bad arguments are tool errors, and the server keeps answering.
            error = await call_err(session, "task_enqueue", {"description": "x", "priority": 11})
            if error["kind"] != "invalid_argument" or "priority" not in error["message"]:
                fail(f"unexpected error for priority 11: {error}")
            error = await call_err(session, "task_get", {"task_id": "not-a-uuid"})
            if error["kind"] != "invalid_argument":
                fail(f"unexpected error for a bad UUID: {error}")
            status = await call(session, "task_queue_status", {})
            if status["counts"]["completed"] != 3:
                fail(f"the server did not keep answering correctly: {status}")

    print(json.dumps({"ok": True, "protocol": str(init.protocol_version), "tools": len(names)}))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    anyio.run(main, sys.argv[1], sys.argv[2])
