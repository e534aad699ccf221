"""The one model interface of the evaluation and its adapters: perturbed batch + test-time settings -> image.

`interface` (the `Reconstructor` ABC, DIRECT-native and plugin engines, the threat model's normalisation),
`direct_engines` (engines from a DIRECT YAML + checkpoint as ``direct predict`` builds them), `cs_baseline` (the
classical CS baseline of `smug_plugin.cs` on a DIRECT model's operator), `names` (display names that reach the file
system) and `specs` (the ``--model`` specs and the models they load, defended ones included).
"""
