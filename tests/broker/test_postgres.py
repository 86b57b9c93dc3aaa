"""The archive's schema on the real PostgreSQL: numbered migrations, applied once, in
order, by however many processes start at the same time."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from broker import postgres
from broker.archive import Archive
from broker.names import Names
from broker.postgres import Migration
from broker.settings import Settings

STARTERS = 8


async def versions(settings: Settings) -> list[int]:
    assert settings.postgres_url is not None
    conn = await asyncpg.connect(settings.postgres_url)
    try:
        schema = postgres.quote(settings.names.schema)
        rows = await conn.fetch(f"SELECT version FROM {schema}.schema_version ORDER BY version")
    finally:
        await conn.close()
    return [row["version"] for row in rows]


async def test_concurrent_starters_apply_each_migration_once(pg_settings: Settings) -> None:
    assert pg_settings.postgres_url is not None
    schema = Names(pg_settings.namespace).schema
    # The second one would fail if the first ran twice, and counts its own runs.
    wanted = [
        Migration(1, "counter", "CREATE TABLE runs (n integer NOT NULL)"),
        Migration(2, "count", "INSERT INTO runs VALUES (1)"),
        *[Migration(m.version + 2, m.name, m.sql) for m in postgres.migrations()],
    ]
    pools = [await postgres.connect(pg_settings.postgres_url, schema) for _ in range(STARTERS)]
    try:
        applied = await asyncio.gather(*(postgres.migrate(p, schema, wanted) for p in pools))
        runs = await pools[0].fetchval("SELECT count(*) FROM runs")
        again = await postgres.migrate(pools[0], schema, wanted)
    finally:
        await asyncio.gather(*(pool.close() for pool in pools))

    assert sorted(applied, key=len)[-1] == [m.version for m in wanted]  # one did them all,
    assert sum(len(a) for a in applied) == len(wanted)  # and no other did any again
    assert runs == 1
    assert again == []
    assert await versions(pg_settings) == [m.version for m in wanted]


async def test_a_later_version_is_applied_on_the_next_start(pg_settings: Settings) -> None:
    assert pg_settings.postgres_url is not None
    schema = Names(pg_settings.namespace).schema
    first = [Migration(1, "table", "CREATE TABLE notes (body text)")]
    later = [*first, Migration(2, "column", "ALTER TABLE notes ADD COLUMN at integer")]
    pool = await postgres.connect(pg_settings.postgres_url, schema)
    try:
        assert await postgres.migrate(pool, schema, first) == [1]
        assert await postgres.migrate(pool, schema, later) == [2]
        await pool.execute("INSERT INTO notes (body, at) VALUES ('x', 1)")
    finally:
        await pool.close()
    assert await versions(pg_settings) == [1, 2]


async def test_processes_opening_the_archive_together_share_one_schema(
    pg_settings: Settings,
) -> None:
    assert pg_settings.postgres_url is not None
    schema = Names(pg_settings.namespace).schema
    archives = [Archive(pg_settings.postgres_url, schema) for _ in range(STARTERS)]
    try:
        await asyncio.gather(*(archive.open() for archive in archives))
    finally:
        await asyncio.gather(*(archive.close() for archive in archives))
    assert await versions(pg_settings) == [m.version for m in postgres.migrations()]


def test_migrations_are_numbered_without_gaps_or_twins() -> None:
    shipped = postgres.migrations()
    assert [m.version for m in shipped] == list(range(1, len(shipped) + 1))
    assert shipped[0].name == "history"
    with pytest.raises(ValueError, match="numbered"):
        postgres.ordered([Migration(1, "a", ""), Migration(3, "c", "")])
    with pytest.raises(ValueError, match="numbered"):
        postgres.ordered([Migration(1, "a", ""), Migration(1, "b", "")])
