"""Robustness evaluation of DIRECT-trained reconstruction models (``smug evaluate``).

Attacks and noise act on DIRECT's normalised, masked multi-coil k-space (``masked_kspace``) of batches produced by
DIRECT's own inference transforms, so every model, plugin or native, is evaluated on exactly the data it would see in
``direct predict``.

Sub-packages, each importing only from the ones before it (``tests/test_layering.py``; docs/architecture.md):
`reconstructors` (the one model interface and its adapters) -> `attacks` -> `defenses` -> `run` (protocol, loop,
records, ranks) -> `studies` -> `reports` (from the records only). Shared below them: `threat_model`, `metrics`,
`seeds`. `validation` is the one module the training engines import. Every call of a private DIRECT function is in
`smug_plugin.direct_adapter`.
"""
