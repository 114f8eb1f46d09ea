"""Every operator name hrvit-bench reasons about, in one place: which are matrix products (the "gemm" convention),
which cost GEMM-like work when left uncounted, which only move data, which hide code no rule can see, and how
other tools (the profiler, torch's FlopCounterMode, thop) name the operators the engines count.

Names are the engines' (fvcore's) names: ``conv``, ``linear``, ``matmul``, ``scaled_dot_product_attention``, ...
This module imports nothing, so ``conventions.py`` can take its GEMM set from here without a cycle.
"""
from __future__ import annotations

# Operators that are matrix products; the "gemm" convention counts only these.
GEMM_OPS = frozenset(
    {"conv", "linear", "matmul", "mm", "bmm", "addmm", "baddbmm", "addbmm", "mv", "addmv", "dot", "einsum",
     "scaled_dot_product_attention", "rnn"}
)

# Operators that cost GEMM work (fvcore's names, and the Python-level and aten names the meta engine sees): one
# of these left uncounted means the totals miss real work, which `flops --strict` refuses.
COSTLY_OPS = frozenset(
    """linear bilinear matmul rmatmul imatmul mm bmm addmm addbmm baddbmm addmv mv dot vdot inner outer ger addr
    einsum tensordot kron chain_matmul linalg_multi_dot multi_dot linalg_vecdot cdist conv1d conv2d conv3d
    conv_transpose1d conv_transpose2d conv_transpose3d convolution conv_tbc scaled_dot_product_attention
    multi_head_attention_forward native_multi_head_attention transformer_encoder_layer_fwd lstm gru rnn_tanh
    rnn_relu lstm_cell gru_cell rnn_tanh_cell rnn_relu_cell quantized_lstm quantized_gru""".split()
)
_COSTLY_PARTS = ("matmul", "attention", "convolution", "lstm", "gru")

# Calls whose code no rule could see into: a traced call of a TorchScript function or method, or a custom
# autograd.Function (fvcore's trace keeps each as one node). They may hide any amount of GEMM work, so an
# uncounted one makes the coverage incomplete.
OPAQUE_CALLS = frozenset({"prim::CallFunction", "prim::CallMethod", "prim::PythonOp"})


def is_opaque(op: str) -> bool:
    """fvcore names a custom autograd.Function's node after its class: "prim::PythonOp.MyFunction"."""
    return op.partition(".")[0] in OPAQUE_CALLS


def is_costly(op: str) -> bool:
    """Whether an operator (by either engine's name) does, or may hide, GEMM-like work: matrix products,
    convolutions, attention, recurrent gates, and code no rule could see into."""
    if is_opaque(op):
        return True
    parts = [part.strip("_") for part in op.split("::")[-1].split(".")]  # "mm.default": packet and overload
    return any(base in COSTLY_OPS or any(word in base for word in _COSTLY_PARTS) for base in parts)


# Calls that move or reshape data, or build constants: neither counted nor worth reporting as missed. Python-level
# names and, below them, the aten names the dispatcher shows for code the Python level does not see.
DATA_MOVEMENT = frozenset(
    """__get__ __getitem__ __setitem__ __len__ __iter__ __bool__ __format__ __eq__ __ne__ __lt__ __gt__ __le__
    __ge__ __and__ __or__ __invert__ __hash__ __index__ __int__ __float__ __floordiv__ __rfloordiv__ dim size numel
    view view_as reshape reshape_as permute transpose contiguous flatten unflatten expand expand_as repeat squeeze
    unsqueeze t cat concat stack split chunk unbind narrow pad to type float half double clone detach
    requires_grad_ zeros zeros_like ones ones_like full full_like new_zeros new_ones new_full new_empty empty
    empty_like arange linspace masked_fill masked_fill_ dropout dropout2d dropout1d feature_alpha_dropout
    alpha_dropout flip roll tolist item split_with_sizes movedim swapaxes get_device is_contiguous
    is_floating_point __repr__ __format__ __contains__ __reversed__ copy_ fill_ zero_ stride data_ptr
    element_size storage_offset _is_view untyped_storage identity meshgrid tensor_split broadcast_tensors hsplit
    vsplit dsplit unsafe_split unsafe_chunk
    _unsafe_view _reshape_alias alias as_strided slice select _to_copy empty_strided lift_fresh lift_fresh_copy
    scalar_tensor _local_scalar_dense sym_size sym_stride sym_numel""".split()
)


def moves_data(op: str) -> bool:
    return op in DATA_MOVEMENT or op.rstrip("_") in DATA_MOVEMENT


# The profiler's aten operator names (the outermost aten event of a Python call, and the inner ones a caller that
# starts deeper meets) -> the engines' names, so `profile --by operator` joins times to counts.
PROFILER_TO_ENGINE = {
    **{f"aten::{name}": "conv" for name in (
        "conv1d", "conv2d", "conv3d", "convolution", "_convolution", "conv_transpose1d", "conv_transpose2d",
        "conv_transpose3d")},
    **{f"aten::{name}": "scaled_dot_product_attention" for name in (
        "scaled_dot_product_attention", "_scaled_dot_product_flash_attention_for_cpu",
        "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
        "_scaled_dot_product_cudnn_attention")},
    **{f"aten::{name}": name for name in (
        "linear", "matmul", "mm", "bmm", "addmm", "einsum", "batch_norm", "layer_norm", "group_norm",
        "instance_norm", "upsample_nearest2d", "upsample_bilinear2d", "adaptive_avg_pool2d", "grid_sampler")},
    "aten::grid_sampler_2d": "grid_sampler",
}

# torch FlopCounterMode's operator names (aten packets) -> the groups its cross-check line reports.
FLOP_COUNTER_GROUPS = {
    "convolution": "conv",
    "_convolution": "conv",
    "mm": "mm/addmm (linear, matmul)",
    "addmm": "mm/addmm (linear, matmul)",
    "bmm": "bmm/baddbmm (matmul, einsum, attention)",
    "baddbmm": "bmm/baddbmm (matmul, einsum, attention)",
}

# thop counts per module class: the class-name prefix -> the engines' operator name.
THOP_MODULE_PREFIXES = (
    ("Conv", "conv"),
    ("Linear", "linear"),
    ("BatchNorm", "batch_norm"),
    ("SyncBatchNorm", "batch_norm"),
    ("LayerNorm", "layer_norm"),
    ("InstanceNorm", "instance_norm"),
    ("Upsampl", "upsample"),
    ("AdaptiveAvgPool", "adaptive_avg_pool2d"),
)
