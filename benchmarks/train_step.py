"""Training-step time and peak memory of the SMUG family and DIRECT's native ConjGradNet, on the same inputs.

One training step is forward + backward + Adam step of a plain L2 loss between the reconstruction and a target image
(the UStab term of the SMUG fine-tuning is not included). Every model runs in a fresh subprocess with the same seed,
so it sees identical inputs and the peak-memory figure is its own:

- CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps (model, optimizer state, inputs and activations);
- CPU: the growth of the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) from just
  before the first step to the end: activations, gradients and optimizer state, not the model or the inputs.

    python benchmarks/train_step.py                      # CPU defaults: a few minutes on 2 cores
    python benchmarks/train_step.py --device cuda --size 320 320 --coils 15 --batch 2 --steps 8 \\
        --denoiser-channels 64 --denoiser-dubs 3
"""

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

SMUG_SAMPLES = (1, 4, 10)


def model_specs(args: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    """label -> (class path, keyword arguments); all share the unroll count, CG settings and DIDN configuration."""
    shared = {"num_steps": args.steps, "cg_iters": args.cg_iters, "cg_tol": args.cg_tol}
    didn = {
        "denoiser_hidden_channels": args.denoiser_channels,
        "denoiser_num_dubs": args.denoiser_dubs,
        "denoiser_num_convs_recon": args.denoiser_convs_recon,
    }
    smoothing = {"sigma": 0.01, "noise_seed": None}
    specs = {"MoDL": ("smug_plugin.models.modl.MoDL", {**shared, **didn})}
    for k in SMUG_SAMPLES:
        specs[f"SMUG K={k}"] = ("smug_plugin.models.smug.SMUG", {**shared, **didn, **smoothing, "num_samples": k})
    k = args.num_samples
    specs[f"Weighted SMUG K={k}"] = (
        "smug_plugin.models.weighted_smug.WeightedSMUG",
        {**shared, **didn, **smoothing, "num_samples": k},
    )
    specs[f"RS-E2E K={k}"] = ("smug_plugin.models.rs_e2e.RSE2E", {**shared, **didn, **smoothing, "num_samples": k})
    specs["ConjGradNet (DIRECT)"] = (
        "direct.nn.conjgradnet.conjgradnet.ConjGradNet",
        {
            **shared,
            "denoiser_architecture": "didn",
            "no_parameter_sharing": False,  # one denoiser shared over the unrolls, as in MoDL
            "didn_hidden_channels": args.denoiser_channels,
            "didn_num_dubs": args.denoiser_dubs,
            "didn_num_convs_recon": args.denoiser_convs_recon,
        },
    )
    return specs


def make_inputs(args: argparse.Namespace, device: str) -> dict:
    """Seeded multi-coil inputs: smooth normalised coil maps, a 4x column mask with 8 % ACS, and a target image."""
    import torch

    generator = torch.Generator().manual_seed(0)
    n, c, (h, w) = args.batch, args.coils, args.size
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
    centres = torch.rand(c, 2, generator=generator) * 2 - 1
    magnitude = torch.exp(-((xx - centres[:, :1, None]) ** 2 + (yy - centres[:, 1:, None]) ** 2))
    phase = torch.rand(c, 1, 1, generator=generator) * 6.28
    maps = torch.stack([magnitude * torch.cos(phase), magnitude * torch.sin(phase)], dim=-1)
    maps = maps / maps.pow(2).sum(dim=(0, -1), keepdim=True).sqrt()
    maps = maps.expand(n, c, h, w, 2).contiguous()
    target = torch.randn(n, h, w, 2, generator=generator)
    columns = torch.rand(w, generator=generator) < 0.25
    acs = max(1, round(0.08 * w))
    columns[(w - acs) // 2 : (w - acs) // 2 + acs] = True
    mask = columns.view(1, 1, 1, w, 1).expand(n, 1, h, w, 1).float()

    from direct.data import transforms as T

    coil_images = T.complex_multiplication(maps, target[:, None])
    kspace = T.fft2(coil_images, dim=(2, 3)) * mask
    return {"masked_kspace": kspace.to(device), "sampling_mask": mask.to(device), "sensitivity_map": maps.to(device)}, (
        target.to(device)
    )


def worker(args: argparse.Namespace) -> None:
    """Time one model's training step and print one JSON line."""
    import importlib

    import torch

    torch.set_num_threads(args.threads)
    from direct.data import transforms as T

    path, kwargs = model_specs(args)[args.worker]
    module, name = path.rsplit(".", 1)
    torch.manual_seed(0)
    model = getattr(importlib.import_module(module), name)(T.fft2, T.ifft2, **kwargs).to(args.device).train()
    inputs, target = make_inputs(args, args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))
    native = "ConjGradNet" in name

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        if native:  # ConjGradNet takes (masked_kspace, sensitivity_map, sampling_mask)
            output = model(inputs["masked_kspace"], inputs["sensitivity_map"], inputs["sampling_mask"])
        else:
            output = model(**inputs)
        loss = torch.nn.functional.mse_loss(output, target)
        loss.backward()
        optimizer.step()

    def sync() -> None:
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        sync()
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
    if args.device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    parameters = sum(p.numel() for p in model.parameters())
    print(
        json.dumps({"median_s": statistics.median(times), "times": times, "peak_mib": peak_mib, "params": parameters})
    )


def machine_description(args: argparse.Namespace) -> list[str]:
    import torch

    from smug_plugin.provenance import cpu_model

    cpu = cpu_model()
    lines = [
        f"command: python {' '.join(sys.argv)}",
        f"machine: nproc {os.cpu_count()}, CPU {cpu}, {platform.platform()}, "
        f"load average at start {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        f"python {platform.python_version()}, torch {torch.__version__}, torch.set_num_threads({args.threads})",
    ]
    if args.device.startswith("cuda"):
        lines.append(f"GPU: {torch.cuda.get_device_name()}")
    return lines


def main() -> None:
    args = parse_args()
    if args.worker:
        worker(args)
        return
    memory = (
        "torch.cuda.max_memory_allocated"
        if args.device.startswith("cuda")
        else "growth of ru_maxrss during the steps (fresh subprocess per model)"
    )
    for line in machine_description(args):
        print(line)
    print(
        f"inputs: batch {args.batch}, {args.coils} coils, {args.size[0]} x {args.size[1]}, 4x mask; "
        f"{args.steps} unrolls, CG {args.cg_iters} iterations (tol {args.cg_tol}); DIDN {args.denoiser_channels} "
        f"channels x {args.denoiser_dubs} down-up blocks, {args.denoiser_convs_recon} recon convs; "
        f"L2 loss, Adam; {args.warmup} warm-up + median of {args.repeats} steps; device {args.device}"
    )
    print(f"peak memory: {memory}")
    print()
    forwarded = sys.argv[1:]
    results = {}
    header = f"{'model':<22} {'params':>9} {'step [s]':>9} {'peak [MiB]':>11} {'time / (K x MoDL)':>18}"
    print(header)
    print("-" * len(header))
    for label in model_specs(args):
        result = subprocess.run(
            [sys.executable, __file__, *forwarded, "--worker", label], capture_output=True, text=True, check=False
        )
        if result.returncode != 0:
            print(f"{label:<22} failed: {result.stderr.strip().splitlines()[-1:]}")
            continue
        results[label] = json.loads(result.stdout.strip().splitlines()[-1])
        r = results[label]
        ratio = ""
        if label.startswith("SMUG K=") and "MoDL" in results:
            k = int(label.split("=")[1])
            ratio = f"{r['median_s'] / (k * results['MoDL']['median_s']):.2f}"
        print(f"{label:<22} {r['params']:>9,} {r['median_s']:>9.3f} {r['peak_mib']:>11.1f} {ratio:>18}", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:i]")
    parser.add_argument("--size", type=int, nargs=2, default=(128, 128), metavar=("H", "W"), help="image size")
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=4, help="unrolls N")
    parser.add_argument("--cg-iters", type=int, default=8)
    parser.add_argument("--cg-tol", type=float, default=1e-6)
    parser.add_argument("--denoiser-channels", type=int, default=16, help="DIDN width (papers: 64)")
    parser.add_argument("--denoiser-dubs", type=int, default=1, help="DIDN down-up blocks (papers: 3)")
    parser.add_argument("--denoiser-convs-recon", type=int, default=3, help="DIDN reconstruction convs (papers: 9)")
    parser.add_argument("--num-samples", type=int, default=10, help="K of Weighted SMUG and RS-E2E (papers: 10)")
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per model (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (direct train on CPU: 1)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
