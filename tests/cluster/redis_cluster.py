"""A local Redis Cluster for tests: three masters, each with a replica, on free ports in
a directory of its own; the test session owns it and stops it. Its processes are
plain subprocesses (not tied to any test's event loop)."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from redis import Redis

from fleet.harness import free_port

MASTERS = 3
# How long a master may be unreachable before its replica takes over (ms): short, so
# a test that kills one sees the failover within a couple of seconds.
NODE_TIMEOUT_MS = 1000
BUS_OFFSET = 10000  # a node's cluster bus listens this far above its port


class Node:
    def __init__(self, directory: Path) -> None:
        self.port = _free_port_pair()
        self.directory = directory / str(self.port)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=2, decode_responses=True)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", str(NODE_TIMEOUT_MS),
                # A replica takes over however long it was cut off from its master.
                "--cluster-replica-validity-factor", "0",
                "--save", "", "--appendonly", "no", "--dir", str(self.directory),
            ],
            stdout=subprocess.DEVNULL,
        )  # fmt: skip

    def answers(self) -> bool:
        with self.client() as client:
            return bool(client.ping())

    def serving(self) -> bool:
        with self.client() as client:
            return bool(client.cluster("info").get("cluster_state") == "ok")

    def role(self) -> str:
        with self.client() as client:
            return str(client.info("replication")["role"])

    def kill(self) -> None:
        """SIGKILL: what its replica had not received yet is lost."""
        if self.process is not None and self.running:
            self.process.kill()
            self.process.wait()


class LocalRedisCluster:
    """Three masters and three replicas (``redis-cli --cluster create``)."""

    def __init__(self, directory: Path) -> None:
        self.nodes = [Node(directory) for _ in range(MASTERS * 2)]

    @property
    def url(self) -> str:
        """A startup node: the client finds the others from it."""
        return f"redis://{self.nodes[0].address}/0"

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        until(lambda: all(n.answers() for n in self.nodes), 10, "nodes did not start")
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(n.address for n in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True,
        )  # fmt: skip
        until(self.healthy, 30, "the Redis Cluster did not become healthy")

    def healthy(self) -> bool:
        """Every live node sees the cluster ok, and each master has a replica in sync."""
        if not self.serving():
            return False
        masters = 0
        for node in self.live:
            with node.client() as client:
                replication = client.info("replication")
            if replication["role"] == "master":
                masters += 1
                if replication.get("slave0", {}).get("state") != "online":
                    return False
        return masters == MASTERS

    def serving(self) -> bool:
        """Every slot is served again (after a master died: by its replica)."""
        return all(node.serving() for node in self.live)

    @property
    def live(self) -> list[Node]:
        return [node for node in self.nodes if node.running]

    def masters(self) -> list[Node]:
        return [node for node in self.live if node.role() == "master"]

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()


def _free_port_pair() -> int:
    """A free port whose cluster bus port (10000 above it) is free too."""
    while True:
        port = free_port()
        if port + BUS_OFFSET <= 65535 and _free(port + BUS_OFFSET):
            return port


def _free(port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def until(check: Callable[[], bool], timeout: float, failure: str) -> None:
    """Poll ``check()`` until it is true (errors count as not yet), within ``timeout``."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        with contextlib.suppress(Exception):
            if check():
                return
        time.sleep(0.1)
    raise RuntimeError(failure)
