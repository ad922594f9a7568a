"""Model selection on validation splits: which snapshot is kept, when it is scored, and that
the fine-tuning and the baselines keep what the rule says."""

import copy
import math

import numpy as np
import pytest
import torch

from client.data import load_site_dataset
from client.manifest import read_manifest
from client.model_selection import BestSnapshot, validation_metrics
from client.personalization import personalize
from client.settings import PersonalizationSettings, TrainSettings
from client.train import evaluate, train_local
from fusion_models.model import build_model
from fusion_models.task import make_task
from simulation.baselines import train_local_only
from tests.client.test_app import _setup

CPU = torch.device("cpu")


def _linear(value: float) -> torch.nn.Module:
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(value)
    return model


def test_the_best_mean_headline_is_kept_ties_keep_the_earlier_and_unscored_splits_are_left_out():
    best = BestSnapshot(make_task("binary"))
    offers = [
        (1.0, {"a": {"auroc": 0.6}, "b": {"auroc": 0.8}}),  # mean 0.7
        (2.0, {"a": {"auroc": 0.9}, "b": {"auroc": math.nan}}),  # 0.9 from a alone
        (3.0, {"a": {"auroc": 0.9}, "b": {}}),  # a tie with the earlier: not kept
        (4.0, {"a": {"auroc": math.nan}}),  # nothing to score: not kept
        (5.0, {"a": {"auroc": 0.85}}),
    ]
    kept = [best.offer(_linear(w), metrics, index) for index, (w, metrics) in enumerate(offers)]
    assert kept == [True, True, False, False, False]
    model = _linear(0.0)
    assert best.restore(model) == 1 and best.score == pytest.approx(0.9)
    assert model.weight.item() == 2.0


def test_a_lower_is_better_headline_keeps_the_lowest_and_nothing_scored_leaves_the_model():
    best = BestSnapshot(make_task("regression"))
    for index, (w, rmse) in enumerate([(1.0, 3.0), (2.0, 1.5), (3.0, 2.0)]):
        best.offer(_linear(w), {"site": {"rmse": rmse}}, index)
    model = _linear(0.0)
    assert best.restore(model) == 1 and model.weight.item() == 2.0
    nothing = BestSnapshot(make_task("binary"))
    nothing.offer(_linear(7.0), {"a": {"auroc": math.nan}}, 0)
    assert nothing.restore(model) is None and model.weight.item() == 2.0


def test_the_kept_copy_is_not_changed_by_training_after_it():
    best, model = BestSnapshot(make_task("binary")), _linear(1.0)
    best.offer(model, {"a": {"auroc": 0.7}}, 0)
    with torch.no_grad():
        model.weight.fill_(5.0)
    best.restore(model)
    assert model.weight.item() == 1.0


def _site(tmp_path, n=60):
    manifest, _, features, spec = _setup(tmp_path, n=n, with_splits=True)
    site = read_manifest(manifest)
    return {s: load_site_dataset(site, features, split=s) for s in ("train", "val")}, spec


def test_after_pass_runs_after_every_full_pass_and_the_last_step_and_leaves_training_as_it_was(tmp_path, task_identity):
    data, spec = _site(tmp_path)
    settings = TrainSettings(epochs=2.5, batch_size=8, lr=1e-2)
    passes = math.ceil(len(data["train"]) / 8)
    plain, hooked = build_model(spec, seed=0), build_model(spec, seed=0)
    train_local(plain, data["train"], make_task("binary"), settings, seed=0, device=CPU)
    calls: list[int] = []

    def after_pass(steps_done: int) -> None:
        calls.append(steps_done)
        validation_metrics(hooked, {"val": data["val"]}, make_task("binary"), device=CPU)

    train_local(hooked, data["train"], make_task("binary"), settings, seed=0, device=CPU, after_pass=after_pass)
    assert calls == [passes, 2 * passes, math.ceil(2.5 * passes)]
    for a, b in zip(plain.state_dict().values(), hooked.state_dict().values()):
        assert torch.equal(a, b), "scoring between passes changed the training"


def test_finetune_with_best_val_keeps_the_pass_that_scores_best_on_validation(tmp_path, task_identity):
    data, spec = _site(tmp_path)
    task, train = make_task("binary"), TrainSettings(epochs=1.0, batch_size=8, lr=3e-2, weight_decay=0.0)
    start = build_model(spec, seed=1)
    scores: dict[int, float] = {0: evaluate(start, data["val"], task, device=CPU)["auroc"]}
    probe = copy.deepcopy(start)
    # The same fine-tuning, scored after every pass by hand.
    from client.round import train_round

    train_round(probe, data["train"], task, TrainSettings(epochs=4.0, batch_size=8, lr=3e-2, weight_decay=0.0), seed=5,
                device=CPU, after_pass=lambda steps: scores.__setitem__(steps, evaluate(probe, data["val"], task,
                                                                                        device=CPU)["auroc"]))  # fmt: skip
    assert len(set(np.round(list(scores.values()), 6))) > 1, "the passes should score differently for this test to mean anything"
    settings = PersonalizationSettings(name="finetune", epochs=4.0, min_train_positives=0, select="best_val")
    kept, steps, note = personalize(start, data["train"], task, train, settings, seed=5, device=CPU, val_set=data["val"])
    best_steps = max(scores, key=lambda s: (scores[s], -s))  # the best, the earliest among ties
    assert best_steps != max(scores), "the last pass should not be the best for this test to mean anything"
    assert steps == max(scores)
    assert evaluate(kept, data["val"], task, device=CPU)["auroc"] == pytest.approx(scores[best_steps])
    assert note.startswith("select=best_val: kept ")
    assert ("the global model" in note) == (best_steps == 0)
    last, _, last_note = personalize(start, data["train"], task, train, PersonalizationSettings(
        name="finetune", epochs=4.0, min_train_positives=0), seed=5, device=CPU)  # fmt: skip
    assert last_note == "" and evaluate(last, data["val"], task, device=CPU)["auroc"] == pytest.approx(scores[max(scores)])
    with pytest.raises(ValueError, match="validation split"):
        personalize(start, data["train"], task, train, settings, seed=5, device=CPU)


def test_the_local_only_baseline_with_best_val_keeps_its_best_round(tmp_path, task_identity):
    data, spec = _site(tmp_path)
    task, train = make_task("binary"), TrainSettings(epochs=1.0, batch_size=8, lr=3e-2)
    logged: dict[int, float] = {}
    trained = train_local_only({"a": data["train"]}, {"a": data["val"]}, spec, task, train, rounds=4, seed=0, device=CPU,
                               on_round=lambda r, site, m: logged.__setitem__(r, m["auroc"]),
                               select="best_val")  # fmt: skip
    model, steps = trained["a"]
    assert max(logged, key=logged.get) != 4, "the last round should not be the best for this test to mean anything"
    assert evaluate(model, data["val"], task, device=CPU)["auroc"] == pytest.approx(max(logged.values()))
    assert steps == 4 * math.ceil(len(data["train"]) / 8), "every round was trained; only the kept weights differ"


def test_select_names_its_choices_and_refuses_the_personalisations_it_does_not_apply_to():
    with pytest.raises(ValueError, match="personalization.select: unknown 'best'"):
        PersonalizationSettings(name="finetune", select="best")
    with pytest.raises(ValueError, match="fedper keeps its last weights"):
        PersonalizationSettings(name="fedper", select="best_val")
    assert PersonalizationSettings(name="none", select="best_val").select == "best_val"
