"""``fleet``: one command for every process of the fleet, plus ops helpers."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from typing import Any, NoReturn

from broker import tokens, tracing
from broker.dependencies import Unreachable
from broker.logging import configure
from broker.settings import ConfigError, Settings, load_settings, unknown_variables

# Exit codes: 1 a dependency stayed unreachable, 2 bad configuration or usage.
UNREACHABLE = 1
BAD_CONFIG = 2
# Settings that flags override -> the flag, as errors should name it.
SETTINGS_FLAGS = {
    "namespace": "--namespace",
    "host": "--host",
    "port": "--port",
    "worker_capacity": "--capacity",
    "agent": "--agent",
    "fake_llm_port": "--port",
    "fake_llm_pace": "--pace",
}


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error on one line (``--help`` shows the usage)."""

    def error(self, message: str) -> NoReturn:
        self.exit(BAD_CONFIG, f"{self.prog}: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = Parser(prog="fleet", description=__doc__)
    parser.add_argument("--namespace", help="FLEET_NAMESPACE: prefix of every key, queue, exchange")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    gateway = commands.add_parser("gateway", help="serve Socket.IO and the HTTP API")
    gateway.add_argument("--host", help="FLEET_HOST (default 127.0.0.1)")
    gateway.add_argument("--port", type=int, help="FLEET_PORT (default 8000)")

    worker = commands.add_parser("worker", help="run agent loops")
    worker.add_argument(
        "--capacity", type=int, dest="worker_capacity", help="FLEET_WORKER_CAPACITY"
    )
    worker.add_argument("--agent", help="FLEET_AGENT, as module:factory")

    commands.add_parser("reaper", help="recover conversations of dead workers")

    dev = commands.add_parser("dev", help="run a whole local fleet; Ctrl-C stops it")
    dev.add_argument("--gateways", type=int, default=1)
    dev.add_argument("--workers", type=int, default=2)
    dev.add_argument("--reapers", type=int, default=1)
    dev.add_argument("--port", type=int, help="first gateway port (default FLEET_PORT, 8000)")
    dev.add_argument(
        "--metrics-port",
        type=int,
        metavar="PORT",
        help="workers and reapers serve metrics on the first free ports from PORT "
        "(default FLEET_METRICS_PORT, 9400)",
    )
    dev.add_argument(
        "--llm",
        choices=["fake"],
        help="also run the fake LLM, with the LLM agent talking to it (no API key needed)",
    )

    status = commands.add_parser(
        "status", help="gateways, workers, reapers, conversations, backlog, dead letters"
    )
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.add_argument("--watch", action="store_true", help="show it again every --interval")
    status.add_argument(
        "--interval", type=float, default=2.0, metavar="SECONDS", help="for --watch (default 2)"
    )

    inspect = commands.add_parser(
        "inspect", help="a conversation: record, owner, epoch, queue, clients, last events"
    )
    inspect.add_argument("conversation", metavar="CONVERSATION")
    inspect.add_argument("--json", action="store_true", help="one JSON object")
    inspect.add_argument(
        "--events", type=int, default=10, metavar="N", help="how many last events (default 10)"
    )

    drain = commands.add_parser(
        "drain", help="make a worker drain and exit, as SIGTERM would, wherever it runs"
    )
    drain.add_argument("worker", metavar="WORKER", help="its id, as fleet status shows it")
    drain.add_argument(
        "--no-wait", dest="wait", action="store_false", help="ask, and do not wait for it to leave"
    )

    conversations = commands.add_parser(
        "conversations", help="conversations that need a human (--stuck)"
    )
    conversations.add_argument(
        "--stuck",
        action="store_true",
        required=True,
        help="closing too long, input with no live owner, log over its cap",
    )
    conversations.add_argument("--json", action="store_true", help="one JSON array")

    close = commands.add_parser("close", help="close a conversation for good")
    close.add_argument("conversation", metavar="CONVERSATION")
    close.add_argument("--reason", default="closed by operator", help="logged in its closed event")
    close.add_argument("--wait", action="store_true", help="until its owner has closed it")

    purge = commands.add_parser(
        "purge", help="delete closed and long-idle conversations for good (log, record, queue)"
    )
    purge.add_argument(
        "--closed-before",
        metavar="AGE|DATE",
        help="closed longer ago than AGE (30d, 12h, ...) or before DATE (2026-01-31)",
    )
    purge.add_argument(
        "--idle-for", metavar="AGE", help="idle (no input, owner or client) for longer than AGE"
    )
    purge.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    commands.add_parser(
        "healthcheck", help="exit 0 if this host's fleet process says it is healthy (Docker)"
    )

    fake = commands.add_parser(
        "fake-llm", help="serve a local OpenAI-compatible chat model, scriptable for tests"
    )
    fake.add_argument("--host", help="FLEET_HOST (default 127.0.0.1)")
    fake.add_argument(
        "--port",
        type=int,
        dest="fake_llm_port",
        metavar="PORT",
        help="FLEET_FAKE_LLM_PORT (default 8100)",
    )
    fake.add_argument(
        "--pace",
        type=float,
        dest="fake_llm_pace",
        metavar="WORDS_PER_S",
        help="FLEET_FAKE_LLM_PACE: how fast unscripted replies stream (default 20)",
    )

    token = commands.add_parser("token", help="print a token for USER")
    token.add_argument("user")
    token.add_argument("--ttl", type=float, default=24 * 3600, help="seconds (default 1 day)")
    token.add_argument("--admin", action="store_true", help="an admin token (the dashboard)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    """Environment first, flags override."""
    overrides: dict[str, Any] = {
        k: getattr(args, k) for k in SETTINGS_FLAGS if getattr(args, k, None) is not None
    }
    return load_settings(os.environ, SETTINGS_FLAGS, **overrides)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    for warning in unknown_variables(os.environ):
        print(f"fleet: warning: {warning}", file=sys.stderr)
    try:
        settings = _settings(args)
        return _run(args, settings)
    except (ConfigError, ValueError) as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return BAD_CONFIG
    except Unreachable as exc:
        print(f"fleet {args.command}: {exc}", file=sys.stderr)
        return UNREACHABLE
    except KeyboardInterrupt:
        return 130


def _run(args: argparse.Namespace, settings: Settings) -> int:
    command = args.command
    if command == "token":
        print(tokens.issue(settings.require_jwt_secret(), args.user, args.ttl, args.admin))
        return 0
    if command == "healthcheck":
        from fleet.healthcheck import healthcheck

        return healthcheck(settings)
    if command == "dev":
        from fleet.dev import Plan, run_dev

        plan = Plan(
            args.gateways, args.workers, args.reapers, args.port, args.llm, args.metrics_port
        )
        return run_dev(settings, plan)
    if command == "status":
        from fleet.status import show_status

        if args.interval <= 0:
            raise ValueError("--interval must be more than 0")
        return asyncio.run(show_status(settings, args.json, args.watch, args.interval))
    if command == "inspect":
        from fleet.inspect import show_inspection

        if args.events < 0:
            raise ValueError("--events must be 0 or more")
        return asyncio.run(show_inspection(settings, args.conversation, args.json, args.events))
    if command == "drain":
        from fleet.drain import drain_worker

        return asyncio.run(drain_worker(settings, args.worker, args.wait))
    if command == "conversations":
        from fleet.stuck import show_stuck

        return asyncio.run(show_stuck(settings, args.json))
    if command == "close":
        from fleet.close import close_conversation

        return asyncio.run(close_conversation(settings, args.conversation, args.reason, args.wait))
    if command == "purge":
        from fleet.purge import purge_conversations

        return asyncio.run(
            purge_conversations(settings, args.closed_before, args.idle_for, args.dry_run)
        )
    configure(settings.log_level, command, settings.log_format)
    if command in ("gateway", "worker", "reaper"):
        tracing.configure(command)
    if command == "fake-llm":
        from fleet.fake_llm.server import FakeLLM

        FakeLLM(settings.host, settings.fake_llm_port, settings.fake_llm_pace).run()
    elif command == "gateway":
        from gateway.app import Gateway

        Gateway(settings).run()
    elif command == "worker":
        from workers.worker import Worker

        Worker(settings).run()
    elif command == "reaper":
        from workers.reaper import Reaper

        Reaper(settings).run()
    return 0
