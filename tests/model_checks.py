"""Checks the model families' tests share: parameter counts, fvcore counts, key layouts, state-dict round trips."""
import hashlib
import io

import torch
from fvcore.nn import FlopCountAnalysis

import hrvit_bench_models as models
from hrvit_bench import counting, zoo


def meta_build(name, **overrides):
    """Instant build, for parameter counts and key layouts."""
    with torch.device("meta"):
        return models.create_model(name, **overrides)


def n_params(module):
    return sum(p.numel() for p in module.parameters())


def fvcore_analysis(model, size) -> FlopCountAnalysis:
    """fvcore itself on real tensors: what the official numbers were counted with."""
    analysis = FlopCountAnalysis(model.eval(), torch.zeros(1, 3, *size))
    analysis.unsupported_ops_warnings(False)
    analysis.uncalled_modules_warnings(False)
    return analysis


def fvcore_flops(model, size) -> int:
    with torch.no_grad():
        return fvcore_analysis(model, size).total()


def meta_macs(name, size, **overrides) -> int:
    """fvcore's rules on shapes alone (tests/test_engines.py holds it equal to fvcore): for comparisons only."""
    return counting.count(zoo.build(name, "meta", **overrides), (1, 3, *size)).total()


def key_layout(model):
    """A digest of the sorted ``key:shape`` list and the number of entries: compared with the official model's."""
    lines = "\n".join(f"{k}:{tuple(v.shape)}" for k, v in sorted(model.state_dict().items()))
    return hashlib.sha256(lines.encode()).hexdigest()[:16], len(model.state_dict())


def perturb_batch_norm(model):
    """Move BN statistics off their defaults so a round trip really carries them over."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-1, 1)
                module.running_var.uniform_(0.5, 2)
    return model


def assert_round_trip(name, size=(64, 64), prepare=perturb_batch_norm):
    """A state dict saved by one build loads strict into a fresh one, and both give the same output."""
    torch.manual_seed(0)
    source = prepare(models.create_model(name)).eval()
    buffer = io.BytesIO()
    torch.save(source.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(1)
    target = models.create_model(name).eval()
    target.load_state_dict(torch.load(buffer), strict=True)
    x = torch.randn(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x), atol=0, rtol=0)
