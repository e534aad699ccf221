"""The report of the cyclic-consistency defense study (`make beyond`), from the records of `smug evaluate` runs only.

Each run holds one model and the same model behind the defense (``--model NAME=defense.yaml``, ``wraps: NAME``) under
the protocol's perturbations :data:`CLEAN`, :data:`WHITE_BOX` (PGD on each model itself: on the undefended model its
own white-box attack, on the defended one the adaptive attack, whose gradient is BPDA's) and :data:`BLIND` (the same
PGD computed on the undefended model and transferred to the defended one); :data:`UNROLLED` (PGD through the unrolled
purification) is reported when a run has it. Per model: the mean PSNR (dB) of every cell, the defense's gains
(defended minus undefended under the same attack, and its clean cost) as paired differences over the slices with a
95 % bootstrap interval (`reports.paired`), and its cost: the defended clean reconstruction's wall-clock over the
undefended one's, next to the model calls the defense states (`model_calls_per_slice`).
"""

import json
import pathlib

import numpy as np

from smug_plugin.atomic import atomic_path
from smug_plugin.robustness.defenses.cyclic_consistency import VARIANT_DEFAULTS, DefenseSettings, DefenseVariant
from smug_plugin.robustness.reports.paired import paired_difference

GROUP = "main"
CLEAN, WHITE_BOX, BLIND, UNROLLED = "clean", "pgd", "pgd_blind", "pgd_unrolled"
# column key -> (perturbation, defended?, header); every PSNR is in dB
CELLS = {
    "clean_undefended": (CLEAN, False, "clean, undefended (dB)"),
    "clean_defended": (CLEAN, True, "clean, defended (dB)"),
    "pgd_undefended": (WHITE_BOX, False, "PGD, undefended (dB)"),
    "blind_defended": (BLIND, True, "blind, defended (dB)"),
    "adaptive_defended": (WHITE_BOX, True, "adaptive (BPDA), defended (dB)"),
    "unrolled_defended": (UNROLLED, True, "adaptive (unrolled), defended (dB)"),
}
# gain key -> (defended cell, undefended cell, header): the defense's effect, paired over slices
GAINS = {
    "clean": ("clean_defended", "clean_undefended", "clean: defended - undefended (dB)"),
    "blind": ("blind_defended", "pgd_undefended", "gain, blind (dB)"),
    "adaptive": ("adaptive_defended", "pgd_undefended", "gain, adaptive BPDA (dB)"),
    "unrolled": ("unrolled_defended", "pgd_undefended", "gain, adaptive unrolled (dB)"),
}


def defended_model(doc: dict) -> dict:
    """The description of the run's defended model (the one with a ``defense`` section)."""
    defended = [m for m in doc["models"] if "defense" in m]
    if len(defended) != 1:
        raise ValueError(f"expected one defended model in the run, found {len(defended)}.")
    return defended[0]


def _cell(records: list[dict], perturbation: str, model: str) -> dict[tuple[str, int], dict]:
    condition = f"{GROUP}/{perturbation}"
    return {
        (r["file"], r["slice"]): r
        for r in records
        if r["condition"] == condition and r["model"] == model and r.get("psnr") is not None
    }


def summarise(doc: dict) -> dict:
    """One model's row of the study from its run's robustness.json: PSNR per cell, gains, cost."""
    defended = defended_model(doc)
    names = {False: defended["defense"]["wraps"], True: defended["name"]}
    cells = {
        key: _cell(doc["records"], perturbation, names[is_defended])
        for key, (perturbation, is_defended, _) in CELLS.items()
    }
    cells = {key: cell for key, cell in cells.items() if cell}
    missing = [key for key in ("clean_undefended", "clean_defended", "pgd_undefended") if key not in cells]
    if missing:
        raise ValueError(f"the run of {names[False]} has no records of {', '.join(missing)}.")
    slices = sorted(set.intersection(*(set(cell) for cell in cells.values())))
    if not slices:
        raise ValueError(f"the run of {names[False]} has no slice in every cell.")
    psnr = {key: np.array([cell[k]["psnr"] for k in slices]) for key, cell in cells.items()}
    gains = {
        key: paired_difference(psnr[model], psnr[reference]).to_dict()
        for key, (model, reference, _) in GAINS.items()
        if model in psnr and reference in psnr
    }
    seconds = {key: float(np.mean([cells[key][k]["seconds"] for k in slices])) for key in cells}
    return {
        "model": names[False],
        "defended": names[True],
        "slices": len(slices),
        "psnr_db": {key: float(values.mean()) for key, values in psnr.items()},
        "psnr_per_slice_db": {key: values.tolist() for key, values in psnr.items()},
        "gains_db": gains,
        "seconds_per_slice": seconds,
        "cost_multiple": seconds["clean_defended"] / seconds["clean_undefended"],
        "model_calls_per_slice": defended.get("model_calls_per_slice"),
        "defense": defended["defense"],
        "attack": doc.get("budgets", {}).get(WHITE_BOX),
    }


def _interval(gain: dict | None) -> str:
    if gain is None:
        return "n/a"
    return f"{gain['mean']:+.2f} [{gain['low']:+.2f}, {gain['high']:+.2f}]"


def markdown_table(rows: list[dict]) -> str:
    """The study's table: PSNR per cell (dB), the gains with their 95 % intervals (dB), the cost multiple."""
    cells = [key for key in CELLS if any(key in row["psnr_db"] for row in rows)]
    gains = [key for key in GAINS if any(key in row["gains_db"] for row in rows)]
    header = ["model", "slices", *(CELLS[key][2] for key in cells), *(GAINS[key][2] for key in gains)]
    header += ["cost multiple (wall-clock, x)", "model calls per slice (reconstructions)"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        values = [row["model"], str(row["slices"])]
        values += [f"{row['psnr_db'][key]:.2f}" if key in row["psnr_db"] else "n/a" for key in cells]
        values += [_interval(row["gains_db"].get(key)) for key in gains]
        calls = (row["model_calls_per_slice"] or {}).get("total_reconstructions")
        values += [f"{row['cost_multiple']:.0f}", "n/a" if calls is None else str(calls)]
        lines.append("| " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def figure(rows: list[dict], path: pathlib.Path) -> None:
    """Mean PSNR (dB) per model and cell (bars, with the slices as dots) and the gains with their 95 % intervals."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = [key for key in CELLS if any(key in row["psnr_db"] for row in rows)]
    gains = [key for key in GAINS if any(key in row["gains_db"] for row in rows)]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.2), gridspec_kw={"width_ratios": [3, 2]})
    x = np.arange(len(rows))
    width = 0.8 / len(cells)
    for i, key in enumerate(cells):
        offset = x - 0.4 + (i + 0.5) * width
        means = [row["psnr_db"].get(key, np.nan) for row in rows]
        left.bar(offset, means, width, color=f"C{i}", label=CELLS[key][2].removesuffix(" (dB)"))
        for j, row in enumerate(rows):
            values = row["psnr_per_slice_db"].get(key, [])
            left.plot([offset[j]] * len(values), values, ".", color="k", markersize=2, alpha=0.5)
    left.set_xticks(x, [row["model"] for row in rows])
    left.set_ylabel("PSNR (dB)")
    left.set_title("PSNR per model and condition (bars: mean; dots: slices)")
    low = min(min(v) for row in rows for v in row["psnr_per_slice_db"].values())
    left.set_ylim(bottom=max(0.0, low - 2))
    left.legend(fontsize=7, ncol=2)
    width = 0.8 / len(gains)
    for i, key in enumerate(gains):
        offset = x - 0.4 + (i + 0.5) * width
        found = [(j, row["gains_db"][key]) for j, row in enumerate(rows) if key in row["gains_db"]]
        means = np.array([g["mean"] for _, g in found])
        errors = np.array([[g["mean"] - g["low"] for _, g in found], [g["high"] - g["mean"] for _, g in found]])
        positions = offset[[j for j, _ in found]]
        color = f"C{cells.index(GAINS[key][0])}"  # the colour of the defended cell's bar
        label = GAINS[key][2].removesuffix(" (dB)")
        right.errorbar(positions, means, yerr=errors, fmt="o", capsize=3, color=color, label=label)
    right.axhline(0.0, color="grey", linewidth=0.8)
    right.set_xticks(x, [row["model"] for row in rows])
    right.set_ylabel("defended - undefended PSNR (dB)")
    right.set_title("Defense gain, 95 % paired interval over slices")
    right.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def cut_statement(defense: dict) -> str:
    """What differs from the paper's defense (``variant: published`` and its defaults)."""
    if defense["variant"] != DefenseVariant.PUBLISHED.value:
        return f"the `{defense['variant']}` variant, not the paper's"
    published = VARIANT_DEFAULTS[DefenseVariant.PUBLISHED]
    changed = [
        f"{key} {defense[key]} (paper: {getattr(value, 'value', value)})"
        for key, value in published.items()
        if defense[key] != getattr(value, "value", value)
    ]
    return "the paper's values except " + ", ".join(changed) if changed else "the paper's values"


def preamble(document: dict) -> str:
    first = document["models"][0]
    calls = first["model_calls_per_slice"] or {}
    paper_calls = DefenseSettings.published(first["model"]).model_calls()["total_reconstructions"]
    return (
        "# The cyclic-consistency defense (Saberi et al.) around MoDL and DIRECT's networks\n\n"
        "Written by scripts/defense_report.py (`reports.defense_report`) from the `smug evaluate` runs named in "
        "defense.json. PSNR in dB, mean over the test slices; gains are defended - undefended PSNR under the same "
        "attack (dB), paired over the "
        "slices, with a 95 % bootstrap interval (`reports.paired`, one training seed: the interval is over slices "
        "only). Attacks: "
        f"{first['attack']}; **blind** = that PGD computed on the undefended model and applied to the defended one; "
        "**adaptive (BPDA)** = the same PGD run on the defended model, whose gradient is the wrapped model's at the "
        "purified input (the purification shift enters as a constant). Threat model: the default (every "
        "normalisation fixed from the clean measurement).\n\n"
        f"Defense: {cut_statement(first['defense'])}; radius {first['defense']['radius']} "
        f"({first['defense']['convention']}). It costs {calls.get('total_reconstructions', 'n/a')} reconstructions "
        f"per slice in model calls (the paper's sizes: {paper_calls} reconstructions; a backward counted as two "
        "forward passes); the cost multiple is the measured wall-clock of a defended clean reconstruction over the "
        "undefended one's (same batches).\n\n"
        + (
            ""
            if any("unrolled" in row["gains_db"] for row in document["models"])
            else "The adaptive attack through the unrolled purification (`unrolled_pgd`) was not run: BPDA only.\n\n"
        )
    )


def write_report(runs: dict[str, pathlib.Path], output: pathlib.Path) -> dict:
    """defense.json, README.md (the table) and defense.png in ``output`` from the runs (label -> run folder)."""
    rows = []
    for label, run in runs.items():
        row = summarise(json.loads((run / "robustness.json").read_text()))
        rows.append({**row, "model": label, "run": str(run)})
    output.mkdir(parents=True, exist_ok=True)
    document = {"models": rows}
    with atomic_path(output / "defense.json", suffix=".json") as tmp:
        tmp.write_text(json.dumps(document, indent=2) + "\n")
    text = preamble(document) + markdown_table(rows)
    with atomic_path(output / "README.md", suffix=".md") as tmp:
        tmp.write_text(text)
    figure(rows, output / "defense.png")
    return document
