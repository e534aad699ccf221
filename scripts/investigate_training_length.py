"""Investigation for results/demo: does longer fine-tuning give SMUG its robustness advantage over MoDL?

    python scripts/investigate_training_length.py [--iterations 1200] [--runs runs/training_length]

Continues the study's MoDL and SMUG (chosen lambda_l) fine-tunings from their 400-iteration checkpoints in
runs/reproduce (constant learning rate, so resuming equals training longer from the start) to `--iterations`,
saving every 400 iterations, then evaluates every checkpoint on the **validation** split with the journal's PGD
(configs/robustness/training_length_investigation.yaml). Writes results/demo/investigation_training_length/.
Needs a finished `make reproduce`; resumable like it.
"""

import argparse
import json
import pathlib
import shlex
import shutil
import subprocess
import sys
import time

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
BIN = pathlib.Path(sys.executable).parent
RESULTS = ROOT / "results" / "demo"
PROTOCOL = "configs/robustness/training_length_investigation.yaml"
CHECKPOINT_EVERY = 400
MODELS = {"MoDL": "modl", "SMUG": "smug_lambda{lambda_l}"}


def log(message: str) -> None:
    print(f"[training-length {time.strftime('%H:%M:%S')}] {message}", flush=True)


def longer_config(project: pathlib.Path, iterations: int, output: pathlib.Path) -> pathlib.Path:
    """The study's project with more iterations; DIRECT names the experiment after the file, so keep its name."""
    cfg = yaml.safe_load(project.read_text())
    cfg["training"]["num_iterations"] = iterations
    cfg["training"]["checkpointer"]["checkpoint_steps"] = CHECKPOINT_EVERY
    cfg["training"]["validation_steps"] = CHECKPOINT_EVERY
    output.mkdir(parents=True, exist_ok=True)
    path = output / project.name
    path.write_text(f"# {project} with num_iterations {iterations} (scripts/investigate_training_length.py)\n")
    with open(path, "a") as handle:
        yaml.safe_dump(cfg, handle, sort_keys=False)
    return path


def continue_training(study_runs: pathlib.Path, runs: pathlib.Path, name: str, cfg: pathlib.Path, iterations: int):
    run = runs / name
    if (run / name / f"model_{iterations - 1}.pt").exists():
        return {"step": f"train {name} to {iterations}", "seconds": None}
    if not run.exists():
        if not (study_runs / name / ".complete").exists():
            raise SystemExit(f"{study_runs / name} has no finished training: run `make reproduce` first.")
        shutil.copytree(study_runs / name, run, ignore=shutil.ignore_patterns(".complete", "train.log"))
    command = [
        str(BIN / "direct"), "train", str(run.relative_to(ROOT)), "--cfg", str(cfg.relative_to(ROOT)),
        "--training-root", "data/demo/train", "--validation-root", "data/demo/val",
        "--device", "cpu", "--num-workers", "0", "--seed", "0", "--resume",
    ]  # fmt: skip
    log(shlex.join(command))
    start = time.perf_counter()
    with open(run / "train.log", "a") as out:
        subprocess.run(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, check=True)
    seconds = time.perf_counter() - start
    return {"step": f"train {name} to {iterations}", "command": shlex.join(command), "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iterations", type=int, default=1200)
    parser.add_argument("--study-runs", type=pathlib.Path, default=ROOT / "runs" / "reproduce")
    parser.add_argument("--runs", type=pathlib.Path, default=ROOT / "runs" / "training_length")
    parser.add_argument("--output", type=pathlib.Path, default=RESULTS / "investigation_training_length")
    args = parser.parse_args()
    if args.iterations % CHECKPOINT_EVERY:
        raise SystemExit(f"--iterations must be a multiple of {CHECKPOINT_EVERY}, got {args.iterations}.")
    study_runs, runs, output = args.study_runs.resolve(), args.runs.resolve(), args.output.resolve()
    choice = RESULTS / "lambda_l_choice.json"
    if not choice.exists():
        raise SystemExit(f"{choice} is missing: run `make reproduce` first.")
    lambda_l = f"{json.loads(choice.read_text())['chosen']:g}"

    steps, command = [], [str(BIN / "smug"), "evaluate"]
    for display, project in MODELS.items():
        name = project.format(lambda_l=lambda_l)
        cfg = longer_config(ROOT / "projects" / "reproduce" / f"{name}.yaml", args.iterations, output / "configs")
        steps.append(continue_training(study_runs, runs, name, cfg, args.iterations))
        for iteration in range(CHECKPOINT_EVERY, args.iterations + 1, CHECKPOINT_EVERY):
            checkpoint = (runs / name / name / f"model_{iteration - 1}.pt").relative_to(ROOT)
            command += ["--model", f"{display} {iteration} it={cfg.relative_to(ROOT)}:{checkpoint}"]
    command += [
        "--reference", f"MoDL {CHECKPOINT_EVERY} it", "--protocol", PROTOCOL,
        "--data-root", "data/demo/val", "--output-dir", str(output.relative_to(ROOT)), "--seed", "0", "--resume",
    ]  # fmt: skip
    log(shlex.join(command))
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True)
    steps.append({"step": "smug evaluate", "command": shlex.join(command), "seconds": time.perf_counter() - start})
    (output / "steps.json").write_text(json.dumps(steps, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
