"""The floor: the least a Python service can do to serve GET /products/{id} from PostgreSQL.

A bare Starlette app and a raw asyncpg pool, no ORM, no validation, no middleware. It runs the
same single query as the generated service's read path (the product joined with its category,
the same seven columns) and answers the same JSON shape. benchmarks/db_read.py serves it with
uvicorn (uvloop, httptools, one worker) from the generated project's own virtualenv, so both
stacks use the same Starlette, asyncpg and uvicorn.

With FLOOR_REDIS_URL set it is the floor of a cached read instead (benchmarks/cache_read.py):
the plainest cache-aside, a Redis GET of the product's JSON, and on a miss the same query, then a
SET with a TTL. No lock, no single-flight, no outage handling: what a cache costs at the least.

Configured by environment variables:
    FLOOR_DATABASE_URL      asyncpg DSN, e.g. postgresql://postgres@127.0.0.1:5432/bench
    FLOOR_POOL_SIZE         connections in the pool (min_size = max_size), default 10
    FLOOR_APPLICATION_NAME  application_name in pg_stat_activity, default keel-bench-floor
    FLOOR_REDIS_URL         Redis to cache in, e.g. redis://127.0.0.1:6379/0; unset: no cache
    FLOOR_CACHE_PREFIX      prefix of the floor's keys, default keel-bench-floor:product:
    FLOOR_CACHE_TTL_SECONDS TTL of a cached product, default 60
"""

import json
import os
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

REDIS_URL = os.environ.get("FLOOR_REDIS_URL")
CACHE_PREFIX = os.environ.get("FLOOR_CACHE_PREFIX", "keel-bench-floor:product:")
CACHE_TTL_MS = round(float(os.environ.get("FLOOR_CACHE_TTL_SECONDS", "60")) * 1000)

# The statement SQLAlchemy emits for select(Product).options(joinedload(Product.category)).
QUERY = """
SELECT products.id, products.category_id, products.name, products.price_cents,
       products.created_at, categories_1.id AS category_id_1, categories_1.name AS category_name
FROM products
LEFT OUTER JOIN categories AS categories_1 ON categories_1.id = products.category_id
WHERE products.id = $1
"""


@asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
    """Open the pool (and the Redis client) once the server runs, and close them on shutdown."""
    size = int(os.environ.get("FLOOR_POOL_SIZE", "10"))
    async with AsyncExitStack() as stack:
        pool = await asyncpg.create_pool(
            os.environ["FLOOR_DATABASE_URL"],
            min_size=size,
            max_size=size,
            server_settings={
                "application_name": os.environ.get("FLOOR_APPLICATION_NAME", "keel-bench-floor")
            },
        )
        stack.push_async_callback(pool.close)
        state: dict[str, Any] = {"pool": pool}
        if REDIS_URL:
            # Imported only here: db_read.py's projects have no Redis client installed.
            from redis.asyncio import Redis

            redis = Redis.from_url(REDIS_URL)
            stack.push_async_callback(redis.aclose)
            state["redis"] = redis
        yield state


def product(row: asyncpg.Record) -> dict[str, Any]:
    """The response's shape, the service's ProductRead."""
    return {
        "id": row["id"],
        "name": row["name"],
        "price_cents": row["price_cents"],
        "created_at": row["created_at"].isoformat(),
        "category": {"id": row["category_id_1"], "name": row["category_name"]},
    }


async def read_product(request: Request) -> JSONResponse:
    """One product with its category, or 404."""
    pool: asyncpg.Pool = request.state.pool
    row = await pool.fetchrow(QUERY, request.path_params["product_id"])
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
        pool: asyncpg.Pool = request.state.pool
        row = await pool.fetchrow(QUERY, product_id)
        if row is None:
            return JSONResponse({"detail": "Not Found"}, status_code=404)
        body = json.dumps(product(row), separators=(",", ":")).encode()
        await redis.set(key, body, px=CACHE_TTL_MS)
    return Response(body, media_type="application/json")


route = read_cached_product if REDIS_URL else read_product
app = Starlette(routes=[Route("/products/{product_id:int}", route)], lifespan=lifespan)
