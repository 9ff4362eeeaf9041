"""Fixtures: a client of each transport, and one `sandcell serve` with two API keys."""

from __future__ import annotations

import re
import signal
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from harness import SANDCELL, connect


class HttpServer:
    """A `sandcell serve` on a free loopback port, with the keys of two users."""

    def __init__(self, data_dir: Path):
        self.keys = [self._create_key(data_dir, name) for name in ("alice", "bob")]
        self.process = subprocess.Popen(
            [SANDCELL, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
             "--max-sessions-per-user", "50"],
            stderr=subprocess.PIPE,
            text=True,
        )
        found = threading.Event()
        self.address = ""

        def read_log():
            for line in self.process.stderr:
                print(f"serve: {line}", end="")
                match = re.search(r"listening on http://(\S+)", line)
                if match:
                    self.address = match.group(1)
                    found.set()

        threading.Thread(target=read_log, daemon=True).start()
        if not found.wait(300):
            self.process.kill()
            raise RuntimeError("sandcell serve did not start")
        self.url = f"http://{self.address}/mcp"

    @staticmethod
    def _create_key(data_dir: Path, name: str) -> str:
        done = subprocess.run(
            [SANDCELL, "serve", "--data-dir", str(data_dir), "--create-key", name],
            capture_output=True, text=True, check=True,
        )
        return done.stdout.strip()

    def stop(self) -> int:
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=60)


@pytest.fixture(scope="session")
def http_server():
    with tempfile.TemporaryDirectory() as data_dir:
        server = HttpServer(Path(data_dir))
        try:
            yield server
        finally:
            assert server.stop() == 0


@pytest.fixture(params=["stdio", "http"])
def open_client(request):
    """`open_client(version)`: a new connection to sandcell over the transport."""
    if request.param == "stdio":
        return lambda version="2025-11-25": connect(version)
    server = request.getfixturevalue("http_server")
    return lambda version="2025-11-25": connect(version, http=(server.url, server.keys[0]))
