"""`make beyond`: the five "Beyond SMUG" measurements on the `make reproduce` checkpoints, sized for a 2-core CPU.

    python scripts/beyond.py [--jobs 2] [--runs runs/reproduce] [--results results/demo/beyond] [--threads 1]

Needs the data and checkpoints of `make reproduce` (scripts/reproduce.py, whose model list and lambda_l choice it
reuses). Steps, each skipped when its output exists:

1. the shifted test set (`smug data demo --shifted` into data/demo_shifted/shifted/);
2. the CS baseline's weight on the validation split (`smug cs-tune`);
3. distribution shifts: clean `smug evaluate` of every model and CS on data/demo/test and on the shifted set, then
   `smug shifts` with the adversarially filtered set of MoDL (scratch), which is left out of the table;
4. small-feature recovery for VarNet (DIRECT-native), SMUG (plugin) and CS (`smug small-features`);
5. the cyclic-consistency defense around MoDL (plugin) and DIRECT's XPDNet, RIM, E2E-VarNet and Recurrent-VarNet
   (XPDNet and Recurrent-VarNet trained here with `direct train`, projects/reproduce/): per model one `smug evaluate`
   of the model and the defended model on the test slices, clean, under the white-box PGD (on the defended model the
   adaptive attack, BPDA through the purification) and the blind PGD (computed on the undefended model); then the
   report (scripts/defense_report.py: gains with paired 95 % intervals, cost multiple, figure) in defense/;
6. Theorem 1 for SMUG next to MoDL (`smug bound`, against the PGD of the `make reproduce` evaluation).

Steps run `--jobs` at a time. The sizes (slices, windows, iterations) are cut to keep the study within 90 min of
wall-clock on a shared 2-core machine; they are the constants below and results/demo/beyond/README.md states them.
"""

import argparse
import concurrent.futures
import json
import pathlib
import shlex
import sys
import time

import beyond_adversarial
import reproduce

from smug_plugin.robustness.defenses.cyclic_consistency import VARIANT_DEFAULTS, DefenseVariant
from smug_plugin.robustness.reports.defense_report import BLIND, CLEAN, WHITE_BOX

ROOT = reproduce.ROOT
BIN = reproduce.BIN
DATA = reproduce.DATA
SHIFTED_DATA = ROOT / "data" / "demo_shifted"
SEED = reproduce.SEED
FILTER_MODEL = "MoDL (scratch)"  # picks the adversarially filtered slices; never an evaluated model of the table
SMALL_FEATURE_MODELS = ("VarNet", "SMUG")  # one DIRECT-native, one plugin model, and CS
# The defended models: MoDL (plugin) and DIRECT's native networks; XPDNet and Recurrent-VarNet are not in
# `make reproduce`, so this study trains them (project name of projects/reproduce/).
DEFENDED = ("MoDL", "XPDNet", "RIM", "VarNet", "Recurrent-VarNet")
TRAINED_HERE = {"XPDNet": "xpdnet", "Recurrent-VarNet": "recurrentvarnet"}
# The defense steps in the order of their measured wall-clock (training included), longest first.
LONGEST_DEFENSES_FIRST = ("Recurrent-VarNet", "RIM", "XPDNet", "VarNet", "MoDL")
BOUND_MODELS = ("MoDL", "SMUG")
ID_RUN, OOD_RUN = "shifts_in_distribution", "shifts_dipy"
# CPU sizes: all 12 validation slices for the CS weight; 1 test slice at stride 16 (30 windows) for small features;
# all 12 test slices for the defense, whose sizes are cut (DEFENSE_CUT).
CS_TUNE_SLICES = 12
SMALL_FEATURE_STRIDE = 16
SMALL_FEATURE_SLICES = 1
DEFENSE_SLICES = 12
DEFENSE_BATCH = 4
# The published defense (radius 0.01 x max |A^H y|, step 0.5 x radius decayed linearly, noise jittering x 6, best
# iterate) with its sizes cut for the CPU: the paper's 100 iterations x 2 stages x 3 masks cost 2109 reconstructions
# per slice, and the adaptive attack runs the defense at each of its 10 steps.
DEFENSE_CUT = {"iterations": 3, "stages": 1, "extra_masks": 2}
DEFENSE = {"variant": "published", **DEFENSE_CUT, "seed": 0}
ATTACK = {
    "kind": "pgd",
    "norm": "linf",
    "budget": {"value": 0.02, "convention": "paper"},
    "steps": 10,
    "step_fraction": 0.3333333333,
}


def relative(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def model_specs(runs: pathlib.Path) -> dict[str, str]:
    """`NAME=CONFIG:CHECKPOINT` of the seed-0 model of every kind `make reproduce` evaluated (the chosen lambda_l;
    the frontier's other points left out), named without the seed."""
    choice = json.loads((ROOT / "results" / "demo" / "lambda_l_choice.json").read_text())["chosen"]
    specs = {}
    for display, job in reproduce.evaluated_models(choice).items():
        name = display.removesuffix(" s0")
        if job.seed != 0 or name.startswith("SMUG lambda_l"):
            continue
        cfg = f"projects/reproduce/{job.project}.yaml"
        specs[name] = f"{name}={cfg}:{relative(reproduce.checkpoint(runs, job))}"
    return specs


def defense_yaml(wrapped: str) -> str:
    """The defended model's YAML (`--model NAME=defense.yaml`): the defense around ``wrapped``, its cut stated."""
    cut = ", ".join(f"{key} {value}" for key, value in DEFENSE_CUT.items())
    paper = ", ".join(f"{key} {VARIANT_DEFAULTS[DefenseVariant.PUBLISHED][key]}" for key in DEFENSE_CUT)
    return (
        f"# The cyclic-consistency defense around {wrapped}: the published variant (radius 0.01 x max |A^H y|,\n"
        f"# step 0.5 x radius decayed, jittering x 6, best iterate) with its sizes cut for a 2-core CPU: {cut}\n"
        f"# (published: {paper}); scripts/beyond.py DEFENSE_CUT.\n"
        f"defense:\n  wraps: {wrapped}\n" + "".join(f"  {key}: {value}\n" for key, value in DEFENSE.items())
    )


def defense_protocol_yaml(wrapped: str) -> str:
    """The protocol of the defense study around ``wrapped``: clean, white-box PGD (adaptive BPDA on the defended
    model), the PGD of ``wrapped`` transferred (blind)."""
    attack = "".join(f"    {key}: {json.dumps(value)}\n" for key, value in ATTACK.items())
    slug = wrapped.lower()
    return (
        f"# The journal's PGD, white-box per model (on {wrapped}+defense the adaptive attack: BPDA through the\n"
        f"# purification) and blind (computed on {wrapped}, applied to both); the defense's sizes are cut\n"
        f"# (defense_{slug}.yaml). Threat model: the default (normalisation fixed from the clean measurement).\n"
        f"name: defense-{slug}\nseed: 0\nperturbations:\n  - {{name: {CLEAN}, kind: clean}}\n"
        f"  - name: {WHITE_BOX}\n{attack}  - name: {BLIND}\n{attack}    transfer_from: {wrapped}\n"
    )


class Study:
    """The commands of the study, their logs and wall-clock records."""

    def __init__(self, runs: pathlib.Path, results: pathlib.Path, threads: int):
        self.specs = model_specs(runs)
        self.study_models = tuple(self.specs)  # `make reproduce`'s; the defense step adds the models it trains
        self.results = results
        self.scratch = ROOT / "runs" / "beyond"
        self.threads = ["--threads", str(threads)]
        self.cs_yaml = results / "cs.yaml"
        for folder in (results, results / "inputs", self.scratch):
            folder.mkdir(parents=True, exist_ok=True)

    def step(self, name: str, command: list[str], done: pathlib.Path) -> dict:
        """Run `command` (log in runs/beyond/<name>.log) unless `done` exists."""
        record = {"step": name, "command": shlex.join(command)}
        if done.exists():
            reproduce.log(f"{name}: exists ({relative(done)})")
            return record | {"seconds": None}
        reproduce.log(f"{name}: {shlex.join(command)}")
        seconds = reproduce.run_logged(command, self.scratch / f"{name}.log")
        reproduce.log(f"{name} done in {seconds / 60:.1f} min")
        return record | {"seconds": round(seconds, 1)}

    def models(self, *names: str) -> list[str]:
        return [argument for name in names for argument in ("--model", self.specs[name])]

    def evaluate(self, name: str, models: list[str], protocol: pathlib.Path, data: pathlib.Path, **options) -> dict:
        output = self.results / name
        command = [str(BIN / "smug"), "evaluate", *models, "--protocol", relative(protocol)]
        command += ["--data-root", relative(data), "--output-dir", relative(output), "--seed", str(SEED), "--resume"]
        for key, value in options.items():
            command += [f"--{key.replace('_', '-')}", str(value)]
        return self.step(f"evaluate {name}", command + self.threads + ["--no-progress"], output / "robustness.json")

    def write_input(self, name: str, text: str) -> pathlib.Path:
        path = self.results / "inputs" / name
        path.write_text(text)
        return path

    def shifted_data(self) -> dict:
        command = [str(BIN / "smug"), "data", "demo", "--output-dir", relative(SHIFTED_DATA), "--seed", str(SEED)]
        command += ["--train-volumes", "0", "--val-volumes", "0", "--test-volumes", "0", "--shifted"]
        return self.step("shifted data", command, SHIFTED_DATA / "demo_manifest.json")

    def cs_tune(self) -> dict:
        command = [str(BIN / "smug"), "cs-tune", "--data-model", self.specs["MoDL"].split("=", 1)[1]]
        command += ["--data-root", relative(DATA / "val"), "--output", relative(self.cs_yaml)]
        command += ["--max-slices", str(CS_TUNE_SLICES), *self.threads]
        return self.step("cs-tune", command, self.cs_yaml)

    def shifts(self) -> list[dict]:
        protocol = self.write_input(
            "clean.yaml",
            "# Clean reconstructions only (Darestani's accuracy).\n"
            "name: clean\nseed: 0\nperturbations:\n  - {name: clean, kind: clean}\n",
        )
        models = self.models(*self.study_models) + ["--model", f"CS={relative(self.cs_yaml)}"]
        records = [
            self.evaluate(ID_RUN, models, protocol, DATA / "test", batch_size=4),
            self.evaluate(OOD_RUN, models, protocol, SHIFTED_DATA / "shifted", batch_size=4),
        ]
        # PSNR and SSIM: the shifted images differ in content (more background), so their PSNR runs higher.
        for metric, output in (("psnr", self.results / "shifts"), ("ssim", self.results / "shifts_ssim")):
            command = [str(BIN / "smug"), "shifts", "--in-distribution", relative(self.results / ID_RUN)]
            command += ["--shifted", f"dipy={relative(self.results / OOD_RUN)}", "--filter-model", FILTER_MODEL]
            command += ["--metric", metric, "--output-dir", relative(output)]
            records.append(self.step(f"shifts {metric}", command, output / "shifts.json"))
        return records

    def small_features(self) -> dict:
        output = self.results / "small_features"
        command = [str(BIN / "smug"), "small-features", *self.models(*SMALL_FEATURE_MODELS)]
        command += ["--model", f"CS={relative(self.cs_yaml)}", "--data-root", relative(DATA / "test")]
        command += ["--stride", str(SMALL_FEATURE_STRIDE), "--window-batch", "30"]
        command += ["--max-slices", str(SMALL_FEATURE_SLICES), "--output-dir", relative(output), *self.threads]
        return self.step("small-features", command, output / "small_features.json")

    def trained(self, runs: pathlib.Path, name: str) -> list[dict]:
        """`direct train` of a defended model that `make reproduce` does not train (skipped when finished), its spec
        added to the study's models."""
        if name not in TRAINED_HERE:
            return []
        job = reproduce.Training(TRAINED_HERE[name])
        record = reproduce.train(runs, job)
        self.specs[name] = f"{name}=projects/reproduce/{job.project}.yaml:{relative(reproduce.checkpoint(runs, job))}"
        return [record]

    def defense(self, runs: pathlib.Path, wrapped: str) -> list[dict]:
        """`smug evaluate` of ``wrapped`` and ``wrapped`` behind the defense: clean, white-box PGD (adaptive BPDA on
        the defended model) and the PGD of the undefended model transferred to the defended one (blind)."""
        records = self.trained(runs, wrapped)
        slug = wrapped.lower()
        defense = self.write_input(f"defense_{slug}.yaml", defense_yaml(wrapped))
        protocol = self.write_input(f"defense_{slug}_protocol.yaml", defense_protocol_yaml(wrapped))
        models = self.models(wrapped) + ["--model", f"{wrapped}+defense={relative(defense)}"]
        evaluation = self.evaluate(
            f"defense_{slug}", models, protocol, DATA / "test", max_slices=DEFENSE_SLICES, batch_size=DEFENSE_BATCH
        )
        return records + [evaluation]

    def defense_report(self) -> dict:
        output = self.results / "defense"
        command = [sys.executable, "scripts/defense_report.py", "--output-dir", relative(output)]
        for name in DEFENDED:
            command += ["--run", f"{name}={relative(self.results / f'defense_{name.lower()}')}"]
        return self.step("defense report", command, output / "defense.json")

    def bound(self, runs: pathlib.Path) -> dict:
        output = self.results / "bound"
        # Named as in `make reproduce`'s evaluation (seed 0), whose PGD ratio stands beside the constants.
        models = [arg for name in BOUND_MODELS for arg in ("--model", f"{name} s0={self.specs[name].split('=', 1)[1]}")]
        command = [str(BIN / "smug"), "bound", *models, "--data-root", relative(DATA / "test")]
        command += ["--evaluation", relative(runs / "evaluation"), "--perturbation", "pgd"]
        command += ["--output-dir", relative(output), *self.threads]
        return self.step("bound", command, output / "bound.json")


OUTPUTS = {  # folder of results/demo/beyond -> what it holds
    "defense/": "the cyclic-consistency defense around MoDL, XPDNet, RIM, E2E-VarNet, Recurrent-VarNet (README.md)",
    "adversarial/": "adversarial training against MoDL and SMUG: PGD, acceleration and unroll shifts, training cost",
    "shifts/, shifts_ssim/": "distribution shifts (Darestani et al.), PSNR and SSIM",
    "small_features/": "small-feature recovery, VarNet, SMUG and CS",
    "bound/": "Theorem 1 of the SMUG journal next to the measured ratio",
    "cs.yaml": "the CS baseline's weight, chosen on the validation split",
    "inputs/": "the protocols and defense YAMLs the steps ran",
}


def readme(record: dict, results: pathlib.Path) -> str:
    """results/demo/beyond/README.md: what ran, its sizes, its wall-clock, where the outputs are (those present)."""
    outputs = {f: what for f, what in OUTPUTS.items() if (results / f.split(",")[0].rstrip("/")).exists()}
    lines = [
        "# Beyond SMUG on the bundled data (`make beyond`)",
        "",
        "Written by scripts/beyond.py from study.json; docs/beyond.md describes every measurement. Sizes cut for a "
        f"2-core CPU: defense on {DEFENSE_SLICES} test slices with the published defense cut to "
        + ", ".join(f"{key} {value}" for key, value in DEFENSE_CUT.items())
        + f"; CS weight on {CS_TUNE_SLICES} validation slices; small features on {SMALL_FEATURE_SLICES} test slice at "
        f"stride {SMALL_FEATURE_STRIDE}; adversarial training of MoDL and SMUG with "
        f"{len(beyond_adversarial.ADVERSARIAL_SEEDS)} seed(s) each on the study's data and iterations.",
        "",
        f"Machine: {record['machine']}; {record['jobs']} step(s) at a time, {record['threads_per_step']} thread(s) "
        "each. Steps that existed were skipped (seconds: null); steps of earlier invocations are kept.",
        "",
        "| output | what |",
        "|---|---|",
        *[f"| {folder} | {what} |" for folder, what in outputs.items()],
        "",
        "| step | wall-clock (min) | command |",
        "|---|---|---|",
    ]
    for step in record["steps"]:
        minutes = "" if step.get("seconds") is None else f"{step['seconds'] / 60:.1f}"
        lines.append(f"| {step['step']} | {minutes} | `{step.get('command', '')}` |")
    lines += ["", f"Sum of the step wall-clocks: {record['sum_of_step_seconds'] / 60:.1f} min.", ""]
    lines += ["| invocation (finished) | --only | steps at a time | wall-clock (min) |", "|---|---|---|---|"]
    for run in record.get("invocations", []):
        lines.append(f"| {run['finished']} | {','.join(run['only'])} | {run['jobs']} | {run['seconds'] / 60:.1f} |")
    lines.append("")
    return "\n".join(lines).replace(str(ROOT) + "/", "")  # commands as run from the repository root


def export_checkpoints(runs: pathlib.Path, folder: pathlib.Path) -> None:
    """The weights of the models this study trains (next to `make reproduce`'s, in results/demo/checkpoints/)."""
    jobs = [reproduce.Training(project) for project in TRAINED_HERE.values()] + beyond_adversarial.ADVERSARIAL
    folder.mkdir(parents=True, exist_ok=True)
    for job in jobs:
        if (runs / job.run / job.project / "last_model.txt").exists():  # trained (an --only run may skip some)
            reproduce.portable_checkpoint(reproduce.checkpoint(runs, job), folder / f"{job.run}.pt")


def adversarial_evaluation(study: Study, runs: pathlib.Path, lam: str, trainings: list) -> dict:
    """The adversarial-training evaluation and report once its trainings (futures of ``trainings``) are done."""
    concurrent.futures.wait(trainings)
    return beyond_adversarial.evaluate_and_report(study, runs, lam)


def merged_steps(earlier: list[dict], steps: list[dict]) -> list[dict]:
    """The record of every step of the folder: this invocation's, except where it skipped a step (seconds None) that
    an earlier invocation ran and timed; the earlier invocations' other steps kept (--only, an interrupted run)."""
    timed = {step["step"]: step for step in earlier if step.get("seconds") is not None}
    steps = [timed.get(step["step"], step) if step.get("seconds") is None else step for step in steps]
    names = {step["step"] for step in steps}
    return [step for step in earlier if step["step"] not in names] + steps


GROUPS = ("defense", "adversarial", "shifts", "small-features", "bound")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=reproduce.JOBS, help="steps run at once")
    parser.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--results", type=pathlib.Path, default=ROOT / "results" / "demo" / "beyond")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per step")
    parser.add_argument(
        "--only",
        default=",".join(GROUPS),
        help=f"comma-separated subset of the steps: {', '.join(GROUPS)} (default: all)",
    )
    args = parser.parse_args()
    only = [group.strip() for group in args.only.split(",") if group.strip()]
    if unknown := sorted(set(only) - set(GROUPS)):
        parser.error(f"--only: unknown step {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    runs, results = args.runs.absolute(), args.results.absolute()
    start = time.perf_counter()
    study = Study(runs, results, args.threads)
    steps = []
    if {"shifts", "small-features"} & set(only):
        steps += [study.shifted_data(), study.cs_tune()]  # these steps need the shifted data or the CS weight
    with concurrent.futures.ThreadPoolExecutor(max_workers=args.jobs) as pool:
        # Longest first (measured: the adversarial trainings, then the defense around Recurrent-VarNet, RIM and
        # XPDNet), so that the two workers finish together; the short steps fill in at the end.
        futures, trainings = [], []
        if "adversarial" in only:
            trainings = [pool.submit(reproduce.train, runs, job) for job in beyond_adversarial.ADVERSARIAL]
            futures += trainings
        if "defense" in only:
            futures += [pool.submit(study.defense, runs, name) for name in LONGEST_DEFENSES_FIRST]
        if "adversarial" in only:
            futures.append(pool.submit(beyond_adversarial.training_cost, study))
        if "shifts" in only:
            futures.append(pool.submit(study.shifts))
        if "small-features" in only:
            futures.append(pool.submit(study.small_features))
        if "bound" in only:
            futures.append(pool.submit(study.bound, runs))
        if "adversarial" in only:  # last in the queue: the trainings it waits for have all started before it
            lam = beyond_adversarial.chosen_lambda_l()
            futures.append(pool.submit(adversarial_evaluation, study, runs, lam, trainings))
        for future in futures:
            result = future.result()
            steps += result if isinstance(result, list) else [result]
    if "defense" in only:
        steps.append(study.defense_report())
    export_checkpoints(runs, ROOT / "results" / "demo" / "checkpoints")
    # Steps of earlier invocations (--only, or an interrupted run) are kept: the record covers the whole folder.
    record_path = results / "study.json"
    previous = json.loads(record_path.read_text()) if record_path.exists() else {}
    record = {
        "machine": reproduce.machine(),
        "jobs": args.jobs,
        "threads_per_step": args.threads,
        "steps": merged_steps(previous.get("steps", []), steps),
        "this_invocation_seconds": round(time.perf_counter() - start, 1),
    }
    finished = time.strftime("%Y-%m-%d %H:%M")
    invocation = {"only": only, "jobs": args.jobs, "seconds": record["this_invocation_seconds"], "finished": finished}
    record["invocations"] = [*previous.get("invocations", []), invocation]
    record["sum_of_step_seconds"] = round(sum(step.get("seconds") or 0 for step in record["steps"]), 1)
    # Commands as run from the repository root, without this machine's path to it (as reproduce.py's study.json).
    record_path.write_text(json.dumps(record, indent=2).replace(str(ROOT) + "/", "") + "\n")
    (results / "README.md").write_text(readme(record, results))
    reproduce.log(f"beyond done: this invocation {record['this_invocation_seconds'] / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
