"""Upper-abdomen anatomy (CT and MRI): liver and its lesions, kidneys, adrenals, vessels."""

from __future__ import annotations

import numpy as np

from .geometry import Point, centroid, curve, random_wobble
from .scene import Scene, place
from .tables import Tissue
from .trunk import draw_body, ribs, vertebra


def _kidney(
    scene: Scene, rng: np.random.Generator, name: str, side: int, vy: float, scale: float
) -> Point:
    """A bean-shaped kidney with medulla, sinus fat and pelvis; returns its hilum."""
    c = scene.canvas
    kx, ky = side * rng.uniform(0.27, 0.34), vy + rng.uniform(-0.07, 0.0)
    rx, ry = rng.uniform(0.065, 0.085) * scale, rng.uniform(0.09, 0.125) * scale
    tilt = -side * rng.uniform(0.25, 0.6)
    scene.paint(c.blob(kx, ky, rx + 0.03, ry + 0.03, tilt), Tissue.FAT)  # perirenal fat
    hilum = (kx - side * rx * 0.8, ky - ry * 0.2)
    bean = c.blob(kx, ky, rx, ry, tilt, random_wobble(rng, 2, 3, 0.04))
    bean &= ~c.blob(hilum[0] - side * rx * 0.15, hilum[1], rx * 0.45, ry * 0.3, tilt)
    scene.paint(bean, Tissue.CORTEX, name)
    for _ in range(int(rng.integers(3, 6))):
        pyramid = place(scene, rng, bean, rx * 0.25, ry * 0.18, rng.uniform(0, np.pi))
        if pyramid is not None:
            scene.paint(pyramid, Tissue.MEDULLA, name)
    sinus = c.blob(hilum[0] + side * rx * 0.35, hilum[1], rx * 0.35, ry * 0.3, tilt) & bean
    scene.paint(sinus, Tissue.FAT, name)
    scene.paint(
        c.blob(hilum[0] + side * rx * 0.3, hilum[1], rx * 0.18, ry * 0.15) & bean,
        Tissue.FLUID,
        name,
    )
    return hilum


def _adrenal(scene: Scene, rng: np.random.Generator, name: str, apex: Point, side: int) -> None:
    """A thin adrenal limb (right) or inverted-Y (left) drawn only into fat."""
    c = scene.canvas
    half = max(rng.uniform(0.007, 0.013), 0.55 * c.px)
    limbs = 1 if side < 0 and rng.random() < 0.6 else 2
    shape = np.zeros_like(scene.labels, dtype=bool)
    base = np.pi / 2 + side * rng.uniform(0.2, 0.6)  # pointing posteriorly and laterally
    for k in range(limbs):
        theta = base + (k - (limbs - 1) / 2) * rng.uniform(0.5, 0.9)
        length = rng.uniform(0.06, 0.1)
        end = (apex[0] + length * np.cos(theta), apex[1] + length * np.sin(theta))
        path = curve(rng, apex, end, 0.015, 4)
        shape |= c.tube(path, np.linspace(half * 1.2, half * 0.8, len(path)))
    scene.paint(shape, Tissue.ADRENAL, name, where=scene.tissue == Tissue.FAT)


def draw_abdomen(scene: Scene, rng: np.random.Generator, absent: str | None) -> list[str]:
    """Paint an upper-abdomen slice at kidney/adrenal level; returns the targets drawn."""
    c = scene.canvas
    body = draw_body(scene, rng)
    cy, crx, cry = body.cy, body.cavity_rx, body.cavity_ry
    vy, r_v = vertebra(scene, rng, body)
    for side in (-1, 1):  # psoas
        scene.paint(c.blob(side * (r_v + 0.04), vy - 0.01, 0.045, 0.05), Tissue.MUSCLE)
    in_fat = scene.tissue == Tissue.FAT
    free = body.cavity & (c.y < cy + 0.15)
    for _ in range(int(rng.integers(5, 12))):  # bowel loops
        r = rng.uniform(0.025, 0.06)
        at = c.points_in(rng, free, 1)
        if len(at) == 0:
            break
        x, y = (float(v) for v in at[0])
        content = rng.choice([Tissue.FLUID, Tissue.AIR, Tissue.SOFT, Tissue.BOWEL_CONTRAST])
        scene.paint(c.blob(x, y, r, r * rng.uniform(0.7, 1.0)), Tissue.WALL, where=in_fat)
        scene.paint(c.blob(x, y, r - 0.009, r * 0.8 - 0.009), Tissue(content), where=in_fat)

    sx, sy = crx * rng.uniform(0.2, 0.4), cy - cry * rng.uniform(0.3, 0.5)
    srx, sry, stilt = rng.uniform(0.12, 0.2), rng.uniform(0.09, 0.14), rng.uniform(-0.5, 0.5)
    stomach = c.blob(sx, sy, srx, sry, stilt, random_wobble(rng, 2, 4, 0.05)) & body.cavity
    scene.paint(stomach, Tissue.WALL, "stomach")
    lumen = c.blob(sx, sy, srx - 0.018, sry - 0.018, stilt) & stomach
    contents = Tissue.FLUID if rng.random() < 0.6 else Tissue.SOFT
    scene.paint(lumen, contents, "stomach")
    scene.paint(lumen & (c.y < sy - sry * rng.uniform(0.0, 0.6)), Tissue.AIR, "stomach")

    lx, ly = -crx * rng.uniform(0.35, 0.5), cy - rng.uniform(0.02, 0.14)
    lrx, lry = crx * rng.uniform(0.4, 0.58), cry * rng.uniform(0.6, 0.88)
    liver = c.blob(lx, ly, lrx, lry, rng.uniform(-0.3, 0.2), random_wobble(rng, 2, 4, 0.06))
    liver &= body.cavity & ~c.blob(0.0, vy, r_v + 0.05, r_v + 0.05)
    scene.paint(liver, Tissue.LIVER, "liver")
    porta = (lx + lrx * rng.uniform(0.3, 0.5), ly + lry * rng.uniform(0.0, 0.2))
    for target in c.points_in(rng, liver, int(rng.integers(2, 5))):
        path = curve(rng, porta, (float(target[0]), float(target[1])), 0.1, 5)
        widths = np.linspace(rng.uniform(0.012, 0.02), max(0.005, 0.5 * c.px), len(path))
        scene.paint(
            c.tube(path, widths), Tissue.BLOOD, "hepatic vessel", part_of="liver", where=liver
        )
    for x, y in c.points_in(rng, liver, int(rng.integers(3, 9))):
        r = max(rng.uniform(0.008, 0.02), 0.6 * c.px)
        scene.paint(
            c.blob(float(x), float(y), r, r * rng.uniform(0.7, 1.0)),
            Tissue.BLOOD,
            "hepatic vessel",
            part_of="liver",
            where=liver,
        )
    for _ in range(int(rng.integers(0, 3))):  # simple cysts: sharp, water-like distractors
        r = rng.uniform(0.01, 0.035)
        cyst = place(scene, rng, liver, r, r * 0.9)
        if cyst is not None:
            scene.paint(cyst, Tissue.FLUID, "liver")
    tumours = 0
    if absent != "liver tumor":
        for _ in range(1 if rng.random() < 0.6 else int(rng.integers(2, 4))):
            r = float(np.exp(rng.uniform(np.log(max(0.012, 1.1 * c.px)), np.log(0.08))))
            wob, aspect = random_wobble(rng, 2, 6, rng.uniform(0.04, 0.12)), rng.uniform(0.8, 1.2)
            tumour = place(scene, rng, liver, r * aspect, r / aspect, rng.uniform(0, np.pi), wob)
            if tumour is None:
                continue
            offset = rng.normal(0.0, 0.02)
            if rng.random() < 0.3:  # enhancing rim
                scene.paint(
                    tumour, Tissue.TUMOR, "liver tumor", part_of="liver", offset=offset + 0.08
                )
                core = (
                    c.blob(*centroid(c, tumour), r * aspect * 0.75, r / aspect * 0.75, 0.0, wob)
                    & tumour
                )
                scene.paint(core, Tissue.TUMOR, "liver tumor", part_of="liver", offset=offset)
            else:
                scene.paint(tumour, Tissue.TUMOR, "liver tumor", part_of="liver", offset=offset)
            tumours += 1

    has_gallbladder = absent != "gallbladder" and rng.random() < 0.85
    if has_gallbladder:
        grx, gry, gtilt = rng.uniform(0.045, 0.075), rng.uniform(0.03, 0.05), rng.uniform(0, np.pi)
        edge = liver & (c.x > lx + 0.2 * lrx) & (c.y < ly + 0.1 * lry)
        gallbladder = place(scene, rng, edge, grx, gry, gtilt, inside=0.6)
        has_gallbladder = gallbladder is not None
        if gallbladder is not None:
            scene.paint(gallbladder & body.cavity, Tissue.WALL, "gallbladder")
            inner = c.blob(*centroid(c, gallbladder), grx - 0.008, gry - 0.008, gtilt)
            scene.paint(inner & gallbladder, Tissue.FLUID, "gallbladder")

    px_, py_ = crx * rng.uniform(0.62, 0.75), cy + cry * rng.uniform(0.05, 0.35)
    prx, pry, ptilt = rng.uniform(0.1, 0.15), rng.uniform(0.18, 0.27), -rng.uniform(0.3, 0.7)
    spleen = c.blob(px_, py_, prx, pry, ptilt, random_wobble(rng, 2, 4, 0.05))
    spleen &= ~c.blob(px_ - rng.uniform(0.07, 0.1), py_, prx * 0.85, pry * 0.8, ptilt)
    scene.paint(spleen & body.cavity, Tissue.SPLEEN, "spleen")

    kidneys = {}
    for name, side in (("right kidney", -1), ("left kidney", 1)):
        if absent != name:
            kidneys[name] = _kidney(scene, rng, name, side, vy, rng.uniform(0.65, 1.05))

    ax, ar = rng.uniform(0.02, 0.07), rng.uniform(0.04, 0.055)
    ay = vy - r_v - ar - rng.uniform(0.005, 0.02)
    ix, iy = ax - rng.uniform(0.14, 0.19), ay - rng.uniform(0.0, 0.04)
    irx, iry = rng.uniform(0.045, 0.065), rng.uniform(0.03, 0.045)
    for side, top in ((1, (ax + 0.045, ay - 0.05)), (-1, (ax - 0.045, ay - 0.055))):  # crura
        path = curve(rng, top, (ax + side * rng.uniform(0.06, 0.09), vy - 0.01), 0.03, 5)
        scene.paint(
            c.tube(path, max(rng.uniform(0.008, 0.014), 0.55 * c.px)),
            Tissue.MUSCLE,
            where=scene.tissue == Tissue.FAT,
        )
    scene.paint(c.blob(ax, ay, ar, ar * rng.uniform(0.9, 1.0)), Tissue.BLOOD, "aorta")
    scene.paint(
        c.blob(ix, iy, irx, iry, rng.uniform(-0.3, 0.3)), Tissue.BLOOD, "inferior vena cava"
    )

    in_fat = scene.tissue == Tissue.FAT
    tail = (px_ - prx * 0.9, py_ - pry * 0.2)
    neck = (ax + rng.uniform(-0.02, 0.03), ay - rng.uniform(0.12, 0.17))
    head = (ix + rng.uniform(-0.01, 0.04), iy - rng.uniform(0.08, 0.13))
    path = np.concatenate([curve(rng, tail, neck, 0.05, 6), curve(rng, neck, head, 0.03, 4)[1:]])
    widths = rng.uniform(0.022, 0.034) * np.exp(rng.normal(0.0, 0.12, len(path)))
    widths[-1] *= 1.3  # the head is the widest part
    scene.paint(c.tube(path, widths), Tissue.PANCREAS, "pancreas", where=in_fat)
    splenic = path[:6] + np.array([0.0, 0.03], dtype=np.float32)
    vessels = [  # splenic vein, SMA, SMV, renal veins and arteries: thin distractors
        (c.tube(splenic, max(0.009, 0.55 * c.px)), Tissue.BLOOD),
    ]
    sma_y = ay - rng.uniform(0.08, 0.11)
    sma = rng.uniform(0.012, 0.016)
    vessels.append((c.blob(ax, sma_y, sma, sma), Tissue.BLOOD))
    smv = rng.uniform(0.015, 0.022)
    vessels.append((c.blob(ax - 0.06, sma_y, smv, smv), Tissue.BLOOD))
    for hx, hy in kidneys.values():
        vein, artery = rng.uniform(0.008, 0.013), rng.uniform(0.005, 0.008)
        for start, half in (((ix, iy), vein), ((ax, ay), artery)):
            vessel_path = curve(rng, start, (hx, hy), 0.04, 5)
            vessels.append((c.tube(vessel_path, max(half, 0.5 * c.px)), Tissue.BLOOD))
    for shape, tissue in vessels:
        scene.paint(shape, tissue, where=scene.tissue == Tissue.FAT)

    if absent != "right adrenal gland":
        apex = (ix + rng.uniform(-0.02, 0.02), iy + iry + rng.uniform(0.015, 0.035))
        _adrenal(scene, rng, "right adrenal gland", apex, -1)
    if absent != "left adrenal gland":
        apex = (ax + ar + rng.uniform(0.03, 0.06), ay - rng.uniform(0.0, 0.04))
        _adrenal(scene, rng, "left adrenal gland", apex, 1)

    angles = np.concatenate(
        [rng.uniform(0.1 * np.pi, 0.38 * np.pi, 3), rng.uniform(0.62 * np.pi, 0.9 * np.pi, 3)]
    )
    ribs(scene, rng, body, angles[rng.random(6) < 0.7])

    found = [
        "liver",
        "hepatic vessel",
        "spleen",
        "aorta",
        "inferior vena cava",
        "pancreas",
        "stomach",
        *kidneys,
    ]
    found += [n for n in ("right adrenal gland", "left adrenal gland") if n != absent]
    found += ["liver tumor"] * (tumours > 0) + ["gallbladder"] * has_gallbladder
    return found
