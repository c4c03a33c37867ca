"""Pure pieces: the multi-turn rule, model-string parsing, SSE rewriting, the score wire format, limit maths."""

from __future__ import annotations

import json

import numpy as np
import pytest

from router_models.decide.engine import PromptScores
from service.core.config import RoutingSettings
from service.core.errors import InvalidRequest, UnknownModel
from service.models import ChatMessage, scores_from_json, scores_to_json
from service.routing import parse_target, routed_text
from service.store import _retry_after
from service.upstream import SSERewriter, StreamStats

RULES = RoutingSettings(context_turns=2, context_chars=60, max_chars=40, head_chars=20)


def msgs(*pairs: tuple[str, object]) -> list[ChatMessage]:
    return [ChatMessage.model_validate({"role": r, "content": c}) for r, c in pairs]


def test_routes_on_last_user_turn_without_system_prompt() -> None:
    got = routed_text(msgs(("system", "You are a pirate."), ("user", "hello")), RULES)
    assert got.text == "hello" and not got.truncated


def test_prefixes_a_bounded_window_of_context() -> None:
    conversation = msgs(
        ("system", "sys"),
        ("user", "first question"),
        ("assistant", "first answer"),
        ("user", "second question"),
        ("assistant", "second answer"),
        ("user", "and in Python?"),
        ("tool", "ignored: after the last user turn"),
    )
    got = routed_text(conversation, RULES)
    assert got.text == "user: second question\n\nassistant: second answer\n\nand in Python?"
    no_context = routed_text(conversation, RoutingSettings(context_turns=0, max_chars=40, head_chars=20))
    assert no_context.text == "and in Python?"


def test_context_keeps_its_most_recent_characters() -> None:
    got = routed_text(msgs(("user", "a" * 100), ("assistant", "b" * 100), ("user", "q")), RULES)
    context, prompt = got.text.rsplit("\n\n", 1)
    assert prompt == "q" and context == "b" * 60 and got.truncated


def test_long_prompt_keeps_head_and_tail() -> None:
    text = "H" * 30 + "m" * 100 + "T" * 30
    got = routed_text(msgs(("user", text)), RULES)
    assert got.text == "H" * 20 + "\n…\n" + "T" * 20 and got.truncated


def test_list_content_text_parts() -> None:
    parts = [
        {"type": "text", "text": "what is in"},
        {"type": "image_url", "image_url": {"url": "data:..."}},
        {"type": "text", "text": "this image?"},
    ]
    assert routed_text(msgs(("user", parts)), RULES).text == "what is in\nthis image?"


def test_no_user_turn_is_a_bad_request() -> None:
    with pytest.raises(InvalidRequest, match="no user message"):
        routed_text(msgs(("system", "s"), ("assistant", "a")), RULES)


PRESETS = {"default": 1.0, "cheap": 50.0}
NAMES = {"gpt-4o-mini": "gpt-4o-mini", "mini": "gpt-4o-mini"}


@pytest.mark.parametrize(
    ("model", "backend", "lam", "preset"),
    [
        ("router", None, 1.0, "default"),
        ("router:cheap", None, 50.0, "cheap"),
        ("router:0.25", None, 0.25, None),
        ("router:0", None, 0.0, None),
        ("gpt-4o-mini", "gpt-4o-mini", None, None),
        ("mini", "gpt-4o-mini", None, None),
    ],
)
def test_parse_target(model: str, backend: str | None, lam: float | None, preset: str | None) -> None:
    t = parse_target(model, PRESETS, NAMES)
    assert (t.backend, t.lam, t.preset) == (backend, lam, preset)


@pytest.mark.parametrize(
    ("model", "error"),
    [
        ("router:fast", UnknownModel),
        ("router:", UnknownModel),
        ("claude", UnknownModel),
        ("router:-0.5", InvalidRequest),
        ("router:inf", InvalidRequest),
        ("router:nan", InvalidRequest),
    ],
)
def test_parse_target_rejects(model: str, error: type[Exception]) -> None:
    with pytest.raises(error):
        parse_target(model, PRESETS, NAMES)


def test_sse_rewriter_handles_lines_split_across_chunks() -> None:
    stats = StreamStats()
    sse = SSERewriter("ours", stats)
    events = [
        {"model": "up/x", "choices": [{"delta": {"content": "Hel"}}]},
        {"model": "up/x", "choices": [{"delta": {"content": "lo"}}]},
        {"model": "up/x", "choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    stream = b": keep-alive\n\n" + b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events)
    stream += b"data: [DONE]\n\n"
    out = b""
    for i in range(0, len(stream), 7):  # 7-byte chunks cut through every line
        out += sse.feed(stream[i : i + 7])
    out += sse.flush()
    lines = out.decode().split("\n")
    assert lines[0] == ": keep-alive" and lines[-3] == "data: [DONE]"
    payloads = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert [p["model"] for p in payloads] == ["ours"] * 3
    assert payloads[0]["choices"] == events[0]["choices"]
    assert stats.content_chars == 5 and stats.usage == {"prompt_tokens": 3, "completion_tokens": 2}


def test_sse_rewriter_emits_complete_lines_at_once() -> None:
    sse = SSERewriter("ours", StreamStats())
    assert sse.feed(b'data: {"model": "a"}\n') == b'data: {"model":"ours"}\n'  # no waiting for more
    assert sse.feed(b"data: [DO") == b""
    assert sse.feed(b"NE]\n\n") == b"data: [DONE]\n\n"


def test_scores_wire_format_round_trips() -> None:
    features = np.zeros(1000, dtype=np.float32)
    features[[3, 500]] = [0.5, 2.0]
    s = PromptScores(np.array([0.1, 0.9]), np.array([0.001, 0.03]), features, {"n": np.int64(4), "x": float("nan")})
    wire = json.loads(json.dumps(scores_to_json(s)))
    assert wire["features"] == {"size": 1000, "indices": [3, 500], "values": [0.5, 2.0]}
    back = scores_from_json(wire)
    assert np.array_equal(back.features, features) and np.array_equal(back.quality, s.quality)
    assert back.extras == {"n": 4, "x": None}


@pytest.mark.parametrize(
    ("cur", "prev", "cost", "limit", "frac", "lo", "hi"),
    [
        (3, 0, 1, 3, 0.5, 30, 60),  # full this window: wait for the next one at least
        (0, 10, 1, 5, 0.0, 30, 40),  # the previous window must slide out far enough: 6/10 of a minute
        (0, 0, 9, 5, 0.0, 60, 60),
    ],  # more than the limit at once: a full window
)
def test_retry_after(cur: int, prev: int, cost: int, limit: int, frac: float, lo: float, hi: float) -> None:
    assert lo <= _retry_after(cur, prev, cost, limit, frac) <= hi
