"""sandcell driven by the official Python MCP SDK, over stdio (`sandcell mcp`) and over
Streamable HTTP (`sandcell serve` at `/mcp`)."""

from __future__ import annotations

import base64
import json
import subprocess

import anyio
import jsonschema
import mcp.types as types
import pytest

from harness import SANDCELL, SCHEMA_DIR, connect, schemas_present, texts

VERSIONS = ["2025-06-18", "2025-11-25", "2026-07-28"]
TOOLS = {
    "run_python",
    "create_session",
    "list_sessions",
    "close_session",
    "restart_session",
    "interrupt",
    "upload_file",
    "list_files",
    "read_file",
    "install_packages",
}


def run(test):
    """Runs an async test body to its end."""
    anyio.run(test)


def test_the_schemas_are_there_to_validate_against():
    if not schemas_present():
        pytest.skip(
            f"MCP JSON Schemas not found in {SCHEMA_DIR}: messages are NOT validated against the specification"
        )
    assert {"2025-06-18.schema.json", "2025-11-25.schema.json"} <= {p.name for p in SCHEMA_DIR.iterdir()}


@pytest.mark.parametrize("version", VERSIONS)
def test_each_supported_version_is_negotiated_and_the_tools_are_valid(open_client, version):
    async def test():
        async with open_client(version) as client:
            assert client.protocol_version == version
            assert client.server_name == "sandcell"
            assert client.capabilities.tools is not None
            assert client.capabilities.resources is not None
            tools = {tool.name: tool for tool in (await client.session.list_tools()).tools}
            assert set(tools) == TOOLS
            for tool in tools.values():
                jsonschema.Draft202012Validator.check_schema(tool.input_schema)
                if tool.output_schema is not None:
                    jsonschema.Draft202012Validator.check_schema(tool.output_schema)
            run_python = tools["run_python"]
            assert set(run_python.input_schema["properties"]) == {"code", "session_id", "timeout_s"}
            assert run_python.input_schema["required"] == ["code"]
            for word in ("numpy", "pandas", "matplotlib", "/mnt/data", "no network"):
                assert word in run_python.description
            assert set(run_python.output_schema["properties"]) >= {
                "session_id",
                "status",
                "stdout",
                "stderr",
                "results",
                "error",
                "files",
                "duration_ms",
                "restarted",
            }
            assert set(tools["read_file"].input_schema["properties"]) == {"session_id", "path", "offset", "max_bytes"}
            assert set(tools["upload_file"].input_schema["properties"]) == {"session_id", "path", "text", "base64"}

    run(test)


def test_state_is_kept_between_calls_in_the_default_session(open_client):
    async def test():
        async with open_client() as client:
            first = await client.run("x = 41\nprint('set')")
            assert not first.is_error
            assert texts(first) == "set\n"
            second = await client.run("x + 1")
            assert not second.is_error, texts(second)
            assert texts(second) == "42"
            structured = second.structured_content
            assert structured["status"] == "ok"
            assert structured["results"] == [["text/plain"]]
            assert structured["session_id"] == first.structured_content["session_id"]
            assert structured["error"] is None
            assert structured["restarted"] is False

    run(test)


@pytest.mark.parametrize("version", ["2026-07-28"])
def test_state_is_kept_without_a_connection(open_client, version):
    """The newest protocol has no connection over HTTP: calls share their user's default session."""

    async def test():
        async with open_client(version) as client:
            first = await client.run("stateless = 'kept'")
            assert not first.is_error, texts(first)
            second = await client.run("stateless")
            assert texts(second) == "'kept'"
            assert second.structured_content["session_id"] == first.structured_content["session_id"]

    run(test)


def test_a_plot_comes_back_as_a_png_image(open_client):
    async def test():
        async with open_client() as client:
            result = await client.run("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('t')")
            assert not result.is_error, texts(result)
            images = [block for block in result.content if isinstance(block, types.ImageContent)]
            assert len(images) == 1
            assert images[0].mime_type == "image/png"
            png = base64.b64decode(images[0].data, validate=True)
            assert png.startswith(b"\x89PNG\r\n\x1a\n")
            assert png[12:16] == b"IHDR"
            assert "image/png" in result.structured_content["results"][-1]

    run(test)


def test_an_exception_is_an_error_result_with_the_traceback(open_client):
    async def test():
        async with open_client() as client:
            result = await client.run("def f():\n    return 1 / 0\nf()")
            assert result.is_error
            text = texts(result)
            assert "ZeroDivisionError" in text and "return 1 / 0" in text
            error = result.structured_content["error"]
            assert error["ename"] == "ZeroDivisionError"
            assert result.structured_content["status"] == "error"
            # The session is still there, with what the cell defined.
            assert texts(await client.run("f.__name__")) == "'f'"

    run(test)


def test_files_go_in_and_come_back_byte_for_byte(open_client):
    binary = bytes(range(256)) * 4
    text = "héllo, wörld\nline 2\n"

    async def test():
        async with open_client() as client:
            uploaded = await client.call("upload_file", {"path": "notes/a.txt", "text": text})
            assert not uploaded.is_error, texts(uploaded)
            uploaded = await client.call(
                "upload_file", {"path": "/mnt/data/blob.bin", "base64": base64.b64encode(binary).decode()}
            )
            assert not uploaded.is_error, texts(uploaded)

            read_text = await client.call("read_file", {"path": "/mnt/data/notes/a.txt"})
            assert not read_text.is_error, texts(read_text)
            (block,) = read_text.content
            assert isinstance(block.resource, types.TextResourceContents)
            assert block.resource.text == text
            assert read_text.structured_content["size"] == len(text.encode())

            read_binary = await client.call("read_file", {"path": "blob.bin"})
            (block,) = read_binary.content
            assert isinstance(block.resource, types.BlobResourceContents)
            assert base64.b64decode(block.resource.blob) == binary

            # The code sees the same bytes, and files it writes come back as links.
            seen = await client.run(
                "data = open('/mnt/data/blob.bin', 'rb').read()\n"
                "open('/mnt/data/out.csv', 'w').write('a,b\\n1,2\\n')\n"
                f"data == bytes(range(256)) * 4"
            )
            assert texts(seen) == "True"
            links = [block for block in seen.content if isinstance(block, types.ResourceLink)]
            assert [link.name for link in links] == ["out.csv"]
            assert seen.structured_content["files"] == [{"path": "out.csv", "size": 8, "mime": "text/csv"}]

            listed = await client.call("list_files")
            assert [f["path"] for f in listed.structured_content["files"]] == ["blob.bin", "notes/a.txt", "out.csv"]

            # The same file as a resource, by the link's URI.
            resource = await client.session.read_resource(str(links[0].uri))
            assert resource.contents[0].text == "a,b\n1,2\n"
            templates = await client.session.list_resource_templates()
            assert [t.uri_template for t in templates.resource_templates] == [
                "sandcell://sessions/{session_id}/files/{path}"
            ]
            resources = await client.session.list_resources()
            assert str(links[0].uri) in {str(r.uri) for r in resources.resources}

    run(test)


def test_large_files_are_read_in_pages(open_client):
    content = bytes((i * 7) % 251 for i in range(1000))

    async def test():
        async with open_client() as client:
            await client.call("upload_file", {"path": "data.bin", "base64": base64.b64encode(content).decode()})
            pages = []
            offset = 0
            while True:
                part = await client.call("read_file", {"path": "data.bin", "offset": offset, "max_bytes": 300})
                assert not part.is_error, texts(part)
                read = part.structured_content
                assert read["size"] == 1000 and read["offset"] == offset
                pages.append(base64.b64decode(part.content[0].resource.blob))
                offset += read["length"]
                if not read["more"]:
                    break
            assert [len(page) for page in pages] == [300, 300, 300, 100]
            assert b"".join(pages) == content

    run(test)


def test_sessions_are_created_restarted_and_closed(open_client):
    async def test():
        async with open_client() as client:
            created = await client.call("create_session", {"limits": {"timeout_secs": 30}})
            assert not created.is_error, texts(created)
            session_id = created.structured_content["session_id"]
            await client.run("y = 1", session_id=session_id)
            # The default session is another one.
            assert (await client.run("y")).is_error
            listed = (await client.call("list_sessions")).structured_content["sessions"]
            assert session_id in {s["session_id"] for s in listed}
            assert sum(s["default"] for s in listed) == 1
            restarted = await client.call("restart_session", {"session_id": session_id})
            assert not restarted.is_error, texts(restarted)
            after = await client.run("y", session_id=session_id)
            assert after.is_error and after.structured_content["error"]["ename"] == "NameError"
            nothing = await client.call("interrupt", {"session_id": session_id})
            assert texts(nothing) == f"Nothing was running in session {session_id}."
            closed = await client.call("close_session", {"session_id": session_id})
            assert not closed.is_error, texts(closed)
            gone = await client.run("1", session_id=session_id)
            assert gone.is_error
            assert texts(gone) == f"There is no session {session_id}."

    run(test)


def test_bad_input_gets_tool_errors_in_one_sentence(open_client):
    async def test():
        async with open_client() as client:
            unknown = await client.run("1", session_id="no-such-session")
            assert unknown.is_error and texts(unknown) == "There is no session no-such-session."
            await client.run("import os\nos.symlink('/etc/passwd', '/mnt/data/link')")
            for path in ["../etc/passwd", "/etc/passwd", "/mnt/data/../../etc/passwd", "a/../../x", "link"]:
                refused = await client.call("read_file", {"path": path})
                assert refused.is_error, path
                assert texts(refused).endswith("."), texts(refused)
                assert "root:" not in texts(refused)
            outside = await client.call("upload_file", {"path": "/tmp/x", "text": "x"})
            assert outside.is_error and "outside /mnt/data" in texts(outside)
            neither = await client.call("upload_file", {"path": "x"})
            assert neither.is_error and "exactly one" in texts(neither)
            bad_base64 = await client.call("upload_file", {"path": "x", "base64": "%%%"})
            assert bad_base64.is_error
            missing = await client.call("read_file", {"path": "nothing.txt"})
            assert missing.is_error
            too_long = await client.run("1", timeout_s=-1)
            assert too_long.is_error
            no_index = await client.call("install_packages", {"packages": ["requests"]})
            assert no_index.is_error and "--pip-index" in texts(no_index), texts(no_index)
            option = await client.call("install_packages", {"packages": ["--index-url=http://x/"]})
            assert option.is_error and "options, URLs and paths" in texts(option), texts(option)
            limits = await client.call("create_session", {"limits": {"memory_mib": 1}})
            assert limits.is_error and "limits.memory_mib" in texts(limits)
            unknown = await client.call("create_session", {"environment": "nope"})
            assert unknown.is_error and 'no environment named "nope"' in texts(unknown), texts(unknown)
            # The connection still works.
            assert texts(await client.run("6 * 7")) == "42"

    run(test)


def test_the_process_exits_cleanly_when_the_client_disconnects():
    messages = [
        {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {
                "protocolVersion": "2025-11-25",
                "capabilities": {},
                "clientInfo": {"name": "t", "version": "1"},
            },
        },
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "run_python", "arguments": {"code": "1"}}},
    ]
    process = subprocess.Popen(
        [SANDCELL, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        for message in messages:
            process.stdin.write(json.dumps(message) + "\n")
        process.stdin.flush()
        answers = [json.loads(process.stdout.readline()) for _ in range(2)]
        assert answers[1]["id"] == 2 and answers[1]["result"]["structuredContent"]["status"] == "ok"
        process.stdin.close()
        assert process.wait(timeout=30) == 0, process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_output_arrives_as_progress_before_the_result(open_client):
    async def test():
        async with open_client() as client:
            progress: list[str] = []
            result_seen = False

            async def on_progress(value: float, total: float | None, message: str | None) -> None:
                assert not result_seen
                progress.append(message or "")

            result = await client.session.call_tool(
                "run_python",
                {"code": "import time\nfor i in range(3):\n    print(f'line {i}', flush=True)\n    time.sleep(0.2)"},
                progress_callback=on_progress,
            )
            result_seen = True
            assert not result.is_error, texts(result)
            assert "".join(progress) == "line 0\nline 1\nline 2\n"

    run(test)


def test_cancelling_a_call_interrupts_the_code_and_keeps_the_session(open_client):
    async def test():
        async with open_client() as client:
            await client.run("kept = 'still here'")
            with anyio.move_on_after(1) as scope:
                await client.run("while True: pass")
            assert scope.cancelled_caught
            # Without the interrupt the loop would run to the session's time limit and
            # this call would find the session busy.
            after = await client.run("kept")
            assert not after.is_error, texts(after)
            assert texts(after) == "'still here'"

    run(test)


def test_a_flood_of_output_is_bounded_by_the_server_limit(open_client):
    async def test():
        async with open_client() as client:
            flood = await client.run("import sys\nfor _ in range(50):\n    sys.stdout.write('x' * (1 << 20))\n'done'")
            assert not flood.is_error, texts(flood)[:200]
            stdout = flood.structured_content["stdout"]
            # The server keeps at most 4 MiB of a stream (head and tail) and says what it dropped.
            assert len(stdout) <= 4 * (1 << 20) + 200
            assert "bytes of output dropped" in stdout
            assert sum(len(block.text) for block in flood.content if isinstance(block, types.TextContent)) <= 4 * (
                1 << 20
            ) + 400
            assert texts(flood).endswith("'done'")

    run(test)


def test_uploads_larger_than_the_limit_are_refused():
    async def test():
        async with connect(args=("--max-upload", "1")) as client:
            big = base64.b64encode(b"\0" * ((1 << 20) + 1)).decode()
            refused = await client.call("upload_file", {"path": "big.bin", "base64": big})
            assert refused.is_error
            assert texts(refused) == "The file is 1048577 bytes; this server accepts uploads of at most 1048576 bytes."
            listed = await client.call("list_files")
            assert listed.structured_content["files"] == []

    run(test)


def test_a_folder_given_with_workdir_is_the_default_sessions_mnt_data(tmp_path):
    (tmp_path / "input.csv").write_text("a,b\n1,2\n")

    async def test():
        async with connect(args=("--workdir", str(tmp_path))) as client:
            read = await client.run("import pandas as pd\nprint(pd.read_csv('/mnt/data/input.csv').a.sum())\nopen('out.txt', 'w').write('made')")
            assert texts(read).startswith("1\n"), texts(read)
            listed = await client.call("list_files")
            assert [f["path"] for f in listed.structured_content["files"]] == ["input.csv", "out.txt"]

    run(test)
    # The folder and what the code wrote stay after the client disconnects.
    assert (tmp_path / "out.txt").read_text() == "made"
    assert (tmp_path / "input.csv").exists()


def test_files_given_with_file_are_in_the_default_session_and_preload_sets_the_template(tmp_path):
    (tmp_path / "table.csv").write_text("x\n1\n2\n")
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))

    async def test():
        args = ("--file", str(tmp_path / "table.csv"), "--file", str(tmp_path / "blob.bin"), "--preload", "json")
        async with connect(args=args) as client:
            listed = await client.call("list_files")
            assert sorted(f["path"] for f in listed.structured_content["files"]) == ["blob.bin", "table.csv"]
            read = await client.run(
                "import sys\nprint(open('/mnt/data/table.csv').read().split(), len(open('/mnt/data/blob.bin', 'rb').read()),"
                " 'json' in sys.modules, 'pandas' in sys.modules)"
            )
            assert texts(read).startswith("['x', '1', '2'] 256 True False"), texts(read)

    run(test)
    # The inputs themselves are untouched.
    assert (tmp_path / "blob.bin").read_bytes() == bytes(range(256))


def test_resources_are_listed_a_page_at_a_time_ending_at_a_session():
    # Over stdio: a process of its own, so that no other test's sessions are listed.
    async def test():
        async with connect() as client:
            # The default session holds more files than a page; a second session holds one.
            made = await client.run("import os\nos.makedirs('many')\nfor i in range(1001):\n    open(f'many/{i}.txt', 'w').write('x')")
            assert not made.is_error, texts(made)
            other = (await client.call("create_session")).structured_content["session_id"]
            await client.run("open('last.txt', 'w').write('y')", session_id=other)

            first = await client.session.list_resources()
            assert len(first.resources) == 1001
            assert first.next_cursor, "more sessions follow"
            second = await client.session.list_resources(params=types.PaginatedRequestParams(cursor=first.next_cursor))
            assert [str(r.uri) for r in second.resources] == [f"sandcell://sessions/{other}/files/last.txt"]
            assert second.next_cursor is None

    run(test)
