"""The robustness card excerpt of the README: tiny demo data, MoDL and SMUG trained briefly with the test suite's
helpers (``tests/conftest.py``: the demo projects shrunk to 6 iterations, DIDN pre-training first), then
``smug evaluate --protocol auto``; prints the command it ran and MoDL's card.

    python scripts/card_example.py OUTPUT_DIR
"""

import argparse
import pathlib
import subprocess
import sys

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("output_dir", type=pathlib.Path)
    args = parser.parse_args()
    from conftest import PROJECTS_DIR, TINY_COILS, TINY_MATRIX, ProjectRuns, smug_command

    root = args.output_dir.resolve()
    data = root / "data"
    sizes = ["--matrix", *map(str, TINY_MATRIX), "--coils", str(TINY_COILS), "--slices-per-volume", "3"]
    volumes = ["--train-volumes", "2", "--val-volumes", "1", "--test-volumes", "2"]
    subprocess.run(smug_command("data", "demo", "--output-dir", str(data), *sizes, *volumes), check=True)
    runs = ProjectRuns(data, data, root / "work")
    models = []
    for name, project in (("MoDL", "modl"), ("SMUG", "smug")):
        run = runs.train(PROJECTS_DIR / "demo" / f"{project}.yaml")
        models += ["--model", f"{name}={run / 'config.yaml'}:{runs.checkpoint(run)}"]
    evaluate = [
        "evaluate",
        *models,
        "--protocol",
        "auto",
        "--data-root",
        str(data / "test"),
        "--output-dir",
        str(root / "auto"),
        "--threads",
        "1",
        "--no-progress",
    ]
    print("$ smug " + " ".join(evaluate), flush=True)
    subprocess.run(smug_command(*evaluate), check=True)
    print((root / "auto" / "cards" / "MoDL.md").read_text())


if __name__ == "__main__":
    main()
