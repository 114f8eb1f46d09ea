"""The model registry: names, metadata, duplicates, close matches."""
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
