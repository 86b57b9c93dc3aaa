"""Archived history in PostgreSQL: the events moved out of Redis, with the dedupe keys
that logged them and the digests of the actions admitted before (see ``sql/``).

Rows are only ever inserted, each once (a copy repeated after a crash changes
nothing), and never changed: what was archived stays true. A failure to reach
PostgreSQL is ``Unavailable``: the client may retry.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import asyncpg

from broker import postgres
from broker.errors import Unavailable
from broker.settings import Settings

# What failing to reach or use PostgreSQL raises.
FAILURES = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError)


def archive_for(settings: Settings) -> Archive | None:
    """The fleet's archive when ``FLEET_POSTGRES_URL`` is set (not yet connected)."""
    if settings.postgres_url is None:
        return None
    return Archive(settings.postgres_url, settings.names.schema)


class Archive:
    """One process's door to the archived history of one fleet (its schema)."""

    def __init__(self, url: str, schema: str) -> None:
        self.url = url
        self.schema = schema
        self._pool: postgres.Pool | None = None

    async def open(self) -> None:
        """Connect, and bring the schema up to date (``postgres.migrate``)."""
        if self._pool is None:
            pool = await postgres.connect(self.url, self.schema)
            try:
                await postgres.migrate(pool, self.schema)
            except BaseException:
                await pool.close()
                raise
            self._pool = pool

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    @asynccontextmanager
    async def _connection(self) -> AsyncIterator[asyncpg.pool.PoolConnectionProxy[asyncpg.Record]]:
        if self._pool is None:
            raise Unavailable("the history archive is not connected")
        try:
            async with self._pool.acquire() as conn:
                yield conn
        except FAILURES as exc:
            raise Unavailable(f"the history archive failed: {type(exc).__name__}") from exc

    async def read(self, cid: str, after: int, upto: int) -> list[bytes]:
        """The archived events with ``after < id <= upto``, oldest first, as their JSON."""
        async with self._connection() as conn:
            rows = await conn.fetch(
                "SELECT body FROM events WHERE conversation = $1 AND id > $2 AND id <= $3"
                " ORDER BY id",
                cid,
                after,
                upto,
            )
        return [row["body"].encode() for row in rows]

    async def once(self, cid: str, key: str) -> tuple[int, int] | None:
        """``(first_id, count)`` of what the dedupe key ``key`` logged, if archived."""
        async with self._connection() as conn:
            row = await conn.fetchrow(
                "SELECT first_id, count FROM once_keys WHERE conversation = $1 AND key = $2",
                cid,
                key,
            )
        return None if row is None else (int(row["first_id"]), int(row["count"]))

    async def digest(self, cid: str, action_id: str) -> str | None:
        """The content digest of an action admitted before the archive took it, if any."""
        async with self._connection() as conn:
            digest = await conn.fetchval(
                "SELECT digest FROM actions WHERE conversation = $1 AND action_id = $2",
                cid,
                action_id,
            )
        return None if digest is None else str(digest)

    async def insert(
        self,
        cid: str,
        pages: AsyncIterator[Sequence[tuple[int, bytes]]],
        once: Mapping[bytes, bytes],
        actions: Mapping[bytes, bytes],
    ) -> int:
        """Copy events (``(id, JSON)`` pages), dedupe keys (key -> ``first:count``) and
        action digests, in one transaction, skipping rows already there; how many
        events were given."""
        copied = 0
        async with self._connection() as conn, conn.transaction():
            async for page in pages:
                await conn.execute(
                    "INSERT INTO events (conversation, id, body)"
                    " SELECT $1, id, body FROM unnest($2::bigint[], $3::text[]) AS t(id, body)"
                    " ON CONFLICT DO NOTHING",
                    cid,
                    [event_id for event_id, _ in page],
                    [body.decode() for _, body in page],
                )
                copied += len(page)
            if once:
                spans = [value.decode().split(":") for value in once.values()]
                await conn.execute(
                    "INSERT INTO once_keys (conversation, key, first_id, count)"
                    " SELECT $1, key, first_id, count"
                    " FROM unnest($2::text[], $3::bigint[], $4::integer[])"
                    " AS t(key, first_id, count)"
                    " ON CONFLICT DO NOTHING",
                    cid,
                    [key.decode() for key in once],
                    [int(first) for first, _ in spans],
                    [int(count) for _, count in spans],
                )
            if actions:
                await conn.execute(
                    "INSERT INTO actions (conversation, action_id, digest)"
                    " SELECT $1, action_id, digest"
                    " FROM unnest($2::text[], $3::text[]) AS t(action_id, digest)"
                    " ON CONFLICT DO NOTHING",
                    cid,
                    [action_id.decode() for action_id in actions],
                    [digest.decode() for digest in actions.values()],
                )
        return copied
