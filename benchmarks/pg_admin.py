"""PostgreSQL chores for the benchmarks (db_read.py, cache_read.py), run with the project's Python.

keel's own dev environment has no database driver, so the benchmarks run this file with the
generated project's interpreter, which has asyncpg. Every command connects to the admin
database (`postgres`) unless it says otherwise, so its own connection is never counted as a
session of the database under test. Each command prints one JSON value on stdout.

    create NAME                  drop NAME if it exists, then create it empty
    drop NAME                    drop NAME, disconnecting whoever is still on it
    seed DSN                     100 categories and 10,000 products, one statement each; ANALYZE
    info                         the server's version
    counters NAME                pg_stat_database of NAME so far: sessions (connections opened),
                                 xact_commit and xact_rollback (an autocommit statement is a
                                 commit), as its backends last flushed them
    watch NAME SECONDS           sample pg_stat_activity every 0.2 s: backends per application
    scans DSN TABLE              index and sequential scans of TABLE so far (pg_stat_user_tables),
                                 on DSN's own database, as its backends last flushed them
"""

import argparse
import asyncio
import json
import os
import time
from typing import Any

import asyncpg

ADMIN_DSN = os.environ.get("BENCH_ADMIN_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
SAMPLE_INTERVAL_SECONDS = 0.2


def quote_ident(name: str) -> str:
    """A double-quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'


async def create(name: str) -> dict[str, str]:
    """Create an empty database, dropping a leftover of the same name first."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
        await connection.execute(f"CREATE DATABASE {quote_ident(name)}")
    finally:
        await connection.close()
    return {"created": name}


async def drop(name: str) -> dict[str, str]:
    """Drop a database even if a connection is still open on it."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        await connection.execute(f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    finally:
        await connection.close()
    return {"dropped": name}


async def seed(dsn: str, categories: int, products: int) -> dict[str, int]:
    """Fill the catalog in one statement per table, set the id sequences, and ANALYZE."""
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(
            "INSERT INTO categories (id, name)"
            " SELECT g, 'Category ' || g FROM generate_series(1, $1::int) AS g",
            categories,
        )
        await connection.execute(
            "INSERT INTO products (id, category_id, name, price_cents, created_at)"
            " SELECT g, 1 + g % $2::int, 'Product ' || g, (g::bigint * 7919) % 100000,"
            "        timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute'"
            " FROM generate_series(1, $1::int) AS g",
            products,
            categories,
        )
        # Later inserts through the service must not collide with the seeded ids.
        for table in ("categories", "products"):
            await connection.execute(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), max(id)) FROM {table}"
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    return {"categories": categories, "products": products}


async def info() -> dict[str, str]:
    """The server's version string."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        version = await connection.fetchval("SHOW server_version")
    finally:
        await connection.close()
    return {"server_version": version}


async def counters(name: str) -> dict[str, int]:
    """Connections opened, transactions committed and rolled back in the database so far."""
    connection = await asyncpg.connect(ADMIN_DSN)
    try:
        # A fresh read, not the snapshot an earlier statement of this session cached.
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        row = await connection.fetchrow(
            "SELECT sessions, xact_commit, xact_rollback FROM pg_stat_database WHERE datname = $1",
            name,
        )
    finally:
        await connection.close()
    return {
        "sessions": int(row["sessions"] or 0) if row else 0,
        "commits": int(row["xact_commit"] or 0) if row else 0,
        "rollbacks": int(row["xact_rollback"] or 0) if row else 0,
    }


async def watch(name: str, seconds: float) -> dict[str, dict[str, float]]:
    """Backends open on the database per application_name, sampled for `seconds`."""
    connection = await asyncpg.connect(ADMIN_DSN)
    samples: dict[str, list[int]] = {}
    rounds = 0
    try:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            rows = await connection.fetch(
                "SELECT application_name, count(*) AS backends FROM pg_stat_activity"
                " WHERE datname = $1 GROUP BY application_name",
                name,
            )
            for row in rows:
                # Zeros for the rounds before this application first showed up.
                samples.setdefault(row["application_name"], [0] * rounds).append(row["backends"])
            rounds += 1
            for counts in samples.values():
                counts.extend([0] * (rounds - len(counts)))
            await asyncio.sleep(SAMPLE_INTERVAL_SECONDS)
    finally:
        await connection.close()
    return {
        application: {"mean": sum(counts) / len(counts), "max": max(counts), "min": min(counts)}
        for application, counts in samples.items()
    }


async def scans(dsn: str, table: str) -> dict[str, int]:
    """How many index and sequential scans of a table the database has counted."""
    connection = await asyncpg.connect(dsn)
    try:
        row = await connection.fetchrow(
            "SELECT idx_scan, seq_scan FROM pg_stat_user_tables WHERE relname = $1", table
        )
    finally:
        await connection.close()
    if row is None:
        raise SystemExit(f"no table {table!r}")
    return {"idx_scan": int(row["idx_scan"] or 0), "seq_scan": int(row["seq_scan"] or 0)}


def main() -> None:
    """Run one command and print its result as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("create").add_argument("name")
    commands.add_parser("drop").add_argument("name")
    seed_parser = commands.add_parser("seed")
    seed_parser.add_argument("dsn")
    seed_parser.add_argument("--categories", type=int, default=100)
    seed_parser.add_argument("--products", type=int, default=10_000)
    commands.add_parser("info")
    commands.add_parser("counters").add_argument("name")
    watch_parser = commands.add_parser("watch")
    watch_parser.add_argument("name")
    watch_parser.add_argument("seconds", type=float)
    scans_parser = commands.add_parser("scans")
    scans_parser.add_argument("dsn")
    scans_parser.add_argument("table")
    args = parser.parse_args()

    result: Any
    match args.command:
        case "create":
            result = asyncio.run(create(args.name))
        case "drop":
            result = asyncio.run(drop(args.name))
        case "seed":
            result = asyncio.run(seed(args.dsn, args.categories, args.products))
        case "info":
            result = asyncio.run(info())
        case "counters":
            result = asyncio.run(counters(args.name))
        case "watch":
            result = asyncio.run(watch(args.name, args.seconds))
        case "scans":
            result = asyncio.run(scans(args.dsn, args.table))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
