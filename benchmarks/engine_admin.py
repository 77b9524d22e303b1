"""MySQL and SQLite chores for benchmarks/engine_read.py, run with the project's Python.

The MySQL and SQLite counterpart of benchmarks/pg_admin.py. keel's own dev environment has no
database driver, so engine_read.py runs this file with the generated project's interpreter,
which has SQLAlchemy and its engine's driver (asyncmy or aiosqlite). Every command takes the
service's SQLAlchemy URL and prints one JSON value on stdout.

    create URL    MySQL: drop URL's database if it exists, then create it empty;
                  SQLite: remove a leftover file (the migrations create it)
    drop URL      MySQL: drop URL's database; SQLite: remove the file and its -wal and -shm
    seed URL      100 categories and 10,000 products, the rows pg_admin.py seeds; ANALYZE.
                  SQLite: WAL, as the service leaves the file
    info URL      the server's version (SQLite: the library's)
"""

import argparse
import asyncio
import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, column, insert, table, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.ext.asyncio import create_async_engine

CATEGORIES = table("categories", column("id"), column("name"))
PRODUCTS = table(
    "products",
    column("id"),
    column("category_id"),
    column("name"),
    column("price_cents"),
    # Typed, so that SQLite stores the text SQLAlchemy reads back (the service's own format).
    column("created_at", DateTime()),
)
# The service stores the UTC wall time in a column without an offset.
EPOCH = datetime.datetime(2026, 1, 1)


def quote_ident(name: str) -> str:
    """A backquoted MySQL identifier."""
    return "`" + name.replace("`", "``") + "`"


def sqlite_files(url: URL) -> list[Path]:
    """The database file and the two WAL mode adds beside it."""
    path = Path(url.database or "")
    return [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]


async def on_server(url: URL, statement: str) -> None:
    """Run one statement on the MySQL server of `url`, connected to no database."""
    engine = create_async_engine(url.set(database=""))
    try:
        async with engine.connect() as connection:
            await connection.execute(text(statement))
    finally:
        await engine.dispose()


async def create(url: URL) -> dict[str, str]:
    """An empty database (MySQL), or no file yet (SQLite)."""
    if url.get_backend_name() == "sqlite":
        for path in sqlite_files(url):
            path.unlink(missing_ok=True)
    else:
        name = quote_ident(url.database or "")
        await on_server(url, f"DROP DATABASE IF EXISTS {name}")
        await on_server(url, f"CREATE DATABASE {name}")
    return {"created": url.database or ""}


async def drop(url: URL) -> dict[str, str]:
    """The database (MySQL) or the file (SQLite) gone."""
    if url.get_backend_name() == "sqlite":
        for path in sqlite_files(url):
            path.unlink(missing_ok=True)
    else:
        await on_server(url, f"DROP DATABASE IF EXISTS {quote_ident(url.database or '')}")
    return {"dropped": url.database or ""}


async def seed(url: URL, categories: int, products: int) -> dict[str, int]:
    """Fill the catalog (one executemany per table), then update the planner's statistics."""
    engine = create_async_engine(url)
    is_sqlite = url.get_backend_name() == "sqlite"
    try:
        async with engine.begin() as connection:
            await connection.execute(
                insert(CATEGORIES),
                [{"id": g, "name": f"Category {g}"} for g in range(1, categories + 1)],
            )
            await connection.execute(
                insert(PRODUCTS),
                [
                    {
                        "id": g,
                        "category_id": 1 + g % categories,
                        "name": f"Product {g}",
                        "price_cents": (g * 7919) % 100_000,
                        "created_at": EPOCH + datetime.timedelta(minutes=g),
                    }
                    for g in range(1, products + 1)
                ],
            )
        async with engine.connect() as connection:
            if is_sqlite:
                await connection.exec_driver_sql("PRAGMA journal_mode=WAL")
                await connection.exec_driver_sql("ANALYZE")
            else:
                await connection.exec_driver_sql("ANALYZE TABLE categories, products")
    finally:
        await engine.dispose()
    return {"categories": categories, "products": products}


async def info(url: URL) -> dict[str, str]:
    """The server's version, or SQLite's."""
    if url.get_backend_name() == "sqlite":
        return {"server_version": sqlite3.sqlite_version}
    engine = create_async_engine(url.set(database=""))
    try:
        async with engine.connect() as connection:
            version = (await connection.execute(text("SELECT VERSION()"))).scalar_one()
    finally:
        await engine.dispose()
    return {"server_version": str(version)}


def main() -> None:
    """Run one command and print its result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["create", "drop", "seed", "info"])
    parser.add_argument("url", type=make_url)
    parser.add_argument("--categories", type=int, default=100)
    parser.add_argument("--products", type=int, default=10_000)
    args = parser.parse_args()

    result: Any
    match args.command:
        case "create":
            result = asyncio.run(create(args.url))
        case "drop":
            result = asyncio.run(drop(args.url))
        case "seed":
            result = asyncio.run(seed(args.url, args.categories, args.products))
        case "info":
            result = asyncio.run(info(args.url))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
