"""What every ``smug`` sub-command goes through: one set of checks for its options, models, data and output folder.

`run_command` runs a command's ``compute(args, inputs)`` after checking, before any model is loaded, every option
the command has under its standard name: counts (``--batch-size``, ``--threads``, ...), ``--model`` (files, and
display names that may become file names), ``--data-root`` (the h5 checks of `data.checks`; files DIRECT skips are
returned as data issues for the report) and ``--output-dir`` (a folder that can be written, held under the lock of
`output_lock` while the command runs). A new command that names its options so gets every check without writing
one. Bad input is one line, ``smug COMMAND: error: ...``, and exit status 2.
"""

import argparse
import errno
import os
import pathlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field

# Options that count something, by their argparse destination: each must be unset or positive.
COUNT_OPTIONS = (
    "batch_size",
    "max_slices",
    "threads",
    "power_iterations",
    "stride",
    "window_batch",
    "iterations",
    "levels",
)
# File systems the kernel makes up (a write there is no result file, and may change the machine).
VIRTUAL_ROOTS = ("/proc", "/sys", "/dev")


class InputError(ValueError):
    """Bad input, said in one line."""


@dataclass
class CheckedInputs:
    """What `check_inputs` found: the parsed ``--model`` specs, the data files DIRECT will skip and what the
    command's own first check returned (e.g. the evaluation folder it reads)."""

    specs: list = field(default_factory=list)
    data_issues: list[dict] = field(default_factory=list)
    own: object = None


def count_problem(counts: dict[str, int | None]) -> str | None:
    """The first count option given below 1 (None: every one is unset or positive)."""
    for option, value in counts.items():
        if value is not None and value < 1:
            return f"{option} must be positive, got {value}."
    return None


def option_name(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def path_problem(option: str, path: pathlib.Path) -> str | None:
    """Why ``path`` cannot be looked at (a symbolic link loop, a name too long), None if it can."""
    try:
        os.stat(path)
    except (FileNotFoundError, NotADirectoryError):  # what the callers' own checks name
        return None
    except OSError as e:
        if e.errno == errno.ELOOP:
            return f"{option} {path} is a loop of symbolic links: point it at a real folder."
        return f"{option} {path} cannot be looked at ({e.strerror}): give another path."
    return None


def output_dir_problem(path: pathlib.Path, option: str = "--output-dir") -> str | None:
    """What is wrong with an output folder, found before anything is loaded (None: nothing)."""
    problem = path_problem(option, path)
    if problem is not None:
        return problem
    absolute = pathlib.Path(os.path.abspath(path))
    if any(absolute == pathlib.Path(root) or pathlib.Path(root) in absolute.parents for root in VIRTUAL_ROOTS):
        return f"{option} {path} is on a virtual file system of the kernel ({absolute.parts[1]}): give a real folder."
    existing = next(p for p in [absolute, *absolute.parents] if os.path.lexists(p))
    if existing.is_symlink() and not existing.exists():
        return f"{option} {path}: {existing} is a broken symbolic link; give a folder for the results."
    if not existing.is_dir():
        return f"{option} {path}: {existing} is a file, not a folder; give a folder for the results."
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{option} {path}: {existing} is not writable; give a folder you can write to."
    return None


def output_file_problem(path: pathlib.Path, option: str = "--output") -> str | None:
    """What is wrong with an output file's path (None: nothing): it must name a file in a writable folder."""
    problem = path_problem(option, path) or path_problem(option, path.parent)
    if problem is not None:
        return problem
    if path.is_dir():
        return f"{option} {path} is a folder: give a file name (e.g. {path / 'cs.yaml'})."
    if not path.parent.is_dir():
        return f"{option} {path}: {path.parent} is not a folder; give a file name in an existing folder."
    return output_dir_problem(path.parent, option)


def data_root_problem(path: pathlib.Path, option: str = "--data-root") -> str | None:
    """Why ``path`` is no folder of data (None: it is one)."""
    problem = path_problem(option, path)
    if problem is not None:
        return problem
    if not path.exists():
        return f"{option} {path} does not exist: give the folder of the fastMRI-format h5 files."
    if not path.is_dir():
        return f"{option} {path} is a file, not a folder: give the folder of the fastMRI-format h5 files."
    return None


def check_data(data_root: pathlib.Path, option: str = "--data-root", fully_sampled: str | None = None) -> list[dict]:
    """The checks of `data.checks` on a data root; returns the files DIRECT will skip as report entries.
    ``fully_sampled``: what needs fully sampled k-space (then undersampled files are refused)."""
    from smug_plugin.data.checks import check_data_root, check_fully_sampled

    problem = data_root_problem(data_root, option)
    if problem is not None:
        raise InputError(problem)
    issues = [issue.to_dict() for issue in check_data_root(data_root)]
    if fully_sampled is not None:
        check_fully_sampled(data_root, fully_sampled)
    return issues


def check_models(texts: list[str], option: str = "--model", checkpoint_needed: bool = False) -> list:
    """Parse ``NAME=CONFIG.yaml:CHECKPOINT.pt`` (or ``NAME=CS.yaml``) specs, refuse names that would share a file,
    and check every file, before any model is loaded."""
    from smug_plugin.robustness.reconstructors.direct_engines import ModelSpec
    from smug_plugin.robustness.reconstructors.names import check_display_names
    from smug_plugin.robustness.reconstructors.specs import parse_model_spec

    if not texts:
        raise InputError(f"Give at least one {option} NAME=CONFIG.yaml:CHECKPOINT.pt.")
    specs = [ModelSpec.parse(t) if checkpoint_needed else parse_model_spec(t) for t in texts]
    check_display_names([s.name for s in specs], option)
    for spec in specs:
        spec.check_files()
    return specs


def warn(command: str, lines: list[str]) -> None:
    for line in lines:
        print(f"smug {command}: WARNING: {line}", file=sys.stderr)


def check_inputs(
    command: str,
    args: argparse.Namespace,
    fully_sampled: str | None = None,
    own_check: Callable[[argparse.Namespace], object] | None = None,
) -> CheckedInputs:
    """Every check of the standard options ``args`` has, in the order of their cost (``own_check``, the command's
    own, after the options and before models and data); raises on the first problem."""
    counts = {option_name(d): getattr(args, d) for d in COUNT_OPTIONS if isinstance(getattr(args, d, None), int)}
    problem = count_problem(counts)
    if problem is None and getattr(args, "output_dir", None) is not None:
        problem = output_dir_problem(args.output_dir)
    if problem is not None:
        raise InputError(problem)
    inputs = CheckedInputs()
    if own_check is not None:
        inputs.own = own_check(args)
    if getattr(args, "model", None) is not None:
        inputs.specs = check_models(args.model)
    if getattr(args, "data_root", None) is not None:
        inputs.data_issues = check_data(args.data_root, fully_sampled=fully_sampled)
        warn(command, [f"{issue['file']}: {issue['problem']}" for issue in inputs.data_issues])
    return inputs


def use_threads(threads: int | None) -> None:
    """``torch.set_num_threads``: the given count, or every core."""
    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def run_command(
    command: str,
    compute: Callable[[argparse.Namespace, CheckedInputs], dict],
    args: argparse.Namespace,
    fully_sampled: str | None = None,
    own_check: Callable[[argparse.Namespace], object] | None = None,
) -> int:
    """Check the inputs (`check_inputs`, with the command's ``own_check``), hold the ``--output-dir`` lock, set the
    thread count, run ``compute(args, inputs)`` and print the files it returns (``{kind: path}``); bad input gives
    ``smug COMMAND: error: ...`` on stderr and exit status 2."""
    import contextlib

    from smug_plugin.robustness.run.output_lock import output_dir_lock

    try:
        inputs = check_inputs(command, args, fully_sampled, own_check)
        with contextlib.ExitStack() as stack:
            if getattr(args, "output_dir", None) is not None:
                stack.enter_context(output_dir_lock(args.output_dir, f"smug {command}"))
            if hasattr(args, "threads"):
                use_threads(args.threads)
            paths = compute(args, inputs)
    except (OSError, ValueError) as e:  # OSError: a file that cannot be read or written, named
        print(f"smug {command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0


def one_line(error: BaseException) -> str:
    """An error as one line: an OS error with its file, any other error's message with its lines joined."""
    if isinstance(error, OSError) and error.strerror and error.filename is not None and str(error).startswith("["):
        return f"{error.filename}: {error.strerror}."
    return " ".join(str(error).split())
