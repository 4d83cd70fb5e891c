"""Attention sites and head removal on real torchvision ViT and (tiny, random) Hugging Face BERT models."""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from worm_tune.models.vit import PrunedSelfAttention, vit_32
from worm_tune.ticket.attention import (
    ElementSites,
    HeadSites,
    attention_layers,
    count_heads,
    heads_per_layer,
    keep_one_head_per_layer,
)
from worm_tune.ticket.heads import remove_heads
from worm_tune.ticket.masks import global_mask
from worm_tune.ticket.truncation import GradientTruncator

R = 0.003


@dataclass(frozen=True)
class Family:
    """How the tests build, feed and look inside one model family (independently of the code under test)."""

    build: Callable[[], nn.Module]
    inputs: Callable[[], torch.Tensor]
    forward: Callable[[nn.Module, torch.Tensor], torch.Tensor]
    attention_modules: Callable[[nn.Module], list[nn.Module]]
    embed: int
    head_dim: int


def build_vit() -> nn.Module:
    torch.manual_seed(0)
    model = vit_32(10).eval()
    # torchvision zero-initialises the classifier, which would make the output and every other gradient 0.
    nn.init.normal_(model.heads.head.weight, std=0.1)
    return model


def build_bert() -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        vocab_size=50,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
    )
    return transformers.BertForSequenceClassification(cfg).eval()


VIT = Family(
    build=build_vit,
    inputs=lambda: torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1)),
    forward=lambda model, x: model(x),
    attention_modules=lambda model: [block.self_attention for block in model.encoder.layers],
    embed=128,
    head_dim=32,
)
BERT = Family(
    build=build_bert,
    inputs=lambda: torch.randint(0, 50, (2, 12), generator=torch.Generator().manual_seed(1)),
    forward=lambda model, ids: model.bert(input_ids=ids).last_hidden_state,
    attention_modules=lambda model: [layer.attention.self for layer in model.bert.encoder.layer],
    embed=32,
    head_dim=8,
)
FAMILIES = pytest.mark.parametrize("family", [VIT, BERT], ids=["vit", "bert"])


def qkv(family: Family, model: nn.Module, grad: bool = False) -> list[list[torch.Tensor]]:
    """Per layer: query, key, value weights then query, key, value biases (or their gradients), as views."""
    pick = (lambda p: p.grad) if grad else (lambda p: p.detach())
    out = []
    for m in family.attention_modules(model):
        if isinstance(m, nn.MultiheadAttention):
            out.append([*pick(m.in_proj_weight).chunk(3), *pick(m.in_proj_bias).chunk(3)])
        else:
            lins = (m.q, m.k, m.v) if isinstance(m, PrunedSelfAttention) else (m.query, m.key, m.value)
            out.append([pick(lin.weight) for lin in lins] + [pick(lin.bias) for lin in lins])
    return out


def num_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def drop_every_third(n: int) -> torch.Tensor:
    return torch.tensor([i % 3 != 0 for i in range(n)])


def zero_values(family: Family, model: nn.Module, keep: torch.Tensor) -> nn.Module:
    """A copy of ``model`` whose masked heads contribute nothing: their value rows and value bias are 0."""
    ref = copy.deepcopy(model)
    offset = 0
    with torch.no_grad():
        for _, _, v, _, _, vb in qkv(family, ref):
            heads = v.shape[0] // family.head_dim
            rows = (~keep[offset : offset + heads]).repeat_interleave(family.head_dim)
            offset += heads
            v[rows] = 0
            vb[rows] = 0
    return ref


def test_vit_32_has_the_documented_shape() -> None:
    model = build_vit()
    assert model.image_size == 32 and model.patch_size == 4 and model.hidden_dim == 128
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
    assert [layer.name for layer in attention_layers(model)] == [
        f"encoder.layers.encoder_layer_{i}.self_attention" for i in range(4)
    ]


def test_bert_layers_are_the_attention_blocks() -> None:
    layers = attention_layers(build_bert())
    assert [layer.name for layer in layers] == [f"bert.encoder.layer.{i}.attention" for i in range(2)]
    assert heads_per_layer(layers) == [4, 4] and {layer.head_dim for layer in layers} == {8}


def test_a_model_without_attention_is_rejected() -> None:
    with pytest.raises(ValueError, match="no attention layers"):
        attention_layers(nn.Sequential(nn.Linear(4, 4), nn.ReLU()))


@FAMILIES
def test_element_scores_are_query_then_key_magnitudes(family: Family) -> None:
    model = family.build()
    sites = ElementSites(attention_layers(model))
    expected = torch.cat([w.abs().flatten() for q, k, *_ in qkv(family, model) for w in (q, k)])
    assert sites.unit == "weight"
    assert sites.num_units == len(qkv(family, model)) * 2 * family.embed**2
    assert torch.equal(sites.scores(), expected)
    assert int(global_mask(sites.scores(), 0.5).sum()) == sites.num_units // 2


@FAMILIES
def test_head_scores_are_the_norms_of_each_heads_query_and_key_rows(family: Family) -> None:
    model = family.build()
    d = family.head_dim
    expected = [
        torch.sqrt(
            torch.linalg.matrix_norm(q[h * d : (h + 1) * d]) ** 2
            + torch.linalg.matrix_norm(k[h * d : (h + 1) * d]) ** 2
        )
        for q, k, *_ in qkv(family, model)
        for h in range(q.shape[0] // d)
    ]
    sites = HeadSites(attention_layers(model))
    assert sites.unit == "head" and sites.num_units == count_heads(model) == len(expected)
    torch.testing.assert_close(sites.scores(), torch.stack(expected))


@FAMILIES
@pytest.mark.parametrize("pruned", [False, True], ids=["dense", "pruned"])
@pytest.mark.parametrize("sites_cls", [ElementSites, HeadSites])
def test_truncation_scales_exactly_the_masked_query_and_key_gradients(
    family: Family, pruned: bool, sites_cls: type[ElementSites] | type[HeadSites]
) -> None:
    model = family.build()
    if pruned:
        remove_heads(model, drop_every_third(count_heads(model)))
    sites = sites_cls(attention_layers(model))
    family.forward(model, family.inputs()).square().mean().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    before = [[g.clone() for g in layer] for layer in qkv(family, model, grad=True)]
    keep = torch.rand(sites.num_units, generator=torch.Generator().manual_seed(2)) < 0.5

    truncator = GradientTruncator(sites)
    truncator.set(keep, R)
    truncator.apply()

    offset = 0
    for (q0, k0, v0, qb0, kb0, vb0), (q, k, v, qb, kb, vb) in zip(before, qkv(family, model, grad=True), strict=True):
        if sites_cls is ElementSites:
            q_keep = keep[offset : offset + q0.numel()].view(q0.shape)
            k_keep = keep[offset + q0.numel() : offset + 2 * q0.numel()].view(k0.shape)
            offset += 2 * q0.numel()
            assert torch.equal(qb, qb0) and torch.equal(kb, kb0)  # biases are not units
        else:
            heads = q0.shape[0] // family.head_dim
            q_keep = k_keep = keep[offset : offset + heads].repeat_interleave(family.head_dim).unsqueeze(1)
            offset += heads
            torch.testing.assert_close(qb, torch.where(q_keep[:, 0], qb0, R * qb0), rtol=0, atol=0)
            torch.testing.assert_close(kb, torch.where(k_keep[:, 0], kb0, R * kb0), rtol=0, atol=0)
        torch.testing.assert_close(q, torch.where(q_keep, q0, R * q0), rtol=0, atol=0)
        torch.testing.assert_close(k, torch.where(k_keep, k0, R * k0), rtol=0, atol=0)
        assert torch.equal(v, v0) and torch.equal(vb, vb0)
    assert offset == keep.numel() and (~keep).any()
    assert all(g.abs().sum() > 0 for layer in before for g in layer[:3])  # the test sees real gradients
    touched = {id(p) for p, _ in sites.scales(keep, R)}
    for name, p in model.named_parameters():
        if id(p) not in touched and p.grad is not None:
            assert torch.equal(p.grad, grads[name]), name


def test_sites_reject_a_mask_of_the_wrong_size() -> None:
    layers = attention_layers(build_vit())
    for sites in (ElementSites(layers), HeadSites(layers)):
        with pytest.raises(ValueError, match="mask has 3 entries"):
            sites.scales(torch.ones(3, dtype=torch.bool), R)


def test_keep_one_head_per_layer_revives_the_best_head_of_an_emptied_layer() -> None:
    keep = torch.tensor([False, False, False, True, False, True, False])
    scores = torch.tensor([0.1, 0.5, 0.5, 0.9, 0.2, 0.3, 0.4])
    fixed = keep_one_head_per_layer(keep, scores, [3, 2, 2])
    # Layer 0 ties between heads 1 and 2 (the lower wins); layers 1 and 2 already keep a head.
    assert fixed.tolist() == [False, True, False, True, False, True, False]
    assert keep.tolist() == [False, False, False, True, False, True, False]  # input untouched
    with pytest.raises(ValueError, match="7 heads"):
        keep_one_head_per_layer(keep[:-1], scores[:-1], [3, 2, 2])


@FAMILIES
def test_remove_heads_matches_zeroed_values_and_can_be_repeated(family: Family) -> None:
    model = family.build()
    x = family.inputs()
    per_head = 4 * family.head_dim * family.embed + 3 * family.head_dim  # q, k, v rows + biases, out columns
    for keep_fn in (drop_every_third, lambda n: torch.arange(n) != 1):  # the second pass prunes the pruned model
        heads = count_heads(model)
        keep = keep_fn(heads)
        ref = zero_values(family, model, keep)
        with torch.no_grad():
            assert not torch.allclose(family.forward(model, x), family.forward(ref, x), atol=1e-3)  # heads matter
        expected_params = num_params(model) - int((~keep).sum()) * per_head
        remove_heads(model, keep)
        assert count_heads(model) == int(keep.sum())
        assert num_params(model) == expected_params
        with torch.no_grad():
            out, ref_out = family.forward(model, x), family.forward(ref, x)
        assert out.shape == ref_out.shape
        torch.testing.assert_close(out, ref_out, atol=1e-5, rtol=1e-5)
    if family is VIT:
        assert all(isinstance(m, PrunedSelfAttention) for m in family.attention_modules(model))


def test_remove_heads_is_deterministic_and_draws_no_random_numbers() -> None:
    a, b = build_vit(), build_vit()
    keep = drop_every_third(count_heads(a))
    rng = torch.get_rng_state()
    remove_heads(a, keep)
    assert torch.equal(torch.get_rng_state(), rng)
    remove_heads(b, keep)
    assert str(a) == str(b)
    assert all(torch.equal(a.state_dict()[k], v) for k, v in b.state_dict().items())
    assert a.state_dict().keys() == b.state_dict().keys()


@FAMILIES
def test_remove_heads_rejects_bad_masks_and_leaves_the_model_alone(family: Family) -> None:
    model = family.build()
    heads = count_heads(model)
    with pytest.raises(ValueError, match=f"attention layers have {heads} heads"):
        remove_heads(model, torch.ones(heads + 1, dtype=torch.bool))
    keep = torch.ones(heads, dtype=torch.bool)
    keep[-4:] = False  # the whole last layer
    with pytest.raises(ValueError, match="every head"):
        remove_heads(model, keep)
    assert count_heads(model) == heads


class SeqFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(16, 4, batch_first=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(x, x, x, need_weights=False)[0]


def test_remove_heads_keeps_sequence_first_attention_sequence_first() -> None:
    torch.manual_seed(0)
    model = SeqFirst().eval()
    keep = torch.tensor([True, False, True, False])
    ref = copy.deepcopy(model)
    with torch.no_grad():
        ref.attn.in_proj_weight[32 + 4 : 32 + 8] = 0
        ref.attn.in_proj_weight[32 + 12 :] = 0
        ref.attn.in_proj_bias[32 + 4 : 32 + 8] = 0
        ref.attn.in_proj_bias[32 + 12 :] = 0
    remove_heads(model, keep)
    x = torch.randn(5, 3, 16)  # [T, N, E]
    with torch.no_grad():
        torch.testing.assert_close(model(x), ref(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(NotImplementedError):
        model.attn(x, x, x, need_weights=True)
