"""The shape-only engine gives fvcore's own counts, operator by operator, on every registered model."""
import pytest
import torch

import hrvit_bench_models as models
from hrvit_bench import counting, zoo

pytestmark = pytest.mark.slow  # fvcore on real tensors for every registered model: most of the suite's time

SIZE = (1, 3, 64, 64)  # every registered model takes it; fvcore's cost here is tracing, not arithmetic


def zeroed_cpu_build(name):
    """Real storage without initialisation, zero-filled: values never change a count, and zeros keep the
    arithmetic fast (uninitialised memory can hold denormals, which slow a CPU down many times)."""
    model = zoo.build(name, "meta").to_empty(device="cpu")
    with torch.no_grad():
        for tensor in (*model.parameters(), *model.buffers()):
            tensor.zero_()
    return model


@pytest.mark.parametrize("name", models.list_models())
def test_meta_engine_equals_fvcore(name):
    meta = counting.count(zoo.build(name, "meta"), SIZE, engine="meta", name=name)
    real = counting.count(zeroed_cpu_build(name), SIZE, engine="fvcore", name=name)
    assert meta.engine == "meta" and not meta.notes  # counted on shapes, not fallen back to fvcore
    assert meta.by_operator == real.by_operator
    assert meta.coverage.complete and real.coverage.complete  # no GEMM-like call left uncounted
    assert meta.total() > 0
    assert meta.params == real.params
    assert meta.unused_params == real.unused_params
