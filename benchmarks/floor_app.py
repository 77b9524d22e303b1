"""The floor: the least a Python service can do to serve GET /products/{id} from its database.

A bare Starlette app on the raw driver the generated project uses, no ORM, no validation, no
middleware. It runs the same single query as the generated service's read path (the product
joined with its category, the same columns) and answers the same JSON shape. The benchmarks
serve it with uvicorn (uvloop, httptools, one worker) from the generated project's own
virtualenv, so both stacks use the same Starlette, driver and uvicorn.

FLOOR_ENGINE chooses the database and its driver:
- postgresql (the default; benchmarks/db_read.py): a raw asyncpg pool;
- mysql (benchmarks/engine_read.py): an asyncmy pool in autocommit, so a read is one round trip
  and leaves no transaction open (asyncmy's pool closes a connection returned inside one);
- sqlite (benchmarks/engine_read.py): FLOOR_POOL_SIZE read-only aiosqlite connections taken in
  turn from a queue. aiosqlite runs each connection's statements one at a time on a thread of
  its own, so one connection serialises every read; engine_read.py gives the floor the number
  of connections that served the most (see its docstring).

With FLOOR_REDIS_URL set it is the floor of a cached read instead (benchmarks/cache_read.py):
the plainest cache-aside, a Redis GET of the product's JSON, and on a miss the same query, then a
SET with a TTL. No lock, no single-flight, no outage handling: what a cache costs at the least.

Configured by environment variables:
    FLOOR_ENGINE            postgresql, mysql or sqlite; default postgresql
    FLOOR_DATABASE_URL      postgresql: asyncpg DSN, e.g. postgresql://postgres@127.0.0.1:5432/bench
                            mysql: mysql://root@127.0.0.1:3306/bench; sqlite: the file's path
    FLOOR_POOL_SIZE         connections in the pool (min = max), default 10
    FLOOR_APPLICATION_NAME  application_name in pg_stat_activity, default keel-bench-floor
    FLOOR_REDIS_URL         Redis to cache in, e.g. redis://127.0.0.1:6379/0; unset: no cache
    FLOOR_CACHE_PREFIX      prefix of the floor's keys, default keel-bench-floor:product:
    FLOOR_CACHE_TTL_SECONDS TTL of a cached product, default 60
"""

import asyncio
import datetime
import functools
import json
import os
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

ENGINE = os.environ.get("FLOOR_ENGINE", "postgresql")
REDIS_URL = os.environ.get("FLOOR_REDIS_URL")
CACHE_PREFIX = os.environ.get("FLOOR_CACHE_PREFIX", "keel-bench-floor:product:")
CACHE_TTL_MS = round(float(os.environ.get("FLOOR_CACHE_TTL_SECONDS", "60")) * 1000)

# The statement SQLAlchemy emits for select(Product).options(joinedload(Product.category)), in
# asyncpg's placeholder style; the other drivers get theirs in place of $1.
QUERY = """
SELECT products.id, products.category_id, products.name, products.price_cents,
       products.created_at, categories_1.id AS category_id_1, categories_1.name AS category_name
FROM products
LEFT OUTER JOIN categories AS categories_1 ON categories_1.id = products.category_id
WHERE products.id = $1
"""

# One product's row by id, or None.
Fetch = Callable[[int], Awaitable[Mapping[str, Any] | None]]
# Opens an engine's connections (URL, pool size) and yields its Fetch.
Opener = Callable[[str, int], AbstractAsyncContextManager[Fetch]]


@asynccontextmanager
async def open_postgresql(url: str, size: int) -> AsyncIterator[Fetch]:
    """A fixed asyncpg pool; a read is its fetchrow."""
    import asyncpg  # each project has its own engine's driver only

    name = os.environ.get("FLOOR_APPLICATION_NAME", "keel-bench-floor")
    pool = await asyncpg.create_pool(
        url, min_size=size, max_size=size, server_settings={"application_name": name}
    )
    try:
        yield functools.partial(pool.fetchrow, QUERY)
    finally:
        await pool.close()


@asynccontextmanager
async def open_mysql(url: str, size: int) -> AsyncIterator[Fetch]:
    """A fixed asyncmy pool in autocommit; a read is one statement on one pooled connection."""
    import asyncmy
    from asyncmy.cursors import DictCursor

    address = urllib.parse.urlsplit(url)
    pool = await asyncmy.create_pool(
        minsize=size,
        maxsize=size,
        host=address.hostname,
        port=address.port or 3306,
        user=address.username,
        password=address.password or "",
        db=address.path.lstrip("/"),
        autocommit=True,
    )
    query = QUERY.replace("$1", "%s")

    async def fetch(product_id: int) -> Mapping[str, Any] | None:
        async with pool.acquire() as connection, connection.cursor(DictCursor) as cursor:
            await cursor.execute(query, (product_id,))
            row: Mapping[str, Any] | None = await cursor.fetchone()
            return row

    try:
        yield fetch
    finally:
        pool.close()
        await pool.wait_closed()


@asynccontextmanager
async def open_sqlite(path: str, size: int) -> AsyncIterator[Fetch]:
    """`size` read-only aiosqlite connections in a queue; a read is one trip to a connection's
    thread."""
    import sqlite3

    import aiosqlite

    free: asyncio.Queue[aiosqlite.Connection] = asyncio.Queue()
    query = QUERY.replace("$1", "?")

    async def fetch(product_id: int) -> Mapping[str, Any] | None:
        connection = await free.get()
        try:
            rows = await connection.execute_fetchall(query, (product_id,))
        finally:
            free.put_nowait(connection)
        return next(iter(rows), None)

    async with AsyncExitStack() as stack:
        for _ in range(size):
            connection = await aiosqlite.connect(f"file:{path}?mode=ro", uri=True)
            stack.push_async_callback(connection.close)
            connection.row_factory = sqlite3.Row
            free.put_nowait(connection)
        yield fetch


def aware_iso(value: datetime.datetime) -> str:
    """asyncpg's timestamptz: an aware datetime."""
    return value.isoformat()


def naive_utc_iso(value: datetime.datetime) -> str:
    """MySQL's DATETIME(6): the UTC wall time, as the service stores it."""
    return value.isoformat() + "+00:00"


def text_utc_iso(value: str) -> str:
    """SQLite's text, "2026-01-01 00:01:00.000000": the UTC wall time, as the service stores it."""
    return datetime.datetime.fromisoformat(value).isoformat() + "+00:00"


# Per engine: how to open its connections, and how to write its created_at as ISO 8601 in UTC.
ENGINES: dict[str, tuple[Opener, Callable[..., str]]] = {
    "postgresql": (open_postgresql, aware_iso),
    "mysql": (open_mysql, naive_utc_iso),
    "sqlite": (open_sqlite, text_utc_iso),
}
open_engine, created_at_iso = ENGINES[ENGINE]


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    """Open the pool (and the Redis client) once the server runs, and close them on shutdown."""
    size = int(os.environ.get("FLOOR_POOL_SIZE", "10"))
    async with AsyncExitStack() as stack:
        fetch = await stack.enter_async_context(open_engine(os.environ["FLOOR_DATABASE_URL"], size))
        state: dict[str, Any] = {"fetch": fetch}
        if REDIS_URL:
            # Imported only here: db_read.py's projects have no Redis client installed.
            from redis.asyncio import Redis

            redis = Redis.from_url(REDIS_URL)
            stack.push_async_callback(redis.aclose)
            state["redis"] = redis
        yield state


def product(row: Mapping[str, Any]) -> dict[str, Any]:
    """The response's shape, the service's ProductRead."""
    return {
        "id": row["id"],
        "name": row["name"],
        "price_cents": row["price_cents"],
        "created_at": created_at_iso(row["created_at"]),
        "category": {"id": row["category_id_1"], "name": row["category_name"]},
    }


async def read_product(request: Request) -> JSONResponse:
    """One product with its category, or 404."""
    row = await request.state.fetch(request.path_params["product_id"])
    if row is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return JSONResponse(product(row))


async def read_cached_product(request: Request) -> Response:
    """One product's JSON from Redis; on a miss from the database, then stored with a TTL."""
    redis = request.state.redis
    product_id = request.path_params["product_id"]
    key = f"{CACHE_PREFIX}{product_id}"
    body = await redis.get(key)
    if body is None:
        row = await request.state.fetch(product_id)
        if row is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        body = json.dumps(product(row), separators=(",", ":")).encode()
        await redis.set(key, body, px=CACHE_TTL_MS)
    return Response(body, media_type="application/json")


route = read_cached_product if REDIS_URL else read_product
app = Starlette(routes=[Route("/products/{product_id:int}", route)], lifespan=lifespan)
