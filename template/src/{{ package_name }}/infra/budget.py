"""The database connection budget: how many connections each process may open.

Every process that opens a pool (web workers on every replica, queue workers) draws from one
budget: the server's max_connections minus the connections kept back for superusers, migrations,
admin and monitoring. This module is plain standard-library Python so that the template can run
the very same computation at render time that the service runs at startup.
"""

import math
from dataclasses import dataclass

MIN_CONNECTIONS_PER_PROCESS = 2


class BudgetError(ValueError):
    """The deployment asks for more connections than the database can give."""


@dataclass(frozen=True, slots=True)
class ConnectionBudget:
    """Pool sizes that keep every process of the deployment within the database's limit."""

    processes: int
    available: int
    per_process: int
    pool_size: int
    max_overflow: int

    def describe(self) -> str:
        """One line for the startup log."""
        return (
            f"connection budget: {self.processes} processes x (pool_size {self.pool_size}"
            f" + max_overflow {self.max_overflow}) = {self.processes * self.per_process}"
            f" <= {self.available} available"
        )


def compute_budget(
    *,
    replicas: int,
    web_workers: int,
    queue_workers: int,
    max_connections: int,
    reserved_connections: int,
    db_cpu_cores: int,
) -> ConnectionBudget:
    """Size each process's pool so that all processes together never exceed the database's limit.

    pool_size covers the database's useful parallelism (about 2 x cores + 1 connections in total,
    after HikariCP's "About Pool Sizing") spread over all processes; max_overflow takes the rest
    of each process's share for bursts.
    """
    for name, value, minimum in (
        ("replicas", replicas, 1),
        ("web_workers", web_workers, 1),
        ("queue_workers", queue_workers, 0),
        ("max_connections", max_connections, 1),
        ("reserved_connections", reserved_connections, 0),
        ("db_cpu_cores", db_cpu_cores, 1),
    ):
        if value < minimum:
            raise BudgetError(f"{name} must be at least {minimum}, got {value}")

    processes = replicas * web_workers + queue_workers
    available = max_connections - reserved_connections
    per_process = available // processes if available > 0 else 0
    if per_process < MIN_CONNECTIONS_PER_PROCESS:
        needed = processes * MIN_CONNECTIONS_PER_PROCESS
        most_processes = max(available // MIN_CONNECTIONS_PER_PROCESS, 0)
        fewer = f"lower the process count to at most {most_processes}, " if most_processes else ""
        raise BudgetError(
            f"connection budget too small: {processes} processes (replicas {replicas}"
            f" x web_workers {web_workers} + queue_workers {queue_workers}) need at least"
            f" {needed} connections, but max_connections {max_connections} - reserved"
            f" {reserved_connections} leaves {available}; {fewer}raise max_connections to"
            f" {reserved_connections + needed}, or put PgBouncer in front of a PostgreSQL database"
        )

    useful_total = 2 * db_cpu_cores + 1
    pool_size = min(
        max(math.ceil(useful_total / processes), MIN_CONNECTIONS_PER_PROCESS), per_process
    )
    return ConnectionBudget(
        processes=processes,
        available=available,
        per_process=per_process,
        pool_size=pool_size,
        max_overflow=per_process - pool_size,
    )
