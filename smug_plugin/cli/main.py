"""Entry point of the ``smug`` command.

Each sub-command lives in its own module that exposes ``add_parser(subparsers)``; the module registers a
``func(args) -> int`` default on its parser. Modules are imported here, but they import torch and DIRECT only
inside ``func``, so ``smug --help`` stays fast.
"""

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = [
    "smug_plugin.cli.data",
    "smug_plugin.cli.evaluate",
    "smug_plugin.cli.metrics",
    "smug_plugin.cli.select_checkpoint",
    "smug_plugin.cli.bound",
    "smug_plugin.cli.cs_tune",
    "smug_plugin.cli.small_features",
    "smug_plugin.cli.shifts",
    "smug_plugin.cli.projects",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="smug", description="SMUG robust MRI reconstruction tools for DIRECT.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
