"""A whole fleet on a 3-node RabbitMQ cluster with quorum queues (FLEET_AMQP_URL lists
the nodes, FLEET_QUEUE_TYPE=quorum): echo works end to end, and the conversation and
dispatch queues really are quorum queues replicated on every node."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from broker.names import Names
from broker.settings import Settings
from fleet.harness import LocalFleet
from fleet.rabbitmq_cluster import RabbitCluster
from tests.support import Client, answers, create_conversation, replied_to, replies, token


@pytest.mark.timeout(300)  # the session's cluster may start here (10-30 s)
async def test_echo_on_a_rabbitmq_cluster_with_quorum_queues(
    quorum_settings: Settings, names: Names, rabbit_cluster: RabbitCluster
) -> None:
    async with LocalFleet(quorum_settings) as fleet:
        _, url = await fleet.gateway()
        await fleet.worker()
        await fleet.reaper()
        bearer = token(quorum_settings, "alice")
        cids = [await create_conversation(url, bearer, initial="hello") for _ in range(3)]
        for cid in cids:
            client = await Client().connect(url, bearer, cid)
            try:
                ack = await client.act("over the cluster", action_id=f"{cid}-1")
                assert ack == {"ok": True, "action_id": f"{cid}-1"}
                events = await client.wait_for(replied_to(f"{cid}-1"), timeout=20)
                assert replies(events)[f"{cid}-1"] == ["over the cluster"]
                assert "hello" in answers(events)  # the initial message too
            finally:
                await client.close()

        # Each process connected to one of the listed nodes, and said which.
        said = [line["node"] for p in fleet.processes for line in p.events("amqp_connected")]
        assert len(said) >= 3, said
        assert {urlsplit(node).port for node in said} <= {n.port for n in rabbit_cluster.nodes}

        queues = await rabbit_cluster.queues()
        ours = [names.dispatch_queue, *(names.conversation_queue(cid) for cid in cids)]
        every_node = sorted(node.name for node in rabbit_cluster.nodes)
        for name in ours:
            assert queues[name].type == "quorum", (name, queues[name])
            assert sorted(queues[name].members) == every_node, (name, queues[name])
