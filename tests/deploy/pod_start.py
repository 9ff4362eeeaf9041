"""Does on this machine what a pod of deploy/kubernetes/statefulset.yaml does when it starts:
the init container's script on an empty volume, then `sandcell` with the container's
own arguments (the volume's path and the port replaced by a temporary directory and a
free port), checked the way the probes and a client check it. The Python environment is
made first with `sandcell setup`, as the Containerfile does, so the server must start
without building one.
"""

import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

VOLUME = "/var/lib/sandcell"
# How long a server that got SIGTERM is waited for, whatever the pod's grace period,
# before it is killed.
STOP_WAIT_SECS = 60


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def request(method, url, key=None, body=None):
    """(status, parsed JSON body or None)."""
    headers = {"Accept": "application/json"}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=60) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as error:
        return error.code, None


def pod_spec(root):
    with open(root / "deploy/kubernetes/statefulset.yaml", encoding="utf-8") as stream:
        statefulset = yaml.safe_load(stream)
    return statefulset["spec"]["template"]["spec"]


def check_pod_start(checks, root, binary):
    spec = pod_spec(root)
    init_script = spec["initContainers"][0]["command"][-1]
    container = spec["containers"][0]
    port = free_port()
    env = dict(os.environ, PATH=f"{Path(binary).parent}:{os.environ.get('PATH', '')}")

    setup = subprocess.run([binary, "setup"], env=env, capture_output=True, text=True, check=False)
    if setup.returncode != 0:
        checks.check("sandcell setup (the image's build step)", [setup.stderr.strip()])
        return

    # A server that had to be killed leaves its sessions' disks mounted: the directory
    # then stays, and a check says so.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as volume:
        run_init = lambda: subprocess.run(  # noqa: E731
            ["sh", "-c", init_script.replace(VOLUME, volume)],
            env=env, capture_output=True, text=True, check=False,
        )
        first = run_init()
        key_file = Path(volume) / "first-key"
        problems = []
        if first.returncode != 0:
            problems.append(f"it failed: {first.stderr.strip()}")
        elif not key_file.is_file() or not key_file.read_text().strip():
            problems.append("it left no key in first-key")
        elif key_file.stat().st_mode & 0o077:
            problems.append(f"first-key is readable by others (mode {oct(key_file.stat().st_mode & 0o777)})")
        checks.check("the init container makes the first API key on an empty volume", problems)
        if problems:
            return
        key = key_file.read_text().strip()

        # Kubernetes puts the container's variables into its arguments ($(NAME)); here the
        # pod is the first replica.
        variables = {}
        for variable in container.get("env", []):
            if "value" in variable:
                variables[variable["name"]] = variable["value"]
            elif variable.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                variables[variable["name"]] = "sandcell-0"
        args = [
            re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), a)
            .replace(VOLUME, volume).replace("0.0.0.0:8080", f"0.0.0.0:{port}")
            for a in container["args"]
        ]
        unexpanded = [a for a in args if "$(" in a]
        if unexpanded:
            checks.check("the container's arguments name only variables it defines", [f"{unexpanded}"])
            return
        listens = [a for a in args if a.startswith("--listen=")]
        if listens != [f"--listen=0.0.0.0:{port}"] or [p["containerPort"] for p in container["ports"]] != [8080]:
            checks.check(
                "the container listens on its containerPort",
                [f"the arguments are {container['args']}, the ports {container['ports']}"],
            )
            return
        checks.check("the container listens on its containerPort", [])
        log = Path(volume) / "serve.log"
        with open(log, "w", encoding="utf-8") as log_file:
            server = subprocess.Popen([binary, *args], env=env, stdout=log_file, stderr=subprocess.STDOUT)
        try:
            serve_checks(checks, server, f"http://127.0.0.1:{port}", key, args, binary, env, spec, log)
        finally:
            # SIGTERM first: a server stopped that way unmounts its sessions' disks.
            if server.poll() is None:
                server.terminate()
                try:
                    server.wait(timeout=STOP_WAIT_SECS)
                except subprocess.TimeoutExpired:
                    server.kill()
                    server.wait()
                    checks.check(
                        "the server stopped",
                        [f"it had to be killed: its sessions' disks may be left mounted under {volume}"],
                    )

        key_file.unlink()
        again = run_init()
        checks.check(
            "the init container does nothing once the key is made (the key file deleted)",
            [f"it failed: {again.stderr.strip()}"] if again.returncode != 0
            else ["it made another key"] if key_file.exists() else [],
        )


def serve_checks(checks, server, base, key, args, binary, env, spec, log):
    container = spec["containers"][0]
    startup = container["startupProbe"]
    deadline = time.monotonic() + startup["periodSeconds"] * startup["failureThreshold"]
    health = (None, None)
    while time.monotonic() < deadline and server.poll() is None:
        try:
            health = request("GET", base + "/healthz")
            break
        except (urllib.error.URLError, ConnectionError, socket.timeout):
            time.sleep(0.5)
    output = log.read_text()
    checks.check(
        "the server answers /healthz within the startup probe's time, with no key",
        [] if health == (200, {"status": "ok"}) else [f"/healthz: {health}; the server said: {output[-2000:]}"],
    )
    if health[0] != 200:
        return
    checks.check(
        "the server started without building a Python environment (no network needed)",
        ["it built one: " + output[-2000:]] if "creating a Python" in output or "installing the pinned" in output else [],
    )

    # sandcell-nodes: the StatefulSet's headless Service (checked with the manifests).
    advertised = "reach this one at http://sandcell-0.sandcell-nodes:8080"
    checks.check(
        "the node gives other nodes its name in the headless Service",
        [] if advertised in output else [f"the server did not say {advertised!r}: {output[-2000:]}"],
    )

    status, _ = request("POST", base + "/api/v1/sessions", body={})
    checks.check("a request without a key is refused (401)", [] if status == 401 else [f"it got {status}"])

    data_dir = next(a.split("=", 1)[1] for a in args if a.startswith("--data-dir="))
    made = subprocess.run(
        [binary, "serve", f"--data-dir={data_dir}", "--create-key", "alice"],
        env=env, capture_output=True, text=True, check=False,
    )
    second = made.stdout.strip()
    checks.check(
        "another key is made while the server runs (kubectl exec … --create-key)",
        [] if made.returncode == 0 and second else [made.stderr.strip()],
    )

    for who, token in (("the first key", key), ("the key made while serving", second)):
        status, session = request("POST", base + "/api/v1/sessions", token, {})
        problems = [] if status == 201 else [f"creating a session: {status}"]
        if not problems:
            status, result = request(
                "POST", f"{base}/api/v1/sessions/{session['id']}/execute", token, {"code": "6 * 7"}
            )
            if status != 200 or result["results"] != [{"text/plain": "42"}]:
                problems.append(f"executing: {status} {result}")
        checks.check(f"{who} creates a session and runs a cell in it", problems)

    server.terminate()
    grace = spec.get("terminationGracePeriodSeconds", 30)
    try:
        code = server.wait(timeout=grace)
        problems = [] if code == 0 else [f"it exited {code}"]
    except subprocess.TimeoutExpired:
        problems = [f"it was still running {grace} s after SIGTERM"]
    checks.check("SIGTERM stops the server cleanly within the grace period", problems)
