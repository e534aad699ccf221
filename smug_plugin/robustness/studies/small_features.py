"""Small-feature recovery (Darestani et al. 2021): a 3 x 3 window set to the image maximum, slid over the image; the
measurements simulated from the modified image; the error of each model's reconstruction inside the window.

The modified image keeps each window pixel's phase and sets its magnitude to the slice's maximum |x|; its data are
A x' with the slice's own coil maps and mask (`MultiCoilOperator` of the data model, the same for every model), so
the window is the only difference from the acquired slice's fully sampled image. Windows are reconstructed in
batches: one batch holds copies of the slice, each with its own window.
"""

import torch

from smug_plugin.losses.smoothing import complex_target_image
from smug_plugin.robustness.reconstructors.interface import Reconstructor, TestTimeSettings

WINDOW = 3


def window_origins(height: int, width: int, stride: int) -> torch.Tensor:
    """Top-left corners (windows, 2) of the windows on a grid of ``stride`` pixels, all inside the image."""
    rows = torch.arange(0, height - WINDOW + 1, stride)
    columns = torch.arange(0, width - WINDOW + 1, stride)
    return torch.cartesian_prod(rows, columns).reshape(-1, 2)


def window_masks(origins: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Boolean masks (windows, H, W), true on each window's 3 x 3 pixels."""
    rows = torch.arange(height, device=origins.device)
    columns = torch.arange(width, device=origins.device)
    in_rows = (rows >= origins[:, :1]) & (rows < origins[:, :1] + WINDOW)
    in_columns = (columns >= origins[:, 1:]) & (columns < origins[:, 1:] + WINDOW)
    return in_rows[:, :, None] & in_columns[:, None, :]


def bright_windows(image: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Copies (windows, H, W, 2) of a complex image (H, W, 2), each with its window at the image's maximum magnitude
    (the pixel's phase kept; zero phase where the pixel is 0)."""
    magnitude = image.norm(dim=-1, keepdim=True)
    unit = torch.where(magnitude > 0, image / magnitude.clamp_min(torch.finfo(image.dtype).tiny), 0.0)
    unit = torch.where(magnitude > 0, unit, torch.tensor([1.0, 0.0], dtype=image.dtype, device=image.device))
    return torch.where(masks[..., None], magnitude.max() * unit, image)


def repeat_slice(batch: dict, index: int, copies: int) -> dict:
    """``copies`` copies of slice ``index`` of a batch: every per-slice tensor (also inside a list, as collated
    sizes are) and every per-slice list of names or numbers; the rest unchanged."""
    size = len(batch["filename"])

    def repeated(value):
        if isinstance(value, torch.Tensor) and value.ndim > 0 and value.shape[0] == size:
            return value[index : index + 1].expand(copies, *value.shape[1:]).contiguous()
        if isinstance(value, list | tuple) and any(isinstance(v, torch.Tensor) for v in value):
            return type(value)(repeated(v) for v in value)
        if isinstance(value, list | tuple) and len(value) == size:
            return [value[index]] * copies
        return value

    return {key: repeated(value) for key, value in batch.items()}


def window_errors(
    models: list[Reconstructor], data_model: Reconstructor, batch: dict, index: int, stride: int, window_batch: int
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The window origins of slice ``index`` and each model's MSE inside every window, in normalised units.

    Parameters
    ----------
    models : list[Reconstructor]
        The models (DIRECT, plugin or CS); each reconstructs the same simulated data.
    data_model : Reconstructor
        The model whose operator (coil maps, mask, FFTs) simulates the data.
    batch : dict
        A batch with fully sampled k-space (``batch["kspace"]``), the source of the image.
    index, stride, window_batch : int
        The slice, the grid step, and the windows reconstructed at once.
    """
    image = complex_target_image(batch["kspace"], data_model.operator(batch))[index]
    height, width = image.shape[:2]
    origins = window_origins(height, width, stride)
    errors: dict[str, list[torch.Tensor]] = {m.name: [] for m in models}
    for chunk in origins.split(window_batch):
        masks = window_masks(chunk, height, width)
        modified = bright_windows(image, masks)
        copies = repeat_slice(batch, index, len(chunk))
        kspace_delta = data_model.operator(copies).forward(modified) - copies["masked_kspace"]
        target = modified.norm(dim=-1)
        for model in models:
            with torch.no_grad():
                output = model.reconstruct(copies, kspace_delta, TestTimeSettings())
            squared = (output - target) ** 2
            errors[model.name].append((squared * masks).flatten(1).sum(1) / WINDOW**2)
    return origins, {name: torch.cat(values) for name, values in errors.items()}


def heat_map(origins: torch.Tensor, errors: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """An (H, W) map in [0, 1]: every pixel takes the error of the window whose centre is nearest, min-max scaled."""
    centres = (origins + WINDOW // 2).to(errors.dtype)
    pixels = torch.cartesian_prod(torch.arange(height), torch.arange(width)).to(errors.dtype)
    nearest = torch.cdist(pixels, centres).argmin(dim=1)
    values = errors[nearest].reshape(height, width)
    spread = values.max() - values.min()
    return (values - values.min()) / spread if spread > 0 else torch.zeros_like(values)
