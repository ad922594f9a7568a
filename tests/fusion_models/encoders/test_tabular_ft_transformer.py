"""FTTransformer ("ft_transformer"): one token per tabular column, [CLS] attention as
explanation, DP-ready."""

import pytest
import torch

from fusion_models.encoders import ENCODERS
from tests.fusion_models.encoders.encoder_checks import (
    check_dp_step,
    check_gradients_reach_every_parameter,
    check_model_masking,
    check_per_sample_grads,
    check_seeded_build_is_deterministic,
    check_validator,
    two_modality_model,
)
from tests.fusion_models.encoders.test_tabular_mlp import LAYOUT, WIDTH, tabular_batch

SMALL = {"d_token": 8, "n_layers": 2, "n_heads": 2}


def _encoder(**kwargs):
    return ENCODERS.get("ft_transformer")(in_features=WIDTH, out_dim=8, **{"layout": LAYOUT, **SMALL, **kwargs})


@pytest.mark.parametrize(
    "kwargs, n_tokens",
    [({}, 4), ({"layout": None}, WIDTH), ({"n_layers": 1, "d_token": 12, "n_heads": 3}, 4), ({"n_layers": 3}, 4)],
)
def test_output_shape_and_feature_attention(kwargs, n_tokens):
    enc = _encoder(**kwargs)
    out = enc(tabular_batch(5))
    assert out.shape == (5, 8) and torch.isfinite(out).all()
    attention = enc.last_explanations["feature_attention"]
    assert attention.shape == (5, n_tokens) and not attention.requires_grad
    assert (attention >= 0).all()
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(5))


def test_one_tokenizer_per_column_and_the_missing_flag_shifts_the_token():
    enc = _encoder().eval()
    assert [t.in_features for t in enc.tokenizers] == [2, 2, 3, 4]
    age = enc.tokenizers[0]
    value, flag = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    # value * w + flag * m + b: the flag adds the learned offset m, whatever the value.
    torch.testing.assert_close(age(flag) - age(value), age.weight[:, 1][None])


@pytest.mark.parametrize(
    "kwargs, match",
    [({"n_heads": 3}, "n_heads"), ({"n_layers": 0}, "n_layers"), ({"layout": LAYOUT[:2]}, "sum to 4")],
)
def test_bad_arguments_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        _encoder(**kwargs)


def test_seeded_build_is_deterministic():
    check_seeded_build_is_deterministic(_encoder, tabular_batch())


@pytest.mark.parametrize("mode", ["hooks", "functorch", "ew"])
def test_per_sample_gradients(mode):
    torch.manual_seed(0)
    check_per_sample_grads(_encoder(), tabular_batch(5), mode=mode, batch_size=5)


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    enc = _encoder(attention_dropout=0.0, ffn_dropout=0.0)
    check_gradients_reach_every_parameter(enc, tabular_batch(32))


def test_in_a_model_missing_records_are_masked_and_dp_step_works():
    encoder = {"name": "ft_transformer", **SMALL}
    model = two_modality_model("tabular", {"in_features": WIDTH, "layout": LAYOUT}, encoder)
    check_validator(model)
    x = tabular_batch(4)
    check_model_masking(model, "tabular", x)
    assert model.explanations()["encoders.tabular.feature_attention"].shape == (4, 4)
    batch = {"tabular": x, "omics": torch.randn(4, 6), "present": torch.ones(4, 2, dtype=torch.bool)}
    check_dp_step(model, batch)
