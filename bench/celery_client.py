"""The Celery peer's client, a process of its own (Celery's client is blocking):

    python -m bench.celery_client latency COUNT WARMUP
    python -m bench.celery_client load CLIENTS WARMUP SECONDS

``latency``: COUNT echo tasks one after another, ``apply_async`` then ``get``, after
WARMUP unmeasured ones. ``load``: CLIENTS threads, each with one task in flight (the
next sent once the last one's result is in), like the fleet's throughput clients;
it prints ``go`` once they run, so the scenario can time the CPU of the window that
starts WARMUP seconds later. Both print one JSON line at the end: seconds per task
(``latencies``), and for ``load`` how many results arrived in the window.
"""

from __future__ import annotations

import argparse
import gc
import threading
import time
from dataclasses import dataclass, field

import orjson

from bench.celery_app import echo

RESULT_TIMEOUT = 30.0


def ask() -> float:
    """One echo task, sent and waited for; seconds from send to result."""
    sent = time.perf_counter()
    result = echo.apply_async(("ping",))
    if result.get(timeout=RESULT_TIMEOUT) != "ping":
        raise RuntimeError("echo answered something else")
    return time.perf_counter() - sent  # results stay in Redis: the scenario deletes them


def latency(count: int, warmup: int) -> dict[str, object]:
    for _ in range(warmup):
        ask()
    return {"latencies": [ask() for _ in range(count)]}


@dataclass
class Window:
    start: float
    end: float
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _client(window: Window, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            took = ask()
        except Exception:
            with window.lock:
                window.errors += 1
            continue
        if window.start <= time.perf_counter() < window.end:
            with window.lock:
                window.latencies.append(took)


def load(clients: int, warmup: float, seconds: float) -> dict[str, object]:
    stop = threading.Event()
    begins = time.perf_counter() + warmup
    window = Window(begins, begins + seconds)
    threads = [threading.Thread(target=_client, args=(window, stop)) for _ in range(clients)]
    for thread in threads:
        thread.start()
    print("go", flush=True)
    time.sleep(warmup + seconds)
    stop.set()
    for thread in threads:
        thread.join(RESULT_TIMEOUT)
    answered = len(window.latencies)
    return {"latencies": window.latencies, "answered": answered, "errors": window.errors}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.celery_client")
    modes = parser.add_subparsers(dest="mode", required=True)
    lat = modes.add_parser("latency")
    lat.add_argument("count", type=int)
    lat.add_argument("warmup", type=int)
    lo = modes.add_parser("load")
    lo.add_argument("clients", type=int)
    lo.add_argument("warmup", type=float)
    lo.add_argument("seconds", type=float)
    args = parser.parse_args()
    gc.freeze()  # as the fleet's processes and the bench's clients do (``Service.serving``)
    if args.mode == "latency":
        out = latency(args.count, args.warmup)
    else:
        out = load(args.clients, args.warmup, args.seconds)
    print(orjson.dumps(out).decode(), flush=True)


if __name__ == "__main__":
    main()
