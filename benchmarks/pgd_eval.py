"""Throughput of ``smug evaluate``'s PGD, APGD and attack ensemble on MoDL, SMUG and a DIRECT-native
EndToEndVarNet, on the same inputs.

Reports, per model, the seconds per batch of an N-step l_inf PGD (the evaluation's objective: squared error of the
perturbed reconstruction to the target, k-space attack on the sampled entries), slices per minute, the time of one
forward+backward pass to the input (the unit of an attack step) and the ratio attack step / forward+backward. The
same for APGD with N steps, and for the ensemble of the shipped ``auto`` protocol without its transfers (noise, PGD,
APGD with 2 restarts, the gradient-free search with --queries queries), whose ratio divides its time by the
forward+backward passes its members need (gradient steps, plus queries and scoring passes at the forward's cost).
For SMUG also the EOT variant of PGD (gradient averaged over several noise draws per step).

Models are built from the demo YAMLs ``projects/demo/{modl,smug,varnet}.yaml`` (96 x 80, 8 coils, 5 unrolls, CG 8,
DIDN 16 channels x 1 block, SMUG K = 4, sigma 0.01; VarNet with the cascades and filters given here) with
``denoiser_checkpoint: null`` and freshly initialised weights saved as a DIRECT checkpoint. Data: one test volume of
the demo simulator (``smug_plugin.data.demo.make_demo_dataset``), the same slices for every model. The attack is
``smug evaluate``'s PGD object with its objective.

``--paper-size`` runs the papers' size instead (``paper_size.py``: simulated 320 x 320 slices with 15 coils; MoDL and
SMUG with 8 unrolls, CG to tol 1e-6, DIDN 64 x 3, K = 10); the target is one PGD step <= 1.2 x one forward+backward.
A forward+backward of MoDL at that size holds more than 17 GB on the CPU (the kernel stopped it there on a 23 GB
machine), SMUG's about K times the denoiser's share of it: run it where the memory is, or check the preset on a
smaller matrix (``--paper-size --size 64 64``).

    python benchmarks/pgd_eval.py --threads 1
    python benchmarks/pgd_eval.py --device cuda --repeats 5
    python benchmarks/pgd_eval.py --paper-size --threads 2 --batch-size 1 --repeats 1 --eot 0
    python benchmarks/pgd_eval.py --paper-size --size 64 64 --models modl,smug --steps 1 --repeats 1 --eot 0
"""

import argparse
import logging
import os
import pathlib
import platform
import statistics
import sys
import tempfile
import time

import torch
from paper_size import (
    COILS,
    IMAGE_SIZE,
    add_memory_limit_option,
    limit_address_space,
    memory_failure,
    paper_model,
    parse_with_preset,
)

REPO = pathlib.Path(__file__).resolve().parents[1]


def timed(fn, repeats: int, device: str) -> float:
    """Median wall time of `repeats` calls of `fn` in seconds (synchronising CUDA)."""
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def demo_config(name: str, root: pathlib.Path, **model_overrides) -> pathlib.Path:
    """Copy of ``projects/demo/<name>.yaml`` without a pre-trained denoiser (fresh weights), with the overrides of the
    settings its model has."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(REPO / "projects" / "demo" / f"{name}.yaml")
    if "denoiser_checkpoint" in cfg.model:
        cfg.model.denoiser_checkpoint = None
    cfg.model.update({key: value for key, value in model_overrides.items() if key in cfg.model})
    path = root / name / "config.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(cfg, path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="modl,smug,varnet", help="comma-separated subset of modl,smug,varnet")
    parser.add_argument("--batch-size", type=int, default=4, help="slices per batch (one demo volume)")
    parser.add_argument("--steps", type=int, default=10, help="PGD steps")
    parser.add_argument("--eot", type=int, default=8, help="noise draws per step of SMUG's EOT variant (0: skip)")
    parser.add_argument("--queries", type=int, default=100, help="queries of the ensemble's gradient-free member")
    parser.add_argument("--no-ensemble", action="store_true", help="skip the ensemble (the longest row)")
    parser.add_argument("--budget", type=float, default=0.02, help="absolute l_inf budget (normalised k-space)")
    parser.add_argument("--repeats", type=int, default=3, help="timed repeats (median) after one warm-up")
    parser.add_argument("--eot-repeats", type=int, default=1, help="timed repeats of the (long) EOT PGD")
    parser.add_argument("--varnet-layers", type=int, default=4, help="VarNet cascades")
    parser.add_argument("--varnet-filters", type=int, default=18, help="VarNet regulariser filters")
    parser.add_argument("--varnet-pull-layers", type=int, default=1, help="VarNet regulariser U-Net depth")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch.set_num_threads")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 80), metavar=("H", "W"), help="simulated matrix")
    parser.add_argument("--coils", type=int, default=8, help="simulated coils")
    add_memory_limit_option(parser)
    args = parse_with_preset(parser, {"size": IMAGE_SIZE, "coils": COILS})
    limit_address_space(args.memory_limit_gb)
    network = paper_model() if args.paper_size else {}
    torch.set_num_threads(args.threads)
    logging.disable(logging.WARNING)  # DIRECT logs every config (and a notice) once per model
    names = [m.strip() for m in args.models.split(",") if m.strip()]

    from smug_plugin.data.demo import make_demo_dataset
    from smug_plugin.provenance import cpu_model
    from smug_plugin.robustness.attacks import Budget, Targets
    from smug_plugin.robustness.attacks.apgd import APGD
    from smug_plugin.robustness.attacks.objective import reconstruction_error
    from smug_plugin.robustness.attacks.pgd import PGD
    from smug_plugin.robustness.reconstructors.direct_engines import (
        ModelSpec,
        load_reconstructor,
        save_fresh_checkpoint,
    )
    from smug_plugin.robustness.reconstructors.interface import ConfiguredModel
    from smug_plugin.robustness.run.batches import build_dataset, iterate_batches, load_batch
    from smug_plugin.robustness.run.protocol import PerturbationSpec

    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"command: python benchmarks/pgd_eval.py {' '.join(sys.argv[1:])}".rstrip())
    print(f"machine: nproc {os.cpu_count()}, CPU {cpu_model()}, {platform.platform()}, load average at start {load}")
    device_name = torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu"
    print(
        f"python {platform.python_version()}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"device {args.device} ({device_name})"
    )
    print(
        f"PGD: l_inf, budget {args.budget} (absolute), {args.steps} steps, step eps/3, random start, keep best; "
        f"APGD: the same budget and steps; 1 warm-up + median of {args.repeats} (EOT, ensemble: {args.eot_repeats})"
    )
    if args.memory_limit_gb is not None:
        print(f"address space capped at {args.memory_limit_gb:g} GB (RLIMIT_AS)")
    restarts = 2
    ensemble = PerturbationSpec.from_entry(
        {
            "name": "auto",
            "kind": "ensemble",
            "budget": args.budget,
            "members": [
                {"name": "noise", "kind": "gaussian"},
                {"name": "pgd", "kind": "pgd", "steps": args.steps},
                {"name": "apgd", "kind": "apgd", "steps": args.steps, "restarts": restarts},
                {"name": "square", "kind": "square", "queries": args.queries},
            ],
        }
    )
    # What its members need: gradient steps (forward+backward), queries and scoring passes (forwards).
    ensemble_steps = args.steps + args.steps * restarts
    ensemble_forwards = args.queries + 1 + restarts + len(ensemble.members)

    rows, failures = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        make_demo_dataset(
            root / "data",
            matrix=tuple(args.size),
            num_coils=args.coils,
            train_volumes=0,
            val_volumes=0,
            test_volumes=1,
            slices_per_volume=args.batch_size,
        )
        data = root / "data" / "test"
        for name in names:
            try:
                if name == "varnet":
                    cfg = demo_config(
                        name,
                        root,
                        num_layers=args.varnet_layers,
                        regularizer_num_filters=args.varnet_filters,
                        regularizer_num_pull_layers=args.varnet_pull_layers,
                    )
                    label = f"VarNet (DIRECT, {args.varnet_layers} cascades, {args.varnet_filters} filters)"
                else:
                    cfg = demo_config(name, root, **network)
                    label = {"modl": "MoDL", "smug": "SMUG"}[name]
                ckpt = save_fresh_checkpoint(cfg, root / name)
                reconstructor = load_reconstructor(ModelSpec(name, cfg, ckpt), args.device, root / name / "logs")
                if name == "smug":
                    label += f" (K={reconstructor.cfg.model.num_samples}, sigma={reconstructor.cfg.model.sigma})"
                params = reconstructor.describe()["parameters"]
                dataset = build_dataset(reconstructor, data, None, None)
                _, indices = next(iterate_batches(reconstructor, dataset, args.batch_size, None))
                batch = load_batch(dataset, indices, args.device)
                target = batch["target"]
                model = ConfiguredModel(reconstructor)
                n = len(indices)

                def objective(delta, draw, model=model, batch=batch, target=target):
                    return reconstruction_error(model.reconstruct(batch, delta, noise_seed=1 + draw), target)

                # One forward+backward pass to the input (as in an attack step, no parameter gradients): the unit
                # of cost.
                def fwd_bwd(objective=objective, batch=batch):
                    delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
                    with torch.enable_grad():
                        torch.autograd.grad(objective(delta, 0).sum(), delta)

                def attack(eot, model=model, batch=batch, target=target, kind=PGD):
                    pgd = kind(budget=Budget(args.budget), steps=args.steps, eot_samples=eot)
                    pgd(model, batch, Targets(target), 0)

                def attack_ensemble(model=model, batch=batch, target=target):
                    ensemble.attack({})(model, batch, Targets(target), 0)

                def fwd(objective=objective, batch=batch):
                    with torch.no_grad():
                        objective(torch.zeros_like(batch["masked_kspace"]), 0)

                fwd_bwd()  # warm-up
                t_fb = timed(fwd_bwd, args.repeats, args.device)
                t_f = timed(fwd, args.repeats, args.device)
                t_pgd = timed(lambda: attack(1), args.repeats, args.device)
                image = "x".join(str(s) for s in target.shape[-2:])
                coils = batch["masked_kspace"].shape[1]
                per_step = t_pgd / args.steps / t_fb
                rows.append((label, params, f"{n}x{coils}x{image}", t_f, t_fb, t_pgd, n, f"{per_step:.2f}"))
                print(f"  done: {label}", flush=True)
                if name == "smug" and args.eot > 1:
                    t_eot = timed(lambda: attack(args.eot), args.eot_repeats, args.device)
                    per_step = t_eot / args.steps / t_fb
                    ratio = f"{per_step:.2f} ({per_step / args.eot:.2f}/draw)"
                    rows.append((f"  + EOT {args.eot} draws/step", params, "", t_f, t_fb, t_eot, n, ratio))
                    print(f"  done: {label}, EOT {args.eot}", flush=True)
                t_apgd = timed(lambda: attack(1, kind=APGD), args.repeats, args.device)
                rows.append(("  APGD", params, "", t_f, t_fb, t_apgd, n, f"{t_apgd / args.steps / t_fb:.2f}"))
                print(f"  done: {label}, APGD", flush=True)
                if not args.no_ensemble:
                    t_ens = timed(attack_ensemble, args.eot_repeats, args.device)
                    passes = ensemble_steps + ensemble_forwards * t_f / t_fb
                    rows.append(
                        ("  ensemble (auto, no transfer)", params, "", t_f, t_fb, t_ens, n, f"{t_ens / passes:.2f}")
                    )
                    print(f"  done: {label}, ensemble", flush=True)

            except (RuntimeError, MemoryError) as error:  # an allocation refused by --memory-limit-gb
                failure = memory_failure(f"{type(error).__name__}: {error}", args.memory_limit_gb)
                if failure is None:
                    raise
                failures.append(f"{name}: {failure}")
                print(f"  failed: {name}, {failure}", flush=True)

    print()
    print("fwd = no-grad forward, fwd+bwd = forward and backward to the input (SMUG: one forward holds all K draws).")
    print("A PGD or APGD step is one fwd+bwd per draw plus the step and projection; the final scoring fwd (one per")
    print("draw) is amortised over the steps: step/(fwd+bwd) = attack time / steps / fwd+bwd. The ensemble's ratio")
    print(f"divides its time by {ensemble_steps} fwd+bwd and {ensemble_forwards} fwd (as fwd+bwd fractions).")
    print()
    header = (
        f"{'model / attack':<46} {'params':>8} {'batch':>12} {'fwd [s]':>7} {'fwd+bwd [s]':>11} {'s/batch':>13} "
        f"{'slices/min':>10} {'step/(fwd+bwd)':>14}"
    )
    print(header)
    print("-" * len(header))
    for label, params, shape, t_f, t_fb, t_attack, n, ratio in rows:
        print(
            f"{label:<46} {params:>8,} {shape:>12} {t_f:>7.3f} {t_fb:>11.3f} {t_attack:>13.2f} "
            f"{60 * n / t_attack:>10.1f} {ratio:>14}"
        )
    for failure in failures:
        print(f"{failure}")
    print(f"\nload average at end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
