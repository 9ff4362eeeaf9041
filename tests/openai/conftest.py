"""Fixtures: `sandcell serve` with two API keys, its model played by the replay server,
and clients of the official OpenAI SDK whose every answer is checked against OpenAI's
schemas (harness.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import openai
import pytest

from harness import http_client

SANDCELL = os.environ.get("SANDCELL_BIN", "sandcell")
REPLAY = os.environ.get("SANDCELL_REPLAY_BIN", "sandcell-llm-replay")
# The model sandcell's /v1 offers: Anthropic's protocol, played by the replay server.
MODEL = "anthropic:claude-replay"


def started(command: list[str], name: str, **options) -> tuple[subprocess.Popen, str]:
    """Starts a process that prints `listening on http://ADDRESS`; returns it and ADDRESS."""
    process = subprocess.Popen(command, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, **options)
    found = threading.Event()
    address = []

    def read(stream):
        for line in stream:
            print(f"{name}: {line}", end="")
            match = re.search(r"listening on http://(\S+)", line)
            if match and not found.is_set():
                address.append(match.group(1))
                found.set()

    for stream in (process.stdout, process.stderr):
        threading.Thread(target=read, args=(stream,), daemon=True).start()
    if not found.wait(300):
        process.kill()
        raise RuntimeError(f"{name} did not start")
    return process, address[0]


class Server:
    """A `sandcell serve` on a free loopback port with the keys of alice and bob, whose
    model answers with the steps of `script` (a replay server's script)."""

    def __init__(self, data_dir: Path, script: list, serve_args: list[str]):
        script_file = data_dir / "script.json"
        script_file.write_text(json.dumps(script))
        self.replay, replay_address = started([REPLAY, "--script", str(script_file)], "replay")
        (data_dir / "data").mkdir()
        self.keys = [self._create_key(data_dir / "data", name) for name in ("alice", "bob")]
        environment = {
            key: value for key, value in os.environ.items()
            if not key.startswith(("OPENAI_", "ANTHROPIC_", "SANDCELL_MODEL"))
        }
        environment.update(
            SANDCELL_MODEL=MODEL,
            ANTHROPIC_API_KEY="replayed",
            ANTHROPIC_BASE_URL=f"http://{replay_address}",
            SANDCELL_CONFIG=str(data_dir / "no-config.toml"),
        )
        self.process, address = started(
            [SANDCELL, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir / "data"),
             *serve_args],
            "serve",
            env=environment,
        )
        self.base_url = f"http://{address}/v1"
        self.replay_url = f"http://{replay_address}"

    @staticmethod
    def _create_key(data_dir: Path, name: str) -> str:
        done = subprocess.run(
            [SANDCELL, "serve", "--data-dir", str(data_dir), "--create-key", name],
            capture_output=True, text=True, check=True,
        )
        return done.stdout.strip()

    def client(self, key_index: int = 0) -> openai.OpenAI:
        """The official SDK, pointed at this server with alice's (0) or bob's (1) key."""
        return openai.OpenAI(
            base_url=self.base_url, api_key=self.keys[key_index], http_client=http_client(), max_retries=0
        )

    def stop(self) -> int:
        self.replay.kill()
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="module")
def server(request):
    """A server for one test module, its model playing the module's SCRIPT, started with
    the module's SERVE_ARGS."""
    script = getattr(request.module, "SCRIPT", [])
    serve_args = getattr(request.module, "SERVE_ARGS", ["--max-sessions-per-user", "50"])
    with tempfile.TemporaryDirectory() as data_dir:
        running = Server(Path(data_dir), script, serve_args)
        try:
            yield running
        finally:
            assert running.stop() == 0


@pytest.fixture
def client(server) -> openai.OpenAI:
    return server.client(0)
