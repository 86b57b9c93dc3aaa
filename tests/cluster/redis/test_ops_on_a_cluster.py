"""The ops commands (status and the history, inspect, drain, stuck, close, purge) and
the dashboard's API on a Redis Cluster, where the fleet's indexes and processes' keys
are spread over hash-tag groups: the tests written for one Redis, run here unchanged."""

from __future__ import annotations

from tests.fleet.test_drain import test_a_drained_worker_releases_its_conversations_and_exits_0
from tests.fleet.test_inspect import (
    test_inspect_shows_input_waiting_for_an_owner,
    test_inspect_shows_owner_epoch_clients_and_last_events,
)
from tests.fleet.test_purge import (
    test_a_conversation_that_receives_input_while_purge_runs_is_kept,
    test_purge_deletes_old_closed_conversations_and_nothing_else,
)
from tests.fleet.test_status import (
    test_status_shows_every_process_and_conversation,
    test_the_recent_history_says_who_joined_died_fenced_and_left,
)
from tests.fleet.test_stuck import (
    test_close_closes_for_good_with_the_reason,
    test_each_kind_of_stuck_conversation_is_listed,
)
from tests.gateway.test_admin import test_an_admin_sees_the_fleet_and_any_conversation_live

__all__ = [
    "test_a_conversation_that_receives_input_while_purge_runs_is_kept",
    "test_a_drained_worker_releases_its_conversations_and_exits_0",
    "test_an_admin_sees_the_fleet_and_any_conversation_live",
    "test_close_closes_for_good_with_the_reason",
    "test_each_kind_of_stuck_conversation_is_listed",
    "test_inspect_shows_input_waiting_for_an_owner",
    "test_inspect_shows_owner_epoch_clients_and_last_events",
    "test_purge_deletes_old_closed_conversations_and_nothing_else",
    "test_status_shows_every_process_and_conversation",
    "test_the_recent_history_says_who_joined_died_fenced_and_left",
]
