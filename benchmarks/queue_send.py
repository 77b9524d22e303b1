"""Benchmark: the Dramatiq producer's sends, through its threads and on the event loop.

Renders keel (the working tree, uncommitted changes included) with task_queue=dramatiq twice, on
Redis (cache=redis) and on RabbitMQ, installs each with uv, and runs the measurement below in each
project's own environment against the local Redis (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672,
guest/guest). Messages go to a queue of the run's own, deleted at the end. No worker runs.

For each broker:

- through the threads: 20 concurrent clients, each awaiting TaskQueue.send 50 times, as the
  outbox relay does (TaskQueue.enqueue only wakes the relay); a ticker coroutine (sleep 1 ms)
  records the longest event-loop stall;
- on the event loop: the same sends as plain broker.enqueue calls, as a producer that calls
  Dramatiq's synchronous client from async code would make them;
- a broker that accepts connections and never answers (a listener on loopback that never reads):
  how long one send made on the loop holds it, and how long a TaskQueue.send waits before it
  gives up (QUEUE_SEND_TIMEOUT_SECONDS, 1 s; on Redis the 0.25 s socket timeout comes first).

It asserts nothing: the figures in docs/queues/dramatiq.md come from a shared 2-core VM. Compare
the columns of one run with each other, not with other machines.

It writes the chart docs/charts/queue_send.png.

Run from the repository root:  uv run python benchmarks/queue_send.py   (about a minute)
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence

from charts import Panel, add_chart_argument, write_chart
from harness import (
    PACKAGE,
    add_project_arguments,
    log,
    prepare,
    project_env,
    run,
    run_main,
    scratch_directory,
    table,
)

CLIENTS, SENDS = 20, 50

# Runs inside the generated project, with its package and Dramatiq; prints one JSON object.
MEASURE = """
import asyncio, json, logging, socket, sys, time, uuid
from dramatiq import Message
from PACKAGE.infra.tasks import create_task_queue
from PACKAGE.settings import Settings

logging.disable(logging.CRITICAL)
BROKER, CLIENTS, SENDS = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
QUEUE = f"bench-{uuid.uuid4().hex}"


def settings(port=None):
    if port is None:
        return Settings(queue_name=QUEUE)
    if BROKER == "redis":
        return Settings(queue_name=QUEUE, redis_url=f"redis://127.0.0.1:{port}/0")
    return Settings(queue_name=QUEUE, rabbitmq_url=f"amqp://guest:guest@127.0.0.1:{port}/%2F")


def message():
    return Message(queue_name=QUEUE, actor_name="bench", args=(1,), kwargs={}, options={})


async def stall_during(send):
    worst, done = 0.0, False

    async def ticker():
        nonlocal worst
        while not done:
            started = time.perf_counter()
            await asyncio.sleep(0.001)
            worst = max(worst, time.perf_counter() - started - 0.001)

    async def client():
        for _ in range(SENDS):
            await send()

    ticking = asyncio.create_task(ticker())
    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(CLIENTS)))
    elapsed = time.perf_counter() - started
    done = True
    await ticking
    return CLIENTS * SENDS / elapsed, worst


async def on_the_loop(broker):
    broker.enqueue(message())
    await asyncio.sleep(0)


async def main():
    queue = create_task_queue(settings())
    await queue.send("bench", (1,), None)  # connects
    threads = await stall_during(lambda: queue.send("bench", (1,), None))
    loop = await stall_during(lambda: on_the_loop(queue._broker))
    await queue.close()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        silent = create_task_queue(settings(listener.getsockname()[1]))
        started = time.perf_counter()
        try:
            silent._broker.enqueue(message())
        except Exception:
            pass
        held = time.perf_counter() - started
        started = time.perf_counter()
        try:
            await silent.send("bench", (1,), None)
        except Exception:
            pass
        waited = time.perf_counter() - started
        await silent.close()
    if BROKER == "redis":
        queue._redis.delete(f"dramatiq:{QUEUE}", f"dramatiq:{QUEUE}.msgs")
    else:
        from dramatiq.brokers.rabbitmq import RabbitmqBroker

        admin = RabbitmqBroker(url=Settings().rabbitmq_url)
        for name in (QUEUE, f"{QUEUE}.DQ", f"{QUEUE}.XQ"):
            admin.channel.queue_delete(queue=name)
        admin.close()
    print(json.dumps({"threads": threads, "loop": loop, "held": held, "waited": waited}))


asyncio.run(main())
"""


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options; the defaults are the documented benchmark."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_project_arguments(parser)
    add_chart_argument(parser, "queue_send")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Render, install and measure each broker, then report."""
    args = parse_args(argv)
    rows = []
    sends: dict[str, float] = {}
    stalls: dict[str, float] = {}
    with scratch_directory("keel-queue-send-", keep=args.keep) as workdir:
        for broker in ("redis", "rabbitmq"):
            project = prepare(
                workdir / broker,
                vcs_ref=args.vcs_ref,
                cache="redis" if broker == "redis" else "none",
                database="sqlite",
                task_queue="dramatiq",
                queue_broker=broker,
            )
            log(f"measuring {broker}")
            script = MEASURE.replace("PACKAGE", PACKAGE)
            output = run(
                [project.python, "-c", script, broker, str(CLIENTS), str(SENDS)],
                cwd=project.path,
                env=project_env(ENVIRONMENT="test"),
            )
            result = json.loads(output.strip().splitlines()[-1])
            for way, label in (("threads", "producer's threads"), ("loop", "enqueue on the loop")):
                sends[f"{broker}, {label}"] = result[way][0]
                stalls[f"{broker}, {label}"] = result[way][1] * 1000
            rows += [
                [
                    f"{broker}: sends per second",
                    f"{result['threads'][0]:,.0f}",
                    f"{result['loop'][0]:,.0f}",
                ],
                [
                    f"{broker}: longest event-loop stall",
                    f"{result['threads'][1] * 1000:.0f} ms",
                    f"{result['loop'][1] * 1000:.0f} ms",
                ],
                [
                    f"{broker} that never answers: one send",
                    f"send waits {result['waited'] * 1000:,.0f} ms, loop free",
                    f"loop held {result['held'] * 1000:,.0f} ms",
                ],
            ]
    print(f"{CLIENTS} concurrent clients x {SENDS} sends each\n")
    print(table(["", "through the producer's threads", "broker.enqueue on the loop"], rows))
    panels = [
        Panel("sends per second", sends),
        Panel("longest event-loop stall", stalls, unit="ms"),
    ]
    title = f"Dramatiq sends, {CLIENTS} concurrent clients x {SENDS} sends each"
    write_chart(args.chart, title, panels)


if __name__ == "__main__":
    run_main(main)
