"""Result tables from the records: robustness.json (everything), robustness.csv (one row per condition x model),
robustness.md (Table I of the SMUG papers: rows = models, columns = clean / noise / PGD PSNR and SSIM relative to
the reference), each written atomically.
"""

import csv
import io
import json
import math
import pathlib
from collections import defaultdict

from smug_plugin.atomic import atomic_write_text
from smug_plugin.provenance import package_versions
from smug_plugin.robustness.metrics import summarize, volume_metrics
from smug_plugin.robustness.reports.figures import axis_label
from smug_plugin.robustness.reports.sanity import markdown_section, sanity_checks, warnings_of
from smug_plugin.robustness.run.protocol import TRANSFER_SEPARATOR
from smug_plugin.robustness.threat_model import DEFAULT_NORMALISATION, THREAT_STATEMENTS, Normalisation

SCHEMA_VERSION = 1
METRICS = ("psnr", "ssim", "nmse", "rob_err", "rob_err_rel", "rob_ratio")
CSV_FIELDS = [
    "condition",
    "group",
    "sweep_value",
    "perturbation",
    "model",
    "status",
    "n_slices",
    *[f"{m}_{s}" for m in METRICS for s in ("mean", "std", "ci95")],
    "psnr_volume_mean",
    "psnr_delta_ref",
    "psnr_delta_ref_ci95",
    "ssim_delta_ref",
    "ssim_delta_ref_ci95",
    "eps_mean",
    "eps_min",
    "eps_max",
    "eps_paper_mean",
    "eps_paper_min",
    "eps_paper_max",
    "description",
]
# The statistics columns of the CSV: "n/a" where there is no finite value.
NUMERIC_SUFFIXES = ("_mean", "_std", "_ci95", "_delta_ref", "_min", "_max")


def eps_range(records: list[dict]) -> dict:
    """The radius eps over the records' slices in DIRECT's normalised units (``eps_*``) and in the papers' units,
    eps / s_ref (``eps_paper_*``; None without fully sampled k-space): mean, min and max."""
    out = {}
    for key in ("eps", "eps_paper"):
        values = [r[key] for r in records if r.get(key) is not None]
        stats = (sum(values) / len(values), min(values), max(values)) if values else (None,) * 3
        out.update(zip((f"{key}_mean", f"{key}_min", f"{key}_max"), stats))
    return out


def budget_equivalents(records: list[dict]) -> dict[str, dict]:
    """`eps_range` of every perturbation of the main table that perturbs (eps > 0), with its slice count: the
    budget of each convention in DIRECT's units and in the papers'."""
    by_perturbation: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        if r["group"] == "main":
            by_perturbation[r["perturbation"]].append(r)
    return {
        name: {"n_slices": len({(r["file"], r["slice"]) for r in recs}), **eps_range(recs)}
        for name, recs in by_perturbation.items()
        if any(r["eps"] > 0 for r in recs)
    }


def describe_equivalent(equivalent: dict) -> str:
    """'eps over the 12 slices: 0.0918 (0.068-0.135) in DIRECT's normalised units, 0.02 (0.02-0.02) in paper
    units'."""
    units = [("eps", "DIRECT's normalised units"), ("eps_paper", "paper units (x s_ref)")]
    parts = [
        f"{_g(equivalent[f'{key}_mean'])} ({_g(equivalent[f'{key}_min'])}-{_g(equivalent[f'{key}_max'])}) in {unit}"
        for key, unit in units
        if equivalent[f"{key}_mean"] is not None
    ]
    return f"eps over the {equivalent['n_slices']} slices: {', '.join(parts)}"


def summarize_records(
    records: list[dict], reference: str, layout: list[dict] | None = None, models: list[str] | None = None
) -> list[dict]:
    """Statistics per (condition, model), with paired per-slice differences to the reference model.

    Cells of `layout` x `models` without records (a model lacking the swept attribute) get an "n/a" row.
    """
    cells: dict[tuple[str, str], list[dict]] = defaultdict(list)
    for r in records:
        cells[(r["condition"], r["model"])].append(r)
    rows = []
    evaluated = {r["condition"] for r in records}
    for cond in layout or []:
        for model in models or []:
            if (cond["condition"], model) not in cells and cond["condition"] in evaluated:
                rows.append({**cond, "model": model, "n_slices": 0, "status": "n/a"})
    for (condition, model), recs in cells.items():
        first = recs[0]
        row = {
            "condition": condition,
            "group": first["group"],
            "sweep_value": first["sweep_value"],
            "perturbation": first["perturbation"],
            "model": model,
            "n_slices": len(recs),
            "status": "ok",
        }
        for m in METRICS:
            s = summarize([r[m] for r in recs])
            row.update({f"{m}_mean": s["mean"], f"{m}_std": s["std"], f"{m}_ci95": s["ci95"]})
        vols = volume_metrics(recs)
        row["psnr_volume_mean"] = summarize([v["psnr"] for v in vols.values()])["mean"]
        row.update(eps_range(recs))
        row["volumes"] = vols
        ref = {(r["file"], r["slice"]): r for r in cells.get((condition, reference), [])}
        for m in ("psnr", "ssim"):
            diffs = [r[m] - ref[(r["file"], r["slice"])][m] for r in recs if (r["file"], r["slice"]) in ref]
            s = summarize(diffs)
            row[f"{m}_delta_ref"], row[f"{m}_delta_ref_ci95"] = s["mean"], s["ci95"]
        rows.append(row)
    return rows


def _missing(x) -> bool:
    """No value, or one that JSON cannot hold (NaN, inf): written as null / "n/a"."""
    return x is None or (isinstance(x, float) and not math.isfinite(x))


def _fmt(x, digits: int = 2, sign: str = "") -> str:
    return "n/a" if _missing(x) else f"{x:{sign}.{digits}f}"


def _g(x: float) -> str:
    return f"{x:.3g}"


def json_ready(value):
    """``value`` with every NaN and infinity replaced by None, so strict JSON parsers read the file."""
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return None if _missing(value) else value


def _mean_std_delta(row: dict, metric: str, digits: int, is_reference: bool) -> str:
    """'23.84 ± 1.52 (+0.15)': the Table I cell; the reference model has no difference to itself."""
    # One slice has no spread: no "± 0.00" that would read as a measured one.
    one = row.get("n_slices") == 1
    text = _fmt(row[f"{metric}_mean"], digits) + ("" if one else f" ± {_fmt(row[f'{metric}_std'], digits)}")
    delta = row.get(f"{metric}_delta_ref")
    return text if is_reference or delta is None else f"{text} ({_fmt(delta, digits, '+')})"


def threat_model_lines(protocol: dict) -> list[str]:
    """The declared threat model, and the perturbations that run under another one, for the top of robustness.md."""
    declared = protocol.get("threat_model", {}).get("normalisation", DEFAULT_NORMALISATION.value)
    lines = [f"**Threat model** (normalisation `{declared}`): {THREAT_STATEMENTS[Normalisation(declared)]}."]
    others = [p for p in protocol["perturbations"] if p.get("normalisation", declared) != declared]
    for p in others:
        lines.append(
            f"Perturbation **{p['name']}** runs under normalisation `{p['normalisation']}`: "
            f"{THREAT_STATEMENTS[Normalisation(p['normalisation'])]}."
        )
    return [" ".join(lines), ""]


def notices(data_issues: list[dict], warnings: list[str], sanity: list[str] | None = None) -> list[str]:
    """The top of robustness.md: files the data loader skipped, warnings about the models and the sanity checks
    that warn, if any."""
    lines = []
    if sanity:
        lines += ["**Sanity checks that warn** (details under Sanity checks below):", ""]
        lines += [f"- {warning}" for warning in sanity] + [""]
    if data_issues:
        lines += ["**Data issues** (these files are not in the numbers below):", ""]
        lines += [f"- `{issue['file']}`: {issue['problem']}" for issue in data_issues] + [""]
    if warnings:
        lines += ["**Warnings:**", ""] + [f"- {warning}" for warning in warnings] + [""]
    return lines


def markdown_table(
    rows: list[dict],
    models: list[str],
    reference: str,
    descriptions: dict[str, str],
    layout: list[dict],
    preamble: list[str] | None = None,
    equivalents: dict[str, dict] | None = None,
    records: list[dict] | None = None,
    checks: list[dict] | None = None,
    described: list[dict] | None = None,
    protocol: dict | None = None,
) -> str:
    lines = [
        "# Robustness evaluation",
        "",
        *(preamble or []),
        f"Reference model: **{reference}**. Values are mean ± std over the slices; in brackets the mean paired "
        "per-slice difference to the reference.",
        "",
    ]
    rows = [r for r in rows if r["status"] == "ok"]
    main = [r for r in rows if r["group"] == "main"]
    transfers = [r for r in main if TRANSFER_SEPARATOR in r["perturbation"]]
    main = [r for r in main if TRANSFER_SEPARATOR not in r["perturbation"]]
    perts = list(dict.fromkeys(r["perturbation"] for r in main))
    cell = {(r["perturbation"], r["model"]): r for r in main}
    header = "| Model | " + " | ".join(f"{p} PSNR | {p} SSIM" for p in perts) + " |"
    lines += [header, "|" + "---|" * (1 + 2 * len(perts))]
    for model in models:
        parts = []
        for p in perts:
            r = cell.get((p, model))
            for metric, digits in (("psnr", 2), ("ssim", 4)):
                parts.append("n/a" if r is None else _mean_std_delta(r, metric, digits, model == reference))
        lines.append(f"| {model} | " + " | ".join(parts) + " |")
    equivalents = equivalents or {}
    lines += ["", "Perturbations:", ""]
    for name, description in descriptions.items():
        equivalent = f"; {describe_equivalent(equivalents[name])}" if name in equivalents else ""
        lines.append(f"- **{name}**: {description}{equivalent}")
    lines += transfer_matrix(transfers, models)
    lines += ensemble_tables(records or [], models)
    for group in dict.fromkeys(c["group"] for c in layout if c["group"] != "main"):
        sub = [r for r in rows if r["group"] == group]
        values = sorted(dict.fromkeys(c["sweep_value"] for c in layout if c["group"] == group))
        for p in dict.fromkeys(c["perturbation"] for c in layout if c["group"] == group):
            lines += [
                "",
                f"## {group} sweep, {p}: PSNR (dB) against {axis_label(group, described or [], protocol)}",
                "",
            ]
            lines += ["| Model | " + " | ".join(f"{v:g}" for v in values) + " |", "|" + "---|" * (1 + len(values))]
            c = {(r["sweep_value"], r["model"]): r for r in sub if r["perturbation"] == p}
            for model in models:
                vals = [_fmt(c[(v, model)]["psnr_mean"]) if (v, model) in c else "n/a" for v in values]
                lines.append(f"| {model} | " + " | ".join(vals) + " |")
    figures = [f"psnr_vs_{group}.png" for group in dict.fromkeys(c["group"] for c in layout if c["group"] != "main")]
    if any(r["group"] == "main" for r in rows):
        figures.insert(0, "panels.png")
    if figures:
        lines += [
            "",
            "Figures: " + ", ".join(f"[{name}]({name})" for name in figures) + " (sanity-check figures below).",
        ]
    if checks:
        lines += markdown_section(checks)
    return "\n".join(lines) + "\n"


def transfer_matrix(rows: list[dict], models: list[str]) -> list[str]:
    """PSNR of every target model (columns) under the perturbation computed on each source model (rows)."""
    lines = []
    for base in dict.fromkeys(r["perturbation"].split(TRANSFER_SEPARATOR)[0] for r in rows):
        cell = {tuple(r["perturbation"].split(TRANSFER_SEPARATOR)[1:]) + (r["model"],): r for r in rows}
        lines += ["", f"## Transfer matrix, {base}: PSNR (dB) of the column model under the row model's attack", ""]
        lines += ["| source \\ target | " + " | ".join(models) + " |", "|" + "---|" * (1 + len(models))]
        for source in models:
            vals = [_fmt(cell[(source, m)]["psnr_mean"]) if (source, m) in cell else "n/a" for m in models]
            lines.append(f"| {source} | " + " | ".join(vals) + " |")
    return lines


def ensemble_tables(records: list[dict], models: list[str]) -> list[str]:
    """Per ensemble of the main table: each member's mean PSNR, the per-slice worst case and how often each member
    won, per model."""
    lines = []
    ensembles = [r for r in records if r["group"] == "main" and "members" in r]
    for name in dict.fromkeys(r["perturbation"] for r in ensembles):
        recs = [r for r in ensembles if r["perturbation"] == name]
        members = list(dict.fromkeys(m for r in recs for m in r["members"]))
        lines += ["", f"## Ensemble {name}: PSNR (dB) per member and the per-slice worst case", ""]
        lines += ["| Model | " + " | ".join(members) + " | worst case | won by |", "|" + "---|" * (3 + len(members))]
        for model in models:
            mine = [r for r in recs if r["model"] == model]
            if not mine:
                continue
            cells = [
                _fmt(summarize([r["members"][m]["psnr"] for r in mine if m in r["members"]])["mean"]) for m in members
            ]
            wins = defaultdict(int)
            for r in mine:
                wins[r["winner"]] += 1
            won = ", ".join(f"{m} {wins[m]}/{len(mine)}" for m in members if wins[m])
            worst = _fmt(summarize([r["psnr"] for r in mine])["mean"])
            lines.append(f"| {model} | " + " | ".join(cells) + f" | {worst} | {won} |")
    return lines


def write_reports(
    output_dir: pathlib.Path,
    records: list[dict],
    models: list[dict],
    reference: str,
    protocol: dict,
    run: dict,
    layout: list[dict],
    data_issues: list[dict] | None = None,
    warnings: list[str] | None = None,
) -> dict[str, pathlib.Path]:
    """Write robustness.json / .csv / .md atomically from all records so far.

    `layout` lists every condition of the protocol (condition id, group, sweep value, perturbation name);
    `data_issues` the data files that were skipped (`DataIssue.to_dict`), `warnings` what the user must know about
    the models. Both head robustness.md, with the sanity checks that warn (`reports.sanity`). Values that are not
    finite are null in the JSON and n/a in the CSV.
    """
    data_issues, warnings = data_issues or [], warnings or []
    names = [m["name"] for m in models]
    rows = summarize_records(records, reference, layout, names)
    descriptions = {p["name"]: p["description"] for p in protocol["perturbations"]}
    equivalents = budget_equivalents(records)
    checks = sanity_checks(records, protocol)
    doc = {
        "schema_version": SCHEMA_VERSION,
        "reference": reference,
        "models": models,
        "protocol": protocol,
        "run": run,
        "versions": package_versions(),
        "budgets": descriptions,
        "budget_equivalents": equivalents,
        "data_issues": data_issues,
        "warnings": warnings,
        "sanity": checks,
        "summary": rows,
        "records": records,
    }
    paths = {k: output_dir / f"robustness.{k}" for k in ("json", "csv", "md")}
    atomic_write_text(paths["json"], json.dumps(json_ready(doc), indent=1, default=str, allow_nan=False))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS, extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        cells = {k: "n/a" if k.endswith(NUMERIC_SUFFIXES) and _missing(v) else v for k, v in row.items()}
        writer.writerow({**cells, "description": descriptions.get(row["perturbation"], "")})
    atomic_write_text(paths["csv"], buf.getvalue())
    preamble = threat_model_lines(protocol) + notices(data_issues, warnings, warnings_of(checks))
    md = markdown_table(
        rows, names, reference, descriptions, layout, preamble, equivalents, records, checks, models, protocol
    )
    atomic_write_text(paths["md"], md)
    return paths
