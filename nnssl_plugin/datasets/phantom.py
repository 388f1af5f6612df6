"""Synthetic abdominal-CT phantom: the demo and test data of the plugin (docs/ARCHITECTURE.md, "Evaluation and demo
data").

Every case is a torso cross-section stacked along z: skin, subcutaneous fat, a muscle wall, a spine with
vertebral bodies, discs and posterior elements, lower ribs, unlabelled bowel loops and the 13 BTCV organs placed
with anatomical priors (liver right-anterior-superior, spleen left-posterior, kidneys paravertebral and inferior,
aorta left-anterior of the spine, ...). Anatomy is defined in millimetres and sampled on a per-case grid whose
spacing is anisotropic (z coarser than in-plane) and jittered per case, so nnU-Net's resampling is exercised.

Between cases, anatomy varies smoothly: body size, organ centres (a few mm), organ sizes (±15 %), orientation
(±10°), and organ outlines (random low-frequency shape fields). Images carry organ texture, a smooth bias field,
partial-volume blur and Gaussian noise (σ 12–22 HU).

Intensity ranges deliberately overlap, so that no per-voxel threshold can segment the organs (a test measures
this with the best interval thresholds): with a per-case contrast factor and per-organ jitter,
- liver (≈105 HU), spleen (≈115), pancreas (≈95), IVC (≈130) and the kidney medulla (≈120) overlap each other;
- aorta (≈165), portal/splenic vein (≈150) and the kidney cortex (≈165) overlap each other;
- gallbladder bile (≈12), stomach content (≈18), bowel (≈30) and CSF (≈15) overlap each other;
- adrenal glands (≈50), esophagus (≈45), stomach wall (≈55) and muscle (≈50) overlap each other.
Together with noise σ ≥ 12 HU this leaves organ identity to shape and context, as in real CT.

It is test and demo data: it says nothing about real CT.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

# BTCV label values and names (Synapse multi-organ segmentation, 13 organs).
BTCV_LABELS: dict[str, int] = {
    "background": 0,
    "spleen": 1,
    "right_kidney": 2,
    "left_kidney": 3,
    "gallbladder": 4,
    "esophagus": 5,
    "liver": 6,
    "stomach": 7,
    "aorta": 8,
    "inferior_vena_cava": 9,
    "portal_vein_and_splenic_vein": 10,
    "pancreas": 11,
    "right_adrenal_gland": 12,
    "left_adrenal_gland": 13,
}

AIR_HU = -1000.0
FAT_HU = -95.0
MUSCLE_HU = 50.0


@dataclass(frozen=True)
class PhantomConfig:
    """Geometry and image-quality settings of one phantom dataset (z, y, x order everywhere)."""

    shape: tuple[int, int, int] = (32, 96, 96)  # voxels; small enough for 2-core CPU tests
    spacing: tuple[float, float, float] = (7.0, 3.5, 3.5)  # mm; z/in-plane ratio 2 makes nnU-Net plan anisotropic strides
    spacing_jitter: float = 0.05  # relative per-case spacing change, so cases need resampling like real scans
    noise_hu: tuple[float, float] = (12.0, 22.0)  # per-case range of the Gaussian noise σ
    blur_voxels: float = 0.6  # in-plane σ of the partial-volume blur, in voxels


def _rotation_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    # acts on (y, x) pairs; z untouched
    return np.array([[c, -s], [s, c]])


class _Case:
    """Builds one case: coordinates in mm, a label map, and an HU image painted layer by layer."""

    def __init__(self, rng: np.random.Generator, config: PhantomConfig):
        self.rng = rng
        jitter = 1.0 + config.spacing_jitter * rng.uniform(-1.0, 1.0, size=3)
        jitter[2] = jitter[1]  # in-plane spacing is isotropic, as in CT
        self.spacing = tuple(float(s * j) for s, j in zip(config.spacing, jitter))
        nz, ny, nx = config.shape
        z = (np.arange(nz) + 0.5) * self.spacing[0]
        y = (np.arange(ny) - ny / 2 + 0.5) * self.spacing[1]
        x = (np.arange(nx) - nx / 2 + 0.5) * self.spacing[2]
        self.length_z = nz * self.spacing[0]
        # shift of the field of view along z (mm), so organs enter and leave the scan at different heights
        z = z + rng.uniform(-0.06, 0.06) * self.length_z
        self.z, self.y, self.x = (a.astype(np.float32) for a in np.meshgrid(z, y, x, indexing="ij", sparse=True))
        self.shape = config.shape
        self.config = config
        self.label = np.zeros(config.shape, dtype=np.uint8)
        self.hu = np.full(config.shape, AIR_HU, dtype=np.float32)
        self.contrast = rng.uniform(0.85, 1.15)  # enhancement strength of this scan (contrast timing)
        self._textures: dict[float, list[np.ndarray]] = {}

    # ----- random helpers -------------------------------------------------------------------------------------
    def jitter(self, value: float, sd: float) -> float:
        return float(value + self.rng.normal(0.0, sd))

    def enhanced(self, base_hu: float, sd: float = 8.0) -> float:
        """HU of an enhancing tissue: contrast scales the enhancement above soft tissue (40 HU)."""
        return float(40.0 + (base_hu - 40.0) * self.contrast + self.rng.normal(0.0, sd))

    def shape_field(self, u: list[np.ndarray], amplitude: float) -> np.ndarray:
        """Smooth random outline perturbation: a few random low-frequency waves in organ coordinates."""
        field = 0.0
        for _ in range(4):
            freq = self.rng.normal(0.0, 1.0, size=3)
            freq *= self.rng.uniform(1.5, 3.0) / (np.linalg.norm(freq) + 1e-8)
            phase = self.rng.uniform(0, 2 * math.pi)
            field = field + np.sin(freq[0] * u[0] + freq[1] * u[1] + freq[2] * u[2] + phase)
        return amplitude * field / 2.0

    def texture(self, sd_hu: float, scale_vox: float = 1.5) -> np.ndarray:
        """Smooth zero-mean random field with standard deviation `sd_hu`, correlation length ~`scale_vox`."""
        key = float(scale_vox)
        if key not in self._textures:  # a few fields per case serve all tissues (they barely overlap)
            fields = []
            for _ in range(3):
                noise = self.rng.normal(0.0, 1.0, size=self.shape).astype(np.float32)
                smooth = ndimage.gaussian_filter(noise, sigma=(scale_vox * 0.5, scale_vox, scale_vox))
                smooth -= smooth.mean()
                fields.append(smooth / (smooth.std() + 1e-6))
            self._textures[key] = fields
        field = self._textures[key][int(self.rng.integers(3))]
        return field * (sd_hu * float(self.rng.choice([-1.0, 1.0])))

    # ----- shapes (all coordinates in mm) ---------------------------------------------------------------------
    def t_to_z(self, t: float) -> float:
        """Fraction of the nominal scan length (0 = inferior end, 1 = superior end) to mm."""
        return t * self.length_z

    def ellipsoid(self, center, radii, angle_deg=0.0, irregularity=0.15) -> np.ndarray:
        cz, cy, cx = center
        rz, ry, rx = radii
        # evaluate only inside a bounding box of the (perturbed) ellipsoid: most of the volume is far from it
        reach = (1.0 + 2.0 * irregularity) * max(ry, rx)
        box = tuple(self._span(axis, lo, hi) for axis, (lo, hi) in
                    enumerate(((cz - (1.0 + 2.0 * irregularity) * rz, cz + (1.0 + 2.0 * irregularity) * rz),
                               (cy - reach, cy + reach), (cx - reach, cx + reach))))
        z, y, x = self.z[box[0], :, :], self.y[:, box[1], :], self.x[:, :, box[2]]
        rot = _rotation_z(math.radians(angle_deg))
        dy, dx = y - cy, x - cx
        uy = (rot[0, 0] * dy + rot[1, 0] * dx) / ry
        ux = (rot[0, 1] * dy + rot[1, 1] * dx) / rx
        uz = (z - cz) / rz
        dist = np.sqrt(uz ** 2 + uy ** 2 + ux ** 2)
        mask = np.zeros(self.shape, dtype=bool)
        mask[box] = dist < 1.0 + self.shape_field([uz, uy, ux], irregularity)
        return mask

    def _span(self, axis: int, lo: float, hi: float) -> slice:
        coords = (self.z, self.y, self.x)[axis].ravel()
        return slice(int(np.searchsorted(coords, lo)), int(np.searchsorted(coords, hi, side="right")))

    def tube(self, points, radius, irregularity=0.1) -> np.ndarray:
        """Voxels within `radius` mm of a polyline through `points` (z, y, x mm)."""
        dist = np.full(self.shape, np.inf, dtype=np.float32)
        pz, py, px = (np.broadcast_to(a, self.shape) for a in (self.z, self.y, self.x))
        for a, b in zip(points[:-1], points[1:]):
            a, b = np.asarray(a, float), np.asarray(b, float)
            ab = b - a
            t = ((pz - a[0]) * ab[0] + (py - a[1]) * ab[1] + (px - a[2]) * ab[2]) / float(ab @ ab)
            t = np.clip(t, 0.0, 1.0)
            d = np.sqrt((pz - a[0] - t * ab[0]) ** 2 + (py - a[1] - t * ab[1]) ** 2 + (px - a[2] - t * ab[2]) ** 2)
            dist = np.minimum(dist, d)
        u = [pz / 40.0, py / 40.0, px / 40.0]
        return dist < radius * (1.0 + self.shape_field(u, irregularity))

    def vertical_tube(self, cy, cx, ry, rx, z_range=(-np.inf, np.inf), drift_mm=3.0) -> np.ndarray:
        phase = self.rng.uniform(0, 2 * math.pi, size=2)
        wy = cy + drift_mm * np.sin(self.z / 60.0 + phase[0])
        wx = cx + drift_mm * np.sin(self.z / 70.0 + phase[1])
        inside = ((self.y - wy) / ry) ** 2 + ((self.x - wx) / rx) ** 2 < 1.0
        return inside & (self.z >= z_range[0]) & (self.z <= z_range[1])

    # ----- painting ---------------------------------------------------------------------------------------------
    def paint(self, mask: np.ndarray, hu, label: int | None = None, where: np.ndarray | None = None) -> np.ndarray:
        mask = np.broadcast_to(mask, self.shape)
        if where is not None:
            mask = mask & where
        self.hu[mask] = hu if np.isscalar(hu) else np.broadcast_to(hu, self.shape)[mask]
        if label is not None:
            self.label[mask] = label
        return mask


def _build_case(rng: np.random.Generator, config: PhantomConfig) -> _Case:
    c = _Case(rng, config)
    L = BTCV_LABELS
    zmm = c.t_to_z

    # --- body wall ---------------------------------------------------------------------------------------------
    ax, ay = c.jitter(135.0, 8.0), c.jitter(100.0, 6.0)  # body semi-axes (lateral, antero-posterior)
    taper = 1.0 + 0.04 * np.sin(c.z / c.length_z * math.pi)
    body = ((c.x / (ax * taper)) ** 2 + ((c.y - 5.0) / (ay * taper)) ** 2) < 1.0
    fat_thickness = c.jitter(18.0, 4.0)
    inner_ax, inner_ay = ax - fat_thickness, ay - fat_thickness
    under_fat = ((c.x / (inner_ax * taper)) ** 2 + ((c.y - 5.0) / (inner_ay * taper)) ** 2) < 1.0
    wall = c.jitter(10.0, 2.0)
    cavity = ((c.x / ((inner_ax - wall) * taper)) ** 2 + ((c.y - 5.0) / ((inner_ay - wall) * taper)) ** 2) < 1.0
    c.paint(body, FAT_HU + c.texture(8.0))
    c.paint(under_fat, c.jitter(MUSCLE_HU, 5.0) + c.texture(6.0))
    c.paint(cavity, FAT_HU + 10.0 + c.texture(10.0))  # intra-abdominal fat
    cavity = np.broadcast_to(cavity, c.shape)

    # --- spine, paraspinal muscles, ribs -------------------------------------------------------------------------
    vy = c.jitter(45.0, 3.0)  # vertebral body centre, posterior of the cavity centre
    for side in (-1.0, 1.0):
        c.paint(c.ellipsoid((zmm(0.5), vy + 35.0, side * 28.0), (1e4, 22.0, 20.0), irregularity=0.05),
                c.jitter(MUSCLE_HU, 5.0) + c.texture(6.0), where=under_fat)
    vertebral = c.vertical_tube(vy, 0.0, 17.0, 19.0, drift_mm=1.0)
    spongy = c.vertical_tube(vy, 0.0, 14.0, 16.0, drift_mm=1.0)
    disc_period, disc_phase = c.jitter(32.0, 2.0), c.rng.uniform(0, 32.0)
    disc = (np.mod(c.z + disc_phase, disc_period) < 6.0) & vertebral
    canal = c.vertical_tube(vy + 27.0, 0.0, 8.0, 8.0, drift_mm=0.5)
    lamina = c.vertical_tube(vy + 27.0, 0.0, 13.0, 13.0, drift_mm=0.5)
    spinous = c.ellipsoid((zmm(0.5), vy + 45.0, 0.0), (1e4, 12.0, 4.0), irregularity=0.0)
    bone = vertebral | lamina | spinous
    c.paint(vertebral | lamina | spinous, c.jitter(600.0, 50.0) + c.texture(40.0))
    c.paint(spongy, c.jitter(230.0, 30.0) + c.texture(30.0))
    c.paint(disc, c.jitter(80.0, 10.0))
    c.paint(canal, c.jitter(15.0, 5.0))
    rib_radius = ((c.x / ((inner_ax - 4.0) * taper)) ** 2 + ((c.y - 5.0) / ((inner_ay - 4.0) * taper)) ** 2)
    rib_period, rib_phase = c.jitter(26.0, 2.0), c.rng.uniform(0, 26.0)
    ribs = ((np.abs(rib_radius - 0.93) < 0.05) & (np.mod(c.z + rib_phase, rib_period) < 8.0)
            & (c.z > zmm(0.45)) & (c.y < vy + 20.0))
    c.paint(ribs, c.jitter(500.0, 60.0))
    bone = np.broadcast_to(bone | ribs, c.shape)
    organ_space = cavity & ~bone

    # --- unlabelled bowel loops (clutter whose intensity overlaps several organs) ------------------------------
    for _ in range(int(c.rng.integers(6, 11))):
        center = (zmm(c.rng.uniform(0.0, 0.5)), c.rng.uniform(-70.0, 10.0), c.rng.uniform(-80.0, 80.0))
        radii = (c.rng.uniform(20, 45), c.rng.uniform(10, 22), c.rng.uniform(10, 22))
        loop = c.ellipsoid(center, radii, c.rng.uniform(0, 180), irregularity=0.25)
        c.paint(loop, c.jitter(35.0, 10.0) + c.texture(10.0), where=organ_space)
        if c.rng.random() < 0.4:  # gas pocket
            gas = c.ellipsoid(center, tuple(r * 0.35 for r in radii), irregularity=0.2)
            c.paint(gas, c.jitter(-850.0, 60.0), where=organ_space)

    def organ(mask, hu, label, tex=6.0):
        return c.paint(mask, hu + c.texture(tex), label, where=organ_space)

    s = lambda: c.rng.uniform(0.85, 1.15)  # noqa: E731  size factor
    a = lambda: c.rng.uniform(-10.0, 10.0)  # noqa: E731  orientation jitter (degrees)

    # --- solid organs ---------------------------------------------------------------------------------------------
    liver_c = (zmm(c.jitter(0.74, 0.03)), c.jitter(-5.0, 5.0), c.jitter(-55.0, 5.0))
    organ(c.ellipsoid(liver_c, (70 * s(), 72 * s(), 62 * s()), 15 + a(), 0.18), c.enhanced(105.0), L["liver"])
    spleen_c = (zmm(c.jitter(0.72, 0.03)), c.jitter(38.0, 5.0), c.jitter(78.0, 5.0))
    organ(c.ellipsoid(spleen_c, (45 * s(), 36 * s(), 22 * s()), -35 + a(), 0.15), c.enhanced(115.0), L["spleen"])
    stomach_c = (zmm(c.jitter(0.76, 0.03)), c.jitter(-35.0, 5.0), c.jitter(40.0, 6.0))
    stomach_r = (45 * s(), 30 * s(), 38 * s())
    stomach = organ(c.ellipsoid(stomach_c, stomach_r, 20 + a(), 0.15), c.jitter(55.0, 6.0), L["stomach"])
    lumen = c.ellipsoid(stomach_c, tuple(r * 0.78 for r in stomach_r), 20.0, 0.1) & stomach
    c.paint(lumen, c.jitter(18.0, 8.0) + c.texture(5.0))
    if c.rng.random() < 0.6:  # air-fluid level: gas in the anterior part of the lumen
        c.paint(lumen & (c.y < stomach_c[1] - 0.4 * stomach_r[1]), c.jitter(-850.0, 60.0))
    for name, side, t in (("right_kidney", -1.0, 0.33), ("left_kidney", 1.0, 0.37)):
        kc = (zmm(c.jitter(t, 0.03)), c.jitter(vy - 2.0, 4.0), side * c.jitter(55.0, 4.0))
        kr = (48 * s(), 22 * s(), 26 * s())
        kidney = organ(c.ellipsoid(kc, kr, side * (25 + a()), 0.1), c.enhanced(165.0), L[name])
        medulla = c.ellipsoid(kc, tuple(r * 0.55 for r in kr), side * 25.0, 0.2) & kidney
        c.paint(medulla, c.enhanced(120.0) + c.texture(5.0))
    pancreas_pts = [
        (zmm(c.jitter(0.50, 0.03)), c.jitter(-8.0, 4.0), c.jitter(-28.0, 4.0)),   # head, beside the duodenum
        (zmm(c.jitter(0.54, 0.03)), c.jitter(-5.0, 4.0), c.jitter(5.0, 4.0)),     # neck, anterior of the vessels
        (zmm(c.jitter(0.58, 0.03)), c.jitter(18.0, 4.0), c.jitter(55.0, 4.0)),    # tail, to the splenic hilum
    ]
    organ(c.tube(pancreas_pts, 11.0 * s(), 0.3), c.enhanced(95.0), L["pancreas"], tex=8.0)
    gb_c = (zmm(c.jitter(0.55, 0.03)), c.jitter(-45.0, 5.0), c.jitter(-55.0, 5.0))
    organ(c.ellipsoid(gb_c, (25 * s(), 14 * s(), 15 * s()), 30 + a(), 0.1), c.jitter(12.0, 6.0), L["gallbladder"], 4.0)
    for name, side, t in (("right_adrenal_gland", -1.0, 0.52), ("left_adrenal_gland", 1.0, 0.50)):
        ac = (zmm(c.jitter(t, 0.02)), c.jitter(vy - 8.0, 3.0), side * c.jitter(32.0, 3.0))
        organ(c.ellipsoid(ac, (14 * s(), 12 * s(), 4 * s()), side * (30 + a()), 0.15), c.jitter(50.0, 8.0), L[name])

    # --- vessels and esophagus (painted last: they run through and beside the organs) --------------------------
    portal_pts = [
        (zmm(c.jitter(0.60, 0.02)), c.jitter(25.0, 4.0), c.jitter(65.0, 4.0)),    # splenic hilum
        (zmm(c.jitter(0.56, 0.02)), c.jitter(8.0, 3.0), c.jitter(-10.0, 3.0)),    # confluence behind the neck
        (zmm(c.jitter(0.70, 0.02)), c.jitter(0.0, 3.0), c.jitter(-40.0, 4.0)),    # into the liver hilum
    ]
    organ(c.tube(portal_pts, 6.0 * s(), 0.1), c.enhanced(150.0), L["portal_vein_and_splenic_vein"], tex=4.0)
    ivc = c.vertical_tube(c.jitter(vy - 28.0, 3.0), c.jitter(-22.0, 3.0), 9.0 * s(), 12.0 * s(),
                          z_range=(-np.inf, zmm(0.85)))
    organ(ivc, c.enhanced(130.0), L["inferior_vena_cava"], tex=4.0)
    aorta = c.vertical_tube(c.jitter(vy - 30.0, 3.0), c.jitter(14.0, 3.0), 11.0 * s(), 11.0 * s())
    organ(aorta, c.enhanced(165.0), L["aorta"], tex=4.0)
    esophagus = c.vertical_tube(c.jitter(vy - 40.0, 3.0), c.jitter(8.0, 3.0), 7.0, 8.0, z_range=(zmm(0.80), np.inf))
    organ(esophagus, c.jitter(45.0, 6.0), L["esophagus"], tex=4.0)
    return c


def generate_case(seed: int | np.random.SeedSequence, config: PhantomConfig = PhantomConfig()
                  ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One phantom case, fully determined by `seed` and `config`.

    Returns:
        image: int16 HU, shape (z, y, x).
        label: uint8 BTCV labels (see `BTCV_LABELS`), shape (z, y, x).
        spacing: (z, y, x) in mm.
    """
    rng = np.random.default_rng(seed)
    case = _build_case(rng, config)
    hu = case.hu
    # scanner: smooth bias field, partial-volume blur (weaker along the thick z slices), noise
    hu = hu + case.texture(6.0, scale_vox=12.0)
    blur = config.blur_voxels
    hu = ndimage.gaussian_filter(hu, sigma=(blur * case.spacing[1] / case.spacing[0], blur, blur))
    noise_sd = rng.uniform(*config.noise_hu)
    noise = ndimage.gaussian_filter(rng.normal(0.0, 1.0, size=config.shape).astype(np.float32), 0.5)
    hu = hu + noise * (noise_sd / noise.std())
    image = np.clip(np.round(hu), -1024, 3071).astype(np.int16)
    return image, case.label, case.spacing
