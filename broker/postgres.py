"""PostgreSQL as a process's connection pool, and the archive's versioned schema.

Each fleet's tables live in a schema named like its namespace (``Names.schema``).
Migrations are the numbered files in ``broker/sql`` (``0001_history.sql``, ...),
applied in order at start by whichever process comes first: each runs in one
transaction holding an advisory lock on the schema, so processes starting together
apply each version once, and a failed migration leaves nothing half done.
``schema_version`` records the versions applied.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import TypeAlias

import asyncpg

# Connections per process: archived history is read on replay and resume, and moved
# once per passivation; a few suffice.
POOL_SIZE = 4
CONNECT_TIMEOUT = 5.0  # seconds
MIGRATION = re.compile(r"^(?P<version>\d{4})_(?P<name>\w+)\.sql$")

Pool: TypeAlias = "asyncpg.Pool[asyncpg.Record]"


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file."""

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """The migrations in ``broker/sql``, in order; their numbers must run 1, 2, 3, ..."""
    found = []
    for entry in files("broker").joinpath("sql").iterdir():
        if match := MIGRATION.match(entry.name):
            found.append(Migration(int(match["version"]), match["name"], entry.read_text()))
    return ordered(found)


def ordered(found: Iterable[Migration]) -> list[Migration]:
    """``found`` by version, refusing gaps and duplicates (two branches' 0002)."""
    result = sorted(found, key=lambda m: m.version)
    if [m.version for m in result] != list(range(1, len(result) + 1)):
        raise ValueError(f"migrations must be numbered 1..n: {[m.version for m in result]}")
    return result


def quote(identifier: str) -> str:
    """``identifier`` as a quoted SQL identifier (namespaces may hold ``-`` and ``.``)."""
    return '"' + identifier.replace('"', '""') + '"'


def lock_key(schema: str) -> int:
    """The advisory lock (a signed 64-bit key) that serialises migrations of ``schema``."""
    digest = hashlib.sha256(f"fleet-migrations:{schema}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


async def connect(url: str, schema: str, size: int = POOL_SIZE) -> Pool:
    """A pool whose connections find the archive's tables in ``schema``."""
    return await asyncpg.create_pool(
        url,
        min_size=1,
        max_size=size,
        timeout=CONNECT_TIMEOUT,
        server_settings={"search_path": quote(schema), "application_name": "fleet"},
    )


async def migrate(pool: Pool, schema: str, wanted: Sequence[Migration] | None = None) -> list[int]:
    """Apply the migrations ``schema`` lacks, in order; the versions this call applied."""
    applied: list[int] = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", lock_key(schema))
        await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quote(schema)}")
        await conn.execute(f"SET LOCAL search_path TO {quote(schema)}")
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_version ("
            " version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now())"
        )
        done = {row["version"] for row in await conn.fetch("SELECT version FROM schema_version")}
        for migration in migrations() if wanted is None else wanted:
            if migration.version in done:
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES ($1, $2)",
                migration.version,
                migration.name,
            )
            applied.append(migration.version)
    return applied


async def drop(url: str, schemas: Iterable[str]) -> None:
    """Drop ``schemas`` and everything in them (a test's or a bench run's)."""
    conn = await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    try:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {quote(schema)} CASCADE")
    finally:
        await conn.close()
