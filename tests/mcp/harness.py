"""Connects the official Python MCP SDK to sandcell and checks what sandcell sends.

Over stdio (`sandcell mcp`) every line sandcell writes is recorded as it was sent
(through the SDK's stdio line parser); over Streamable HTTP (`sandcell serve` at `/mcp`)
every message the SDK received is recorded as it arrived. When the connection closes,
each is validated against the MCP JSON Schema of the protocol version negotiated: as a
JSON-RPC message, each result as the result of the method it answers, each notification
as a server notification.
"""

from __future__ import annotations

import json
import os
import sys
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any, AsyncIterator

import anyio
import jsonschema
import mcp.types as types
from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS
from mcp import ClientSession
import httpx2
from mcp.client import stdio
from mcp.client.streamable_http import streamable_http_client

SANDCELL = os.environ.get("SANDCELL_BIN", "sandcell")
SCHEMA_DIR = Path(os.environ.get("MCP_SCHEMA_DIR", "../shared/reference/mcp-schema"))

# The result each request's answer must be, by method.
RESULTS = {
    "initialize": "InitializeResult",
    "server/discover": "DiscoverResult",
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


def schema_definitions(version: str) -> set[str]:
    schema = json.loads((SCHEMA_DIR / f"{version}.schema.json").read_text())
    return set(schema.get("$defs") or schema.get("definitions"))


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
    defined = schema_definitions(version)
    results = {method: schema_validator(version, name) for method, name in RESULTS.items() if name in defined}
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

    @property
    def protocol_version(self) -> str:
        return self.session.protocol_version

    @property
    def server_name(self) -> str:
        return self.session.server_info.name

    @property
    def capabilities(self) -> types.ServerCapabilities:
        return self.session.server_capabilities

    async def call(self, name: str, arguments: dict[str, Any] | None = None, **options) -> types.CallToolResult:
        return await self.session.call_tool(name, arguments or {}, **options)

    async def run(self, code: str, **arguments) -> types.CallToolResult:
        return await self.call("run_python", {"code": code, **arguments})


@asynccontextmanager
async def connect(
    version: str = "2025-11-25", args: tuple[str, ...] = (), http: tuple[str, str] | None = None
) -> AsyncIterator[Connection]:
    """A client initialized at protocol `version`: of a fresh `sandcell mcp` started with
    `args`, or, with `http` = (URL, API key), of a running `sandcell serve`."""
    sent: dict[Any, str] = {}
    received: list[str] = []
    start = len(received_lines)
    async with AsyncExitStack() as stack:
        if http is None:
            params = stdio.StdioServerParameters(command=SANDCELL, args=["mcp", *args])
            read_stream, write_stream = await stack.enter_async_context(stdio.stdio_client(params, errlog=sys.stderr))
        else:
            url, key = http
            client = await stack.enter_async_context(
                httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=60)
            )
            # A run's answer carries up to the server's output limit twice (text blocks and
            # structuredContent): more than the SDK's default bound on one event.
            read_stream, write_stream = await stack.enter_async_context(
                streamable_http_client(url, http_client=client, max_sse_event_size=64 << 20)
            )
        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)
        # Requests pass through here on their way out, so that answers can be matched to
        # the method they answer; over HTTP, what comes in is recorded here too.
        outgoing_send, outgoing_receive = anyio.create_memory_object_stream(0)
        incoming_send, incoming_receive = anyio.create_memory_object_stream(0)

        async def forward_out():
            async with outgoing_receive:
                async for session_message in outgoing_receive:
                    root = session_message.message
                    method = getattr(root, "method", None)
                    if method is not None and getattr(root, "id", None) is not None:
                        sent[root.id] = method
                    await write_stream.send(session_message)

        async def forward_in():
            async with incoming_send:
                async for item in read_stream:
                    if http is not None and not isinstance(item, Exception):
                        received.append(item.message.model_dump_json(by_alias=True, exclude_unset=True))
                    await incoming_send.send(item)

        tasks.start_soon(forward_out)
        tasks.start_soon(forward_in)
        session = await stack.enter_async_context(ClientSession(incoming_receive, outgoing_send))
        connection = Connection(session, version, sent)
        if version in HANDSHAKE_PROTOCOL_VERSIONS:
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
        else:
            # Versions without a handshake: the client discovers what the server speaks.
            discovered = await session.discover()
            assert version in discovered.supported_versions
            session.adopt(discovered)
        yield connection
    lines = received if http is not None else received_lines[start:]
    if schemas_present():
        negotiated = connection.protocol_version
        # At least the answer to initialize (or discover) was checked as its result.
        assert validate_messages(negotiated, lines, sent) > 0


def texts(result: types.CallToolResult) -> str:
    return "\n".join(block.text for block in result.content if isinstance(block, types.TextContent))
