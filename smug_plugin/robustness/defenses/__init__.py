"""Test-time defenses: reconstructors that wrap another model (``--model NAME=defense.yaml``), one module each.

`cyclic_consistency`: the training-free cyclic-consistency defense (variants `published`, `reduced`), with the BPDA
gradient for adaptive attacks and, under `defense_gradient: unrolled`, the gradient through its purification.
"""
