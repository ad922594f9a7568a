"""TabularMLP ("mlp"), with and without the layout's categorical embeddings, and the layout
that server/model_setup.py derives from the feature spec."""

import pandas as pd
import pytest
import torch

from client.features import FeatureSpec, encode_tabular
from fusion_models.encoders import ENCODERS
from fusion_models.encoders.tabular_mlp import check_layout
from server.model_setup import _inputs
from tests.fusion_models.encoders.encoder_checks import (
    check_dp_step,
    check_gradients_reach_every_parameter,
    check_model_masking,
    check_per_sample_grads,
    check_seeded_build_is_deterministic,
    check_validator,
    two_modality_model,
)

# age, bmi: [value, flag]; sex: 2 categories + missing; site: 3 categories + missing.
LAYOUT = [["age", "numeric", 2], ["bmi", "numeric", 2], ["sex", "categorical", 3], ["site", "categorical", 4]]
WIDTH = 11


def tabular_batch(b: int = 4, seed: int = 0) -> torch.Tensor:
    """[b, WIDTH] shaped like encode_tabular's output: values, flags, one-hot blocks."""
    g = torch.Generator().manual_seed(seed)
    flags = (torch.rand(b, 2, generator=g) < 0.3).float()
    values = torch.randn(b, 2, generator=g) * (1 - flags)
    numeric = torch.stack([values[:, 0], flags[:, 0], values[:, 1], flags[:, 1]], dim=1)
    sex = torch.nn.functional.one_hot(torch.randint(0, 3, (b,), generator=g), 3).float()
    site = torch.nn.functional.one_hot(torch.randint(0, 4, (b,), generator=g), 4).float()
    return torch.cat([numeric, sex, site], dim=1)


def _encoder(**kwargs):
    return ENCODERS.get("mlp")(in_features=WIDTH, out_dim=8, hidden=16, **kwargs)


@pytest.mark.parametrize(
    "kwargs, first_width, n_embeddings",
    [
        ({}, WIDTH, 0),
        ({"layout": LAYOUT}, 4 + 2 * 8, 2),
        ({"layout": LAYOUT, "embedding_dim": 3}, 4 + 2 * 3, 2),
        ({"layout": LAYOUT, "embedding_dim": 0}, WIDTH, 0),
        ({"layout": LAYOUT, "embedding_dim": None}, WIDTH, 0),
    ],
)
def test_shapes_with_and_without_embeddings(kwargs, first_width, n_embeddings):
    enc = _encoder(**kwargs)
    assert enc.net[0].in_features == first_width and len(enc.embeddings) == n_embeddings
    assert all(e.bias is None for e in enc.embeddings)
    assert enc(tabular_batch()).shape == (4, 8)


def test_without_layout_it_is_the_plain_mlp():
    torch.manual_seed(0)
    plain = _encoder()
    torch.manual_seed(0)
    ignored = _encoder(layout=LAYOUT, embedding_dim=0)
    assert list(plain.state_dict()) == ["net.0.weight", "net.0.bias", "net.3.weight", "net.3.bias"]
    assert all(torch.equal(a, b) for a, b in zip(plain.state_dict().values(), ignored.state_dict().values()))


def test_a_category_is_an_embedding_lookup():
    enc = _encoder(layout=LAYOUT, embedding_dim=3).eval()
    x = tabular_batch()
    code = x[:, 7:11].argmax(dim=1)  # "site" block
    torch.testing.assert_close(enc.embeddings[1](x[:, 7:11]), enc.embeddings[1].weight.T[code])


@pytest.mark.parametrize(
    "layout, match",
    [
        (LAYOUT[:-1], "sum to 7"),
        ([*LAYOUT[:-1], ["site", "ordinal", 4]], "kind 'ordinal'"),
        ([["age", "numeric", 3], *LAYOUT[1:]], "width 3"),
        ([["age", "numeric"], *LAYOUT[1:]], "not \\[name, kind, width\\]"),
    ],
)
def test_bad_layouts_are_refused_with_the_column(layout, match):
    with pytest.raises(ValueError, match=match):
        _encoder(layout=layout)


def test_layout_from_the_feature_spec_matches_the_encoding():
    spec = FeatureSpec(
        task="binary", classes=["0", "1"], numeric={"zeta": (0.0, 1.0), "age": (50.0, 10.0)},
        categorical={"site": ["a", "b", "c"], "sex": ["f", "m"]}, omics={}, files={}, shapes={}, modalities=["tabular"],
    )  # fmt: skip
    # Sites encode with the spec as it travels (JSON), whose column order is what counts.
    sent = FeatureSpec.from_json(spec.to_json())
    inputs = _inputs("tabular", spec)
    assert inputs["in_features"] == spec.tabular_width == sum(width for _, _, width in inputs["layout"])
    assert [name for name, _, _ in inputs["layout"]] == [*sent.numeric, *sent.categorical]
    rows = pd.DataFrame({"zeta": [1.0, None], "age": [60.0, 40.0], "site": ["c", None], "sex": ["m", "x"]})
    encoded = encode_tabular(rows, sent)
    start = 0
    for name, kind, width in check_layout(inputs["layout"], encoded.shape[1], encoder="mlp"):
        block = encoded[:, start : start + width]
        if kind == "categorical":
            assert (block.sum(axis=1) == 1).all(), name  # exactly one slot, missing included
        start += width
    enc = ENCODERS.get("mlp")(**inputs, out_dim=4)
    assert enc(torch.from_numpy(encoded)).shape == (2, 4)


def test_seeded_build_is_deterministic():
    check_seeded_build_is_deterministic(lambda: _encoder(layout=LAYOUT), tabular_batch())


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_per_sample_gradients(mode):
    check_per_sample_grads(_encoder(layout=LAYOUT), tabular_batch(5), mode=mode, batch_size=5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    # A batch large enough that every category occurs, so every embedding row learns.
    check_gradients_reach_every_parameter(_encoder(layout=LAYOUT, dropout=0.0), tabular_batch(32))


def test_in_a_model_missing_records_are_masked_and_dp_step_works():
    model = two_modality_model("tabular", {"in_features": WIDTH, "layout": LAYOUT}, {"name": "mlp", "hidden": 16})
    check_validator(model)
    x = tabular_batch(4)
    check_model_masking(model, "tabular", x)
    batch = {"tabular": x, "omics": torch.randn(4, 6), "present": torch.ones(4, 2, dtype=torch.bool)}
    check_dp_step(model, batch)
