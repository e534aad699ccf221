"""Build script: everything is declared in setup.cfg except the packages with their data and the one file setuptools
cannot place by itself.

Packages: ``smug_plugin*``, and the repository's top-level ``configs/`` (robustness protocols) and ``projects/``
(DIRECT YAMLs of the studies) mapped into it as ``smug_plugin/configs`` and ``smug_plugin/projects``: one copy in the
tree, package data in the wheel (``smug_plugin.shipped`` finds them in either place). setup.cfg cannot combine
``find:`` with such a mapping.

The import hook is activated by ``smug_plugin_hook.pth`` at the root of site-packages (a ``.pth`` inside a
package is never read). Regular wheels get it through ``build_py``; editable installs through the editable
wheel's strategy, which otherwise only writes setuptools' own ``__editable__`` path file.
"""

from pathlib import Path

from setuptools import find_namespace_packages, find_packages, setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

PTH_NAME = "smug_plugin_hook.pth"
PTH_TEXT = (Path(__file__).parent / "smug_plugin" / PTH_NAME).read_text()


class BuildPyWithHook(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / PTH_NAME
        target.write_text(PTH_TEXT)


class _StrategyWithHook:
    def __init__(self, strategy):
        self._strategy = strategy

    def __call__(self, wheel, files, mapping):
        self._strategy(wheel, files, mapping)
        wheel.writestr(PTH_NAME, PTH_TEXT.encode())

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self._strategy.__exit__(*exc)


class EditableWheelWithHook(editable_wheel):
    def _select_strategy(self, name, tag, build_lib):
        return _StrategyWithHook(super()._select_strategy(name, tag, build_lib))


# Top-level folders shipped inside the package as data (YAML only, no __init__.py): package name -> folder.
MAPPED_FOLDERS = {"smug_plugin.configs": "configs", "smug_plugin.projects": "projects"}
# Their sub-folders are packages too (setuptools would otherwise warn that it ignores them): configs/robustness, ...
MAPPED_PACKAGES = [
    f"{package}.{sub}" if sub else package
    for package, folder in MAPPED_FOLDERS.items()
    for sub in ["", *find_namespace_packages(where=str(Path(__file__).parent / folder))]
]

setup(
    packages=[*find_packages(include=["smug_plugin", "smug_plugin.*"]), *MAPPED_PACKAGES],
    package_dir=MAPPED_FOLDERS,
    # Here rather than in setup.cfg: setup()'s package_data would replace, not extend, setup.cfg's.
    package_data={"smug_plugin.data.assets": ["*.npz", "*.txt", "*.md"], **dict.fromkeys(MAPPED_PACKAGES, ["*.yaml"])},
    cmdclass={"build_py": BuildPyWithHook, "editable_wheel": EditableWheelWithHook},
)
