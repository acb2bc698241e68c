"""moto's S3/KMS server on a free loopback port, for code that talks to AWS through real HTTP (the
worker's S3 backend, KMS key wrapping).

    from tests.support.moto_server import moto_endpoint  # a pytest fixture: import it into a test module

The fixture yields the endpoint URL and sets AWS_ENDPOINT_URL for the test, so boto3 clients created
without an explicit endpoint reach the server.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_moto_server() -> Iterator[str]:
    """Start moto's ThreadedMotoServer on 127.0.0.1:<free port>; yield its URL; stop it."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server_url() -> Iterator[str]:
    """One moto server for the whole test session (its state is shared: use unique bucket names)."""
    with running_moto_server() as url:
        yield url


@pytest.fixture
def moto_endpoint(moto_server_url: str, monkeypatch) -> str:
    """The moto server's URL, with AWS_ENDPOINT_URL pointing at it for this test."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server_url)
    return moto_server_url
