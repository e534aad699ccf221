"""Reading the model weights of a ``direct train`` checkpoint, safely, with one-line errors that say the fix.

Checkpoints are read with ``torch.load(weights_only=True)``: a file whose unpickling would call code (a pickled
object with ``__reduce__``, say) is refused before anything runs.
"""

import pathlib
import pickle
import re

import torch

# torch names the global it refused in both of its messages ("GLOBAL posix.system was not an allowed global",
# "unsupported GLOBAL posix.system whose module ..."); random bytes fail on an opcode instead.
_REFUSED_GLOBAL = re.compile(r"GLOBAL ([\w.]+[\w])")


def checkpoint_fix(setting: str) -> str:
    """What a user does about a bad checkpoint given in ``model.<setting>``."""
    return (
        f"retrain, or point model.{setting} at a model_<iteration>.pt written by `direct train` for smug.didn.DIDN "
        "(or another smug.* model)"
    )


def read_model_state(checkpoint: str | pathlib.Path, setting: str) -> dict[str, torch.Tensor]:
    """The model weights (``checkpoint["model"]``) of a ``direct train`` checkpoint.

    Parameters
    ----------
    checkpoint : str or pathlib.Path
        A ``model_<iteration>.pt`` (or a file holding a bare state dict).
    setting : str
        The ``model:`` key that named the file, for the error messages.

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
        raise FileNotFoundError(f"{where} does not exist or is not a file: {checkpoint_fix(setting)}.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except PermissionError as error:
        raise ValueError(f"{where} cannot be read ({error.strerror}): check its permissions.") from None
    except (pickle.UnpicklingError, EOFError, OSError, RuntimeError, ValueError) as error:
        refused = _REFUSED_GLOBAL.search(str(error)) if isinstance(error, pickle.UnpicklingError) else None
        if refused is not None:
            raise ValueError(
                f"{where} was refused: loading it would execute code ({refused.group(1)}), and checkpoints are read "
                "with torch.load(weights_only=True). If it is an old checkpoint you trust, load it once in a trusted "
                "session with torch.load(path, weights_only=False) and re-save only its weights: "
                'torch.save({"model": checkpoint["model"]}, path).'
            ) from None
        raise ValueError(
            f"{where} is corrupt, truncated or not a PyTorch checkpoint: {checkpoint_fix(setting)}."
        ) from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        kind = type(state).__name__ if not isinstance(state, dict) else "dict without a state dict under 'model'"
        raise ValueError(f"{where} holds a {kind}, not the weights of a `direct train` run: {checkpoint_fix(setting)}.")
    return state
