"""Ours against the official code on one GPU: same weights, same input. Equality first, then the two sides timed
interleaved, eager (host and device together) and as CUDA-graph replays (device time alone), with aten operators
and kernel launches per forward: is a family's GPU cost its architecture or its implementation?

    python benchmarks/gpu_vs_official.py --hrvit CHECKOUT --segformer CHECKOUT --cswin CHECKOUT \\
        --hrnet-seg CHECKOUT --out DIR

Checkouts as for benchmarks/official_counts.py (its builders and stand-ins are used; no official code is in this
repository). Writes DIR/vs_official.json and prints a Markdown table last.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import hrvit_bench_models as models
except ImportError:  # not installed: the device machine's offline install may fail (see GPU_SUITE.md)
    import gpu_suite  # noqa: F401  (its import fallback registers models/ as hrvit_bench_models)
    import hrvit_bench_models as models
import _official_shims as shims  # noqa: E402
import official_counts as official  # noqa: E402
from hrvit_bench.latency.stats import ratio_interval  # noqa: E402
from hrvit_bench.latency.timer import cuda_graph_step, time_calls  # noqa: E402
from hrvit_bench.profile import OpEvent, ProfiledSample  # noqa: E402

PAIRS = {  # ours -> checkout; the input each is timed at
    "hrvit_b1_seg_ade20k": ("hrvit", (512, 512)),
    "mit_b1_seg_ade20k": ("segformer", (512, 512)),
    "cswin_t_backbone": ("cswin", (512, 512)),
    "hrnetv2_w18_seg_cityscapes": ("hrnet_seg", (512, 512)),
}


def seeded_state(model: torch.nn.Module, seed: int = 0) -> dict:
    """Every floating-point tensor drawn afresh (running variances in [0.5, 1.5)): nothing hides behind zeros."""
    generator = torch.Generator().manual_seed(seed)
    state = {}
    for name, tensor in model.state_dict().items():
        if tensor.is_floating_point():
            fresh = torch.rand(tensor.shape, generator=generator) + 0.5 if name.endswith("running_var") else \
                torch.randn(tensor.shape, generator=generator) / max(1, tensor[0].numel()) ** 0.5
            tensor = fresh.to(tensor.dtype)
        state[name] = tensor
    return state


def operator_counts(model, x) -> dict:
    """aten operators called from Python and CUDA kernel launches per forward, counted as `hrvit-bench profile`
    counts them."""
    from torch.profiler import ProfilerActivity, profile

    on_gpu = x.device.type == "cuda"
    activities = [ProfilerActivity.CPU] + [ProfilerActivity.CUDA] * on_gpu
    with torch.no_grad(), profile(activities=activities) as prof:
        model(x)
        if on_gpu:
            torch.cuda.synchronize()
    calls = ProfiledSample(0.0, OpEvent.from_profiler(prof.events()), on_gpu).operator_calls()
    return {"aten_top_level": calls.top_level, "kernel_launches": calls.kernel_launches or 0}


def compare(name: str, root: Path, rounds: int, calls: int, device: str = "cuda") -> dict:
    checkout, size = PAIRS[name]
    builder = next(o for family in official.FAMILIES for o in family() if o.model == name)
    with shims.standins():
        theirs = builder.build(root).eval()
    state = seeded_state(theirs)
    theirs.load_state_dict(state, strict=True)
    ours = models.create_model(name).eval()
    ours.load_state_dict(state, strict=True)
    x = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1))
    record = {"model": name, "official": builder.source, "input": f"{size[0]}x{size[1]}", "dtype": "fp32"}
    sides = {"official": theirs, "ours": ours}
    with torch.no_grad():  # float64 on the CPU: each side's fp32 output is held to the official model in fp64
        reference = _first(theirs.double()(x.double()))
        theirs.float()
    xs = x.to(device)
    with torch.no_grad():
        for label, model in sides.items():
            out = _first(model.to(device)(xs)).double().cpu()
            target = reference
            if out.shape != reference.shape:  # official HRNet returns quarter-size logits, ours resizes them
                record[f"{label}_output_shape"] = list(out.shape)
                target = torch.nn.functional.interpolate(reference, size=out.shape[2:], mode="bilinear",
                                                         align_corners=False)
            record[f"{label}_rel_err_vs_fp64"] = float((out - target).norm() / target.norm())
    for label, model in sides.items():
        record[f"{label}_ops"] = operator_counts(model, xs)
    steps = {"eager": {label: (lambda m=model: m(xs)) for label, model in sides.items()}, "graphs": {}}
    for label, model in sides.items():
        if device == "cpu":
            record[f"{label}_graph_error"] = "no CUDA graphs on a CPU"
            continue
        try:
            with torch.no_grad():
                steps["graphs"][label] = cuda_graph_step(model, xs)
        except Exception as exc:  # a side that cannot be captured is timed eager only
            record[f"{label}_graph_error"] = str(exc).splitlines()[0][:300]
    for mode in ("eager", "graphs"):
        if len(steps[mode]) < len(sides):
            continue
        paired, samples = [], {"official": [], "ours": []}
        for i in range(rounds):
            order = ("official", "ours") if i % 2 == 0 else ("ours", "official")
            medians = {}
            for label in order:
                with torch.no_grad():  # 2 untimed calls, then `calls` timed ones (CUDA events on a GPU)
                    times = time_calls(steps[mode][label], xs.device, warmup=2, iters=calls)
                samples[label] += times
                medians[label] = statistics.median(times)
            paired.append((medians["official"], medians["ours"]))
        ratio = ratio_interval(paired)
        record[mode] = {"official_median_ms": statistics.median(samples["official"]),
                        "ours_median_ms": statistics.median(samples["ours"]),
                        "ratio_ours_over_official": ratio.to_dict(), "rounds": rounds, "calls_per_round": calls}
    del sides, steps
    if device == "cuda":
        torch.cuda.empty_cache()
    return record


def _first(out):
    return out[0] if isinstance(out, (list, tuple)) else out


def markdown(records: list[dict]) -> str:
    lines = ["| model | input | rel. err. vs fp64 (official / ours) | aten ops (official / ours) | kernel launches "
             "| eager ms (official / ours, ratio [95% CI]) | graph replay ms (official / ours, ratio [95% CI]) |",
             "|---|---|---|---|---|---|---|"]
    for r in records:
        if "error" in r:
            lines.append(f"| {r['model']} | failed: {r['error']} | | | | | |")
            continue

        def timing(mode):
            t = r.get(mode)
            if not t:
                return r.get("official_graph_error") or r.get("ours_graph_error") or "-"
            q = t["ratio_ours_over_official"]
            return (f"{t['official_median_ms']:.2f} / {t['ours_median_ms']:.2f}, {q['value']:.3f} "
                    f"[{q['low']:.3f}, {q['high']:.3f}]")

        o, u = r["official_ops"], r["ours_ops"]
        lines.append(f"| {r['model']} | {r['input']} | {r['official_rel_err_vs_fp64']:.1e} / "
                     f"{r['ours_rel_err_vs_fp64']:.1e} | {o['aten_top_level']} / {u['aten_top_level']} | "
                     f"{o['kernel_launches']} / {u['kernel_launches']} | {timing('eager')} | {timing('graphs')} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for checkout in sorted({c for c, _ in PAIRS.values()}):
        parser.add_argument(f"--{checkout.replace('_', '-')}", type=Path, metavar="PATH")
    parser.add_argument("--models", default=",".join(PAIRS))
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per side per round")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", ".")))
    parser.add_argument("--device", default="cuda", help="cpu: a smoke run of this script (eager only)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA GPU visible")
    records = []
    for name in args.models.split(","):
        root = getattr(args, PAIRS[name][0])
        if root is None:
            continue
        started = time.monotonic()
        try:
            record = compare(name, root, args.rounds, args.calls, args.device)
        except Exception as exc:  # one pair's failure must not lose the others
            record = {"model": name, "error": str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__}
        record["wall_s"] = round(time.monotonic() - started, 1)
        records.append(record)
        print(json.dumps(record), flush=True)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "vs_official.json").write_text(json.dumps(
            {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu", "torch": torch.__version__,
             "records": records}, indent=1))
    print(markdown(records))
    return 0


if __name__ == "__main__":
    sys.exit(main())
