"""Throughput of ``smug evaluate``'s PGD: slices/minute for 10-step PGD and the cost of a PGD step relative to one
forward+backward pass, on a freshly initialised DIRECT-native EndToEndVarNet and synthetic fastMRI-format data.

Usage: ``python benchmarks/pgd_eval.py [--size 320 --coils 15 --batch-size 4 --layers 8 --filters 18 --device cpu]``
"""

import argparse
import os
import pathlib
import sys
import tempfile
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128, help="image height and width")
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--layers", type=int, default=4, help="VarNet cascades")
    parser.add_argument("--filters", type=int, default=18)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests"))
    import robustness_fixtures as fx

    from smug_plugin.robustness.budgets import Budget
    from smug_plugin.robustness.loading import ModelSpec, build_dataset, iterate_batches, load_batch, load_model
    from smug_plugin.robustness.perturbations import PGDSettings, pgd

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        data = fx.write_phantom_h5(
            root / "data", num_files=1, shape=(args.size, args.size), coils=args.coils, slices=args.batch_size
        )
        cfg = fx.write_direct_yaml(
            root / "varnet.yaml", "varnet", num_layers=args.layers, regularizer_num_filters=args.filters
        )
        ckpt = fx.save_fresh_checkpoint(cfg, root)
        model = load_model(ModelSpec("varnet", cfg, ckpt), args.device, root / "logs")
        dataset = build_dataset(model, data, None, None)
        _, indices = next(iterate_batches(model, dataset, args.batch_size, None))
        batch = load_batch(dataset, indices, args.device)
        target = batch["target"]

        def objective(delta, draw):
            return ((model.reconstruct(batch, delta) - target) ** 2).flatten(1).mean(1)

        # One forward+backward pass to the input (as in an attack step, no parameter gradients): the unit of cost.
        def fwd_bwd():
            delta = torch.zeros_like(batch["masked_kspace"], requires_grad=True)
            with torch.enable_grad():
                torch.autograd.grad(objective(delta, 0).sum(), delta)

        fwd_bwd()  # warm-up
        reps = 3
        t0 = time.perf_counter()
        for _ in range(reps):
            fwd_bwd()
        t_fb = (time.perf_counter() - t0) / reps

        eps = Budget(0.02).resolve(batch["masked_kspace"], batch["sampling_mask"])
        settings = PGDSettings(steps=args.steps)
        t0 = time.perf_counter()
        pgd(objective, batch["masked_kspace"].shape, batch["sampling_mask"], eps, settings, torch.Generator())
        t_pgd = time.perf_counter() - t0
        n = len(indices)
    print(f"device={args.device} threads={torch.get_num_threads()} image={args.size}x{args.size} coils={args.coils}")
    print(f"model: EndToEndVarNet, {args.layers} cascades, {args.filters} filters; batch of {n} slices")
    print(f"forward+backward pass: {t_fb * 1000:.1f} ms per batch")
    print(f"{args.steps}-step PGD: {t_pgd:.2f} s per batch -> {60 * n / t_pgd:.1f} slices/minute")
    # A PGD step is one forward+backward plus the sign step and projection; the final scoring forward is amortised.
    print(f"one PGD step / one forward+backward: {t_pgd / args.steps / t_fb:.2f}")


if __name__ == "__main__":
    main()
