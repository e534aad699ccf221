"""The Theorem 1 report of ``smug bound``: bound.json, bound.md and bound.png from per-slice facts."""

import json
import math
import pathlib
import statistics

from smug_plugin.atomic import atomic_path, atomic_write_text
from smug_plugin.robustness.reports.tables import _g, json_ready, notices
from smug_plugin.robustness.studies.bound import bound_constants, contraction, smoothing_vacuity_sigma


def model_summary(model: dict, slices: list[dict], measured: dict[tuple[str, int], float]) -> dict:
    """One model's bound: M over all its slices, C_n per slice (the largest reported), the measured ratios.

    Parameters
    ----------
    model : dict
        ``name``, ``scope`` (None where the theorem applies, else why not), ``lambda``, ``sigma``, ``num_steps``.
    slices : list[dict]
        Per slice: ``file``, ``slice``, ``a_norm``, ``alpha``, ``denoiser_norm`` (None where not applicable).
    measured : dict
        ||f(y + delta) - f(y)|| / ||delta|| per (file, slice) under the attack.
    """
    ratios = [measured[(s["file"], s["slice"])] for s in slices if (s["file"], s["slice"]) in measured]
    summary = {
        **model,
        "slices": len(slices),
        "a_norm_max": max(s["a_norm"] for s in slices),
        "measured_ratio_mean": statistics.fmean(ratios) if ratios else None,
        "measured_ratio_max": max(ratios) if ratios else None,
        "measured_slices": len(ratios),
    }
    if model["scope"] is not None:
        return summary
    big_m = 2 * max(s["denoiser_norm"] for s in slices)  # ||D(x)|| <= M / 2
    per_slice = []
    for s in slices:
        q = contraction(model["lambda"], s["alpha"], big_m, model["sigma"])
        constants = bound_constants(s["a_norm"], s["alpha"], q, model["num_steps"])
        ratio = measured.get((s["file"], s["slice"]))
        per_slice.append({**s, "q": q, "c_n": constants, "measured_ratio": ratio})
    q_max = max(s["q"] for s in per_slice)
    c_n = [max(s["c_n"][n] for s in per_slice) for n in range(model["num_steps"])]
    alpha_max = max(s["alpha"] for s in per_slice)
    held = [s["measured_ratio"] <= s["c_n"][-1] for s in per_slice if s["measured_ratio"] is not None]
    return {
        **summary,
        "M": big_m,
        "alpha_max": alpha_max,
        "q_max": q_max,
        "vacuous": q_max >= 1,
        "sigma_for_q_below_1": smoothing_vacuity_sigma(model["lambda"], alpha_max, big_m),
        "c_n": c_n,
        "bound_holds_on_all_measured": all(held) if held else None,
        "per_slice": per_slice,
    }


def _verdict(row: dict) -> str:
    if row["scope"] is not None:
        return f"n/a: {row['scope']}"
    if row["vacuous"]:
        needed = _g(row["sigma_for_q_below_1"])
        return f"vacuous: q = {_g(row['q_max'])} >= 1, C_n grows as q^n (q < 1 needs sigma > {needed})"
    return "informative: q < 1"


def markdown(rows: list[dict], facts: dict) -> str:
    lines = [
        "# SMUG Theorem 1 on trained models",
        "",
        f"Data: `{facts['data_root']}`, {facts['slices']} slices. Measured ratio: ||f(y + delta) - f(y)|| / ||delta|| "
        f"per slice under `{facts['perturbation']}` of `{facts['evaluation']}` (mean, max). Bound: "
        "C_n = alpha ||A|| (1 - q^n) / (1 - q) + ||A|| q^n, q = lambda M alpha / (sqrt(2 pi) sigma), "
        "alpha = ||(A^H A + lambda I)^{-1}||, ||A|| and alpha by "
        f"{facts['power_iterations']} power iterations on each slice's operator (largest over the slices).",
        "",
        "**M is empirical**: twice the largest ||D(x)|| the denoiser produced on these slices (every unroll and "
        "noise draw), not a bound over all inputs, so the C_n below are estimates, not certificates. The theorem "
        "bounds the exact smoothing expectation; the measured reconstructions average K draws.",
        "",
        *notices(facts.get("data_issues") or [], []),
        "With `intensity_scale: paper` a network divides y by its scale s(y) (measured on A^H y), and M and sigma "
        "are in units of s (q does not depend on the unit); the theorem holds s fixed.",
        "",
        "| Model | lambda | sigma | N | max ‖A‖ | max alpha | M (empirical) | q | C_1 | C_N | measured ratio | "
        "Theorem 1 |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        applies = r["scope"] is None
        cells = [
            r["name"],
            _g(r["lambda"]) if r.get("lambda") is not None else "n/a",
            _g(r["sigma"]) if r.get("sigma") is not None else "n/a",
            str(r["num_steps"]) if r.get("num_steps") is not None else "n/a",
            _g(r["a_norm_max"]),
            _g(r["alpha_max"]) if applies else "n/a",
            _g(r["M"]) if applies else "n/a",
            _g(r["q_max"]) if applies else "n/a",
            _g(r["c_n"][0]) if applies else "n/a",
            _g(r["c_n"][-1]) if applies else "n/a",
            "n/a"
            if r["measured_ratio_mean"] is None
            else f"{_g(r['measured_ratio_mean'])} ({_g(r['measured_ratio_max'])})",
            _verdict(r),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    for r in rows:
        if r["scope"] is None:
            values = ", ".join(f"C_{n + 1} = {_g(c)}" for n, c in enumerate(r["c_n"]))
            lines.append(f"- {r['name']}: {values}.")
    return "\n".join(lines) + "\n"


def figure(path: pathlib.Path, rows: list[dict]) -> None:
    """C_n against n per model (log scale), the measured ratios at the model's N."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8), layout="constrained")
    for i, r in enumerate(rows):
        color = f"C{i}"
        if r["scope"] is None:
            steps = range(1, len(r["c_n"]) + 1)
            finite = [c if math.isfinite(c) else float("nan") for c in r["c_n"]]
            ax.plot(steps, finite, marker="o", color=color, label=f"{r['name']}: C_n (q = {_g(r['q_max'])})")
        if r["measured_ratio_max"] is not None:
            n = r.get("num_steps") or 1
            ax.scatter([n], [r["measured_ratio_max"]], marker="x", s=60, color=color, label=f"{r['name']}: measured")
    ax.set_yscale("log")
    ax.set_xlabel("unroll n")
    ax.set_ylabel("||f(y + delta) - f(y)|| / ||delta||")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)


def write_bound_report(output_dir: pathlib.Path, rows: list[dict], facts: dict) -> dict[str, pathlib.Path]:
    """bound.json (every per-slice value), bound.md (the table) and bound.png."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {"json": output_dir / "bound.json", "markdown": output_dir / "bound.md", "figure": output_dir / "bound.png"}
    atomic_write_text(paths["json"], json.dumps(json_ready({"facts": facts, "models": rows}), indent=2))
    atomic_write_text(paths["markdown"], markdown(rows, facts))
    figure(paths["figure"], rows)
    return paths
