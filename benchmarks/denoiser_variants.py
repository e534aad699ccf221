"""Each denoiser change of ``smug_plugin.models.denoiser`` measured on its own: DIDN forward + backward.

The variants, each holding the same DIRECT parameters (loaded from one state dict; their outputs are checked to
agree): DIRECT's DIDN as DIRECT builds it (``ModConv2d``: ``nn.Conv2d`` plus a separate bias add), alone and in the
channels-last memory layout; torch's convolutions with the bias fused; that in the channels-last layout (what
``build_denoiser`` ships); plus the 1 x 1 convolutions as matrix products (measured, not shipped: it did not win);
the shipped one with ``torch.compile`` (the ``denoiser_compile`` option, its compiling call a warm-up). The step is
what a SMUG training step asks of the denoiser: forward and backward on K draws of one slice, differentiating
through the input as the unrolls do. Rounds alternate the order; medians over ``--repeats``.

    python benchmarks/denoiser_variants.py --threads 1 2
    python benchmarks/denoiser_variants.py --channels 64 --size 320 320 --draws 10 --repeats 3   # the papers' DIDN
"""

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from direct.nn.didn.didn import DIDN as DirectDIDN
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import machine_description  # noqa: E402

from smug_plugin.models.denoiser import _use_torch_convolutions, build_denoiser  # noqa: E402


class PointwiseConv2d(nn.Conv2d):
    """A 1 x 1 convolution (stride 1, no padding) computed as the matrix product over channels it is."""

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # On channels-last images the permuted view is contiguous: one product with the bias fused in.
        return F.linear(image.permute(0, 2, 3, 1), self.weight.flatten(1), self.bias).permute(0, 3, 1, 2)


def pointwise_as_products(module: nn.Module) -> nn.Module:
    """``module`` with its 1 x 1 ``nn.Conv2d`` layers computing as :class:`PointwiseConv2d` (same parameters)."""
    for child in module.modules():
        if type(child) is nn.Conv2d and child.kernel_size == (1, 1) and child.stride == (1, 1):
            child.__class__ = PointwiseConv2d
    return module


def variants(args: argparse.Namespace) -> dict[str, nn.Module]:
    """The denoiser variants, with the parameters of the shipped one."""
    shipped = build_denoiser(args.channels, args.blocks)
    state = shipped.state_dict()

    def direct_didn() -> nn.Module:
        didn = DirectDIDN(2, 2, hidden_channels=args.channels, num_dubs=args.blocks, skip_connection=True)
        didn.load_state_dict(state)
        return didn

    fused = direct_didn()
    _use_torch_convolutions(fused)
    products = build_denoiser(args.channels, args.blocks)
    products.load_state_dict(state)
    built = {
        "DIRECT's DIDN": direct_didn(),
        "channels-last, bias apart": direct_didn().to(memory_format=torch.channels_last),
        "bias fused": fused,
        "+ channels-last (shipped)": shipped,
        "+ 1x1 as products": pointwise_as_products(products),
    }
    if args.compiled:
        compiled = build_denoiser(args.channels, args.blocks, compiled=True)
        compiled.load_state_dict(state)
        built["shipped + torch.compile"] = compiled
    return built


def denoiser_step(denoiser: nn.Module, image: torch.Tensor) -> Callable[[], None]:
    def step() -> None:
        x = image.detach().requires_grad_(True)
        denoiser(x).square().mean().backward()

    return step


def main() -> None:
    args = parse_args()
    for line in machine_description(argparse.Namespace(threads=args.threads, device="cpu")):
        print(line)
    print(
        f"DIDN {args.channels} channels x {args.blocks} down-up blocks, forward + backward on {args.draws} x 2 x "
        f"{args.size[0]} x {args.size[1]} (input gradient on); {args.warmup} warm-up, median of {args.repeats}, "
        "order alternating"
    )
    torch.manual_seed(0)
    image = torch.randn(args.draws, 2, *args.size)
    models = variants(args)
    with torch.no_grad():
        reference = models["DIRECT's DIDN"](image)
        for name, model in models.items():
            difference = (model(image) - reference).abs().max().item()
            if difference > 1e-3 * reference.abs().max().item():
                raise SystemExit(f"variant {name!r} disagrees with DIRECT's DIDN by {difference:.3g}")
    for threads in args.threads:
        torch.set_num_threads(threads)
        steps = {name: denoiser_step(model, image) for name, model in models.items()}
        times = {name: [] for name in steps}
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        names = list(steps)
        for round_index in range(args.repeats):
            shift = round_index % len(names)
            for name in names[shift:] + names[:shift]:
                start = time.perf_counter()
                steps[name]()
                times[name].append(time.perf_counter() - start)
        base = statistics.median(times["DIRECT's DIDN"])
        print(f"\n{threads} thread(s)\n{'variant':<30} {'median [s]':>10} {'min [s]':>8} {'/ DIRECT':>9}")
        for name, values in times.items():
            median = statistics.median(values)
            print(f"{name:<30} {median:>10.3f} {min(values):>8.3f} {median / base:>9.2f}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"))
    parser.add_argument("--draws", type=int, default=10, help="images per call (SMUG's K draws)")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--compiled", action="store_true", help="also the torch.compile variant")
    return parser.parse_args()


if __name__ == "__main__":
    main()
