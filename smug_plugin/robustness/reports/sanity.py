"""Sanity checks of an evaluation's attacks (Carlini et al.'s checklist for robustness evaluations, for
reconstruction), computed from the records only; each gives pass / warn / n/a per model and the data of its figure.

An attack is observed either as a perturbation of the protocol (its records) or as a member of an ensemble (the
member's facts in the ensemble's records). Comparisons are made between observations of one scope (the conditions
of one sweep value, or one ensemble condition) and one ball (budget and domain), on the same slices:

- ``objective_rises``: every white-box gradient attack raised its objective above its starting point;
- ``budget_monotone``: the damage (PSNR drop) does not shrink as the budget of the budget sweep grows;
- ``white_box_vs_transfer``: no attack transferred from another model is stronger than the white-box attacks;
- ``attack_vs_noise``: each white-box gradient attack is stronger than the matched Gaussian noise;
- ``gradient_free_vs_gradient``: the gradient-free attack is not stronger than the gradient attacks (it is when
  gradients are masked: hidden, zero, or uninformative);
- ``eot_converges``: the EOT average of a randomized model's gradient settles as its draws double;
- ``gradients_finite_nonzero``: no attack step saw an exactly zero or a non-finite gradient;
- ``scale_steady``: no perturbation moved the intensity normalisation a model computes from its input by more than
  ``NORMALISATION_TOLERANCE`` (an attack that wins by rescaling the image measures the normalisation, not the
  network). The output's overall scale (mean magnitude) is shown beside it but decides nothing: an attack on the
  MSE to the ground truth legitimately brightens or dims the output, so it cannot tell the lever from the damage.
"""

import math
import statistics
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

PASS, WARN, NA = "pass", "warn", "n/a"
# In Markdown "n/a" marks a cell without a value; a check that does not apply says so.
VERDICT_TEXT = {PASS: "pass", WARN: "**warn**", NA: "not applicable"}
# Mean-PSNR margins (dB) within which two attacks count as equally strong: larger differences are not noise of the
# random starts on the same slices.
PSNR_TOLERANCE_DB = 0.05
MIN_RISING_FRACTION = 0.9  # of the slices whose objective must rise above the start
EOT_SETTLED = 0.5  # ||g_2n - g_n|| / ||g_2n|| at the largest n, median over slices
# Fraction by which an attack may move a model's input normalisation (s or DIRECT's percentile) on any slice before
# the check warns.
NORMALISATION_TOLERANCE = 0.05
CHECKS = {
    "objective_rises": "The objective rises over the steps (white-box gradient attacks)",
    "budget_monotone": "Damage is monotone in the budget (budget sweep)",
    "white_box_vs_transfer": "White-box attacks are at least as strong as attacks transferred from other models",
    "attack_vs_noise": "Gradient attacks are stronger than matched Gaussian noise",
    "gradient_free_vs_gradient": "The gradient-free attack is not stronger than the gradient attacks",
    "eot_converges": "The EOT gradient estimate settles as the draws grow (randomized models)",
    "gradients_finite_nonzero": "No zero or non-finite gradients",
    "scale_steady": "Attacks do not move the models' intensity normalisation or the output's overall scale",
}


@dataclass
class Observation:
    """One attack on one model in one scope: its protocol entry and its facts per slice."""

    scope: str
    model: str
    attack: str
    spec: dict
    slices: dict[tuple[str, int], dict]

    @property
    def family(self) -> str:
        return self.spec.get("family", "none")

    @property
    def transferred(self) -> bool:
        """Computed on another model than the one it is applied to."""
        return self.spec.get("transfer_from") not in (None, self.model)

    @property
    def white_box_gradient(self) -> bool:
        return self.family == "gradient" and not self.transferred

    @property
    def ball(self) -> tuple:
        budget = self.spec.get("budget") or {}
        return tuple(sorted(budget.items())), self.spec.get("domain", "kspace")

    def mean(self, key: str = "psnr") -> float:
        values = [f[key] for f in self.slices.values() if _finite(f.get(key))]
        return statistics.fmean(values) if values else math.nan

    def facts(self, key: str) -> list:
        return [f[key] for f in self.slices.values() if f.get(key) is not None]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)


def _entries(protocol: dict) -> dict[str, dict]:
    return {p["name"]: p for p in protocol.get("perturbations", [])}


def observations(records: list[dict], protocol: dict) -> list[Observation]:
    """Every attack observed in the records: the protocol's perturbations and the members of its ensembles."""
    entries = _entries(protocol)
    found: dict[tuple, Observation] = {}

    def add(scope: str, model: str, name: str, spec: dict, key: tuple, facts: dict) -> None:
        if (scope, model, name) not in found:
            found[(scope, model, name)] = Observation(scope, model, name, spec, {})
        found[(scope, model, name)].slices[key] = facts

    for r in records:
        spec = entries.get(r["perturbation"], {})
        key = (r["file"], r["slice"])
        add(r["condition"].rsplit("/", 1)[0], r["model"], r["perturbation"], spec, key, r)
        members = {m["name"]: m for m in spec.get("members", [])}
        for name, facts in (r.get("members") or {}).items():
            add(r["condition"], r["model"], name, members.get(name, {}), key, facts)
    return list(found.values())


def _groups(items: list[Observation]) -> Iterator[tuple[tuple, list[Observation]]]:
    """Observations by (scope, model, ball)."""
    groups: dict[tuple, list[Observation]] = defaultdict(list)
    for o in items:
        groups[(o.scope, o.model, o.ball)].append(o)
    yield from groups.items()


class Verdicts:
    """Per-model verdicts of one check: warn wins over pass, details accumulate."""

    def __init__(self) -> None:
        self.models: dict[str, dict] = {}

    def add(self, model: str, ok: bool, detail: str) -> None:
        entry = self.models.setdefault(model, {"verdict": PASS, "details": []})
        if not ok:
            entry["verdict"] = WARN
        entry["details"].append(("" if ok else "WARN: ") + detail)


def _check(name: str, verdicts: Verdicts, evidence: dict, summary_ok: str, summary_warn: str) -> dict:
    warned = sorted(m for m, v in verdicts.models.items() if v["verdict"] == WARN)
    verdict = NA if not verdicts.models else WARN if warned else PASS
    summary = {NA: "not applicable to this evaluation", PASS: summary_ok, WARN: summary_warn.format(", ".join(warned))}
    return {
        "check": name,
        "title": CHECKS[name],
        "verdict": verdict,
        "summary": summary[verdict],
        "models": verdicts.models,
        "figure": f"sanity_{name}.png" if evidence["series"] else None,
        "evidence": evidence,
    }


def _evidence(kind: str, xlabel: str, ylabel: str) -> dict:
    return {"kind": kind, "xlabel": xlabel, "ylabel": ylabel, "series": []}


def objective_rises(items: list[Observation]) -> dict:
    verdicts, evidence = Verdicts(), _evidence("line", "step", "objective gain over the start (relative)")
    for o in items:
        traces = [t for t in o.facts("objective_trace") if len(t) > 1]
        if not o.white_box_gradient or not traces:
            continue
        rising = sum(max(t[1:]) > t[0] for t in traces) / len(traces)
        verdicts.add(
            o.model,
            rising >= MIN_RISING_FRACTION,
            f"{o.scope} {o.attack}: the objective rose above its start on {rising:.0%} of {len(traces)} slices",
        )
        if o.scope.startswith("main"):
            length = min(len(t) for t in traces)
            gain = [statistics.fmean((t[i] - t[0]) / max(abs(t[0]), 1e-30) for t in traces) for i in range(length)]
            evidence["series"].append({"label": f"{o.model}: {o.attack}", "x": list(range(length)), "y": gain})
    return _check(
        "objective_rises",
        verdicts,
        evidence,
        "every white-box gradient attack raised its objective",
        "the objective did not rise for {}: a zero or uninformative gradient (see gradients_finite_nonzero)",
    )


def budget_monotone(items: list[Observation], protocol: dict) -> dict:
    verdicts, evidence = Verdicts(), _evidence("line", "budget", "mean PSNR (dB)")
    swept = (protocol.get("sweeps") or {}).get("budget", {}).get("perturbation")
    main_value = ((_entries(protocol).get(swept) or {}).get("budget") or {}).get("value")
    curves: dict[str, dict[float, float]] = defaultdict(dict)
    for o in items:
        if o.attack != swept or o.scope.count("/"):
            continue  # the swept perturbation itself, not its ensemble members
        if o.scope.startswith("budget="):
            curves[o.model][float(o.scope.removeprefix("budget="))] = o.mean()
        elif o.scope == "main" and main_value is not None:
            curves[o.model][float(main_value)] = o.mean()
    for model, curve in curves.items():
        budgets = sorted(curve)
        if len(budgets) < 2:
            continue
        psnr = [curve[b] for b in budgets]
        rises = [(a, b) for a, b, pa, pb in zip(budgets, budgets[1:], psnr, psnr[1:]) if pb > pa + PSNR_TOLERANCE_DB]
        detail = ", ".join(f"{b:g}: {p:.2f} dB" for b, p in zip(budgets, psnr))
        if rises:
            detail += "; PSNR rises from " + ", ".join(f"{a:g} to {b:g}" for a, b in rises)
        verdicts.add(model, not rises, f"{swept}: {detail}")
        evidence["series"].append({"label": model, "x": budgets, "y": psnr})
    return _check(
        "budget_monotone",
        verdicts,
        evidence,
        "the PSNR falls as the budget grows for every model",
        "a larger budget did less damage for {}: the attack does not find the ball's worst case",
    )


def _strongest(items: list[Observation]) -> Observation | None:
    """The observation with the lowest mean PSNR."""
    scored = [o for o in items if math.isfinite(o.mean())]
    return min(scored, key=lambda o: o.mean()) if scored else None


def _compare(
    verdicts: Verdicts, evidence: dict, scope_model: tuple, strong: Observation, weak: Observation, label: str
) -> None:
    """``strong`` must have a mean PSNR at most ``weak``'s plus the tolerance."""
    scope, model = scope_model
    ok = strong.mean() <= weak.mean() + PSNR_TOLERANCE_DB
    verdicts.add(model, ok, f"{scope} {strong.attack} {strong.mean():.2f} dB, {weak.attack} {weak.mean():.2f} dB")
    if scope.startswith("main"):
        evidence["series"].append(
            {
                "label": f"{model} ({scope})",
                "x": [f"{label}: {strong.attack}", weak.attack],
                "y": [strong.mean(), weak.mean()],
            }
        )


def white_box_vs_transfer(items: list[Observation]) -> dict:
    verdicts, evidence = Verdicts(), _evidence("bar", "attack", "mean PSNR (dB)")
    for (scope, model, _), group in _groups(items):
        white = _strongest([o for o in group if o.white_box_gradient])
        transfer = _strongest([o for o in group if o.transferred and o.family == "gradient"])
        if white is not None and transfer is not None:
            _compare(verdicts, evidence, (scope, model), white, transfer, "white-box")
    return _check(
        "white_box_vs_transfer",
        verdicts,
        evidence,
        "every white-box attack is at least as strong as the transferred ones",
        "an attack transferred from another model is stronger than the white-box attacks on {}: gradient masking",
    )


def attack_vs_noise(items: list[Observation]) -> dict:
    verdicts, evidence = Verdicts(), _evidence("bar", "attack", "mean PSNR (dB)")
    for (scope, model, _), group in _groups(items):
        noise = _strongest([o for o in group if o.family == "noise"])
        for attack in [o for o in group if o.white_box_gradient] if noise is not None else []:
            ok = attack.mean() < noise.mean()
            detail = f"{scope} {attack.attack} {attack.mean():.2f} dB, {noise.attack} {noise.mean():.2f} dB"
            verdicts.add(model, ok, detail)
            if scope.startswith("main"):
                x = [attack.attack, noise.attack]
                evidence["series"].append({"label": f"{model} ({scope})", "x": x, "y": [attack.mean(), noise.mean()]})
    return _check(
        "attack_vs_noise",
        verdicts,
        evidence,
        "every gradient attack is stronger than matched noise",
        "a gradient attack is not stronger than matched noise on {}: its gradient does not point to damage",
    )


def gradient_free_vs_gradient(items: list[Observation]) -> dict:
    verdicts, evidence = Verdicts(), _evidence("bar", "attack", "mean PSNR (dB)")
    for (scope, model, _), group in _groups(items):
        gradient = _strongest([o for o in group if o.white_box_gradient])
        free = _strongest([o for o in group if o.family == "gradient_free"])
        if gradient is None or free is None:
            continue
        ok = gradient.mean() <= free.mean()
        verdicts.add(
            model, ok, f"{scope} {gradient.attack} {gradient.mean():.2f} dB, {free.attack} {free.mean():.2f} dB"
        )
        if scope.startswith("main"):
            x = [gradient.attack, free.attack]
            evidence["series"].append({"label": f"{model} ({scope})", "x": x, "y": [gradient.mean(), free.mean()]})
    return _check(
        "gradient_free_vs_gradient",
        verdicts,
        evidence,
        "the gradient attacks are at least as strong as the gradient-free one",
        "the gradient-free attack is stronger than every gradient attack on {}: gradient masking",
    )


def eot_converges(items: list[Observation]) -> dict:
    verdicts, evidence = Verdicts(), _evidence("line", "noise draws", "||g_2n - g_n|| / ||g_2n||, median")
    for o in items:
        curves = [c for c in o.facts("eot_convergence") if c]
        if o.transferred or not curves:
            continue
        length = min(len(c) for c in curves)
        median = [statistics.median(c[i] for c in curves) for i in range(length)]
        ok = median[-1] <= EOT_SETTLED
        draws = [2 ** (i + 1) for i in range(length)]
        verdicts.add(
            o.model,
            ok,
            f"{o.scope} {o.attack}: the averaged gradient moves by {median[-1]:.2f} of its norm from "
            f"{draws[-1] // 2} to {draws[-1]} draws",
        )
        if o.scope.startswith("main"):
            evidence["series"].append({"label": f"{o.model}: {o.attack}", "x": draws, "y": median})
    return _check(
        "eot_converges",
        verdicts,
        evidence,
        "the EOT gradient of every randomized model settles",
        f"the EOT gradient still moves by more than {EOT_SETTLED:g} of its norm when its draws double on {{}}: "
        "take more draws (eot_samples)",
    )


def gradients_finite_nonzero(items: list[Observation]) -> dict:
    verdicts, evidence = Verdicts(), _evidence("bar", "attack", "fraction of gradient evaluations")
    for o in items:
        evaluations = sum(o.facts("gradient_evaluations"))
        if o.transferred or not evaluations:
            continue
        zero, nonfinite = sum(o.facts("zero_gradient_steps")), sum(o.facts("nonfinite_gradient_steps"))
        detail = f"{o.scope} {o.attack}: {zero} zero and {nonfinite} non-finite of {evaluations} gradients"
        verdicts.add(o.model, zero == 0 and nonfinite == 0, detail)
        if o.scope.startswith("main"):
            x = ["zero", "non-finite"]
            evidence["series"].append(
                {"label": f"{o.model}: {o.attack}", "x": x, "y": [zero / evaluations, nonfinite / evaluations]}
            )
    return _check(
        "gradients_finite_nonzero",
        verdicts,
        evidence,
        "every gradient was finite and non-zero",
        "zero or non-finite gradients on {}: the model hides its gradient (non-differentiable steps, detached "
        "inputs) or overflows",
    )


def scale_steady(items: list[Observation]) -> dict:
    verdicts, evidence = Verdicts(), _evidence("bar", "attack", "largest move on a slice (fraction)")
    for o in items:
        shifts = [abs(v - 1) for v in o.facts("normalisation_shift") if _finite(v)]
        if o.family == "none" or not shifts:
            continue  # no perturbation, or a model without an input-dependent normalisation
        outputs = [abs(v - 1) for v in o.facts("output_scale_ratio") if _finite(v)]
        shift, output = max(shifts), max(outputs, default=0.0)
        normalisation = o.facts("normalisation")
        detail = (
            f"{o.scope} {o.attack} (normalisation {normalisation[0] if normalisation else 'n/a'}): the input "
            f"normalisation moved by up to {shift:.1%}; the output's mean magnitude by up to {output:.1%}"
        )
        verdicts.add(o.model, shift <= NORMALISATION_TOLERANCE, detail)
        if o.scope.startswith("main"):
            label = f"{o.model}: {o.attack}"
            evidence["series"].append(
                {"label": label, "x": ["input normalisation", "output scale"], "y": [shift, output]}
            )
    return _check(
        "scale_steady",
        verdicts,
        evidence,
        f"no attack moved a model's input normalisation by more than {NORMALISATION_TOLERANCE:.0%}",
        f"an attack moved the input normalisation of {{}} by more than {NORMALISATION_TOLERANCE:.0%}: its numbers "
        "measure the normalisation as much as the network (a `normalisation: attacked` condition)",
    )


def sanity_checks(records: list[dict], protocol: dict) -> list[dict]:
    """Every check on the records of an evaluation (``protocol`` as in robustness.json, transfers expanded)."""
    items = observations(records, protocol)
    return [
        objective_rises(items),
        budget_monotone(items, protocol),
        white_box_vs_transfer(items),
        attack_vs_noise(items),
        gradient_free_vs_gradient(items),
        eot_converges(items),
        gradients_finite_nonzero(items),
        scale_steady(items),
    ]


def warnings_of(checks: list[dict]) -> list[str]:
    """One line per check that warns, for the top of robustness.md."""
    return [
        f"sanity check `{c['check']}` warns: {c['summary']}"
        + (f" (figure: [{c['figure']}]({c['figure']}))." if c["figure"] else ".")
        for c in checks
        if c["verdict"] == WARN
    ]


def markdown_section(checks: list[dict]) -> list[str]:
    """The sanity checks as a table with their figures and per-model details."""
    lines = ["", "## Sanity checks", "", "| check | verdict | summary | figure |", "|---|---|---|---|"]
    for c in checks:
        figure = f"[{c['figure']}]({c['figure']})" if c["figure"] else ""
        lines.append(f"| {c['title']} (`{c['check']}`) | {VERDICT_TEXT[c['verdict']]} | {c['summary']} | {figure} |")
    for c in checks:
        for model, entry in c["models"].items():
            if entry["verdict"] == WARN:
                lines += ["", f"`{c['check']}` on {model}:", ""] + [f"- {d}" for d in entry["details"]]
    return lines


def model_verdicts(checks: list[dict], model: str) -> list[dict]:
    """The verdict of every check for one model (n/a where it did not apply), with its details."""
    out = []
    for c in checks:
        entry = c["models"].get(model, {"verdict": NA, "details": []})
        out.append(
            {
                "check": c["check"],
                "title": c["title"],
                "verdict": entry["verdict"],
                "details": entry["details"],
                "figure": c["figure"],
            }
        )
    return out
