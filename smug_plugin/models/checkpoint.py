"""Reading the model weights of a ``direct train`` checkpoint, safely, with one-line errors that say the fix.

Checkpoints are read with ``torch.load(weights_only=True)``: a file whose unpickling would call code (a pickled
object with ``__reduce__``, say) is refused before anything runs. Both the pre-trained denoiser of a training run
and the checkpoints ``smug evaluate`` reads go through `load_weights_only`.
"""

import pathlib
import pickle
import re
from typing import Any

import torch

# The checkpoint key under which the plugin's engines store their YAML's model_name (DIRECT's checkpointer writes keys
# of the form __NAME__ as they are and skips them on load): MoDL, SMUG and RS-E2E share every parameter name and shape,
# so only this tells one's checkpoint from another's.
MODEL_NAME_KEY = "__model_name__"

# torch names the global it refused in both of its messages ("GLOBAL posix.system was not an allowed global",
# "unsupported GLOBAL posix.system whose module ..."); random bytes fail on an opcode instead.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+[\w])")
# What a file that is no checkpoint most likely is, by its first bytes (torch.save writes a zip archive).
_SIGNATURES = {
    b"\x89HDF\r\n\x1a\n": "an HDF5 file (data, not a checkpoint?)",
    b"PK\x03\x04": "a zip archive that is not a complete PyTorch checkpoint",
    b"\x80": "a pickle that is not a complete PyTorch checkpoint",
}


# The models whose checkpoints a setting accepts, unless the caller names others.
ANY_FAMILY_MODEL = "smug.didn.DIDN (or another smug.* model)"


def checkpoint_fix(setting: str, models: str = ANY_FAMILY_MODEL) -> str:
    """What a user does about a bad checkpoint given in ``model.<setting>``, which should be one of ``models``."""
    return f"retrain, or point model.{setting} at a model_<iteration>.pt written by `direct train` for {models}"


def describe_file(path: pathlib.Path) -> str:
    """What a file that torch cannot read appears to be, from its size and first bytes."""
    with open(path, "rb") as handle:
        head = handle.read(8)
    if not head:
        return "an empty file"
    for signature, what in _SIGNATURES.items():
        if head.startswith(signature):
            return what
    if all(32 <= byte < 127 or byte in b"\t\n\r" for byte in head):
        return "a text file"
    return "neither a zip archive nor a pickle"


def load_weights_only(path: pathlib.Path, where: str, fix: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure as a one-line `ValueError`.

    Parameters
    ----------
    path : pathlib.Path
        An existing file.
    where : str
        How the messages name the file (e.g. ``model.denoiser_checkpoint '/runs/model_5.pt'``).
    fix : str
        What the user does about a file that is not a checkpoint.

    Raises
    ------
    ValueError
        The file cannot be read, is corrupt or truncated, or would execute code when unpickled.
    """
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as error:
        raise ValueError(f"{where} cannot be read ({error.strerror}): check its permissions.") from None
    except Exception as error:  # the weights-only unpickler fails on arbitrary bytes in many ways, executing nothing
        refused = _REFUSED_GLOBAL.search(str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if refused is not None:
            raise ValueError(
                f"{where} was refused: loading it would execute code ({refused.group(1)}), and checkpoints are read "
                "with torch.load(weights_only=True). If it is an old checkpoint you trust, load it once in a trusted "
                "session with torch.load and weights_only set to False, and re-save only its weights: "
                'torch.save({"model": checkpoint["model"]}, path).'
            ) from None
        raise ValueError(
            f"{where} is corrupt, truncated or not a PyTorch checkpoint ({describe_file(path)}): {fix}."
        ) from None


def read_model_state(
    checkpoint: str | pathlib.Path, setting: str, models: str = ANY_FAMILY_MODEL
) -> dict[str, torch.Tensor]:
    """The model weights (``checkpoint["model"]``) of a ``direct train`` checkpoint.

    Parameters
    ----------
    checkpoint : str or pathlib.Path
        A ``model_<iteration>.pt`` (or a file holding a bare state dict).
    setting : str
        The ``model:`` key that named the file, for the error messages.
    models : str
        The models whose checkpoints the setting accepts, for the error messages.

    Returns
    -------
    dict[str, torch.Tensor]
        The state dict, on the CPU.

    Raises
    ------
    FileNotFoundError
        The file does not exist.
    ValueError
        The file cannot be read, is corrupt or truncated, would execute code when unpickled, or holds no state dict.
    """
    path = pathlib.Path(checkpoint)
    where = f"model.{setting} {str(path)!r}"
    if not path.is_file():
        raise FileNotFoundError(f"{where} does not exist or is not a file: {checkpoint_fix(setting, models)}.")
    state = load_weights_only(path, where, checkpoint_fix(setting, models))
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not is_state_dict(state):
        kind = type(state).__name__ if not isinstance(state, dict) else "dict without a state dict under 'model'"
        raise ValueError(
            f"{where} holds a {kind}, not the weights of a `direct train` run: {checkpoint_fix(setting, models)}."
        )
    return state


def is_state_dict(value: Any) -> bool:
    """Whether ``value`` is a mapping of names to tensors, as ``nn.Module.state_dict()`` returns."""
    return isinstance(value, dict) and all(isinstance(v, torch.Tensor) for v in value.values())


def state_mismatch(expected: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """A one-line summary of the keys and shapes in which ``given`` differs from ``expected`` ('' if none)."""
    missing = sorted(expected.keys() - given.keys())
    unexpected = sorted(given.keys() - expected.keys())
    reshaped = sorted(k for k in expected.keys() & given.keys() if expected[k].shape != given[k].shape)
    parts = []
    if reshaped:
        key = reshaped[0]
        parts.append(
            f"{_tensors(reshaped)} of another shape, e.g. {key}: {tuple(given[key].shape)} in the checkpoint, "
            f"{tuple(expected[key].shape)} here"
        )
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{_tensors(keys)} {what}, e.g. {', '.join(keys[:3])}")
    return "; ".join(parts)


def _tensors(keys: list[str]) -> str:
    return f"{len(keys)} tensor{'s' * (len(keys) != 1)}"
