"""Robustness evaluation of DIRECT-trained reconstruction models (``smug evaluate``).

Attacks and noise act on DIRECT's normalised, masked multi-coil k-space (``masked_kspace``) of batches produced by
DIRECT's own inference transforms, so every model, plugin or native, is evaluated on exactly the data it would see in
``direct predict``.

Layers, each importing only the ones below it: ``cli.evaluate`` (holding the `output_lock`) -> `loop` -> `attacks`,
`reconstructors`, `batches`, `records`, `seeds`, `protocol` (with `sweeps`); `reports` read the records and never
import the loop. Every call of a private DIRECT function is in `direct_adapter`.
"""
