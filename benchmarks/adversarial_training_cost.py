"""The cost of adversarial training against plain training, measured in one run (the journal's claim: much higher).

Runs the real ``direct train`` of ``projects/reproduce/{modl,modl_adversarial,smug_lambda100,smug_adversarial}.yaml``
on the bundled demo data back to back, one torch thread each, for ``--iterations`` iterations without validation or
checkpoints, and reads the seconds per iteration from DIRECT's log (its timestamps at iterations 20 and 20 + N:
start-up and the first 20 iterations are left out). Prints the table and the multiples against the plain model.

    python benchmarks/adversarial_training_cost.py [--iterations 40] [--output FILE]
"""

import argparse
import datetime
import os
import pathlib
import platform
import re
import subprocess
import sys
import tempfile
import time

import yaml

REPO = pathlib.Path(__file__).resolve().parents[1]
PAIRS = (("modl", "modl_adversarial"), ("smug_lambda100", "smug_adversarial"))
LOG_LINE = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+)\]\[CommonMetricPrinter\].*\biter: (\d+)\b")


def iteration_times(log: str) -> dict[int, datetime.datetime]:
    times = {}
    for line in log.splitlines():
        match = LOG_LINE.match(line)
        if match:
            times[int(match.group(2))] = datetime.datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f")
    return times


def seconds_per_iteration(project: str, iterations: int, work: pathlib.Path) -> float:
    cfg = yaml.safe_load((REPO / "projects" / "reproduce" / f"{project}.yaml").read_text())
    total = 20 + iterations + 1
    cfg["training"].update(num_iterations=total, validation_steps=10 * total)
    cfg["training"]["checkpointer"]["checkpoint_steps"] = 10 * total
    cfg["model"]["robust_validation_budget"] = 0.0
    config = work / f"{project}.yaml"
    config.write_text(yaml.safe_dump(cfg, sort_keys=False))
    direct = pathlib.Path(sys.executable).parent / "direct"
    command = [str(direct), "train", str(work / project), "--cfg", str(config), "--device", "cpu"]
    command += ["--training-root", "data/demo/train", "--validation-root", "data/demo/val", "--num-workers", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    result = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env, check=False)
    times = iteration_times(result.stdout + result.stderr)
    if 20 not in times or 20 + iterations not in times:
        tail = (result.stdout + result.stderr)[-1500:]
        raise SystemExit(f"{project}: no iteration times in DIRECT's log (exit {result.returncode}):\n{tail}")
    return (times[20 + iterations] - times[20]).total_seconds() / iterations


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--iterations", type=int, default=40, help="timed iterations (a multiple of 20: DIRECT logs every 20)"
    )
    parser.add_argument("--output", type=pathlib.Path, default=None, help="also write the report here")
    args = parser.parse_args()
    if args.iterations % 20:
        parser.error("--iterations must be a multiple of 20 (DIRECT logs every 20 iterations)")
    if not (REPO / "data" / "demo" / "train").is_dir():
        raise SystemExit("data/demo/train is missing: run `smug data demo --output-dir data/demo` (or make reproduce)")
    lines = [
        "command: python benchmarks/adversarial_training_cost.py " + " ".join(sys.argv[1:]),
        f"machine: nproc {os.cpu_count()}, {platform.platform()}, load average at start "
        + " ".join(f"{x:.2f}" for x in os.getloadavg()),
        f"run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; direct train, demo data, batch as in the YAMLs, "
        f"one thread, seconds per iteration over iterations 20-{20 + args.iterations} (no validation, no checkpoints)",
        "",
        f"{'project':22} {'s/iteration':>11} {'x plain':>8}",
    ]
    with tempfile.TemporaryDirectory() as tmp:
        for plain, adversarial in PAIRS:
            base = seconds_per_iteration(plain, args.iterations, pathlib.Path(tmp))
            lines.append(f"{plain:22} {base:11.3f} {1.0:8.2f}")
            cost = seconds_per_iteration(adversarial, args.iterations, pathlib.Path(tmp))
            lines.append(f"{adversarial:22} {cost:11.3f} {cost / base:8.2f}")
    text = "\n".join(lines) + "\n"
    print(text, end="")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
