"""What the ``smug`` sub-commands share: the check of count options, the torch thread count, and running a command
that writes files, with bad input reported in one line."""

import argparse
import sys
from collections.abc import Callable


def count_problem(counts: dict[str, int | None]) -> str | None:
    """The first count option given below 1 (None: every one is unset or positive)."""
    for option, value in counts.items():
        if value is not None and value < 1:
            return f"{option} must be positive, got {value}."
    return None


def use_threads(threads: int | None) -> None:
    """``torch.set_num_threads``: the given count, or every core."""
    import os

    import torch

    torch.set_num_threads(threads or os.cpu_count() or 1)


def run_and_list_outputs(
    command: str,
    compute: Callable[[argparse.Namespace], dict],
    args: argparse.Namespace,
    counts: dict[str, int | None] | None = None,
    threads: bool = False,
) -> int:
    """Checks ``counts``, sets ``args.threads`` when ``threads``, runs ``compute(args)`` and prints the files it returns
    (``{kind: path}``); bad input gives ``smug COMMAND: error: ...`` on stderr and exit status 2."""
    try:
        problem = count_problem(counts or {})
        if problem is not None:
            raise ValueError(problem)
        if threads:
            use_threads(args.threads)
        paths = compute(args)
    except (OSError, ValueError) as e:
        print(f"smug {command}: error: {e}", file=sys.stderr)
        return 2
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
