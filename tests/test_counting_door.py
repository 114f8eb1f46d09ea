"""The one door to counting (issue 17): every caller counts through `counting.count`, which counts in eval mode and
puts every submodule's mode back, sees into TorchScript code or says it could not, reads `out=`, and gives one
message for a model that refuses its input, whichever command asks. Counted by hand on both engines."""
import ast
import json
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import hrvit_bench
from hrvit_bench import counting
from hrvit_bench.cli import app
from hrvit_bench.counting import CountingError
from hrvit_bench.errors import UsageError

ENGINES = ["meta", "fvcore"]
ROOT = Path(__file__).resolve().parents[1]
runner = CliRunner()


# --------------------------------------------------------------------------------------------------------------
# Modes and devices: the caller's module comes back as it went in.


class Trained(nn.Module):
    """conv 3->4 1x1 (with bias), BN, dropout, and a head kept in eval by its owner."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn, self.drop = nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5)
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(4 * 3 * 3, 2))

    def forward(self, x):
        return self.head(self.drop(self.bn(self.conv(x))))


@pytest.mark.parametrize("engine", ENGINES)
def test_the_count_runs_in_eval_and_gives_every_submodule_its_mode_back(engine):
    model = Trained().train()
    model.head.eval()
    before = {name: m.training for name, m in model.named_modules()}
    count = counting.count(model, (2, 3, 3, 3), engine=engine)
    # 2 x 4 x 3 x 3 = 72 output elements; conv reads 3 channels each; eval BN with affine is 2 per element (in
    # training it would be 5); linear 2 x 36 x 2.
    assert count.by_operator == {"conv": 72 * 3, "batch_norm": 2 * 72, "linear": 2 * 36 * 2}
    assert {name: m.training for name, m in model.named_modules()} == before
    assert model.training and not model.head.training and model.bn.training
    assert next(model.parameters()).device.type == "cpu"


def test_the_python_api_leaves_the_model_in_training_too():
    model = Trained().train()
    report = hrvit_bench.count(model, (1, 3, 3, 3), cross_check=True)
    assert report.count.total() == 36 * 3 + 2 * 36 + 36 * 2
    assert all(m.training for m in model.modules())


def test_an_unknown_mode_or_engine_is_a_usage_error():
    with pytest.raises(UsageError, match="mode must be one of eval"):
        counting.count(nn.Linear(2, 2), (1, 2), mode="train")
    with pytest.raises(UsageError, match="engine must be one of meta, fvcore"):
        counting.count(nn.Linear(2, 2), (1, 2), engine="thop")


# --------------------------------------------------------------------------------------------------------------
# Code the Python level never sees: TorchScript, custom autograd functions.


@torch.jit.script
def scripted_square(x):
    return x @ x


class CallsScript(nn.Module):
    def forward(self, x):
        return scripted_square(x)


class Lin(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 5)

    def forward(self, x):
        return self.fc(x) @ x


class HoldsScript(nn.Module):
    def __init__(self):
        super().__init__()
        self.scripted = torch.jit.script(Lin())

    def forward(self, x):
        return self.scripted(x)


class Square(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        return x @ x

    @staticmethod
    def backward(ctx, grad):
        return grad


class CallsFunction(nn.Module):
    def forward(self, x):
        return Square.apply(x)


SQUARE = 5 * 5 * 5  # x @ x on 5 x 5: 25 outputs of 5 multiply-adds each


def test_a_scripted_function_is_counted_by_the_dispatcher_on_meta():
    count = counting.count(CallsScript(), (5, 5))
    assert count.engine == "meta" and count.by_operator == {"mm": SQUARE}
    assert count.coverage.complete


def test_a_scripted_function_is_unseen_code_to_fvcore_and_the_coverage_says_so():
    count = counting.count(CallsScript(), (5, 5), engine="fvcore")
    assert count.by_operator == {}
    assert count.coverage.costly_uncounted == {"prim::CallFunction": 1} and not count.coverage.complete
    assert count.composite_ops == ["prim::CallFunction"]
    assert "code the engine could not see into, possibly GEMM-like" in count.coverage.line()


def test_a_scripted_submodule_is_counted_inside_on_real_tensors_by_the_meta_engine():
    count = counting.count(HoldsScript(), (5, 5))
    # fc: 5 rows x 5 in x 5 out (addmm, inside TorchScript), then @ x: 5 x 5 x 5 (mm)
    assert count.engine == "meta" and count.by_operator == {"addmm": SQUARE, "mm": SQUARE}
    assert "cannot move to the meta device" in count.notes[0] and "on real tensors" in count.notes[0]
    assert count.unused_params == 0  # the dispatcher saw the scripted module read its weights


def test_fvcore_refuses_a_scripted_submodule_by_name():
    with pytest.raises(CountingError, match=r"fvcore cannot count a model holding a TorchScript module \(scripted"):
        counting.count(HoldsScript(), (5, 5), engine="fvcore")


def test_a_custom_autograd_function_is_counted_inside_on_meta_and_unseen_by_fvcore():
    assert counting.count(CallsFunction(), (5, 5)).by_operator == {"matmul": SQUARE}
    count = counting.count(CallsFunction(), (5, 5), engine="fvcore")
    assert count.by_operator == {} and count.coverage.costly_uncounted == {"prim::PythonOp.Square": 1}
    assert not count.coverage.complete


def scripted_with_its_input():
    """An outside builder (``test_counting_door:scripted_with_its_input``): the model and its 5 x 5 input."""
    return CallsScript(), torch.zeros(5, 5)


def test_flops_strict_fails_on_unseen_code_and_passes_where_it_was_counted():
    spec = f"{__name__}:scripted_with_its_input"
    counted = runner.invoke(app, ["flops", "-m", spec, "--strict", "--no-cross-check", "--json"])
    assert counted.exit_code == 0, counted.output
    assert json.loads(counted.stdout)[0]["macs_by_operator"] == {"mm": SQUARE}
    unseen = runner.invoke(app, ["flops", "-m", spec, "--engine", "fvcore", "--strict", "--no-cross-check"])
    assert unseen.exit_code == 1
    assert "--strict: known GEMM-like calls went uncounted" in unseen.output and "prim::CallFunction 1" in unseen.output


# --------------------------------------------------------------------------------------------------------------
# out=


class MatmulInto(nn.Module):
    """torch.mm(x, x, out=y), y made inside forward: on the CPU (no device given), or beside x."""

    def __init__(self, beside: bool):
        super().__init__()
        self.beside = beside

    def forward(self, x):
        y = torch.empty(5, 5, device=x.device if self.beside else None)
        torch.mm(x, x, out=y)
        return y


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("beside", [True, False])
def test_out_is_read_on_both_engines(engine, beside):
    count = counting.count(MatmulInto(beside), (5, 5), engine=engine)
    assert count.by_operator == {"mm": SQUARE}
    if engine == "fvcore" or not beside:  # fvcore's own rule asserts two inputs: ours reads the first two
        assert count.fvcore_differences == {"mm": {"calls": 1, "macs": SQUARE, "fvcore_raises": 1}}
    # a CPU tensor made inside forward cannot join meta ones: the meta engine falls back, and says so
    assert count.engine == ("meta" if engine == "meta" and beside else "fvcore")


# --------------------------------------------------------------------------------------------------------------
# Inputs, conventions by name.


def test_inputs_may_be_a_shape_string():
    assert counting.count(nn.Linear(32, 4), "3x32").by_operator == {"linear": 3 * 32 * 4}
    report = hrvit_bench.count(nn.Linear(32, 4), "2x3x32")
    assert report.count.input_shape == (2, 3, 32) and report.count.total() == 2 * 3 * 32 * 4


@pytest.mark.parametrize("bad", ["3xx32", "three", ""])
def test_a_bad_shape_string_is_one_usage_error(bad):
    with pytest.raises(UsageError, match="is not sizes joined by x"):
        hrvit_bench.count(nn.Linear(32, 4), bad)


def test_totals_take_convention_names():
    count = hrvit_bench.count(nn.Linear(32, 4), (3, 32)).count
    assert count.total("flops-gemm-2^30") == 2 * 3 * 32 * 4  # FLOPs are 2 x MACs; giga only divides
    assert count.module_totals(0, "macs-gemm-1e9") == {"": 3 * 32 * 4}
    with pytest.raises(UsageError, match="unknown convention 'flops-2'"):
        count.total("flops-2")


# --------------------------------------------------------------------------------------------------------------
# A model that refuses the default input: one message, whichever command asks.

FIXED_POSITIONS = '''
import torch
from torch import nn


class FixedPositions(nn.Module):
    """A ViT-style stem whose position embedding fits 32x32 only: 2 x 2 patches of 16 pixels."""

    def __init__(self):
        super().__init__()
        self.patch = nn.Conv2d(3, 8, 16, stride=16)
        self.pos = nn.Parameter(torch.zeros(1, 4, 8))

    def forward(self, x):
        return self.patch(x).flatten(2).transpose(1, 2) + self.pos


def build():
    return FixedPositions()
'''


@pytest.fixture
def fixed_positions(tmp_path):
    path = tmp_path / "fixed.py"
    path.write_text(FIXED_POSITIONS)
    return f"{path}:build"


def test_params_flops_latency_and_profile_refuse_the_input_in_the_same_line(fixed_positions):
    expected = (f"error: {fixed_positions} cannot take input 1x3x224x224: The size of tensor a (196) must match the "
                "size of tensor b (4) at non-singleton dimension 1")
    for command in (["params"], ["flops"], ["latency", "--iters", "1", "--warmup", "0", "--threads", "1"],
                    ["profile", "--iters", "1", "--warmup", "0", "--threads", "1"]):
        result = runner.invoke(app, [*command, "-m", fixed_positions])
        assert result.exit_code == 2, (command, result.output)
        assert result.output.strip().splitlines() == [expected], command


def test_the_input_it_takes_counts(fixed_positions):
    result = runner.invoke(app, ["flops", "-m", fixed_positions, "-i", "32x32", "--no-cross-check", "--json"])
    assert result.exit_code == 0, result.output
    # 4 patches x 8 channels, each reading 3 x 16 x 16 pixels; the position add is not counted
    assert json.loads(result.stdout)[0]["macs_by_operator"] == {"conv": 4 * 8 * 3 * 16 * 16}


def test_a_model_already_on_meta_without_a_real_copy_names_the_operator():
    with pytest.raises(CountingError, match=r"cannot run linear \(a and b must have same reduction dim.* on the meta device") as info:
        counting.count(nn.Linear(4, 3).to("meta"), (2, 5))
    assert not isinstance(info.value, UsageError)


# --------------------------------------------------------------------------------------------------------------
# One door: nothing outside hrvit_bench/counting/ runs an engine.

ENGINE_MODULES = {"meta_engine", "fvcore_engine", "rules", "shapes"}
ENGINE_NAMES = {"count_meta", "count_fvcore", "FlopCountAnalysis", "RULES", "ATEN_RULES"}


def _engine_imports(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            parts = set((node.module or "").split("."))
            names = {alias.name for alias in node.names}
            if parts & ENGINE_MODULES or names & (ENGINE_NAMES | ENGINE_MODULES) or "fvcore" in parts:
                found.append(f"{path.relative_to(root)}:{node.lineno}")
        elif isinstance(node, ast.Import) and any("fvcore" in alias.name.split(".") for alias in node.names):
            found.append(f"{path.relative_to(root)}:{node.lineno}")
    return sorted(found)


def test_nothing_outside_the_counting_package_runs_an_engine():
    package = ROOT / "hrvit_bench"
    outside = [p for p in package.rglob("*.py") if "counting" not in p.relative_to(package).parts]
    assert len(outside) > 30  # the scan sees the whole package
    assert [hit for p in outside for hit in _engine_imports(p)] == []


def test_the_scan_finds_an_engine_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from .counting.meta_engine import count_meta\nfrom hrvit_bench import zoo\n"
                       "import fvcore.nn\nfrom .counting import rules\n")
    assert _engine_imports(planted, tmp_path) == ["planted.py:1", "planted.py:3", "planted.py:4"]


# --------------------------------------------------------------------------------------------------------------
# params --depth: a module's own parameters get a row, so the rows add up.

OWN_PARAMETERS = '''
import torch
from torch import nn


class OwnScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, 8, 1, 1))  # the model's own: no submodule holds it
        self.patch = nn.Conv2d(3, 8, 16, stride=16)

    def forward(self, x):
        return self.patch(x) * self.scale


def build():
    return OwnScale()
'''


def test_params_by_module_has_a_self_row_for_the_models_own_parameters(tmp_path):
    path = tmp_path / "own.py"
    path.write_text(OWN_PARAMETERS)
    result = runner.invoke(app, ["params", "-m", f"{path}:build", "--json"])
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    patch = 8 * 3 * 16 * 16 + 8  # weight and bias
    assert data["by_module"] == {"": 8 + patch, "(self)": 8, "patch": patch}
    as_csv = runner.invoke(app, ["params", "-m", f"{path}:build", "--csv"]).stdout.strip().splitlines()
    assert as_csv[1:] == [f"{path}:build,(total),{8 + patch}", f"{path}:build,(self),8", f"{path}:build,patch,{patch}"]


def test_self_rows_below_the_root_and_none_for_leaves():
    from hrvit_bench.counting.params import module_parameters

    model = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.Linear(3, 1)))
    model[1].register_parameter("gain", nn.Parameter(torch.ones(4)))
    # depth 2: "1" has a child and owns "gain"; "0" and "1.0" are leaves, their rows are all their own
    assert module_parameters(model, 2) == {"": 9 + 4 + 4, "0": 9, "1": 4 + 4, "1 (self)": 4, "1.0": 4}
    assert module_parameters(model, 1) == {"": 17, "0": 9, "1": 8}
