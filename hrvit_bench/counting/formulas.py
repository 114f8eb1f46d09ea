"""Pure counting formulas: shapes in, MACs out. Both engines, the cross-checks and every rule table call these, so
one formula has one definition; nothing here knows torch's calling conventions."""
from __future__ import annotations

import math

import torch


def _expand_ellipsis(terms: list[str], out: str | None, shapes: list[list[int]]) -> tuple[list[str], str | None, str]:
    """Replace ``...`` by letters of their own, aligned right across operands as torch broadcasts them."""
    used = set("".join(terms) + (out or ""))
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz" if c not in used]
    widths = [len(shape) - (len(term) - 3) if "..." in term else 0 for term, shape in zip(terms, shapes)]
    width = max(widths, default=0)
    letters = "".join(spare[:width])
    terms = [t.replace("...", letters[width - w :]) for t, w in zip(terms, widths)]
    return terms, None if out is None else out.replace("...", letters), letters


def einsum_macs(equation: str, shapes: list[list[int]]) -> int:
    """Exact MACs of ``torch.einsum``: one multiply per point of the joint index space of each contraction.

    Operands are contracted left to right, as torch does without opt_einsum; an intermediate keeps the indices
    still needed by later operands or the output. ``...`` stands for broadcast dimensions of their own.
    """
    equation = equation.replace(" ", "")
    lhs, arrow, out = equation.partition("->")
    terms = lhs.split(",")
    explicit, ellipsis = out if arrow else None, ""
    if "..." in equation:
        terms, explicit, ellipsis = _expand_ellipsis(terms, explicit, shapes)
    letters = "".join(terms)
    if explicit is None:  # implicit output: the ellipsis, then the letters appearing once, sorted
        explicit = ellipsis + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in ellipsis))
    out = explicit
    sizes: dict[str, int] = {}
    for term, shape in zip(terms, shapes):
        for letter, size in zip(term, shape):
            sizes[letter] = max(sizes.get(letter, 1), int(size))  # broadcast size-1 dims
    if len(terms) == 1:
        return math.prod(sizes[c] for c in set(terms[0]))
    macs, current = 0, terms[0]
    for i, term in enumerate(terms[1:], start=1):
        joint = set(current) | set(term)
        macs += math.prod(sizes[c] for c in joint)
        needed = set(out).union(*terms[i + 1 :])
        current = "".join(c for c in joint if c in needed)
    return macs


def sdpa_macs(q_shape: list[int], k_shape: list[int], v_shape: list[int], out_shape: list[int]) -> int:
    """MACs of softmax(q k^T) v, equal to the explicit matmuls' count: q@k^T plus attn@v."""
    batch = math.prod(out_shape[:-2])
    length, dim_qk = q_shape[-2], q_shape[-1]
    source, dim_v = k_shape[-2], v_shape[-1]
    return batch * length * source * (dim_qk + dim_v)


def conv_macs(x_shape, w_shape, out_shape, transposed: bool = False) -> int:
    """fvcore's rule: batch x weight size x output positions (input positions when transposed); no bias."""
    spatial = x_shape[2:] if transposed else out_shape[2:]
    return x_shape[0] * math.prod(w_shape) * math.prod(spatial)


def matmul_macs(a_shape, b_shape) -> int:
    """The true product of ``torch.matmul``: broadcast batch x M x K x N, where a vector operand has M (or N) = 1.

    fvcore's rule (``fvcore_matmul_macs``) multiplies a's elements by b's last dimension, which undercounts when b
    carries batch dimensions a broadcasts over, and raises on a vector b.
    """
    a, b = list(a_shape), list(b_shape)
    if len(a) == 1 and len(b) == 1:
        return a[0]
    a = [1, *a] if len(a) == 1 else a
    b = [*b, 1] if len(b) == 1 else b
    batch = torch.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2]))
    return math.prod(batch) * a[-2] * a[-1] * b[-1]


def fvcore_matmul_macs(a_shape, b_shape) -> int | None:
    """What fvcore's own matmul rule reports (None where its assertion or indexing fails)."""
    if len(b_shape) < 2 or a_shape[-1] != b_shape[-2]:
        return None
    return math.prod(a_shape) * b_shape[-1]


def mha_macs(q_shape, k_shape, v_shape, source_length: int) -> tuple[int, int]:
    """(projections, each attention product) of ``F.multi_head_attention_forward`` on seq-first (L, N, E) query,
    (S, N, kdim) key and (S, N, vdim) value (or unbatched (L, E)): q, k and v in-projections to E and the output
    projection; q k^T and attn v each cost N x L x S' x E, S' the attended length (bias_k, zero attention, static
    keys)."""
    length, embed = q_shape[0], q_shape[-1]
    batch = q_shape[1] if len(q_shape) == 3 else 1
    source = k_shape[0]
    projections = batch * embed * (length * embed + source * (k_shape[-1] + v_shape[-1]) + length * embed)
    return projections, batch * length * source_length * embed


def rnn_macs(input_shape, weights) -> int:
    """Gate GEMMs of LSTM/GRU/RNN layers (or cells): every weight matrix (input, hidden, projection; each layer
    and direction) multiplies one vector per time step and batch element, i.e. per row of the input."""
    rows = math.prod(input_shape[:-1])
    return rows * sum(math.prod(w) for w in weights if len(w) == 2)


def norm_macs(numel: int, affine: bool) -> int:
    """fvcore's rule for layer, group and instance norms (and batch norm in training): 4 per element (mean,
    variance, normalise), 5 with the affine transform."""
    return numel * (5 if affine else 4)


def batch_norm_macs(numel: int, affine: bool, training: bool) -> int:
    """fvcore's rule: as a norm in training; in eval a fixed scale and shift, 1 per element, 2 when affine."""
    if training:
        return norm_macs(numel, affine)
    return numel * (2 if affine else 1)


def resize_macs(mode: str, out_numel: int) -> int | None:
    """fvcore's resize rules: nearest 1 per output element, bilinear 4; None for a mode it has no rule for."""
    return {"nearest": out_numel, "bilinear": 4 * out_numel}.get(mode)
