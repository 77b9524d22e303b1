"""The benchmarks still import, parse their options and run their harness: a check in seconds.

The benchmarks themselves render keel, install it and load it for minutes; nothing here runs
them or times anything. What breaks them quietly is caught instead: a script whose import, or
whose use of benchmarks/harness.py, no longer holds; wrk's summary parsed wrong; a server that
is never seen ready or never stopped; a chart that no longer draws from a run's results.
"""

from __future__ import annotations

import argparse
import importlib
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest

BENCH_DIR = Path(__file__).resolve().parent.parent / "benchmarks"
# The scripts import each other as top-level modules, as `python benchmarks/<script>.py` does.
sys.path.insert(0, str(BENCH_DIR))

import charts  # noqa: E402
import harness  # noqa: E402
import pg_stacks  # noqa: E402

# Run by keel's Python: each has a main(), a parse_args(argv) and a --chart.
SCRIPTS = [
    "db_read",
    "engine_read",
    "cache_read",
    "middleware_overhead",
    "metrics_restarts",
    "queue_send",
    "servers",
]
# Run by a generated project's Python (with its package, asyncpg, uvloop...): compiled only.
PROJECT_SCRIPTS = [
    "asgi_calls.py",
    "bare_app.py",
    "dead_workers.py",
    "engine_admin.py",
    "floor_app.py",
    "pg_admin.py",
    "tutorial_app.py",
]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

WRK_OUTPUT = """Running 2s test @ http://127.0.0.1:8000
WRK_JSON {"requests": 3000, "duration_us": 2000000, "bytes": 1, "connect": 1, "read": 2, \
"write": 3, "non_2xx_3xx": 4, "timeout": 5, "p50_us": 1500, "p90_us": 2500, "p99_us": 9000, \
"max_us": 12000, "mean_us": 1600.0, "last_id": 420}
"""


def script(name: str) -> ModuleType:
    return importlib.import_module(name)


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_its_documented_defaults(name: str) -> None:
    module = script(name)
    args = module.parse_args([])
    assert isinstance(args, argparse.Namespace)
    assert args.vcs_ref == "HEAD"
    assert not args.keep
    assert callable(module.main)
    assert args.chart == charts.CHARTS_DIR / f"{name}.png"


@pytest.mark.parametrize(
    "name", ["db_read", "engine_read", "cache_read", "middleware_overhead", "servers"]
)
def test_load_options_are_the_harness_ones(name: str) -> None:
    args = script(name).parse_args(["--duration", "2", "--warmup", "1", "--connections", "8"])
    assert (args.duration, args.warmup, args.connections, args.threads) == (2, 1, 8, 2)
    assert args.wrk_timeout == 2.0


def test_engine_read_takes_engines_in_the_order_given() -> None:
    engine_read = script("engine_read")
    assert engine_read.parse_args(["--engines", "sqlite,mysql"]).engines == ["sqlite", "mysql"]
    with pytest.raises(SystemExit):
        engine_read.parse_args(["--engines", "sqlite,oracle"])


def test_cache_read_refuses_an_unknown_part() -> None:
    with pytest.raises(SystemExit):
        script("cache_read").parse_args(["--parts", "reads,nonsense"])


@pytest.mark.parametrize("name", PROJECT_SCRIPTS)
def test_project_side_script_compiles(name: str) -> None:
    path = BENCH_DIR / name
    compile(path.read_text(), str(path), "exec")


def test_wrk_summary_is_parsed() -> None:
    result = harness.parse_wrk(WRK_OUTPUT, connections=64, wrk_cpu_seconds=0.3)
    assert result.rps == 1500
    assert (result.p50_ms, result.p99_ms, result.max_ms) == (1.5, 9.0, 12.0)
    assert (result.socket_errors, result.timeouts, result.non_2xx) == (6, 5, 4)
    assert result.last_id == 420
    assert result.per_request_ms(0.3) == pytest.approx(0.1)


def test_wrk_output_without_summary_is_an_error() -> None:
    with pytest.raises(ValueError, match="WRK_JSON"):
        harness.parse_wrk("unable to connect", connections=1)


def test_table_and_ratio_against_the_baseline() -> None:
    rows = [["floor", harness.ratio(4000, 4000)], ["service", harness.ratio(1000, 4000)]]
    assert harness.table(["stack", "x floor"], rows).splitlines() == [
        "| stack   | x floor |",
        "|---------|---------|",
        "| floor   | 1.00    |",
        "| service | 0.25    |",
    ]
    assert harness.ratio(1, 0) == "-"
    assert harness.ratio(1, 3, 3) == "0.333"


def test_interleaved_rounds_rotate_the_order() -> None:
    order: list[str] = []

    def measure(name: str) -> str:
        order.append(name)
        return name

    results = harness.interleaved_rounds(["a", "b", "c"], 3, measure)
    assert order == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert results == {"a": ["a"] * 3, "b": ["b"] * 3, "c": ["c"] * 3}


def test_server_is_started_when_ready_and_stopped(tmp_path: Path) -> None:
    port = harness.free_port()
    command = [sys.executable, "-m", "http.server", str(port), "--bind", harness.HOST]
    with harness.Processes() as processes:
        server = harness.start_server(
            processes,
            "http.server",
            command,
            port=port,
            log_path=tmp_path / "server.log",
            env=os.environ,
            cwd=tmp_path,
            ready_path="/",
        )
        assert server.url == f"http://{harness.HOST}:{port}"
        assert server.worker_pid() == server.process.pid
        assert harness.cpu_seconds(server.process.pid) >= 0
    assert server.process.poll() is not None


def test_server_that_exits_is_reported_with_its_log(tmp_path: Path) -> None:
    command = [sys.executable, "-c", "print('no such app'); raise SystemExit(3)"]
    with harness.Processes() as processes, pytest.raises(SystemExit, match="no such app"):
        harness.start_server(
            processes,
            "broken",
            command,
            port=harness.free_port(),
            log_path=tmp_path / "broken.log",
            env=os.environ,
        )


def test_processes_stop_the_whole_group() -> None:
    with harness.Processes() as processes:
        shell = processes.start(["sh", "-c", "sleep 60 & echo $!; wait"], stdout=subprocess.PIPE)
        assert shell.stdout is not None
        sleeper = int(shell.stdout.readline())
        processes.stop(shell, timeout=5)
    assert shell.returncode is not None
    deadline = time.monotonic() + 5
    while is_running(sleeper) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not is_running(sleeper)


def is_running(pid: int) -> bool:
    """Whether the process exists and has not exited (a zombie waiting to be reaped has)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


def test_cpu_snapshot_of_this_process() -> None:
    before = harness.CpuSnapshot.take(os.getpid())
    sum(range(200_000))
    used = harness.CpuSnapshot.take(os.getpid()) - before
    assert used.app >= 0 and used.host_total >= 0
    assert used.steal().endswith("%") or used.steal() == "-"


def test_service_env_is_one_production_worker_on_free_ports(tmp_path: Path) -> None:
    env = pg_stacks.service_env("postgresql+asyncpg://db", tmp_path, ["DB_POOL_TIMEOUT_SECONDS=1"])
    assert env["WEB_CONCURRENCY"] == "1"
    assert env["ENVIRONMENT"] == "production"
    assert env["PORT"] != env["METRICS_PORT"]
    assert env["DB_POOL_TIMEOUT_SECONDS"] == "1"
    assert "VIRTUAL_ENV" not in env


def test_budget_line_gives_the_floor_its_pool() -> None:
    assert pg_stacks.Budget(90, "").floor_pool_size() == 90
    assert pg_stacks.Budget(None, "").floor_pool_size() == pg_stacks.FALLBACK_POOL_SIZE


def test_cache_read_hands_out_each_fresh_id_once() -> None:
    cache_read = script("cache_read")
    fresh = cache_read.FreshIds(101, 1000)
    block = fresh.block()
    assert block.script_env(2)["BENCH_FIRST_ID"] == "101"
    fresh.used(harness.parse_wrk(WRK_OUTPUT, connections=1))
    assert fresh.take(2) == [421, 422]
    assert fresh.block().first == 423


def test_db_read_summarises_a_profile(tmp_path: Path) -> None:
    collapsed = tmp_path / "worker.collapsed.txt"
    collapsed.write_text(
        "run (uvicorn/server.py);handle (bench_service/catalog/router.py);"
        "execute (.venv/lib/python3.11/site-packages/asyncpg/connection.py) 3\n"
        "run (uvicorn/server.py);select (/usr/lib/python3.11/selectors.py) 1\n"
    )
    lines = script("db_read").profile_summary(collapsed)
    assert "   75.0%  asyncpg" in lines
    assert "   25.0%  stdlib" in lines
    assert "   75.0%  handle (bench_service/catalog/router.py)" in lines


def wrk_result(rps: float, connections: int = 64) -> harness.WrkResult:
    """A synthetic wrk summary: `rps` requests a second for 10 s."""
    return harness.WrkResult(
        connections=connections,
        requests=int(rps * 10),
        seconds=10.0,
        p50_ms=10.0,
        p90_ms=20.0,
        p99_ms=40.0,
        max_ms=60.0,
        connect_errors=0,
        read_errors=0,
        write_errors=0,
        timeouts=0,
        non_2xx=0,
        wrk_cpu_seconds=0.5,
    )


def assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data.startswith(PNG_SIGNATURE)
    assert len(data) > 1000


def test_chart_of_a_tiny_result_is_a_png(tmp_path: Path) -> None:
    panels = [
        charts.Panel("req/s", {"floor": 5000.0, "service": 1000.0}, baseline="floor"),
        charts.Panel("x floor", {"floor": 1.0, "service": 0.2}, digits=2, target=0.35),
        charts.Panel("CPU", {"floor": 0.2, "service": 1.0}, unit="ms", digits=2),
        charts.Panel("one", {"a": 0.0}),
    ]
    written = charts.write_chart(tmp_path / "sub" / "chart.png", "a run", panels, note="today")
    assert written == tmp_path / "sub" / "chart.png"
    assert_png(written)
    assert charts.write_chart(None, "no chart", panels) is None
    assert charts.write_chart(Path(""), "no chart", panels) is None
    assert panels[2].label(0.123) == "0.12 ms"
    two_floors = charts.Panel(
        "req/s", {"a floor": 1.0, "b floor": 1.0}, baseline=("a floor", "b floor")
    )
    assert two_floors.is_baseline("b floor") and not panels[1].is_baseline("floor")


def test_db_read_reports_round_trips_and_charts_a_synthetic_run(tmp_path: Path) -> None:
    db_read = script("db_read")
    cpu = harness.CpuSnapshot(1.0, 0.1, 0.5, 2.0, 0.0, 4.0)

    def stack(name: str, rps: float, commits: float, rollbacks: float) -> object:
        def run(connections: int) -> object:
            requests = int(rps * 10)
            return db_read.Run(
                wrk_result(rps, connections),
                cpu,
                connections_opened=0,
                commits=int(commits * requests),
                rollbacks=int(rollbacks * requests),
                backends_mean=5.0,
                backends_max=5,
                # Only the service measures itself: 98% within 0.25 s, 1% more within 1 s.
                app_latency=(
                    {"0.25": 0.98 * requests, "0.5": 0.98 * requests, "1.0": 0.99 * requests}
                    | {"+Inf": requests}
                    if name == "service"
                    else {}
                ),
            )

        server = harness.Server(name, process=None, url="", log=tmp_path, pool="pool 5")
        return db_read.StackResult(server=server, steady=run(64), burst=run(256))

    stacks = [
        stack("floor", 5000, 2, 0),
        stack("tutorial", 800, 0, 1),
        stack("service", 1000, 1, 1),
    ]
    lines = db_read.round_trips_table(stacks, 64, 256).splitlines()
    assert lines[2].split("|")[2].strip() == "2.00 / 0.00"
    assert lines[4].split("|")[2].strip() == "1.00 / 1.00"
    assert "0.20" in db_read.results_table(stacks, 256).splitlines()[4]
    tails = db_read.tail_table(stacks, 64, 256).splitlines()
    # Two runs of the one stack that measures itself, under a header and its rule.
    assert [line.split("|")[1].strip() for line in tails[2:]] == ["service", "service"]
    service_burst = [cell.strip() for cell in tails[3].split("|")[5:9]]
    assert service_burst == ["98.00%", "98.00%", "99.00%", "100"]
    args = db_read.parse_args(["--chart", str(tmp_path / "db_read.png")])
    db_read.chart(stacks, args)
    assert_png(tmp_path / "db_read.png")


def test_engine_read_reports_each_engine_against_its_floor(tmp_path: Path) -> None:
    engine_read = script("engine_read")

    def measured(rps: float, connections: int, timeouts: int = 0) -> object:
        wrk = wrk_result(rps, connections)
        wrk.timeouts = timeouts
        # 1 s of the worker's CPU and 0.5 s of the database server's over 10 s.
        return engine_read.Measured(wrk, harness.CpuSnapshot(1.0, 0.1, 0.5, 2.0, 0.0, 4.0))

    def engine(name: str, floor_rps: float, service_rps: float) -> object:
        runs = [
            engine_read.StackRun(name, stack, "pool 4", measured(rps, 64), measured(rps, 256, 3))
            for stack, rps in (("floor", floor_rps), ("service", service_rps))
        ]
        return engine_read.EngineResult([runs], {"asyncmy": "0"}, "server", "budget")

    results = {"mysql": engine("mysql", 4000, 1000), "sqlite": engine("sqlite", 6000, 600)}
    mysql_rows = engine_read.engine_table(results["mysql"].rounds, engine_read.parse_args([]))
    service = [cell.strip() for cell in mysql_rows.splitlines()[3].split("|")[1:-1]]
    assert service[0] == "MySQL service"
    assert service[5] == "0.25"  # x its own floor
    assert service[6] == "0.100"  # app CPU ms per request: 1 s over 10,000 requests
    assert service[7] == "0.050"  # the database server's
    assert service[9] == "3 / 0 / 0"
    sqlite_rows = engine_read.engine_table(results["sqlite"].rounds, engine_read.parse_args([]))
    assert [cell.strip() for cell in sqlite_rows.splitlines()[3].split("|")[6:9]] == [
        "0.10",
        "0.167",
        "-",  # SQLite has no server apart from the worker
    ]
    args = engine_read.parse_args(["--chart", str(tmp_path / "engine_read.png")])
    engine_read.chart(results, args)
    assert_png(tmp_path / "engine_read.png")


def test_middleware_overhead_charts_a_synthetic_run(tmp_path: Path) -> None:
    module = script("middleware_overhead")
    rounds = {
        name: [module.Round(wrk_result(rps), rps / 1e6)]
        for name, rps in zip(module.STACKS, [6000, 5800, 6500, 8000, 8200], strict=True)
    }
    in_process = dict.fromkeys(module.STACKS, 50.0)
    args = module.parse_args(["--chart", str(tmp_path / "mw.png"), "--rounds", "1"])
    module.chart(rounds, in_process, args)
    assert_png(tmp_path / "mw.png")


def test_servers_commands_and_chart_of_a_synthetic_run(tmp_path: Path) -> None:
    servers = script("servers")
    uvicorn = servers.server_command("uvicorn", Path("python"), 8000, 2)
    granian = servers.server_command("granian", Path("python"), 8000, 2)
    for command in (uvicorn, granian):
        assert command[command.index("--workers") + 1] == "2"
        assert "--factory" in command
        assert f"{harness.PACKAGE}.main:create_app" in command
    # The process alone first: CPU time only grows, so the whole tree read after it is no less.
    alone = harness.cpu_seconds(os.getpid())
    assert servers.tree_cpu_seconds(os.getpid()) >= alone
    rounds = {
        name: [{route: servers.Measured(wrk_result(rps), 1.0) for route in servers.ROUTES}]
        for name, rps in zip(servers.SERVERS, [3000, 3500, 4000], strict=True)
    }
    args = servers.parse_args(["--chart", str(tmp_path / "servers.png"), "--rounds", "1"])
    servers.chart(rounds, args)
    assert_png(tmp_path / "servers.png")
