"""How a clip is meant to be shown: its display matrix, or the legacy `rotate` tag.

Phones store a portrait clip as a landscape coded frame plus a display matrix saying
"turn this a quarter before showing it". Fitting the coded frame as it is would teach
the model a sideways world, so the fitting graph begins with the same filters the
ffmpeg command line inserts to show a clip upright (`transpose`, `hflip`, `vflip`,
`rotate`), chosen by the same rules.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import av
from av.sidedata.sidedata import Type as SideDataType

Filter = tuple[str, str | None]  # (ffmpeg filter name, its arguments)


@dataclass(frozen=True)
class Orientation:
    """What turns the coded frame upright: `rotation` clockwise degrees, then a
    horizontal mirror when `mirrored`; `filters` does exactly that."""

    rotation: int = 0
    mirrored: bool = False
    filters: tuple[Filter, ...] = ()

    def displayed_size(self, width: int, height: int) -> tuple[int, int]:
        """The frame size as shown (a quarter turn swaps the sides; `rotate` keeps them)."""
        return (height, width) if self.rotation in (90, 270) else (width, height)


UPRIGHT = Orientation()


def _clockwise_degrees(matrix: Sequence[int]) -> float:
    """The clockwise rotation a display matrix applies, in [0, 360)."""
    a, b, c, d = (v / 65536 for v in (matrix[0], matrix[1], matrix[3], matrix[4]))
    scale_x, scale_y = math.hypot(a, c), math.hypot(b, d)
    if scale_x == 0 or scale_y == 0:
        return 0.0  # a degenerate matrix: show the frame as coded
    # the matrix's own angle is counter-clockwise, whole degrees as ffmpeg rounds it
    theta = float(round(math.degrees(math.atan2(b / scale_y, a / scale_x))))
    return theta - 360 * math.floor(theta / 360 + 0.9 / 360)


def from_display_matrix(matrix: Sequence[int]) -> Orientation:
    """The filters for a display matrix (9 int32, 16.16 fixed point), by ffmpeg's rules."""
    theta = _clockwise_degrees(matrix)
    if abs(theta - 90) < 1:
        flip = matrix[3] > 0
        return Orientation(90, flip, (("transpose", "cclock_flip" if flip else "clock"),))
    if abs(theta - 180) < 1:
        hflip, vflip = matrix[0] < 0, matrix[4] < 0
        filters = ((("hflip", None),) if hflip else ()) + ((("vflip", None),) if vflip else ())
        # both flips are half a turn; a vertical flip alone is half a turn and a mirror
        return Orientation(180 if vflip else 0, hflip != vflip, filters)
    if abs(theta - 270) < 1:
        flip = matrix[3] < 0
        return Orientation(270, flip, (("transpose", "clock_flip" if flip else "cclock"),))
    if abs(theta) > 1 and abs(theta - 360) > 1:
        return Orientation(round(theta), False, (("rotate", f"{theta:f}*PI/180"),))
    if matrix[4] < 0:
        return Orientation(180, True, (("vflip", None),))
    return UPRIGHT


def from_rotate_tag(value: str) -> Orientation:
    """The legacy `rotate` tag: clockwise degrees, no mirror."""
    try:
        degrees = float(value)
    except ValueError:
        return UPRIGHT
    if not math.isfinite(degrees):
        return UPRIGHT
    # the display matrix of a clockwise turn: its counter-clockwise angle is -degrees
    radians = math.radians(-degrees)
    cos, sin = math.cos(radians), math.sin(radians)
    return from_display_matrix([round(cos * 65536), round(-sin * 65536), 0,
                                round(sin * 65536), round(cos * 65536), 0, 0, 0, 1 << 30])


def _rotate_tag(metadata: Mapping[str, str]) -> str | None:
    return next((v for k, v in metadata.items() if k.lower() == "rotate"), None)


def read_orientation(frame: av.VideoFrame, stream: av.VideoStream) -> Orientation:
    """A decoded frame's display matrix (the stream's, carried on every frame), else the
    stream's legacy `rotate` tag, else upright."""
    side = frame.side_data.get(SideDataType.DISPLAYMATRIX)
    if side is not None:
        return from_display_matrix(struct.unpack("=9i", bytes(side)))
    tag = _rotate_tag(stream.metadata)
    return from_rotate_tag(tag) if tag is not None else UPRIGHT
