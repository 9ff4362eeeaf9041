"""Several `sandcell serve` nodes sharing one PostgreSQL database and one bucket, end to end.

Three nodes, each with its own data directory, share a PostgreSQL database, a SeaweedFS
bucket (`weed mini`) and a model played by the replay server; each listens on a port
chosen here, so that its --advertise-url is known before it starts. Sessions made through
one node are used through the others, which forward to the node running their Python
process (the `Sandcell-Node` header names it); a key made before the nodes start works on
all of them; a conversation started through one is read through another. Then the owner
of a session is killed in the middle of a cell, and the session goes on through another
node once the owner's heartbeat is stale: files restored from the bucket, variables gone.
A node paused past that point and resumed must not run code in its old Python process.
Last, every node stops and three fresh ones find every session, conversation and file.

Usage: check.py WORK_DIR (a scratch directory). Environment: SANDCELL_BIN,
SANDCELL_REPLAY_BIN, WEED_BIN, and SANDCELL_TEST_POSTGRES_URL and
SANDCELL_TEST_POSTGRES_CA (scripts/with-postgres sets them).
"""

from __future__ import annotations

import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

# SeaweedFS and the bucket's client, shared with tests/s3/check.py.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "s3"))
from seaweedfs import (ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS,  # noqa: E402
                       free_port, s3_client)

SANDCELL = os.environ["SANDCELL_BIN"]
PREFIX = "cluster"
# The model conversations talk to: Anthropic's protocol, played by the replay server.
MODEL = "anthropic:claude-replay"
# A node whose heartbeat is this old is gone; heartbeats come every HEARTBEAT_EVERY.
HEARTBEAT_STALE = 10.0
HEARTBEAT_EVERY = 2.0
# How long a client keeps retrying a session whose owner is gone.
TAKEOVER_WAIT = 40.0
# What failures and checks are prefixed with (the benchmark, which imports this, sets its own).
PROGRAM = "test-cluster"


def fail(message: str) -> None:
    print(f"{PROGRAM}: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def check(condition, message: str, detail: object = "") -> None:
    """Prints `message` as passed, or fails with it and `detail` (what was seen)."""
    if not condition:
        fail(f"{message}: {detail}" if detail != "" else message)
    print(f"{PROGRAM}: ok: {message}")


# Every process this run started, each the leader of its own process group.
STARTED: list[subprocess.Popen] = []


def clean_up(work: Path) -> None:
    """Stops whatever this run started and still runs: with SIGTERM first, so that nodes
    unmount their sessions' disks, then with SIGKILL, with what the nodes started in their
    process groups. Then unmounts what a killed node left mounted in `work`: only a node
    restarted on the same data directory would, and none is."""
    running = [process for process in STARTED if process.poll() is None]
    for process in running:
        # A paused node must run again to act on SIGTERM.
        process.send_signal(signal.SIGCONT)
        process.terminate()
    for process in running:
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    for process in STARTED:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    with open("/proc/self/mounts") as mounts:
        points = [line.split()[1] for line in mounts]
    inside = [point for point in points if point.startswith(f"{work.resolve()}/")]
    for point in sorted(inside, key=len, reverse=True):
        done = subprocess.run(["umount", point], capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{PROGRAM}: cannot unmount {point}: {done.stderr.strip()}", file=sys.stderr)


def database_url() -> str:
    """The test server's URL, its certificate checked against the test authority."""
    url = os.environ.get("SANDCELL_TEST_POSTGRES_URL")
    authority = os.environ.get("SANDCELL_TEST_POSTGRES_CA")
    if not url or not authority:
        fail("SANDCELL_TEST_POSTGRES_URL and SANDCELL_TEST_POSTGRES_CA name no PostgreSQL "
             "server: run this through scripts/with-postgres")
    separator = "&" if "?" in url else "?"
    return (f"{url}{separator}sslmode=verify-full"
            f"&sslrootcert={urllib.parse.quote(authority, safe='')}")


def node_environment(work: Path, s3_endpoint: str, model_url: str | None = None) -> dict[str, str]:
    """What every node runs with: the bucket's credentials and endpoint, no configuration
    file or model settings of this machine's, and the replayed model when there is one."""
    environment = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("OPENAI_", "ANTHROPIC_", "SANDCELL_MODEL",
                               "SANDCELL_DATABASE_URL", "SANDCELL_ADVERTISE_URL"))
    }
    environment.update(
        AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
        AWS_REGION="us-east-1", AWS_ENDPOINT_URL=s3_endpoint,
        SANDCELL_CONFIG=str(work / "no-config.toml"),
    )
    if model_url is not None:
        environment.update(SANDCELL_MODEL=MODEL, ANTHROPIC_API_KEY="replayed",
                           ANTHROPIC_BASE_URL=model_url)
    return environment


def create_key(data_dir: Path, database: str, environment: dict[str, str], name: str) -> str:
    """A key made with `serve --create-key`, straight into the shared database."""
    done = subprocess.run(
        [SANDCELL, "serve", "--data-dir", str(data_dir), "--database", database,
         "--create-key", name],
        capture_output=True, text=True, env=environment, timeout=120)
    if done.returncode != 0 or not done.stdout.strip():
        fail(f"`serve --create-key {name}` failed ({done.returncode}): {done.stderr.strip()}")
    return done.stdout.strip()


class NoAnswer(Exception):
    """A node did not answer a request (in time)."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def node(self) -> str | None:
        """The node that handled the request, as its answer names it."""
        return self.headers.get("sandcell-node")

    @property
    def error_message(self) -> str:
        """The sentence of an error answer (`{"error": {"code", "message"}}`), or ""."""
        try:
            return self.json["error"]["message"]
        except (ValueError, KeyError, TypeError):
            return ""

    def __str__(self) -> str:
        return f"{self.status} {self.body[:400]!r}"


def sse_events(response) -> Iterator[tuple[str, dict]]:
    """The events of a Server-Sent Events answer, as (name, data) while they come."""
    name, data = "message", []
    with response:
        try:
            for raw in response:
                line = raw.decode().rstrip("\r\n")
                if not line:
                    if data:
                        yield name, json.loads("\n".join(data))
                    name, data = "message", []
                elif line.startswith(":"):
                    continue
                else:
                    field, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    if field == "event":
                        name = value
                    elif field == "data":
                        data.append(value)
        except (OSError, http.client.HTTPException) as error:
            raise NoAnswer(f"the stream broke off: {type(error).__name__}: {error}") from None


class Node:
    """`sandcell serve` as one node: its own data directory, the shared database and
    bucket, on a port chosen here so that its advertise URL is known up front. `key` is
    sent as `Authorization: Bearer KEY` unless a request names another."""

    def __init__(self, name: str, data_dir: Path, database: str, environment: dict[str, str],
                 extra_args: tuple[str, ...] = ()):
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.key: str | None = None
        self.log: list[str] = []
        # Its own process group: what it starts goes with it when the run is cleaned up.
        self.process = subprocess.Popen(
            [SANDCELL, "serve", "--listen", f"127.0.0.1:{self.port}",
             "--data-dir", str(data_dir), "--database", database,
             "--files", f"s3://{BUCKET}/{PREFIX}", "--advertise-url", self.url,
             "--warm-sessions", "0", *extra_args],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment,
            start_new_session=True)
        STARTED.append(self.process)
        listening = threading.Event()

        def read_log():
            for line in self.process.stderr:
                self.log.append(line)
                print(f"{self.name}: {line}", end="", file=sys.stderr)
                if "listening on http://" in line:
                    listening.set()

        threading.Thread(target=read_log, daemon=True).start()
        deadline = time.monotonic() + 300
        while not listening.wait(0.2):
            if self.process.poll() is not None:
                time.sleep(0.2)  # the rest of its log
                fail(f"{self.name} (sandcell serve) exited with {self.process.returncode} "
                     f"before listening: {''.join(self.log[-20:]).strip()}")
            if time.monotonic() > deadline:
                fail(f"{self.name} (sandcell serve) did not listen within 300 s")

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json", key: str | None = None,
                headers: dict[str, str] | None = None, timeout: float = 300) -> Reply:
        """`key` None sends the node's key; "" sends none."""
        response, reply = self._open(method, path, body, content_type, key, headers, timeout)
        if response is None:
            return reply
        with response:
            try:
                reply.body = response.read()
            except (OSError, http.client.HTTPException) as error:
                raise NoAnswer(f"{self.name} did not finish answering {method} {path} (within "
                               f"{timeout:.0f} s): {type(error).__name__}: {error}") from None
        return reply

    def _open(self, method, path, body, content_type, key, headers, timeout):
        sent = dict(headers or {})
        if body is not None:
            sent["Content-Type"] = content_type
        key = self.key if key is None else key
        if key:
            sent["Authorization"] = f"Bearer {key}"
        request = urllib.request.Request(f"{self.url}{path}", data=body, method=method,
                                         headers=sent)
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except urllib.error.HTTPError as error:
            return None, Reply(error.code, {k.lower(): v for k, v in error.headers.items()},
                               error.read())
        except (OSError, http.client.HTTPException) as error:
            raise NoAnswer(f"{self.name} did not answer {method} {path} (within {timeout:.0f} s): "
                           f"{type(error).__name__}: {error}") from None
        return response, Reply(response.status,
                               {k.lower(): v for k, v in response.headers.items()}, b"")

    def api(self, method: str, path: str, payload=None, key: str | None = None,
            timeout: float = 300) -> Reply:
        body = None if payload is None else json.dumps(payload).encode()
        return self.request(method, f"/api/v1{path}", body, key=key, timeout=timeout)

    def stream(self, path: str, payload, timeout: float = 300
               ) -> tuple[Reply, Iterator[tuple[str, dict]] | None]:
        """POSTs to a streaming route; the answer's head, and its events when it is 200."""
        response, reply = self._open("POST", f"/api/v1{path}", json.dumps(payload).encode(),
                                     "application/json", None,
                                     {"Accept": "text/event-stream"}, timeout)
        if response is None:
            return reply, None
        if response.status != 200:
            with response:
                reply.body = response.read()
            return reply, None
        return reply, sse_events(response)

    def execute(self, session: str, code: str, timeout: float = 300) -> Reply:
        return self.api("POST", f"/sessions/{session}/execute", {"code": code}, timeout=timeout)

    def upload(self, session: str, name: str, content: bytes) -> Reply:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", f"/api/v1/sessions/{session}/files", body,
                            f"multipart/form-data; boundary={boundary}")

    def download(self, session: str, path: str) -> Reply:
        return self.request("GET", f"/api/v1/sessions/{session}/files/{path}")

    def kill(self) -> None:
        self.process.kill()
        self.process.wait()

    def pause(self) -> None:
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> int:
        """SIGTERM; returns the exit status."""
        self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=120)
        except subprocess.TimeoutExpired:
            fail(f"{self.name} did not stop within 120 s of SIGTERM")


def start_replay(work: Path, script: list) -> str:
    """The replay server playing `script`; returns its base URL."""
    script_file = work / "script.json"
    script_file.write_text(json.dumps(script))
    replay = os.environ["SANDCELL_REPLAY_BIN"]
    try:
        # Its own process group, as the nodes have: the clean-up ends groups.
        process = subprocess.Popen([replay, "--script", str(script_file)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   start_new_session=True)
    except OSError as error:
        fail(f"the replay server cannot run ({replay}: {error})")
    STARTED.append(process)
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        fail(f"the replay server did not start: {line.strip()!r}")

    def show_log():
        for later in process.stdout:
            print(f"replay: {later}", end="", file=sys.stderr)

    threading.Thread(target=show_log, daemon=True).start()
    return match.group(1)


def until_served(attempt: Callable[[float], Reply], what: str,
                 seconds: float = TAKEOVER_WAIT) -> Reply:
    """Calls `attempt` (given the seconds left) again while it answers 503, as a client
    of a session whose node is gone does; returns the first other answer."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            reply = attempt(deadline - time.monotonic())
        except NoAnswer as error:
            fail(f"{what}: {error}")
        if reply.status != 503:
            return reply
        if time.monotonic() + 0.5 >= deadline:
            fail(f"{what}: still refused after {seconds:.0f} s; the last answer: {reply}")
        time.sleep(0.5)


def wait_in_manifest(client, session: str, names: set[str]) -> None:
    """Waits until the bucket's manifest of `session` names every file of `names` (a
    node that dies before writing a file back loses it, by design)."""
    key = f"{PREFIX}/sessions/{session}.json"
    deadline = time.monotonic() + 30
    while True:
        try:
            files = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())["files"]
        except client.exceptions.NoSuchKey:
            files = {}
        if names <= set(files):
            return
        if time.monotonic() > deadline:
            fail(f"the bucket's manifest of session {session} lacks {sorted(names - set(files))} "
                 f"after 30 s: {sorted(files)}")
        time.sleep(0.2)


class Drain:
    """Reads the rest of a stream in the background: the events, and how it ended."""

    def __init__(self, events: Iterator[tuple[str, dict]]):
        self.events: list[tuple[str, dict]] = []
        self.ending = "the connection closed"
        self.thread = threading.Thread(target=self._read, args=(events,), daemon=True)
        self.thread.start()

    def _read(self, events) -> None:
        try:
            for event in events:
                self.events.append(event)
        except NoAnswer as error:
            self.ending = str(error)


# The model's turns: a note written in the first, read back after its node has died.
SCRIPT = [
    {"reply": {"text": "I will leave a note.", "tool_calls": [{
        "code": "answer = 6 * 7\nopen('note.txt', 'w').write('the model was here\\n')\n"
                "print(answer)"}]}},
    {"reply": {"text": "The note is in note.txt."}},
    {"reply": {"text": "Let me look.", "tool_calls": [{
        "code": "print(open('note.txt').read(), end='')\nprint('answer' in globals())"}]}},
    {"reply": {"text": "It is still there."}},
]


def main() -> None:
    work = Path(sys.argv[1])
    weed = SeaweedFS(work, fail)
    try:
        run(work, weed)
    except NoAnswer as error:
        fail(str(error))
    finally:
        clean_up(work)
        weed.stop()
    print(f"{PROGRAM}: all checks passed")


# The MCP protocol version the raw client below speaks (one with `initialize` and
# sessions, which a node takes up from the database), and what it accepts.
MCP_VERSION = "2025-06-18"
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}


def mcp_messages(reply: Reply) -> list[dict]:
    """The JSON-RPC messages of an MCP answer: a JSON body, or Server-Sent Events."""
    text = reply.body.decode(errors="replace")
    if reply.headers.get("content-type", "").startswith("application/json"):
        return [json.loads(text)] if text else []
    return [json.loads(line[len("data:"):].strip()) for line in text.splitlines()
            if line.startswith("data:") and line[len("data:"):].strip()]


def run(work: Path, weed: SeaweedFS) -> None:
    client = s3_client(weed.endpoint)
    database = database_url()
    environment = node_environment(work, weed.endpoint, start_replay(work, SCRIPT))

    alice = create_key(work / "keys", database, environment, "alice")
    nodes = [Node(f"node{n}", work / f"node{n}", database, environment) for n in (1, 2, 3)]
    one, two, three = nodes
    for node in nodes:
        node.key = alice
    for node in nodes:
        anonymous = node.api("GET", "/sessions", key="")
        check(anonymous.status == 401, f"{node.name} refuses a request without a key", anonymous)
        unknown = node.api("GET", "/sessions", key="not-a-key")
        check(unknown.status == 401, f"{node.name} refuses an unknown key", unknown)
        known = node.api("GET", "/sessions")
        check(known.status == 200, f"{node.name} takes the key made before the nodes started",
              known)

    # Sessions run where they are made, and are used through every node.
    made = one.api("POST", "/sessions", {})
    check(made.status == 201 and made.json.get("node") == one.url,
          "a session made through node1 runs on node1", made)
    a = made.json["id"]
    made = two.api("POST", "/sessions", {})
    check(made.status == 201 and made.json.get("node") == two.url,
          "a session made through node2 runs on node2", made)
    b = made.json["id"]
    listed = three.api("GET", "/sessions")
    owners = {s["id"]: s.get("node") for s in listed.json["data"]} if listed.status == 200 else {}
    check(owners.get(a) == one.url and owners.get(b) == two.url,
          "node3 lists both sessions with their nodes", owners or listed)

    ran = two.execute(a, "x = 6 * 7\nopen('kept.txt', 'w').write('written on node1\\n')\n"
                         "print(x)")
    check(ran.status == 200 and ran.json["status"] == "ok" and ran.json["stdout"] == "42\n",
          "an execution through node2 runs", ran)
    check(ran.node == one.url, "node2 forwarded it to node1", f"Sandcell-Node: {ran.node!r}")

    head, events = three.stream(f"/sessions/{a}/execute", {"code": "print(x + 1)"})
    check(head.status == 200 and head.headers.get("content-type", "").startswith(
        "text/event-stream"), "a streamed execution through node3 answers with events", head)
    check(head.node == one.url, "node3 forwarded the stream to node1",
          f"Sandcell-Node: {head.node!r}")
    received = list(events)
    names = [name for name, _ in received]
    stdout = "".join(data["text"] for name, data in received if name == "stdout")
    check(names[:1] == ["execution"] and names[-1:] == ["end"] and stdout == "43\n"
          and received[-1][1]["status"] == "ok",
          "the forwarded stream carries the whole execution, variables kept", received)

    content = os.urandom(200_000)
    uploaded = two.upload(a, "upload.bin", content)
    check(uploaded.status == 201 and uploaded.node == one.url,
          "a file uploaded through node2 goes to node1", f"{uploaded}, {uploaded.node!r}")
    fetched = three.download(a, "upload.bin")
    check(fetched.status == 200 and fetched.body == content and fetched.node == one.url,
          "node3 downloads it from node1, the same bytes",
          f"{fetched.status}, {len(fetched.body)} bytes, {fetched.node!r}")
    files = three.api("GET", f"/sessions/{a}/files")
    paths = sorted(f["path"] for f in files.json["data"]) if files.status == 200 else files
    check(paths == ["kept.txt", "upload.bin"], "node3 lists the session's files", paths)

    ran = one.execute(b, "old_only = 'only in the first process'\n"
                         "open('before.txt', 'w').write('written on node2\\n')")
    check(ran.status == 200 and ran.json["status"] == "ok" and ran.node == two.url,
          "node1 forwards an execution in node2's session to node2", f"{ran}, {ran.node!r}")

    # A key made while the nodes run works on all of them, for its own user only.
    bob = create_key(work / "keys", database, environment, "bob")
    for node in nodes:
        own = node.api("GET", "/sessions", key=bob)
        check(own.status == 200 and own.json["data"] == [],
              f"{node.name} takes a key made while it runs, showing none of alice's sessions",
              own)
    foreign = two.api("POST", f"/sessions/{a}/execute", {"code": "print(x)"}, key=bob)
    check(foreign.status == 404, "bob cannot run code in alice's session through node2", foreign)

    made = one.api("POST", "/notebooks", {"title": "cluster notes", "session_id": a})
    check(made.status == 201, "a notebook is made through node1", made)
    notebook = made.json["id"]
    read = three.api("GET", f"/notebooks/{notebook}")
    check(read.status == 200 and read.json["title"] == "cluster notes", "node3 reads it", read)

    # The OpenAI door: a file uploaded through one node is read through another (its copy
    # is in the bucket), and a container made through node1 is used through the others.
    data = os.urandom(50_000)
    boundary = uuid.uuid4().hex
    form = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
            f"assistants\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"data.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n"
            ).encode() + data + f"\r\n--{boundary}--\r\n".encode()
    uploaded = one.request("POST", "/v1/files", form, f"multipart/form-data; boundary={boundary}")
    check(uploaded.status == 200, "a file is uploaded to /v1/files through node1", uploaded)
    file_id = uploaded.json["id"]
    read = two.request("GET", f"/v1/files/{file_id}/content")
    check(read.status == 200 and read.body == data,
          "node2 reads the file's content, the same bytes", f"{read.status}, {len(read.body)} bytes")
    made = one.request("POST", "/v1/containers",
                       json.dumps({"name": "cluster", "file_ids": [file_id]}).encode())
    check(made.status == 200, "a container is made through node1 with the file", made)
    container = made.json["id"]
    listed = three.request("GET", f"/v1/containers/{container}/files")
    check(listed.status == 200 and listed.node == one.url
          and [f["path"] for f in listed.json["data"]] == ["/mnt/data/data.bin"],
          "node3 lists the container's files, forwarded to node1", f"{listed}, {listed.node!r}")
    cfile = listed.json["data"][0]["id"]
    read = two.request("GET", f"/v1/containers/{container}/files/{cfile}/content")
    check(read.status == 200 and read.body == data and read.node == one.url,
          "node2 reads the container file's content from node1, the same bytes",
          f"{read.status}, {len(read.body)} bytes, {read.node!r}")

    # MCP over HTTP: a connection begun through node2 calls a tool on node1's session; the
    # call goes to node1, which takes up the MCP session from the database.
    begun = two.request("POST", "/mcp", json.dumps({
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": MCP_VERSION, "capabilities": {},
                   "clientInfo": {"name": "cluster-check", "version": "1"}}}).encode(),
        headers=MCP_ACCEPT)
    mcp_session = begun.headers.get("mcp-session-id")
    check(begun.status == 200 and mcp_session and mcp_messages(begun)[0].get("result"),
          "an MCP connection is begun through node2", begun)
    within = dict(MCP_ACCEPT, **{"Mcp-Session-Id": mcp_session, "MCP-Protocol-Version": MCP_VERSION})
    ready = two.request("POST", "/mcp", json.dumps({
        "jsonrpc": "2.0", "method": "notifications/initialized"}).encode(), headers=within)
    check(ready.status == 202, "node2 takes the client's initialized notification", ready)
    called = two.request("POST", "/mcp", json.dumps({
        "jsonrpc": "2.0", "id": 2, "method": "tools/call",
        "params": {"name": "run_python", "arguments": {"session_id": a, "code": "print(x)"}}}
    ).encode(), headers=within)
    answer = mcp_messages(called)
    texts = [part.get("text", "") for message in answer
             for part in (message.get("result") or {}).get("content", [])]
    check(called.status == 200 and called.node == one.url and any("42" in t for t in texts),
          "a tool call through node2 runs in node1's process of the session",
          f"{called}, {called.node!r}")

    # A conversation started through node1 runs its code there, and is read elsewhere.
    made = one.api("POST", "/conversations", {})
    check(made.status == 201, "a conversation is started through node1", made)
    conversation, c = made.json["id"], made.json["session_id"]
    its_session = three.api("GET", f"/sessions/{c}")
    check(its_session.status == 200 and its_session.json.get("node") == one.url,
          "its session runs on node1", its_session)
    head, events = two.stream(f"/conversations/{conversation}/messages",
                              {"text": "Leave a note in a file."})
    check(head.status == 200 and head.node == one.url,
          "a message through node2 is forwarded to node1", f"{head}, {head.node!r}")
    received = list(events)
    stdout = "".join(data["text"] for name, data in received if name == "stdout")
    ends = [data for name, data in received if name == "end"]
    check(ends and ends[-1]["outcome"] == "answered" and stdout == "42\n",
          "the turn runs the model's code and ends answered", received[-3:])
    before = three.api("GET", f"/conversations/{conversation}")
    check(before.status == 200 and before.node == one.url,
          "node3 reads the conversation from node1", f"{before}, {before.node!r}")
    records = before.json["records"]
    check([r["type"] for r in records if r["type"] != "start"]
          == ["user", "assistant", "tool", "assistant"], "it holds the turn", records)
    read = two.api("GET", f"/conversations/{conversation}")
    check(read.status == 200 and read.json["records"] == records,
          "node2 reads the same records", read)
    listed = two.api("GET", "/conversations")
    check(listed.status == 200 and conversation in [item["id"] for item in listed.json["data"]],
          "node2 lists the conversation", listed)

    # The owner dies in the middle of a cell; the session goes on elsewhere.
    wait_in_manifest(client, a, {"kept.txt", "upload.bin"})
    wait_in_manifest(client, c, {"note.txt"})
    head, events = two.stream(f"/sessions/{a}/execute", {
        "code": "import time\nprint('sleeping', flush=True)\ntime.sleep(30)\nprint('woke')"},
        timeout=60)
    check(head.status == 200 and head.node == one.url,
          "a long cell runs on node1 through node2", f"{head}, {head.node!r}")
    # Stops at the first match, leaving the rest of the stream to read.
    sleeping = any(name == "stdout" and "sleeping" in data["text"] for name, data in events)
    check(sleeping, "its output streams through node2 while it runs",
          "the stream ended before the cell printed `sleeping`")
    cut = Drain(events)
    one.kill()
    killed_at = time.monotonic()
    print(f"{PROGRAM}: node1 killed with SIGKILL")

    probe = "print('x' in globals())\nprint(open('kept.txt').read(), end='')"
    refused = two.execute(a, probe)
    check(refused.status == 503, "right after the kill, node2 refuses the session with 503",
          refused)
    message = refused.error_message
    check(refused.headers.get("retry-after", "").isdigit() and message,
          "with Retry-After and a sentence",
          f"Retry-After: {refused.headers.get('retry-after')!r}, {refused}")
    print(f"{PROGRAM}: the sentence: {message}")
    taken = until_served(lambda left: two.execute(a, probe, timeout=left),
                         "the session of the killed node1 through node2")
    waited = time.monotonic() - killed_at
    check(waited >= HEARTBEAT_STALE - HEARTBEAT_EVERY - 1,
          "the session is not taken over before node1's heartbeat is stale",
          f"served {waited:.1f} s after the kill")
    check(taken.status == 200 and taken.json["status"] == "ok" and taken.node == two.url,
          f"node2 takes the session over ({waited:.1f} s after the kill)",
          f"{taken}, {taken.node!r}")
    check(taken.json["restarted"] is True, "the execution says restarted", taken)
    check(taken.json["stdout"] == "False\nwritten on node1\n",
          "variables are gone, the file is back", repr(taken.json["stdout"]))
    fetched = three.download(a, "upload.bin")
    check(fetched.status == 200 and fetched.body == content and fetched.node == two.url,
          "the uploaded file reads back whole through node3, from node2",
          f"{fetched.status}, {len(fetched.body)} bytes, {fetched.node!r}")
    seen = three.api("GET", f"/sessions/{a}")
    check(seen.status == 200 and seen.json.get("node") == two.url,
          "node3 shows node2 as the session's node", seen)
    cut.thread.join(max(0.0, killed_at + 45 - time.monotonic()))
    check(not cut.thread.is_alive(), "the forwarded stream of the killed cell has ended",
          "still open 45 s after the kill")
    check(not [name for name, _ in cut.events if name == "end"],
          f"without a result ({cut.ending})", f"events after `sleeping`: {cut.events}")

    read = until_served(lambda left: three.api(
        "GET", f"/conversations/{conversation}", timeout=left),
        "the conversation of the killed node1 through node3")
    check(read.status == 200 and read.json["records"] == records,
          "the conversation is intact through node3", read)
    events = until_streamed(three, f"/conversations/{conversation}/messages",
                            {"text": "Is the note still there?"})
    received = list(events)
    ends = [data for name, data in received if name == "end"]
    check(ends and ends[-1]["outcome"] == "answered", "a second turn runs through node3",
          received[-3:])
    read = three.api("GET", f"/conversations/{conversation}")
    tools = [r for r in read.json["records"] if r["type"] == "tool"] if read.status == 200 else []
    execution = (tools[-1].get("execution") if tools else None) or {}
    check(execution.get("stdout") == "the model was here\nFalse\n"
          and execution.get("restarted") is True,
          "its code finds the note, in a fresh process", execution or read)

    # A node paused past its heartbeat comes back: its session has moved on without it.
    two.pause()
    paused_at = time.monotonic()
    print(f"{PROGRAM}: node2 paused with SIGSTOP")
    moved = until_served(lambda left: three.execute(
        b, "new_var = 'set on node3'\nopen('after.txt', 'w').write('written on node3\\n')\n"
           "import os\nprint('old_only' in globals(), sorted(os.listdir('.')))", timeout=left),
        "node2's session through node3 while node2 is paused")
    waited = time.monotonic() - paused_at
    check(waited >= HEARTBEAT_STALE - HEARTBEAT_EVERY - 1,
          "the session is not taken over before node2's heartbeat is stale",
          f"served {waited:.1f} s after the pause")
    check(moved.status == 200 and moved.node == three.url and moved.json["restarted"] is True,
          f"node3 takes the session over in a fresh process ({waited:.1f} s after the pause)",
          f"{moved}, {moved.node!r}")
    check(moved.json["stdout"] == "False ['after.txt', 'before.txt']\n",
          "the old process's variable is gone, its file is back", repr(moved.json["stdout"]))
    two.resume()
    print(f"{PROGRAM}: node2 resumed with SIGCONT after {time.monotonic() - paused_at:.1f} s")
    back = until_served(lambda left: two.execute(
        b, "print(new_var, 'old_only' in globals())", timeout=left),
        "the moved session through the resumed node2", seconds=20)
    check(back.status == 200 and back.json["stdout"] == "set on node3 False\n",
          "through the resumed node2, code runs in node3's process, not in node2's old one",
          back)
    check(back.node == three.url, "node2 forwarded it to node3", f"Sandcell-Node: {back.node!r}")
    seen = two.api("GET", f"/sessions/{b}")
    check(seen.status == 200 and seen.json.get("node") == three.url,
          "node2 shows node3 as the session's node", seen)

    # Every node stops; fresh ones, with empty data directories, find everything.
    final_records = three.api("GET", f"/conversations/{conversation}").json["records"]
    for node in (two, three):
        code = node.stop()
        check(code == 0, f"{node.name} stops on SIGTERM", f"exit status {code}")
    fresh = [Node(f"fresh{n}", work / f"fresh{n}", database, environment) for n in (1, 2, 3)]
    for node in fresh:
        node.key = alice
    first, second, third = fresh
    listed = first.api("GET", "/sessions")
    owners = {s["id"]: s.get("node") for s in listed.json["data"]} if listed.status == 200 else {}
    check({a, b, c} <= set(owners), "fresh1 lists every session", owners or listed)
    check(all(owners[s] is None for s in (a, b, c)),
          "none runs anywhere once every node has stopped", owners)
    listed = second.api("GET", "/conversations")
    check(listed.status == 200 and conversation in [item["id"] for item in listed.json["data"]],
          "fresh2 lists the conversation", listed)
    read = third.api("GET", f"/conversations/{conversation}")
    check(read.status == 200 and read.json["records"] == final_records,
          "fresh3 reads the whole conversation", read)
    wanted = [(third, a, "upload.bin", content), (third, a, "kept.txt", b"written on node1\n"),
              (first, b, "before.txt", b"written on node2\n"),
              (first, b, "after.txt", b"written on node3\n"),
              (second, c, "note.txt", b"the model was here\n")]
    for node, session, path, expected in wanted:
        fetched = node.download(session, path)
        check(fetched.status == 200 and fetched.body == expected,
              f"{node.name} downloads {path} of session {session[:8]}…, the same bytes",
              f"{fetched.status}, {len(fetched.body)} bytes: {fetched.body[:200]!r}")
    ran = second.execute(a, "import os\nprint(sorted(os.listdir('.')))")
    check(ran.status == 200 and ran.json["restarted"] is True
          and ran.json["stdout"] == "['kept.txt', 'upload.bin']\n" and ran.node == second.url,
          "fresh2 runs code in a session, with its files", f"{ran}, {ran.node!r}")
    read = first.api("GET", f"/notebooks/{notebook}")
    check(read.status == 200 and read.json["title"] == "cluster notes",
          "fresh1 reads the notebook", read)
    for node in fresh:
        code = node.stop()
        check(code == 0, f"{node.name} stops on SIGTERM", f"exit status {code}")


def until_streamed(node: Node, path: str, payload) -> Iterator[tuple[str, dict]]:
    """The events of `Node.stream`, asked again while it answers 503."""
    opened = []

    def attempt(left: float) -> Reply:
        head, events = node.stream(path, payload, timeout=left)
        opened.append(events)
        return head

    head = until_served(attempt, f"POST {path} through {node.name}")
    if head.status != 200:
        fail(f"POST {path} through {node.name} answered {head}")
    return opened[-1]


if __name__ == "__main__":
    main()
