"""`make reproduce`: the SMUG papers' robustness study on the bundled data, with the real `direct` and `smug` commands,
seeds and paired intervals, under the declared threat model (normalisation fixed from the clean measurement).

    python scripts/reproduce.py [--jobs 2] [--runs runs/reproduce] [--results results/demo] [--beyond]

1. simulate the demo data (`smug data demo`);
2. pre-train the DIDN denoiser; fine-tune MoDL (3 seeds), SMUG at every point of the lambda_l frontier (seed 0) and
   RS-E2E (distilled from MoDL seed 0, as published) from it; train DIRECT's native EndToEndVarNet and RIM on the
   same data and masks (`direct train`, two runs at a time: DIRECT pins one thread per run);
3. pick lambda_l on the validation split (never the test split) by the papers' rule, the smallest lambda_l whose SMUG
   is within a tolerance of MoDL's mean validation PSNR, the tolerance above the MoDL seed spread measured in step 2;
   then train SMUG seeds 1-2 and Weighted SMUG seeds 0-2 at that lambda_l, and MoDL from scratch (3 seeds);
4. evaluate every model and seed on the test split with the shipped protocol `reproduce` (`smug evaluate`, sharded
   over two processes with torchrun);
5. write results/demo/: the robustness report, the study (scripts/study_analysis.py: paired differences to MoDL
   with 95 % intervals over seeds x slices and verdicts, the clean-vs-PGD figure), the lambda_l choice and the study
   log (commands, seeds, versions, wall-clock), and the final checkpoints (results/demo/checkpoints/, small);
6. with --beyond, the Beyond-SMUG measurements on these checkpoints (scripts/beyond.py, `make beyond`).

Every step is skipped when its outputs exist (a finished training leaves `.complete` with its wall-clock), and an
interrupted training or evaluation resumes.
"""

import argparse
import concurrent.futures
import json
import os
import pathlib
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))
from generate_projects import REPRODUCE_LAMBDA_L as FRONTIER  # noqa: E402

BIN = pathlib.Path(sys.executable).parent
DATA = ROOT / "data" / "demo"
SEED = 0
SEEDS = (0, 1, 2)
JOBS = min(2, os.cpu_count() or 1)
# The papers' "clean accuracy comparable to MoDL": within this many dB of MoDL's mean validation PSNR, or twice the
# spread of MoDL's seeds when that is larger (a tolerance below the seed noise would pick by chance).
CLEAN_TOLERANCE_DB = 0.5


@dataclass(frozen=True)
class Training:
    """One `direct train` run: a project of projects/reproduce under a training seed."""

    project: str
    seed: int = 0

    @property
    def run(self) -> str:
        return self.project if self.seed == 0 else f"{self.project}_seed{self.seed}"


def log(message: str) -> None:
    print(f"[reproduce {time.strftime('%H:%M:%S')}] {message}", flush=True)


def run_logged(command: list[str], log_file: pathlib.Path) -> float:
    """Runs a command with its output in `log_file`; returns the wall-clock seconds, raises on failure."""
    start = time.perf_counter()
    with open(log_file, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        result = subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = log_file.read_text().splitlines()[-25:]
        raise RuntimeError(f"failed ({result.returncode}): {' '.join(command)}\n" + "\n".join(tail))
    return time.perf_counter() - start


def direct_train_command(run: pathlib.Path, cfg: pathlib.Path, seed: int) -> list[str]:
    """`direct train` of `cfg` into `run` on the demo data (paths relative to the repository: DIRECT seeds the
    masks from the file names), resuming where the run has a checkpoint."""
    command = [
        str(BIN / "direct"), "train", str(run.relative_to(ROOT)), "--cfg", str(cfg.relative_to(ROOT)),
        "--training-root", str((DATA / "train").relative_to(ROOT)),
        "--validation-root", str((DATA / "val").relative_to(ROOT)),
        "--device", "cpu", "--num-workers", "0", "--seed", str(seed),
    ]  # fmt: skip
    if (run / cfg.stem / "last_model.txt").exists():
        command.append("--resume")
    return command


def train(runs: pathlib.Path, job: Training) -> dict:
    """`direct train` of projects/reproduce/<project>.yaml with seed `job.seed`, skipped when finished, resumed when
    interrupted."""
    run = runs / job.run
    done = run / ".complete"
    if done.exists():
        return json.loads(done.read_text())
    run.mkdir(parents=True, exist_ok=True)
    command = direct_train_command(run, ROOT / "projects" / "reproduce" / f"{job.project}.yaml", job.seed)
    log(f"train {job.run}: {' '.join(command)}")
    seconds = run_logged(command, run / "train.log")
    record = {"step": f"train {job.run}", "command": shlex.join(command), "seconds": round(seconds, 1)}
    done.write_text(json.dumps(record))
    log(f"train {job.run} done in {seconds / 60:.1f} min")
    return record


def checkpoint(runs: pathlib.Path, job: Training) -> pathlib.Path:
    folder = runs / job.run / job.project
    iteration = (folder / "last_model.txt").read_text().strip()
    return folder / f"model_{iteration}.pt"


def validation_psnr(runs: pathlib.Path, job: Training) -> float:
    folder = runs / job.run / job.project
    files = sorted(folder.glob("metrics_val_*.json"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    per_volume = json.loads(files[-1].read_text())
    values = [v["fastmri_psnr_metric"] for v in per_volume.values()]
    return sum(values) / len(values)


def choose_lambda_l(runs: pathlib.Path, candidates: list[float]) -> dict:
    """The papers' rule: the smallest lambda_l (the strongest UStab weight) whose SMUG is within the tolerance of
    MoDL's mean validation PSNR over its seeds; the tolerance is the larger of 0.5 dB and twice MoDL's seed SD."""
    modl = [validation_psnr(runs, Training("modl", seed)) for seed in SEEDS]
    spread = statistics.stdev(modl)
    tolerance = max(CLEAN_TOLERANCE_DB, 2 * spread)
    reference = statistics.fmean(modl)
    scores = {lam: validation_psnr(runs, Training(f"smug_lambda{lam:g}")) for lam in candidates}
    admissible = [lam for lam in sorted(candidates) if scores[lam] >= reference - tolerance]
    chosen = admissible[0] if admissible else max(scores, key=scores.get)
    return {
        "rule": "smallest journal-equivalent lambda_l with SMUG validation PSNR >= mean MoDL validation PSNR - "
        "tolerance, tolerance = max(0.5 dB, 2 x SD of MoDL's seeds); else the best",
        "modl_val_psnr_per_seed": [round(v, 3) for v in modl],
        "modl_val_psnr_mean": round(reference, 3),
        "modl_seed_sd_db": round(spread, 3),
        "tolerance_db": round(tolerance, 3),
        "smug_val_psnr": {f"{lam:g}": round(v, 3) for lam, v in scores.items()},
        "chosen": chosen,
        "within_tolerance": bool(admissible),
    }


def train_all(runs: pathlib.Path, jobs: list[Training], after: dict[Training, Training], workers: int) -> list[dict]:
    """Trains ``workers`` runs at a time in the order of ``jobs``; a job in ``after`` waits for its prerequisite."""
    records: list[dict] = []
    finished: set[Training] = set()
    pending = list(jobs)
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        running: dict[concurrent.futures.Future, Training] = {}
        while pending or running:
            for job in list(pending):
                if len(running) >= workers:
                    break
                if after.get(job) is None or after[job] in finished:
                    pending.remove(job)
                    running[pool.submit(train, runs, job)] = job
            done, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
            for future in done:
                records.append(future.result())
                finished.add(running.pop(future))
    return records


def evaluated_models(choice: float) -> dict[str, Training]:
    """Display name -> training of every evaluated model: the study's seeds and the lambda_l frontier."""
    lam = f"{choice:g}"
    models = {}
    for seed in SEEDS:
        models[f"MoDL s{seed}"] = Training("modl", seed)
    for seed in SEEDS:
        models[f"MoDL (scratch) s{seed}"] = Training("modl_scratch", seed)
    for seed in SEEDS:
        models[f"SMUG s{seed}"] = Training(f"smug_lambda{lam}", seed)
    for seed in SEEDS:
        models[f"Weighted SMUG s{seed}"] = Training(f"weighted_smug_lambda{lam}", seed)
    for other in FRONTIER:
        if f"{other:g}" != lam:
            models[f"SMUG lambda_l {other:g} s0"] = Training(f"smug_lambda{other:g}")
    models["MoDL (quantile s) s0"] = Training("modl_quantile")
    models["RS-E2E s0"] = Training("rs_e2e")
    models["VarNet s0"] = Training("varnet")
    models["RIM s0"] = Training("rim")
    return models


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=JOBS, help="trainings (and evaluation processes) run at once")
    parser.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--results", type=pathlib.Path, default=ROOT / "results" / "demo")
    parser.add_argument("--protocol", default="reproduce", help="shipped protocol name or protocol YAML")
    parser.add_argument("--beyond", action="store_true", help="then run scripts/beyond.py (about an hour more)")
    args = parser.parse_args()
    runs, results = args.runs.resolve(), args.results.resolve()
    runs.mkdir(parents=True, exist_ok=True)
    results.mkdir(parents=True, exist_ok=True)
    steps: list[dict] = []
    study_start = time.perf_counter()

    log("1/5 demo data")
    command = [str(BIN / "smug"), "data", "demo", "--output-dir", str(DATA.relative_to(ROOT)), "--seed", str(SEED)]
    if (DATA / "demo_manifest.json").exists():
        # The simulation is deterministic (seeded): existing data are the same files.
        steps.append({"step": "smug data demo (existing data reused)", "command": shlex.join(command), "seconds": None})
    else:
        start = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True)
        steps.append({"step": "smug data demo", "command": shlex.join(command), "seconds": time.perf_counter() - start})

    log("2/5 training: pre-training, MoDL seeds, the lambda_l frontier, RS-E2E, VarNet and RIM, two at a time")
    pretrain = Training("didn_pretrain")
    modl = [Training("modl", seed) for seed in SEEDS]
    frontier = [Training(f"smug_lambda{lam:g}") for lam in FRONTIER]
    first = [pretrain, *modl, *frontier, Training("rs_e2e"), Training("varnet"), Training("rim")]
    after = {job: pretrain for job in [*modl, *frontier]} | {Training("rs_e2e"): modl[0]}
    steps += train_all(runs, first, after, args.jobs)

    log("3/5 lambda_l on the validation split, then its seeds and Weighted SMUG; MoDL from scratch")
    choice = choose_lambda_l(runs, FRONTIER)
    (results / "lambda_l_choice.json").write_text(json.dumps(choice, indent=2))
    log(f"lambda_l = {choice['chosen']:g} ({choice})")
    lam = f"{choice['chosen']:g}"
    second = [Training(f"smug_lambda{lam}", seed) for seed in SEEDS[1:]]
    second += [Training(f"weighted_smug_lambda{lam}", seed) for seed in SEEDS]
    second += [Training("modl_scratch", seed) for seed in SEEDS]
    second.append(Training("modl_quantile"))
    steps += train_all(runs, second, {}, args.jobs)

    log("4/5 smug evaluate on the test split (torchrun, two processes)")
    models = evaluated_models(choice["chosen"])
    evaluation = runs / "evaluation"
    command = [str(BIN / "torchrun"), "--standalone", "--nproc-per-node", str(args.jobs), "-m", "smug_plugin.cli.main"]
    command += ["evaluate", "--threads", "1"]
    for display, job in models.items():
        cfg = f"projects/reproduce/{job.project}.yaml"
        command += ["--model", f"{display}={cfg}:{checkpoint(runs, job).relative_to(ROOT)}"]
    command += [
        "--reference", "MoDL s0", "--protocol", args.protocol, "--data-root", str((DATA / "test").relative_to(ROOT)),
        "--output-dir", str(evaluation.relative_to(ROOT)), "--seed", str(SEED), "--resume",
    ]  # fmt: skip
    log(shlex.join(command))
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    steps.append({"step": "smug evaluate", "command": shlex.join(command), "seconds": time.perf_counter() - start})

    log("5/5 results: report, study analysis, units table, checkpoints")
    command = [sys.executable, "scripts/units_table.py", "--data", str(DATA.relative_to(ROOT))]
    units = subprocess.run(command, cwd=ROOT, check=True, capture_output=True, text=True).stdout
    (results / "units_table.txt").write_text(units)
    for path in evaluation.iterdir():
        if path.is_file() and path.suffix in (".md", ".csv", ".json", ".png"):
            shutil.copy2(path, results / path.name)
    if (evaluation / "cards").is_dir():
        shutil.copytree(evaluation / "cards", results / "cards", dirs_exist_ok=True)
    trainings = {display: {"project": job.project, "seed": job.seed} for display, job in models.items()}
    (results / "models.json").write_text(json.dumps(trainings, indent=2))
    command = [sys.executable, "scripts/study_analysis.py", "--results", str(results.relative_to(ROOT))]
    subprocess.run(command, cwd=ROOT, check=True)
    checkpoints = results / "checkpoints"
    checkpoints.mkdir(exist_ok=True)
    for job in models.values():
        portable_checkpoint(checkpoint(runs, job), checkpoints / f"{job.run}.pt")
    study = {
        "seeds": list(SEEDS),
        "python": platform.python_version(),
        "machine": machine(),
        "lambda_l": choice,
        "steps": steps,
        "sum_of_step_seconds": round(sum(step["seconds"] or 0 for step in steps), 1),
        "this_invocation_seconds": round(time.perf_counter() - study_start, 1),
    }
    # Commands as run from the repository root, without this machine's path to it.
    (results / "study.json").write_text(json.dumps(study, indent=2).replace(str(ROOT) + "/", ""))
    (results / "STUDY.md").write_text(study_markdown(study, json.loads((results / "robustness.json").read_text())))
    log(f"done: this invocation {study['this_invocation_seconds'] / 60:.1f} min")
    if args.beyond:
        log("6/6 beyond SMUG (scripts/beyond.py)")
        beyond = [sys.executable, "scripts/beyond.py", "--runs", str(runs), "--jobs", str(args.jobs)]
        subprocess.run(beyond + ["--results", str(results / "beyond")], cwd=ROOT, check=True)
    return 0


def portable_checkpoint(source: pathlib.Path, target: pathlib.Path) -> None:
    """The checkpoint's model weights only (no optimizer state: a third of the size), loadable by `smug evaluate`."""
    import torch

    state = torch.load(source, map_location="cpu", weights_only=True)
    torch.save({"model": state["model"]}, target)


def machine() -> str:
    from smug_plugin.provenance import cpu_model

    cpu = cpu_model()
    return f"{platform.machine()}, {os.cpu_count()} cores ({cpu}), Python {platform.python_version()}"


def study_markdown(study: dict, robustness: dict) -> str:
    """The study log: machine, versions, seeds, the lambda_l choice and every step's command and wall-clock."""
    lines = [
        "# Reproduction study on the bundled data (written by scripts/reproduce.py)",
        "",
        f"- machine: {study['machine']}",
        f"- training seeds: {study['seeds']} (data and evaluation: 0)",
        f"- packages: {', '.join(f'{k} {v}' for k, v in sorted(robustness.get('versions', {}).items()))}",
        f"- lambda_l (journal-equivalent): {study['lambda_l']['chosen']:g} — {study['lambda_l']['rule']}; validation "
        f"PSNR MoDL {study['lambda_l']['modl_val_psnr_per_seed']} (tolerance {study['lambda_l']['tolerance_db']} dB), "
        f"SMUG {study['lambda_l']['smug_val_psnr']}",
        f"- sum of the steps' wall-clock: {study['sum_of_step_seconds'] / 60:.1f} min (trainings ran {JOBS} at a time, "
        "so the elapsed time was shorter; a step skipped because its outputs existed keeps the wall-clock of the "
        "run that made them)",
        "",
        "| step | wall-clock (min) | command |",
        "|---|---|---|",
    ]
    for step in study["steps"]:
        command = step["command"].replace(str(ROOT) + "/", "")
        minutes = "-" if step["seconds"] is None else f"{step['seconds'] / 60:.1f}"
        lines.append(f"| {step['step']} | {minutes} | `{command}` |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
