"""SMUG (smoothed unrolling) models and robustness evaluation for the DIRECT MRI reconstruction toolkit.

Kept free of imports: ``smug_plugin.direct_hook`` is imported by a ``.pth`` file at every interpreter start.
"""

__version__ = "0.1.0"
