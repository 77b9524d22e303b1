"""Request id, Server-Timing and compression."""

import re

from httpx import AsyncClient


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


async def test_large_bodies_are_gzipped(client: AsyncClient) -> None:
    response = await client.get("/openapi.json", headers={"accept-encoding": "gzip"})

    assert response.headers["content-encoding"] == "gzip"
    assert len(response.content) > 1024  # httpx has decoded it


async def test_small_bodies_are_not_compressed(client: AsyncClient) -> None:
    response = await client.get("/health", headers={"accept-encoding": "gzip"})

    assert "content-encoding" not in response.headers
