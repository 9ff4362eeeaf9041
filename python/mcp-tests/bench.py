"""Round-trip latency of a trivial `run_python` call through sandcell's MCP door.

Over stdio (`sandcell mcp`) and over Streamable HTTP (`sandcell serve` at /mcp), with a
minimal JSON-RPC client from the standard library (no SDK in the measured path): after
a warm-up, each call is `tools/call run_python {"code": "1"}` sent and its answer read.
Prints p50 and p99 in milliseconds.

Usage: bench.py SANDCELL_BINARY [CALLS]
"""

from __future__ import annotations

import http.client
import json
import re
import statistics
import subprocess
import sys
import tempfile
import time

INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 0,
    "method": "initialize",
    "params": {"protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "bench", "version": "1"}},
}
INITIALIZED = {"jsonrpc": "2.0", "method": "notifications/initialized"}
WARM_UP = 20


def call(request_id: int) -> dict:
    return {
        "jsonrpc": "2.0",
        "id": request_id,
        "method": "tools/call",
        "params": {"name": "run_python", "arguments": {"code": "1"}},
    }


def percentiles(samples: list[float]) -> str:
    ordered = sorted(samples)
    p50 = statistics.median(ordered)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return f"p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms ({len(ordered)} calls)"


def bench_stdio(sandcell: str, calls: int) -> str:
    process = subprocess.Popen(
        [sandcell, "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )

    def send(message: dict) -> None:
        process.stdin.write(json.dumps(message) + "\n")
        process.stdin.flush()

    def answer(request_id: int) -> dict:
        while True:
            message = json.loads(process.stdout.readline())
            if message.get("id") == request_id:
                return message

    try:
        send(INITIALIZE)
        answer(0)
        send(INITIALIZED)
        samples = []
        for request_id in range(1, WARM_UP + calls + 1):
            started = time.perf_counter()
            send(call(request_id))
            result = answer(request_id)["result"]
            elapsed = time.perf_counter() - started
            assert result["structuredContent"]["status"] == "ok", result
            if request_id > WARM_UP:
                samples.append(elapsed)
        return percentiles(samples)
    finally:
        process.stdin.close()
        process.wait(timeout=60)


def bench_http(sandcell: str, calls: int) -> str:
    with tempfile.TemporaryDirectory() as data_dir:
        key = subprocess.run(
            [sandcell, "serve", "--data-dir", data_dir, "--create-key", "bench"],
            capture_output=True, text=True, check=True,
        ).stdout.strip()
        server = subprocess.Popen(
            [sandcell, "serve", "--listen", "127.0.0.1:0", "--data-dir", data_dir],
            stderr=subprocess.PIPE, text=True,
        )
        try:
            address = None
            for line in server.stderr:
                match = re.search(r"listening on http://(\S+)", line)
                if match:
                    address = match.group(1)
                    break
            if address is None:
                raise RuntimeError("sandcell serve did not start")
            host, port = address.rsplit(":", 1)
            connection = http.client.HTTPConnection(host, int(port), timeout=60)
            headers = {
                "Authorization": f"Bearer {key}",
                "Accept": "application/json, text/event-stream",
                "Content-Type": "application/json",
            }

            def post(message: dict) -> tuple[http.client.HTTPResponse, bytes]:
                connection.request("POST", "/mcp", body=json.dumps(message), headers=headers)
                response = connection.getresponse()
                return response, response.read()

            response, _ = post(INITIALIZE)
            headers["Mcp-Session-Id"] = response.getheader("mcp-session-id")
            headers["MCP-Protocol-Version"] = "2025-11-25"
            post(INITIALIZED)
            samples = []
            for request_id in range(1, WARM_UP + calls + 1):
                started = time.perf_counter()
                _, body = post(call(request_id))
                elapsed = time.perf_counter() - started
                assert b'"status":"ok"' in body, body[:300]
                if request_id > WARM_UP:
                    samples.append(elapsed)
            return percentiles(samples)
        finally:
            server.terminate()
            server.wait(timeout=60)


def main() -> None:
    sandcell = sys.argv[1]
    calls = int(sys.argv[2]) if len(sys.argv) > 2 else 500
    print(f"run_python round trip over stdio: {bench_stdio(sandcell, calls)}")
    print(f"run_python round trip over HTTP:  {bench_http(sandcell, calls)}")


if __name__ == "__main__":
    main()
