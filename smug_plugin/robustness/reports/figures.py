"""Figures of a robustness run (matplotlib, Agg backend): metric-vs-shift curves, image panels and the figure of
each sanity check."""

import pathlib
from collections import defaultdict

import numpy as np

from smug_plugin.atomic import atomic_path
from smug_plugin.robustness.metrics import summarize
from smug_plugin.robustness.run.records import load_panels
from smug_plugin.robustness.run.sweeps import SWEEPS


def _save(fig, path: pathlib.Path) -> None:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")


BUDGET_UNITS = {
    "absolute": "DIRECT's normalised units",
    "paper": "paper units: x s_ref per real/imag entry",
    "relative_max": "x max |real/imag| of the measurement",
    "relative_l2": "x ||y||_2",
}
SIGMA_UNITS = {"paper": "paper units: x the slice's s", "direct": "DIRECT's normalised units"}


def axis_label(group: str, models: list[dict], protocol: dict | None) -> str:
    """The x-axis of a sweep with its unit: the budget's convention, the models' units of sigma."""
    label = SWEEPS[group].label if group in SWEEPS else group
    if group == "budget" and protocol:
        swept = (protocol.get("sweeps") or {}).get("budget", {}).get("perturbation")
        entry = next((p for p in protocol.get("perturbations", []) if p["name"] == swept), {})
        convention = (entry.get("budget") or {}).get("convention")
        if convention in BUDGET_UNITS:
            label += f" ({BUDGET_UNITS[convention]})"
    if group == "sigma":
        units = {m.get("intensity_scale") for m in models if m.get("intensity_scale")}
        if len(units) == 1:
            label += f" ({SIGMA_UNITS.get(units.pop(), 'model units')})"
        elif units:
            label += " (each model's own units: see robustness.md)"
    return label


def trained_unrolls(models: list[dict]) -> set[int]:
    return {m["num_steps"] for m in models if isinstance(m.get("num_steps"), int)}


def sweep_figures(
    output_dir: pathlib.Path,
    records: list[dict],
    models: list[str],
    described: list[dict] | None = None,
    protocol: dict | None = None,
) -> dict[str, pathlib.Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in records:
        if r["group"] != "main":
            cells[(r["group"], r["perturbation"], r["model"], r["sweep_value"])].append(r["psnr"])
    paths = {}
    for group in sorted({k[0] for k in cells}):
        perts = sorted({k[1] for k in cells if k[0] == group})
        fig, axes = plt.subplots(1, len(perts), figsize=(4.5 * len(perts), 3.5), squeeze=False, layout="constrained")
        for ax, pert in zip(axes[0], perts):
            for model in models:
                pts = sorted((k[3], summarize(v)) for k, v in cells.items() if k[:3] == (group, pert, model))
                if not pts:
                    continue
                x = [p[0] for p in pts]
                y = np.array([p[1]["mean"] for p in pts])
                ci = np.array([p[1]["ci95"] if np.isfinite(p[1]["ci95"] or np.nan) else 0.0 for p in pts])
                ax.errorbar(x, y, yerr=ci, marker="o", capsize=3, label=model)
            ax.set_xlabel(axis_label(group, described or [], protocol))
            if group == "unrolls":
                for count in sorted(trained_unrolls(described or [])):
                    ax.axvline(count, color="grey", ls=":", lw=1)
                    ax.annotate(f"trained: {count}", (count, 0.02), xycoords=("data", "axes fraction"), fontsize=7)
            if ax is axes[0][0]:
                ax.set_ylabel("PSNR (dB), mean and 95% CI")
            ax.set_title(pert)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        path = output_dir / f"psnr_vs_{group}.png"
        _save(fig, path)
        plt.close(fig)
        paths[f"figure_{group}"] = path
    return paths


PANEL_MODELS = 8


def panel_slice(records: list[dict]) -> tuple[str, int] | None:
    """The slice the panels show: the first slice of the first batch of the main conditions (the loop's choice)."""
    first = next((r for r in records if r.get("group") == "main"), None)
    if first is None:
        return None
    return first["file"], first["slice"]


def panel_figure(
    output_dir: pathlib.Path, models: list[str], records: list[dict] | None = None
) -> dict[str, pathlib.Path]:
    """target | each model, clean and attacked rows, with error maps on one colour bar; the slice's name and each
    image's PSNR (from the records) in the titles."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = load_panels(output_dir)
    if "target" not in data:
        return {}
    target = data.pop("target")
    shown = panel_slice(records or [])
    psnr = {}
    if shown is not None:
        psnr = {
            (r["perturbation"], r["model"]): r.get("psnr")
            for r in records or []
            if r.get("group") == "main" and (r["file"], r["slice"]) == shown
        }
    perts = sorted({k.split("|")[0] for k in data})
    vmax = float(target.max())
    left_out = len(models) - PANEL_MODELS
    models = models[:PANEL_MODELS]  # wider panels cannot be read; every model is in the tables
    cols = 1 + len(models)
    fig, axes = plt.subplots(
        2 * len(perts), cols, figsize=(2.2 * cols + 0.8, 2.2 * 2 * len(perts)), squeeze=False, layout="constrained"
    )
    error_image = None
    for i, pert in enumerate(perts):
        axes[2 * i, 0].imshow(target, cmap="gray", vmin=0, vmax=vmax)
        axes[2 * i, 0].set_title("target", fontsize=8)
        for j, model in enumerate(models, start=1):
            img = data.get(f"{pert}|{model}")
            if img is None:
                continue
            value = psnr.get((pert, model))
            label = "" if value is None else f"\n{value:.2f} dB"
            axes[2 * i, j].imshow(img, cmap="gray", vmin=0, vmax=vmax)
            axes[2 * i, j].set_title(f"{model} ({pert}){label}", fontsize=7)
            error_image = axes[2 * i + 1, j].imshow(np.abs(img - target), cmap="inferno", vmin=0, vmax=0.3 * vmax)
            axes[2 * i + 1, j].set_title("|error|", fontsize=7)
    for ax in axes.ravel():
        ax.axis("off")
    if error_image is not None:
        bar = fig.colorbar(error_image, ax=axes[:, -1], shrink=0.6)
        bar.set_label("|error|, image units (0 to 30 % of the target's maximum)", fontsize=7)
    if shown is not None:
        more = f"; the first {PANEL_MODELS} models ({left_out} more in the tables)" if left_out > 0 else ""
        fig.suptitle(f"{shown[0]}, slice {shown[1]}: PSNR per image (dB){more}", fontsize=9)
    path = output_dir / "panels.png"
    _save(fig, path)
    plt.close(fig)
    return {"figure_panels": path}


def sanity_figures(output_dir: pathlib.Path, checks: list[dict]) -> dict[str, pathlib.Path]:
    """The figure of each sanity check (`reports.sanity`): its evidence as lines, or as grouped bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = {}
    for check in checks:
        evidence = check["evidence"]
        if not check["figure"]:
            continue
        fig, ax = plt.subplots(figsize=(6.5, 3.8), layout="constrained")
        series = evidence["series"]
        if evidence["kind"] == "line":
            for s in series:
                ax.plot(s["x"], [np.nan if y is None else y for y in s["y"]], marker="o", label=s["label"])
            ax.legend(fontsize=7)
        else:
            # One bar per compared value, coloured by its place in the comparison (the attack, what it is held to).
            bars = [(f"{s['label']}\n{x}", y, f"C{j}") for s in series for j, (x, y) in enumerate(zip(s["x"], s["y"]))]
            ax.bar(range(len(bars)), [np.nan if y is None else y for _, y, _ in bars], color=[c for *_, c in bars])
            ax.set_xticks(range(len(bars)), [label for label, *_ in bars], rotation=90, fontsize=6)
        ax.set_xlabel(evidence["xlabel"])
        ax.set_ylabel(evidence["ylabel"])
        ax.set_title(f"{check['title']}: {check['verdict']}", fontsize=9)
        ax.grid(alpha=0.3)
        path = output_dir / check["figure"]
        _save(fig, path)
        plt.close(fig)
        paths[f"figure_sanity_{check['check']}"] = path
    return paths


def make_figures(
    output_dir: pathlib.Path,
    records: list[dict],
    models: list[dict],
    checks: list[dict] | None = None,
    protocol: dict | None = None,
) -> dict[str, pathlib.Path]:
    names = [m["name"] for m in models]
    figures = {
        **sweep_figures(output_dir, records, names, models, protocol),
        **panel_figure(output_dir, names, records),
    }
    return {**figures, **sanity_figures(output_dir, checks or [])}
