"""Every wire format decodes what its encoder wrote, and refuses what it did not."""

from __future__ import annotations

import orjson
import pytest

from broker.events import (
    Action,
    ChatMessage,
    ClaimRequest,
    CloseMarker,
    Malformed,
    NewEvent,
    Query,
    QueryAnswer,
    StreamFrame,
    decode_answer,
    decode_claim_request,
    decode_input,
    decode_live,
    encode_answer,
    encode_batch,
    encode_claim_request,
    encode_frame,
    encode_input,
    input_id,
    with_id,
)


def test_queue_items_round_trip() -> None:
    action = Action("a-1", "message", "héllo")
    close = CloseMarker("closed by user")
    assert decode_input(encode_input(action)) == action
    assert decode_input(encode_input(close)) == close
    timed, untimed = decode_input(encode_input(action, 12.5)), decode_input(encode_input(action))
    assert isinstance(timed, Action) and timed.sent_at == 12.5
    assert isinstance(untimed, Action) and untimed.sent_at == 0
    assert (input_id("c", action), input_id("c", close)) == ("a-1", "close:c")


def test_stream_frames_round_trip() -> None:
    frame = StreamFrame("c", "t-1", 7, 2, 3, "hello ", 1_800_000_000.5)
    assert decode_live(encode_frame(frame)) == frame


def test_stop_actions_round_trip() -> None:
    stop = Action("s-1", "stop")
    assert decode_input(encode_input(stop)) == stop
    assert stop.event().kind == "stop"


def test_queries_and_their_answers_round_trip() -> None:
    payload = {
        "messages": [{"role": "system", "content": "terse"}, {"role": "user", "content": "é"}]
    }
    query = Query.parse(payload, 2.5)
    assert query == Query((ChatMessage("system", "terse"), ChatMessage("user", "é")), 2.5)
    assert decode_input(encode_input(query)) == query
    for answer in (QueryAnswer(content="hi"), QueryAnswer(code="llm_timeout", message="slow")):
        assert decode_answer(encode_answer(answer)) == answer
    assert QueryAnswer(content="").ok and not QueryAnswer(code="x").ok


def test_claim_requests_round_trip() -> None:
    request = ClaimRequest("conv-1", "failover", 1234.5)
    assert decode_claim_request(encode_claim_request(request)) == request
    assert decode_claim_request(b'{"conversation_id": "conv-1"}') == ClaimRequest("conv-1")


def test_batches_round_trip_as_logged_json() -> None:
    entries = [with_id(i, NewEvent("agent", "message", {"n": i}).body("c")) for i in range(3)]
    decoded = decode_live(encode_batch(entries))
    assert not isinstance(decoded, StreamFrame)
    cid, events = decoded
    assert cid == "c"
    assert [e["id"] for e in events] == [0, 1, 2]
    assert events == [orjson.loads(e) for e in entries]


@pytest.mark.parametrize(
    ("decode", "body"),
    [
        (decode_input, b"not json"),
        (decode_input, b'{"kind": "message"}'),
        (decode_claim_request, b"{}"),
        (decode_claim_request, b'{"conversation_id": "../etc"}'),
        (decode_claim_request, b'{"conversation_id": "c", "cause": "whim"}'),
        (decode_claim_request, b'{"conversation_id": "c", "since": "soon"}'),
        (decode_live, b"[]"),
        (decode_live, b'{"id": 1}'),
        (decode_input, b'{"kind": "query", "timeout": 1}'),
        (decode_answer, b'{"ok": false}'),
        (decode_answer, b"[]"),
    ],
)
def test_what_no_encoder_wrote_is_malformed(decode: object, body: bytes) -> None:
    assert callable(decode)
    with pytest.raises(Malformed):
        decode(body)
