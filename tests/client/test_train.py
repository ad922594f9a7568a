"""Local training: the proximal term's formula, that it pulls toward its anchor, and the site optimiser."""

import copy

import numpy as np
import pytest
import torch

from client.settings import TrainSettings
from client.train import make_optimizer, proximal_penalty, train_local
from fusion_models.model import build_model
from fusion_models.task import make_task
from tests.client.test_app import _setup


def test_proximal_penalty_value_and_gradient_follow_the_formula():
    w = [torch.tensor([1.0, -2.0], requires_grad=True), torch.tensor([[0.5]], requires_grad=True)]
    anchor = [torch.tensor([0.0, 1.0]), torch.tensor([[1.5]])]
    value = proximal_penalty(w, anchor, mu=0.2)
    assert value.item() == pytest.approx(0.5 * 0.2 * (1 + 9 + 1))
    value.backward()
    assert np.allclose(w[0].grad.numpy(), 0.2 * np.array([1.0, -3.0]))
    assert np.allclose(w[1].grad.numpy(), 0.2 * np.array([[-1.0]]))


def test_a_strong_proximal_term_keeps_local_training_near_its_anchor(tmp_path, task_identity):
    from client.data import load_site_dataset
    from client.manifest import read_manifest

    manifest, _, features, spec = _setup(tmp_path)
    dataset = load_site_dataset(read_manifest(manifest), features, split="train")
    start = build_model(spec, seed=0)
    drift = {}
    for mu in (0.0, 100.0):
        model = copy.deepcopy(start)
        train_local(model, dataset, make_task("binary"), TrainSettings(epochs=3, batch_size=8, lr=1e-2, proximal_mu=mu),
                    seed=0, device=torch.device("cpu"))  # fmt: skip
        drift[mu] = sum(float(((p - q) ** 2).sum()) for p, q in zip(model.parameters(), start.parameters()))
    assert drift[100.0] < 0.5 * drift[0.0]


def _two_weights() -> torch.nn.Module:
    model = torch.nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, -2.0]]))
    return model


def test_sgd_steps_follow_heavy_ball_momentum_with_weight_decay():
    model = _two_weights()
    optimizer = make_optimizer(model, TrainSettings(optimizer="sgd", lr=0.1, momentum=0.5, weight_decay=0.01))
    w = np.array([1.0, -2.0])
    x = torch.tensor([[3.0, 1.0]])
    buffer = np.zeros(2)
    for _ in range(2):
        optimizer.zero_grad()
        model(x).sum().backward()  # gradient of w.x is x
        g = np.array([3.0, 1.0]) + 0.01 * w
        buffer = g if not buffer.any() else 0.5 * buffer + g
        w = w - 0.1 * buffer
        optimizer.step()
        assert np.allclose(model.weight.detach().numpy()[0], w)


def test_adamw_stays_the_default_and_an_unknown_optimizer_is_named():
    assert isinstance(make_optimizer(_two_weights(), TrainSettings()), torch.optim.AdamW)
    with pytest.raises(ValueError, match="train.optimizer"):
        TrainSettings(optimizer="lamb")
    with pytest.raises(ValueError, match="train.momentum"):
        TrainSettings(optimizer="sgd", momentum=1.0)
