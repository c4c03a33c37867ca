"""JSON request bodies, parsed by us rather than by FastAPI.

Malformed JSON is a 400, a schema violation a 422 naming the field (OpenAI error shape), an oversized body a
413 (raised while reading, see :mod:`service.core.middleware`), and the raw JSON is kept so chat bodies can
be forwarded exactly as sent.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from fastapi import Request
from pydantic import BaseModel, ValidationError

from service.core.errors import InvalidRequest

__all__ = ["Parsed", "json_model", "read_json"]

M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class Parsed(Generic[M]):
    data: M  # validated
    raw: dict[str, Any]  # as sent


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")  # NaN/Infinity: Python accepts them, JSON (and upstreams) do not


async def read_json(request: Request, model: type[M]) -> Parsed[M]:
    try:
        raw = json.loads(await request.body(), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError, RecursionError):
        raise InvalidRequest("the request body is not valid JSON", code="invalid_json") from None
    if not isinstance(raw, dict):
        raise InvalidRequest("the request body must be a JSON object", code="invalid_json")
    try:
        return Parsed(model.model_validate(raw), raw)
    except ValidationError as exc:
        raise InvalidRequest.from_validation(exc) from None


def json_model(model: type[M]) -> Callable[[Request], Awaitable[M]]:
    """A dependency returning the validated body."""

    async def parse(request: Request) -> M:
        return (await read_json(request, model)).data

    return parse
