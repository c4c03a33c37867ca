"""Tests for router_models.routesae: routing (RouteSAE eq. 5–9), training, save/load, metrics.

Run: ``.venv/bin/pytest -q tests/test_routesae.py`` (tiny seeded synthetic data: d=16, d_sae=64, k=4, L=3).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from router_fakes import one_torch_thread

from router_models.features.routesae import (
    RouteSAE,
    RouteSAEConfig,
    build_routesae,
    default_routed_layers,
    evaluate_routesae,
    load_routesae,
    save_routesae,
    train_routesae,
)

D, D_SAE, K, LAYERS = 16, 64, 4, [3, 4, 5]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    with one_torch_thread():
        yield


def layered_data(n: int = 2048, seed: int = 0) -> torch.Tensor:
    """``[n, 3, D]``: per layer, 2-sparse mixes of 24 shared unit atoms, at growing norm and offset."""
    atoms = torch.nn.functional.normalize(torch.randn(24, D, generator=torch.Generator().manual_seed(0)), dim=-1)
    gen = torch.Generator().manual_seed(seed + 1)
    codes = torch.zeros(n, 3, 24).scatter_(2, torch.randint(0, 24, (n, 3, 2), generator=gen), 1.0)
    codes *= torch.rand(n, 3, 24, generator=gen) + 0.5
    growth = torch.tensor([1.0, 2.0, 4.0]).view(1, 3, 1)
    return growth * (codes @ atoms + 0.2)


def cfg(**kw: Any) -> RouteSAEConfig:
    base: dict[str, Any] = {"d_in": D, "layers": LAYERS, "d_sae": D_SAE, "k": K, "batch_size": 256}
    return RouteSAEConfig(**(base | {"total_steps": 120, "lr": 5e-3} | kw))


@pytest.fixture(scope="module")
def trained() -> tuple[RouteSAE, dict[str, Any]]:
    return train_routesae(layered_data(), cfg(), progress=False)


def test_default_routed_layers_span_a_quarter_to_three_quarters() -> None:
    assert default_routed_layers(16) == list(range(3, 12))  # Llama-3.2-1B: 9 = 16/2 + 1 layers
    assert default_routed_layers(30) == list(range(6, 22))  # SmolLM2-135M
    assert default_routed_layers(2) == [0]


def test_forward_shapes_and_probabilities() -> None:
    model = build_routesae(cfg())
    out = model(layered_data(n=32))
    assert out.latents.shape == (32, D_SAE) and out.reconstruction.shape == (32, D)
    assert out.x_route.shape == (32, D) and out.p.shape == (32, 3)
    assert out.layer.dtype == torch.long and out.layer.shape == (32,)
    assert torch.allclose(out.p.sum(-1), torch.ones(32))
    assert ((out.latents != 0).sum(-1) <= K).all()
    assert torch.equal(model.encode(layered_data(n=32)), out.latents)


def test_hard_routing_picks_argmax_scaled_by_its_probability() -> None:
    model = build_routesae(cfg())
    x = layered_data(n=64)
    x_route, layer, p = model.route(x)
    prepared = model.prepare(x)
    assert torch.equal(layer, p.argmax(-1))
    expected = p.gather(1, layer[:, None]) * prepared[torch.arange(64), layer]  # eq. 9
    assert torch.allclose(x_route, expected)
    v = prepared.sum(1)  # eq. 5
    assert torch.allclose(p, torch.softmax(v @ model.router.weight.T, -1))  # eq. 6–7


def test_soft_routing_mixes_layers_and_differs_from_hard() -> None:
    hard, soft = build_routesae(cfg(routing="hard")), build_routesae(cfg(routing="soft"))
    soft.load_state_dict(hard.state_dict())
    x = layered_data(n=64)
    (x_hard, layer_hard, p_hard), (x_soft, layer_soft, p_soft) = hard.route(x), soft.route(x)
    assert torch.equal(p_hard, p_soft) and torch.equal(layer_hard, layer_soft)
    assert torch.allclose(x_soft, (p_soft.unsqueeze(-1) * soft.prepare(x)).sum(1))  # appendix C
    assert not torch.allclose(x_hard, x_soft)


def test_router_gets_gradient_through_p() -> None:
    model = build_routesae(cfg())
    out = model(layered_data(n=64))
    ((out.reconstruction - out.x_route) ** 2).sum().backward()
    assert model.router.weight.grad is not None and model.router.weight.grad.abs().sum() > 0


def test_training_lowers_loss_and_leaves_unit_norm_decoder(trained: tuple[RouteSAE, dict[str, Any]]) -> None:
    from sae_lens import TopKSAE

    model, log = trained
    assert sum(log["loss"][-10:]) < 0.7 * sum(log["loss"][:10])
    assert isinstance(model.sae, TopKSAE) and not model.training
    assert torch.allclose(model.sae.W_dec.norm(dim=-1), torch.ones(D_SAE), atol=1e-5)
    assert sum(log["layer_fraction"]) == pytest.approx(1.0) and log["steps"] == 120


def test_renorm_decoder_gives_unit_rows() -> None:
    model = build_routesae(cfg())
    with torch.no_grad():
        model.sae.W_dec.mul_(torch.rand(D_SAE, 1) * 5)
    model.renorm_decoder()
    assert torch.allclose(model.sae.W_dec.norm(dim=-1), torch.ones(D_SAE), atol=1e-6)


def test_save_load_gives_identical_outputs(trained: tuple[RouteSAE, dict[str, Any]], tmp_path: Any) -> None:
    model, _ = trained
    save_routesae(model, tmp_path / "route")
    assert {p.name for p in (tmp_path / "route").iterdir()} == {"routesae.json", "router.safetensors", "sae"}
    loaded = load_routesae(tmp_path / "route")
    x = layered_data(n=128, seed=3)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert loaded.layers == LAYERS and loaded.routing == "hard"


def test_load_names_what_does_not_match(trained: tuple[RouteSAE, dict[str, Any]], tmp_path: Any) -> None:
    model, _ = trained
    path = save_routesae(model, tmp_path / "route")
    manifest = json.loads((path / "routesae.json").read_text())
    (path / "routesae.json").write_text(json.dumps(manifest | {"d_in": D + 1}))
    with pytest.raises(ValueError, match="sae d_in: found 16, manifest says 17"):
        load_routesae(path)


def test_evaluate_routesae(trained: tuple[RouteSAE, dict[str, Any]]) -> None:
    model, _ = trained
    metrics = evaluate_routesae(model, layered_data(n=512, seed=5), chunk=200)
    assert metrics["l0"] <= K and 0.0 <= metrics["dead_fraction"] < 1.0
    assert metrics["nmse"] < 1.0 and metrics["norm_mse"] < 1.0
    assert metrics["layers"] == LAYERS and sum(metrics["layer_fraction"]) == pytest.approx(1.0)


def test_soft_routing_and_aux_loss_train_without_error() -> None:
    model, log = train_routesae(
        iter(layered_data().split(128)),
        cfg(routing="soft", batch_size=128, total_steps=None, n_tokens=10 * 128, aux_k_coef=1 / 32, dead_tokens=128),
        progress=False,
    )
    assert log["steps"] == 10 and any(a > 0 for a in log["aux_loss"])
    assert model.routing == "soft"
