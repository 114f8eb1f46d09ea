"""Regenerate hrvit_bench/data/official_counts.csv: parameter counts and fvcore MAC totals of the OFFICIAL
implementations, counted from official checkouts given as paths (no official code is in this repository).

    python benchmarks/official_counts.py --hrvit /tmp/official_checkouts/hrvit \\
        --segformer /tmp/official_checkouts/segformer --cswin /tmp/official_checkouts/cswin \\
        --hrnet-seg /tmp/official_checkouts/hrnet-seg --hrnet-cls /tmp/official_checkouts/hrnet-cls [--check]

Each path is a checkout of the repository at the commit in COMMITS (``git --git-dir=MIRROR archive COMMIT | tar
-x -C PATH``, or a work tree, whose HEAD is then checked). Rows of a checkout that is not given are kept from the
existing table; ``--models GLOB`` recounts only matching rows. ``--check`` writes nothing: it compares the counts
with the committed table and exits 1 naming every row that differs, is missing or is new.

The official files are imported from the checkouts with the stand-ins of benchmarks/_official_shims.py for
timm, einops, mmcv and mmseg; segmenters are built from the official configs (mmcv config files with their
``_base_`` model files, HRNet's yacs defaults with its experiment YAMLs) as mmseg's EncoderDecoder would, or by
the official ``get_*_net``/``get_seg_model``. Each row: parameters of the model as built, and fvcore's
FlopCountAnalysis total (plain, no extra handles) on a batch-1 zeros input, eval mode, under no_grad.

A full regeneration (56 rows, 24 of them fvcore counts) took 2.6 minutes on the 2-core CPU VM at load 1, and 11
minutes at load 3.5; HRViT's rows are most of it (the three 1024x1024 ones about a quarter).
"""
from __future__ import annotations

import argparse
import csv
import fnmatch
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

import hrvit_bench_models as models

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _official_shims as shims  # noqa: E402

TABLE = Path(__file__).resolve().parents[1] / "hrvit_bench" / "data" / "official_counts.csv"
COLUMNS = ["model", "task", "input", "params", "fvcore_macs", "source", "note"]
COMMITS = {
    "hrvit": ("facebookresearch/HRViT", "6a63b5bc829b711073019cffdcc9beb6e81547a9"),
    "segformer": ("NVlabs/SegFormer", "65fa8cfa9b52b6ee7e8897a98705abf8570f9e32"),
    "cswin": ("microsoft/CSWin-Transformer", "f111ae2f771df32006e7afd7916835dd67d4cb9d"),
    "hrnet_seg": ("HRNet/HRNet-Semantic-Segmentation", "0bbb2880446ddff2d78f8dd7e8c4c610151d5a51"),
    "hrnet_cls": ("HRNet/HRNet-Image-Classification", "f760c988482cdb8a1f69b10b219d669721144582"),
}


@dataclass(frozen=True)
class Official:
    """One official model: how to build it from the checkout's root, and how to label its rows."""
    checkout: str
    model: str  # our registered name
    task: str
    path: str  # the official file that defines the model as built: its config where one exists
    build: Callable[[Path], nn.Module]
    note: str = ""

    @property
    def source(self) -> str:
        repo, commit = COMMITS[self.checkout]
        return f"{repo}@{commit}:{self.path}"


# Inputs at which fvcore counts each model (the others get a params-only row at their default input): published
# settings, small odd inputs that exercise padding, and three 1024x1024 HRViT rows (a quarter of the run's time).
MEASURED = {
    "hrvit_b1": [(224, 224)], "hrvit_b2": [(224, 224)], "hrvit_b3": [(224, 224)],
    "hrvit_b1_backbone": [(96, 96), (1024, 1024)],
    "hrvit_b1_seg_ade20k": [(512, 512)], "hrvit_b2_seg_ade20k": [(512, 512)], "hrvit_b3_seg_ade20k": [(512, 512)],
    "hrvit_b1_seg_cityscapes": [(512, 512), (1024, 1024)], "hrvit_b2_seg_cityscapes": [(512, 512)],
    "hrvit_b3_seg_cityscapes": [(512, 512)], "hrvit_b3_w1239_seg_cityscapes": [(512, 512), (1024, 1024)],
    "mit_b0_backbone": [(64, 96)], "mit_b0_seg_ade20k": [(97, 131)], "mit_b0_seg_cityscapes": [(97, 131)],
    "mit_b1_seg_ade20k": [(512, 512)],
    "cswin_t": [(224, 224)], "cswin_s": [(224, 224)], "cswin_b": [(224, 224)], "cswin_t_backbone": [(97, 131)],
    "hrnetv2_w18": [(224, 224)], "hrnetv2_w32": [(224, 224)], "hrnetv2_w48": [(224, 224)],
    "hrnetv2_w18_seg_cityscapes": [(97, 131)], "hrnetv2_w18_ocr_ade20k": [(97, 131)],
}


# --- configs ------------------------------------------------------------------------------------------------

def _merge(base: dict, child: dict) -> dict:
    """mmcv's rule: dicts merge key by key, unless the child's says _delete_=True; anything else replaces."""
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict):
            plain = {k: v for k, v in value.items() if k != "_delete_"}
            keep = isinstance(base.get(key), dict) and not value.get("_delete_", False)
            merged[key] = _merge(base[key], plain) if keep else plain
        else:
            merged[key] = value
    return merged


def mmcv_config(path: Path, moved: dict[str, Path] | None = None) -> dict:
    """An mmcv config file's settings with its ``_base_`` files merged under them. A base missing from the
    checkout is looked up in ``moved`` (where the README says to copy it from), else skipped: the missing ones
    are dataset, runtime and schedule files, which hold no model settings."""
    namespace: dict = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    bases = namespace.pop("_base_", [])
    merged: dict = {}
    for base in [bases] if isinstance(bases, str) else bases:
        base_path = (moved or {}).get(base, path.parent / base)
        if base_path.exists():
            merged = _merge(merged, mmcv_config(base_path, moved))
    return _merge(merged, {k: v for k, v in namespace.items() if not k.startswith("__")})


def mmseg_segmentor(model_cfg: dict, backbone_type=None) -> nn.Module:
    """EncoderDecoder from an mmseg ``model`` dict: registered backbone and decode head with the config's
    arguments (``backbone_type`` replaces the registered backbone class)."""
    backbone, head = dict(model_cfg["backbone"]), dict(model_cfg["decode_head"])
    backbone_cls = backbone_type or shims.BACKBONES[backbone["type"]]
    backbone.pop("type")
    return shims.EncoderDecoder(backbone_cls(**backbone), shims.HEADS[head.pop("type")](**head))


def yacs_config(lib: Path, experiment: Path, **extra_overrides):
    """HRNet's yacs defaults (lib/config/default.py) with an experiment YAML merged in, then overrides."""
    config = shims.import_file("official_config", lib / "config" / "default.py")._C.clone()
    config.merge_from_file(str(experiment))
    for key, value in extra_overrides.items():
        node = config
        *parents, leaf = key.split(".")
        for parent in parents:
            node = node[parent]
        node[leaf] = value
    return config


# --- HRViT (facebookresearch/HRViT) -------------------------------------------------------------------------

HRVIT_SEG = "segmentation/mmseg/models"


def _hrvit_modules(root: Path):
    shims.import_file("mmseg.models.decode_heads.official_hrvit_head",
                      root / HRVIT_SEG / "decode_heads" / "segformer_head.py")
    return shims.import_file("mmseg.models.backbones.official_hrvit", root / HRVIT_SEG / "backbones" / "hrvit.py")


def _hrvit_classifier(variant):
    def build(root):
        return getattr(shims.import_file("official_hrvit_cls", root / "models" / "hrvit.py"), f"HRViT_{variant}_224")()
    return build


def _hrvit_backbone(variant):
    return lambda root: getattr(_hrvit_modules(root), f"hrvit_{variant}")()


def _hrvit_config(variant, dataset):
    crop = "512x512_ade20k" if dataset == "ade20k" else "1024x1024_cityscapes"
    return f"segmentation/configs/hrvit/segformer_hrvit_{variant}_{crop}_160k.py"


def _hrvit_segmenter(variant, dataset, ws_list=None):
    def build(root):
        backbones = _hrvit_modules(root)
        model = mmcv_config(root / _hrvit_config(variant, dataset))["model"]
        if variant == "b2":  # the config's [48, 96, 192, 384] does not fit the backbone's 240-wide third branch
            model["decode_head"]["in_channels"] = [48, 96, 240, 384]
        backbone_type = None
        if ws_list is not None:  # hrvit_b3 passes ws_list itself: a subclass between it and HRViT replaces it
            class Windows(backbones.HRViT):
                def __init__(self, **kwargs):
                    super().__init__(**{**kwargs, "ws_list": ws_list})
            backbone_type = type("hrvit_b3_w1239", (backbones.hrvit_b3, Windows), {})
        return mmseg_segmentor(model, backbone_type)
    return build


B2_NOTE = ("decode head in_channels [48, 96, 240, 384]: the official b2 config's [48, 96, 192, 384] does not fit "
           "the backbone's 240-wide third branch (that model fails in its forward)")
W1239_NOTE = ("the official b3 Cityscapes config with the backbone's ws_list=(1, 2, 3, 9), the paper's Cityscapes "
              "stripe widths (the release ships 1-2-7-7)")
SEG_NOTE = "mmseg EncoderDecoder whole-image inference: the count includes the resize of the logits to the input"


def hrvit_models() -> list[Official]:
    found = [Official("hrvit", f"hrvit_{v}", "classification", "models/hrvit.py", _hrvit_classifier(v))
             for v in ("b1", "b2", "b3")]
    found += [Official("hrvit", f"hrvit_{v}_backbone", "backbone", f"{HRVIT_SEG}/backbones/hrvit.py",
                       _hrvit_backbone(v)) for v in ("b1", "b2", "b3")]
    found += [Official("hrvit", f"hrvit_{v}_seg_{dataset}", "segmentation", _hrvit_config(v, dataset),
                       _hrvit_segmenter(v, dataset), "; ".join([SEG_NOTE] + [B2_NOTE] * (v == "b2")))
              for v in ("b1", "b2", "b3") for dataset in ("ade20k", "cityscapes")]
    found.append(Official("hrvit", "hrvit_b3_w1239_seg_cityscapes", "segmentation", _hrvit_config("b3", "cityscapes"),
                          _hrvit_segmenter("b3", "cityscapes", ws_list=(1, 2, 3, 9)), f"{SEG_NOTE}; {W1239_NOTE}"))
    return found


# --- MiT / SegFormer (NVlabs/SegFormer) ---------------------------------------------------------------------

def _segformer_modules(root: Path):
    shims.import_file("mmseg.models.decode_heads.official_segformer_head",
                      root / "mmseg" / "models" / "decode_heads" / "segformer_head.py")
    return shims.import_file("mmseg.models.backbones.official_mit",
                             root / "mmseg" / "models" / "backbones" / "mix_transformer.py")


def _segformer_config(variant, crop_dataset):
    return f"local_configs/segformer/{variant.upper()}/segformer.{variant}.{crop_dataset}.160k.py"


def _segformer_segmenter(config):
    def build(root):
        _segformer_modules(root)
        return mmseg_segmentor(mmcv_config(root / config)["model"])
    return build


B5_ADE_NOTE = "the release's only B5 ADE20K config is the 640x640 one: the same model"


def mit_models() -> list[Official]:
    found = []
    for variant in (f"b{i}" for i in range(6)):
        found.append(Official("segformer", f"mit_{variant}_backbone", "backbone",
                              "mmseg/models/backbones/mix_transformer.py",
                              lambda root, v=variant: getattr(_segformer_modules(root), f"mit_{v}")()))
        for name, crop in (("seg_ade20k", "512x512.ade"), ("seg_cityscapes", "1024x1024.city")):
            note = SEG_NOTE
            if (variant, name) == ("b5", "seg_ade20k"):  # the crop size only sets the data pipeline
                crop, note = "640x640.ade", f"{SEG_NOTE}; {B5_ADE_NOTE}"
            config = _segformer_config(variant, crop)
            found.append(Official("segformer", f"mit_{variant}_{name}", "segmentation", config,
                                  _segformer_segmenter(config), note))
    config = _segformer_config("b5", "640x640.ade")
    found.append(Official("segformer", "mit_b5_seg_ade20k_640", "segmentation", config, _segformer_segmenter(config),
                          SEG_NOTE))
    return found


# --- CSWin (microsoft/CSWin-Transformer) --------------------------------------------------------------------

CSWIN_CLASSIFIERS = {"t": "CSWin_64_12211_tiny_224", "s": "CSWin_64_24322_small_224", "b": "CSWin_96_24322_base_224"}
CSWIN_CONFIGS = {"t": "tiny", "s": "small", "b": "base"}
CSWIN_BASE_NOTE = ("backbone settings of the config merged over segmentation/configs/_base/upernet_cswin.py, the "
                   "base its _base_ names as ../_base_/models/upernet_cswin.py (where the README copies it)")


def _cswin_classifier(variant):
    def build(root):
        return getattr(shims.import_file("official_cswin_cls", root / "models" / "cswin.py"),
                       CSWIN_CLASSIFIERS[variant])()
    return build


def _cswin_backbone(variant):
    def build(root):
        dense = shims.import_file("mmseg.models.backbones.official_cswin",
                                  root / "segmentation" / "backbone" / "cswin_transformer.py")
        configs = root / "segmentation" / "configs"
        model = mmcv_config(configs / "cswin" / f"upernet_cswin_{CSWIN_CONFIGS[variant]}.py",
                            moved={"../_base_/models/upernet_cswin.py": configs / "_base" / "upernet_cswin.py"})
        backbone = dict(model["model"]["backbone"])
        assert backbone.pop("type") == "CSWin"
        return dense.CSWin(**backbone)
    return build


def cswin_models() -> list[Official]:
    found = [Official("cswin", f"cswin_{v}", "classification", "models/cswin.py", _cswin_classifier(v))
             for v in "tsb"]
    found += [Official("cswin", f"cswin_{v}_backbone", "backbone",
                       f"segmentation/configs/cswin/upernet_cswin_{CSWIN_CONFIGS[v]}.py", _cswin_backbone(v),
                       CSWIN_BASE_NOTE) for v in "tsb"]
    return found


# --- HRNet (HRNet/HRNet-Semantic-Segmentation, HRNet/HRNet-Image-Classification) ----------------------------

HRNET_SEG_EXPERIMENTS = {
    ("seg", "cityscapes"): "experiments/cityscapes/seg_hrnet_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml",
    ("seg", "ade20k"): "experiments/ade20k/seg_hrnet_w48_520x520_sgd_lr2e-2_wd1e-4_bs_16_epoch120.yaml",
    ("ocr", "cityscapes"):
        "experiments/cityscapes/seg_hrnet_ocr_w48_train_512x1024_sgd_lr1e-2_wd5e-4_bs_12_epoch484.yaml",
    ("ocr", "ade20k"): "experiments/ade20k/seg_hrnet_ocr_w48_520x520_ohem_sgd_lr2e-2_wd1e-4_bs_16_epoch120.yaml",
}
HRNET_WIDTH_NOTE = "the W48 config with NUM_CHANNELS of stages 2-4 at width {w} (the release has no W{w} config)"
HRNET_RESIZE_NOTE = ("the official forward returns logits at 1/4 resolution{ocr}: the count lacks our final bilinear "
                     "resize to the input, which fvcore counts as 4 per output element (4 x classes x H x W); "
                     "tests add that to this number")


def _hrnet_segmenter(head, dataset, width):
    def build(root):
        lib = root / "lib"
        widths = [width * 2 ** i for i in range(4)]
        overrides = {f"MODEL.EXTRA.STAGE{s}.NUM_CHANNELS": widths[:s] for s in (2, 3, 4)}
        overrides["MODEL.PRETRAINED"] = ""  # ImageNet weights to start from: absent here, and no count needs them
        config = yacs_config(lib, root / HRNET_SEG_EXPERIMENTS[head, dataset], **overrides)
        module = shims.import_package_file("official_hrnet_seg", lib / "models",
                                           "seg_hrnet_ocr" if head == "ocr" else "seg_hrnet")
        return module.get_seg_model(config)
    return build


def _hrnet_classifier(width):
    def build(root):
        config = yacs_config(root / "lib", root / f"experiments/cls_hrnet_w{width}_sgd_lr5e-2_wd1e-4_bs32_x100.yaml")
        return shims.import_file("official_hrnet_cls", root / "lib" / "models" / "cls_hrnet.py").get_cls_net(config)
    return build


def hrnet_models() -> list[Official]:
    found = [Official("hrnet_cls", f"hrnetv2_w{w}", "classification",
                      f"experiments/cls_hrnet_w{w}_sgd_lr5e-2_wd1e-4_bs32_x100.yaml", _hrnet_classifier(w))
             for w in (18, 32, 48)]
    for (head, dataset), experiment in HRNET_SEG_EXPERIMENTS.items():
        resize = HRNET_RESIZE_NOTE.format(ocr=" (OCR: [aux, main], both counted)" if head == "ocr" else "")
        found += [Official("hrnet_seg", f"hrnetv2_w{w}_{head}_{dataset}", "segmentation", experiment,
                           _hrnet_segmenter(head, dataset, w),
                           "; ".join([HRNET_WIDTH_NOTE.format(w=w)] * (w != 48) + [resize]))
                  for w in (18, 32, 48)]
    return found


FAMILIES = [hrvit_models, mit_models, cswin_models, hrnet_models]


def rows_of(official: Official) -> list[tuple[tuple[int, int], bool]]:
    """(input, whether fvcore counts it): the MEASURED inputs, else one params-only row at the default input."""
    if official.model in MEASURED:
        return [(size, True) for size in MEASURED[official.model]]
    return [(models.model_info(official.model).input_size, False)]


# --- counting and the table ---------------------------------------------------------------------------------

def count(official: Official, size: tuple[int, int], with_macs: bool, root: Path) -> dict:
    from fvcore.nn import FlopCountAnalysis  # here: benchmarks/gpu_vs_official.py builds on machines without fvcore

    with shims.standins():
        model = official.build(root).eval()
        params = sum(p.numel() for p in model.parameters())
        macs = ""
        if with_macs:
            analysis = FlopCountAnalysis(model, torch.zeros(1, 3, *size))
            analysis.unsupported_ops_warnings(False)
            analysis.uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            with torch.no_grad():
                macs = analysis.total()
    return {"model": official.model, "task": official.task, "input": f"{size[0]}x{size[1]}", "params": str(params),
            "fvcore_macs": str(macs), "source": official.source, "note": official.note}


def read_table(path: Path) -> dict[tuple[str, str], dict]:
    if not path.exists():
        return {}
    with path.open(newline="") as handle:
        return {(r["model"], r["input"]): r for r in csv.DictReader(handle)}


def write_table(path: Path, rows: list[dict]) -> None:
    """Atomically: a reader never sees half a table."""
    with tempfile.NamedTemporaryFile("w", newline="", dir=path.parent, suffix=".tmp", delete=False) as handle:
        writer = csv.DictWriter(handle, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    os.replace(handle.name, path)


def check_commit(name: str, root: Path) -> None:
    """A work tree must be at the commit the table names (an archive extract cannot be checked)."""
    if (root / ".git").exists():
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        if head != COMMITS[name][1]:
            sys.exit(f"{root} is at {head}, not {COMMITS[name][1]} ({COMMITS[name][0]})")


def sort_key(row: dict):
    h, w = map(int, row["input"].split("x"))
    return row["model"], h * w, h


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in COMMITS:
        parser.add_argument(f"--{name.replace('_', '-')}", type=Path, metavar="PATH",
                            help=f"checkout of {COMMITS[name][0]}@{COMMITS[name][1][:7]}")
    parser.add_argument("--models", default="*", help="recount only rows whose model matches this glob")
    parser.add_argument("--table", type=Path, default=TABLE)
    parser.add_argument("--check", action="store_true", help="compare with the table instead of writing it")
    args = parser.parse_args(argv)

    roots = {name: getattr(args, name) for name in COMMITS if getattr(args, name) is not None}
    for name, root in roots.items():
        check_commit(name, root)
    existing = read_table(args.table)
    todo = {(o.model, f"{size[0]}x{size[1]}"): (o, size, with_macs) for family in FAMILIES for o in family()
            if o.checkout in roots and fnmatch.fnmatch(o.model, args.models) for size, with_macs in rows_of(o)}
    recounted = tuple(f"{COMMITS[name][0]}@" for name in roots)
    table = {key: row for key, row in existing.items()  # a given checkout's rows are all recounted or gone
             if not (row["source"].startswith(recounted) and fnmatch.fnmatch(row["model"], args.models))}
    started = time.perf_counter()
    for key, (official, size, with_macs) in todo.items():
        row_started = time.perf_counter()
        table[key] = count(official, size, with_macs, roots[official.checkout])
        print(f"{key[0]:34s} {key[1]:>9s} params {int(table[key]['params']):>12,} fvcore "
              f"{table[key]['fvcore_macs'] or '-':>15s}  {time.perf_counter() - row_started:6.1f} s", file=sys.stderr)
    print(f"{len(todo)} rows counted in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    rows = sorted(table.values(), key=sort_key)

    if not args.check:
        write_table(args.table, rows)
        return 0
    differing = [describe_difference(key, existing.get(key), table.get(key))
                 for key in sorted(set(existing) | set(table)) if existing.get(key) != table.get(key)]
    for line in differing:
        print(line)
    return 1 if differing else 0


def describe_difference(key, committed: dict | None, counted: dict | None) -> str:
    if committed is None or counted is None:
        return f"{key[0]} {key[1]}: only in the {'counts' if committed is None else 'committed table'}"
    fields = [f"{c} committed {committed[c]!r}, counted {counted[c]!r}" for c in COLUMNS if committed[c] != counted[c]]
    return f"{key[0]} {key[1]}: " + "; ".join(fields)


if __name__ == "__main__":
    sys.exit(main())
