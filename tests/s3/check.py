"""Sessions' files in an S3-compatible bucket, end to end.

SeaweedFS (`weed mini`) serves a bucket on loopback ports; `sandcell serve --files
s3://BUCKET/PREFIX` runs a real session whose cell writes files and plants links pointing
outside; the bucket is looked at with boto3. Then the server stops, the session's local
files are deleted, a new server starts on the same data directory, and the session must
come back restarted with the same bytes. Usage: check.py WORK_DIR (a scratch directory).
Environment: SANDCELL_BIN, WEED_BIN.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from seaweedfs import (ACCESS_KEY, BUCKET, SECRET_KEY, SeaweedFS, free_port, s3_client)

SANDCELL = os.environ["SANDCELL_BIN"]
PREFIX = "nodes"


def fail(message: str) -> None:
    print(f"test-s3: FAILED: {message}", file=sys.stderr)
    sys.exit(1)


def sandcell_env(endpoint: str) -> dict[str, str]:
    return dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
                AWS_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)


STARTED: list[subprocess.Popen] = []


class Server:
    """`sandcell serve --files s3://…` on a free loopback port."""

    def __init__(self, data_dir: Path, endpoint: str):
        self.process = subprocess.Popen(
            [SANDCELL, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(data_dir),
             "--warm-sessions", "0", "--files", f"s3://{BUCKET}/{PREFIX}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
            env=sandcell_env(endpoint))
        STARTED.append(self.process)
        found = threading.Event()
        self.address = ""
        self.log: list[str] = []

        def read_log():
            for line in self.process.stderr:
                self.log.append(line)
                print(f"serve: {line}", end="", file=sys.stderr)
                match = re.search(r"listening on http://(\S+)", line)
                if match:
                    self.address = match.group(1)
                    found.set()

        threading.Thread(target=read_log, daemon=True).start()
        if not found.wait(300):
            self.process.kill()
            fail("sandcell serve did not start")

    def request(self, method: str, path: str, body: bytes | None = None,
                content_type: str = "application/json") -> tuple[int, bytes]:
        request = urllib.request.Request(
            f"http://{self.address}{path}", data=body, method=method,
            headers={"Content-Type": content_type} if body is not None else {})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, response.read()
        except urllib.error.HTTPError as error:
            return error.code, error.read()

    def api(self, method: str, path: str, payload=None):
        body = None if payload is None else json.dumps(payload).encode()
        status, answer = self.request(method, f"/api/v1{path}", body)
        return status, (json.loads(answer) if answer else None)

    def execute(self, session: str, code: str) -> dict:
        status, result = self.api("POST", f"/sessions/{session}/execute", {"code": code})
        if status != 200:
            fail(f"execute answered {status}: {result}")
        return result

    def upload(self, session: str, name: str, content: bytes) -> int:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{name}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
                ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        status, _ = self.request("POST", f"/api/v1/sessions/{session}/files", body,
                                 f"multipart/form-data; boundary={boundary}")
        return status

    def metric(self, name: str) -> float:
        _, text = self.request("GET", "/metrics")
        match = re.search(rf"^{re.escape(name)} (\S+)$", text.decode(), re.M)
        return float(match.group(1)) if match else 0.0

    def uploaded_objects(self) -> float:
        return self.metric("sandcell_file_objects_uploaded_total")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=120)
        if code != 0:
            fail(f"sandcell serve exited with {code} on SIGTERM")


def bucket_objects(client) -> dict[str, dict]:
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/")
    return {item["Key"]: item for item in listed.get("Contents", [])}


def manifest(client, session: str) -> dict:
    body = client.get_object(Bucket=BUCKET, Key=f"{PREFIX}/sessions/{session}.json")["Body"]
    return json.loads(body.read())["files"]


def check(condition: bool, message: str) -> None:
    if not condition:
        fail(message)
    print(f"test-s3: ok: {message}")


CELL = """
import os, hashlib
data = bytes(range(256)) * 4096 + os.urandom(4096)
open("data.bin", "wb").write(data)
os.makedirs("sub", exist_ok=True)
open("sub/notes.txt", "w").write("notes\\n")
os.symlink(OUTSIDE, "leak")
os.symlink(os.path.dirname(OUTSIDE), "leakdir")
os.mkfifo("pipe")
print(hashlib.sha256(data).hexdigest())
"""


def main() -> None:
    work = Path(sys.argv[1])
    weed = SeaweedFS(work, fail)
    try:
        run(work, weed)
    finally:
        for server in STARTED:
            if server.poll() is None:
                server.kill()
        weed.stop()
    print("test-s3: all checks passed")


def run(work: Path, weed: SeaweedFS) -> None:
    endpoint = weed.endpoint
    client = s3_client(endpoint)
    data_dir = work / "data"

    # A bucket that cannot be reached stops `serve` with a sentence saying so.
    closed = f"http://127.0.0.1:{free_port()}"
    refused = subprocess.run(
        [SANDCELL, "serve", "--listen", "127.0.0.1:0", "--data-dir", str(work / "refused"),
         "--files", f"s3://{BUCKET}/{PREFIX}"],
        capture_output=True, text=True, env=sandcell_env(closed), timeout=300)
    check(refused.returncode != 0 and "cannot be used" in refused.stderr
          and "AWS_ENDPOINT_URL" in refused.stderr,
          f"an unreachable bucket stops serve: {refused.stderr.strip()[-300:]!r}")

    secret_dir = work / "outside"
    secret_dir.mkdir()
    secret = secret_dir / "secret"
    secret.write_bytes(b"host secret " + os.urandom(16).hex().encode())

    server = Server(data_dir, endpoint)
    status, session = server.api("POST", "/sessions", {})
    check(status == 201, f"a session is created ({status})")
    sid = session["id"]
    first = server.execute(sid, f"OUTSIDE = {str(secret)!r}\n" + CELL)
    check(first["status"] == "ok", f"the cell ran: {first['stderr']}")
    data_hash = first["stdout"].strip()

    files = manifest(client, sid)
    check(sorted(files) == ["data.bin", "sub/notes.txt"],
          f"the manifest names the regular files only, no link or FIFO: {sorted(files)}")
    check(files["data.bin"]["hash"] == data_hash, "data.bin is named by its SHA-256")
    objects = bucket_objects(client)
    for path, entry in files.items():
        key = f"{PREFIX}/objects/{entry['hash']}"
        check(key in objects, f"{path} is stored as {key}")
        content = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
        check(hashlib.sha256(content).hexdigest() == entry["hash"]
              and len(content) == entry["size"], f"the object of {path} is its content")
    secret_bytes = secret.read_bytes()
    for key in objects:
        if key.startswith(f"{PREFIX}/objects/"):
            body = client.get_object(Bucket=BUCKET, Key=key)["Body"].read()
            check(secret_bytes not in body, f"{key} holds nothing of the linked host file")
    uploaded = server.uploaded_objects()
    check(uploaded == 2, f"two objects were uploaded ({uploaded})")

    # An unchanged directory uploads nothing and rewrites no manifest.
    manifest_key = f"{PREFIX}/sessions/{sid}.json"
    before = bucket_objects(client)
    server.execute(sid, "x = 41")
    after = bucket_objects(client)
    check(set(after) == set(before), "a second execution adds no object")
    check(after[manifest_key]["LastModified"] == before[manifest_key]["LastModified"]
          and after[manifest_key]["ETag"] == before[manifest_key]["ETag"],
          "an unchanged manifest is not written again")
    check(server.uploaded_objects() == 2, "the metrics count no new upload")

    # The same content under another name is not uploaded again.
    server.execute(sid, "import shutil; shutil.copy('data.bin', 'copy.bin')")
    check(manifest(client, sid)["copy.bin"]["hash"] == data_hash
          and server.uploaded_objects() == 2, "a copy of a stored content uploads nothing")

    # An upload through the API is written back too (in the background).
    check(server.upload(sid, "uploaded.txt", b"from the client\n") == 201, "a file is uploaded")
    deadline = time.monotonic() + 30
    while "uploaded.txt" not in manifest(client, sid):
        if time.monotonic() > deadline:
            fail("an uploaded file did not reach the manifest within 30 s")
        time.sleep(0.2)
    check(True, "an uploaded file reaches the manifest")
    _, original = server.request("GET", f"/api/v1/sessions/{sid}/files/data.bin")
    check(hashlib.sha256(original).hexdigest() == data_hash, "data.bin reads back whole")

    # The bucket goes away: executions go on, the failure is counted, the local files
    # stay, and the next execution once it is back writes them.
    weed.stop()
    failed = 'sandcell_file_write_backs_total{result="failed"}'
    late = server.execute(sid, "open('late.txt', 'w').write('written while the bucket was away')")
    check(late["status"] == "ok", "an execution succeeds while the bucket is away")
    check(server.metric(failed) >= 1, "the failed write-back is counted")
    status, _ = server.request("GET", f"/api/v1/sessions/{sid}/files/late.txt")
    check(status == 200, "the local file is kept")
    weed.start()
    server.execute(sid, "pass")
    check("late.txt" in manifest(client, sid), "the next write-back carries the file")
    server.stop()

    # The node loses the session's local files.
    sessions_dir = data_dir / "sessions"
    shutil.rmtree(sessions_dir / sid)
    (sessions_dir / f"{sid}.disk").unlink(missing_ok=True)
    check(not (sessions_dir / sid).exists(), "the session's local files are gone")

    server = Server(data_dir, endpoint)
    again = server.execute(sid, "print('x' in globals())\n"
                                "import os\nprint(sorted(os.listdir('.')))")
    check(again["restarted"] is True and again["stdout"].startswith(
        "False"), f"the session restarted, variables gone: {again['stdout']!r}")
    listed = again["stdout"].splitlines()[1]
    check(listed == str(["copy.bin", "data.bin", "late.txt", "sub", "uploaded.txt"]),
          f"the files are back, the link and FIFO not: {listed}")
    _, restored = server.request("GET", f"/api/v1/sessions/{sid}/files/data.bin")
    check(restored == original, "data.bin has the same bytes")
    _, notes = server.request("GET", f"/api/v1/sessions/{sid}/files/sub/notes.txt")
    check(notes == b"notes\n", "sub/notes.txt has the same bytes")
    check(server.uploaded_objects() == 0, "restored files are not uploaded again")

    status, _ = server.api("DELETE", f"/sessions/{sid}")
    check(status == 204, "the session is deleted")
    remaining = bucket_objects(client)
    check(manifest_key not in remaining, "its manifest is deleted")
    check(any(k.startswith(f"{PREFIX}/objects/") for k in remaining),
          "its objects stay for a later collection")
    server.stop()


if __name__ == "__main__":
    main()
