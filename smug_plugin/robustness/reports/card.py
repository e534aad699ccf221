"""The robustness card of a model: one JSON document per model (``cards/<model>.json``, schema below, versioned by
``card_version``) and its Markdown rendering (``cards/<model>.md``), made from ``robustness.json`` only.

A card states what a paper's supplement or a leaderboard needs: the model, the data and mask, the protocol, the
worst-case attack (an ensemble's members with their steps, restarts, EOT draws and queries), the budget in every
convention side by side, clean / noise / worst-case PSNR, SSIM and NMSE with 95 % confidence intervals, the worst
slice, the sanity verdicts, the package versions and the seeds.

Schema, version 1 (``CARD_SCHEMA``, a JSON Schema also written to ``cards/schema.json``; every field required,
``null`` where the evaluation has no value):

- ``card_version`` (1), ``generated_by`` (string);
- ``model``: ``name``, ``model_name`` (DIRECT's), ``config``, ``checkpoint``, ``randomized``, ``parameters``;
- ``data``: ``data_root``, ``volumes``, ``slices``, ``masking`` (the inference YAML's mask: ``name``,
  ``accelerations``, ``center_fractions``; null when unknown), ``data_issues`` (files skipped);
- ``protocol``: ``name``, ``seed``;
- ``attack``: ``perturbation``, ``kind``, ``description``, ``members`` (``name``, ``kind``, ``steps``,
  ``restarts``, ``eot_samples``, ``queries``, ``transfer_from``; the attack itself when it is no ensemble);
- ``budget``: ``value``, ``convention``, ``norm`` as stated, and the radius over the slices (``mean``, ``min``,
  ``max``) as ``absolute`` (eps in DIRECT's normalised units), ``paper`` (eps / s_ref; null without fully sampled
  data) and ``relative_l2`` (||delta|| / ||y|| of the worst-case perturbations);
- ``metrics``: ``clean``, ``noise``, ``worst_case``, each null or ``perturbation`` and ``psnr`` / ``ssim`` /
  ``nmse`` as ``n``, ``mean``, ``std``, ``ci95`` (half-width of the 95 % t-interval over slices);
- ``worst_slice``: ``file``, ``slice``, ``psnr``, ``ssim``, ``nmse``, ``winner`` (an ensemble's member, else null);
- ``winners``: slices won by each ensemble member;
- ``sanity``: per check ``check``, ``title``, ``verdict`` (pass, warn, n/a), ``details``;
- ``versions`` (package: version), ``seeds``: ``run``, ``protocol``.
"""

import json
import math
import pathlib
import re
from typing import Any

from smug_plugin.atomic import atomic_write_text
from smug_plugin.robustness.metrics import summarize
from smug_plugin.robustness.reports.sanity import VERDICT_TEXT, model_verdicts
from smug_plugin.robustness.reports.tables import json_ready
from smug_plugin.robustness.run.protocol import MEMBERS_SEPARATOR
from smug_plugin.robustness.threat_model import DEFAULT_NORMALISATION, THREAT_STATEMENTS, Normalisation

CARD_VERSION = 2  # 2: the threat model
CARDS = "cards"
MASK_FACTS = ("name", "accelerations", "center_fractions")  # of the YAML's masking, in the Markdown

_NUMBER = {"type": ["number", "null"]}
_STRING = {"type": ["string", "null"]}


def _object(properties: dict, nullable: bool = False) -> dict:
    return {
        "type": ["object", "null"] if nullable else "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


_STATISTICS = _object({"n": {"type": "integer", "minimum": 0}, "mean": _NUMBER, "std": _NUMBER, "ci95": _NUMBER})
_RANGE = _object({"mean": _NUMBER, "min": _NUMBER, "max": _NUMBER}, nullable=True)
_METRICS = _object(
    {"perturbation": {"type": "string"}, "psnr": _STATISTICS, "ssim": _STATISTICS, "nmse": _STATISTICS}, True
)
_MEMBER = _object(
    {
        "name": {"type": "string"},
        "kind": {"type": "string"},
        "steps": {"type": ["integer", "null"]},
        "restarts": {"type": ["integer", "null"]},
        "eot_samples": {"type": ["integer", "null"]},
        "queries": {"type": ["integer", "null"]},
        "transfer_from": _STRING,
    }
)
CARD_SCHEMA: dict = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "smug-plugin robustness card",
    **_object(
        {
            "card_version": {"type": "integer", "enum": [CARD_VERSION]},
            "generated_by": {"type": "string"},
            "model": _object(
                {
                    "name": {"type": "string"},
                    "model_name": _STRING,
                    "config": _STRING,
                    "checkpoint": _STRING,
                    "randomized": {"type": ["boolean", "null"]},
                    "parameters": {"type": ["integer", "null"]},
                    "intensity_scale": _STRING,
                    "sigma": _NUMBER,
                }
            ),
            "data": _object(
                {
                    "data_root": {"type": "string"},
                    "volumes": {"type": "integer", "minimum": 0},
                    "slices": {"type": "integer", "minimum": 0},
                    "masking": {"type": ["object", "null"]},
                    "data_issues": {"type": "integer", "minimum": 0},
                }
            ),
            "protocol": _object({"name": {"type": "string"}, "seed": {"type": ["integer", "null"]}}),
            "threat_model": _object(
                {"normalisation": {"type": "string", "enum": ["fixed", "attacked"]}, "statement": {"type": "string"}}
            ),
            "attack": _object(
                {
                    "perturbation": {"type": "string"},
                    "kind": {"type": "string"},
                    "description": {"type": "string"},
                    "members": {"type": "array", "items": _MEMBER},
                },
                nullable=True,
            ),
            "budget": _object(
                {
                    "value": {"type": "number", "minimum": 0},
                    "convention": {"type": "string", "enum": ["absolute", "paper", "relative_max", "relative_l2"]},
                    "norm": {"type": "string", "enum": ["linf", "l2"]},
                    "absolute": _RANGE,
                    "paper": _RANGE,
                    "relative_l2": _RANGE,
                },
                nullable=True,
            ),
            "metrics": _object({"clean": _METRICS, "noise": _METRICS, "worst_case": _METRICS}),
            "worst_slice": _object(
                {
                    "file": {"type": "string"},
                    "slice": {"type": "integer"},
                    "psnr": _NUMBER,
                    "ssim": _NUMBER,
                    "nmse": _NUMBER,
                    "winner": _STRING,
                },
                nullable=True,
            ),
            "winners": {"type": "object"},
            "sanity": {
                "type": "array",
                "items": _object(
                    {
                        "check": {"type": "string"},
                        "title": {"type": "string"},
                        "verdict": {"type": "string", "enum": ["pass", "warn", "n/a"]},
                        "details": {"type": "array", "items": {"type": "string"}},
                        "figure": _STRING,
                    }
                ),
            },
            "versions": {"type": "object"},
            "seeds": _object({"run": {"type": ["integer", "null"]}, "protocol": {"type": ["integer", "null"]}}),
        }
    ),
}

_TYPES = {
    "object": lambda v: isinstance(v, dict),
    "array": lambda v: isinstance(v, list),
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
    "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v),
    "null": lambda v: v is None,
}


def schema_errors(value: Any, schema: dict, where: str = "card") -> list[str]:
    """Where ``value`` breaks ``schema``: the JSON Schema keywords the card schema uses (type, enum, minimum,
    properties, required, additionalProperties, items), checked by hand (no jsonschema dependency)."""
    types = schema.get("type")
    types = [types] if isinstance(types, str) else types
    if types and not any(_TYPES[t](value) for t in types):
        return [f"{where}: expected {' or '.join(types)}, got {type(value).__name__} {value!r:.60}"]
    errors = []
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} is not one of {schema['enum']}")
    if "minimum" in schema and _TYPES["number"](value) and value < schema["minimum"]:
        errors.append(f"{where}: {value!r} is below the minimum {schema['minimum']}")
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        errors += [f"{where}: missing '{key}'" for key in schema.get("required", []) if key not in value]
        if schema.get("additionalProperties") is False:
            errors += [f"{where}: unexpected '{key}'" for key in value if key not in properties]
        for key, sub in properties.items():
            if key in value:
                errors += schema_errors(value[key], sub, f"{where}.{key}")
    if isinstance(value, list) and "items" in schema:
        for i, item in enumerate(value):
            errors += schema_errors(item, schema["items"], f"{where}[{i}]")
    return errors


def _statistics(records: list[dict], key: str) -> dict:
    """n, mean, std, ci95 over slices; null where undefined (the interval of one slice)."""
    return json_ready(summarize([r.get(key) for r in records]))


def _range(values: list[float | None]) -> dict | None:
    values = [v for v in values if v is not None and math.isfinite(v)]
    return {"mean": sum(values) / len(values), "min": min(values), "max": max(values)} if values else None


def _metrics(records: list[dict], name: str | None) -> dict | None:
    if name is None or not records:
        return None
    return {"perturbation": name, **{m: _statistics(records, m) for m in ("psnr", "ssim", "nmse")}}


def _member(entry: dict) -> dict:
    return {
        "name": entry["name"],
        "kind": entry["kind"],
        **{key: entry.get(key) for key in ("steps", "restarts", "eot_samples", "queries", "transfer_from")},
    }


def _worst_case(main: dict[str, list[dict]], entries: dict[str, dict]) -> str | None:
    """The ensemble of the main table, else the perturbation with the lowest mean PSNR that is no noise."""
    ensembles = [name for name in main if entries.get(name, {}).get("family") == "ensemble"]
    if ensembles:
        return ensembles[0]
    attacks = [n for n in main if entries.get(n, {}).get("family") not in ("none", "noise", None)]
    means = {n: summarize([r["psnr"] for r in main[n]])["mean"] for n in attacks}
    return min((n for n in attacks if means[n] is not None), key=means.get, default=None)


def _first_of_family(main: dict[str, list[dict]], entries: dict[str, dict], family: str) -> str | None:
    return next((name for name in main if entries.get(name, {}).get("family") == family), None)


def build_card(doc: dict, model: str) -> dict:
    """The card of ``model`` from a ``robustness.json`` document."""
    entries = {p["name"]: p for p in doc["protocol"]["perturbations"]}
    normalisation = doc["protocol"].get("threat_model", {}).get("normalisation", DEFAULT_NORMALISATION.value)
    main: dict[str, list[dict]] = {}
    for r in doc["records"]:
        if r["group"] == "main" and r["model"] == model:
            main.setdefault(r["perturbation"], []).append(r)
    # The worst case is taken under the protocol's declared threat model; a condition with another (a
    # normalisation attack) is its own finding in the report, not this card's headline.
    declared = {
        k: v for k, v in main.items() if entries.get(k, {}).get("normalisation", normalisation) == normalisation
    }
    worst_name = _worst_case(declared, entries)
    worst = main.get(worst_name, []) if worst_name else []
    entry = entries.get(worst_name) if worst_name else None
    described = next(m for m in doc["models"] if m["name"] == model)
    run = doc.get("run", {})
    budget = (entry or {}).get("budget")
    worst_slice = min((r for r in worst if r.get("psnr") is not None), key=lambda r: r["psnr"], default=None)
    slices = {(r["file"], r["slice"]) for recs in main.values() for r in recs}
    winners: dict[str, int] = {}
    for r in worst:
        if r.get("winner"):
            winners[r["winner"]] = winners.get(r["winner"], 0) + 1
    return {
        "card_version": CARD_VERSION,
        "generated_by": f"smug evaluate (smug-plugin {doc['versions'].get('smug-plugin', 'unknown')})",
        "model": {
            "name": model,
            **{
                key: described.get(key)
                for key in (
                    "model_name",
                    "config",
                    "checkpoint",
                    "randomized",
                    "parameters",
                    "intensity_scale",
                    "sigma",
                )
            },
        },
        "data": {
            "data_root": str(run.get("data_root", "")),
            "volumes": len({file for file, _ in slices}),
            "slices": len(slices),
            "masking": run.get("masking"),
            "data_issues": len(doc.get("data_issues", [])),
        },
        "protocol": {"name": doc["protocol"]["name"], "seed": doc["protocol"].get("seed")},
        "threat_model": {"normalisation": normalisation, "statement": THREAT_STATEMENTS[Normalisation(normalisation)]},
        "attack": None
        if entry is None
        else {
            "perturbation": worst_name,
            "kind": entry["kind"],
            "description": entry["description"],
            "members": [_member(m) for m in entry.get("members", [entry])],
        },
        "budget": None
        if budget is None
        else {
            **budget,
            "absolute": _range([r.get("eps") for r in worst]),
            "paper": _range([r.get("eps_paper") for r in worst]),
            "relative_l2": _range([r.get("delta_rel_l2") for r in worst]),
        },
        "metrics": {
            "clean": _metrics(main.get(_first_of_family(main, entries, "none"), []), "clean"),
            "noise": _metrics(
                main.get(_first_of_family(main, entries, "noise"), []), _first_of_family(main, entries, "noise")
            ),
            "worst_case": _metrics(worst, worst_name),
        },
        "worst_slice": None
        if worst_slice is None
        else {
            **{key: worst_slice[key] for key in ("file", "slice", "psnr", "ssim", "nmse")},
            "winner": worst_slice.get("winner"),
        },
        "winners": winners,
        "sanity": model_verdicts(doc.get("sanity", []), model),
        "versions": doc["versions"],
        "seeds": {"run": run.get("seed"), "protocol": run.get("protocol_seed")},
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'s' * (n != 1)}"


def _sigma(model: dict) -> str:
    """The smoothing sigma with its unit (paper units: a fraction of each slice's intensity scale s)."""
    if model.get("sigma") is None:
        return ""
    unit = "paper units: x the slice's s" if model.get("intensity_scale") == "paper" else "DIRECT's normalised units"
    return f", sigma {model['sigma']:g} ({unit})"


def _g(x: float | None, digits: int = 3) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _interval(stats: dict | None, digits: int) -> str:
    if stats is None or stats["mean"] is None:
        return "n/a"
    ci = stats["ci95"]
    half = "" if ci is None or not math.isfinite(ci) else f" ± {ci:.{digits}f}"
    return f"{stats['mean']:.{digits}f}{half}"


def _cell(text: str) -> str:
    """``text`` inside a Markdown table cell (its pipes escaped)."""
    return text.replace("|", "\\|")


def card_markdown(card: dict) -> str:
    """The card as Markdown: facts, the budget in every convention, the metric table, the worst slice, sanity."""
    model, data, attack, budget = card["model"], card["data"], card["attack"], card["budget"]
    masking = data["masking"] or {}
    mask = ", ".join(f"{k} {masking[k]}" for k in MASK_FACTS if k in masking) or "as the model's YAML"
    lines = [
        f"# Robustness card: {model['name']}",
        "",
        "| | |",
        "|---|---|",
        f"| model | `{model['model_name']}`, {_g(model['parameters'])} parameters, randomized: {model['randomized']}"
        f"{_sigma(model)} |",
        f"| checkpoint | `{model['checkpoint']}` |",
        f"| data | {_count(data['slices'], 'slice')} of {_count(data['volumes'], 'volume')} in `{data['data_root']}` |",
        f"| mask | {mask} |",
        f"| protocol | {card['protocol']['name']} (seeds: run {card['seeds']['run']}, protocol "
        f"{card['seeds']['protocol']}) |",
        f"| threat model | {card['threat_model']['statement']} |",
    ]
    if attack is not None:
        # The members' own descriptions are in the member table below.
        description = attack["description"].split(MEMBERS_SEPARATOR)[0]
        lines.append(f"| attack | **{attack['perturbation']}** ({attack['kind']}): {_cell(description)} |")
    if budget is not None:

        def side(key: str) -> str:
            r = budget[key]
            return "n/a" if r is None else f"{_g(r['mean'])} ({_g(r['min'])}-{_g(r['max'])})"

        text = (
            f"{budget['norm']} eps {budget['value']:g} ({budget['convention']}): absolute (DIRECT units) "
            f"{side('absolute')}; paper units (x s_ref) {side('paper')}; relative l2 ||delta||/||y|| "
            f"{side('relative_l2')}"
        )
        lines.append(f"| budget | {_cell(text)} |")
    lines += ["", "| condition | PSNR (dB) | SSIM | NMSE |", "|---|---|---|---|"]
    for label, key in (("clean", "clean"), ("noise", "noise"), ("worst case", "worst_case")):
        m = card["metrics"][key]
        if m is not None:
            cells = [_interval(m["psnr"], 2), _interval(m["ssim"], 4), _interval(m["nmse"], 4)]
            lines.append(f"| {label} ({m['perturbation']}) | " + " | ".join(cells) + " |")
    if data["slices"] > 1:
        lines += ["", "Mean ± half-width of the 95 % t-interval over slices."]
    else:
        lines += ["", "One slice: the values of that slice; no interval can be computed."]
    if card["worst_slice"] is not None:
        w = card["worst_slice"]
        won = f", by {w['winner']}" if w["winner"] else ""
        lines += [
            "",
            f"Worst slice: `{w['file']}` slice {w['slice']}, PSNR {w['psnr']:.2f} dB, SSIM {w['ssim']:.4f}{won}.",
        ]
    if card["winners"]:
        lines += ["", "Slices won: " + ", ".join(f"{name} {count}" for name, count in card["winners"].items()) + "."]
    if attack is not None and len(attack["members"]) > 1:
        lines += ["", "| member | kind | steps | restarts | EOT draws | queries | transferred from |"]
        lines += ["|---|---|---|---|---|---|---|"]
        for m in attack["members"]:
            cells = [
                m["kind"],
                *(
                    str(m[k] if m[k] is not None else "")
                    for k in ("steps", "restarts", "eot_samples", "queries", "transfer_from")
                ),
            ]
            lines.append(f"| {m['name']} | " + " | ".join(cells) + " |")
    lines += ["", "| sanity check | verdict | figure (beside robustness.md) |", "|---|---|---|"]
    lines += [f"| {s['title']} | {VERDICT_TEXT[s['verdict']]} | {s['figure'] or ''} |" for s in card["sanity"]]
    versions = ", ".join(f"{name} {version}" for name, version in card["versions"].items())
    lines += ["", f"Versions: {versions}.", ""]
    return "\n".join(lines)


def card_file_stem(model: str) -> str:
    """A file name for a model's display name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "_", model).strip("_") or "model"


def write_cards(output_dir: pathlib.Path, doc: dict) -> dict[str, pathlib.Path]:
    """``cards/<model>.json`` and ``.md`` per model, and ``cards/schema.json``; refuses a card that breaks its schema.

    Raises
    ------
    ValueError
        A card that does not validate (a bug, named with the offending fields).
    """
    folder = output_dir / CARDS
    folder.mkdir(exist_ok=True)
    paths = {"card_schema": folder / "schema.json"}
    atomic_write_text(paths["card_schema"], json.dumps(CARD_SCHEMA, indent=1))
    for described in doc["models"]:
        card = build_card(doc, described["name"])
        errors = schema_errors(card, CARD_SCHEMA)
        if errors:
            raise ValueError(f"robustness card of {described['name']} breaks its schema: {'; '.join(errors[:5])}")
        stem = card_file_stem(described["name"])
        paths[f"card_{stem}"] = folder / f"{stem}.json"
        atomic_write_text(paths[f"card_{stem}"], json.dumps(card, indent=1, allow_nan=False))
        atomic_write_text(folder / f"{stem}.md", card_markdown(card))
        paths[f"card_{stem}_md"] = folder / f"{stem}.md"
    return paths
