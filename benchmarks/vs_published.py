"""Training steps of our SMUG and MoDL against the published SMUG code, at equal settings, in one run.

The published code (github sjames40/SMUG_journal) is not part of this repository and nothing is fetched here: pass
the path of a checkout. Its model code is loaded from there as it is: ``models/didn.py`` and ``models/networks.py``
(DIDN, the CG autograd function) are imported, and the functions ``CG``, ``average_repeated_batch``, ``loss_fn`` and
``Recon`` are taken from ``train_SMUG.py`` (the script itself parses options and loads data at import, so only these
function definitions are compiled, with the objects they refer to, built here: the DIDN, ``opt`` with the CG
tolerance, lambda and loss weight, the MSE loss and the device). Nothing of it is patched; only counters wrap
``networks.cg_block`` and ``networks.OPATA.forward`` while the CG iterations are counted (outside the timed steps).

Equal settings: the same seeded inputs (``benchmarks/train_step.py``'s, scaled so |Re|, |Im| of the target <= 1 as the
published data are), 8 unrolls, DIDN 32 channels x 3 down-up blocks (each code its own DIDN: the published one has
no reconstruction blocks, DIRECT's applies one of ``--recon-convs`` convolutions to each down-up block's output, so
the parameter and convolution counts differ: at DIRECT's default of 9 ours computes about 1.75 x the published
convolutions, at 1 about as many), sigma 0.01, K = 10, lambda 1, CG tolerance 1e-6 (ours stops
at ``--cg-iters`` at the latest, the published CG only at the tolerance), MSE + UStab (towards D(target), not
detached; MoDL: MSE only, as the published ``Recon`` computes no UStab without noise), Adam.

Reported per model, code and thread count: the median step time of ``--repeats`` steps after ``--warmup`` (forward,
backward, Adam; the codes alternate their order from round to round; CPU time of the process alongside, the steadier
figure on a shared machine), peak memory (growth of the peak resident set size over two steps in a fresh subprocess,
as ``train_step.py`` measures it, the peak reset after building through Linux's /proc/self/clear_refs), parameters,
CG iterations per solve (forward / backward), and the convolutions: their
GFLOP per step, the GFLOP/s they reach inside the step and in a plain benchmark of the same convolutions (same shapes
and calls, forward and backward, nothing else), and the convolution-bound limit, the step's convolutions alone at
that plain speed. ``--compiled`` adds ours with ``denoiser_compile`` (its first, compiling step is a warm-up step).

    python benchmarks/vs_published.py --published /tmp/smug_journal
    python benchmarks/vs_published.py                       # ours alone
"""

import argparse
import ast
import contextlib
import functools
import json
import re
import statistics
import subprocess
import sys
import time
import types
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import torch
from direct.data import transforms as T
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cg_profile import outermost_aten_events  # noqa: E402
from train_step import machine_description, make_inputs  # noqa: E402

from smug_plugin.losses.smoothing import UStabTarget, ustab_anchors, ustab_loss  # noqa: E402
from smug_plugin.models import data_consistency  # noqa: E402
from smug_plugin.models.modl import MoDL  # noqa: E402
from smug_plugin.models.smug import SMUG  # noqa: E402

PUBLISHED_FUNCTIONS = ("CG", "average_repeated_batch", "loss_fn", "Recon")
PUBLISHED_MODULES = ("models", "util")
CONVOLUTION_EVENTS = ("aten::conv2d", "aten::convolution", "aten::convolution_backward")


@dataclass
class Contender:
    """One code's training step of one model."""

    model: str  # SMUG or MoDL
    code: str  # ours, ours checkpointed (each unroll / each draw), ours compiled, published
    step: Callable[[], None]
    parameters: int
    counting: Callable[[Counter], contextlib.AbstractContextManager]
    times: list[float] = field(default_factory=list)
    cpu_times: list[float] = field(default_factory=list)


def scaled_inputs(args: argparse.Namespace) -> tuple[dict, torch.Tensor]:
    """train_step.py's inputs with the target (and so the k-space) divided by max(|Re|, |Im|) of the target."""
    inputs, target = make_inputs(args, "cpu")
    scale = target.abs().max()
    return {**inputs, "masked_kspace": inputs["masked_kspace"] / scale}, target / scale


# Ours -------------------------------------------------------------------------------------------------------------


def our_contender(args, model_name: str, inputs: dict, target: torch.Tensor, variant: str = "") -> Contender:
    shared = {
        "num_steps": args.steps,
        "cg_iters": args.cg_iters,
        "cg_tol": args.cg_tol,
        "lambda_init": args.lambd,
        "denoiser_hidden_channels": args.channels,
        "denoiser_num_dubs": args.blocks,
        "denoiser_num_convs_recon": args.recon_convs,
        "gradient_checkpointing": variant.startswith("checkpointed"),
        "checkpoint_each_draw": variant == "checkpointed each draw",
        "denoiser_compile": variant == "compiled",
    }
    torch.manual_seed(0)
    if model_name == "SMUG":
        model = SMUG(T.fft2, T.ifft2, **shared, sigma=args.sigma, num_samples=args.samples, noise_seed=None)
    else:
        model = MoDL(T.fft2, T.ifft2, **shared)
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.5, 0.999))

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        output, details = model(**inputs, return_details=True)
        loss = torch.nn.functional.mse_loss(output, target)
        if model_name == "SMUG":  # as the engine's ustab_loss (DIRECT's units: no scale)
            anchors = ustab_anchors(UStabTarget.DENOISED_TARGET, details.iterates, target, model.denoise)
            loss = loss + ustab_loss(details.denoised, anchors)
        loss.backward()
        optimizer.step()

    @contextlib.contextmanager
    def counting(counts: Counter) -> Iterator[None]:
        original = data_consistency.conjugate_gradient

        def counted(operator, rhs, start, *rest):
            x, iterations = original(operator, rhs, start, *rest)
            kind = "backward" if start is None else "forward"
            counts[f"{kind} solves"] += 1
            counts[f"{kind} iterations"] += iterations
            return x, iterations

        data_consistency.conjugate_gradient = counted
        try:
            yield
        finally:
            data_consistency.conjugate_gradient = original

    code = f"ours, {variant}" if variant else "ours"
    return Contender(model_name, code, step, sum(p.numel() for p in model.parameters()), counting)


# The published code -----------------------------------------------------------------------------------------------


def load_published(path: Path) -> tuple[types.ModuleType, type, dict]:
    """``models.networks``, ``models.didn.DIDN`` and the ``train_SMUG.py`` function definitions, from ``path``."""
    for name in ("models/didn.py", "models/networks.py", "train_SMUG.py"):
        if not (path / name).is_file():
            raise SystemExit(f"--published {path}: no {name}; pass a checkout of github sjames40/SMUG_journal.")
    clashes = [m for m in PUBLISHED_MODULES if m in sys.modules]
    if clashes:
        raise SystemExit(f"modules {clashes} are already imported; the published code's packages carry these names.")
    sys.path.insert(0, str(path))
    try:
        import models.didn as didn  # noqa: PLC0415 - the published packages, importable only from `path`
        import models.networks as networks  # noqa: PLC0415
    finally:
        sys.path.remove(str(path))
    tree = ast.parse((path / "train_SMUG.py").read_text(), filename=str(path / "train_SMUG.py"))
    definitions = [node for node in tree.body if isinstance(node, ast.FunctionDef) and node.name in PUBLISHED_FUNCTIONS]
    missing = set(PUBLISHED_FUNCTIONS) - {node.name for node in definitions}
    if missing:
        raise SystemExit(f"--published {path}: train_SMUG.py defines no {sorted(missing)}.")
    code = compile(ast.Module(body=definitions, type_ignores=[]), str(path / "train_SMUG.py"), "exec")
    return networks, didn.DIDN, code


def published_contender(args, model_name: str, inputs: dict, target: torch.Tensor, published) -> Contender:
    networks, didn_class, code = published
    torch.manual_seed(0)
    net = didn_class(2, 2, num_chans=args.channels, pad_data=True, global_residual=True, n_res_blocks=args.blocks)
    opt = types.SimpleNamespace(CGtol=args.cg_tol, Lambda=args.lambd, LossLambda=1.0)
    namespace = {"torch": torch, "networks": networks, "netG": net, "opt": opt, "device": torch.device("cpu")}
    namespace["mse_loss"] = torch.nn.MSELoss()
    exec(code, namespace)  # the function definitions only, see load_published
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.5, 0.999))

    # Its layout: images (N, 2, H, W), maps (N, coil, 2, H, W), mask (N, 2, H, W); its fft2 is DIRECT's (centred,
    # orthonormal).
    maps = inputs["sensitivity_map"].permute(0, 1, 4, 2, 3).contiguous()
    mask = inputs["sampling_mask"][:, 0, :, :, 0].unsqueeze(1).expand(-1, 2, -1, -1).contiguous()
    kspace = inputs["masked_kspace"]
    aliased = T.reduce_operator(T.ifft2(kspace, dim=(2, 3)), inputs["sensitivity_map"], 1).permute(0, 3, 1, 2)
    aliased, label = aliased.contiguous(), target.permute(0, 3, 1, 2).contiguous()
    recon = functools.partial(namespace["Recon"], args.steps, maps, mask, aliased, label)

    def step() -> None:
        if model_name == "SMUG":
            output, loss = recon(smoothing="SMUG", num_sample=args.samples, epsilon=args.sigma, is_train=True)
        else:
            output, _ = recon(smoothing="none")
            loss = namespace["loss_fn"](output, label) * opt.LossLambda
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()

    @contextlib.contextmanager
    def counting(counts: Counter) -> Iterator[None]:
        block, gram = networks.cg_block, networks.OPATA.forward

        def counted_gram(self, *rest):
            counts["gram"] += 1
            return gram(self, *rest)

        def counted_block(smap, mask, b0, z_pad, lambda1, tol, M=None, dn=None):
            before = counts["gram"]
            x = block(smap, mask, b0, z_pad, lambda1, tol, M=M, dn=dn)
            kind = "backward" if dn is None else "forward"
            counts[f"{kind} solves"] += 1
            counts[f"{kind} iterations"] += (counts["gram"] - before - 1) // 2  # A^H A twice per iteration, once first
            return x

        networks.cg_block, networks.OPATA.forward = counted_block, counted_gram
        try:
            yield
        finally:
            networks.cg_block, networks.OPATA.forward = block, gram

    return Contender(model_name, "published", step, sum(p.numel() for p in net.parameters()), counting)


# Measurements -----------------------------------------------------------------------------------------------------


class ConvolutionRecorder(TorchDispatchMode):
    """Records every convolution of a step: the tensors' shapes, which need gradients, and the settings."""

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.convolution.default:
            data, weight, bias, *settings = args
            self.calls.append((tuple(data.shape), data.requires_grad, tuple(weight.shape), bias is not None, settings))
        return func(*args, **(kwargs or {}))


def replay_convolutions(calls: list) -> tuple[float, float]:
    """GFLOP and seconds of the recorded convolutions alone, forward and backward (a warm-up pass first)."""
    prepared = []
    for data_shape, data_grad, weight_shape, has_bias, settings in calls:
        data = torch.randn(data_shape, requires_grad=data_grad)
        weight = torch.randn(weight_shape, requires_grad=True)
        bias = torch.randn(weight_shape[0], requires_grad=True) if has_bias else None
        prepared.append((data, weight, bias, settings))

    def run() -> None:
        for data, weight, bias, settings in prepared:
            output = torch.ops.aten.convolution(data, weight, bias, *settings)
            output.backward(torch.ones_like(output))

    run()
    with FlopCounterMode(display=False) as flops:
        run()
    start = time.perf_counter()
    run()
    return flops.get_total_flops() / 1e9, time.perf_counter() - start


def convolution_seconds_in_step(step: Callable[[], None]) -> float:
    """The time the step spends in convolutions (forward and backward), from the profiler."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        step()
    events = outermost_aten_events(profile.events())
    return sum(event.cpu_time_total for event in events if event.name in CONVOLUTION_EVENTS) / 1e6


def time_rounds(contenders: list[Contender], args: argparse.Namespace) -> None:
    """Warm-up steps, then ``repeats`` rounds of one step each, the order rotating from round to round."""
    for contender in contenders:
        for _ in range(args.warmup):
            contender.step()
    for round_index in range(args.repeats):
        shift = round_index % len(contenders)
        for contender in contenders[shift:] + contenders[:shift]:
            start, cpu_start = time.perf_counter(), time.process_time()
            contender.step()
            contender.times.append(time.perf_counter() - start)
            contender.cpu_times.append(time.process_time() - cpu_start)


def peak_memory_mib(args: argparse.Namespace, model_name: str, code: str, threads: int) -> float:
    """Growth of the peak resident set size over two steps, in a fresh subprocess (see :func:`memory_worker`)."""
    command = [sys.executable, __file__, *sys.argv[1:], "--worker", json.dumps([model_name, code, threads])]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"memory worker {model_name} / {code} failed:\n{result.stderr[-2000:]}")
    return float(result.stdout.strip().splitlines()[-1])


def build(args, model_name: str, code: str, inputs, target, published) -> Contender:
    if code == "published":
        return published_contender(args, model_name, inputs, target, published)
    return our_contender(args, model_name, inputs, target, variant=code.removeprefix("ours").removeprefix(", "))


def memory_worker(args: argparse.Namespace, published) -> None:
    model_name, code, threads = json.loads(args.worker)
    torch.set_num_threads(threads)
    inputs, target = scaled_inputs(args)
    contender = build(args, model_name, code, inputs, target, published)
    # Linux: "5" resets the peak resident set size (VmHWM) to the current one, so the peak of the imports is not
    # the figure; the growth counts the activations, gradients and Adam's state (created in the first step).
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    contender.step()
    contender.step()
    print((_status_kib("VmHWM") - before) / 1024)


def _status_kib(key: str) -> int:
    """A ``kB`` entry of /proc/self/status."""
    match = re.search(rf"^{key}:\s+(\d+) kB", Path("/proc/self/status").read_text(), flags=re.MULTILINE)
    return int(match.group(1))


def report(contenders: list[Contender], args: argparse.Namespace, threads: int, published) -> None:
    header = (
        f"{'model':<6} {'code':<29} {'params':>9} {'step [s]':>9} {'CPU [s]':>8} {'peak [MiB]':>10} "
        f"{'CG it. f/b':>10} {'conv GFLOP':>10} {'GFLOP/s':>8} {'plain':>7} {'limit [s]':>9} {'step/limit':>10}"
    )
    print(f"\n{threads} thread(s)\n{header}\n{'-' * len(header)}")
    rows = {}
    for contender in contenders:
        counts = Counter()
        with contender.counting(counts), ConvolutionRecorder() as recorder:
            contender.step()
        gflop, plain_seconds = replay_convolutions(recorder.calls)
        in_step = convolution_seconds_in_step(contender.step)
        memory = peak_memory_mib(args, contender.model, contender.code, threads)
        step = statistics.median(contender.times)
        iterations = "/".join(
            f"{counts[f'{kind} iterations'] / max(counts[f'{kind} solves'], 1):.1f}" for kind in ("forward", "backward")
        )
        rows[(contender.model, contender.code)] = (step, memory)
        print(
            f"{contender.model:<6} {contender.code:<29} {contender.parameters:>9,} {step:>9.3f} "
            f"{statistics.median(contender.cpu_times):>8.3f} {memory:>10.0f} {iterations:>10} {gflop:>10.1f} "
            f"{gflop / in_step:>8.1f} {gflop / plain_seconds:>7.1f} {plain_seconds:>9.3f} "
            f"{step / plain_seconds:>10.2f}",
            flush=True,
        )
    for (model_name, code), (step, memory) in rows.items():
        if code == "published":
            continue
        reference = rows.get((model_name, "published"))
        if reference is not None and min(reference) > 0:
            print(
                f"{model_name} {code} / published: time {step / reference[0]:.2f} x, "
                f"peak memory {memory / reference[1]:.2f} x"
            )
        if code != "ours":
            print(f"{model_name} {code} / ours: time {step / rows[(model_name, 'ours')][0]:.2f} x")


def main() -> None:
    args = parse_args()
    published = load_published(Path(args.published)) if args.published else None
    if args.worker:
        memory_worker(args, published)
        return
    for line in machine_description(argparse.Namespace(threads=args.threads[0], device="cpu")):
        print(line)
    print(
        f"inputs: batch {args.batch}, {args.coils} coils, {args.size[0]} x {args.size[1]}, 4x mask; {args.steps} "
        f"unrolls; DIDN {args.channels} channels x {args.blocks} down-up blocks (ours: {args.recon_convs} "
        f"reconstruction-block convolutions); SMUG sigma {args.sigma}, "
        f"K = {args.samples}; lambda {args.lambd}; CG tol {args.cg_tol} (ours: at most {args.cg_iters} iterations); "
        f"MSE + UStab (MoDL: MSE), Adam; {args.warmup} warm-up + median of {args.repeats} steps, order alternating"
    )
    print(f"published code: {args.published or 'not given (ours alone)'}")
    print(
        "peak memory: growth of the peak RSS (VmHWM, reset after building) over two steps in a fresh subprocess; "
        "CG it. f/b: iterations per forward / "
        "backward solve; GFLOP/s: the convolutions inside the step; plain: the same convolutions alone; limit: their "
        "time alone (the convolution-bound step time)"
    )
    inputs, target = scaled_inputs(args)
    codes = ["ours", "published"] if published else ["ours"]
    for threads in args.threads:
        torch.set_num_threads(threads)
        contenders = []
        for model_name in ("SMUG", "MoDL"):
            checkpointed = ["ours, checkpointed", "ours, checkpointed each draw"]
            model_codes = codes + (checkpointed if model_name == "SMUG" else [])
            model_codes += ["ours, compiled"] if args.compiled else []
            group = [build(args, model_name, code, inputs, target, published) for code in model_codes]
            time_rounds(group, args)
            contenders += group
        report(contenders, args, threads, published)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--published", default=None, help="path of a checkout of github sjames40/SMUG_journal")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="torch.set_num_threads values")
    parser.add_argument("--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"))
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=8, help="unrolls")
    parser.add_argument("--channels", type=int, default=32, help="DIDN channels")
    parser.add_argument("--blocks", type=int, default=3, help="DIDN down-up blocks")
    parser.add_argument(
        "--recon-convs",
        type=int,
        default=9,
        help="our DIDN's reconstruction-block convolutions (DIRECT's default 9; 1 comes closest to the published DIDN)",
    )
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--samples", type=int, default=10, help="K")
    parser.add_argument("--lambd", type=float, default=1.0, help="DC weight lambda")
    parser.add_argument("--cg-tol", type=float, default=1e-6)
    parser.add_argument("--cg-iters", type=int, default=10, help="our CG's iteration limit")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--compiled", action="store_true", help="also ours with denoiser_compile (torch.compile)")
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return parser.parse_args()


if __name__ == "__main__":
    main()
