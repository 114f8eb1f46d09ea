"""Edge cases the zoo never meets, counted by hand on both engines, or refused loudly (issue 9).

Keyword arguments, nn.MultiheadAttention, recurrent layers, broadcast matmuls, baddbmm, einsum with an ellipsis;
calls the meta engine cannot run (it falls back to fvcore on real tensors, with a note); the coverage every count
carries, and `flops --strict`."""
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from typer.testing import CliRunner

import hrvit_bench_models as models
from hrvit_bench import counting
from hrvit_bench.cli import app
from hrvit_bench.conventions import Convention
from hrvit_bench.counting import CountingError, NeedsRealTensors, rules
from hrvit_bench.counting.formulas import einsum_macs, matmul_macs
from hrvit_bench.crosscheck import plain_fvcore_note
from hrvit_bench.errors import UsageError

ENGINES = ["meta", "fvcore"]
GEMM = Convention("macs", "gemm", "1e9")


class Call(nn.Module):
    """forward(x) = fn(self, x), with parameters of the given shapes as p0, p1, ..."""

    def __init__(self, fn, *shapes):
        super().__init__()
        self.fn = fn
        for i, shape in enumerate(shapes):
            self.register_parameter(f"p{i}", nn.Parameter(torch.zeros(shape)))

    def forward(self, x):
        return self.fn(self, x)


# --------------------------------------------------------------------------------------------------------------
# Keyword arguments: x is (2, 3, 8) unless said otherwise.

KEYWORD_CASES = {
    # (2*3 rows) x 8 in x 5 out
    "linear weight=": (lambda m, x: F.linear(x, weight=m.p0), [(5, 8)], (2, 3, 8), {"linear": 2 * 3 * 8 * 5}),
    "linear all keywords": (lambda m, x: F.linear(input=x, weight=m.p0, bias=m.p1), [(5, 8), (5,)], (2, 3, 8),
                            {"linear": 2 * 3 * 8 * 5}),
    # output 2 x 4 x 6 x 6 (padding 1), each reading 3 channels x 3 x 3 taps
    "conv2d weight=": (lambda m, x: F.conv2d(x, weight=m.p0, padding=1), [(4, 3, 3, 3)], (2, 3, 6, 6),
                       {"conv": 2 * 4 * 6 * 6 * 3 * 9}),
    "conv2d all keywords": (lambda m, x: F.conv2d(input=x, weight=m.p0, bias=None, stride=2), [(4, 3, 3, 3)],
                            (2, 3, 7, 7), {"conv": 2 * 4 * 3 * 3 * 3 * 9}),
    # transposed: fvcore counts per input position: 2 x (3 x 4 x 2 x 2 weights) x 5 x 5 inputs
    "conv_transpose2d weight=": (lambda m, x: F.conv_transpose2d(x, weight=m.p0, stride=2), [(3, 4, 2, 2)],
                                 (2, 3, 5, 5), {"conv": 2 * 3 * 4 * 4 * 25}),
    "conv1d input=": (lambda m, x: F.conv1d(input=x, weight=m.p0), [(4, 3, 3)], (2, 3, 10),
                      {"conv": 2 * 4 * 8 * 3 * 3}),
    "matmul other=": (lambda m, x: torch.matmul(x, other=m.p0), [(8, 5)], (2, 3, 8), {"matmul": 2 * 3 * 8 * 5}),
    "matmul all keywords": (lambda m, x: torch.matmul(input=x, other=m.p0), [(8, 5)], (2, 3, 8),
                            {"matmul": 2 * 3 * 8 * 5}),
    "Tensor.matmul other=": (lambda m, x: x.matmul(other=m.p0), [(8, 5)], (2, 3, 8), {"matmul": 2 * 3 * 8 * 5}),
    "mm mat2=": (lambda m, x: torch.mm(x, mat2=m.p0), [(8, 5)], (3, 8), {"mm": 3 * 8 * 5}),
    "addmm mat1= mat2=": (lambda m, x: torch.addmm(m.p1, mat1=x, mat2=m.p0), [(8, 5), (5,)], (3, 8),
                          {"addmm": 3 * 8 * 5}),
    "bmm mat2=": (lambda m, x: torch.bmm(x, mat2=m.p0), [(2, 8, 5)], (2, 3, 8), {"bmm": 2 * 3 * 8 * 5}),
    "baddbmm batch1= batch2=": (lambda m, x: torch.baddbmm(m.p1, batch1=x, batch2=m.p0), [(2, 8, 5), (5,)],
                                (2, 3, 8), {"baddbmm": 2 * 3 * 8 * 5}),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(KEYWORD_CASES))
def test_calls_with_keyword_arguments_count(engine, case):
    fn, shapes, input_shape, expected = KEYWORD_CASES[case]
    count = counting.count(Call(fn, *shapes), input_shape, engine=engine)
    assert count.by_operator == expected
    assert count.total(GEMM) == sum(expected.values())
    assert count.engine == engine and not count.notes


# --------------------------------------------------------------------------------------------------------------
# nn.MultiheadAttention: q, k, v in-projections, q k^T, attn v, out-projection.


class Attend(nn.Module):
    """Self-attention over the input (batch first), or cross-attention (sequence first) whose keys and values are
    the first ``source`` positions of the input cut to the key and value widths."""

    def __init__(self, mha: nn.MultiheadAttention, need_weights=False, masked=False, source=None):
        super().__init__()
        self.mha, self.need_weights, self.masked, self.source = mha, need_weights, masked, source

    def forward(self, x):
        if self.source is None:
            k = v = x
        else:
            k, v = x[: self.source, :, : self.mha.kdim], x[: self.source, :, : self.mha.vdim]
        mask = torch.zeros(x.shape[1], x.shape[1], device=x.device) if self.masked else None
        return self.mha(x, k, v, need_weights=self.need_weights, attn_mask=mask)[0]


N, L, E, HEADS = 2, 9, 16, 4


def _self_attention(need_weights):
    projections = N * L * E * (3 * E) + N * L * E * E  # q, k, v in; out
    product = N * HEADS * L * L * (E // HEADS)  # q k^T, and again attn v
    attention = {"bmm": 2 * product} if need_weights else {"scaled_dot_product_attention": 2 * product}
    return {"linear": projections, **attention}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_self_attention(engine, need_weights):
    mha = nn.MultiheadAttention(E, HEADS, batch_first=True)
    count = counting.count(Attend(mha, need_weights), (N, L, E), engine=engine)
    assert count.by_operator == _self_attention(need_weights)
    assert count.total() == 18432 + 5184  # the sums above, written out once
    assert count.coverage.complete


@pytest.mark.parametrize("engine", ENGINES)
def test_multihead_attention_with_a_mask_goes_through_baddbmm(engine):
    count = counting.count(Attend(nn.MultiheadAttention(E, HEADS, batch_first=True), True, True), (N, L, E),
                       engine=engine)
    product = N * L * L * E
    assert count.by_operator == {"linear": N * L * E * 4 * E, "baddbmm": product, "bmm": product}


@pytest.mark.parametrize("engine", ENGINES)
def test_multihead_cross_attention_with_other_key_and_value_sizes(engine):
    source, kdim, vdim = 5, 6, 10
    mha = nn.MultiheadAttention(E, HEADS, kdim=kdim, vdim=vdim, add_bias_kv=True)  # sequence first
    count = counting.count(Attend(mha, source=source), (L, N, E), engine=engine)  # L queries, batch N
    projections = N * (L * E * E + source * kdim * E + source * vdim * E + L * E * E)  # q, k, v in; out
    attended = source + 1  # bias_k adds one key
    assert count.by_operator == {"linear": projections, "scaled_dot_product_attention": 2 * N * L * attended * E}


class NativeAttention(nn.Module):
    """MultiheadAttention's fast path called directly (a frozen model in inference may take it)."""

    def __init__(self, need_weights):
        super().__init__()
        self.mha, self.need_weights = nn.MultiheadAttention(E, HEADS, batch_first=True), need_weights

    def forward(self, x):
        m = self.mha
        return torch._native_multi_head_attention(x, x, x, E, HEADS, m.in_proj_weight, m.in_proj_bias,
                                                  m.out_proj.weight, m.out_proj.bias, None, self.need_weights)[0]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("need_weights", [False, True])
def test_multihead_attention_fast_path(engine, need_weights):
    count = counting.count(NativeAttention(need_weights), (N, L, E), engine=engine)
    assert count.by_operator == _self_attention(need_weights)


def test_vit_block_with_multihead_attention_counts_like_timms_vit():
    """A ViT-B/16 encoder block at 224 (197 tokens, 768 wide, MLP 3072): 4 x 197 x 768^2 projections,
    2 x 197^2 x 768 attention products, 2 x 197 x 768 x 3072 MLP, per image (meta engine, shapes only)."""
    layer = nn.TransformerEncoderLayer(768, 12, 3072, batch_first=True, norm_first=True)
    count = counting.count(layer, (1, 197, 768), engine="meta")
    gemm = 4 * 197 * 768**2 + 2 * 197**2 * 768 + 2 * 197 * 768 * 3072
    assert count.total(GEMM) == gemm
    assert count.by_operator["layer_norm"] == 2 * 5 * 197 * 768


class ViTB16(nn.Module):
    """torchvision's vit_b_16 in plain torch: 16x16 patches, class token, 12 pre-norm blocks through
    nn.MultiheadAttention, a final LayerNorm over all 197 tokens, a 1000-class head on the class token."""

    def __init__(self):
        super().__init__()
        self.conv_proj = nn.Conv2d(3, 768, 16, 16)
        self.class_token = nn.Parameter(torch.zeros(1, 1, 768))
        self.pos_embedding = nn.Parameter(torch.zeros(1, 197, 768))
        layer = nn.TransformerEncoderLayer(768, 12, 3072, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, 12, enable_nested_tensor=False)
        self.ln = nn.LayerNorm(768)
        self.head = nn.Linear(768, 1000)

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embedding
        return self.head(self.ln(self.encoder(x))[:, 0])


def test_vit_b_16_counts_the_published_17_58_gmacs():
    """The issue's example: without MultiheadAttention the meta engine gave 11.29 G."""
    tokens, width = 197, 768
    block = (4 * tokens * width**2  # q, k, v and out projections
             + 2 * tokens**2 * width  # q k^T and attn v
             + 2 * tokens * width * 3072  # MLP
             + 2 * 5 * tokens * width)  # two affine LayerNorms, 5 per element
    expected = 196 * width * 3 * 16 * 16 + 12 * block + 5 * tokens * width + width * 1000
    count = counting.count(ViTB16(), (1, 3, 224, 224), engine="meta")
    assert count.total() == expected == 17_582_740_224
    assert round(count.total() / 1e9, 2) == 17.58
    assert count.coverage.complete


# --------------------------------------------------------------------------------------------------------------
# Recurrent layers: every weight matrix of every layer and direction multiplies one vector per step and sample.


class Recurrent(nn.Module):
    def __init__(self, rnn):
        super().__init__()
        self.rnn = rnn

    def forward(self, x):
        return self.rnn(x)[0]


T, B, IN, H = 5, 3, 10, 8


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind, gates", [(nn.LSTM, 4), (nn.GRU, 3), (nn.RNN, 1)])
def test_recurrent_layers_count_their_gate_gemms(engine, kind, gates):
    count = counting.count(Recurrent(kind(IN, H, num_layers=2, bidirectional=True)), (T, B, IN), engine=engine)
    layer0 = gates * H * IN + gates * H * H  # input and hidden projections, per direction
    layer1 = gates * H * (2 * H) + gates * H * H  # its input is both directions of layer 0
    assert count.by_operator == {"rnn": T * B * 2 * (layer0 + layer1)}
    assert count.total(GEMM) == T * B * 2 * (layer0 + layer1)
    assert count.coverage.complete


@pytest.mark.parametrize("engine", ENGINES)
def test_lstm_with_projections_batch_first(engine):
    proj = 4
    count = counting.count(Recurrent(nn.LSTM(IN, H, proj_size=proj, batch_first=True)), (B, T, IN), engine=engine)
    per_step = 4 * H * IN + 4 * H * proj + proj * H  # input, hidden (projected size), projection
    assert count.by_operator == {"rnn": T * B * per_step}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("kind, gates", [(nn.LSTMCell, 4), (nn.GRUCell, 3), (nn.RNNCell, 1)])
def test_recurrent_cells(engine, kind, gates):
    count = counting.count(Recurrent(kind(IN, H)), (B, IN), engine=engine)
    # one step: B samples x (gates*H x IN + gates*H x H); a trace records a cell's two products as linear
    assert count.by_operator == {"linear": B * (gates * H * IN + gates * H * H)}


# --------------------------------------------------------------------------------------------------------------
# Broadcast matmul, baddbmm, einsum with an ellipsis.

BROADCAST_CASES = {
    # name: (parameter shape, input shape, x @ p or p @ x, true MACs, fvcore's rule: MACs, or None: it raises)
    "(B,1,M,K) @ (1,H,K,N)": ((1, 4, 8, 5), (2, 1, 3, 8), "xp", 2 * 4 * 3 * 8 * 5, 2 * 3 * 8 * 5),
    "(M,K) @ (B,K,N)": ((3, 8), (2, 8, 5), "px", 2 * 3 * 8 * 5, 3 * 8 * 5),
    "(B,M,K) @ (K,N)": ((8, 5), (2, 3, 8), "xp", 2 * 3 * 8 * 5, 2 * 3 * 8 * 5),
    "matrix x vector": ((3, 8), (8,), "px", 3 * 8, None),
    "batch of matrices x vector": ((8,), (2, 3, 8), "xp", 2 * 3 * 8, None),
    "vector x matrix": ((8, 5), (8,), "xp", 8 * 5, 8 * 5),
    "vector x batch of matrices": ((8,), (2, 8, 5), "px", 2 * 8 * 5, 8 * 5),
    "vector x vector": ((8,), (8,), "xp", 8, None),
}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("case", list(BROADCAST_CASES))
def test_broadcast_matmul_counts_the_true_product(engine, case):
    shape, input_shape, order, true_macs, fvcore_macs = BROADCAST_CASES[case]
    count = counting.count(Call(lambda m, x: x @ m.p0 if order == "xp" else m.p0 @ x, shape), input_shape,
                       engine=engine)
    assert count.by_operator == {"matmul": true_macs}
    assert matmul_macs(*((input_shape, shape) if order == "xp" else (shape, input_shape))) == true_macs
    note = plain_fvcore_note(count)
    if fvcore_macs == true_macs:
        assert count.fvcore_differences == {} and note == ""
    elif fvcore_macs is None:
        assert count.fvcore_differences["matmul"] == {"calls": 1, "macs": true_macs, "fvcore_raises": 1}
        assert "its rule raises on 1" in note
    else:
        assert count.fvcore_differences["matmul"] == {"calls": 1, "macs": true_macs, "fvcore_macs": fvcore_macs}
        assert f"{true_macs:,} here, {fvcore_macs:,} by its rule" in note


def test_the_cross_check_line_says_where_plain_fvcore_differs():
    from hrvit_bench.crosscheck import cross_check

    model = Call(lambda m, x: m.p0 @ x, (3, 8))
    count = counting.count(model, (2, 8, 5), engine="meta")
    [fvcore, *_] = cross_check(model.to("meta"), (torch.zeros(2, 8, 5, device="meta"),), count)
    assert fvcore.macs == 2 * 3 * 8 * 5
    assert "plain fvcore differs: matmul (1 call): 240 here, 120 by its rule" in fvcore.note


@pytest.mark.parametrize("engine", ENGINES)
def test_baddbmm_and_addbmm(engine):
    count = counting.count(Call(lambda m, x: torch.baddbmm(m.p1, x, m.p0) + torch.addbmm(m.p2, x, m.p0),
                            (2, 8, 5), (1, 5), (3, 5)), (2, 3, 8), engine=engine)
    assert count.by_operator == {"baddbmm": 2 * 3 * 8 * 5, "addbmm": 2 * 3 * 8 * 5}
    assert count.fvcore_differences["baddbmm"]["fvcore_macs"] == 0  # fvcore has no rule for it


@pytest.mark.parametrize("engine", ENGINES)
def test_in_place_add_products(engine):
    def fn(m, x):
        out = torch.zeros(2, 3, 5, device=x.device).baddbmm_(x, m.p0)  # 2 x (3x8 @ 8x5)
        out = torch.zeros(3, 5, device=x.device).addmm_(x[0], m.p0[0]) + out  # 3x8 @ 8x5
        return torch.zeros(3, device=x.device).addmv_(x[0], m.p1)[:, None] + out  # 3x8 @ 8

    count = counting.count(Call(fn, (2, 8, 5), (8,)), (2, 3, 8), engine=engine)
    assert count.by_operator == {"baddbmm": 2 * 3 * 8 * 5, "addmm": 3 * 8 * 5, "addmv": 3 * 8}
    assert count.coverage.complete


@pytest.mark.parametrize("engine", ENGINES)
def test_mv_and_dot(engine):
    count = counting.count(Call(lambda m, x: torch.mv(m.p0, x) + torch.dot(x[:3], m.p1), (3, 8), (3,)), (8,),
                       engine=engine)
    assert count.by_operator == {"mv": 3 * 8, "dot": 3}


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("equation, shapes, macs", [
    ("...ij,jk->...ik", [(2, 3, 4, 6), (6, 5)], 2 * 3 * 4 * 6 * 5),  # batched by the ellipsis
    ("...ij,jk", [(2, 3, 4, 6), (6, 5)], 2 * 3 * 4 * 6 * 5),  # implicit output keeps the ellipsis
    ("b...d,b...d->b...", [(2, 3, 4, 6), (2, 3, 4, 6)], 2 * 3 * 4 * 6),  # a dot product per position
    ("...ij,...jk->...ik", [(2, 1, 4, 6), (3, 6, 5)], 2 * 3 * 4 * 6 * 5),  # ellipses broadcast, right-aligned
])
def test_einsum_with_an_ellipsis(engine, equation, shapes, macs):
    assert einsum_macs(equation, [list(s) for s in shapes]) == macs
    first, second = shapes
    count = counting.count(Call(lambda m, x: torch.einsum(equation, x, m.p0), second), first, engine=engine)
    assert count.by_operator == {"einsum": macs}


# --------------------------------------------------------------------------------------------------------------
# What the meta engine cannot run: counted by fvcore on real tensors with a note, or refused naming the operator.


class Masked(nn.Module):
    """A linear layer over the tokens a boolean mask keeps: here all of them (zeros >= 0)."""

    def __init__(self, how: str):
        super().__init__()
        self.how, self.fc = how, nn.Linear(4, 6)

    def forward(self, x):
        if self.how == "mask":
            return self.fc(x[x[..., 0] >= 0])
        if self.how == "nonzero":
            keep = torch.nonzero(x[..., 0] >= 0)[:, 0]
            return self.fc(x[keep])
        return self.fc(x[: int(x.shape[0] + x.sum().item())])  # .item(): a value, not a shape


@pytest.mark.parametrize("how, op", [("mask", "__getitem__"), ("nonzero", "nonzero"), ("item", "item")])
def test_data_dependent_shapes_fall_back_to_fvcore_with_a_note(how, op):
    count = counting.count(Masked(how), (7, 4), engine="meta")
    assert count.engine == "fvcore"
    assert count.by_operator == {"linear": 7 * 4 * 6}
    note, data_dependent = count.notes
    assert f"could not run {op} (its result depends on tensor values" in note
    assert "counted by fvcore on real tensors" in note
    assert data_dependent.startswith("data-dependent: this count depends on tensor values")


def test_a_model_already_on_meta_is_refused_naming_the_operator():
    with pytest.raises(NeedsRealTensors, match="cannot run nonzero .*count a copy of it on the CPU"):
        counting.count(Masked("nonzero").to("meta"), (7, 4), engine="meta")


def test_a_meta_model_is_counted_again_on_its_real_copy():
    count = counting.count(Masked("nonzero").to("meta"), (7, 4), name="masked", real_copy=lambda: Masked("nonzero"))
    assert count.engine == "fvcore" and count.by_operator == {"linear": 7 * 4 * 6} and count.notes


class PlainAttribute(nn.Module):
    """A positional table kept as a plain tensor attribute: `.to("meta")` leaves it on the cpu."""

    def __init__(self):
        super().__init__()
        self.table = torch.ones(5, 4)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x + self.table)


def test_a_plain_cpu_tensor_attribute_falls_back_with_a_note():
    count = counting.count(PlainAttribute(), (2, 5, 4), engine="meta")
    assert count.engine == "fvcore" and count.by_operator == {"linear": 2 * 5 * 4 * 3}
    assert "plain tensor kept outside the module's parameters and buffers" in count.notes[0]


class BufferOnly(nn.Module):
    """No parameters, a buffer: it must still be moved to meta, not left on the cpu."""

    def __init__(self):
        super().__init__()
        self.register_buffer("w", torch.ones(6, 4))

    def forward(self, x):
        return F.linear(x, self.w)


def test_a_module_with_buffers_but_no_parameters_counts_on_meta():
    count = counting.count(BufferOnly(), (2, 5, 4), engine="meta")
    assert count.engine == "meta" and not count.notes
    assert count.by_operator == {"linear": 2 * 5 * 4 * 6}


def test_only_an_input_the_model_refuses_is_cannot_take_input():
    with pytest.raises(UsageError, match="cannot take input"):
        counting.count(nn.Linear(4, 3), (2, 5), name="lin")  # 5 features into a 4-feature layer, on real tensors too


def test_a_rule_that_fails_names_the_operator_not_the_input(monkeypatch):
    monkeypatch.setitem(rules.RULES, F.linear, lambda a, k, out: [][1])
    with pytest.raises(CountingError, match="the rule for linear failed on shapes") as info:
        counting.count(nn.Linear(4, 3), (2, 4), name="lin")
    assert not isinstance(info.value, UsageError)


# --------------------------------------------------------------------------------------------------------------
# Coverage, and `flops --strict`.


class Mixed(nn.Module):
    """Two linear layers (counted), a bilinear layer (GEMM-like, no rule), a tuple-returning max and a Python-level
    composite (F.normalize) without rules."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)
        self.bil = nn.Bilinear(4, 4, 3)

    def forward(self, x):
        x = self.b(self.a(x))
        values = torch.max(x, dim=1).values
        return self.bil(x, F.normalize(x)) + values[:, None]


def test_coverage_counts_every_kind_of_call_on_the_meta_engine():
    coverage = counting.count(Mixed(), (2, 4), engine="meta").coverage
    assert coverage.counted_calls == 2
    assert coverage.uncounted_calls == {"max": 1, "normalize": 1, "bilinear": 1, "add": 1}
    assert coverage.composites == ["normalize"]
    assert coverage.costly_uncounted == {"bilinear": 1}
    assert not coverage.complete
    assert coverage.line() == ("coverage: 2 calls counted by a rule, 4 without one (add 1, bilinear 1, max 1, "
                               "...; 1 composite, parts unseen), 1 call GEMM-like UNCOUNTED: "
                               "bilinear 1 (missing from the totals)")


def test_coverage_on_the_fvcore_engine():
    count = counting.count(Mixed(), (2, 4), engine="fvcore")
    assert count.coverage.counted_calls == 2
    assert count.coverage.costly_uncounted == {"bilinear": 1}
    assert count.to_dict()["coverage"]["costly_uncounted"] == {"bilinear": 1}


@pytest.fixture
def registered():
    """Two toy models in the registry: one with an uncounted bilinear layer, one with a nonzero call."""
    names = []
    for name, build in (("edge_bilinear", Mixed), ("edge_nonzero", lambda: Masked("nonzero"))):
        models.register_model(family="toy", variant=name, task="classification", dataset="imagenet",
                              num_classes=3, input_size=(1, 4), reference="hand arithmetic",
                              official_code="tests/test_counting_edge_cases.py", name=name)(
            lambda build=build, **overrides: build())
        names.append(name)
    yield names
    for name in names:
        models.unregister_model(name)


def test_flops_strict_exits_1_on_an_uncounted_gemm_like_call(registered, monkeypatch):
    from hrvit_bench import zoo

    monkeypatch.setattr(zoo, "input_shape", lambda info, size=None, batch_size=1: (2, 4))
    runner = CliRunner()
    loose = runner.invoke(app, ["flops", "-m", "edge_bilinear", "--json", "--no-cross-check"])
    assert loose.exit_code == 0, loose.output
    [data] = json.loads(loose.stdout)
    assert data["coverage"]["costly_uncounted"] == {"bilinear": 1} and not data["coverage"]["complete"]
    strict = runner.invoke(app, ["flops", "-m", "edge_bilinear", "--strict", "--no-cross-check"])
    assert strict.exit_code == 1
    assert "coverage: 2 calls counted by a rule" in strict.stdout
    assert "--strict: known GEMM-like calls went uncounted: edge_bilinear: bilinear 1" in strict.output
    as_csv = runner.invoke(app, ["flops", "-m", "edge_bilinear", "--csv", "--no-cross-check"])
    header, *rows = as_csv.stdout.strip().splitlines()
    assert header.endswith(",gemm_calls_uncounted") and rows and all(r.endswith(",1") for r in rows)


def test_flops_falls_back_and_says_why(registered, monkeypatch):
    from hrvit_bench import zoo

    monkeypatch.setattr(zoo, "input_shape", lambda info, size=None, batch_size=1: (7, 4))
    result = CliRunner().invoke(app, ["flops", "-m", "edge_nonzero", "--strict", "--json"])
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    assert data["engine"] == "fvcore" and data["macs_by_operator"] == {"linear": 7 * 4 * 6}
    assert "could not run nonzero" in data["notes"][0]
