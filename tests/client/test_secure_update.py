"""The secure-aggregation vector layout: the mean of the sites' vectors decodes to exactly
per-module FedAvg, a site that lacks a module adds nothing to it, and a coordinate SecAgg+
would clip is refused by name."""

import numpy as np
import pytest

from client.secure_update import decode_mean, encode_update, secure_layout
from server.strategies.aggregation import aggregate_modules

RNG = np.random.default_rng(0)
GLOBAL = {
    "encoders.image.conv.weight": RNG.normal(size=(4, 3)).astype(np.float32),
    "encoders.image.conv.bias": RNG.normal(size=4).astype(np.float32),
    "encoders.image.norm.num_batches_tracked": np.asarray(7, dtype=np.int64),
    "encoders.tabular.net.weight": RNG.normal(size=(2, 5)).astype(np.float32),
    "fusion.head.weight": RNG.normal(size=(1, 6)).astype(np.float32),
}


def _moved(keys, scale=0.01):
    return {k: (GLOBAL[k] + RNG.normal(scale=scale, size=GLOBAL[k].shape)).astype(GLOBAL[k].dtype) for k in keys}


def test_layout_is_sorted_modules_of_floating_keys_in_model_order():
    assert secure_layout(GLOBAL) == {
        "encoders.image": ["encoders.image.conv.weight", "encoders.image.conv.bias"],
        "encoders.tabular": ["encoders.tabular.net.weight"],
        "fusion": ["fusion.head.weight"],
    }


def test_the_mean_of_the_vectors_decodes_to_per_module_fedavg_with_a_site_lacking_a_module():
    floats = [k for k in GLOBAL if "num_batches" not in k]
    sites = [
        (_moved(floats), {"encoders.image": 30, "encoders.tabular": 40, "fusion": 40}),
        (_moved(floats), {"encoders.image": 5, "encoders.tabular": 25, "fusion": 25}),
        # no images at this site: it sends neither the image encoder nor its count
        (_moved([k for k in floats if "image" not in k]), {"encoders.tabular": 10, "fusion": 10}),
    ]
    scale = 40.0
    vectors = [encode_update(GLOBAL, sent, counts, scale=scale, clipping_range=8.0) for sent, counts in sites]
    assert np.all(vectors[2][0] == 0), "the image block of the site without images is all zeros"
    mean = [np.mean([v[i] for v in vectors], axis=0) for i in range(len(vectors[0]))]
    merged, weights = decode_mean(GLOBAL, mean, min_weight=0.5 / (scale * len(sites)))

    updates = [(sent, {f"num-examples.{m}": n for m, n in counts.items()}) for sent, counts in sites]
    expected = aggregate_modules(GLOBAL, updates)
    for key in floats:
        np.testing.assert_allclose(merged[key], expected[key], rtol=0, atol=1e-6)
    # the hand computation for one key: image weights 30 and 5 only
    key = "encoders.image.conv.bias"
    hand = (30 * sites[0][0][key].astype(np.float64) + 5 * sites[1][0][key]) / 35
    np.testing.assert_allclose(merged[key], hand, atol=1e-6)
    assert weights == pytest.approx({"encoders.image": 35 / 3 / scale, "encoders.tabular": 75 / 3 / scale,
                                     "fusion": 75 / 3 / scale})  # fmt: skip
    assert "encoders.image.norm.num_batches_tracked" not in merged, "integer buffers keep their global value"


def test_a_module_nobody_sent_is_left_out_of_the_decoded_mean():
    sent = _moved(["fusion.head.weight"])
    vectors = encode_update(GLOBAL, sent, {"fusion": 12}, scale=20.0, clipping_range=8.0)
    merged, weights = decode_mean(GLOBAL, vectors, min_weight=0.5 / 20.0)
    assert set(merged) == {"fusion.head.weight"} and set(weights) == {"fusion"}
    np.testing.assert_allclose(merged["fusion.head.weight"], sent["fusion.head.weight"], atol=1e-6)


def test_a_coordinate_secagg_would_clip_is_refused_naming_the_key_and_the_setting():
    sent = _moved([k for k in GLOBAL if "num_batches" not in k])
    sent["encoders.tabular.net.weight"] = GLOBAL["encoders.tabular.net.weight"] + 50.0
    with pytest.raises(ValueError, match=r"encoders\.tabular would be clipped: encoders\.tabular\.net\.weight .*"
                                         r"secure_aggregation\.clipping_range=8"):
        encode_update(GLOBAL, sent, {"encoders.image": 3, "encoders.tabular": 3, "fusion": 3}, scale=3.0,
                      clipping_range=8.0)  # fmt: skip


def test_a_vector_of_the_wrong_length_is_refused():
    vectors = encode_update(GLOBAL, {}, {}, scale=1.0, clipping_range=8.0)
    with pytest.raises(ValueError, match="fusion's vector has 3 values, expected 7"):
        decode_mean(GLOBAL, [*vectors[:2], np.zeros(3)], min_weight=0.1)
