"""Request id, Server-Timing and compression."""

import re

import pytest
from httpx import AsyncClient

# The first four bytes of every Zstandard frame (RFC 8878, 3.1.1).
ZSTD_MAGIC_NUMBER = b"\x28\xb5\x2f\xfd"


async def test_request_id_is_generated_and_echoed(client: AsyncClient) -> None:
    response = await client.get("/health")

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_a_sane_incoming_request_id_is_kept(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"x-request-id": "edge-42.abc"})

    assert response.headers["x-request-id"] == "edge-42.abc"


async def test_an_unsafe_incoming_request_id_is_replaced(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"x-request-id": "x" * 200})

    assert re.fullmatch(r"[0-9a-f]{32}", response.headers["x-request-id"])


async def test_server_timing_reports_the_application_time(client: AsyncClient) -> None:
    response = await client.get("/health")

    assert re.fullmatch(r"app;dur=\d+\.\d", response.headers["server-timing"])


@pytest.mark.parametrize("encoding", ["gzip", "br"])
async def test_large_bodies_are_compressed(client: AsyncClient, encoding: str) -> None:
    response = await client.get("/openapi.json", headers={"accept-encoding": encoding})

    assert response.headers["content-encoding"] == encoding
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.json()["paths"]  # httpx has decoded it


async def test_zstd_is_preferred_when_the_client_accepts_it(client: AsyncClient) -> None:
    headers = {"accept-encoding": "gzip, br;q=1.0, zstd;q=0.5"}
    async with client.stream("GET", "/openapi.json", headers=headers) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])

    assert response.headers["content-encoding"] == "zstd"
    assert raw.startswith(ZSTD_MAGIC_NUMBER)


async def test_small_bodies_are_not_compressed(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"accept-encoding": "gzip"})

    assert "content-encoding" not in response.headers
