"""Outside models (`--model file.py:BUILDER`, `package.module:BUILDER`) and the Python API, counted by hand; every
bad spec is one line and exit code 2, and leaves nothing behind. timm itself: tests/test_outside_timm.py."""
import json
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import hrvit_bench
from hrvit_bench import counting, outside
from hrvit_bench.cli import app

runner = CliRunner()

# conv 3->8, 3x3, padding 1 (MACs: 8*3*3*3 per output pixel), then global pooling and a linear 8->10.
MODEL_FILE = """
import torch
from torch import nn


def build():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def with_inputs():
    return nn.Bilinear(4, 6, 5), (torch.randn(2, 4), torch.randn(2, 6))


def image_with_input():
    return build(), torch.zeros(2, 3, 16, 16)


def not_on_meta():  # .item() has no value on the meta device: built on the CPU, then moved
    width = int(torch.tensor(8.0).item())
    return nn.Sequential(nn.Conv2d(3, width, 1))


def needs_width(width):
    return nn.Linear(width, 1)


def no_module():
    return 42


def raises():
    raise RuntimeError("no weights here")


not_callable = 3
"""


def conv_model_macs(b, h, w):
    return {"conv": b * 8 * 3 * 3 * 3 * h * w, "adaptive_avg_pool2d": b * 8 * h * w, "linear": b * 8 * 10}


@pytest.fixture
def model_file(tmp_path):
    path = tmp_path / "my_model.py"
    path.write_text(MODEL_FILE)
    return path


def flops_json(*args):
    result = runner.invoke(app, ["flops", *args, "--json"])
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    return data


def test_flops_of_a_users_file(model_file):
    data = flops_json("-m", f"{model_file}:build", "-i", "16x20", "-b", "2")
    assert data["model"] == f"{model_file}:build"  # labelled by its spec
    assert data["input"] == "2x3x16x20"
    assert data["params"] == 8 * 3 * 9 + 8 + 8 * 10 + 10
    assert data["macs_by_operator"] == conv_model_macs(2, 16, 20)


def test_default_input_is_224_and_the_fvcore_engine_agrees(model_file):
    meta = flops_json("-m", f"{model_file}:build", "--no-cross-check")
    assert meta["input"] == "1x3x224x224"
    assert meta["macs_by_operator"] == conv_model_macs(1, 224, 224)
    real = flops_json("-m", f"{model_file}:build", "--engine", "fvcore", "-i", "32x32", "--no-cross-check")
    assert real["macs_by_operator"] == conv_model_macs(1, 32, 32)


def test_builder_with_its_own_inputs_is_fed_them(model_file):
    data = flops_json("-m", f"{model_file}:with_inputs", "--no-cross-check")
    assert data["input"] == "2x4, 2x6"
    # fvcore has no bilinear rule: nothing counted, and the call is listed as uncounted rather than hidden
    assert data["params"] == 4 * 6 * 5 + 5
    assert data["macs_by_operator"] == {} and "bilinear" in data["uncounted_ops"]
    image = flops_json("-m", f"{model_file}:image_with_input", "--no-cross-check")
    assert image["input"] == "2x3x16x16"
    assert image["macs_by_operator"] == conv_model_macs(2, 16, 16)
    assert flops_json("-m", f"{model_file}:image_with_input", "-i", "16x16", "-b", "2")["input"] == "2x3x16x16"


def test_builder_that_cannot_run_on_meta_is_built_on_the_cpu(model_file):
    data = flops_json("-m", f"{model_file}:not_on_meta", "-i", "4x4", "--no-cross-check")
    assert data["macs_by_operator"] == {"conv": 8 * 3 * 16}


def test_package_module_spec_imports_from_the_working_directory(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "nets.py").write_text(MODEL_FILE)
    monkeypatch.chdir(tmp_path)
    data = flops_json("-m", "userpkg.nets:build", "-i", "8x8", "--no-cross-check")
    assert data["macs_by_operator"] == conv_model_macs(1, 8, 8)
    assert str(tmp_path) not in sys.path
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["__init__.py", "nets.py", "userpkg"]  # no __pycache__
    sys.modules.pop("userpkg.nets", None)
    sys.modules.pop("userpkg", None)


def test_params_takes_a_spec(model_file):
    result = runner.invoke(app, ["params", "-m", f"{model_file}:build", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["params"] == 314


@pytest.mark.parametrize("spec, args, message", [
    ("{dir}/missing.py:build", [], "no file"),
    ("{dir}/broken.py:build", [], "syntax error in"),
    ("{dir}/my_model.py:buidl", [], "has no 'buidl'; it defines: build"),
    ("{dir}/my_model.py:not_callable", [], "not a callable builder"),
    ("{dir}/my_model.py:needs_width", [], "required arguments (width)"),
    ("{dir}/my_model.py:no_module", [], "returned int, not an nn.Module"),
    ("{dir}/my_model.py:raises", [], "RuntimeError: no weights here"),
    ("{dir}/my_model.py:with_inputs", ["-i", "32x32"], "--input 32x32 does not match them"),
    ("{dir}/my_model.py:image_with_input", ["-b", "3"], "--batch-size 3 does not match them"),
    ("no_such_package.nets:build", [], "no module named 'no_such_package'"),
    ("torchvision:", [], "names no model"),
    ("justtext:", [], "is not a model spec"),
])
def test_bad_specs_are_one_line_exit_2_and_leave_nothing(model_file, spec, args, message):
    (model_file.parent / "broken.py").write_text("def build(:\n    pass\n")
    before = sorted(p.name for p in model_file.parent.iterdir())
    result = runner.invoke(app, ["flops", "-m", spec.format(dir=model_file.parent), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.output
    assert message in result.stderr
    assert sorted(p.name for p in model_file.parent.iterdir()) == before


@pytest.mark.parametrize("kind", ["timm", "torchvision"])
def test_missing_timm_or_torchvision_names_the_install(monkeypatch, kind):
    monkeypatch.setitem(sys.modules, kind, None)  # import fails as it does where the package is absent
    monkeypatch.setattr(outside, "_RESOLVED", {})  # also where it is installed and was resolved before
    result = runner.invoke(app, ["flops", "-m", f"{kind}:resnet50"])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert f"needs {kind}, but {kind} is not installed" in line and line.endswith(outside.TIMM_VENV)
    assert "hrvit-bench[timm]" not in line  # not a published package: the README's own venv, from the checkout


class _BrokenTorchvision:
    """A finder that fails torchvision's import as a torchvision built for another torch does."""

    @staticmethod
    def find_spec(name, path=None, target=None):
        if name == "torchvision":
            raise RuntimeError("operator torchvision::nms does not exist")
        return None


def test_a_torchvision_that_does_not_import_here_gets_the_same_advice(monkeypatch):
    monkeypatch.delitem(sys.modules, "torchvision", raising=False)
    monkeypatch.setattr(sys, "meta_path", [_BrokenTorchvision, *sys.meta_path])
    monkeypatch.setattr(outside, "_RESOLVED", {})
    result = runner.invoke(app, ["flops", "-m", "torchvision:resnet50"])
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert "which does not import here (RuntimeError: operator torchvision::nms" in line
    assert line.endswith(outside.TIMM_VENV)


def test_the_advice_is_the_readmes_timm_venv():
    """The message's commands are the README's "Any model" install line (which .ci/run runs), tests left out."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("## Any model", 1)[1].split("```bash\n", 1)[1]
    assert block.splitlines()[0].replace('".[timm,test]"', '".[timm]"') == outside.TIMM_VENV


def test_latency_refuses_a_builder_with_non_image_inputs(model_file):
    result = runner.invoke(app, ["latency", "-m", f"{model_file}:with_inputs"])
    assert result.exit_code == 2
    assert "make the builder return only the module" in result.stderr


def test_latency_times_a_users_file(model_file):
    result = runner.invoke(app, ["latency", "-m", f"{model_file}:build", "-i", "8x8", "--iters", "5", "--warmup", "1",
                                 "--threads", "1", "--json"])
    assert result.exit_code == 0, result.output
    [data] = json.loads(result.stdout)
    assert data["model"] == f"{model_file}:build"
    assert data["points"][0]["flops"] == 2 * sum(conv_model_macs(1, 8, 8).values())


# --------------------------------------------------------------------------------------------------------------
# hrvit_bench.count and count_macs with an inputs tuple


class TwoInputs(nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = nn.Linear(6, 4)

    def forward(self, x, y):
        return self.proj(x) @ y  # (B, N, 4) @ (B, 4, M)


def test_count_a_module_on_a_shape_leaves_it_where_it_was():
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    result = hrvit_bench.count(model, (2, 3, 16, 20))
    assert result.count.by_operator == conv_model_macs(2, 16, 20)
    assert result.count.total() == sum(conv_model_macs(2, 16, 20).values())
    assert result.count.params == 314
    assert next(model.parameters()).device.type == "cpu"
    assert result.to_dict()["flops"]["macs-all-1e9"]["count"] == result.count.total()
    assert result.tables()  # renders as the CLI does


def test_count_a_module_on_a_tuple_of_tensors_in_both_engines():
    x, y = torch.randn(2, 5, 6), torch.randn(2, 4, 7)
    expected = {"linear": 2 * 5 * 6 * 4, "matmul": 2 * 5 * 4 * 7}
    for engine in ("meta", "fvcore"):
        result = hrvit_bench.count(TwoInputs(), (x, y), engine=engine, name="two")
        assert result.count.by_operator == expected, engine
        assert result.count.input_shape == ((2, 5, 6), (2, 4, 7))
        assert result.count.model == "two"
    assert counting.count(TwoInputs(), (x, y)).by_operator == expected


def test_count_with_cross_checks_and_by_spec(model_file):
    result = hrvit_bench.count(nn.Linear(6, 4), (3, 6), cross_check=True)
    assert [c.macs for c in result.cross_checks] == [3 * 6 * 4] * 3
    by_spec = hrvit_bench.count(f"{model_file}:build")
    assert by_spec.count.model == f"{model_file}:build"
    assert by_spec.count.total() == sum(conv_model_macs(1, 224, 224).values())


def test_count_refuses_a_module_without_inputs():
    with pytest.raises(ValueError, match="needs inputs"):
        hrvit_bench.count(nn.Linear(2, 2))


def test_readme_example_runs():
    """The README's Python example, as printed there."""
    readme = (__import__("pathlib").Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = readme.split("<!-- example: count -->", 1)[1].split("```python", 1)[1].split("```", 1)[0]
    namespace = {}
    exec(textwrap.dedent(block), namespace)
    assert namespace["report"].count.total() == 151_552
