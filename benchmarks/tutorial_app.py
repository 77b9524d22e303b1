"""The tutorial baseline: GET /products/{id} as a FastAPI + SQLAlchemy tutorial writes it.

What a reader would build from the FastAPI and SQLAlchemy documentation without keel: an async
engine with the default pool (pool_size 5, max_overflow 10, no pre-ping), an AsyncSession per
request from a dependency, ORM models of the two tables with the category loaded by a joined
relationship, `session.get`, and a Pydantic response model read from the attributes. No
middleware. benchmarks/db_read.py serves it beside the floor and the generated service, under
uvicorn (uvloop, httptools, one worker) from the generated project's virtualenv, so all three use
the same FastAPI, SQLAlchemy and asyncpg. The schema is the one the project's migrations create.

Configured by environment variables:
    TUTORIAL_DATABASE_URL      SQLAlchemy URL, e.g. postgresql+asyncpg://postgres@127.0.0.1/bench
    TUTORIAL_APPLICATION_NAME  application_name in pg_stat_activity, default keel-bench-tutorial
"""

import datetime
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

from fastapi import Depends, FastAPI, HTTPException
from pydantic import BaseModel, ConfigDict
from sqlalchemy import ForeignKey
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

engine = create_async_engine(
    os.environ["TUTORIAL_DATABASE_URL"],
    # Only so that the benchmark can count this stack's backends; not a tuning.
    connect_args={
        "server_settings": {
            "application_name": os.environ.get("TUTORIAL_APPLICATION_NAME", "keel-bench-tutorial")
        }
    },
)
SessionLocal = async_sessionmaker(engine, expire_on_commit=False)


class Base(DeclarativeBase):
    pass


class Category(Base):
    __tablename__ = "categories"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Product(Base):
    __tablename__ = "products"

    id: Mapped[int] = mapped_column(primary_key=True)
    category_id: Mapped[int] = mapped_column(ForeignKey("categories.id"))
    name: Mapped[str]
    price_cents: Mapped[int]
    created_at: Mapped[datetime.datetime]
    category: Mapped[Category] = relationship(lazy="joined")


class CategoryRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str


class ProductRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    name: str
    price_cents: int
    created_at: datetime.datetime
    category: CategoryRead


async def get_session() -> AsyncIterator[AsyncSession]:
    """One session per request, closed (its transaction rolled back) after the response."""
    async with SessionLocal() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


@asynccontextmanager
async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
    yield
    await engine.dispose()


app = FastAPI(lifespan=lifespan)


@app.get("/products/{product_id}", response_model=ProductRead)
async def read_product(product_id: int, session: SessionDep) -> Product:
    """One product with its category, or 404."""
    product = await session.get(Product, product_id)
    if product is None:
        raise HTTPException(status_code=404, detail="Product not found")
    return product
