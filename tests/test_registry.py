"""The model registry: names, metadata, duplicates, close matches, and the catalog that lists them without torch."""
import json
import subprocess
import sys

import pytest

import hrvit_bench_models as models
from hrvit_bench_models import TASKS, UnknownModelError


def test_names_are_lower_case_and_unique():
    names = models.list_models()
    assert len(names) == len(set(names))
    assert all(n == n.lower() for n in names)


def test_every_model_has_complete_metadata():
    for name in models.list_models():
        info = models.model_info(name)
        assert info.task in TASKS
        assert info.reference and info.official_code
        assert info.input_size in info.paper_inputs
        if info.task == "backbone":
            assert info.num_classes is None
        else:
            assert info.num_classes in (1000, 150, 19)
            assert {1000: "imagenet", 150: "ade20k", 19: "cityscapes"}[info.num_classes] == info.dataset


def test_every_family_in_every_task():
    for family in ("hrvit", "mit", "cswin", "hrnet"):
        tasks = {models.model_info(n).task for n in models.list_models(family=family)}
        assert tasks == set(TASKS), family
    assert {models.model_info(n).task for n in models.list_models(family="hrnet_vit")} >= {"segmentation", "backbone"}


def test_registering_a_name_twice_is_an_error(toy_model):
    with pytest.raises(ValueError, match="already registered"):
        models.register_model(
            family="toy", variant="t", task="backbone", input_size=(8, 8), reference="-", official_code="-",
            name=toy_model,
        )(lambda: None)


def test_unknown_name_lists_close_matches():
    with pytest.raises(UnknownModelError) as err:
        models.create_model("hrvit_b4")
    assert "hrvit_b1" in err.value.suggestions
    assert "did you mean" in str(err.value)


def test_toy_model_is_listed_and_built_with_overrides(toy_model):
    assert toy_model in models.list_models("toy_*")
    assert models.create_model(toy_model, num_classes=3).fc.out_features == 3


def test_reconstructions_say_why_and_official_models_say_nothing():
    rebuilt = {n for n in models.list_models() if models.model_info(n).reconstruction}
    expected = (set(models.list_models("hrnet_mit_*")) | set(models.list_models("cswin_*_seg_*"))
                | {f"mit_b{i}" for i in range(6)}
                | {n for n in models.list_models("hrvit_*") if models.model_info(n).ablation})
    assert rebuilt == expected
    assert all(len(models.model_info(n).reconstruction) > 20 for n in rebuilt)


def test_attention_paths_are_declared():
    paths = {models.model_info(n).attention for n in models.list_models()}
    assert paths <= set(models.ATTENTION_PATHS)
    with pytest.raises(ValueError, match="attention"):
        models.register_model(family="toy", variant="t", task="backbone", input_size=(8, 8), reference="r",
                              official_code="c", attention="flash", name="toy_bad_attention")(lambda: None)


def test_the_catalog_is_what_the_family_modules_declare():
    """catalog.json (what `list` reads without torch) equals, byte for byte, what the family modules register:
    regenerate it with `python -m hrvit_bench_models._catalog` after changing a registration."""
    from hrvit_bench_models import _catalog, _registry

    assert _registry.CATALOG.read_text() == _catalog.render(_catalog.entries())


def test_every_catalogued_builder_resolves_and_declares_the_listed_metadata():
    from hrvit_bench_models import _registry

    names = models.list_models()
    assert len(names) == 91
    for name in names:
        assert callable(_registry.builder(name)), name
    declared = _registry.declarations()
    for name in names:
        info, module = declared[name]
        assert models.model_info(name) == info, name
        assert module == _registry._MODULE[name] and module.startswith("hrvit_bench_models."), name


def test_registering_a_catalogued_name_from_another_module_is_an_error():
    with pytest.raises(ValueError, match=r"'mit_b0' is already registered \(by hrvit_bench_models.mit\)"):
        models.register_model(family="toy", variant="t", task="backbone", input_size=(8, 8), reference="-",
                              official_code="-", name="mit_b0")(lambda: None)
    assert models.model_info("mit_b0").family == "mit"


@pytest.mark.slow
def test_names_and_metadata_need_no_torch_and_a_build_imports_only_its_family():
    code = """
import sys, json
import hrvit_bench_models as models
listed = (len(models.list_models()), models.model_info("mit_b1").attention,
          "hrvit_b1" in models.close_matches("hrvit_b4"))
before = sorted(m for m in sys.modules if m == "torch" or m.startswith("hrvit_bench_models."))
models.create_model("mit_b0")
after = sorted(m for m in sys.modules if m.startswith("hrvit_bench_models.") and m.count(".") == 1)
print(json.dumps([listed, before, after]))
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    listed, before, after = json.loads(done.stdout)
    assert listed == [91, "sdpa", True]
    assert before == ["hrvit_bench_models._registry"]
    assert after == ["hrvit_bench_models._registry", "hrvit_bench_models.heads", "hrvit_bench_models.layers",
                     "hrvit_bench_models.mit"]
