"""Build script: everything is declared in setup.cfg except the one file setuptools cannot place by itself.

The import hook is activated by ``smug_plugin_hook.pth`` at the root of site-packages (a ``.pth`` inside a
package is never read). Regular wheels get it through ``build_py``; editable installs through the editable
wheel's strategy, which otherwise only writes setuptools' own ``__editable__`` path file.
"""

from pathlib import Path

from setuptools import setup
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


setup(cmdclass={"build_py": BuildPyWithHook, "editable_wheel": EditableWheelWithHook})
