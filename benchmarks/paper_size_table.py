"""Paper-size figures of every model row, on one CPU thread and one fastMRI-shaped knee slice (issue 23, part 3).

For each row (MoDL, SMUG K = 10, Weighted SMUG K = 10, RS-E2E K = 10, DIRECT's E2E-VarNet and RIM) the model is built
from its shipped knee project (``projects/<row>_knee.yaml``: the papers' networks, 8 unrolls, CG 10 to 1e-6, DIDN
64 x 3, K = 10; VarNet and RIM as the project ships them) with fresh weights, and the slice comes through the
project's own inference data path (fastMRI-shaped file 640 x 368 with 15 coils and 2x readout oversampling, cropped
to 320 x 320, ESPIRiT maps, 4x mask, DIRECT's normalisation). Three figures per row and memory setting:

* ``forward``: one reconstruction without gradients (eval mode), what ``smug evaluate`` does per clean slice;
* ``pgd_step``: one forward and backward to the k-space perturbation (eval mode, the evaluation's
  ``ConfiguredModel.reconstruct`` under the default threat model, squared error to the target): the cost of one
  step of PGD/APGD (the sign step and projection are elementwise and negligible);
* ``train_step``: one ``direct train`` iteration of the engine (``_do_iteration`` with the project's losses, e.g.
  UStab for SMUG, the teacher for RS-E2E; backward; Adam step), train mode.

Memory settings: ``off`` (no checkpointing) and ``on`` (``gradient_checkpointing`` and ``checkpoint_each_draw``:
the plugin's memory options; DIRECT's models have none). Each measurement runs in a fresh worker process with one
torch thread; peak memory is the growth of the resident set during the figure (the peak, VmHWM, reset just before
it, minus what the worker held after loading the model and the slice); time is one run (no warm-up: the CPU has no
autotuning). A worker that needs more than ``--memory-limit-gb`` of address space fails cleanly ("needs more than
N GB"). The plugin rows also print the estimate of ``smug evaluate``'s memory check
(``smug_plugin.robustness.run.memory``) next to the measured PGD-step peak.

    python benchmarks/paper_size_table.py --output benchmarks/results/paper_size_table_cpu.jsonl
    python benchmarks/paper_size_table.py --rows modl --figures forward --shrink  # a quick check of the script

Results are appended as JSON lines (one per measurement, so a long run keeps what it measured); ``--table`` prints
the table of a results file.
"""

import argparse
import gc
import json
import logging
import os
import pathlib
import platform
import resource
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
ROWS = {
    "modl": ("MoDL", "modl_knee"),
    "smug": ("SMUG", "smug_knee"),
    "weighted_smug": ("Weighted SMUG", "weighted_smug_knee"),
    "rs_e2e": ("RS-E2E", "rs_e2e_knee"),
    "varnet": ("E2E-VarNet (DIRECT)", "varnet_knee"),
    "rim": ("RIM (DIRECT)", "rim_knee"),
}
PLUGIN_ROWS = ("modl", "smug", "weighted_smug", "rs_e2e")
FIGURES = ("forward", "pgd_step", "train_step")
SHRINK = {"num_steps": 1, "num_samples": 2, "denoiser_hidden_channels": 8, "denoiser_num_dubs": 1}


def write_config(
    row: str, options: str, root: pathlib.Path, shrink: bool, teacher: pathlib.Path | None
) -> pathlib.Path:
    """The row's knee project with fresh weights: no pre-trained denoiser, the memory setting, the teacher given."""
    import yaml

    cfg = yaml.safe_load((REPO / "projects" / f"{ROWS[row][1]}.yaml").read_text())
    model = cfg["model"]
    if row in PLUGIN_ROWS:
        model["denoiser_checkpoint"] = None
        model["gradient_checkpointing"] = options == "on"
        model["checkpoint_each_draw"] = options == "on"
        if "rs_e2e_teacher_checkpoint" in model:
            model["rs_e2e_teacher_checkpoint"] = str(teacher)
        if shrink:
            model.update({key: value for key, value in SHRINK.items() if key in model})
    path = root / f"{row}_{options}" / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def status_mib(field: str) -> float:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, from /proc (Linux reports kB)."""
    for line in pathlib.Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> None:
    """Reset the peak resident set (VmHWM) to the current one (Linux >= 4.0: ``5`` into clear_refs), so that the peak
    read after a figure is the figure's, not that of loading the libraries and the model."""
    pathlib.Path("/proc/self/clear_refs").write_text("5")


def worker(args: argparse.Namespace) -> dict:
    """One measurement in this (fresh) process; returns its record."""
    import torch

    torch.set_num_threads(1)
    torch.manual_seed(0)
    logging.disable(logging.WARNING)
    from smug_plugin.robustness.attacks.objective import reconstruction_error
    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, load_reconstructor
    from smug_plugin.robustness.reconstructors.interface import ConfiguredModel

    work = pathlib.Path(args.work)
    config = pathlib.Path(args.config)
    reconstructor = load_reconstructor(ModelSpec(args.row, config, pathlib.Path(args.checkpoint)), "cpu", work / "logs")
    batch = torch.load(work / "batch.pt", weights_only=True)
    reconstructor.use_dimensionality(2)
    record = {"parameters": reconstructor.describe()["parameters"]}
    engine = reconstructor.engine
    model = ConfiguredModel(reconstructor)
    if args.figure == "pgd_step" and args.row in PLUGIN_ROWS:
        from smug_plugin.robustness.run.memory import GIB, attack_peak_bytes

        network = reconstructor.module
        shape, coils = tuple(batch["target"].shape[-2:]), batch["masked_kspace"].shape[1]
        flags = dict(
            gradient_checkpointing=network.gradient_checkpointing, checkpoint_each_draw=network.checkpoint_each_draw
        )
        record["estimate_gib"] = attack_peak_bytes(network, shape, coils, 1, **flags) / GIB

    if args.figure == "forward":

        def figure():
            with torch.no_grad():
                model.reconstruct(batch, torch.zeros_like(batch["masked_kspace"]), noise_seed=1)

    elif args.figure == "pgd_step":

        def figure():
            delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
            with torch.enable_grad():
                error = reconstruction_error(model.reconstruct(batch, delta, noise_seed=1), batch["target"]).sum()
                (gradient,) = torch.autograd.grad(error, delta)
            delta.data += 0.01 * gradient.sign()

    else:
        if hasattr(engine, "_load_teacher"):
            engine._load_teacher()
        engine.models_training_mode()
        optimizer = torch.optim.Adam(engine.model.parameters(), lr=1e-4)
        losses = engine.build_loss()

        def figure():
            optimizer.zero_grad(set_to_none=True)
            engine._do_iteration(dict(batch), losses, {})  # DIRECT's training iteration: forward, losses, backward
            optimizer.step()

    gc.collect()
    before = status_mib("VmRSS")
    reset_peak()
    start = time.perf_counter()
    figure()
    record["seconds"] = time.perf_counter() - start
    record["peak_mib"] = status_mib("VmHWM") - before
    record["held_mib"] = before
    return record


def run_worker(args, row, options, figure, config, checkpoint, work) -> dict:
    command = [sys.executable, __file__, "--worker", "--row", row, "--figure", figure, "--config", str(config)]
    command += ["--checkpoint", str(checkpoint), "--work", str(work)]
    if args.memory_limit_gb is not None:
        command += ["--memory-limit-gb", str(args.memory_limit_gb)]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=REPO)
    record = {"row": ROWS[row][0], "options": options, "figure": figure, "load_at_start": os.getloadavg()[0]}
    lines = [line for line in result.stdout.splitlines() if line.startswith("{")]
    if result.returncode == 0 and lines:
        return record | json.loads(lines[-1])
    tail = (result.stdout + result.stderr)[-2000:]
    out_of_memory = any(m in tail for m in ("can't allocate memory", "MemoryError", "bad_alloc", "Cannot allocate"))
    if out_of_memory and args.memory_limit_gb is not None:
        error = f"needs more than {args.memory_limit_gb:g} GB (address-space limit)"
    else:
        error = f"exit status {result.returncode}: {tail.strip().splitlines()[-1] if tail.strip() else 'no message'}"
    return record | {"error": error, "wall_seconds": time.perf_counter() - started}


def prepare(args, row, options, root, data, teacher) -> tuple[pathlib.Path, pathlib.Path, pathlib.Path]:
    """Config, fresh checkpoint and the slice through the project's inference path, in ``root/<row>_<options>``."""
    import torch

    from smug_plugin.robustness.reconstructors.direct_engines import (
        ModelSpec,
        load_reconstructor,
        save_fresh_checkpoint,
    )
    from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch

    config = write_config(row, options, root, args.shrink, teacher)
    work = config.parent
    checkpoint = save_fresh_checkpoint(config, work)
    cached = root / f"{row}_batch.pt"
    if not cached.exists():
        reconstructor = load_reconstructor(ModelSpec(row, config, checkpoint), "cpu", work / "logs")
        dataset = build_dataset(reconstructor, data, None, None)
        _, indices = next(iterate_batches(reconstructor, dataset, 1, 1))
        batch = load_batch(dataset, indices, "cpu")
        # DIRECT's keys are str enums: plain strings keep the file loadable with weights_only=True.
        tensors = {
            str(getattr(key, "value", key)): value for key, value in batch.items() if isinstance(value, torch.Tensor)
        }
        torch.save(tensors, cached)
    (work / "batch.pt").unlink(missing_ok=True)
    (work / "batch.pt").symlink_to(cached)
    return config, checkpoint, work


def print_table(path: pathlib.Path) -> None:
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    print(f"{'model':22} {'memory options':14} {'figure':10} {'time [s]':>9} {'peak [MiB]':>10} {'estimate [GiB]':>14}")
    for r in records:
        if "row" not in r:  # a run's header
            print(f"# {r['command']} ({r['started']}; {r['machine']}; {r['versions']})")
            continue
        if "error" in r:
            print(f"{r['row']:22} {r['options']:14} {r['figure']:10} {r['error']}")
            continue
        estimate = f"{r['estimate_gib']:.2f}" if "estimate_gib" in r else ""
        print(
            f"{r['row']:22} {r['options']:14} {r['figure']:10} {r['seconds']:9.1f} {r['peak_mib']:10.0f} {estimate:>14}"
        )


def markdown_table(path: pathlib.Path) -> str:
    """One row per model and memory setting, a column pair per figure; a later measurement of a cell replaces an
    earlier one (a re-run after a change)."""
    cells: dict[tuple[str, str], dict] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line) if line.strip() else {}
        if "row" in r:
            cells.setdefault((r["row"], r["options"]), {})[r["figure"]] = r
    header = "| model | memory options | parameters | forward: s, MiB | PGD step: s, MiB (estimate GiB) |"
    lines = [header + " train step: s, MiB |", "|---|---|---|---|---|---|"]
    for (row, options), figures in cells.items():
        parameters = next((f["parameters"] for f in figures.values() if "parameters" in f), None)
        texts = []
        for figure in FIGURES:
            r = figures.get(figure)
            if r is None:
                texts.append("not run")
            elif "error" in r:
                texts.append(r["error"])
            else:
                estimate = f" ({r['estimate_gib']:.1f})" if "estimate_gib" in r else ""
                texts.append(f"{r['seconds']:.1f} s, {r['peak_mib']:.0f}{estimate}")
        count = f"{parameters:,}" if parameters is not None else ""
        lines.append(f"| {row} | {options} | {count} | " + " | ".join(texts) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help=f"comma-separated subset of {','.join(ROWS)}")
    parser.add_argument("--figures", default=",".join(FIGURES), help=f"comma-separated subset of {','.join(FIGURES)}")
    parser.add_argument("--options", default="on,off", help="memory settings of the plugin rows: on, off or both")
    parser.add_argument("--memory-limit-gb", type=float, default=None, help="address-space cap of each worker")
    parser.add_argument("--output", type=pathlib.Path, default=None, help="append JSON lines here")
    parser.add_argument("--shrink", action="store_true", help="tiny plugin networks (to check the script quickly)")
    parser.add_argument("--table", type=pathlib.Path, default=None, help="print the table of a results file and exit")
    parser.add_argument("--markdown", action="store_true", help="with --table: one Markdown row per model and setting")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--row", "--figure", "--config", "--checkpoint", "--work"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.table:
        print(markdown_table(args.table)) if args.markdown else print_table(args.table)
        return 0
    if args.worker:
        if args.memory_limit_gb is not None:
            limit = int(args.memory_limit_gb * 1024**3)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        print(json.dumps(worker(args)), flush=True)
        return 0

    import torch

    from smug_plugin.data.fastmri_shaped import make_fastmri_shaped
    from smug_plugin.provenance import cpu_model

    rows = [row.strip() for row in args.rows.split(",") if row.strip()]
    header = {
        "command": "python benchmarks/paper_size_table.py " + " ".join(sys.argv[1:]),
        "machine": f"nproc {os.cpu_count()}, {cpu_model()}, {platform.platform()}",
        "versions": f"python {platform.python_version()}, torch {torch.__version__}",
        "started": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "threads": 1,
    }
    print(json.dumps(header), flush=True)
    if args.output:
        with args.output.open("a") as out:
            out.write(json.dumps(header) + "\n")
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        data = root / "knee"
        make_fastmri_shaped(data, "knee", volumes={"test": 1}, slices=1, sizes="first")
        teacher = None
        if "rs_e2e" in rows:  # RS-E2E distils a MoDL teacher: a fresh MoDL checkpoint stands in
            from smug_plugin.robustness.reconstructors.direct_engines import save_fresh_checkpoint

            teacher = save_fresh_checkpoint(write_config("modl", "on", root / "teacher", args.shrink, None), root)
        for row in rows:
            settings = [o for o in args.options.split(",") if o] if row in PLUGIN_ROWS else ["none"]
            for options in settings:
                config, checkpoint, work = prepare(args, row, options, root, data / "test", teacher)
                for figure in [f.strip() for f in args.figures.split(",") if f.strip()]:
                    record = run_worker(args, row, options, figure, config, checkpoint, work)
                    print(json.dumps(record), flush=True)
                    if args.output:
                        with args.output.open("a") as out:
                            out.write(json.dumps(record) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
