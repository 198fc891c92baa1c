"""A consumer-group worker: processes ``orders.>`` messages, sharing the load.

Start a cluster (``mc up``), then run two copies::

    python examples/group_worker.py billing-1
    python examples/group_worker.py billing-2

and publish some orders::

    mc publish orders.eu '{"id": 1, "total": 9.5}' --count 10

Each order is processed by exactly one of the copies (the group ``billing``
hands every message to its least busy member, wherever the order was
published), and the customer is notified. Stop a copy and the other takes
everything; start a third and it takes its share. Ctrl-C (or SIGTERM, as in a
container: see docker-compose.yml) quits, closing its connections cleanly.
"""

from __future__ import annotations

import os
import signal
import sys

import trio

import mc

MASTER = os.environ.get("MC_MASTER", "http://127.0.0.1:7100")


async def process(order: mc.Message) -> str:
    await trio.sleep(0.1)  # pretend to work
    return f"order {order.data.get('id') if isinstance(order.data, dict) else order.data} billed"


async def main(name: str) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stop_on_sigterm, nursery.cancel_scope)
        await consume(name)
        nursery.cancel_scope.cancel()


async def stop_on_sigterm(scope: trio.CancelScope) -> None:
    with trio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            return


async def consume(name: str) -> None:
    async with mc.connect_consumer(MASTER, name=name) as consumer:
        await consumer.subscribe("orders.>", group="billing")
        print(f"{name}: waiting for orders on {len(consumer.workers)} worker(s)")
        async for order in consumer:
            result = await process(order)
            print(f"{name}: {order.topic} from {order.sender.client} (via {order.worker}): {result}")
            # tell the customer, wherever their app is connected (0 if offline)
            await consumer.notify({"client": order.sender.client}, result)


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    interrupted = False
    try:
        trio.run(main, sys.argv[1])
    except* KeyboardInterrupt:  # Ctrl-C, bare or from inside a nursery
        interrupted = True
    if interrupted:
        sys.exit(130)  # quietly, with the status shells give Ctrl-C
