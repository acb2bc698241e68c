"""moto's S3 server in a child process, with every request it serves counted from its request log.

`moto_server` logs one line per request (werkzeug's access log: `"PUT /bucket/key?query HTTP/1.1" 200`)
on stderr, which goes to a file here; counting the PUT lines between two points in time counts the PUT
requests the client made in between (single PUTs and the parts of multipart uploads alike).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import subprocess
import time
import urllib.request
from collections import Counter

_REQUEST = re.compile(r'"(GET|PUT|POST|DELETE|HEAD) (\S+) HTTP/[\d.]+" (\d{3})')


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoS3:
    def __init__(self, log_path: str):
        self.log_path = log_path
        self.port = free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self._log = open(log_path, "wb")  # noqa: SIM115 - lives with the server
        self._proc = subprocess.Popen(["moto_server", "-H", "127.0.0.1", "-p", str(self.port)],
                                      stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"moto_server exited at start (log: {log_path})")
            try:
                urllib.request.urlopen(self.endpoint + "/moto-api/", timeout=1).read()
                return
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("moto_server did not answer in 30 s") from None
                time.sleep(0.2)

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
                "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1"}

    def requests(self) -> list[tuple[str, str, int]]:
        """(method, path, status) of every request logged so far."""
        self._log.flush()
        with open(self.log_path, errors="replace") as f:
            return [(m.group(1), m.group(2), int(m.group(3))) for m in map(_REQUEST.search, f) if m]

    def stop(self) -> None:
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, 15)
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self._proc.pid, 9)
                self._proc.wait()
        self._log.close()


def put_breakdown(requests: list[tuple[str, str, int]], bucket: str, prefix: str) -> Counter:
    """PUT requests by the repository's top-level object kind (`data`, `index`, `manifests`, ...)."""
    kinds: Counter = Counter()
    lead = f"/{bucket}/{prefix.strip('/')}/" if prefix.strip("/") else f"/{bucket}/"
    for method, path, _status in requests:
        if method != "PUT":
            continue
        key = path.split("?", 1)[0]
        rest = key[len(lead):] if key.startswith(lead) else key
        kinds[rest.split("/", 1)[0] or "(bucket)"] += 1
    return kinds
