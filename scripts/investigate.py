"""`make investigate`: why SMUG's PGD advantage does not reproduce in results/demo, all on the validation split.

    python scripts/investigate.py {test-sigma,draws,training-length,training-sigma,all}

test-sigma: the study's MoDL and SMUG (every lambda_l candidate) under the journal's PGD with the smoothing sigma
    raised at test time (the shipped protocol sigma_investigation -> investigation_sigma/).
draws: the same with K = 1, 4, 10 noise draws (the shipped protocol samples_investigation ->
    investigation_samples/).
training-length: continues the study's MoDL and SMUG (the lambda_l `make reproduce` chose) from their 400-iteration
    checkpoints to `--iterations` (the learning rate is constant, so resuming equals training longer from the
    start), saving every 400 iterations, and evaluates every checkpoint.
training-sigma: fine-tunes SMUG from the study's pre-trained denoiser with a larger smoothing sigma (in training and at
    test time), 400 iterations as in the study, and evaluates it next to the study's MoDL and SMUG (sigma 0.01).

The training investigations evaluate with the shipped protocol training_investigation (clean, the journal's PGD
and the adaptive EOT attack) and write investigation_training_{length,sigma}/, with their derived configs. Every
investigation writes its robustness tables and steps.json (commands, wall-clock) under results/demo/. They need a
finished `make reproduce` and resume like it.
"""

import argparse
import concurrent.futures
import json
import pathlib
import shlex
import shutil
import sys
import time

import yaml
from reproduce import BIN, JOBS, ROOT, SEED, direct_train_command, run_logged

RESULTS = ROOT / "results" / "demo"
STUDY_RUNS = ROOT / "runs" / "reproduce"
RUNS = ROOT / "runs" / "investigations"
TRAINING_PROTOCOL = "training_investigation"
CHECKPOINT_EVERY = 400


def log(message: str) -> None:
    print(f"[investigate {time.strftime('%H:%M:%S')}] {message}", flush=True)


def relative(path: pathlib.Path) -> str:
    return str(path.relative_to(ROOT))


def derived_config(name: str, output: pathlib.Path, changes: dict[str, object], file_name: str | None = None):
    """projects/reproduce/<name>.yaml with `changes` ({"training.num_iterations": 1200, ...}) written to output."""
    project = ROOT / "projects" / "reproduce" / f"{name}.yaml"
    cfg = yaml.safe_load(project.read_text())
    for dotted, value in changes.items():
        *parents, key = dotted.split(".")
        section = cfg
        for parent in parents:
            section = section[parent]
        if key not in section:
            raise KeyError(f"{dotted} is not a key of {project}")
        section[key] = value
    output.mkdir(parents=True, exist_ok=True)
    # DIRECT names the experiment folder after the config file: resuming a copied run needs the same name.
    path = output / (file_name or project.name)
    header = f"# {relative(project)} with {', '.join(f'{k}: {v}' for k, v in changes.items())}\n"
    path.write_text(header + yaml.safe_dump(cfg, sort_keys=False))
    return path


def last_checkpoint(run: pathlib.Path, cfg: pathlib.Path) -> pathlib.Path:
    iterations = yaml.safe_load(cfg.read_text())["training"]["num_iterations"]
    return run / cfg.stem / f"model_{iterations - 1}.pt"


def checkpoint_after(run: pathlib.Path, name: str, iterations: int) -> pathlib.Path:
    """The checkpoint after `iterations` steps: DIRECT names a run's last one model_<n - 1>, a resumed run's
    intermediate ones model_<n> (one step later)."""
    last = run / name / f"model_{iterations - 1}.pt"
    return last if last.exists() else run / name / f"model_{iterations}.pt"


def train(run: pathlib.Path, cfg: pathlib.Path, start_from: pathlib.Path | None = None) -> dict:
    """`direct train` of `cfg` into `run`, continuing a copy of the run `start_from`; skipped when finished."""
    step = f"train {run.name} ({relative(cfg)})"
    record = run / ".investigation-complete"
    if last_checkpoint(run, cfg).exists():
        if record.exists():
            return json.loads(record.read_text())
        return {"step": step, "seconds": None, "note": "finished before this invocation"}
    if start_from is not None and not run.exists():
        shutil.copytree(start_from, run, ignore=shutil.ignore_patterns(".complete", "train.log"))
    run.mkdir(parents=True, exist_ok=True)
    command = direct_train_command(run, cfg, SEED)
    log(shlex.join(command))
    seconds = run_logged(command, run / "train.log")
    log(f"{step} done in {seconds / 60:.1f} min")
    result = {"step": step, "command": shlex.join(command), "seconds": round(seconds, 1)}
    record.write_text(json.dumps(result))
    return result


def train_and_evaluate(
    output: pathlib.Path, trainings: list[tuple], models: dict[str, str], protocol: str = TRAINING_PROTOCOL
) -> None:
    """Runs `trainings` (train() arguments) two at a time, then `smug evaluate` of `models` (name -> cfg:ckpt)."""
    output.mkdir(parents=True, exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(max_workers=JOBS) as pool:
        steps = list(pool.map(lambda args: train(*args), trainings))
    command = [str(BIN / "smug"), "evaluate"]
    for display, spec in models.items():
        command += ["--model", f"{display}={spec}"]
    command += [
        "--reference", next(iter(models)), "--protocol", protocol, "--data-root", "data/demo/val",
        "--output-dir", relative(output), "--seed", str(SEED), "--resume",
    ]  # fmt: skip
    log(shlex.join(command))
    (RUNS / output.name).mkdir(parents=True, exist_ok=True)
    seconds = run_logged(command, RUNS / output.name / "evaluate.log")
    steps.append({"step": "smug evaluate", "command": shlex.join(command), "seconds": round(seconds, 1)})
    (output / "steps.json").write_text(json.dumps(steps, indent=2))
    log(f"done: {relative(output)}/robustness.md")


def study_model(name: str) -> str:
    return f"projects/reproduce/{name}.yaml:{relative(STUDY_RUNS / name / name / f'model_{CHECKPOINT_EVERY - 1}.pt')}"


def sigma_at_test_time(smug: str, candidates: list[str]) -> None:
    models = {"MoDL": study_model("modl"), "SMUG": study_model(smug)}
    models |= {f"SMUG lambda_l {c}": study_model(f"smug_lambda{c}") for c in candidates if f"smug_lambda{c}" != smug}
    train_and_evaluate(RESULTS / "investigation_sigma", [], models, "sigma_investigation")


def draws(smug: str) -> None:
    models = {"MoDL": study_model("modl"), "SMUG": study_model(smug)}
    train_and_evaluate(RESULTS / "investigation_samples", [], models, "samples_investigation")


def training_length(smug: str, iterations: int) -> None:
    output = RESULTS / "investigation_training_length"
    trainings, models = [], {}
    for display, name in (("MoDL", "modl"), ("SMUG", smug)):
        cfg = derived_config(name, output / "configs", {"training.num_iterations": iterations})
        run = RUNS / "length" / name
        trainings.append((run, cfg, STUDY_RUNS / name))
        for iteration in range(CHECKPOINT_EVERY, iterations + 1, CHECKPOINT_EVERY):
            checkpoint = checkpoint_after(run, name, iteration)
            models[f"{display} {iteration} it"] = f"{relative(cfg)}:{relative(checkpoint)}"
    train_and_evaluate(output, trainings, models)


def training_sigma(smug: str, sigmas: list[float]) -> None:
    output = RESULTS / "investigation_training_sigma"
    trainings, models = [], {"MoDL": study_model("modl"), "SMUG sigma 0.01": study_model(smug)}
    for value in sigmas:
        cfg = derived_config(smug, output / "configs", {"model.sigma": value}, f"{smug}_sigma{value:g}.yaml")
        run = RUNS / "sigma" / cfg.stem
        trainings.append((run, cfg))
        models[f"SMUG sigma {value:g}"] = f"{relative(cfg)}:{relative(last_checkpoint(run, cfg))}"
    train_and_evaluate(output, trainings, models)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("investigation", choices=["test-sigma", "draws", "training-length", "training-sigma", "all"])
    parser.add_argument("--iterations", type=int, default=1200, help="training-length: iterations to reach")
    parser.add_argument("--sigmas", type=float, nargs="+", default=[0.05, 0.1], help="training-sigma: sigmas")
    args = parser.parse_args()
    if args.iterations <= CHECKPOINT_EVERY or args.iterations % CHECKPOINT_EVERY:
        raise SystemExit(f"--iterations must be a multiple of {CHECKPOINT_EVERY} above it, got {args.iterations}.")
    choice = RESULTS / "lambda_l_choice.json"
    if not choice.exists():
        raise SystemExit(f"{relative(choice)} is missing: run `make reproduce` first.")
    choice = json.loads(choice.read_text())
    smug = f"smug_lambda{choice['chosen']:g}"
    candidates = list(choice["smug_val_psnr"])
    needed = ("modl", *(f"smug_lambda{c}" for c in candidates))
    unfinished = [name for name in needed if not (STUDY_RUNS / name / ".complete").exists()]
    if unfinished:
        raise SystemExit(f"{', '.join(unfinished)} in {relative(STUDY_RUNS)} not finished: run `make reproduce` first.")
    run_all = args.investigation == "all"
    if run_all or args.investigation == "test-sigma":
        sigma_at_test_time(smug, candidates)
    if run_all or args.investigation == "draws":
        draws(smug)
    if run_all or args.investigation == "training-length":
        training_length(smug, args.iterations)
    if run_all or args.investigation == "training-sigma":
        training_sigma(smug, args.sigmas)
    return 0


if __name__ == "__main__":
    sys.exit(main())
