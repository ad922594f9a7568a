import pytest
import torch

from fusion_models.attention import MaskedAttention, masked_softmax


def test_masked_softmax_zeroes_disallowed_entries_and_empty_rows():
    scores = torch.randn(3, 4, requires_grad=True)
    allowed = torch.tensor([[True, True, False, True], [False, False, False, False], [False, True, False, False]])
    weights = masked_softmax(scores, allowed)
    assert torch.isfinite(weights).all()
    torch.testing.assert_close(weights.sum(dim=1), torch.tensor([1.0, 0.0, 1.0]))
    assert (weights[~allowed] == 0).all()
    torch.testing.assert_close(weights[2], torch.tensor([0.0, 1.0, 0.0, 0.0]))
    (weights * torch.randn(3, 4)).sum().backward()
    assert torch.isfinite(scores.grad).all()
    assert (scores.grad[1] == 0).all()


def test_attention_ignores_disallowed_keys():
    torch.manual_seed(0)
    attention = MaskedAttention(8, heads=2).eval()
    query, context = torch.randn(2, 3, 8), torch.randn(2, 5, 8)
    allowed = torch.ones(2, 3, 5, dtype=torch.bool)
    allowed[:, :, 3:] = False
    out, weights = attention(query, context, allowed)
    assert out.shape == (2, 3, 8) and weights.shape == (2, 2, 3, 5)
    changed = context.clone()
    changed[:, 3:] = 1e3 * torch.randn(2, 2, 8)
    torch.testing.assert_close(attention(query, changed, allowed)[0], out)


def test_attention_checks_its_mask_and_heads():
    with pytest.raises(ValueError, match="divide"):
        MaskedAttention(8, heads=3)
    with pytest.raises(ValueError, match="expected"):
        MaskedAttention(8, heads=2)(torch.randn(2, 3, 8), torch.randn(2, 4, 8), torch.ones(2, 3, 3, dtype=torch.bool))
