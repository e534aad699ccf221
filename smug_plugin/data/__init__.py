"""Demo data: the bundled Colin27 T1 subset and its simulation into fastMRI-style multi-coil k-space.

``colin27`` loads the bundled asset, ``simulation`` holds the acquisition physics, ``fastmri_h5`` writes the
fastMRI multicoil h5 layout that DIRECT's ``FastMRI`` dataset reads, and ``demo`` ties them into
:func:`smug_plugin.data.demo.make_demo_dataset`. Submodules are imported on use to keep this package light.
"""
