"""Shared fixtures: a toy model registered for the duration of a test."""
import os

import pytest

import hrvit_bench_models as models
from toy import ToyNet


@pytest.fixture
def toy_model():
    name = "toy_convnet"

    @models.register_model(
        family="toy", variant="t", task="classification", dataset="imagenet", num_classes=10,
        input_size=(32, 48), reference="hand arithmetic", official_code="tests/conftest.py",
        input_multiple=2, name=name,
    )
    def _build(**overrides):
        return ToyNet(**overrides)

    yield name
    models.unregister_model(name)


# tests/test_outside_timm.py needs timm and torchvision, which live in their own venv (README, "Any model"); the
# default run does not collect it, and the run meant for it (HRVIT_BENCH_TIMM=1, in .ci/run) fails without them.
collect_ignore = [] if os.environ.get("HRVIT_BENCH_TIMM") == "1" else ["test_outside_timm.py"]
