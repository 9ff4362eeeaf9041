"""SeaweedFS (`weed mini`) serving one bucket on loopback ports, and a boto3 client for
it: the S3-compatible server of the tests that keep sessions' files in a bucket
(tests/s3/check.py, tests/cluster/). Environment: WEED_BIN.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

import boto3
import botocore.config
import botocore.exceptions

WEED = os.environ["WEED_BIN"]
BUCKET = "sandcell-files"
ACCESS_KEY, SECRET_KEY = "sandcell-test", "sandcell-test-secret"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class SeaweedFS:
    """`weed mini` with the bucket, every port a free loopback one, in `work`. When it
    cannot run or does not serve the bucket, `fail` is called with the sentence why (the
    test's own, which ends the test)."""

    def __init__(self, work: Path, fail: Callable[[str], NoReturn]):
        self.work = work
        self.fail = fail
        self.ports = {name: free_port() for name in (
            "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
            "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc")}
        self.endpoint = f"http://127.0.0.1:{self.ports['s3.port']}"
        (work / "seaweedfs").mkdir()
        self.process: subprocess.Popen | None = None
        self.start()

    def log(self) -> str:
        return (self.work / "seaweedfs.log").read_text()[-4000:]

    def start(self) -> None:
        """Starts it (again, on the same ports and data) and waits for the bucket."""
        args = [WEED, "mini", f"-dir={self.work / 'seaweedfs'}", "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1", f"-bucket={BUCKET}", "-webdav=false", "-admin.ui=false",
                "-s3.port.iceberg=0", "-s3.port.lance=0", "-master.telemetry=false"]
        args += [f"-{name}={port}" for name, port in self.ports.items()]
        log = open(self.work / "seaweedfs.log", "a")
        # With these variables set, `weed mini` makes them its admin identity.
        env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY)
        try:
            # In `work`: it writes weed.pid into its working directory.
            self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env,
                                            cwd=self.work)
        except OSError as error:
            self.fail(f"SeaweedFS cannot run here ({WEED}: {error})")
        client = s3_client(self.endpoint)
        deadline = time.monotonic() + 120
        while True:
            if self.process.poll() is not None:
                self.fail(f"SeaweedFS exited with {self.process.returncode} before serving S3; "
                     f"its log:\n{self.log()}")
            try:
                client.head_bucket(Bucket=BUCKET)
                return
            except (botocore.exceptions.ClientError,
                    botocore.exceptions.EndpointConnectionError):
                if time.monotonic() > deadline:
                    self.stop()
                    self.fail(f"SeaweedFS did not serve the bucket within 120 s; its log:\n"
                         f"{self.log()}")
                time.sleep(0.5)

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def s3_client(endpoint: str):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
        config=botocore.config.Config(s3={"addressing_style": "path"},
                                      retries={"max_attempts": 1}))

