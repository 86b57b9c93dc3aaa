"""The Celery peer: one echo task on the run's RabbitMQ (broker) and Redis (results).

``celery -A bench.celery_app worker`` and ``bench.celery_client`` import it; both read
the same three variables, set by ``bench.scenarios.celery``:

- ``BENCH_CELERY_BROKER``: the AMQP URL, ``BENCH_CELERY_BACKEND``: the Redis URL;
- ``BENCH_CELERY_NAME``: the run's name (``bench-<hex>-celery``) for the queue, its
  exchange and every result key, so the run's teardown finds them and nothing collides.

Settings are the fleet's guarantees, not Celery's defaults: persistent messages with
publisher confirms, acks late (a task is acked once it ran, as a worker acks an
action once logged). Events, remote control and per-task logs are off: the fleet pays
for none of those either.
"""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import worker_ready

NAME = os.environ.get("BENCH_CELERY_NAME", "bench-celery")

app = Celery(
    NAME,
    broker=os.environ.get("BENCH_CELERY_BROKER", "amqp://guest:guest@127.0.0.1:5672/"),
    backend=os.environ.get("BENCH_CELERY_BACKEND", "redis://127.0.0.1:6379/0"),
)
app.conf.update(
    task_default_queue=NAME,
    task_default_exchange=NAME,
    task_default_routing_key=NAME,
    task_acks_late=True,
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    broker_transport_options={"confirm_publish": True},
    broker_connection_retry_on_startup=True,
    result_backend_transport_options={"global_keyprefix": f"{NAME}:"},
    result_expires=600,  # the scenario deletes its keys; this is the backstop
    worker_enable_remote_control=False,  # no pidbox exchange or queue per worker
    worker_send_task_events=False,
    worker_hijack_root_logger=False,
    worker_redirect_stdouts=False,  # "ready" goes to stdout, where the scenario reads it
)


def _echo(content: str) -> str:
    return content


echo = app.task(name="echo")(_echo)


def _ready(**_: Any) -> None:
    """Tell the scenario, which reads the worker's stdout, that it consumes."""
    print("ready", flush=True)


worker_ready.connect(_ready, weak=False)
