"""`smug projects`: the shipped study projects listed and copied into a folder, their checkpoint paths pointing into
it; the shipped folders found in the checkout (tests/test_wheel.py: in an installed wheel)."""

import pathlib

import yaml
from conftest import PROJECTS_DIR, REPO_ROOT

from smug_plugin.cli.main import main
from smug_plugin.cli.projects import shipped_projects
from smug_plugin.shipped import CONFIGS, shipped_folder


def test_the_shipped_folders_are_the_checkouts_top_level_ones():
    assert pathlib.Path(str(shipped_folder(CONFIGS))).resolve() == REPO_ROOT / "configs"
    expected = {p.relative_to(PROJECTS_DIR).with_suffix("").as_posix() for p in PROJECTS_DIR.rglob("*.yaml")}
    assert set(shipped_projects()) == expected
    assert {"smug_knee", "smug_brain", "didn_pretrain_knee", "demo/smug"} <= expected


def test_list_names_every_project_with_its_description(capsys):
    assert main(["projects", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == len(shipped_projects())
    [knee] = [line for line in lines if line.split()[0] == "smug_knee"]
    assert knee.split(None, 1)[1] == "smug on fastMRI knee"


def test_copy_points_every_checkpoint_and_the_command_into_the_folder(tmp_path, capsys):
    out = tmp_path / "study"
    assert main(["projects", "copy", "smug_knee", "rs_e2e_*", "demo/modl", str(out)]) == 0
    printed = capsys.readouterr().out
    written = sorted(p.relative_to(out).as_posix() for p in out.rglob("*.yaml"))
    assert written == ["demo/modl.yaml", "rs_e2e_brain.yaml", "rs_e2e_knee.yaml", "smug_knee.yaml"]
    assert f"direct train {out}/runs/smug_knee --cfg {out}/smug_knee.yaml" in printed

    knee = yaml.safe_load((out / "smug_knee.yaml").read_text())
    original = yaml.safe_load((PROJECTS_DIR / "smug_knee.yaml").read_text())
    assert knee["model"]["denoiser_checkpoint"] == str(out / original["model"]["denoiser_checkpoint"])
    # Nothing else changes.
    knee["model"]["denoiser_checkpoint"] = original["model"]["denoiser_checkpoint"]
    assert knee == original
    teacher = yaml.safe_load((out / "rs_e2e_knee.yaml").read_text())["model"]["rs_e2e_teacher_checkpoint"]
    assert teacher.startswith(f"{out}/runs/modl_knee/")
    demo = yaml.safe_load((out / "demo" / "modl.yaml").read_text())["model"]["denoiser_checkpoint"]
    assert demo.startswith(f"{out}/runs/demo/didn_pretrain/")


def test_copy_refuses_unknown_names_and_existing_files(tmp_path, capsys):
    assert main(["projects", "copy", "smug_kne", str(tmp_path)]) == 2
    assert "no shipped project 'smug_kne'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    assert main(["projects", "copy", "modl_knee", str(tmp_path)]) == 0
    assert main(["projects", "copy", "modl_knee", str(tmp_path)]) == 2
    assert "use --force" in capsys.readouterr().err
    assert main(["projects", "copy", "modl_knee", str(tmp_path), "--force"]) == 0


def test_every_option_of_every_command_has_help():
    import argparse

    from smug_plugin.cli.main import build_parser

    commands = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)][0].choices
    missing = []
    for name, parser in commands.items():
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parsers = [(name, parser)] + [(f"{name} {n}", p) for a in nested for n, p in a.choices.items()]
        for label, each in parsers:
            missing += [f"{label} {a.option_strings[0]}" for a in each._actions if a.option_strings and not a.help]
    assert missing == []
