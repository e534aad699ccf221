"""Robustness evaluation of DIRECT-trained reconstruction models (``smug evaluate``).

Attacks and noise act on DIRECT's normalised, masked multi-coil k-space (``masked_kspace``) of batches produced by
DIRECT's own inference transforms, so every model, plugin or native, is evaluated on exactly the data it would see in
``direct predict``.
"""
