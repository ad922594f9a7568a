"""Tests for fusion_models.task: losses, scores, metrics wiring and the task registry."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from fusion_models.metrics import bootstrap_ci
from fusion_models.task import (
    TASKS,
    BinaryTask,
    MulticlassTask,
    RegressionTask,
    SurvivalTask,
    Task,
    cox_partial_likelihood_loss,
    make_task,
)


def _numpy_cox_breslow(eta: np.ndarray, time: np.ndarray, event: np.ndarray) -> float:
    """Direct definition: -(1/d) sum_{i event} [eta_i - log sum_{j: t_j >= t_i} exp(eta_j)]."""
    terms = [eta[i] - np.log(np.sum(np.exp(eta[time >= time[i]]))) for i in range(len(eta)) if event[i]]
    return -float(np.sum(terms)) / max(len(terms), 1)


def _num_classes(task_name: str) -> int:
    return 3 if task_name == "multiclass" else 2


def _separable_data(task_name: str, n: int = 64, d: int = 4, k: int = 3, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g)
    w = torch.randn(d, generator=g)
    s = x @ w
    if task_name == "binary":
        y = (s > 0).float()
    elif task_name == "multiclass":
        y = (x[:, :k] @ torch.randn(k, k, generator=g)).argmax(1)
    elif task_name == "regression":
        y = s
    else:  # survival: time falls with the score (little noise), about a third censored
        time = torch.exp(-s) * (1 + 0.05 * torch.rand(n, generator=g))
        event = (torch.rand(n, generator=g) < 0.67).float()
        y = torch.stack([time, event], dim=1)
    return x, y


# ---------------------------------------------------------------------------- registry / API


@pytest.mark.parametrize(
    "name, num_classes, cls, output_dim, headline, higher",
    [
        ("binary", 2, BinaryTask, 1, "auroc", True),
        ("multiclass", 4, MulticlassTask, 4, "auroc", True),
        ("regression", 2, RegressionTask, 1, "rmse", False),
        ("survival", 2, SurvivalTask, 1, "c_index", True),
    ],
)
def test_make_task_builds_each_registered_task(name, num_classes, cls, output_dim, headline, higher):
    task = make_task(name, num_classes=num_classes)
    assert isinstance(task, cls) and isinstance(task, Task)
    assert task.name == name and task.output_dim == output_dim
    assert task.headline == headline and task.higher_is_better is higher


def test_registry_holds_exactly_the_four_tasks():
    assert TASKS.names() == ["binary", "multiclass", "regression", "survival"]


def test_make_task_unknown_name_lists_known_ones():
    with pytest.raises(KeyError) as info:
        make_task("survivl")
    message = str(info.value)
    assert "survivl" in message and "Did you mean 'survival'" in message
    for name in TASKS.names():
        assert name in message


@pytest.mark.parametrize(
    "name, kwargs, message",
    [
        ("binary", {"num_classes": 3}, "multiclass"),
        ("multiclass", {"num_classes": 1}, "num_classes >= 2"),
        ("binary", {"pos_weight": 0.0}, "pos_weight"),
    ],
)
def test_invalid_task_arguments_raise(name, kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_task(name, **kwargs)


# ---------------------------------------------------------------------------- Cox loss


COX_CASES = [
    # (eta, time, event): ties among events, between an event and censored, and all-censored
    ([0.3, -1.2, 0.8, 0.1, 2.0, -0.5], [5.0, 3.0, 3.0, 3.0, 1.0, 8.0], [1, 1, 1, 0, 0, 1]),
    ([0.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0], [1, 1, 0, 1]),
    ([1.5, -0.7, 0.2], [1.0, 2.0, 3.0], [1, 0, 1]),
    (
        list(np.random.default_rng(0).normal(size=40)),
        list(np.ceil(np.random.default_rng(1).exponential(3, 40))),  # many tied times
        list(np.random.default_rng(2).integers(0, 2, 40)),
    ),
]


@pytest.mark.parametrize("eta, time, event", COX_CASES)
def test_cox_loss_matches_numpy_breslow(eta, time, event):
    eta_t = torch.tensor(eta, dtype=torch.float64, requires_grad=True)
    loss = cox_partial_likelihood_loss(eta_t, torch.tensor(time), torch.tensor(event, dtype=torch.float64))
    assert loss.item() == pytest.approx(_numpy_cox_breslow(np.array(eta), np.array(time), np.array(event)), rel=1e-10)
    loss.backward()
    assert torch.isfinite(eta_t.grad).all()
    # gradient of the partial likelihood sums to zero: adding a constant to eta changes nothing
    assert eta_t.grad.sum().item() == pytest.approx(0.0, abs=1e-10)


@pytest.mark.parametrize("eta, time, event", COX_CASES[:3])
def test_cox_loss_gradcheck(eta, time, event):
    eta_t = torch.tensor(eta, dtype=torch.float64, requires_grad=True)
    t, e = torch.tensor(time), torch.tensor(event, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda z: cox_partial_likelihood_loss(z, t, e), (eta_t,))


def test_cox_loss_is_permutation_invariant_and_stable():
    eta, time, event = (np.array(a, dtype=float) for a in COX_CASES[0])
    perm = np.random.default_rng(0).permutation(len(eta))
    a = cox_partial_likelihood_loss(torch.tensor(eta), torch.tensor(time), torch.tensor(event))
    b = cox_partial_likelihood_loss(torch.tensor(eta[perm]), torch.tensor(time[perm]), torch.tensor(event[perm]))
    assert a.item() == pytest.approx(b.item())
    # log-risks near float32's exp overflow (exp(100) = inf in float32) stay finite
    big = torch.tensor(eta * 100, dtype=torch.float32, requires_grad=True)
    loss = cox_partial_likelihood_loss(big, torch.tensor(time), torch.tensor(event))
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(big.grad).all()


def test_cox_loss_without_events_is_zero_with_grad():
    outputs = torch.randn(5, 1, requires_grad=True)
    target = torch.tensor([[1.0, 0], [2, 0], [2, 0], [3, 0], [4, 0]])
    loss = SurvivalTask().loss(outputs, target)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(outputs.grad, torch.zeros_like(outputs))


# ---------------------------------------------------------------------------- other losses


def test_binary_loss_pos_weight_matches_weighted_bce():
    logits = torch.tensor([[0.3], [-1.0], [2.0], [0.0]])
    y = torch.tensor([1.0, 0.0, 1.0, 0.0])
    p = torch.sigmoid(logits[:, 0])
    expected = -(3.0 * y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()
    assert BinaryTask(pos_weight=3.0).loss(logits, y).item() == pytest.approx(expected.item(), rel=1e-6)
    assert make_task("binary", pos_weight=3.0).pos_weight == 3.0


@pytest.mark.parametrize("name, pos_weight", [("binary", None), ("binary", 3.0), ("multiclass", None), ("regression", None)])
def test_per_sample_loss_is_each_rows_own_and_averages_to_the_loss(name, pos_weight):
    torch.manual_seed(0)
    task = make_task(name, num_classes=_num_classes(name), **({"pos_weight": pos_weight} if pos_weight else {}))
    x, y = _separable_data(name)
    outputs = torch.nn.Linear(x.shape[1], task.output_dim)(x)
    rows = task.per_sample_loss(outputs, y)
    assert rows.shape == (len(y),)
    torch.testing.assert_close(rows.mean(), task.loss(outputs, y))
    torch.testing.assert_close(rows[3], task.loss(outputs[3:4], y[3:4]))


def test_survival_has_no_per_sample_loss():
    with pytest.raises(ValueError, match="survival.*couples the rows"):
        make_task("survival").per_sample_loss(torch.zeros(4, 1), torch.ones(4, 2))


@pytest.mark.parametrize(
    "name, num_classes, outputs_shape, target",
    [
        ("binary", 2, (4, 2), torch.zeros(4)),
        ("multiclass", 3, (4, 2), torch.zeros(4, dtype=torch.long)),
        ("regression", 2, (4, 1), torch.zeros(5)),
        ("survival", 2, (4, 1), torch.zeros(4)),
    ],
)
def test_loss_rejects_wrong_shapes(name, num_classes, outputs_shape, target):
    with pytest.raises(ValueError, match=name):
        make_task(name, num_classes=num_classes).loss(torch.zeros(outputs_shape), target)


@pytest.mark.parametrize("name", ["binary", "multiclass", "regression", "survival"])
def test_loss_decreases_when_training_a_linear_model(name):
    torch.manual_seed(0)
    task = make_task(name, num_classes=_num_classes(name))
    x, y = _separable_data(name)
    model = torch.nn.Linear(x.shape[1], task.output_dim)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    losses = []
    for _ in range(40):
        opt.zero_grad()
        loss = task.loss(model(x), y)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


@pytest.mark.filterwarnings("ignore:Full backward hook is firing")  # x needs no grad here; harmless
@pytest.mark.parametrize("mode", ["hooks", "functorch"])
@pytest.mark.parametrize("name", ["binary", "multiclass", "regression", "survival"])
def test_loss_works_with_opacus_per_sample_gradients(name, mode):
    opacus = pytest.importorskip("opacus")
    task = make_task(name, num_classes=_num_classes(name))
    x, y = _separable_data(name, n=16)
    model = opacus.GradSampleModule(
        torch.nn.Linear(x.shape[1], task.output_dim),
        batch_first=True,
        loss_reduction="mean",
        force_functorch=mode == "functorch",
    )
    task.loss(model(x), y).backward()
    for p in model.parameters():
        assert p.grad_sample is not None and p.grad_sample.shape == (16, *p.shape)
        assert torch.isfinite(p.grad_sample).all()
        # with loss_reduction="mean" Opacus scales each per-sample gradient by the batch size,
        # so their mean is the batch gradient
        torch.testing.assert_close(p.grad_sample.mean(0), p.grad, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------- scores / metrics


@pytest.mark.parametrize(
    "name, num_classes, expected_shape",
    [("binary", 2, (6,)), ("multiclass", 3, (6, 3)), ("regression", 2, (6,)), ("survival", 2, (6,))],
)
def test_scores_shapes_and_ranges(name, num_classes, expected_shape):
    task = make_task(name, num_classes=num_classes)
    outputs = torch.randn(6, task.output_dim, requires_grad=True) * 5
    s = task.scores(outputs)
    assert isinstance(s, np.ndarray) and s.shape == expected_shape and s.dtype == np.float64
    if name == "binary":
        assert ((s > 0) & (s < 1)).all()
    if name == "multiclass":
        np.testing.assert_allclose(s.sum(1), 1.0, atol=1e-12)
    if name in ("regression", "survival"):
        np.testing.assert_allclose(s, outputs.detach().numpy()[:, 0].astype(np.float64))


@pytest.mark.parametrize("name", ["binary", "multiclass", "regression", "survival"])
def test_headline_fn_agrees_with_metrics_and_bootstraps(name):
    task = make_task(name, num_classes=_num_classes(name))
    x, y = _separable_data(name, n=200)
    torch.manual_seed(0)
    model = torch.nn.Linear(x.shape[1], task.output_dim)
    scores = task.scores(model(x))
    target = y.numpy()
    metrics = task.metrics(target, scores)
    point = task.headline_fn()(target, scores)
    assert point == pytest.approx(metrics[task.headline])
    lo, hi = bootstrap_ci(task.headline_fn(), target, scores, n_boot=50)
    assert lo <= point <= hi and math.isfinite(lo)


def test_survival_metrics_reject_wrong_target_shape():
    with pytest.raises(ValueError, match=r"\[N, 2\]"):
        SurvivalTask().metrics(np.zeros(5), np.zeros(5))
