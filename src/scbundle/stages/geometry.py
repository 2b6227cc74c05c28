"""Where things are: the demo camera's chip layout, the sky-cell grid (tessellation) and an
exposure's footprint on it, and the affine transform a warp applies. Pure functions.

Conventions: pixel centres sit at integer coordinates. A projection cell is a gnomonic
(tangent-plane) projection about (proj_ra, proj_dec) with ``scale`` arcsec a pixel; its sky
cells are rectangles of that plane. An exposure's mosaic (the cam product) is centred on its
pointing, rotated by ``rot_deg`` (counter-clockwise from the plane's x axis), with
CAMERA_SCALE_ARCSEC a mosaic pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

# --- the demo camera: 8 chips (xy01..xy08) in 4 columns x 2 rows, binned 2x2 ----------------

#: a mosaic slot per chip: the largest binned demo chip (40 x 32) and a 2-pixel gap
CHIP_SLOT = (42, 34)
CAMERA_COLUMNS = 4
CAMERA_CLASS_IDS = tuple(f"xy{n:02d}" for n in range(1, 9))
MOSAIC_SIZE = (CAMERA_COLUMNS * CHIP_SLOT[0] - 2, 2 * CHIP_SLOT[1] - 2)  # (width, height)
CAMERA_SCALE_ARCSEC = 1.0  # arcsec per binned (mosaic) pixel


def chip_origin(class_id: str) -> tuple[int, int]:
    """(x0, y0) of a chip's binned image in the exposure mosaic; ValueError for an unknown chip."""
    try:
        n = CAMERA_CLASS_IDS.index(class_id)
    except ValueError:
        raise ValueError(f"chip {class_id!r} has no place in the camera layout ({', '.join(CAMERA_CLASS_IDS)})") from None
    return (n % CAMERA_COLUMNS) * CHIP_SLOT[0], (n // CAMERA_COLUMNS) * CHIP_SLOT[1]


# --- projection ------------------------------------------------------------------------------


def to_plane(ra_deg: float, dec_deg: float, proj_ra: float, proj_dec: float, scale_arcsec: float) -> tuple[float, float]:
    """Gnomonic projection of (ra, dec) about the tangent point, in plane pixels."""
    a, d = math.radians(ra_deg - proj_ra), math.radians(dec_deg)
    d0 = math.radians(proj_dec)
    cos_c = math.sin(d0) * math.sin(d) + math.cos(d0) * math.cos(d) * math.cos(a)
    if cos_c <= 0:
        raise ValueError(f"({ra_deg}, {dec_deg}) is 90 degrees or more from the tangent point ({proj_ra}, {proj_dec})")
    xi = math.cos(d) * math.sin(a) / cos_c
    eta = (math.cos(d0) * math.sin(d) - math.sin(d0) * math.cos(d) * math.cos(a)) / cos_c
    k = math.degrees(1.0) * 3600.0 / scale_arcsec
    return xi * k, eta * k


def from_plane(x: float, y: float, proj_ra: float, proj_dec: float, scale_arcsec: float) -> tuple[float, float]:
    """The inverse of :func:`to_plane`: (ra, dec) in degrees."""
    k = math.degrees(1.0) * 3600.0 / scale_arcsec
    xi, eta = x / k, y / k
    rho = math.hypot(xi, eta)
    if rho == 0.0:
        return proj_ra % 360.0, proj_dec
    c = math.atan(rho)
    d0 = math.radians(proj_dec)
    dec = math.asin(math.cos(c) * math.sin(d0) + eta * math.sin(c) * math.cos(d0) / rho)
    ra = math.radians(proj_ra) + math.atan2(xi * math.sin(c), rho * math.cos(d0) * math.cos(c) - eta * math.sin(d0) * math.sin(c))
    return math.degrees(ra) % 360.0, math.degrees(dec)


# --- sky cells and footprints -----------------------------------------------------------------


@dataclass(frozen=True)
class Tessellation:
    """A projection cell cut into nx x ny sky cells of ``cell`` pixels, centred on its tangent point."""

    name: str
    proj_ra: float
    proj_dec: float
    scale_arcsec: float
    cell: int
    nx: int
    ny: int
    first_id: int = 1

    def skycells(self) -> list[SkyCell]:
        out = []
        for iy in range(self.ny):
            for ix in range(self.nx):
                n = iy * self.nx + ix
                out.append(
                    SkyCell(
                        skycell_id=self.first_id + n, name=f"skycell.{self.name}.{n:03d}",
                        proj_ra=self.proj_ra, proj_dec=self.proj_dec, scale_arcsec=self.scale_arcsec,
                        x0=(ix - self.nx // 2) * self.cell, y0=(iy - self.ny // 2) * self.cell,
                        width=self.cell, height=self.cell,
                    )
                )  # fmt: skip
        return out


@dataclass(frozen=True)
class SkyCell:
    skycell_id: int
    name: str
    proj_ra: float
    proj_dec: float
    scale_arcsec: float
    x0: int
    y0: int
    width: int
    height: int


@dataclass(frozen=True)
class Pointing:
    ra_deg: float
    dec_deg: float
    rot_deg: float


Affine = tuple[float, float, float, float, float, float]


def warp_affine(p: Pointing, cell: SkyCell, mosaic: tuple[int, int] = MOSAIC_SIZE, camera_scale: float = CAMERA_SCALE_ARCSEC) -> Affine:
    """(a, b, c, d, e, f): sky-cell pixel (i, j) reads the mosaic at (a*i + b*j + c, d*i + e*j + f)."""
    xc, yc = to_plane(p.ra_deg, p.dec_deg, cell.proj_ra, cell.proj_dec, cell.scale_arcsec)
    s = camera_scale / cell.scale_arcsec  # plane pixels per mosaic pixel
    cos_t, sin_t = math.cos(math.radians(p.rot_deg)), math.sin(math.radians(p.rot_deg))
    uc, vc = (mosaic[0] - 1) / 2.0, (mosaic[1] - 1) / 2.0
    dx, dy = cell.x0 - xc, cell.y0 - yc
    return (
        cos_t / s, sin_t / s, uc + (cos_t * dx + sin_t * dy) / s,
        -sin_t / s, cos_t / s, vc + (-sin_t * dx + cos_t * dy) / s,
    )  # fmt: skip


def footprint(p: Pointing, cell: SkyCell, mosaic: tuple[int, int] = MOSAIC_SIZE, camera_scale: float = CAMERA_SCALE_ARCSEC) -> list[tuple[float, float]]:
    """The mosaic's outline in the plane of ``cell``'s projection cell (4 corners, counter-clockwise)."""
    xc, yc = to_plane(p.ra_deg, p.dec_deg, cell.proj_ra, cell.proj_dec, cell.scale_arcsec)
    s = camera_scale / cell.scale_arcsec
    cos_t, sin_t = math.cos(math.radians(p.rot_deg)), math.sin(math.radians(p.rot_deg))
    hw, hh = mosaic[0] / 2.0, mosaic[1] / 2.0
    return [
        (xc + s * (cos_t * u - sin_t * v), yc + s * (sin_t * u + cos_t * v))
        for u, v in ((-hw, -hh), (hw, -hh), (hw, hh), (-hw, hh))
    ]


def _clip(poly: Sequence[tuple[float, float]], inside, cross) -> list[tuple[float, float]]:
    out: list[tuple[float, float]] = []
    for k, cur in enumerate(poly):
        prev = poly[k - 1]
        if inside(cur):
            if not inside(prev):
                out.append(cross(prev, cur))
            out.append(cur)
        elif inside(prev):
            out.append(cross(prev, cur))
    return out


def _area(poly: Sequence[tuple[float, float]]) -> float:
    return abs(sum(x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(poly, [*poly[1:], *poly[:1]], strict=True))) / 2.0


def overlap_fraction(poly: Sequence[tuple[float, float]], cell: SkyCell) -> float:
    """The fraction of ``cell`` that the convex polygon covers (Sutherland-Hodgman clipping)."""
    lo_x, hi_x = cell.x0 - 0.5, cell.x0 + cell.width - 0.5
    lo_y, hi_y = cell.y0 - 0.5, cell.y0 + cell.height - 0.5

    def at_x(x: float):
        return lambda a, b: (x, a[1] + (b[1] - a[1]) * (x - a[0]) / (b[0] - a[0]))

    def at_y(y: float):
        return lambda a, b: (a[0] + (b[0] - a[0]) * (y - a[1]) / (b[1] - a[1]), y)

    clipped = list(poly)
    for inside, cross in (
        (lambda q: q[0] >= lo_x, at_x(lo_x)), (lambda q: q[0] <= hi_x, at_x(hi_x)),
        (lambda q: q[1] >= lo_y, at_y(lo_y)), (lambda q: q[1] <= hi_y, at_y(hi_y)),
    ):  # fmt: skip
        clipped = _clip(clipped, inside, cross)
        if not clipped:
            return 0.0
    return _area(clipped) / (cell.width * cell.height)


#: a warp is made only where the exposure covers at least this fraction of the sky cell
MIN_OVERLAP = 0.02


def overlapping(p: Pointing, cells: Sequence[SkyCell], min_overlap: float = MIN_OVERLAP) -> list[tuple[SkyCell, float]]:
    """The sky cells an exposure covers enough of, with the fraction covered."""
    out = []
    for cell in cells:
        try:
            frac = overlap_fraction(footprint(p, cell), cell)
        except ValueError:  # the exposure is on the far side of this projection cell
            continue
        if frac >= min_overlap:
            out.append((cell, frac))
    return out


# --- the demo sky -----------------------------------------------------------------------------

DEMO_TESS = Tessellation(name="demo", proj_ra=150.0, proj_dec=2.0, scale_arcsec=1.0, cell=100, nx=8, ny=4)

#: the demo's dither pattern (plane pixels from the tangent point, degrees of rotation):
#: each pointing covers 2 to 4 of the demo sky cells
DEMO_DITHERS: tuple[tuple[float, float, float], ...] = (
    (0.0, 0.0, 0.0), (0.0, 50.0, 0.8), (0.0, -50.0, -0.6), (50.0, 50.0, 1.2),
    (-50.0, -50.0, -1.0), (50.0, -50.0, 0.4), (-50.0, 50.0, -0.3),
)  # fmt: skip


def demo_pointing(exp_id: int, tess: Tessellation = DEMO_TESS) -> Pointing:
    dx, dy, rot = DEMO_DITHERS[(exp_id - 1) % len(DEMO_DITHERS)]
    ra, dec = from_plane(dx, dy, tess.proj_ra, tess.proj_dec, tess.scale_arcsec)
    return Pointing(ra, dec, rot)
