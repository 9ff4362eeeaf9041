"""The HTTP reference of `sandcell bench`: the same work on Jupyter Kernel Gateway, driven
as a program would drive it: `POST /api/kernels` over a keep-alive HTTP connection, then
cells sent as `execute_request` messages over the kernel's `/api/kernels/ID/channels`
websocket. Starts the gateway on a free loopback port, reads its plan as JSON on stdin
and prints the measurements as JSON on stdout; what goes wrong is said on stderr."""

import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import requests
import websocket

STARTUP_SECONDS = 60
CELL_SECONDS = 120


def main():
    plan = json.load(sys.stdin)
    with tempfile.TemporaryDirectory(prefix="sandcell-bench-gateway-", ignore_cleanup_errors=True) as workdir, Gateway(workdir) as gateway:
        ready_trivial = [gateway.session_ready("1 + 1", None) for _ in range(plan["ready_samples"])]
        ready_plot = [gateway.session_ready(plan["first_cell"], "image/png") for _ in range(plan["ready_samples"])]
        report = {
            "session_ready_trivial_ms": [ready for ready, _ in ready_trivial],
            "session_ready_ms": [ready for ready, _ in ready_plot],
            "plot_floor_ms": [floor for _, floor in ready_plot],
            "trivial_cell_ms": gateway.trivial_cells(plan["trivial_cells"]),
            "throughput": gateway.throughput(plan["clients"], plan["cells_per_client"]),
        }
    json.dump(report, sys.stdout)


class Gateway:
    """A Kernel Gateway process of our own, stopped on exit."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        self.log_path = os.path.join(workdir, "gateway.log")
        self.process = None

    def __enter__(self):
        env = dict(os.environ, JUPYTER_RUNTIME_DIR=os.path.join(self.workdir, "runtime"))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "kernel_gateway",
                    "--KernelGatewayApp.ip=127.0.0.1",
                    f"--KernelGatewayApp.port={self.port}",
                    "--KernelGatewayApp.port_retries=0",
                    "--KernelGatewayApp.log_level=WARN",
                ],
                cwd=self.workdir,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"Jupyter Kernel Gateway exited with {self.process.returncode}: {self.log_tail()}")
            try:
                if self.http.get(f"{self.base}/api", timeout=5).ok:
                    return self
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"Jupyter Kernel Gateway did not answer within {STARTUP_SECONDS} s: {self.log_tail()}")
            time.sleep(0.1)

    def __exit__(self, *_):
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def log_tail(self):
        with open(self.log_path, "rb") as log:
            return log.read()[-2000:].decode(errors="replace").strip()

    def start_kernel(self):
        response = self.http.post(f"{self.base}/api/kernels", json={}, timeout=STARTUP_SECONDS)
        response.raise_for_status()
        return Kernel(self, response.json()["id"])

    def session_ready(self, first_cell, expected_kind):
        """Milliseconds from asking for a kernel to its first cell's result; and, for a
        cell that must display `expected_kind`, the same cell run again in that kernel
        (the floor: what the cell itself costs in a warm process)."""
        started = time.perf_counter()
        kernel = self.start_kernel()
        try:
            kinds = kernel.execute(first_cell)
            ready = (time.perf_counter() - started) * 1000
            if expected_kind is None:
                return ready, None
            if expected_kind not in kinds:
                raise RuntimeError(f"the first cell did not return {expected_kind} on the gateway's kernel")
            started = time.perf_counter()
            kernel.execute(first_cell)
            return ready, (time.perf_counter() - started) * 1000
        finally:
            kernel.stop()

    def trivial_cells(self, count):
        kernel = self.start_kernel()
        try:
            kernel.execute("1 + 1")
            times = []
            for _ in range(count):
                started = time.perf_counter()
                kernel.execute("1 + 1")
                times.append((time.perf_counter() - started) * 1000)
            return times
        finally:
            kernel.stop()

    def throughput(self, clients, cells):
        kernels = []
        try:
            for _ in range(clients):
                kernels.append(self.start_kernel())
                kernels[-1].execute("1 + 1")
            failures = []

            def work(kernel):
                try:
                    for _ in range(cells):
                        kernel.execute("1 + 1")
                except Exception as error:  # reported below, after every client stopped
                    failures.append(error)

            threads = [threading.Thread(target=work, args=(kernel,)) for kernel in kernels]
            started = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            elapsed = time.perf_counter() - started
            if failures:
                raise failures[0]
            return {"sessions": clients, "cells": clients * cells, "seconds": elapsed}
        finally:
            for kernel in kernels:
                kernel.stop()


class Kernel:
    """One kernel of the gateway and its channels websocket."""

    def __init__(self, gateway, kernel_id):
        self.gateway = gateway
        self.id = kernel_id
        self.session = uuid.uuid4().hex
        self.socket = websocket.create_connection(
            f"ws://127.0.0.1:{gateway.port}/api/kernels/{kernel_id}/channels",
            timeout=CELL_SECONDS,
        )

    def execute(self, code):
        """Runs one cell and returns the MIME types it displayed; raises if it failed.
        Done when both its reply and the kernel's return to idle have arrived, as
        jupyter_client's `execute_interactive` waits."""
        msg_id = uuid.uuid4().hex
        self.socket.send(json.dumps({
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": "bench",
                "session": self.session,
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": code,
                "silent": False,
                "store_history": True,
                "user_expressions": {},
                "allow_stdin": False,
                "stop_on_error": True,
            },
            "channel": "shell",
            "buffers": [],
        }))
        kinds = []
        reply = None
        idle = False
        while reply is None or not idle:
            self.acknowledge_quickly()
            message = json.loads(self.socket.recv())
            if message.get("parent_header", {}).get("msg_id") != msg_id:
                continue
            kind = message["msg_type"]
            if kind in ("display_data", "execute_result"):
                kinds.extend(message["content"]["data"])
            elif kind == "execute_reply":
                reply = message["content"]
            elif kind == "status" and message["content"]["execution_state"] == "idle":
                idle = True
        if reply["status"] != "ok":
            raise RuntimeError(f"cell failed on the gateway's kernel: {reply}")
        return kinds

    def acknowledge_quickly(self):
        """On the gateway's websocket a small message waits for our acknowledgement of
        the previous one, which Linux delays by up to 40 ms. A stock client pays that; we
        acknowledge at once (the setting lasts only a while, hence before every read) so
        that the figures show the gateway and the kernel, not a TCP timer."""
        if hasattr(socket, "TCP_QUICKACK"):
            self.socket.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)

    def stop(self):
        self.socket.close()
        self.gateway.http.delete(f"{self.gateway.base}/api/kernels/{self.id}", timeout=STARTUP_SECONDS)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


if __name__ == "__main__":
    try:
        main()
    except Exception as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        sys.exit(1)
