"""Connects the official Python MCP SDK to `sandcell mcp` and checks what sandcell sends.

Every line sandcell writes is recorded as it was sent (through the SDK's stdio line
parser) and validated, when the connection closes, against the MCP JSON Schema of the
protocol version negotiated: as a JSON-RPC message, each result as the result of the
method it answers, each notification as a server notification.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import jsonschema
import mcp.types as types
from mcp import ClientSession
from mcp.client import stdio

SANDCELL = os.environ.get("SANDCELL_BIN", "sandcell")
SCHEMA_DIR = Path(os.environ.get("MCP_SCHEMA_DIR", "../shared/reference/mcp-schema"))

# The result each request's answer must be, by method.
RESULTS = {
    "initialize": "InitializeResult",
    "ping": "EmptyResult",
    "tools/list": "ListToolsResult",
    "tools/call": "CallToolResult",
    "resources/list": "ListResourcesResult",
    "resources/templates/list": "ListResourceTemplatesResult",
    "resources/read": "ReadResourceResult",
}

received_lines: list[str] = []
_parse_line = stdio._parse_line


def _recording_parse_line(line: str):
    received_lines.append(line)
    return _parse_line(line)


# The SDK's stdio transport parses each line sandcell writes with this function.
stdio._parse_line = _recording_parse_line


def schemas_present() -> bool:
    return SCHEMA_DIR.is_dir()


def schema_validator(version: str, definition: str) -> jsonschema.protocols.Validator:
    schema = json.loads((SCHEMA_DIR / f"{version}.schema.json").read_text())
    section = "$defs" if "$defs" in schema else "definitions"
    rooted = dict(schema, **{"$ref": f"#/{section}/{definition}"})
    return jsonschema.validators.validator_for(schema)(rooted)


def validate_messages(version: str, lines: list[str], sent: dict[Any, str]) -> int:
    """Validates each line sandcell sent; returns how many results were checked as the
    result of their method."""
    message = schema_validator(version, "JSONRPCMessage")
    notification = schema_validator(version, "ServerNotification")
    results = {method: schema_validator(version, name) for method, name in RESULTS.items()}
    checked_results = 0
    for line in lines:
        if not line.strip():
            continue
        data = json.loads(line)
        message.validate(data)
        if "result" in data:
            method = sent.get(data["id"])
            if method in results:
                results[method].validate(data["result"])
                checked_results += 1
        elif "method" in data and "id" not in data:
            notification.validate(data)
    return checked_results


class Connection:
    """A client session with what it sent, by request id."""

    def __init__(self, session: ClientSession, version: str, sent: dict[Any, str]):
        self.session = session
        self.version = version
        self.sent = sent
        self.initialize_result: types.InitializeResult | None = None

    async def call(self, name: str, arguments: dict[str, Any] | None = None, **options) -> types.CallToolResult:
        return await self.session.call_tool(name, arguments or {}, **options)

    async def run(self, code: str, **arguments) -> types.CallToolResult:
        return await self.call("run_python", {"code": code, **arguments})


@asynccontextmanager
async def connect(version: str = "2025-11-25", args: tuple[str, ...] = ()) -> AsyncIterator[Connection]:
    """A session with a fresh `sandcell mcp`, initialized at protocol `version`."""
    params = stdio.StdioServerParameters(command=SANDCELL, args=["mcp", *args])
    sent: dict[Any, str] = {}
    start = len(received_lines)
    async with stdio.stdio_client(params, errlog=sys.stderr) as (read_stream, write_stream):
        # Requests pass through here on their way out, so that answers can be matched
        # to the method they answer.
        outgoing_send, outgoing_receive = anyio.create_memory_object_stream(0)

        async def forward():
            async with outgoing_receive:
                async for session_message in outgoing_receive:
                    root = session_message.message
                    method = getattr(root, "method", None)
                    if method is not None and getattr(root, "id", None) is not None:
                        sent[root.id] = method
                    await write_stream.send(session_message)

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(forward)
            async with ClientSession(read_stream, outgoing_send) as session:
                connection = Connection(session, version, sent)
                connection.initialize_result = await session.send_request(
                    types.InitializeRequest(
                        params=types.InitializeRequestParams(
                            protocol_version=version,
                            capabilities=types.ClientCapabilities(),
                            client_info=types.Implementation(name="sandcell-tests", version="1"),
                        )
                    ),
                    types.InitializeResult,
                )
                session.adopt(connection.initialize_result)
                await session.send_notification(types.InitializedNotification())
                yield connection
            tasks.cancel_scope.cancel()
    lines = received_lines[start:]
    if schemas_present():
        negotiated = connection.initialize_result.protocol_version
        # At least the answer to initialize was checked as an InitializeResult.
        assert validate_messages(negotiated, lines, sent) > 0


def texts(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))
