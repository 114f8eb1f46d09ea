"""The counting engine against hand arithmetic, on both engines and under every convention."""
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from hrvit_bench import counting
from hrvit_bench.conventions import ALL_CONVENTIONS, CONVENTION_NAMES, Convention, parse_conventions
from hrvit_bench.counting.formulas import einsum_macs
from hrvit_bench.errors import UsageError

from toy import TOY_PARAMS, TOY_UNUSED, ToyNet, toy_macs

ENGINES = ["meta", "fvcore"]


class Attention(nn.Module):
    """q@k^T and attn@v written out, or through SDPA, or through einsum: the same MACs."""

    def __init__(self, form: str):
        super().__init__()
        self.form = form

    def forward(self, q, k, v):
        if self.form == "sdpa":
            return F.scaled_dot_product_attention(q, k, v)
        if self.form == "einsum":
            attn = torch.einsum("bhnd,bhmd->bhnm", q, k).softmax(-1)
            return torch.einsum("bhnm,bhmd->bhnd", attn, v)
        return (q @ k.transpose(-2, -1)).softmax(-1) @ v


class Inputs(nn.Module):
    """Wraps a module of several inputs so the engines can feed it one tensor."""

    def __init__(self, inner, split):
        super().__init__()
        self.inner, self.split = inner, split

    def forward(self, x):
        return self.inner(*self.split(x))


@pytest.mark.parametrize("engine", ENGINES)
def test_toy_model_every_convention(engine):
    count = counting.count(ToyNet(), (2, 3, 32, 48), engine=engine)
    expected = toy_macs(2, 32, 48)
    assert count.by_operator == expected
    assert count.params == TOY_PARAMS
    assert count.unused_params == TOY_UNUSED
    assert count.uncalled_modules == ["never_called"]
    all_macs = sum(expected.values())
    gemm_macs = expected["conv"] + expected["linear"]
    for c in ALL_CONVENTIONS:
        macs = all_macs if c.ops == "all" else gemm_macs
        raw = macs * (2 if c.unit == "flops" else 1)
        assert count.total(c) == raw
        assert count.conventions([c])[c.name]["giga"] == pytest.approx(raw / (1e9 if c.giga == "1e9" else 2**30))


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("groups", [1, 4, 16])
def test_conv_and_depthwise_conv(engine, groups):
    conv = nn.Conv2d(16, 32, 5, stride=2, padding=2, groups=groups)
    count = counting.count(conv, (3, 16, 20, 14), engine=engine)
    # Each output element (3 x 32 x 10 x 7) reads 16/groups input channels x 5 x 5 taps.
    assert count.total() == 3 * 32 * 10 * 7 * (16 // groups) * 25


@pytest.mark.parametrize("engine", ENGINES)
def test_linear_on_tokens(engine):
    count = counting.count(nn.Sequential(nn.Flatten(2), nn.Linear(9, 5)), (2, 4, 3, 3), engine=engine)
    assert count.by_operator == {"linear": 2 * 4 * 9 * 5}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("form", ["explicit", "sdpa", "einsum"])
def test_attention_forms_count_the_same(engine, form):
    b, heads, n, d = 2, 3, 49, 16
    split = lambda x: (x[:, :heads], x[:, heads : 2 * heads], x[:, 2 * heads :])  # noqa: E731
    count = counting.count(Inputs(Attention(form), split), (b, 3 * heads, n, d), engine=engine)
    assert count.total() == 2 * b * heads * n * n * d  # q@k^T and attn@v


@pytest.mark.parametrize("engine", ENGINES)
def test_matmul_with_a_weight(engine):
    class MatMul(nn.Module):
        def __init__(self):
            super().__init__()
            self.w = nn.Parameter(torch.zeros(7, 11))

        def forward(self, x):
            return x @ self.w

    assert counting.count(MatMul(), (2, 5, 7), engine=engine).by_operator == {"matmul": 2 * 5 * 7 * 11}


def test_einsum_is_exact_where_fvcore_rounds():
    # fvcore's own einsum handle reads np.einsum_path's text (4 significant digits): 131,050 here.
    assert einsum_macs("bhnd,bhmd->bhnm", [[2, 2, 64, 16], [2, 2, 64, 16]]) == 2 * 2 * 64 * 64 * 16


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(2, 9), min_size=5, max_size=5))  # size 1: torch multiplies, no bmm
def test_einsum_rule_against_torchs_own_matrix_products(sizes):
    # An independent count: torch's FlopCounterMode sees the bmm calls torch.einsum really makes (2 FLOPs per MAC),
    # contracting left to right as torch does without opt_einsum.
    from torch.utils.flop_counter import FlopCounterMode

    b, i, j, k, l = sizes
    cases = {"ij,jk->ik": [[i, j], [j, k]], "ij,jk,kl->il": [[i, j], [j, k], [k, l]],
             "bij,bjk->bik": [[b, i, j], [b, j, k]], "bhnd,bhmd->bhnm": [[b, 2, i, j], [b, 2, k, j]]}
    with torch.backends.opt_einsum.flags(enabled=False):
        for equation, shapes in cases.items():
            with FlopCounterMode(display=False) as counter:
                torch.einsum(equation, *[torch.randn(s) for s in shapes])
            assert einsum_macs(equation, shapes) == counter.get_total_flops() // 2, equation


@settings(max_examples=15, deadline=None)
@given(
    cin=st.integers(1, 6), cout_mult=st.integers(1, 4), k=st.sampled_from([1, 3, 5]), stride=st.integers(1, 3),
    h=st.integers(5, 24), w=st.integers(5, 24), depthwise=st.booleans(),
)
def test_conv_rule_property(cin, cout_mult, k, stride, h, w, depthwise):
    cout = cin * cout_mult
    groups = cin if depthwise else 1
    conv = nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, groups=groups)
    ho, wo = (h + 2 * (k // 2) - k) // stride + 1, (w + 2 * (k // 2) - k) // stride + 1
    expected = cout * (cin // groups) * k * k * ho * wo
    assert counting.count(conv, (1, cin, h, w), engine="meta").total() == expected


@pytest.mark.parametrize("engine", ENGINES)
def test_norms_and_resizes_are_all_ops_only(engine):
    class NormsAndResizes(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm(6)
            self.gn = nn.GroupNorm(2, 4)

        def forward(self, x):  # x: (1, 4, 5, 6)
            y = self.ln(x) + self.gn(x)
            return F.interpolate(y, scale_factor=2, mode="bilinear"), F.interpolate(y, size=(7, 7))

    count = counting.count(NormsAndResizes(), (1, 4, 5, 6), engine=engine)
    numel = 4 * 5 * 6
    assert count.by_operator == {
        "layer_norm": 5 * numel,
        "group_norm": 5 * numel,
        "upsample_bilinear2d": 4 * 4 * 10 * 12,
        "upsample_nearest2d": 4 * 7 * 7,
    }
    assert count.total(Convention(ops="gemm")) == 0


def test_module_breakdown_rolls_up_like_fvcore():
    count = counting.count(nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 1)), nn.Conv2d(4, 2, 1)), (1, 3, 4, 4))
    assert count.module_totals(depth=2) == {"": 3 * 4 * 16 + 4 * 2 * 16, "0": 3 * 4 * 16, "0.0": 3 * 4 * 16, "1": 4 * 2 * 16}
    assert count.module_totals(depth=0) == {"": 3 * 4 * 16 + 4 * 2 * 16}


def test_convention_names_parse_and_reject():
    assert len(CONVENTION_NAMES) == 8
    assert Convention.parse("flops-gemm-2^30") == Convention("flops", "gemm", "2^30")
    assert parse_conventions(None) == ALL_CONVENTIONS
    with pytest.raises(UsageError, match="macs-all-1e9"):
        Convention.parse("gflops")


def test_meta_engine_leaves_the_callers_model_alone():
    net = ToyNet()
    counting.count(net, (1, 3, 8, 8), engine="meta")
    assert all(not p.is_meta for p in net.parameters())
    assert math.isfinite(float(net(torch.zeros(1, 3, 8, 8)).sum().detach()))


@pytest.mark.parametrize("engine", ENGINES)
def test_weights_used_without_calling_their_module_are_not_unused(engine):
    class SplitProduct(nn.Module):
        """Reads fc's weight in two halves (as fused kernels do) and never calls fc itself."""

        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.spare = nn.Linear(2, 2)

        def forward(self, x):
            top, bottom = self.fc.weight.split(3)
            return torch.cat([F.linear(x, top), F.linear(x, bottom)], -1) + self.fc.bias

    count = counting.count(SplitProduct(), (5, 4), engine=engine)
    assert count.unused_params == 2 * 2 + 2
    assert count.unused_parameter_names == ["spare.bias", "spare.weight"]
    assert count.uncalled_modules == ["fc", "spare"]  # fvcore's notion, kept for comparison
    assert count.by_operator == {"linear": 2 * 5 * 4 * 3}
