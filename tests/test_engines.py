"""The shape-only engine gives fvcore's own counts, operator by operator, on every registered model."""
import pytest

import models
from hrvit_bench import zoo
from hrvit_bench.counting import count_macs

SIZE = (1, 3, 64, 64)  # every registered model takes it; fvcore's cost here is tracing, not arithmetic


@pytest.mark.parametrize("name", models.list_models())
def test_meta_engine_equals_fvcore(name):
    meta = count_macs(zoo.build(name, "meta"), SIZE, engine="meta", name=name)
    # fvcore needs real storage; values do not matter to a count, so skip initialisation.
    real = count_macs(zoo.build(name, "meta").to_empty(device="cpu"), SIZE, engine="fvcore", name=name)
    assert meta.by_operator == real.by_operator
    assert meta.total() > 0
    assert meta.params == real.params
    assert meta.unused_params == real.unused_params
