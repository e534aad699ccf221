"""The report of the cyclic-consistency defense study from its `smug evaluate` runs (`make beyond`, step 5).

    python scripts/defense_report.py --run MoDL=results/demo/beyond/defense_modl [--run NAME=RUN ...] \
        --output-dir results/demo/beyond/defense

Each run holds one model and the same model behind the defense under the perturbations clean, pgd (white-box; on the
defended model the adaptive BPDA attack) and pgd_blind (transferred from the undefended model). Writes README.md
(the table), defense.json (every number, per-slice PSNR included) and defense.png (PSNR per model and condition, and
the gains with their 95 % intervals) into the output folder (`smug_plugin.robustness.reports.defense_report`).
"""

import argparse
import pathlib
import sys

from smug_plugin.robustness.reports.defense_report import write_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=FOLDER of a `smug evaluate` run")
    parser.add_argument("--output-dir", type=pathlib.Path, required=True)
    args = parser.parse_args()
    runs = {}
    for entry in args.run:
        name, separator, folder = entry.partition("=")
        if not separator or not name or not (pathlib.Path(folder) / "robustness.json").is_file():
            parser.error(f"--run {entry!r}: expected NAME=FOLDER of a finished `smug evaluate` run")
        runs[name] = pathlib.Path(folder)
    write_report(runs, args.output_dir)
    print((args.output_dir / "README.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
