"""Logit adjustment from a site's own label counts."""

import math

import pytest
import torch

from client.label_skew import label_offsets
from client.settings import TrainSettings
from fusion_models.task import make_task


def test_binary_offset_is_the_sites_log_odds_with_one_pseudo_count_per_class():
    target = torch.tensor([1.0] * 3 + [0.0] * 96)
    offset = label_offsets("logit_adjust", make_task("binary"), target)
    assert offset.shape == (1,) and offset.item() == pytest.approx(math.log(4 / 97))


def test_multiclass_offset_is_the_log_prior_and_a_missing_class_stays_finite():
    target = torch.tensor([0, 0, 0, 1])
    offset = label_offsets("logit_adjust", make_task("multiclass", num_classes=3), target)
    assert offset.tolist() == pytest.approx([math.log(4 / 7), math.log(2 / 7), math.log(1 / 7)])


def test_none_and_tasks_without_classes_have_no_offset():
    assert label_offsets("none", make_task("binary"), torch.tensor([1.0, 0.0])) is None
    assert label_offsets("logit_adjust", make_task("survival"), torch.ones(4, 2)) is None


def test_unknown_mode_names_the_key():
    with pytest.raises(ValueError, match="train.label_skew"):
        TrainSettings(label_skew="focal")


def test_logit_adjustment_changes_the_loss_as_its_formula_says():
    task = make_task("binary")
    logits = torch.tensor([[0.2], [-1.0], [0.5]])
    target = torch.tensor([1.0, 0.0, 0.0])
    offset = label_offsets("logit_adjust", task, torch.tensor([1.0] + [0.0] * 8))
    adjusted = task.loss(logits + offset, target)
    by_hand = torch.nn.functional.binary_cross_entropy_with_logits(logits[:, 0] + math.log(2 / 9), target)
    assert adjusted.item() == pytest.approx(by_hand.item())
