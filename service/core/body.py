"""JSON request bodies, parsed by us rather than by FastAPI.

Malformed JSON is a 400, and so is JSON that no upstream can take: a lone UTF-16 surrogate in a string
(``"\ud800"``: valid JSON escape, but not encodable as UTF-8) or a number too large for a float (``1e999``,
which Python reads as infinity). Both are checked here, once, so ``/route`` and ``/v1/chat/completions``
answer alike. A schema violation is a 422 naming the field (OpenAI error shape), an oversized body a
413 (raised while reading, see :mod:`service.core.middleware`), and the raw JSON is kept so chat bodies can
be forwarded exactly as sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.core.errors import InvalidRequest

__all__ = ["Parsed", "json_model", "parse_body", "read_json"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Parsed(Generic[M]):
    data: M  # validated
    raw: dict[str, Any]  # as sent


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # NaN/Infinity: Python accepts them, JSON (and upstreams) do not


def _finite_float(text: str) -> float:
    value = float(text)
    if math.isinf(value):
        raise _OutOfRange
    return value


class _OutOfRange(ValueError):
    pass


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``, or :class:`InvalidRequest` (400) saying what is wrong with it."""
    try:
        raw = json.loads(body, parse_constant=_reject_constant, parse_float=_finite_float)
    except _OutOfRange:
        raise InvalidRequest("a number in the request body is out of range", code="invalid_json") from None
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    try:  # a lone surrogate survives json.loads; it fails later, when anything encodes the text as UTF-8
        json.dumps(raw, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidRequest(
            "the request body contains an unpaired UTF-16 surrogate (\\ud800-\\udfff) in a string",
            code="invalid_unicode",
        ) from None
    except RecursionError:
        raise InvalidRequest("the request body is nested too deeply", code="invalid_json") from None
    return raw


async def read_json(request: Request, model: type[M]) -> Parsed[M]:
    raw = parse_body(await request.body())
    try:
        return Parsed(model.model_validate(raw), raw)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc) from None


def json_model(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency returning the validated body."""

    async def parse(request: Request) -> M:
        return (await read_json(request, model)).data

    return parse
