"""The reference side of `sandcell bench`: the same work on stock Jupyter kernels
(ipykernel, started and driven by jupyter_client). Reads its plan as JSON on stdin and
prints the measurements as JSON on stdout."""

import json
import sys
import tempfile
import threading
import time

from jupyter_client.manager import start_new_kernel


def main():
    plan = json.load(sys.stdin)
    ready_trivial = [session_ready("1 + 1", None) for _ in range(plan["ready_samples"])]
    ready_plot = [session_ready(plan["first_cell"], "image/png") for _ in range(plan["ready_samples"])]
    report = {
        "session_ready_trivial_ms": [ready for ready, _ in ready_trivial],
        "session_ready_ms": [ready for ready, _ in ready_plot],
        "plot_floor_ms": [floor for _, floor in ready_plot],
        "trivial_cell_ms": trivial_cells(plan["trivial_cells"]),
        "throughput": throughput(plan["throughput_kernels"], plan["throughput_cells"]),
        "density": density(plan["density_kernels"]),
    }
    json.dump(report, sys.stdout)


def execute(client, code):
    """Runs one cell and returns the MIME types it displayed; raises if it failed."""
    kinds = []

    def on_output(message):
        if message["msg_type"] in ("display_data", "execute_result"):
            kinds.extend(message["content"]["data"])

    reply = client.execute_interactive(code, output_hook=on_output, timeout=120)
    if reply["content"]["status"] != "ok":
        raise RuntimeError(f"cell failed on the Jupyter kernel: {reply['content']}")
    return kinds


def session_ready(first_cell, expected_kind):
    """Milliseconds from asking for a kernel to its first cell's result; and, for a cell
    that must display `expected_kind`, the same cell run again in that kernel (the floor:
    what the cell itself costs in a warm process)."""
    started = time.perf_counter()
    manager, client = start_new_kernel(startup_timeout=120)
    try:
        kinds = execute(client, first_cell)
        ready = (time.perf_counter() - started) * 1000
        if expected_kind is None:
            return ready, None
        if expected_kind not in kinds:
            raise RuntimeError(f"the first cell did not return {expected_kind} on the Jupyter kernel")
        started = time.perf_counter()
        execute(client, first_cell)
        return ready, (time.perf_counter() - started) * 1000
    finally:
        stop(manager, client)


def trivial_cells(count):
    manager, client = start_new_kernel(startup_timeout=120)
    try:
        execute(client, "1 + 1")
        times = []
        for _ in range(count):
            started = time.perf_counter()
            execute(client, "1 + 1")
            times.append((time.perf_counter() - started) * 1000)
        return times
    finally:
        stop(manager, client)


def throughput(kernels, cells):
    started_kernels = [start_new_kernel(startup_timeout=120) for _ in range(kernels)]
    try:
        def work(client):
            for _ in range(cells):
                execute(client, "1 + 1")

        threads = [threading.Thread(target=work, args=(client,)) for _, client in started_kernels]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.perf_counter() - started
        return {"sessions": kernels, "cells": kernels * cells, "seconds": elapsed}
    finally:
        for manager, client in started_kernels:
            stop(manager, client)


def density(kernels):
    started_kernels = [start_new_kernel(startup_timeout=120) for _ in range(kernels)]
    try:
        for _, client in started_kernels:
            execute(client, "import numpy, pandas, matplotlib.pyplot")
            execute(client, "1 + 1")
        pss = [memory(manager.provisioner.process.pid) for manager, _ in started_kernels]
        return {"sessions": kernels, "pss_kib": [p for p, _ in pss], "uss_kib": [u for _, u in pss]}
    finally:
        for manager, client in started_kernels:
            stop(manager, client)


def memory(pid):
    """(PSS, USS) of one process in KiB, from /proc/PID/smaps_rollup."""
    fields = {}
    with open(f"/proc/{pid}/smaps_rollup") as rollup:
        for line in rollup:
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                fields[parts[0].rstrip(":")] = int(parts[1])
    return fields["Pss"], fields["Private_Clean"] + fields["Private_Dirty"]


def stop(manager, client):
    client.stop_channels()
    manager.shutdown_kernel(now=True)


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="sandcell-bench-jupyter-", ignore_cleanup_errors=True) as workdir:
        tempfile.tempdir = workdir
        main()
