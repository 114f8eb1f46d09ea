"""The report's figures, rendered to bytes (PNG and SVG) so the report can write them atomically."""
from __future__ import annotations

import io

import matplotlib
import numpy as np

matplotlib.use("Agg")
matplotlib.rcParams["svg.hashsalt"] = "hrvit-bench"  # stable SVG ids: committed plots change only with the data
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402

from . import zoo  # noqa: E402

FAMILY_COLORS = {"hrvit": "tab:red", "mit": "tab:blue", "cswin": "tab:green", "hrnet": "tab:purple",
                 "hrnet_vit": "tab:orange"}


def _render(fig, stem: str) -> dict[str, bytes]:
    out = {}
    for fmt in ("png", "svg"):
        buffer = io.BytesIO()
        # Fixed metadata: the same figure gives the same bytes, so committed plots change only with the data.
        metadata = {"Date": None} if fmt == "svg" else {"Software": None}
        fig.savefig(buffer, format=fmt, dpi=120, bbox_inches="tight", metadata=metadata)
        out[f"{stem}.{fmt}"] = buffer.getvalue()
    plt.close(fig)
    return out


def params_vs_flops(report) -> dict[str, bytes]:
    panels = (("ImageNet classifiers, 224x224", lambda r: r.task == "classification" and r.input == "224x224"),
              ("ADE20K segmenters, 512x512", lambda r: r.dataset == "ade20k" and r.input == "512x512"))
    fig, axes = plt.subplots(1, 2, figsize=(12, 5))
    for ax, (title, keep) in zip(axes, panels):
        for family, color in FAMILY_COLORS.items():
            rows = [r for r in report.rows if r.family == family and keep(r) and not _is_ablation(r.model)]
            if rows:
                ax.scatter([r.giga["macs-all-1e9"] for r in rows], [r.params / 1e6 for r in rows], color=color,
                           label=family, s=36)
                for r in rows:
                    ax.annotate(r.model.split("_seg")[0], (r.giga["macs-all-1e9"], r.params / 1e6), fontsize=7,
                                xytext=(3, 3), textcoords="offset points")
        ax.set_title(title)
        ax.set_xlabel("GMACs (all ops, 1e9)")
        ax.set_ylabel("parameters (M)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return _render(fig, "params_vs_flops")


def _is_ablation(name: str) -> bool:
    return zoo.info(name).ablation is not None


def claim_bars(report) -> dict[str, bytes]:
    """Stated vs measured relative change for every claim with a stated number (FLOPs: fvcore's convention)."""
    rows = [h for h in report.claims.cost_headlines if h.claim.kind == "change"]
    labels = [f"{h.claim.id}\n{h.claim.metric}@{h.claim.input[0]}" for h in rows]
    colors = {"holds": "tab:green", "does not hold": "tab:red"}
    fig, ax = plt.subplots(figsize=(max(8, 0.7 * len(rows)), 5))
    x = range(len(rows))
    ax.bar([i - 0.2 for i in x], [h.claim.stated_pct for h in rows], width=0.4, label="stated", color="0.7")
    ax.bar([i + 0.2 for i in x], [h.measured_pct for h in rows], width=0.4, label="measured",
           color=[colors.get(h.verdict, "tab:olive") for h in rows])
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xticks(list(x))
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("relative change (%)")
    ax.set_title("HRViT's stated savings vs measured (FLOPs: MACs, all ops)")
    ax.legend(handles=[Patch(color="0.7", label="stated"), Patch(color="tab:green", label="measured, holds"),
                       Patch(color="tab:red", label="measured, does not hold"),
                       Patch(color="tab:olive", label="measured, depends on the convention")])
    ax.grid(axis="y", alpha=0.3)
    return _render(fig, "claims")


def latency_vs_flops(report) -> dict[str, bytes]:
    """Log-log, one colour per family: the spread in time at equal FLOPs is the point. Ablations are hollow and
    unlabelled, so the labels that remain can be read."""
    rows = [r for r in report.latency if r.get("median_ms") is not None]
    if not rows:
        return {}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    seen = set()
    for r in rows:
        family = zoo.info(r["model"]).family
        color = FAMILY_COLORS.get(family, "black")
        ablation = _is_ablation(r["model"])
        label = None if ablation or family in seen else family  # the legend shows filled markers
        ax.scatter(r["gmacs"], r["median_ms"], s=30, color="none" if ablation else color, edgecolors=color,
                   label=label)
        seen.add(label)
        if not ablation:
            ax.annotate(f"{r['model'].split('_seg')[0]} {r['input']}", (r["gmacs"], r["median_ms"]), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GMACs per forward (all ops, 1e9)")
    ax.set_ylabel(f"median latency (ms, {rows[0].get('device', '')})")
    ax.set_title("latency vs FLOPs (hollow: HRViT ablations)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, title="family", title_fontsize=7)
    return _render(fig, "latency_vs_flops")


def latency_vs_flops_by_device(cross) -> dict[str, bytes]:
    """One series per device (merge.CrossDevice): where the same FLOPs cost different time on different hardware."""
    rows = [r for r in cross.rows if r["gmacs"]]
    if not any(r["medians"].get(d) is not None for r in rows for d in cross.devices):
        return {}
    fig, ax = plt.subplots(figsize=(8, 5.5))
    for index, device in enumerate(cross.devices):
        points = sorted((r["gmacs"], r["medians"][device], r) for r in rows if r["medians"].get(device) is not None)
        if not points:
            continue
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", markersize=5, linestyle="none",
                color=f"C{index}", label=device + (" (reference)" if device == cross.reference else ""))
        if device == cross.reference:
            for x, y, r in points:
                ax.annotate(f"{r['model'].split('_seg')[0]} {r['input']}" + (f" b{r['batch_size']}"
                                                                           if r["batch_size"] != 1 else ""),
                            (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("GMACs per forward (all ops, 1e9)")
    ax.set_ylabel("median latency (ms)")
    ax.set_title("latency vs FLOPs, one series per device")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    return _render(fig, "latency_vs_flops_by_device")


def roofline(profiles) -> dict[str, bytes]:
    """Each module row of each profile as a point: FLOPs per byte moved (a lower bound on traffic, so a point can
    only move left) against achieved GFLOP/s, under the measured roofs and, on a known GPU, the datasheet's."""
    profiles = [p for p in profiles if p.roofline_rows()]
    if not profiles:
        return {}
    roof = profiles[0].roofline
    rows = [r for p in profiles for r in p.roofline_rows()]
    low = min(r.intensity for r in rows) / 2
    ridges = [peak / roof.datasheet_gbs for peak in roof.datasheet_gflops.values()] if roof.datasheet_gbs else []
    high = max(max(r.intensity for r in rows), roof.ridge, *ridges) * 2
    xs = np.geomspace(low, high, 256)
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    ax.plot(xs, [roof.bound(x) for x in xs], color="black", linewidth=1.2,
            label=f"measured: {roof.dtype} matmul {roof.measured_gflops:,.0f} GFLOP/s, copy "
                  f"{roof.measured_gbs:,.1f} GB/s")
    for key, peak in roof.datasheet_gflops.items():
        bandwidth = roof.datasheet_gbs or roof.measured_gbs
        ax.plot(xs, np.minimum(peak, bandwidth * xs), color="0.45", linestyle="--", linewidth=1,
                label=f"datasheet: {key} {peak:,.0f} GFLOP/s, " + (f"{bandwidth:,.0f} GB/s" if roof.datasheet_gbs
                                                                  else "measured bandwidth"))
    families = [zoo.info(p.model).family for p in profiles]
    palette = ([FAMILY_COLORS.get(f, "black") for f in families] if len(set(families)) == len(families)
               else [f"C{i}" for i in range(len(profiles))])
    unplotted = []
    for index, (profile, color) in enumerate(zip(profiles, palette)):
        points = profile.roofline_rows()
        ax.scatter([r.intensity for r in points], [r.gflops for r in points], s=[12 + 600 * r.share for r in points],
                   color=color, alpha=0.65, edgecolors="none",
                   label=f"{profile.model} @ {zoo.format_size(profile.input_shape[2:])}, modules at depth "
                         f"{profile.depth} (area: share of time)")
        largest = max(points, key=lambda r: r.share)  # one label per model, above or below: points crowd
        ax.annotate(f"{'.'.join(largest.name.split('.')[-2:])} ({100 * largest.share:.0f}% of the time)",
                    (largest.intensity, largest.gflops), fontsize=7, color=color, ha="right",
                    xytext=(-40, 26 if index % 2 == 0 else -26), textcoords="offset points",
                    arrowprops={"arrowstyle": "-", "color": color, "linewidth": 0.6})
        unplotted.append(f"{profile.model} {100 * (1 - sum(r.share for r in points)):.0f}%")
    ax.annotate("Time not on the plot (parents' own code, code outside modules, modules without FLOPs): "
                + ", ".join(unplotted) + ".", xy=(0, -0.15), xycoords="axes fraction", fontsize=7, color="0.3")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity: FLOPs / bytes moved (parameters + input and output activations)")
    ax.set_ylabel("achieved GFLOP/s (2 x MACs / median time)")
    on_cpu = profiles[0].settings.torch_device.type == "cpu"
    threads = f", {roof.threads} thread{'s' if roof.threads != 1 else ''}" if on_cpu else ""
    ax.set_title(f"roofline: {roof.device_name}{threads}, {roof.dtype}", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    return _render(fig, "roofline")


def render_all(report) -> dict[str, bytes]:
    return {**params_vs_flops(report), **claim_bars(report), **latency_vs_flops(report), **roofline(report.profiles)}
