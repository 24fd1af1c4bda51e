"""One PIL glyph per category: its own silhouette, palette and texture, so a tiny ViT can tell them apart.

Glyphs are drawn in unit coordinates ([0, 1] x [0, 1] of the object's box) on a 4x canvas and
box-filtered down: at 20 px a hard-edged drawing turns into unreadable stairs, the filtered one does not.
Every part gets a 1 px dark outline, so objects stay separable from each other and from busy backgrounds.
"""
from __future__ import annotations

import functools
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageOps

SS = 4                        # supersampling factor
INK = (30, 30, 36, 255)       # outline colour shared by all glyphs
RGB = tuple[int, int, int]
Box = tuple[float, float, float, float]
Points = Sequence[tuple[float, float]]


@dataclass(frozen=True)
class Tex:
    """A two-colour fill: `kind` in hstripes, vstripes, dots, checker, grid; `period` is a fraction of the
    short side."""
    base: RGB
    accent: RGB
    kind: str
    period: float = 0.2


class Pen:
    """Unit-coordinate drawing on a supersampled RGBA canvas; colours are jittered once per call to `c`."""

    def __init__(self, w: int, h: int, rng: random.Random):
        self.img = Image.new("RGBA", (w * SS, h * SS), (0, 0, 0, 0))
        self.draw = ImageDraw.Draw(self.img)
        self.rng = rng
        self.W, self.H = self.img.size
        self.ow = SS  # one output pixel

    def c(self, rgb: RGB, spread: int = 14) -> RGB:
        # Shared brightness shift + a little per-channel noise: instances vary, but the hue stays the category's.
        shift = self.rng.randint(-spread, spread)
        r, g, b = (max(0, min(255, v + shift + self.rng.randint(-5, 5))) for v in rgb)
        return r, g, b

    def _pts(self, pts: Points) -> list[tuple[float, float]]:
        return [(x * self.W, y * self.H) for x, y in pts]

    def _box(self, box: Box) -> list[float]:
        x0, y0, x1, y1 = box
        return [x0 * self.W, y0 * self.H, x1 * self.W - 1, y1 * self.H - 1]

    def _paint(self, shape: Callable, fill, outline: bool) -> None:
        """`shape(draw, **kw)` draws one primitive; a Tex fill goes through a mask so any shape can be textured."""
        if isinstance(fill, Tex):
            mask = Image.new("L", self.img.size, 0)
            shape(ImageDraw.Draw(mask), fill=255)
            self.img.paste(self._pattern(fill), (0, 0), mask)
            fill = None
        shape(self.draw, fill=fill, outline=INK if outline else None, width=self.ow)

    def rect(self, box: Box, fill, outline: bool = True, radius: float = 0.0) -> None:
        r = radius * min(self.W, self.H)
        self._paint(lambda d, **kw: d.rounded_rectangle(self._box(box), radius=r, **kw), fill, outline)

    def ellipse(self, box: Box, fill, outline: bool = True) -> None:
        self._paint(lambda d, **kw: d.ellipse(self._box(box), **kw), fill, outline)

    def poly(self, pts: Points, fill, outline: bool = True) -> None:
        self._paint(lambda d, **kw: d.polygon(self._pts(pts), **kw), fill, outline)

    def pieslice(self, box: Box, start: float, end: float, fill, outline: bool = True) -> None:
        self._paint(lambda d, **kw: d.pieslice(self._box(box), start, end, **kw), fill, outline)

    def chord(self, box: Box, start: float, end: float, fill, outline: bool = True) -> None:
        self._paint(lambda d, **kw: d.chord(self._box(box), start, end, **kw), fill, outline)

    def line(self, pts: Points, fill: RGB, width: float, outline: bool = True) -> None:
        """A stroke `width` (fraction of the short side) wide, with an ink rim drawn underneath."""
        w = max(SS, int(width * min(self.W, self.H)))
        xy = self._pts(pts)
        if outline:
            self.draw.line(xy, fill=INK, width=w + 2 * self.ow, joint="curve")
        self.draw.line(xy, fill=fill, width=w, joint="curve")

    def ring(self, box: Box, fill: RGB, width: float) -> None:
        w = max(SS, int(width * min(self.W, self.H)))
        self.draw.ellipse(self._box(box), outline=INK, width=w + 2 * self.ow)
        x0, y0, x1, y1 = self._box(box)
        o = self.ow
        self.draw.ellipse([x0 + o, y0 + o, x1 - o, y1 - o], outline=fill, width=w)

    def _pattern(self, tex: Tex) -> Image.Image:
        p = max(2 * SS, int(tex.period * min(self.W, self.H)))
        img = Image.new("RGBA", self.img.size, tex.base + (255,))
        _PATTERNS[tex.kind](ImageDraw.Draw(img), self.W, self.H, p, tex.accent + (255,))
        return img


def _hstripes(d, W, H, p, col):
    for y in range(0, H, p):
        d.rectangle([0, y, W, y + p // 2 - 1], fill=col)


def _vstripes(d, W, H, p, col):
    for x in range(0, W, p):
        d.rectangle([x, 0, x + p // 2 - 1, H], fill=col)


def _dots(d, W, H, p, col):
    r = p // 4
    for i, y in enumerate(range(p // 2, H + p, p)):
        for x in range(p // 2 + (i % 2) * p // 2, W + p, p):   # offset rows read as "dots", not "grid"
            d.ellipse([x - r, y - r, x + r, y + r], fill=col)


def _checker(d, W, H, p, col):
    for i, y in enumerate(range(0, H, p)):
        for j, x in enumerate(range(0, W, p)):
            if (i + j) % 2:
                d.rectangle([x, y, x + p - 1, y + p - 1], fill=col)


def _grid(d, W, H, p, col):
    t = max(SS, p // 4)
    for y in range(0, H, p):
        d.rectangle([0, y, W, y + t - 1], fill=col)
    for x in range(0, W, p):
        d.rectangle([x, 0, x + t - 1, H], fill=col)


_PATTERNS = {"hstripes": _hstripes, "vstripes": _vstripes, "dots": _dots, "checker": _checker, "grid": _grid}


# ---- glyphs: one function per category, drawn facing right where that matters ------------------------

def person(p: Pen) -> None:
    jeans, shirt, skin = p.c((45, 50, 80)), p.c((40, 95, 225)), p.c((240, 190, 150), 8)
    p.rect((0.22, 0.6, 0.47, 1.0), jeans)
    p.rect((0.53, 0.6, 0.78, 1.0), jeans)
    p.rect((0.0, 0.28, 0.2, 0.62), shirt, radius=0.08)
    p.rect((0.8, 0.28, 1.0, 0.62), shirt, radius=0.08)
    p.poly([(0.14, 0.64), (0.2, 0.26), (0.8, 0.26), (0.86, 0.64)], shirt)
    p.ellipse((0.22, 0.0, 0.78, 0.27), skin)


def bicycle(p: Pen) -> None:
    frame, tyre = p.c((215, 35, 45)), (25, 25, 28)
    rear, front, crank, seat, bars = (0.2, 0.7), (0.8, 0.7), (0.46, 0.7), (0.36, 0.3), (0.72, 0.3)
    p.ring((0.0, 0.4, 0.4, 1.0), tyre, 0.07)
    p.ring((0.6, 0.4, 1.0, 1.0), tyre, 0.07)
    p.line([rear, crank, bars, front], frame, 0.08)
    p.line([rear, seat, crank], frame, 0.08)
    p.line([seat, bars], frame, 0.08)
    p.line([bars, (0.7, 0.12), (0.84, 0.1)], (40, 40, 40), 0.06)
    p.rect((0.26, 0.2, 0.46, 0.3), (30, 30, 30))


def car(p: Pen) -> None:
    body, glass = p.c((220, 30, 35)), p.c((175, 220, 250), 6)
    p.poly([(0.17, 0.42), (0.3, 0.08), (0.68, 0.08), (0.85, 0.42)], body)
    p.rect((0.0, 0.38, 1.0, 0.8), body, radius=0.15)
    p.poly([(0.26, 0.38), (0.34, 0.16), (0.48, 0.16), (0.48, 0.38)], glass)
    p.poly([(0.53, 0.38), (0.53, 0.16), (0.65, 0.16), (0.76, 0.38)], glass)
    p.rect((0.93, 0.47, 1.0, 0.58), (250, 220, 60))
    for x0 in (0.1, 0.64):
        p.ellipse((x0, 0.6, x0 + 0.235, 1.0), (25, 25, 28))
        p.ellipse((x0 + 0.07, 0.72, x0 + 0.165, 0.88), (170, 170, 175))


def bus(p: Pen) -> None:
    p.rect((0.0, 0.02, 1.0, 0.84), p.c((250, 200, 20)), radius=0.12)
    glass = p.c((40, 60, 115), 8)
    for i in range(6):
        x0 = 0.05 + i * 0.152
        p.rect((x0, 0.12, x0 + 0.11, 0.46), glass)
    p.rect((0.0, 0.56, 1.0, 0.63), (230, 120, 20), outline=False)
    for x0 in (0.1, 0.72):
        p.ellipse((x0, 0.66, x0 + 0.17, 1.0), (25, 25, 28))


def traffic_light(p: Pen) -> None:
    p.rect((0.4, 0.74, 0.6, 1.0), (120, 120, 125))
    p.rect((0.04, 0.0, 0.96, 0.78), p.c((38, 38, 40), 8), radius=0.2)
    for cy, col in ((0.14, (235, 35, 30)), (0.39, (250, 185, 0)), (0.64, (30, 205, 65))):
        p.ellipse((0.25, cy - 0.11, 0.75, cy + 0.11), col)


def _octagon(cx: float, cy: float, rx: float, ry: float) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(math.radians(22.5 + 45 * k)), cy + ry * math.sin(math.radians(22.5 + 45 * k)))
            for k in range(8)]


def stop_sign(p: Pen) -> None:
    p.rect((0.43, 0.66, 0.57, 1.0), (130, 130, 135))
    p.poly(_octagon(0.5, 0.36, 0.52, 0.37), (245, 245, 245))
    p.poly(_octagon(0.5, 0.36, 0.43, 0.305), p.c((215, 20, 30)), outline=False)
    p.rect((0.2, 0.3, 0.8, 0.42), (245, 245, 245), outline=False)


def bench(p: Pen) -> None:
    wood = p.c((165, 100, 45))
    for x0 in (0.06, 0.86):
        p.rect((x0, 0.45, x0 + 0.08, 1.0), (35, 35, 35))
        p.rect((x0 + 0.01, 0.02, x0 + 0.06, 0.5), (35, 35, 35))
    for y0 in (0.05, 0.27, 0.5):
        p.rect((0.0, y0, 1.0, y0 + 0.15), wood, radius=0.04)


def bird(p: Pen) -> None:
    body, dark, beak = p.c((145, 60, 205)), p.c((85, 30, 140)), (250, 150, 20)
    p.line([(0.38, 0.8), (0.36, 1.0)], beak, 0.06, outline=False)
    p.line([(0.52, 0.8), (0.54, 1.0)], beak, 0.06, outline=False)
    p.poly([(0.0, 0.33), (0.24, 0.52), (0.0, 0.7)], dark)
    p.ellipse((0.1, 0.3, 0.78, 0.86), body)
    p.poly([(0.87, 0.2), (1.0, 0.3), (0.87, 0.38)], beak)
    p.ellipse((0.58, 0.06, 0.9, 0.46), body)
    p.ellipse((0.25, 0.44, 0.6, 0.7), dark)
    p.ellipse((0.72, 0.16, 0.8, 0.26), (255, 255, 255), outline=False)


def cat(p: Pen) -> None:
    fur = Tex(p.c((245, 145, 40)), (175, 80, 20), "hstripes", 0.14)
    p.line([(0.8, 0.95), (0.98, 0.72), (0.9, 0.5)], fur.base, 0.09)
    p.ellipse((0.08, 0.42, 0.88, 1.0), fur)
    p.poly([(0.18, 0.26), (0.22, 0.0), (0.44, 0.14)], fur.base)
    p.poly([(0.56, 0.14), (0.78, 0.0), (0.82, 0.26)], fur.base)
    p.ellipse((0.14, 0.06, 0.86, 0.56), fur)
    for x0 in (0.3, 0.58):
        p.ellipse((x0, 0.24, x0 + 0.12, 0.36), (60, 200, 80))
    p.poly([(0.45, 0.4), (0.55, 0.4), (0.5, 0.46)], (240, 120, 150), outline=False)


def dog(p: Pen) -> None:
    fur, spot = p.c((210, 170, 110)), (105, 65, 30)
    p.line([(0.18, 0.4), (0.04, 0.12)], fur, 0.09)
    for x0 in (0.18, 0.34, 0.6, 0.74):
        p.rect((x0, 0.58, x0 + 0.1, 1.0), fur)
    p.rect((0.1, 0.3, 0.84, 0.7), Tex(fur, spot, "dots", 0.3), radius=0.15)
    p.rect((0.66, 0.04, 1.0, 0.46), fur, radius=0.12)
    p.ellipse((0.63, 0.06, 0.78, 0.44), spot)
    p.ellipse((0.93, 0.17, 1.0, 0.29), (20, 20, 20), outline=False)
    p.ellipse((0.82, 0.13, 0.88, 0.21), (20, 20, 20), outline=False)


def umbrella(p: Pen) -> None:
    pink, white = p.c((240, 70, 160)), (250, 250, 250)
    p.line([(0.5, 0.45), (0.5, 0.9), (0.44, 0.98), (0.36, 0.9)], (60, 60, 65), 0.06)
    for k in range(6):
        p.pieslice((0.0, 0.02, 1.0, 1.04), 180 + 30 * k, 210 + 30 * k, pink if k % 2 == 0 else white)


def kite(p: Pen) -> None:
    red, yellow = p.c((225, 35, 40)), p.c((250, 210, 30))
    top, right, bottom, left, mid = (0.5, 0.0), (1.0, 0.3), (0.5, 0.8), (0.0, 0.3), (0.5, 0.3)
    p.line([bottom, (0.38, 0.88), (0.58, 0.94), (0.46, 1.0)], (40, 40, 40), 0.04, outline=False)
    for tri, col in (((top, right, mid), red), ((right, bottom, mid), yellow),
                     ((bottom, left, mid), red), ((left, top, mid), yellow)):
        p.poly(tri, col)


def bottle(p: Pen) -> None:
    glass = p.c((30, 145, 65))
    p.rect((0.3, 0.04, 0.7, 0.3), glass)
    p.poly([(0.06, 0.45), (0.3, 0.2), (0.7, 0.2), (0.94, 0.45)], glass)
    p.rect((0.06, 0.36, 0.94, 1.0), glass, radius=0.15)
    p.rect((0.06, 0.55, 0.94, 0.8), (245, 240, 220))
    p.rect((0.06, 0.64, 0.94, 0.7), (220, 40, 40), outline=False)
    p.rect((0.28, 0.0, 0.72, 0.08), (60, 60, 60))


def cup(p: Pen) -> None:
    teal = p.c((25, 175, 195))
    p.ring((0.56, 0.28, 0.98, 0.78), teal, 0.11)
    p.rect((0.04, 0.12, 0.76, 0.98), teal, radius=0.12)
    p.ellipse((0.04, 0.06, 0.76, 0.22), p.c((130, 225, 235), 6))


def fork(p: Pen) -> None:
    steel = p.c((195, 200, 212), 10)
    p.rect((0.36, 0.42, 0.64, 1.0), steel, radius=0.12)
    p.poly([(0.1, 0.3), (0.9, 0.3), (0.66, 0.5), (0.34, 0.5)], steel)
    for x0 in (0.1, 0.41, 0.72):
        p.rect((x0, 0.0, x0 + 0.18, 0.36), steel)


def knife(p: Pen) -> None:
    p.poly([(0.22, 0.62), (0.22, 0.0), (0.85, 0.24), (0.85, 0.62)], p.c((220, 225, 232), 8))
    p.rect((0.14, 0.58, 0.92, 1.0), p.c((135, 70, 35)), radius=0.15)
    for y0 in (0.68, 0.84):
        p.ellipse((0.44, y0, 0.62, y0 + 0.08), (235, 225, 200), outline=False)


def bowl(p: Pen) -> None:
    blue = p.c((40, 95, 215))
    p.rect((0.35, 0.86, 0.65, 1.0), blue)
    p.chord((0.0, -0.35, 1.0, 0.94), 0, 180, Tex(blue, (245, 245, 245), "hstripes", 0.26))
    p.ellipse((0.0, 0.17, 1.0, 0.43), p.c((25, 50, 140), 6))


def _arc(cx: float, cy: float, rx: float, ry: float, a0: float, a1: float, n: int = 16) -> list[tuple[float, float]]:
    return [(cx + rx * math.cos(math.radians(a0 + (a1 - a0) * i / n)),
             cy + ry * math.sin(math.radians(a0 + (a1 - a0) * i / n))) for i in range(n + 1)]


def banana(p: Pen) -> None:
    outer = _arc(0.5, 0.0, 0.5, 0.95, 8, 172)
    inner = _arc(0.5, 0.0, 0.42, 0.55, 172, 8)
    p.poly(outer + inner, p.c((250, 220, 40)))
    p.line([outer[0], inner[-1]], (90, 60, 20), 0.08, outline=False)   # brown tips
    p.line([outer[-1], inner[0]], (90, 60, 20), 0.08, outline=False)


def chair(p: Pen) -> None:
    wood = p.c((205, 110, 40))
    p.rect((0.08, 0.0, 0.26, 1.0), wood)
    p.rect((0.78, 0.6, 0.94, 1.0), wood)
    p.rect((0.08, 0.04, 0.4, 0.42), Tex(wood, (140, 70, 20), "hstripes", 0.2))
    p.rect((0.08, 0.5, 0.96, 0.64), wood)
    p.rect((0.2, 0.78, 0.84, 0.84), wood, outline=False)


def couch(p: Pen) -> None:
    cloth = p.c((150, 35, 80))
    for x0 in (0.08, 0.86):
        p.rect((x0, 0.8, x0 + 0.06, 1.0), (50, 30, 20))
    p.rect((0.06, 0.04, 0.94, 0.58), Tex(cloth, (215, 110, 150), "dots", 0.34), radius=0.1)
    p.rect((0.12, 0.5, 0.5, 0.84), cloth, radius=0.06)
    p.rect((0.5, 0.5, 0.88, 0.84), cloth, radius=0.06)
    p.rect((0.0, 0.28, 0.15, 0.86), cloth, radius=0.07)
    p.rect((0.85, 0.28, 1.0, 0.86), cloth, radius=0.07)


def _leaf(base: tuple[float, float], tip: tuple[float, float], width: float) -> list[tuple[float, float]]:
    (bx, by), (tx, ty) = base, tip
    mx, my, dx, dy = (bx + tx) / 2, (by + ty) / 2, tx - bx, ty - by
    n = math.hypot(dx, dy) or 1.0
    ox, oy = -dy / n * width, dx / n * width
    return [base, (mx + ox, my + oy), tip, (mx - ox, my - oy)]


def potted_plant(p: Pen) -> None:
    green = p.c((45, 165, 60))
    for tip in ((0.04, 0.22), (0.26, 0.02), (0.55, 0.0), (0.8, 0.06), (0.97, 0.28)):
        p.poly(_leaf((0.5, 0.62), tip, 0.12), green)
    p.poly([(0.2, 0.6), (0.8, 0.6), (0.7, 1.0), (0.3, 1.0)], p.c((200, 100, 55)))
    p.rect((0.14, 0.55, 0.86, 0.67), p.c((175, 80, 40)))


def dining_table(p: Pen) -> None:
    legs = p.c((95, 55, 25))
    for x0 in (0.07, 0.3, 0.64, 0.86):
        p.rect((x0, 0.45, x0 + 0.07, 1.0 if x0 in (0.07, 0.86) else 0.9), legs)
    cloth = Tex(p.c((215, 40, 40)), (248, 248, 248), "checker", 0.16)
    p.poly([(0.1, 0.04), (0.9, 0.04), (1.0, 0.4), (0.0, 0.4)], cloth)
    p.rect((0.0, 0.4, 1.0, 0.58), cloth)


_TV_BARS = ((235, 235, 235), (240, 220, 40), (40, 210, 225), (50, 200, 60), (220, 50, 210), (225, 40, 40),
            (40, 60, 220))


def tv(p: Pen) -> None:
    p.poly([(0.42, 0.8), (0.58, 0.8), (0.63, 0.93), (0.37, 0.93)], (70, 70, 75))
    p.rect((0.22, 0.92, 0.78, 1.0), (70, 70, 75))
    p.rect((0.0, 0.0, 1.0, 0.82), p.c((28, 28, 32), 6), radius=0.06)
    n, x0, x1 = len(_TV_BARS), 0.07, 0.93
    for i, col in enumerate(_TV_BARS):
        p.rect((x0 + (x1 - x0) * i / n, 0.08, x0 + (x1 - x0) * (i + 1) / n, 0.74), col, outline=False)


def laptop(p: Pen) -> None:
    p.poly([(0.13, 0.66), (0.87, 0.66), (1.0, 0.98), (0.0, 0.98)],
           Tex(p.c((165, 165, 175)), (95, 95, 105), "grid", 0.12))
    p.rect((0.13, 0.0, 0.87, 0.68), p.c((210, 210, 218), 8), radius=0.05)
    p.rect((0.2, 0.08, 0.8, 0.6), p.c((40, 80, 175)))
    for y in (0.2, 0.32, 0.44):
        p.rect((0.27, y, 0.7, y + 0.05), (170, 200, 245), outline=False)


def mouse(p: Pen) -> None:
    p.line([(0.5, 0.25), (0.5, 0.1), (0.66, 0.0)], (30, 30, 30), 0.06, outline=False)
    p.ellipse((0.06, 0.16, 0.94, 1.0), p.c((205, 205, 215), 10))
    p.line([(0.5, 0.17), (0.5, 0.5)], INK[:3], 0.04, outline=False)
    p.line([(0.1, 0.5), (0.9, 0.5)], INK[:3], 0.04, outline=False)
    p.rect((0.42, 0.25, 0.58, 0.42), (225, 40, 40), radius=0.05)


def keyboard(p: Pen) -> None:
    p.rect((0.0, 0.08, 1.0, 0.92), p.c((45, 45, 52), 8), radius=0.1)
    key = (220, 220, 228)
    for r in range(3):
        for k in range(10):
            x0, y0 = 0.04 + k * 0.094, 0.18 + r * 0.19
            p.rect((x0, y0, x0 + 0.07, y0 + 0.13), key, outline=False)
    p.rect((0.27, 0.75, 0.73, 0.84), key, outline=False)


def book(p: Pen) -> None:
    p.rect((0.14, 0.05, 1.0, 1.0), Tex((240, 235, 215), (160, 155, 140), "hstripes", 0.1))
    cover, gold = p.c((35, 55, 155)), p.c((235, 190, 50), 8)
    p.rect((0.0, 0.0, 0.88, 0.94), cover)
    p.rect((0.0, 0.0, 0.16, 0.94), p.c((20, 30, 95), 6))
    for y0 in (0.14, 0.74):
        p.rect((0.16, y0, 0.88, y0 + 0.07), gold, outline=False)
    p.rect((0.34, 0.36, 0.72, 0.54), gold)


def clock(p: Pen) -> None:
    p.ellipse((0.02, 0.02, 0.98, 0.98), p.c((248, 246, 236), 6))
    p.ring((0.02, 0.02, 0.98, 0.98), (25, 25, 30), 0.08)
    for k in range(12):
        a = math.radians(30 * k)
        x, y = 0.5 + 0.34 * math.cos(a), 0.5 + 0.34 * math.sin(a)
        p.ellipse((x - 0.025, y - 0.025, x + 0.025, y + 0.025), (40, 40, 45), outline=False)
    for length, width in ((0.22, 0.08), (0.33, 0.05)):   # random time: hands are a free detail per instance
        a = p.rng.uniform(0, 2 * math.pi)
        p.line([(0.5, 0.5), (0.5 + length * math.cos(a), 0.5 + length * math.sin(a))], (25, 25, 30), width,
               outline=False)
    p.ellipse((0.45, 0.45, 0.55, 0.55), (220, 30, 30), outline=False)


GLYPHS: dict[str, Callable[[Pen], None]] = {
    "person": person, "bicycle": bicycle, "car": car, "bus": bus, "traffic light": traffic_light,
    "stop sign": stop_sign, "bench": bench, "bird": bird, "cat": cat, "dog": dog, "umbrella": umbrella,
    "kite": kite, "bottle": bottle, "cup": cup, "fork": fork, "knife": knife, "bowl": bowl, "banana": banana,
    "chair": chair, "couch": couch, "potted plant": potted_plant, "dining table": dining_table, "tv": tv,
    "laptop": laptop, "mouse": mouse, "keyboard": keyboard, "book": book, "clock": clock,
}


@functools.lru_cache(maxsize=2048)
def render_sprite(name: str, w: int, h: int, style: int, flip: bool) -> tuple[Image.Image, np.ndarray]:
    """The glyph as a (w, h) RGBA image and its boolean silhouette (alpha >= 50%).

    Cached because a scene's sprites are rendered once for the layout (visibility) and again for the image.
    Callers must not mutate the returned image.
    """
    pen = Pen(w, h, random.Random(style))
    GLYPHS[name](pen)
    img = pen.img.resize((w, h), Image.Resampling.BOX)
    if flip:
        img = ImageOps.mirror(img)
    mask = np.asarray(img.getchannel("A")) >= 128
    return img, mask
