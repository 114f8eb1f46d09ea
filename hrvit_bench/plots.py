"""The report's figures, rendered to bytes (PNG and SVG) so the report can write them atomically."""
from __future__ import annotations

import io

import matplotlib

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
    rows = [r for r in report.latency if r.get("median_ms") is not None]
    if not rows:
        return {}
    fig, ax = plt.subplots(figsize=(7, 5))
    for r in rows:
        color = FAMILY_COLORS.get(zoo.info(r["model"]).family, "black")
        ax.scatter(r["gmacs"], r["median_ms"], color=color, s=30)
        ax.annotate(r["model"].split("_seg")[0], (r["gmacs"], r["median_ms"]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("GMACs (all ops, 1e9)")
    ax.set_ylabel(f"median latency (ms, {rows[0].get('device', '')})")
    ax.set_title("latency vs FLOPs")
    ax.grid(alpha=0.3)
    return _render(fig, "latency_vs_flops")


def render_all(report) -> dict[str, bytes]:
    return {**params_vs_flops(report), **claim_bars(report), **latency_vs_flops(report)}
