"""S3 test fixtures (registered for every test folder through ``pytest_plugins`` in tests/conftest.py).

``s3_server``: one moto server (ThreadedMotoServer, real HTTP S3 protocol) on 127.0.0.1 and a free port for the
session; ``s3_settings``: ``StoreSettings`` for a fresh, empty bucket on it
(``make_s3_settings(prefix, **overrides)`` for more); ``s3_client``: a raw boto3 client
for looking behind the store's back. moto keeps everything in RAM and checks no signatures.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pydantic import SecretStr

from reelforge.settings import StoreSettings

S3_TEST_KEY_ID = "reelforge-test"
S3_TEST_SECRET = "reelforge-test-secret"
S3_TEST_REGION = "us-east-1"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[str]:
    """The moto server's endpoint URL, ``http://127.0.0.1:<port>``."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def s3_settings_for(endpoint: str, bucket: str, prefix: str = "", **overrides: Any) -> StoreSettings:
    store = f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"
    values: dict[str, Any] = {
        "store": store,
        "s3_endpoint_url": endpoint,
        "s3_region": S3_TEST_REGION,
        "s3_access_key_id": SecretStr(S3_TEST_KEY_ID),
        "s3_secret_access_key": SecretStr(S3_TEST_SECRET),
    }
    values.update(overrides)
    return StoreSettings(**values)


@pytest.fixture
def s3_client(s3_server: str) -> Any:
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3",
        endpoint_url=s3_server,
        region_name=S3_TEST_REGION,
        aws_access_key_id=S3_TEST_KEY_ID,
        aws_secret_access_key=S3_TEST_SECRET,
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


MakeS3Settings = Callable[..., StoreSettings]


@pytest.fixture
def make_s3_settings(s3_server: str, s3_client: Any) -> MakeS3Settings:
    """``make_s3_settings(prefix="", **settings_overrides)``: settings for another fresh bucket."""

    def factory(prefix: str = "", **overrides: Any) -> StoreSettings:
        bucket = f"reelforge-test-{uuid.uuid4().hex[:12]}"
        s3_client.create_bucket(Bucket=bucket)
        return s3_settings_for(s3_server, bucket, prefix, **overrides)

    return factory


@pytest.fixture
def s3_settings(make_s3_settings: MakeS3Settings) -> StoreSettings:
    """Settings for a fresh bucket (``s3://reelforge-test-<random>``) on the session's moto server."""
    return make_s3_settings()
