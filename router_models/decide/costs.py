"""Expected cost of sending a prompt to each model.

In:  training prompts with each model's observed cost (``cost_usd`` ``[n, m]``, NaN where missing) and, where
     known, each model's prices (USD per million input / output tokens, or a fixed price per call).
Out: a :class:`CostModel` whose ``predict(texts) -> [n, m]`` gives the expected USD cost of each call.

For a model with token prices, cost = (input_tokens · price_in + expected_output_tokens · price_out) / 1e6.
Input tokens are counted as ⌈chars / 4⌉ (the convention the shared routing data's costs were built with) or
by a tokenizer callable. Expected output tokens are learned from the training costs: each call's implied
output length is (cost − in_tok · price_in / 1e6) / (price_out / 1e6), and the model's expectation is the
median over its calls (robust to a few runaway answers), optionally per prompt group (e.g. UniRoute
cluster; a group with fewer than ``min_group`` calls uses the model's overall median). A model with a fixed
per-call price costs that; a model without prices costs its mean training cost.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["CostModel", "ModelPrice", "chars_tokens", "parse_prices"]


def chars_tokens(text: str) -> int:
    """⌈len(text) / 4⌉: the token estimate the shared routing data's costs use."""
    return math.ceil(len(text) / 4)


@dataclass(frozen=True)
class ModelPrice:
    """A model's prices: per million input / output tokens, or a fixed USD per call (None = unknown)."""

    input_per_mtok: float | None = None
    output_per_mtok: float | None = None
    per_call: float | None = None

    @property
    def has_tokens(self) -> bool:
        return self.input_per_mtok is not None and self.output_per_mtok is not None

    def to_json(self) -> dict[str, float | None]:
        return {
            "input_per_mtok": self.input_per_mtok,
            "output_per_mtok": self.output_per_mtok,
            "per_call": self.per_call,
        }


def parse_prices(raw: Mapping[str, Mapping[str, Any]]) -> dict[str, ModelPrice]:
    """``{model: {"input_per_mtok", "output_per_mtok", "per_call"}}`` (prices.json's layout; nulls allowed)."""

    def num(v: Any) -> float | None:
        return None if v is None else float(v)

    return {
        m: ModelPrice(num(p.get("input_per_mtok")), num(p.get("output_per_mtok")), num(p.get("per_call")))
        for m, p in raw.items()
    }


@dataclass
class CostModel:
    """Per model: ``mode`` "tokens" | "fixed"; ``price_in`` / ``price_out`` [m] USD per Mtok (0 when fixed);
    ``out_tokens`` [G, m] expected output tokens per group (G = 1 without groups); ``fixed`` [m] USD per call."""

    models: tuple[str, ...]
    mode: list[str]
    price_in: np.ndarray
    price_out: np.ndarray
    out_tokens: np.ndarray
    fixed: np.ndarray
    count_tokens: Callable[[str], int] = field(default=chars_tokens, repr=False)

    @classmethod
    def fit(
        cls,
        models: Sequence[str],
        texts: Sequence[str],
        costs: np.ndarray,
        prices: Mapping[str, ModelPrice] | None = None,
        groups: np.ndarray | None = None,
        n_groups: int = 1,
        min_group: int = 10,
        count_tokens: Callable[[str], int] = chars_tokens,
    ) -> CostModel:
        """costs: [n, m] training costs (NaN = no call); groups: [n] ints in [0, n_groups) or None."""
        costs = np.asarray(costs, dtype=np.float64)
        m = len(models)
        in_tok = np.array([count_tokens(str(t)) for t in texts], dtype=np.float64)
        groups = np.zeros(len(texts), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        n_groups = max(n_groups, int(groups.max(initial=0)) + 1)
        out = cls(tuple(models), [], np.zeros(m), np.zeros(m), np.zeros((n_groups, m)), np.zeros(m), count_tokens)
        for j, name in enumerate(models):
            price = (prices or {}).get(name, ModelPrice())
            out._set_model(j, price, in_tok, costs[:, j], groups, min_group)
        return out

    def _set_model(
        self, j: int, price: ModelPrice, in_tok: np.ndarray, cost: np.ndarray, groups: np.ndarray, min_group: int
    ) -> None:
        seen = ~np.isnan(cost)
        if price.has_tokens:
            assert price.input_per_mtok is not None and price.output_per_mtok is not None
            self.mode.append("tokens")
            self.price_in[j], self.price_out[j] = price.input_per_mtok, price.output_per_mtok
            implied = _implied_out_tokens(cost[seen], in_tok[seen], price.input_per_mtok, price.output_per_mtok)
            overall = float(np.median(implied)) if implied.size else 0.0
            for g in range(self.out_tokens.shape[0]):
                in_g = groups[seen] == g
                self.out_tokens[g, j] = float(np.median(implied[in_g])) if in_g.sum() >= min_group else overall
        else:
            self.mode.append("fixed")
            if price.per_call is not None:
                self.fixed[j] = price.per_call
            elif seen.any():
                self.fixed[j] = float(np.mean(cost[seen]))
            else:
                raise ValueError(f"model {self.models[j]!r}: no prices and no training costs to learn a cost from")

    def add_model(
        self, name: str, price: ModelPrice | None, texts: Sequence[str] | None = None, costs: np.ndarray | None = None
    ) -> CostModel:
        """A copy with one more model. Output tokens come from ``texts``/``costs`` if given, else the median
        of the other token-priced models' expectations."""
        m, G = len(self.models), self.out_tokens.shape[0]
        new = CostModel(
            (*self.models, name),
            list(self.mode),
            np.append(self.price_in, 0.0),
            np.append(self.price_out, 0.0),
            np.hstack([self.out_tokens, np.zeros((G, 1))]),
            np.append(self.fixed, 0.0),
            self.count_tokens,
        )
        price = price or ModelPrice()
        if texts is not None and costs is not None:
            in_tok = np.array([self.count_tokens(str(t)) for t in texts], dtype=np.float64)
            new._set_model(m, price, in_tok, np.asarray(costs, dtype=np.float64), np.full(len(in_tok), -1), 1)
        elif price.has_tokens:
            tokens = [self.out_tokens[:, j] for j in range(m) if self.mode[j] == "tokens"]
            new._set_model(m, price, np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), 1)
            new.out_tokens[:, m] = np.median(np.stack(tokens, axis=1), axis=1) if tokens else 0.0
        else:
            new._set_model(m, price, np.zeros(0), np.zeros(0), np.zeros(0, dtype=np.int64), 1)
        return new

    def predict(self, texts: Sequence[str], groups: np.ndarray | None = None) -> np.ndarray:
        """Expected USD cost [n, m]; groups: [n] group per prompt (None = group 0)."""
        in_tok = np.array([self.count_tokens(str(t)) for t in texts], dtype=np.float64)
        g = np.zeros(len(texts), dtype=np.int64) if groups is None else np.asarray(groups, dtype=np.int64)
        token_cost = (in_tok[:, None] * self.price_in + self.out_tokens[g] * self.price_out) / 1e6
        return np.where(np.array(self.mode) == "tokens", token_cost, self.fixed)

    def regroup(self, cost: np.ndarray, group: int, groups: np.ndarray) -> np.ndarray:
        """Expected cost [b, m] of one prompt whose cost ``cost`` [m] was predicted in ``group``, had it fallen in
        each of ``groups`` [b] instead: only the expected output tokens depend on the group, so the prompt's text
        (its input tokens) is not needed."""
        shift = (self.out_tokens[np.asarray(groups, dtype=np.int64)] - self.out_tokens[group]) * self.price_out / 1e6
        return np.asarray(cost, dtype=np.float64)[None, :] + np.where(np.array(self.mode) == "tokens", shift, 0.0)

    def to_arrays(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        arrays = {"price_in": self.price_in, "price_out": self.price_out, "out_tokens": self.out_tokens}
        return {"mode": list(self.mode), "token_count": self.count_tokens.__name__}, arrays | {"fixed": self.fixed}

    @classmethod
    def from_arrays(
        cls, models: Sequence[str], params: Mapping[str, Any], arrays: Mapping[str, np.ndarray]
    ) -> CostModel:
        return cls(
            tuple(models),
            list(params["mode"]),
            arrays["price_in"],
            arrays["price_out"],
            arrays["out_tokens"],
            arrays["fixed"],
        )


def _implied_out_tokens(cost: np.ndarray, in_tok: np.ndarray, p_in: float, p_out: float) -> np.ndarray:
    """Output tokens each observed call implies, ≥ 0 (empty when the model has no output price)."""
    if p_out <= 0:
        return np.zeros(0)
    return np.maximum((cost - in_tok * p_in / 1e6) / (p_out / 1e6), 0.0)
