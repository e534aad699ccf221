"""Training-step time and peak memory of the SMUG family and DIRECT's native ConjGradNet, on the same inputs.

One training step is forward + backward + Adam step of a plain L2 loss between the reconstruction and a target image
(the UStab term of the SMUG fine-tuning is not included). Every model runs in a fresh subprocess with the same seed,
so it sees identical inputs and the peak-memory figure is its own:

- CUDA: ``torch.cuda.max_memory_allocated`` over the timed steps (model, optimizer state, inputs and activations);
- CPU: the growth of the process's peak resident set size (``resource.getrusage(RUSAGE_SELF).ru_maxrss``) from just
  before the first step to the end: activations, gradients and optimizer state, not the model or the inputs.

With ``--checkpointing both`` every plugin model also runs with gradient checkpointing (each unroll recomputed in the
backward pass; DIRECT's ConjGradNet has no such option). ``--paper-size`` runs the papers' size (``paper_size.py``:
320 x 320, 15 coils, 8 unrolls, CG to tol 1e-6, DIDN 64 x 3, K = 10) with checkpointing on and off, and measures the
denoiser's convolutions: the time of the DIDN's forward + backward pass against the sum of the times of the same
convolutions (the same shapes, recorded from the DIDN) run alone as plain torch calls on this machine. Their ratio is
the fraction of the machine's convolution throughput the denoiser achieves (what the rest of it, activations,
pixel shuffles, concatenations and memory traffic, costs).

Memory at the papers' size: one MoDL training step grew the resident set by 13.4 GB without checkpointing (2 CPU
cores, 23 GB machine). Without checkpointing SMUG holds the activations of its K draws at every unroll, about K times
the denoiser's share; with checkpointing and ``checkpoint_each_draw`` (rows ``+ckpt/draw``) it recomputes the
denoiser one draw at a time (see benchmarks/results/paper_size_cpu.txt for the figures).
``--memory-limit-gb`` caps each worker's address space, so that a model that needs more is reported as
"needs more than" instead of waking the kernel's OOM killer; a worker killed otherwise is reported as failed.

    python benchmarks/train_step.py                      # CPU defaults: a few minutes on 2 cores
    python benchmarks/train_step.py --paper-size         # about two minutes per SMUG step on 2 CPU cores
    python benchmarks/train_step.py --paper-size --models MoDL --repeats 1 --warmup 0 --conv-draws 1   # a check
    python benchmarks/train_step.py --device cuda --paper-size --batch 2 --repeats 5
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

from paper_size import (
    COILS,
    IMAGE_SIZE,
    add_memory_limit_option,
    limit_address_space,
    memory_failure,
    paper_model,
    parse_with_preset,
)

SMUG_SAMPLES = (1, 4, 10)
CONV_WORKER = "denoiser convolutions"


def model_specs(args: argparse.Namespace) -> dict[str, tuple[str, dict]]:
    """label -> (class path, keyword arguments); all share the unroll count, CG settings and DIDN configuration.

    Labels of models with gradient checkpointing end in ``+ckpt``; ``--models`` keeps the labels that start with one
    of its names.
    """
    shared = {"num_steps": args.steps, "cg_iters": args.cg_iters, "cg_tol": args.cg_tol}
    didn = {
        "denoiser_hidden_channels": args.denoiser_channels,
        "denoiser_num_dubs": args.denoiser_dubs,
        "denoiser_num_convs_recon": args.denoiser_convs_recon,
    }
    smoothing = {"sigma": 0.01, "noise_seed": None}
    k = args.num_samples
    plugin = {"MoDL": ("smug_plugin.models.modl.MoDL", {**shared, **didn})}
    for samples in (k,) if args.paper_size else SMUG_SAMPLES:
        plugin[f"SMUG K={samples}"] = (
            "smug_plugin.models.smug.SMUG",
            {**shared, **didn, **smoothing, "num_samples": samples},
        )
    plugin[f"Weighted SMUG K={k}"] = (
        "smug_plugin.models.weighted_smug.WeightedSMUG",
        {**shared, **didn, **smoothing, "num_samples": k},
    )
    plugin[f"RS-E2E K={k}"] = ("smug_plugin.models.rs_e2e.RSE2E", {**shared, **didn, **smoothing, "num_samples": k})
    specs = {}
    for label, (path, kwargs) in plugin.items():
        if args.checkpointing in ("off", "both"):
            specs[label] = (path, kwargs)
        if args.checkpointing in ("on", "both"):
            specs[f"{label} +ckpt"] = (path, {**kwargs, "gradient_checkpointing": True})
            if "num_samples" in kwargs:  # the memory setting: the denoiser recomputed one draw at a time
                specs[f"{label} +ckpt/draw"] = (
                    path,
                    {**kwargs, "gradient_checkpointing": True, "checkpoint_each_draw": True},
                )
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
    if args.models:
        names = [name.strip().lower() for name in args.models.split(",") if name.strip()]
        specs = {label: spec for label, spec in specs.items() if label.lower().startswith(tuple(names))}
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
    """Time one model's training step (or the denoiser's convolutions) and print one JSON line."""
    import importlib

    import torch

    limit_address_space(args.memory_limit_gb)
    torch.set_num_threads(args.threads)
    if args.worker.startswith(f"{CONV_WORKER}:"):
        print(json.dumps(convolution_throughput(args, int(args.worker.split(":")[1]))))
        return
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

    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = step_times(step, args)
    if args.device.startswith("cuda"):
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:  # ru_maxrss is in KiB on Linux
        peak_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss_before) / 1024
    parameters = sum(p.numel() for p in model.parameters())
    print(
        json.dumps({"median_s": statistics.median(times), "times": times, "peak_mib": peak_mib, "params": parameters})
    )


def record_convolutions(module, image) -> list[tuple]:
    """The 2-d convolutions (and transposed ones) ``module(image)`` calls: (function, input shape, weight shape,
    bias shape or None, the remaining arguments)."""
    import torch
    import torch.nn.functional as F
    from torch.overrides import TorchFunctionMode

    calls = []

    class Recorder(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            if func in (F.conv2d, F.conv_transpose2d):
                x, weight, bias, *rest = [*args, *[None] * (3 - len(args))]
                bias = kwargs.get("bias", bias)
                others = {k: v for k, v in kwargs.items() if k != "bias"}
                calls.append((func, x.shape, weight.shape, None if bias is None else bias.shape, rest, others))
            return func(*args, **kwargs)

    with torch.no_grad(), Recorder():
        module(image)
    return calls


def convolution_throughput(args: argparse.Namespace, draws: int) -> dict:
    """Forward + backward time of the DIDN on ``batch x draws`` images against the same convolutions run alone."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from smug_plugin.models.denoiser import build_denoiser

    torch.manual_seed(0)
    denoiser = build_denoiser(args.denoiser_channels, args.denoiser_dubs, args.denoiser_convs_recon).to(args.device)
    image = torch.randn(args.batch * draws, 2, *args.size, device=args.device)

    def denoiser_step() -> None:
        x = image.detach().requires_grad_(True)  # the unrolls differentiate through the denoiser's input
        denoiser(x).sum().backward()

    with FlopCounterMode(display=False) as counter:
        denoiser_step()
    calls = record_convolutions(denoiser, image)

    def timed(step) -> float:
        return statistics.median(step_times(step, args))

    def plain_convolution(func, x_shape, w_shape, b_shape, rest, kwargs) -> float:
        """One recorded convolution alone, on random tensors made before the clock starts."""
        x = torch.randn(x_shape, device=args.device, requires_grad=True)
        weight = torch.randn(w_shape, device=args.device, requires_grad=True)
        bias = None if b_shape is None else torch.randn(b_shape, device=args.device, requires_grad=True)
        return timed(lambda: func(x, weight, bias, *rest, **kwargs).sum().backward())

    return {
        "convolutions": len(calls),
        "gflop": counter.get_total_flops() / 1e9,
        "denoiser_s": timed(denoiser_step),
        "plain_s": sum(plain_convolution(*call) for call in calls),
    }


def step_times(step, args: argparse.Namespace) -> list[float]:
    """Wall times of ``args.repeats`` calls of ``step`` after ``args.warmup`` untimed ones (CUDA synchronised)."""
    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.repeats):
        sync(args.device)
        start = time.perf_counter()
        step()
        sync(args.device)
        times.append(time.perf_counter() - start)
    return times


def sync(device: str) -> None:
    import torch

    if device.startswith("cuda"):
        torch.cuda.synchronize()


def print_convolution_throughput(args: argparse.Namespace, forwarded: list[str]) -> None:
    draws = sorted({int(d) for d in args.conv_draws.split(",") if d.strip()})
    print()
    print(
        f"{CONV_WORKER}: DIDN {args.denoiser_channels} x {args.denoiser_dubs} forward + backward on "
        f"(batch x draws) x 2 x {args.size[0]} x {args.size[1]}, against the same convolutions as plain torch calls"
    )
    header = (
        f"{'draws':>5} {'convs':>6} {'GFLOP':>8} {'DIDN [s]':>9} {'GFLOP/s':>8} {'plain convs [s]':>15} "
        f"{'GFLOP/s':>8} {'fraction':>8}"
    )
    print(header)
    print("-" * len(header))
    for n in draws:
        result = run_worker(forwarded, f"{CONV_WORKER}:{n}", args.memory_limit_gb)
        if "error" in result:
            print(f"{n:>5} failed: {result['error']}")
            continue
        gflop, t_didn, t_plain = result["gflop"], result["denoiser_s"], result["plain_s"]
        print(
            f"{n:>5} {result['convolutions']:>6} {gflop:>8.1f} {t_didn:>9.3f} {gflop / t_didn:>8.1f} "
            f"{t_plain:>15.3f} {gflop / t_plain:>8.1f} {t_plain / t_didn:>8.2f}",
            flush=True,
        )


def run_worker(forwarded: list[str], worker: str, memory_limit_gb: float | None) -> dict:
    """One measurement in a fresh subprocess (its own peak memory); its JSON line, or the error."""
    result = subprocess.run(
        [sys.executable, __file__, *forwarded, "--worker", worker], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        last = result.stderr.strip().splitlines()[-1:] or ["no message: killed, e.g. out of memory?"]
        failure = memory_failure(result.stderr, memory_limit_gb)
        return {"error": failure or f"exit status {result.returncode}, {last[0]}"}
    return json.loads(result.stdout.strip().splitlines()[-1])


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
    if args.memory_limit_gb is not None:
        print(f"address space of each measurement capped at {args.memory_limit_gb:g} GB (RLIMIT_AS)")
    print("+ckpt: gradient checkpointing (each unroll recomputed in the backward pass); +ckpt/draw: with")
    print("checkpoint_each_draw (the denoiser recomputed one noise draw at a time); peak / MoDL: to MoDL without")
    print("checkpointing (the target of SMUG K=10 +ckpt: <= 1.5); time / (K x MoDL): to MoDL with the same setting")
    print("(the target: <= 1, the K draws of one batched forward amortise)")
    print()
    forwarded = sys.argv[1:]
    results = {}
    header = (
        f"{'model':<30} {'params':>9} {'step [s]':>9} {'peak [MiB]':>11} {'peak / MoDL':>12} {'time / (K x MoDL)':>18}"
    )
    print(header)
    print("-" * len(header))
    for label in model_specs(args):
        results[label] = r = run_worker(forwarded, label, args.memory_limit_gb)
        if "error" in r:
            print(f"{label:<30} failed: {r['error']}")
            continue
        modl = results.get("MoDL +ckpt" if "+ckpt" in label else "MoDL", {})
        plain_modl = results.get("MoDL", modl)
        peak_ratio = time_ratio = ""
        if plain_modl.get("peak_mib", 0) > 0:
            peak_ratio = f"{r['peak_mib'] / plain_modl['peak_mib']:.2f}"
        if label.startswith("SMUG K=") and "median_s" in modl:
            k = int(label.split("=")[1].split()[0])
            time_ratio = f"{r['median_s'] / (k * modl['median_s']):.2f}"
        print(
            f"{label:<30} {r['params']:>9,} {r['median_s']:>9.3f} {r['peak_mib']:>11.1f} {peak_ratio:>12} "
            f"{time_ratio:>18}",
            flush=True,
        )
    if args.conv_draws:
        print_convolution_throughput(args, forwarded)


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
    parser.add_argument(
        "--checkpointing",
        choices=("off", "on", "both"),
        default="off",
        help="gradient checkpointing of the plugin models (--paper-size: both)",
    )
    parser.add_argument("--models", default="", help="comma-separated label starts, e.g. MoDL,SMUG (default: all)")
    parser.add_argument(
        "--conv-draws",
        default="",
        help="measure the denoiser's convolutions on batch x each of these draw counts (--paper-size: 1,K)",
    )
    add_memory_limit_option(parser)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    paper = paper_model()
    preset = {
        "size": IMAGE_SIZE,
        "coils": COILS,
        "steps": paper["num_steps"],
        "cg_iters": paper["cg_iters"],
        "cg_tol": paper["cg_tol"],
        "denoiser_channels": paper["denoiser_hidden_channels"],
        "denoiser_dubs": paper["denoiser_num_dubs"],
        "denoiser_convs_recon": paper["denoiser_num_convs_recon"],
        "num_samples": paper["num_samples"],
        "checkpointing": "both",
        "conv_draws": f"1,{paper['num_samples']}",
    }
    return parse_with_preset(parser, preset)


if __name__ == "__main__":
    main()
