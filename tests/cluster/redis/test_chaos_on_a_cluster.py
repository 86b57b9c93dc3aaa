"""Every chaos scenario that runs on the shared Redis, on the Redis Cluster instead
(those with a Redis of their own, restarted or partitioned, are not among them). With
``make chaos`` only (``--chaos-long``): ``make test`` runs the subset in
``test_redis_cluster.py``, to stay within its time."""

from __future__ import annotations

from tests.chaos.test_archive_crash import test_a_mover_killed_between_copy_and_trim
from tests.chaos.test_close import test_close_for_good_survives_killing_and_restarting_everything
from tests.chaos.test_hung_worker import (
    test_a_worker_paused_for_20s_holds_nothing,
    test_a_worker_whose_agent_blocks_its_loop_for_20s_holds_nothing,
)
from tests.chaos.test_llm_turns import (
    fake_llm,
    test_a_stop_cancels_the_llm_request_in_flight,
    test_a_three_step_turn_resumes_from_its_last_logged_step,
    test_an_llm_failure_ends_the_turn_and_the_conversation_goes_on,
)
from tests.chaos.test_rabbitmq_restart import test_rabbitmq_restart_under_traffic
from tests.chaos.test_recovery import (
    test_a_standby_reaper_takes_over_within_its_lease,
    test_gateways_recover_conversations_with_no_reaper_at_all,
)
from tests.chaos.test_turn_failover import test_a_stop_sent_during_failover_stops_the_resumed_turn
from tests.chaos.test_waits import (
    test_a_timer_due_while_no_worker_runs_fires_once_one_is_back,
    test_an_approval_asked_before_its_owner_went_is_answered_by_the_next,
    test_timers_missed_while_the_reaper_was_down_fire_once_each,
)
from tests.chaos.test_webhook_faults import (
    test_a_state_change_logged_by_a_worker_that_died_before_queueing_it_is_delivered,
    test_a_worker_killed_under_traffic_loses_no_webhook,
    test_deliveries_held_when_the_broker_cuts_the_worker_off_are_delivered_once_back,
)
from tests.chaos.test_worker_faults import (
    test_a_crash_between_logging_and_acking_logs_once,
    test_a_worker_killed_between_logging_and_publishing,
    test_rolling_restart_of_every_worker,
)

__all__ = [
    "fake_llm",
    "test_a_crash_between_logging_and_acking_logs_once",
    "test_a_mover_killed_between_copy_and_trim",
    "test_a_standby_reaper_takes_over_within_its_lease",
    "test_a_state_change_logged_by_a_worker_that_died_before_queueing_it_is_delivered",
    "test_a_stop_cancels_the_llm_request_in_flight",
    "test_a_stop_sent_during_failover_stops_the_resumed_turn",
    "test_a_three_step_turn_resumes_from_its_last_logged_step",
    "test_a_timer_due_while_no_worker_runs_fires_once_one_is_back",
    "test_a_worker_killed_between_logging_and_publishing",
    "test_a_worker_killed_under_traffic_loses_no_webhook",
    "test_a_worker_paused_for_20s_holds_nothing",
    "test_a_worker_whose_agent_blocks_its_loop_for_20s_holds_nothing",
    "test_an_approval_asked_before_its_owner_went_is_answered_by_the_next",
    "test_an_llm_failure_ends_the_turn_and_the_conversation_goes_on",
    "test_close_for_good_survives_killing_and_restarting_everything",
    "test_deliveries_held_when_the_broker_cuts_the_worker_off_are_delivered_once_back",
    "test_gateways_recover_conversations_with_no_reaper_at_all",
    "test_rabbitmq_restart_under_traffic",
    "test_rolling_restart_of_every_worker",
    "test_timers_missed_while_the_reaper_was_down_fire_once_each",
]
