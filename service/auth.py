"""Client authentication: ``Authorization: Bearer <key>`` checked against sha256 digests from the config.

In:  the Authorization header. Out: a :class:`Caller` (the key's configured name and its rate limits), or
:class:`Unauthorized`. The key itself is hashed at once and never stored, logged or echoed; everything
downstream (limits, usage, logs) knows the caller by name. With ``auth.require_auth: false`` a request
without a valid key is served as ``anonymous``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from service.core.config import AuthSettings, RateLimitSettings
from service.core.errors import Unauthorized

__all__ = ["ANONYMOUS", "Caller", "KeyRing"]

ANONYMOUS = "anonymous"


@dataclass(frozen=True)
class Caller:
    name: str
    requests_per_min: int  # 0 = unlimited
    tokens_per_min: int


def _limit(override: int | None, default: int | None) -> int:
    return override if override is not None else (default or 0)


class KeyRing:
    def __init__(self, auth: AuthSettings, default: RateLimitSettings) -> None:
        self.require_auth = auth.require_auth
        self._by_digest = {
            k.sha256: Caller(
                k.name,
                _limit(k.rate_limit.requests_per_min, default.requests_per_min),
                _limit(k.rate_limit.tokens_per_min, default.tokens_per_min),
            )
            for k in auth.api_keys
        }
        self._anonymous = Caller(ANONYMOUS, default.requests_per_min or 0, default.tokens_per_min or 0)

    def authenticate(self, authorization: str | None) -> Caller:
        scheme, _, key = (authorization or "").strip().partition(" ")
        caller = None
        if scheme.lower() == "bearer" and key.strip():
            caller = self._by_digest.get(hashlib.sha256(key.strip().encode()).hexdigest())
        if caller is not None:
            return caller
        if not self.require_auth:
            return self._anonymous
        if not authorization:
            raise Unauthorized("missing API key: send Authorization: Bearer <key>")
        raise Unauthorized("invalid API key")
