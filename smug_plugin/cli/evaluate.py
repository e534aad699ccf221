"""``smug evaluate``: robustness evaluation of DIRECT-trained checkpoints under attacks, noise and test-time shifts.

This module wires the pieces together: protocol and models in, the evaluation loop, the reports out.
"""

import argparse
import pathlib

from smug_plugin.cli.foundation import count_problem, one_line, output_dir_problem
from smug_plugin.shipped import protocol_help


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="Evaluate DIRECT checkpoints under PGD attacks, noise, sampling-rate and unroll shifts.",
        description=(
            "Evaluates every --model on the data under --data-root with the DIRECT inference transforms of the "
            "reference model's YAML, under each perturbation and shift of the --protocol. Writes robustness.json, "
            "robustness.csv, robustness.md and figures to --output-dir, appending per-slice records as they are "
            "computed (records.jsonl) so that --resume can continue an interrupted run. Started by torchrun "
            "(torchrun --nproc-per-node N -m smug_plugin.cli.main evaluate ...), the ranks share the work units."
        ),
    )
    parser.add_argument(
        "--model",
        action="append",
        required=True,
        metavar="NAME=CONFIG.yaml:CHECKPOINT.pt",
        help=(
            "A model to evaluate (repeatable): display name, DIRECT YAML with an inference section, checkpoint; or "
            "NAME=CS.yaml, the l1-wavelet CS baseline of `smug cs-tune` (on the first DIRECT model's operator)."
        ),
    )
    parser.add_argument(
        "--protocol",
        required=True,
        metavar="NAME|PATH",
        help=f"Robustness protocol: a protocol YAML, or a shipped one by name: {protocol_help()}.",
    )
    parser.add_argument("--data-root", required=True, type=pathlib.Path, help="Directory of fastMRI-format h5 files.")
    parser.add_argument(
        "--output-dir",
        required=True,
        type=pathlib.Path,
        help="Folder for the report, records, figures and cards (created; one run at a time: it is locked).",
    )
    parser.add_argument("--reference", default=None, help="Model the table is relative to (default: the first).")
    parser.add_argument("--seed", type=int, default=None, help="Run seed (default: the protocol's seed).")
    parser.add_argument("--resume", action="store_true", help="Continue an interrupted run in --output-dir.")
    parser.add_argument("--max-slices", type=int, default=None, help="Evaluate only the first N slices.")
    parser.add_argument("--device", default="cpu", help="torch device of the models and attacks (cpu, cuda, cuda:1).")
    parser.add_argument("--batch-size", type=int, default=4, help="Slices attacked at once (within one volume).")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: all cores).")
    parser.add_argument("--no-progress", action="store_true", help="Print no progress and no per-condition summaries.")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    import contextlib
    import sys

    import torch

    from smug_plugin.robustness.run.distributed import PeerStopped, Ranks
    from smug_plugin.robustness.run.loop import RunSettings
    from smug_plugin.robustness.run.output_lock import output_dir_lock
    from smug_plugin.robustness.run.protocol import ProtocolError

    try:
        ranks = Ranks.from_environment()
    except ValueError as e:
        print(f"smug evaluate: error: {e}", file=sys.stderr)
        return 2
    prefix = f"[{ranks.label}] " if ranks.sharded else ""
    device = ranks.device(args.device)
    problem = argument_problem(args, device)
    if problem is not None:
        print(f"smug evaluate: error: {prefix}{problem}", file=sys.stderr)
        return 2
    torch.set_num_threads(args.threads or ranks.default_threads())
    settings = RunSettings(
        data_root=args.data_root,
        output_dir=args.output_dir,
        reference=args.reference,
        seed=args.seed,
        resume=args.resume,
        max_slices=args.max_slices,
        device=device,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    try:
        ranks.start(device)
        with contextlib.ExitStack() as stack:
            lock_problem = None
            if ranks.rank == 0:  # one run per output folder, checked before anything is loaded
                try:
                    stack.enter_context(output_dir_lock(args.output_dir))
                except OSError as e:
                    lock_problem = str(e)
            ranks.agree(lock_problem)
            paths = run_evaluation(args.model, args.protocol, settings, ranks)
    except PeerStopped:
        return 2  # the rank that stopped the run reports why
    except (OSError, ProtocolError, ValueError) as e:  # OSError: a file that cannot be read or written, named
        print(f"smug evaluate: error: {prefix}{one_line(e)}", file=sys.stderr)
        return 2
    finally:
        ranks.stop()
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def argument_problem(args: argparse.Namespace, device: str) -> str | None:
    """What is wrong with the command line, checked before anything is loaded (None: nothing); ``device`` is the
    one this process computes on (under torchrun, ``cuda`` is the rank's GPU)."""
    from smug_plugin.robustness.run.protocol import is_seed

    counts = {"--batch-size": args.batch_size, "--max-slices": args.max_slices, "--threads": args.threads}
    problem = count_problem(counts)
    if problem is not None:
        return problem
    if args.seed is not None and not is_seed(args.seed):
        return f"--seed must be in [0, 2**32 - 1], got {args.seed}."
    device = device_problem(device)
    if device is not None:
        return device
    return output_dir_problem(args.output_dir)


def device_problem(device: str) -> str | None:
    """Why torch cannot compute on ``device`` here (None: it can)."""
    import torch

    try:
        kind = torch.device(device)
    except RuntimeError:
        return f"--device {device!r} is not a torch device (cpu, cuda, cuda:1, mps)."
    if kind.type == "cuda" and not torch.cuda.is_available():
        return f"--device {device}: torch {torch.__version__} finds no usable CUDA GPU here; use --device cpu."
    if kind.type == "cuda" and kind.index is not None and kind.index >= torch.cuda.device_count():
        return f"--device {device}: there are {torch.cuda.device_count()} CUDA GPUs (cuda:0 ...); choose one of them."
    if kind.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device}: no MPS device is available here; use --device cpu."
    if kind.type not in ("cpu", "cuda", "mps"):
        return f"--device {device}: smug evaluate runs on cpu, cuda or mps."
    return None


def _checked_inputs(model_specs: list[str], protocol_name: str | pathlib.Path, settings) -> tuple:
    """The protocol, the model specs and the data issues, every file checked before any model is loaded."""
    from smug_plugin.cli.foundation import check_data, check_models
    from smug_plugin.robustness.attacks.budgets import PAPER_NEEDS_FULLY_SAMPLED
    from smug_plugin.robustness.run.protocol import load_protocol

    if not model_specs:
        raise ValueError("Give at least one --model NAME=CONFIG.yaml:CHECKPOINT.pt.")
    protocol = load_protocol(protocol_name)
    specs = check_models(model_specs)  # fail on a missing checkpoint before spending time on loading others
    protocol.check_models([spec.name for spec in specs])
    fully_sampled = PAPER_NEEDS_FULLY_SAMPLED if protocol.needs_reference_scale else None
    data_issues = check_data(pathlib.Path(settings.data_root), fully_sampled=fully_sampled)
    return protocol, specs, data_issues


def _on_rank0(ranks, action):
    """``action()`` on rank 0, the others waiting; every rank stops if it fails there (see `Ranks.agree`)."""
    from smug_plugin.robustness.run.records import RecordStoreError

    result, problem = None, None
    if ranks.rank == 0:
        try:
            result = action()
        except (OSError, RecordStoreError, ValueError) as e:
            problem = str(e)
    ranks.agree(problem)
    return ranks.from_rank0(result)


def inference_masking(cfg) -> dict | None:
    """The mask of the inference YAML (``inference.dataset.transforms.masking``) as plain data, None without one."""
    from omegaconf import OmegaConf

    masking = OmegaConf.select(cfg, "inference.dataset.transforms.masking", default=None)
    return None if masking is None else OmegaConf.to_container(masking, resolve=True)


def run_evaluation(model_specs: list[str], protocol_name: str | pathlib.Path, settings, ranks=None) -> dict:
    """Load protocol and models, evaluate, write the reports; returns the paths of the written files.

    Parameters
    ----------
    model_specs : list[str]
        ``NAME=CONFIG.yaml:CHECKPOINT.pt`` entries; the first is the reference unless `settings.reference` is set.
    protocol_name : str or pathlib.Path
        A shipped protocol's name or a protocol YAML.
    settings : RunSettings
        Data, output, seed, device, batching, resume.
    ranks : Ranks, optional
        This process's rank in a sharded run (torchrun), which computes its share of the units into its own record
        file; rank 0 then merges them and writes the reports (the other ranks return no paths). Default: one process.
    """
    import collections
    import json
    import random
    import socket
    import sys
    import time

    import numpy as np
    import torch

    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec, training_config_warnings
    from smug_plugin.robustness.reconstructors.specs import load_models
    from smug_plugin.robustness.reports.card import write_cards
    from smug_plugin.robustness.reports.figures import make_figures
    from smug_plugin.robustness.reports.tables import write_reports
    from smug_plugin.robustness.run.distributed import Ranks
    from smug_plugin.robustness.run.loop import Evaluator
    from smug_plugin.robustness.run.progress import Progress, throughput_lines
    from smug_plugin.robustness.run.protocol import ProtocolError
    from smug_plugin.robustness.run.records import (
        RecordStore,
        merge_records,
        prepare_output,
        record_path,
        recorded_units,
    )
    from smug_plugin.robustness.run.run_identity import evaluation_manifest
    from smug_plugin.robustness.run.sharding import share, unit_cost

    ranks = ranks or Ranks()
    inputs, problem = None, None
    try:  # the same checks fail the same way in every rank: the first one reports it
        inputs = _checked_inputs(model_specs, protocol_name, settings)
    except (OSError, ProtocolError, ValueError) as e:
        problem = str(e)
    ranks.agree(problem)
    protocol, specs, data_issues = inputs
    if settings.seed is None:
        settings.seed = protocol.seed
    speak = ranks.rank == 0  # warnings once, not once per rank
    for issue in data_issues if speak else []:
        print(f"smug evaluate: WARNING: {issue['file']}: {issue['problem']}", file=sys.stderr)
    torch.manual_seed(settings.seed)
    random.seed(settings.seed)
    np.random.seed(settings.seed)
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    models = load_models(specs, settings.device, settings.output_dir / "direct_logs", ranks.node_rank)
    from smug_plugin.robustness.run.memory import check_attack_memory

    check_attack_memory(models, protocol, settings)  # one line naming the option when an attack cannot fit
    direct_models = [(spec, m) for spec, m in zip(specs, models) if isinstance(spec, ModelSpec)]
    warnings = [w for spec, m in direct_models for w in training_config_warnings(spec, m.cfg)]
    for warning in warnings if speak else []:
        print(f"smug evaluate: WARNING: {warning}", file=sys.stderr)
    manifest = evaluation_manifest(models, protocol, settings)
    run = _on_rank0(ranks, lambda: prepare_output(settings.output_dir, manifest, settings.resume))
    store = RecordStore(record_path(settings.output_dir, ranks.rank, ranks.world_size), run=run)
    # Read once, on rank 0, after every rank cut its own file's unfinished tail: all ranks share out the same units.
    finished = _on_rank0(ranks, lambda: set(recorded_units(settings.output_dir)))
    evaluator = Evaluator(models, protocol, settings)
    protocol = evaluator.protocol  # with transfer_from: each expanded per source model
    plan = evaluator.plan()
    costs = [unit_cost(u.condition, evaluator.models) for u in plan]
    mine = share(costs, [u.unit in finished for u in plan], ranks.rank, ranks.world_size)
    units = [plan[i] for i in mine]
    progress = Progress(
        collections.Counter(u.condition.id for u in units),
        cost_per_condition={plan[i].condition.id: costs[i] for i in mine},
        finished_before=0 if ranks.sharded else len(plan) - len(units),
        label=ranks.label,
        enabled=settings.progress,
        position=ranks.local_rank,
    )
    started = time.time()
    masking = inference_masking(evaluator.data_model.cfg)

    def run_facts(complete: bool, rank_facts: list[dict]) -> dict:
        timings = collections.Counter()
        for facts in rank_facts:
            timings.update(facts["timings"])
        return {
            "seed": settings.seed,
            "protocol_seed": protocol.seed,
            "data_root": str(settings.data_root),
            "batch_size": settings.batch_size,
            "max_slices": settings.max_slices,
            "device": settings.device,
            "resumed": settings.resume,
            "torch_threads": torch.get_num_threads(),
            "wall_seconds_this_session": time.time() - started,
            "timings": dict(timings),
            "data_from_model": evaluator.data_model.name,
            "masking": masking,
            "complete": complete,
            **({"world_size": ranks.world_size, "ranks": rank_facts} if ranks.sharded else {}),
        }

    def this_rank() -> dict:
        return {
            "rank": ranks.rank,
            "host": socket.gethostname(),
            "device": settings.device,
            "units": progress.computed,
            "cost": sum(costs[i] for i in mine),
            "seconds": time.time() - started,
            "timings": dict(evaluator.timings),
        }

    describe = [m.describe() for m in models]
    layout = [
        {"condition": c.id, "group": c.group, "sweep_value": c.sweep_value, "perturbation": c.perturbation.name}
        for c in protocol.conditions()
    ]

    def report(records: list[dict], complete: bool, rank_facts: list[dict]) -> dict:
        return write_reports(
            settings.output_dir,
            records,
            describe,
            evaluator.reference,
            protocol.to_dict(),
            run_facts(complete, rank_facts),
            layout,
            data_issues,
            warnings,
        )

    interim = None if ranks.sharded else (lambda: report(store.records, False, [this_rank()]))
    try:
        evaluator.run(store, units, progress, on_data_done=interim)
    finally:
        progress.close()
    rank_facts = ranks.all_gather(this_rank())  # rank 0 waits here for every rank to finish its share

    def merge_and_report() -> dict:
        records = merge_records(settings.output_dir, [u.unit for u in plan], run)
        paths = report(records, True, rank_facts)
        document = json.loads(paths["json"].read_text())
        paths.update(make_figures(settings.output_dir, records, describe, document["sanity"], document["protocol"]))
        paths.update(write_cards(settings.output_dir, document))
        return paths

    paths = _on_rank0(ranks, merge_and_report)
    if ranks.sharded and speak:
        print("\n".join(throughput_lines(rank_facts)))
    return paths if speak else {}
