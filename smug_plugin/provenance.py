"""Where a number came from: the machine and the package versions, written next to every result and timing."""

import pathlib
import platform
from importlib import metadata

PACKAGES = ("smug-plugin", "direct-recon", "torch", "numpy", "fastmri", "scikit-image", "omegaconf")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else the platform's processor string."""
    cpuinfo = pathlib.Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    return names[0] if names else platform.processor() or "unknown"


def package_versions() -> dict[str, str | None]:
    """Python and the versions of the packages a result depends on (None where one is not installed)."""
    out: dict[str, str | None] = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            out[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            out[package] = None
    return out
