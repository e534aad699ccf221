"""``smug projects``: the DIRECT YAMLs of the studies (fastMRI knee and brain, the bundled demo data), also from an
installed wheel.

``smug projects list`` names them; ``smug projects copy NAME... DIR`` writes them into ``DIR`` with every checkpoint
path they read (``denoiser_checkpoint``, ``rs_e2e_teacher_checkpoint``, ...; written ``runs/...`` relative to the
repository) pointing into ``DIR/runs/``, where the ``direct train`` commands printed for them write their runs.
"""

import argparse
import fnmatch
import pathlib
import re
import sys

# A key naming a checkpoint another run writes, with its value relative to the repository (``runs/...``).
CHECKPOINT_LINE = re.compile(r"^(?P<key>\s*\w+_checkpoint:\s*)(?P<path>runs/\S+)\s*$")
# The ``direct train`` command of a project's second comment line.
COMMAND_LINE = re.compile(r"^# direct train (?P<run>runs/\S+) --cfg (?P<cfg>\S+)(?P<rest>.*)$")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "projects",
        help="list the study projects (DIRECT YAMLs) or copy them into a folder",
        description="The DIRECT YAMLs of the studies ship with the package: fastMRI knee and brain (smug_knee, "
        "modl_brain, ...), the bundled demo data (demo/...) and make reproduce (reproduce/...).",
    )
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="name every shipped project with its description")
    listing.set_defaults(func=run_list)
    copy = actions.add_parser(
        "copy",
        help="write projects into a folder, their checkpoint paths pointing into it",
        description="Writes each named project to DIR/<name>.yaml. Checkpoint paths that a project reads from "
        "another run (runs/...) point into DIR/runs/, where the printed direct train commands write their runs.",
    )
    copy.add_argument(
        "names", nargs="+", metavar="NAME", help="a project name or a pattern in quotes ('*_knee', 'demo/*')"
    )
    copy.add_argument("directory", type=pathlib.Path, metavar="DIR", help="the folder to write into (created)")
    copy.add_argument("--force", action="store_true", help="overwrite YAML files that exist in DIR")
    copy.set_defaults(func=run_copy)


def shipped_projects() -> dict:
    """Every shipped project by name (``smug_knee``, ``demo/modl``, ...): ``projects/`` of the checkout or the wheel."""
    from smug_plugin.shipped import PROJECTS, shipped_folder, yaml_files

    return yaml_files(shipped_folder(PROJECTS))


def description(text: str) -> str:
    """The project's first comment line without the note on where it is generated (``smug on fastMRI knee``)."""
    first = text.splitlines()[0] if text else ""
    return first.removeprefix("#").split(" - generated", 1)[0].strip()


def select(names: list[str], available: list[str]) -> list[str]:
    """The projects the names or patterns match, in the order of ``available``.

    Raises
    ------
    ValueError
        A name or pattern that matches nothing.
    """
    chosen: set[str] = set()
    for name in names:
        matched = fnmatch.filter(available, name)
        if not matched:
            raise ValueError(
                f"no shipped project '{name}' (smug projects list names them; e.g. {', '.join(available[:3])})."
            )
        chosen.update(matched)
    return [name for name in available if name in chosen]


def relocated(text: str, directory: pathlib.Path, name: str) -> str:
    """The project's text with its checkpoint paths and its ``direct train`` command pointing into ``directory``."""
    lines = [
        f"# Copied by `smug projects copy` from smug-plugin's projects/{name}.yaml; runs/ points into {directory}."
    ]
    for line in text.splitlines():
        checkpoint = CHECKPOINT_LINE.match(line)
        command = COMMAND_LINE.match(line)
        if checkpoint:
            line = f"{checkpoint['key']}{directory / checkpoint['path']}"
        elif command:
            line = f"# direct train {directory / command['run']} --cfg {directory / (name + '.yaml')}{command['rest']}"
        lines.append(line)
    return "\n".join(lines) + "\n"


def copy_projects(names: list[str], directory: pathlib.Path, force: bool = False) -> list[pathlib.Path]:
    """Write the named projects into ``directory`` (see ``relocated``); the paths written.

    Raises
    ------
    ValueError, OSError
        An unknown name, a YAML that exists (without ``force``), a folder that cannot be written.
    """
    from smug_plugin.atomic import atomic_write_text

    projects = shipped_projects()
    chosen = select(names, list(projects))
    directory = directory.expanduser().resolve()
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{directory} is a file, not a folder.")
    targets = {name: directory / f"{name}.yaml" for name in chosen}
    existing = [str(path) for path in targets.values() if path.exists()]
    if existing and not force:
        raise ValueError(f"{', '.join(existing)} exist(s); use --force to overwrite.")
    for name, target in targets.items():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(target, relocated(projects[name].read_text(encoding="utf-8"), directory, name))
    return list(targets.values())


def run_list(args: argparse.Namespace) -> int:
    try:
        projects = shipped_projects()
    except OSError as error:
        print(f"smug projects: error: {error}", file=sys.stderr)
        return 2
    width = max(map(len, projects), default=0)
    for name, path in projects.items():
        print(f"{name:<{width}}  {description(path.read_text(encoding='utf-8'))}")
    return 0


def run_copy(args: argparse.Namespace) -> int:
    try:
        written = copy_projects(args.names, args.directory, args.force)
    except (OSError, ValueError) as error:
        print(f"smug projects copy: error: {error}", file=sys.stderr)
        return 2
    for path in written:
        command = next((line for line in path.read_text().splitlines() if line.startswith("# direct train ")), None)
        print(f"wrote {path}" + (f"\n  {command.removeprefix('# ')}" if command else ""))
    return 0
