"""Before an evaluation starts: the peak memory of each model's attack gradients, against what the device holds.

A white-box attack differentiates the reconstruction with respect to the k-space, so autograd keeps the
activations of every unroll and every noise draw unless the model recomputes them
(``gradient_checkpointing: true``: one unroll at a time; with ``checkpoint_each_draw: true``: one draw at a time).
The estimate counts, for the attack batch:

* the denoiser's saved activations, measured by a probe (one forward of the model's own denoiser on a 64 x 64 image
  under ``torch.autograd.graph.saved_tensors_hooks``) and scaled by the pixel count of the data, times the denoiser
  calls whose activations are alive at once (N unrolls x K draws; K with per-unroll checkpointing; 1 per draw),
  plus one call's worth again for its backward;
* the data-consistency tensors: about ``DC_BUFFERS`` coil-sized complex buffers per slice and draw, and one
  image per unroll and draw that the implicit CG backward keeps;
* the parameters.

It is an estimate (about +-30 %, ``tests/test_attack_memory.py`` compares it with measured peaks); the check fails
only when it exceeds what the device has free, with one line naming the option to turn on.
"""

import dataclasses
import pathlib

import torch

PROBE_SIZE = 64
DC_BUFFERS = 8
FLOAT_BYTES = 4
GIB = 2**30


@dataclasses.dataclass(frozen=True)
class MemoryEstimate:
    """Peak bytes of one attack gradient of one model, with and without the memory options."""

    model: str
    peak_bytes: int
    options_bytes: int  # with gradient_checkpointing and checkpoint_each_draw
    gradient_checkpointing: bool
    checkpoint_each_draw: bool

    def describe(self) -> str:
        options = f"{self.options_bytes / GIB:.1f} GiB with the options"
        return f"{self.model}: about {self.peak_bytes / GIB:.1f} GiB ({options})"


def denoiser_saved_bytes(denoiser: torch.nn.Module, size: int = PROBE_SIZE) -> int:
    """Bytes autograd saves for one forward of ``denoiser`` on one complex ``size`` x ``size`` image."""
    from smug_plugin.models.denoiser import apply_denoiser

    parameter = next(denoiser.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    seen: dict[tuple, int] = {}

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        if tensor.device.type != "meta":
            storage = tensor.untyped_storage()
            seen[(storage.data_ptr(), tensor.device)] = storage.nbytes()
        return tensor

    image = torch.zeros(1, size, size, 2, device=device, requires_grad=True)
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        apply_denoiser(denoiser, image)
    parameters = sum(p.untyped_storage().nbytes() for p in denoiser.parameters())
    return max(sum(seen.values()) - parameters, 0)  # weights are saved too, but exist anyway


def attack_peak_bytes(
    network: torch.nn.Module,
    image_shape: tuple[int, int],
    coils: int,
    batch: int,
    *,
    gradient_checkpointing: bool,
    checkpoint_each_draw: bool,
    denoiser_bytes: int | None = None,
) -> int:
    """Estimated peak bytes of one forward and backward of a :class:`SmoothedUnrolledNetwork` on ``batch`` slices.

    Parameters
    ----------
    network : torch.nn.Module
        The model (its ``num_steps``, draws and denoiser are read).
    image_shape : tuple[int, int]
        (H, W) the model reconstructs (after DIRECT's cropping).
    coils : int
        Receive channels.
    batch : int
        Slices attacked at once (``smug evaluate --batch-size``).
    gradient_checkpointing, checkpoint_each_draw : bool
        The memory options to assume.
    denoiser_bytes : int, optional
        :func:`denoiser_saved_bytes` of the network's denoiser (measured if not given).
    """
    pixels = image_shape[0] * image_shape[1]
    if denoiser_bytes is None:
        denoiser_bytes = denoiser_saved_bytes(network.denoiser)
    per_image = denoiser_bytes * pixels / PROBE_SIZE**2
    steps = int(network.num_steps)
    draws = int(network.num_samples) if network.is_randomized else 1
    # Activations alive at the start of the backward pass, and those of the calls being differentiated at once.
    if not gradient_checkpointing:
        alive = steps * draws
    elif checkpoint_each_draw:
        alive = 1
    else:
        alive = draws
    in_backward = 1 if gradient_checkpointing and checkpoint_each_draw else draws
    denoiser = per_image * batch * (alive + in_backward)
    image_bytes = pixels * 2 * FLOAT_BYTES
    dc = batch * draws * (DC_BUFFERS * coils * image_bytes + 2 * steps * image_bytes)
    parameters = sum(p.numel() * p.element_size() for p in network.parameters())
    return int(denoiser + dc + 3 * parameters)


def available_bytes(device: str | torch.device) -> int | None:
    """Free memory of ``device``: CUDA's free bytes, or the host's available RAM on CPU; None when unknown."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    if device.type == "cpu":
        try:
            for line in pathlib.Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
        except OSError:
            return None
    return None


def data_geometry(data_root: pathlib.Path, crop: str | None) -> tuple[tuple[int, int], int] | None:
    """(H, W) the models reconstruct and the coil count, from the first readable h5 file under ``data_root``.

    With ``crop: reconstruction_size`` (the knee and brain projects) the image is the header's ``reconSpace``
    (at most W wide, as DIRECT crops), else the k-space's H x W.
    """
    import h5py

    from smug_plugin.direct_adapter import parse_fastmri_header

    for path in sorted(pathlib.Path(data_root).glob("*.h5")):
        try:
            with h5py.File(path, "r") as handle:
                shape = handle["kspace"].shape
                header = handle["ismrmrd_header"][()] if "ismrmrd_header" in handle else None
        except (OSError, KeyError):
            continue
        coils, height, width = (shape[-3], shape[-2], shape[-1]) if len(shape) == 4 else (1, shape[-2], shape[-1])
        if crop == "reconstruction_size" and header is not None:
            size = parse_fastmri_header(header)["reconstruction_size"]
            return ((width, width) if width < size[1] else (size[0], size[1])), coils
        return (height, width), coils
    return None


def _inference_crop(cfg) -> str | None:
    try:
        return cfg.inference.dataset.transforms.cropping.crop
    except AttributeError:
        return None


def estimate_models(models, data_root: pathlib.Path, batch: int) -> list[MemoryEstimate]:
    """The estimate of every plugin model (SMUG family) among ``models``; DIRECT's own models are not estimated."""
    from smug_plugin.models.unrolled import SmoothedUnrolledNetwork

    estimates = []
    for model in models:
        network = getattr(model, "module", None)  # EngineReconstructor.module: the engine's unwrapped model
        if not isinstance(network, SmoothedUnrolledNetwork):
            continue
        geometry = data_geometry(data_root, _inference_crop(getattr(model, "cfg", None)))
        if geometry is None:
            continue
        shape, coils = geometry
        saved = denoiser_saved_bytes(network.denoiser)
        common = dict(image_shape=shape, coils=coils, batch=batch, denoiser_bytes=saved)
        peak = attack_peak_bytes(
            network,
            gradient_checkpointing=network.gradient_checkpointing,
            checkpoint_each_draw=network.checkpoint_each_draw,
            **common,
        )
        options = attack_peak_bytes(network, gradient_checkpointing=True, checkpoint_each_draw=True, **common)
        estimates.append(
            MemoryEstimate(model.name, peak, options, network.gradient_checkpointing, network.checkpoint_each_draw)
        )
    return estimates


def memory_problem(estimates: list[MemoryEstimate], free: int | None, device: str, batch: int) -> str | None:
    """One line saying which model does not fit and which option to turn on (None: all fit or unknown)."""
    if free is None:
        return None
    for estimate in estimates:
        if estimate.peak_bytes <= free:
            continue
        need = f"{estimate.peak_bytes / GIB:.1f} GiB"
        where = f"the attacks' gradients of model '{estimate.model}' need about {need} on {device}, "
        where += f"{free / GIB:.1f} GiB"
        if estimate.options_bytes <= free and not estimate.gradient_checkpointing:
            return (
                f"{where} are free: set `gradient_checkpointing: true` and `checkpoint_each_draw: true` in the model "
                f"section of its YAML (about {estimate.options_bytes / GIB:.1f} GiB; same results, more time)."
            )
        if estimate.options_bytes <= free and not estimate.checkpoint_each_draw:
            return (
                f"{where} are free: set `checkpoint_each_draw: true` in the model section of its YAML (about "
                f"{estimate.options_bytes / GIB:.1f} GiB; same results, more time)."
            )
        fix = " lower --batch-size (1 attacks one slice at a time) or" if batch > 1 else ""
        return f"{where} are free even with the memory options:{fix} use a device with more memory."
    return None


def check_attack_memory(models, protocol, settings) -> list[MemoryEstimate]:
    """Raise ValueError (one line, naming the option) if an attack of ``protocol`` cannot fit on the device.

    Only protocols with a white-box (gradient) attack are checked. Returns the estimates (empty when none apply).
    """
    from smug_plugin.robustness.attacks.base import attack_class

    def white_box(perturbation) -> bool:
        members = getattr(perturbation, "members", ()) or ()
        return attack_class(perturbation.kind).white_box or any(white_box(m) for m in members)

    if not any(white_box(p) for p in getattr(protocol, "perturbations", [])):
        return []
    estimates = estimate_models(models, settings.data_root, settings.batch_size)
    problem = memory_problem(estimates, available_bytes(settings.device), str(settings.device), settings.batch_size)
    if problem is not None:
        raise ValueError(problem)
    return estimates
