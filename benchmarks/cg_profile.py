"""Time and dispatch count of the data-consistency CG per MoDL training step, on the benchmark's inputs.

One MoDL step's DC work is ``num_steps`` chained solves x <- DC(x) (the denoiser taken as the identity, so only the
CG runs) and the backward pass of a loss on the last x. The profiler counts the operators PyTorch dispatches (outermost
``aten::`` calls only: those Python or the autograd engine issue), forward and backward, and the FFTs among them
(one per application of A or A^H: the CG iterations show there).

    python benchmarks/cg_profile.py                 # ours, as checked out
    python benchmarks/cg_profile.py --threads 2
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
from direct.data import transforms as T

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_step import make_inputs  # noqa: E402

from smug_plugin.models.modl import MoDL  # noqa: E402


def dc_step(model: MoDL, inputs: dict) -> None:
    """``num_steps`` chained DC solves from A^H y and the backward pass of their squared output."""
    kspace = inputs["masked_kspace"].clone().requires_grad_(True)
    operator = model.operator(inputs["sampling_mask"], inputs["sensitivity_map"])
    x = operator.adjoint(kspace)
    for _ in range(model.num_steps):
        x = model.dc.solve(operator, kspace, x, model.lambd)
    x.square().sum().backward()


def outermost_aten_events(events) -> list:
    """The ``aten::`` events with no ``aten::`` ancestor: one per operator dispatched from Python or autograd."""
    outermost = []
    for event in events:
        if not event.name.startswith("aten::"):
            continue
        parent = event.cpu_parent
        while parent is not None and not parent.name.startswith("aten::"):
            parent = parent.cpu_parent
        if parent is None:
            outermost.append(event)
    return outermost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"))
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8, help="unrolls N")
    parser.add_argument("--cg-iters", type=int, default=10)
    parser.add_argument("--cg-tol", type=float, default=1e-6)
    parser.add_argument("--repeats", type=int, default=5, help="timed DC steps (median reported)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    model = MoDL(
        T.fft2,
        T.ifft2,
        num_steps=args.steps,
        cg_iters=args.cg_iters,
        cg_tol=args.cg_tol,
        denoiser_hidden_channels=4,
        denoiser_num_dubs=1,
        denoiser_num_convs_recon=1,
    ).train()
    inputs, _ = make_inputs(args, "cpu")

    dc_step(model, inputs)  # warm-up
    times, cpu_times = [], []  # CPU time as well: on a shared machine it is the steadier of the two
    for _ in range(args.repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        dc_step(model, inputs)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        dc_step(model, inputs)
    dispatched = outermost_aten_events(profile.events())
    ffts = sum(event.name in ("aten::fft_fftn", "aten::fft_ifftn", "aten::_fft_c2c") for event in dispatched)
    print(
        f"DC of one MoDL step (batch {args.batch}, {args.coils} coils, {args.size[0]} x {args.size[1]}, "
        f"{args.steps} unrolls, CG {args.cg_iters} iterations, tol {args.cg_tol}, {args.threads} thread(s)): "
        f"median {statistics.median(times):.4f} s ({statistics.median(cpu_times):.4f} s CPU) over {args.repeats}, "
        f"{len(dispatched)} dispatched operators "
        f"({ffts} FFTs), forward and backward"
    )


if __name__ == "__main__":
    main()
