"""A throwaway local RabbitMQ cluster, for tests and the bench: nodes of the installed
server beside any other, each with its own node name, ports and data directories,
joined into one cluster.

The nodes and their command-line tools share an Erlang cookie of the cluster's own
(its directory is their ``HOME``), so nothing of another RabbitMQ on the machine is
read, touched or stopped. ``close`` kills the nodes and deletes their directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import orjson

from fleet.harness import free_port

# Debian and Ubuntu put the real scripts here (``/usr/sbin``'s wrappers switch to the
# rabbitmq user, whose cookie is not the cluster's); elsewhere they are on the PATH.
SCRIPTS = Path("/usr/lib/rabbitmq/bin")
START_TIMEOUT = 120.0  # seconds for a node to boot (two cores, three nodes at once)
POLL = 0.1


def script(name: str) -> str:
    """The path of a RabbitMQ script, or a clear error when the server is not installed."""
    if (SCRIPTS / name).exists():
        return str(SCRIPTS / name)
    found = shutil.which(name)
    if found is None:
        raise RuntimeError(f"{name} not found: install rabbitmq-server")
    return found


async def run_tool(
    argv: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> str:
    """Run a command-line tool to its end (killed after ``timeout`` seconds); what it
    printed, or ``RuntimeError`` with what it said when it failed."""
    process = await asyncio.create_subprocess_exec(
        *argv,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        said = (err or out).decode(errors="replace").strip()
        raise RuntimeError(f"{' '.join(argv)}: {said}")
    return out.decode(errors="replace")


@dataclass(frozen=True)
class QueueInfo:
    type: str  # classic or quorum
    leader: str  # the node of a quorum queue's leader ('' for a classic queue)
    members: list[str]  # the nodes holding a quorum queue's replicas


class RabbitNode:
    """One node: ``start`` boots it (in the foreground, owned by this process), ``kill``
    sends its Erlang VM a real signal, ``start`` again brings it back into its cluster."""

    def __init__(self, name: str, home: Path) -> None:
        self.port = free_port()
        self.dist_port = free_port()
        self.name = f"{name}@localhost"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/"
        self.home = home
        self.base = home / name
        # Not an asyncio subprocess: a session's cluster outlives the event loops of the
        # tests that use it.
        self.process: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.name,
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(self.base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.base / "log"),
            "RABBITMQ_PID_FILE": str(self.base / "node.pid"),
            "RABBITMQ_CONFIG_FILE": str(self.base / "rabbitmq.conf"),
            "RABBITMQ_CONF_ENV_FILE": str(self.base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(self.base / "enabled_plugins"),
        }

    def _write_config(self) -> None:
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / "rabbitmq.conf").write_text(f"listeners.tcp.local = 127.0.0.1:{self.port}\n")
        # Distribution on loopback only, like the development machines' own node.
        (self.base / "rabbitmq-env.conf").write_text("ERL_EPMD_ADDRESS=127.0.0.1\n")
        (self.base / "enabled_plugins").write_text("[].\n")

    async def start(self) -> None:
        """Boot the node; returns once it has started (``await_startup``)."""
        self._spawn()
        await self.await_startup()

    def _spawn(self) -> None:
        self._write_config()
        with (self.base / "console.log").open("ab") as log:
            self.process = subprocess.Popen(
                [script("rabbitmq-server")],
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, spared a Ctrl-C of ours
            )

    async def await_startup(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:  # until the node is up enough to be asked (its pid file)
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited: see {self.base / 'console.log'}")
            if (self.base / "node.pid").exists():
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start: see {self.base / 'console.log'}")
            await asyncio.sleep(POLL)
        await self.ctl("await_startup", "--timeout", str(int(START_TIMEOUT)))

    def vm_pid(self) -> int | None:
        """The pid of the node's Erlang VM (the server script runs it as a child)."""
        with contextlib.suppress(OSError, ValueError):
            return int((self.base / "node.pid").read_text().strip())
        return None

    async def kill(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """Send the node's processes (the server script, its Erlang VM and the VM's
        helpers: one process group) ``sig``, and wait until the node is gone."""
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        await asyncio.to_thread(self.process.wait)
        (self.base / "node.pid").unlink(missing_ok=True)

    async def ctl(self, *args: str, timeout: float = 120) -> str:
        """``rabbitmqctl -n <this node> ARGS``; its output, or an error with it."""
        return await run_tool([script("rabbitmqctl"), "-n", self.name, *args], timeout, self.env)

    def rss(self) -> int:
        """Resident memory of the node's Erlang VM, in bytes (0 when it is not running)."""
        pid = self.vm_pid()
        with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


class RabbitCluster:
    """``size`` local nodes joined into one cluster, in a temporary directory of its own.

    ``url`` lists every node, comma-separated, as ``FLEET_AMQP_URL`` does.
    """

    def __init__(self, size: int = 3) -> None:
        self.home = Path(tempfile.mkdtemp(prefix="fleet-rabbit-"))
        tag = secrets.token_hex(3)
        self.nodes = [RabbitNode(f"fleet-{tag}-{i}", self.home) for i in range(size)]

    @property
    def url(self) -> str:
        return ",".join(node.url for node in self.nodes)

    def node(self, name: str) -> RabbitNode:
        """The node named ``name`` (``…@localhost``)."""
        return next(node for node in self.nodes if node.name == name)

    async def start(self) -> RabbitCluster:
        """Boot every node at once, then join the others to the first."""
        cookie = self.home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        try:
            await asyncio.gather(*(node.start() for node in self.nodes))
            seed = self.nodes[0]
            for node in self.nodes[1:]:
                await node.ctl("stop_app")
                await node.ctl("join_cluster", seed.name)
                await node.ctl("start_app")
            await asyncio.gather(*(node.await_startup() for node in self.nodes))
        except BaseException:
            await self.close()
            raise
        return self

    async def __aenter__(self) -> RabbitCluster:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def running_nodes(self) -> list[str]:
        """The cluster's running nodes, as the first node that answers sees them."""
        for node in self.nodes:
            with contextlib.suppress(RuntimeError):
                output = await node.ctl("cluster_status", "--formatter", "json")
                return sorted(orjson.loads(output)["running_nodes"])
        return []

    async def queues(self) -> dict[str, QueueInfo]:
        """Every queue by name: its type, and for a quorum queue its leader and members,
        as the first node that answers sees them."""
        for node in self.nodes:
            with contextlib.suppress(RuntimeError):
                output = await node.ctl(
                    "-q", "list_queues", "name", "type", "leader", "members", "--formatter", "json"
                )
                return {
                    q["name"]: QueueInfo(q["type"], q.get("leader") or "", q.get("members") or [])
                    for q in orjson.loads(output)
                }
        raise RuntimeError("no node of the cluster answers")

    async def close(self) -> None:
        """Kill every node (nothing of theirs is kept) and delete their directory."""
        await asyncio.gather(*(node.kill() for node in self.nodes), return_exceptions=True)
        await asyncio.to_thread(shutil.rmtree, self.home, True)
