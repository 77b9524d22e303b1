"""The stacks that read products from PostgreSQL, and the database they read, for the benchmarks.

- a scratch database of the run's own, migrated by the project and seeded, dropped at the end;
- the generated service under its own gunicorn.conf.py: one worker in production, on free ports;
- the floor: benchmarks/floor_app.py, bare Starlette and a raw asyncpg pool, under uvicorn;
- the tutorial: benchmarks/tutorial_app.py, FastAPI + SQLAlchemy as their tutorials write it;
- Stacks, which starts any of them on that database, side by side or in turn.

PostgreSQL chores run through benchmarks/pg_admin.py with the project's Python, which has asyncpg.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    BENCH_DIR,
    HOST,
    PACKAGE,
    Processes,
    Project,
    Server,
    free_port,
    log,
    project_env,
    run,
    start_gunicorn,
    start_uvicorn,
)

PG_ADMIN = BENCH_DIR / "pg_admin.py"
PG_PORT, PG_USER = 5432, "postgres"
CATEGORIES = 100
SERVICE_APP_NAME = "keel-bench-service"
FLOOR_APP_NAME = "keel-bench-floor"
TUTORIAL_APP_NAME = "keel-bench-tutorial"
FALLBACK_POOL_SIZE = 10
# Long enough for every backend to flush its statistics (PostgreSQL does so at most once a second).
STATS_SETTLE_SECONDS = 1.5
# The libraries on the read path, whose versions head a report.
VERSIONS_OF = ("fastapi", "starlette", "pydantic", "sqlalchemy", "asyncpg", "uvicorn", "gunicorn")


def pg_admin(python: Path, *args: str) -> Any:
    """Run one benchmarks/pg_admin.py command with the project's Python; returns its JSON."""
    return json.loads(run([python, PG_ADMIN, *args], env=project_env()))


def postgres_line(python: Path) -> dict[str, str]:
    """The server's version and address, for harness.machine_info."""
    return {"postgresql": f"{pg_admin(python, 'info')['server_version']} on {HOST}:{PG_PORT}"}


def database_urls(name: str) -> tuple[str, str]:
    """(SQLAlchemy URL for the service, asyncpg DSN for the floor) of the bench database."""
    address = f"{PG_USER}@{HOST}:{PG_PORT}/{name}"
    return f"postgresql+asyncpg://{address}", f"postgresql://{address}"


@contextlib.contextmanager
def bench_database(python: Path) -> Iterator[str]:
    """A fresh database for this run, dropped afterwards even when the run fails."""
    name = f"keel_bench_{os.getpid()}"
    pg_admin(python, "create", name)
    try:
        yield name
    finally:
        with contextlib.suppress(SystemExit, subprocess.SubprocessError, OSError):
            pg_admin(python, "drop", name)
            log(f"dropped database {name}")


def migrate_and_seed(
    python: Path, project: Path, env: dict[str, str], dsn: str, products: int
) -> None:
    """Create the project's tables with its own migrations, then fill the catalog."""
    log(f"database {dsn.rsplit('/', 1)[1]}: alembic upgrade head, seed {products:,} products")
    run([python, "-m", "alembic", "upgrade", "head"], cwd=project, env=env)
    pg_admin(python, "seed", dsn, "--categories", str(CATEGORIES), "--products", str(products))


@dataclass(frozen=True)
class Budget:
    """The service's pool, as its startup log line states it."""

    pool_size: int | None
    line: str

    def describe_pool(self) -> str:
        """Short form for the tables (the service opens no overflow connection)."""
        return f"pool_size {self.pool_size}"

    def floor_pool_size(self) -> int:
        """The floor's pool: as large as the service's, or FALLBACK_POOL_SIZE when unknown."""
        return self.pool_size or FALLBACK_POOL_SIZE


def service_budget(python: Path, project: Path, env: dict[str, str]) -> Budget:
    """The "connection budget: ..." line the service logs at startup, computed the same way.

    The service logs it at INFO, below the LOG_LEVEL=WARNING it is benchmarked with, so the
    script asks the service's own settings, with the service's environment, for the same line.
    """
    code = (
        f"from {PACKAGE}.settings import get_settings;"
        "print(get_settings().connection_budget().describe())"
    )
    try:
        line = run([python, "-c", code], cwd=project, env=env).strip()
    except SystemExit:
        return Budget(None, "connection budget: unknown (the service's settings did not say)")
    match = re.search(r"pool_size (\d+)", line)
    if match is None:
        return Budget(None, line)
    return Budget(int(match.group(1)), line)


@dataclass(frozen=True)
class Seeded:
    """A scratch database, migrated and seeded, and the service's environment on it."""

    dsn: str  # asyncpg's, for the floor and pg_admin.py
    env: dict[str, str]  # the service's
    budget: Budget


@contextlib.contextmanager
def seeded_database(
    project: Project, workdir: Path, products: int, settings: Sequence[str] = ()
) -> Iterator[Seeded]:
    """A fresh database with the project's tables and `products` products, dropped at the end.

    settings: NAME=VALUE for the service's environment, on top of service_env's.
    """
    with bench_database(project.python) as database:
        url, dsn = database_urls(database)
        env = service_env(url, workdir / "metrics", settings)
        migrate_and_seed(project.python, project.path, env, dsn, products)
        budget = service_budget(project.python, project.path, env)
        log(budget.line)
        yield Seeded(dsn, env, budget)


def service_env(
    database_url: str, metrics_dir: Path, settings: Sequence[str] = ()
) -> dict[str, str]:
    """The service's environment: one worker in production, on a free port; then NAME=VALUE."""
    env = project_env(
        HOST=HOST,
        PORT=str(free_port()),
        METRICS_PORT=str(free_port()),
        WEB_CONCURRENCY="1",
        DATABASE_URL=database_url,
        DB_APPLICATION_NAME=SERVICE_APP_NAME,
        ENVIRONMENT="production",
        LOG_LEVEL="WARNING",
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
    )
    for setting in settings:
        name, _, value = setting.partition("=")
        env[name] = value
    return env


def start_service(
    processes: Processes,
    project: Path,
    env: dict[str, str],
    log_path: Path,
    budget: Budget,
    *,
    name: str = "service",
    options: Sequence[str] = (),
) -> Server:
    """The generated service with its own gunicorn.conf.py (WEB_CONCURRENCY workers), ready.

    options: gunicorn's, on top of the configuration file's.
    """
    return start_gunicorn(
        processes,
        name,
        project,
        env,
        log_path,
        *options,
        application_name=env["DB_APPLICATION_NAME"],
        database=env["DATABASE_URL"].rsplit("/", 1)[1],
        pool=budget.describe_pool(),
    )


def start_floor(
    processes: Processes,
    python: Path,
    dsn: str,
    pool_size: int,
    log_path: Path,
    *,
    name: str = "floor",
    **extra_env: str,
) -> Server:
    """The floor app under uvicorn, one worker, with the project's Python; ready."""
    env = project_env(
        FLOOR_DATABASE_URL=dsn,
        FLOOR_POOL_SIZE=str(pool_size),
        FLOOR_APPLICATION_NAME=FLOOR_APP_NAME,
        **extra_env,
    )
    return start_uvicorn(
        processes,
        name,
        python,
        "floor_app:app",
        env,
        log_path,
        ready_path="/products/1",
        application_name=FLOOR_APP_NAME,
        database=dsn.rsplit("/", 1)[1],
        pool=f"asyncpg pool {pool_size} fixed",
    )


def start_tutorial(
    processes: Processes, python: Path, url: str, log_path: Path, *, name: str = "tutorial"
) -> Server:
    """The tutorial app under uvicorn, one worker, with the project's Python; ready."""
    env = project_env(TUTORIAL_DATABASE_URL=url, TUTORIAL_APPLICATION_NAME=TUTORIAL_APP_NAME)
    return start_uvicorn(
        processes,
        name,
        python,
        "tutorial_app:app",
        env,
        log_path,
        ready_path="/products/1",
        application_name=TUTORIAL_APP_NAME,
        database=url.rsplit("/", 1)[1],
        pool="SQLAlchemy default: 5 + overflow 10",
    )


class Stacks:
    """Starts the stacks under test on one seeded database, each on free ports, in one Processes."""

    def __init__(self, processes: Processes, workdir: Path, python: Path, database: Seeded) -> None:
        self.processes = processes
        self.workdir = workdir
        self.python = python  # a project's, for the floor and pg_admin.py
        self.database = database
        self._count = 0

    def service(
        self, project: Path, name: str, options: Sequence[str] = (), **settings: str
    ) -> Server:
        """The generated service under gunicorn, with gunicorn options and extra settings;
        ready."""
        self._count += 1
        env = {
            **self.database.env,
            "PORT": str(free_port()),
            "METRICS_PORT": str(free_port()),
            **settings,
        }
        log_path = self.workdir / f"service-{self._count}.log"
        return start_service(
            self.processes, project, env, log_path, self.database.budget, name=name, options=options
        )

    def floor(self, name: str, pool_size: int | None = None, **settings: str) -> Server:
        """floor_app.py under uvicorn, by default with the service's pool size; ready."""
        self._count += 1
        pool = pool_size or self.database.budget.floor_pool_size()
        log_path = self.workdir / f"floor-{self._count}.log"
        return start_floor(
            self.processes, self.python, self.database.dsn, pool, log_path, name=name, **settings
        )

    def tutorial(self, name: str) -> Server:
        """tutorial_app.py under uvicorn, with SQLAlchemy's default pool; ready."""
        self._count += 1
        url = self.database.env["DATABASE_URL"]
        log_path = self.workdir / f"tutorial-{self._count}.log"
        return start_tutorial(self.processes, self.python, url, log_path, name=name)

    def stop(self, server: Server) -> None:
        """Stop a stack, its workers too."""
        self.processes.stop(server.process)
