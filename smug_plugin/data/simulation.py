"""Physics of the simulated multi-coil Cartesian acquisition.

A real magnitude image on a fine 0.5 mm grid gets a smooth synthetic phase and is weighted by smooth receive-coil
sensitivities (Biot-Savart field of rectangular loops on a ring around the head). Each coil image is Fourier
transformed on the fine grid and its k-space is cropped centrally to the target matrix, as a scanner samples a
finite k-space window of a continuous object. The data are therefore not produced by the discrete model
(mask . FFT . S on the target grid) that reconstructs them, which avoids the "inverse crime". Complex Gaussian
noise is added last, in k-space.

All FFTs are centred and orthonormal like DIRECT's ``fft2``/``ifft2`` (:mod:`smug_plugin.data.fourier`): image axes
(rows, columns) = (H, W), the last axis W is the phase-encoding direction (patient left-right for the bundled axial
slices).
"""

import dataclasses

import numpy as np

from smug_plugin.data.fourier import fft2c

# Corner order (tangent sign, z sign) that walks once around a rectangular loop.
LOOP_CORNERS = ((-1, -1), (1, -1), (1, 1), (-1, 1))


@dataclasses.dataclass(frozen=True)
class Geometry:
    """Field of view and grids of the simulated acquisition.

    Parameters
    ----------
    fov_mm : tuple[float, float]
        Field of view (rows, columns) in mm.
    matrix : tuple[int, int]
        Target (acquired) matrix (H, W).
    fine_spacing_mm : tuple[float, float]
        Pixel spacing of the fine simulation grid (that of the source image).
    """

    fov_mm: tuple[float, float] = (192.0, 160.0)
    matrix: tuple[int, int] = (96, 80)
    fine_spacing_mm: tuple[float, float] = (0.5, 0.5)

    @property
    def fine_shape(self) -> tuple[int, int]:
        """Shape of the fine simulation grid covering the field of view."""
        return tuple(int(round(f / s)) for f, s in zip(self.fov_mm, self.fine_spacing_mm))

    @property
    def spacing_mm(self) -> tuple[float, float]:
        """Pixel spacing of the target grid."""
        return tuple(f / m for f, m in zip(self.fov_mm, self.matrix))

    def validate(self, image_shape: tuple[int, int] | None = None) -> None:
        """Raise ValueError, naming the fix, if the matrix or the source image do not fit the field of view."""
        if any(f <= 0 for f in self.fov_mm):
            raise ValueError(f"field of view {self.fov_mm} mm must be positive (e.g. --fov 192 160).")
        fine = self.fine_shape
        if any(m < 2 for m in self.matrix):
            raise ValueError(f"matrix {self.matrix} is too small: use at least 2 x 2 (e.g. --matrix 96 80).")
        if any(m > f for m, f in zip(self.matrix, fine)):
            raise ValueError(
                f"matrix {self.matrix} exceeds the fine simulation grid {fine} (FOV {self.fov_mm} mm at "
                f"{self.fine_spacing_mm} mm): the simulation can only crop k-space, not extend it. "
                f"Use --matrix of at most {fine[0]} {fine[1]}, or a larger --fov."
            )
        if image_shape is not None and any(i > f for i, f in zip(image_shape, fine)):
            needed = [i * s for i, s in zip(image_shape, self.fine_spacing_mm)]
            raise ValueError(
                f"field of view {self.fov_mm} mm is smaller than the head ({needed[0]:g} x {needed[1]:g} mm): "
                f"use --fov of at least {needed[0]:g} {needed[1]:g}."
            )


def _grid_mm(shape: tuple[int, int], spacing_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (mm) with the origin at the centred-FFT origin (index n // 2)."""
    u = (np.arange(shape[0]) - shape[0] // 2) * spacing_mm[0]
    v = (np.arange(shape[1]) - shape[1] // 2) * spacing_mm[1]
    return u, v


def pad_to_shape(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Zero-pad a 2D image centrally to ``shape`` (the air around the head inside the field of view)."""
    pad = [((s - i) // 2, s - i - (s - i) // 2) for i, s in zip(image.shape, shape)]
    if any(p[0] < 0 for p in pad):
        raise ValueError(f"image {image.shape} is larger than the target shape {shape}.")
    return np.pad(image, pad)


def smooth_phase(
    shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    z_mm: float,
    rng: np.random.Generator,
    *,
    polynomial_scale: float = 1.0,
    field_rms: float = 0.4,
    max_cycles: int = 3,
) -> np.ndarray:
    """Smooth synthetic image phase (radians), as from B0 inhomogeneity and receive-chain offsets.

    A second-order polynomial in (u, v, z) plus a low-pass random field made of the lowest ``max_cycles``
    Fourier modes per axis. Drawing the same ``rng`` state for every slice of a volume gives one 3D-consistent
    phase model for that volume (the polynomial carries the z dependence).

    Parameters
    ----------
    shape, spacing_mm : tuple
        Grid of the phase map.
    z_mm : float
        Slice position relative to the volume centre.
    rng : np.random.Generator
        Source of the random coefficients.
    polynomial_scale : float
        Typical phase (rad) of the polynomial terms at the edge of a 100 mm radius.
    field_rms : float
        Root-mean-square (rad) of the low-pass random field.
    max_cycles : int
        Highest spatial frequency (cycles per field of view) of the random field.

    Returns
    -------
    np.ndarray
        (H, W) float64 phase.
    """
    u, v = _grid_mm(shape, spacing_mm)
    uu, vv = np.meshgrid(u / 100.0, v / 100.0, indexing="ij")
    zz = z_mm / 100.0
    coeffs = rng.normal(0.0, polynomial_scale, size=9) * np.array([3.0, 1, 1, 1, 0.5, 0.5, 0.5, 0.5, 0.5])
    terms = [1.0, uu, vv, zz, uu * uu, vv * vv, uu * vv, uu * zz, vv * zz]
    phase = sum(c * t for c, t in zip(coeffs, terms))

    # Random field = Re(E_u C E_v^T): a separable sum of Fourier modes with a Gaussian spectrum.
    cycles = np.arange(-max_cycles, max_cycles + 1)
    spectrum = np.exp(-(cycles[:, None] ** 2 + cycles[None, :] ** 2) / (2 * (max_cycles / 2) ** 2))
    c = (rng.normal(size=spectrum.shape) + 1j * rng.normal(size=spectrum.shape)) * spectrum
    e_u = np.exp(2j * np.pi * np.outer(np.arange(shape[0]) / shape[0], cycles))
    e_v = np.exp(2j * np.pi * np.outer(np.arange(shape[1]) / shape[1], cycles))
    field = (e_u @ c @ e_v.T).real
    field *= field_rms / max(field.std(), 1e-12)
    return phase + field


def _segment_field(points: np.ndarray, start: np.ndarray, end: np.ndarray) -> np.ndarray:
    """Biot-Savart field (up to mu0 I / 4 pi) of a straight wire from ``start`` to ``end`` at ``points`` (3, N)."""
    a = start[:, None] - points
    b = end[:, None] - points
    na = np.sqrt((a * a).sum(axis=0))
    nb = np.sqrt((b * b).sum(axis=0))
    # Exact closed form for a finite segment; the small constant keeps points on the wire finite.
    scale = (na + nb) / (na * nb * (na * nb + (a * b).sum(axis=0)) + 1e-9)
    # Only the transverse (u, v) components of a x b matter for reception.
    return np.stack([(a[1] * b[2] - a[2] * b[1]) * scale, (a[2] * b[0] - a[0] * b[2]) * scale])


def coil_sensitivities(
    shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    z_mm: float,
    num_coils: int,
    rng: np.random.Generator,
    *,
    ring_semi_axes_mm: tuple[float, float] = (120.0, 102.0),
    loop_length_mm: float = 160.0,
    max_shift_mm: float = 5.0,
    max_rotation_deg: float = 10.0,
) -> np.ndarray:
    """Receive sensitivities of rectangular loop coils on an elliptical ring around the head.

    Each loop lies in the plane tangent to the ring and parallel to z; its width is the ring perimeter divided by
    the number of coils (neighbours touch, as in a head array), its length ``loop_length_mm`` along z. The receive
    sensitivity is the transverse Biot-Savart field B_u - i B_v of the loop times a random constant phase
    (cable and preamplifier delays). The ring gets a random shift and rotation per volume (head positioning).
    Maps are scaled so that their root-sum-of-squares is 1 at the ring centre, so the periphery is brighter than
    the centre, as with real arrays.

    Parameters
    ----------
    shape, spacing_mm : tuple
        Grid of the maps; the in-plane origin is the ring centre (before the random shift).
    z_mm : float
        Slice position relative to the ring centre.
    num_coils : int
        Number of loops.
    rng : np.random.Generator
        Random positioning and coil phases; reuse the same state for all slices of a volume.
    ring_semi_axes_mm : tuple[float, float]
        Semi-axes (rows, columns) of the ring the loops sit on.
    loop_length_mm : float
        Length of each loop along z.
    max_shift_mm, max_rotation_deg : float
        Range of the random in-plane shift and rotation of the ring.

    Returns
    -------
    np.ndarray
        (num_coils, H, W) complex128 sensitivities.
    """
    if num_coils < 1:
        raise ValueError(f"num_coils must be at least 1, got {num_coils}.")
    shift = rng.uniform(-max_shift_mm, max_shift_mm, size=2)
    rotation = np.deg2rad(rng.uniform(-max_rotation_deg, max_rotation_deg))
    coil_phase = rng.uniform(0, 2 * np.pi, size=num_coils)

    a, b = ring_semi_axes_mm
    perimeter = np.pi * (3 * (a + b) - np.sqrt((3 * a + b) * (a + 3 * b)))  # Ramanujan's approximation
    half_width, half_length = perimeter / num_coils / 2, loop_length_mm / 2
    u, v = _grid_mm(shape, spacing_mm)
    uu, vv = np.meshgrid(u, v, indexing="ij")
    # Last point: the ring centre, for the normalisation.
    points = np.stack([np.append(uu, shift[0]), np.append(vv, shift[1]), np.append(np.full(uu.size, z_mm), 0.0)])

    rot = np.array([[np.cos(rotation), -np.sin(rotation)], [np.sin(rotation), np.cos(rotation)]])
    z_hat = np.array([0.0, 0.0, 1.0])
    maps = np.empty((num_coils, points.shape[1]), dtype=np.complex128)
    for coil in range(num_coils):
        theta = 2 * np.pi * coil / num_coils
        position = np.array([*(rot @ [a * np.cos(theta), b * np.sin(theta)] + shift), 0.0])
        tangent = np.array([*(rot @ [-a * np.sin(theta), b * np.cos(theta)]), 0.0])
        tangent /= np.linalg.norm(tangent)
        corners = [position + su * half_width * tangent + sz * half_length * z_hat for su, sz in LOOP_CORNERS]
        field = sum(_segment_field(points, corners[i], corners[(i + 1) % 4]) for i in range(4))
        maps[coil] = (field[0] - 1j * field[1]) * np.exp(1j * coil_phase[coil])

    maps /= np.sqrt((np.abs(maps[:, -1]) ** 2).sum())
    return maps[:, :-1].reshape(num_coils, *shape)


def crop_kspace(kspace: np.ndarray, matrix: tuple[int, int]) -> np.ndarray:
    """Keep the central ``matrix`` of a centred k-space, rescaled so image intensities are preserved.

    With orthonormal FFTs, an image of constant value 1 has DC value sqrt(N); cropping from N_fine to N_target
    samples would scale the reconstructed image by sqrt(N_fine / N_target) without the correction.
    """
    h, w = kspace.shape[-2:]
    top, left = h // 2 - matrix[0] // 2, w // 2 - matrix[1] // 2
    cropped = kspace[..., top : top + matrix[0], left : left + matrix[1]]
    return cropped * np.sqrt(matrix[0] * matrix[1] / (h * w))


def simulate_kspace(
    magnitude: np.ndarray,
    phase: np.ndarray,
    sensitivities: np.ndarray,
    matrix: tuple[int, int],
    noise_std: float,
    rng: np.random.Generator,
) -> np.ndarray:
    """Acquire one slice: coil images on the fine grid, FFT, central k-space crop, complex Gaussian noise.

    Parameters
    ----------
    magnitude, phase : np.ndarray
        (H_fine, W_fine) object magnitude and phase (rad).
    sensitivities : np.ndarray
        (coils, H_fine, W_fine) complex coil sensitivities.
    matrix : tuple[int, int]
        Target k-space size (H, W).
    noise_std : float
        Standard deviation of the complex noise per k-space sample (each of real and imaginary part gets
        ``noise_std / sqrt(2)``); with orthonormal FFTs this is also the per-coil image noise.
    rng : np.random.Generator
        Source of the noise.

    Returns
    -------
    np.ndarray
        (coils, H, W) complex64 centred k-space.
    """
    coil_images = sensitivities * (magnitude * np.exp(1j * phase))[None]
    kspace = crop_kspace(fft2c(coil_images), matrix)
    noise = rng.normal(size=(2, *kspace.shape)) * (noise_std / np.sqrt(2))
    return (kspace + noise[0] + 1j * noise[1]).astype(np.complex64)
