"""What only the Streamable HTTP transport has: API keys, and the Host and Origin checks."""

from __future__ import annotations

import json

import anyio
import httpx2
import pytest
from mcp.shared.exceptions import MCPError

from harness import connect, texts

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
}
HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def test_a_key_sees_and_uses_only_its_own_sessions(http_server):
    alice, bob = (http_server.url, http_server.keys[0]), (http_server.url, http_server.keys[1])

    async def test():
        async with connect(http=alice) as client:
            created = await client.call("create_session")
            session_id = created.structured_content["session_id"]
            await client.call("upload_file", {"session_id": session_id, "path": "secret.txt", "text": "alice's"})
            listed = await client.call("list_files", {"session_id": session_id})
            uri = listed.structured_content["files"][0]["uri"]
        async with connect(http=bob) as client:
            sessions = (await client.call("list_sessions")).structured_content["sessions"]
            assert session_id not in {s["session_id"] for s in sessions}
            for name, arguments in [
                ("run_python", {"code": "1", "session_id": session_id}),
                ("read_file", {"session_id": session_id, "path": "secret.txt"}),
                ("list_files", {"session_id": session_id}),
                ("close_session", {"session_id": session_id}),
                ("interrupt", {"session_id": session_id}),
            ]:
                refused = await client.call(name, arguments)
                assert refused.is_error, name
                assert texts(refused) == f"There is no session {session_id}.", name
            with pytest.raises(MCPError, match=f"There is no session {session_id}"):
                await client.session.read_resource(uri)
            resources = await client.session.list_resources()
            assert uri not in {str(r.uri) for r in resources.resources}
        async with connect(http=alice) as client:
            still = await client.call("read_file", {"session_id": session_id, "path": "secret.txt"})
            assert still.content[0].resource.text == "alice's"

    anyio.run(test)


def test_requests_without_a_valid_key_are_refused(http_server):
    for headers in [{}, {"Authorization": "Bearer sandcell_not-a-key"}]:
        response = httpx2.post(http_server.url, json=INITIALIZE, headers=HEADERS | headers)
        assert response.status_code == 401, response.text
        assert response.json()["error"]["code"] == "unauthorized"


def test_foreign_hosts_and_origins_are_refused(http_server):
    authorized = HEADERS | {"Authorization": f"Bearer {http_server.keys[0]}"}
    ok = httpx2.post(http_server.url, json=INITIALIZE, headers=authorized)
    assert ok.status_code == 200, ok.text
    for extra in [{"Host": "attacker.example"}, {"Origin": "http://attacker.example"}]:
        refused = httpx2.post(http_server.url, json=INITIALIZE, headers=authorized | extra)
        assert refused.status_code in (403, 421), (extra, refused.status_code, refused.text)
    same_origin = httpx2.post(
        http_server.url, json=INITIALIZE, headers=authorized | {"Origin": f"http://{http_server.address}"}
    )
    assert same_origin.status_code == 200, same_origin.text


def test_an_mcp_session_belongs_to_the_key_that_started_it(http_server):
    alice = HEADERS | {"Authorization": f"Bearer {http_server.keys[0]}"}
    bob = HEADERS | {"Authorization": f"Bearer {http_server.keys[1]}"}
    started = httpx2.post(http_server.url, json=INITIALIZE, headers=alice)
    assert started.status_code == 200, started.text
    session = {"Mcp-Session-Id": started.headers["mcp-session-id"], "MCP-Protocol-Version": "2025-11-25"}
    initialized = httpx2.post(
        http_server.url, json={"jsonrpc": "2.0", "method": "notifications/initialized"}, headers=alice | session
    )
    assert initialized.status_code == 202, initialized.text
    call = {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_sessions", "arguments": {}}}
    answer = httpx2.post(http_server.url, json=call, headers=bob | session, timeout=60)
    assert answer.status_code == 200, answer.text
    result = _result_of(answer)
    assert result["isError"] is True
    assert result["content"][0]["text"] == "This MCP session was started with another API key."


def _result_of(response: httpx2.Response) -> dict:
    """The JSON-RPC result of a response sent as JSON or as one Server-Sent Event."""
    if response.headers["content-type"].startswith("application/json"):
        return response.json()["result"]
    for line in response.text.splitlines():
        if line.startswith("data:") and line[5:].strip():
            message = json.loads(line[5:])
            if "result" in message:
                return message["result"]
    raise AssertionError(f"no result in {response.text!r}")
