"""Top-down frames of the driving environment (numpy + Pillow, no pygame) and GIF export.

The camera follows the ego car: ``VIEW_BEHIND`` metres behind it to ``VIEW_AHEAD`` ahead. The
ego car is blue, other cars grey (red when stopped), pedestrians orange, the signal a
coloured disc above its stop line, the crosswalk a zebra, the destination a chequered line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

VIEW_BEHIND = 30.0
VIEW_AHEAD = 120.0
PX_PER_M_X = 4.0
PX_PER_M_Y = 6.0
HUD_H = 18
MARGIN_M = 3.0  # kerb/sidewalk drawn on each side of the road, metres

_ROAD = (70, 70, 76)
_GRASS = (92, 140, 82)
_WALK = (180, 180, 170)
_EGO = (40, 110, 230)
_CAR = (200, 200, 205)
_CAR_BRAKE = (220, 60, 50)
_PED = (250, 150, 30)
_SIGNAL = {0: (40, 200, 60), 1: (240, 200, 30), 2: (230, 40, 40)}


def render_frame(env: Any, title: str = "") -> np.ndarray:
    """Draw the current state of ``env`` as an ``(H, W, 3)`` uint8 array."""
    c = env.cfg
    width = int((VIEW_BEHIND + VIEW_AHEAD) * PX_PER_M_X)
    road_h = c.n_lanes * c.lane_width
    height = int((road_h + 2 * MARGIN_M) * PX_PER_M_Y) + HUD_H
    img = Image.new("RGB", (width, height), _GRASS)
    draw = ImageDraw.Draw(img)
    x0 = float(env.x[0]) - VIEW_BEHIND

    def px(x: float) -> float:
        return (x - x0) * PX_PER_M_X

    def py(y: float) -> float:
        # y grows to the left of the car = up in the picture.
        return HUD_H + (env._road_left + MARGIN_M - y) * PX_PER_M_Y

    top, bottom = py(env._road_left), py(env._road_right)
    draw.rectangle([0, py(env._road_left + 1.5), width, top], fill=_WALK)
    draw.rectangle([0, bottom, width, py(env._road_right - 1.5)], fill=_WALK)
    draw.rectangle([0, top, width, bottom], fill=_ROAD)
    # Dashed lane markings, anchored to the world so they scroll.
    for k in range(1, c.n_lanes):
        yy = py(env._road_right + k * c.lane_width)
        start = np.floor(x0 / 6.0) * 6.0
        for xm in np.arange(start, x0 + VIEW_BEHIND + VIEW_AHEAD, 6.0):
            draw.line([px(xm), yy, px(xm + 3.0), yy], fill=(230, 230, 230), width=1)
    # Crosswalk (zebra) and pedestrians.
    if px(env._cw_far) > 0 and px(env._cw_near) < width:
        for k in range(int(road_h / 0.8)):
            if k % 2 == 0:
                ya = env._road_right + k * 0.8
                draw.rectangle(
                    [px(env._cw_near), py(ya + 0.8), px(env._cw_far), py(ya)], fill=(235, 235, 235)
                )
    for yped, active in zip(env.ped_y, env.ped_active, strict=True):
        if active:
            cx, cy = px(c.crosswalk_position), py(float(yped))
            draw.ellipse([cx - 4, cy - 4, cx + 4, cy + 4], fill=_PED, outline=(0, 0, 0))
    # Stop line and signal.
    phase, _ = env.signal_phase()
    sx = px(c.signal_position)
    if -10 < sx < width + 10:
        draw.line([sx, top, sx, bottom], fill=(245, 245, 245), width=2)
        draw.ellipse([sx - 6, top - 14, sx + 6, top - 2], fill=_SIGNAL[phase], outline=(0, 0, 0))
    # Destination.
    dx = px(c.road_length)
    if 0 < dx < width:
        for k in range(int(road_h / 1.0)):
            colour = (255, 255, 255) if k % 2 else (0, 0, 0)
            draw.rectangle(
                [dx, py(env._road_right + k + 1.0), dx + 4, py(env._road_right + k)], fill=colour
            )
    # Vehicles.
    half_l, half_w = c.car_length / 2, c.car_width / 2
    for i in range(len(env.x)):
        cx = float(env.x[i])
        if not -10 < px(cx) < width + 10:
            continue
        colour = _EGO if i == 0 else _CAR_BRAKE if env.v[i] < 0.5 else _CAR
        yy = float(env.y[i])
        draw.rectangle(
            [px(cx - half_l), py(yy + half_w), px(cx + half_l), py(yy - half_w)],
            fill=colour,
            outline=(20, 20, 20),
        )
    # Heads-up display.
    hud = (
        f"{title}  t={env.t:5.1f}s  v={env.v[0] * 3.6:5.1f} km/h  "
        f"to go={max(c.road_length - env.x[0], 0):5.0f} m"
    )
    draw.rectangle([0, 0, width, HUD_H], fill=(20, 20, 20))
    draw.text((4, 3), hud.strip(), fill=(255, 255, 255))
    return np.asarray(img, dtype=np.uint8)


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 8.0) -> Path:
    """Write ``frames`` (each ``(H, W, 3)`` uint8) as a looping animated GIF.

    Frames share one adaptive palette (small files; the scene has few colours).
    """
    if not frames:
        raise ValueError("save_gif: no frames to write")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    first = Image.fromarray(np.asarray(frames[0], dtype=np.uint8)).convert(
        "P", palette=Image.Palette.ADAPTIVE, colors=64
    )
    rest = [
        Image.fromarray(np.asarray(f, dtype=np.uint8)).quantize(palette=first) for f in frames[1:]
    ]
    first.save(
        path,
        save_all=True,
        append_images=rest,
        duration=max(int(1000 / fps), 20),
        loop=0,
        optimize=True,
        disposal=1,
    )
    return path


def stack_frames(top: Sequence[np.ndarray], bottom: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Two episodes one above the other (the shorter one holds its last frame)."""
    out = []
    for a, b in _in_step(top, bottom):
        sep = np.full((4, a.shape[1], 3), 255, dtype=np.uint8)
        out.append(np.concatenate([a, sep, b], axis=0))
    return out


def _in_step(
    first: Sequence[np.ndarray], second: Sequence[np.ndarray]
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Frame pairs of two episodes, step by step; the shorter one holds its last frame."""
    for k in range(max(len(first), len(second))):
        yield first[min(k, len(first) - 1)], second[min(k, len(second) - 1)]


CAPTION_H = 16


def caption(frame: np.ndarray, text: str) -> np.ndarray:
    """``frame`` with a dark bar beneath it holding one line of ``text``."""
    img = Image.new("RGB", (frame.shape[1], frame.shape[0] + CAPTION_H), (25, 25, 25))
    img.paste(Image.fromarray(np.asarray(frame, dtype=np.uint8)), (0, 0))
    ImageDraw.Draw(img).text((4, frame.shape[0] + 2), text, fill=(235, 235, 235))
    return np.asarray(img, dtype=np.uint8)


def side_by_side(left: Sequence[np.ndarray], right: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Two episodes next to each other (the shorter one holds its last frame)."""
    out = []
    for a, b in _in_step(left, right):
        h = max(a.shape[0], b.shape[0])
        pad = [np.pad(f, ((0, h - f.shape[0]), (0, 0), (0, 0))) for f in (a, b)]
        sep = np.full((h, 4, 3), 255, dtype=np.uint8)
        out.append(np.concatenate([pad[0], sep, pad[1]], axis=1))
    return out


def strip(frames: Sequence[np.ndarray], steps: Sequence[int]) -> np.ndarray:
    """The frames at ``steps`` (indices into ``frames``, clamped to the last) one under another."""
    if not frames:
        raise ValueError("strip: no frames")
    rows = [np.asarray(frames[min(k, len(frames) - 1)], dtype=np.uint8) for k in steps]
    sep = np.full((3, rows[0].shape[1], 3), 255, dtype=np.uint8)
    out = [rows[0]]
    for row in rows[1:]:
        out += [sep, row]
    return np.concatenate(out, axis=0)


def evenly_spaced(n_frames: int, k: int) -> list[int]:
    """``k`` frame indices spread evenly from the first frame to the last (all if fewer)."""
    if k >= n_frames:
        return list(range(n_frames))
    return sorted({round(i * (n_frames - 1) / max(k - 1, 1)) for i in range(k)})


def save_png(image: np.ndarray, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(image, dtype=np.uint8)).save(path, optimize=True)
    return path
