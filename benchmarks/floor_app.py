"""The floor: the least a Python service can do to serve GET /products/{id} from PostgreSQL.

A bare Starlette app and a raw asyncpg pool, no ORM, no validation, no middleware. It runs the
same single query as the generated service's read path (the product joined with its category,
the same seven columns) and answers the same JSON shape. benchmarks/db_read.py serves it with
uvicorn (uvloop, httptools, one worker) from the generated project's own virtualenv, so both
stacks use the same Starlette, asyncpg and uvicorn.

Configured by environment variables:
    FLOOR_DATABASE_URL      asyncpg DSN, e.g. postgresql://postgres@127.0.0.1:5432/bench
    FLOOR_POOL_SIZE         connections in the pool (min_size = max_size), default 10
    FLOOR_APPLICATION_NAME  application_name in pg_stat_activity, default keel-bench-floor
"""

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

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
    """Open the pool once the server runs, and close it on shutdown."""
    size = int(os.environ.get("FLOOR_POOL_SIZE", "10"))
    pool = await asyncpg.create_pool(
        os.environ["FLOOR_DATABASE_URL"],
        min_size=size,
        max_size=size,
        server_settings={
            "application_name": os.environ.get("FLOOR_APPLICATION_NAME", "keel-bench-floor")
        },
    )
    try:
        yield {"pool": pool}
    finally:
        await pool.close()


async def read_product(request: Request) -> JSONResponse:
    """One product with its category, or 404."""
    pool: asyncpg.Pool = request.state.pool
    row = await pool.fetchrow(QUERY, request.path_params["product_id"])
    if row is None:
        return JSONResponse({"detail": "Not Found"}, status_code=404)
    return JSONResponse(
        {
            "id": row["id"],
            "name": row["name"],
            "price_cents": row["price_cents"],
            "created_at": row["created_at"].isoformat(),
            "category": {"id": row["category_id_1"], "name": row["category_name"]},
        }
    )


app = Starlette(routes=[Route("/products/{product_id:int}", read_product)], lifespan=lifespan)
