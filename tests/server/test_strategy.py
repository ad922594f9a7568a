import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict

from server.strategy import ModalityAwareFedAvg, aggregate_modules

GLOBAL = {
    "encoders.image.w": np.zeros(2, dtype=np.float32),
    "encoders.tabular.w": np.zeros(2, dtype=np.float32),
    "fusion.w": np.zeros(2, dtype=np.float32),
    "fusion.steps": np.array(0, dtype=np.int64),
}


def _arrays(values: dict[str, float]) -> ArrayRecord:
    return ArrayRecord({k: torch.full((2,), v) for k, v in values.items()})


def test_each_module_is_averaged_over_the_sites_that_trained_it():
    with_images = (_arrays({"encoders.image.w": 1.0, "encoders.tabular.w": 1.0, "fusion.w": 1.0}),
                   MetricRecord({"num-examples": 30, "num-examples.encoders.image": 10, "num-examples.encoders.tabular": 30}))
    without_images = (_arrays({"encoders.tabular.w": 4.0, "fusion.w": 4.0}),
                      MetricRecord({"num-examples": 10, "num-examples.encoders.tabular": 10}))
    merged = aggregate_modules(GLOBAL, [with_images, without_images])
    np.testing.assert_allclose(merged["encoders.image.w"], 1.0)          # only the site with images
    np.testing.assert_allclose(merged["encoders.tabular.w"], (30 * 1 + 10 * 4) / 40)
    np.testing.assert_allclose(merged["fusion.w"], (30 * 1 + 10 * 4) / 40)
    assert merged["fusion.steps"] == 0                                      # nobody sent it: global kept


def test_a_module_weighted_zero_keeps_the_global_value():
    update = (_arrays({"encoders.image.w": 5.0}), MetricRecord({"num-examples": 10, "num-examples.encoders.image": 0}))
    merged = aggregate_modules(GLOBAL, [update])
    np.testing.assert_allclose(merged["encoders.image.w"], 0.0)


def _reply(site: str, arrays: ArrayRecord, n: int) -> Message:
    content = RecordDict({"arrays": arrays, "metrics": MetricRecord({"num-examples": n}), "site": ConfigRecord({"name": site})})
    return Message(content=content, dst_node_id=0, message_type="train")


def test_nonfinite_replies_are_dropped_and_good_ones_recorded(task_identity):
    seen = []
    strategy = ModalityAwareFedAvg(on_site_metrics=lambda r, kind, site, m: seen.append((r, kind, site)))
    strategy._global = {k: v for k, v in GLOBAL.items() if k != "fusion.steps"}
    good = _reply("good", _arrays({"fusion.w": 2.0}), 5)
    bad = _reply("bad", _arrays({"fusion.w": float("nan")}), 5)
    arrays, metrics = strategy.aggregate_train(1, [good, bad])
    np.testing.assert_allclose(arrays["fusion.w"].numpy(), 2.0)
    assert seen == [(1, "train", "good")]


def test_unknown_keys_are_rejected(task_identity):
    strategy = ModalityAwareFedAvg()
    strategy._global = dict(GLOBAL)
    arrays, _ = strategy.aggregate_train(1, [_reply("odd", _arrays({"encoders.audio.w": 1.0}), 5)])
    assert arrays is None


@pytest.mark.parametrize("weights", [(1, 1), (3, 1), (1, 9)])
def test_weighted_mean_matches_numpy(weights):
    ups = [(_arrays({"fusion.w": float(i)}), MetricRecord({"num-examples": w})) for i, w in enumerate(weights)]
    merged = aggregate_modules(GLOBAL, ups)
    np.testing.assert_allclose(merged["fusion.w"], np.average([0.0, 1.0], weights=weights), rtol=1e-6)
