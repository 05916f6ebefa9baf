"""Model-free readers of the nano world's media and text, used to score what decoders and the LLM produce.

Decoded media are blurrier and noisier than the generator's, so each reader relies on coarse evidence only:

* image: the background is the median of the border pixels; the foreground is the largest blob far from it. Colour
  is the nearest declared RGB to the blob's core; the mask is the blob cut at half contrast (the level that a
  symmetric blur leaves in place); shape comes from the k-fold symmetry of the soft foreground (complex moments
  k = 3, 4, 5: triangle, square, star; none: circle), which blur weakens but does not mix up, unlike outline
  features such as corners or bounding-box fill; position is the centroid's third.
* video: the image reader on every frame; colour and shape by vote, direction from the centroid's path.
* sound: the pitch is the strongest spectral peak, moved down to a subharmonic when one carries real energy (so a
  strong harmonic cannot pass for the fundamental); the colour is the nearest note on a log scale; the rhythm is
  read from the envelope of the note's band (beeping drops to near silence between beeps, steady never does).
* text: the attribute words and phrases declared in `world`.

Every reader returns None for an attribute it cannot read (e.g. an empty image), which scores as wrong.
"""

from __future__ import annotations

import os
import re

import numpy as np
from scipy import ndimage, signal

from . import world

__all__ = ["image_attributes", "video_attributes", "sound_attributes", "caption_attributes", "load_frames",
           "shape_features", "matches"]

_COLOUR_NAMES = tuple(world.COLOURS)
_COLOUR_RGB = np.array([world.COLOURS[c] for c in _COLOUR_NAMES], dtype=np.float64)
_MIN_CONTRAST = 50.0  # RGB distance from the background that counts as foreground at all
_MIN_PIXELS = 12  # a blob smaller than this is a speck, not a shape


# --- images ----------------------------------------------------------------------------------------------------

def _as_array(img) -> np.ndarray:
    """PIL image, path or array (uint8, or float in [0, 1]) -> float64 (H, W, 3) in 0..255."""
    if isinstance(img, (str, os.PathLike)):
        from PIL import Image

        with Image.open(img) as im:
            img = im.convert("RGB")
    if hasattr(img, "convert"):  # PIL
        img = np.asarray(img.convert("RGB"))
    a = np.asarray(img)
    if a.ndim == 2:
        a = np.stack([a] * 3, axis=-1)
    a = a[..., :3].astype(np.float64)
    if a.max(initial=0) <= 1.0 and np.asarray(img).dtype.kind == "f":
        a = a * 255.0
    return a


def _background(a: np.ndarray) -> np.ndarray:
    border = np.concatenate([a[0], a[-1], a[:, 0], a[:, -1]])
    return np.median(border, axis=0)


def _blob(a: np.ndarray) -> dict | None:
    """The foreground blob of one frame: its colour name, half-contrast mask and centroid (x, y)."""
    bg = _background(a)
    dist = np.linalg.norm(a - bg, axis=-1)
    labels, n = ndimage.label(dist > _MIN_CONTRAST)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(dist), labels, index=np.arange(1, n + 1))
    rough = labels == 1 + int(np.argmax(sizes))
    if rough.sum() < _MIN_PIXELS:
        return None
    # The core (the blob's most contrasted half) is free of blurred edges: its median is the shape's colour.
    core = rough & (dist >= np.percentile(dist[rough], 50))
    rgb = np.median(a[core], axis=0)
    colour = _COLOUR_NAMES[int(np.argmin(np.linalg.norm(_COLOUR_RGB - rgb, axis=1)))]
    # Half-contrast mask along the background -> shape-colour axis, largest component, holes filled.
    axis = rgb - bg
    level = ((a - bg) @ axis) / max(float(axis @ axis), 1e-6)
    labels, n = ndimage.label(level > 0.5)
    if n == 0:
        return None
    sizes = ndimage.sum_labels(np.ones_like(level), labels, index=np.arange(1, n + 1))
    mask = ndimage.binary_fill_holes(labels == 1 + int(np.argmax(sizes)))
    ys, xs = np.nonzero(mask)
    if len(xs) < _MIN_PIXELS:
        return None
    # Soft foreground weights near the blob, for the shape moments: blur moves a binary mask's outline, but
    # only spreads these weights.
    weights = np.clip(level, 0.0, 1.0) * ndimage.binary_dilation(mask, iterations=3)
    return {"colour": colour, "rgb": rgb, "mask": mask, "weights": weights,
            "centroid": (xs.mean() + 0.5, ys.mean() + 0.5)}


_FOLDS = (3, 4, 5)  # triangle, square, star
_FOLD_SHAPES = {3: "triangle", 4: "square", 5: "star"}


def shape_features(weights: np.ndarray) -> dict[int, float]:
    """k -> |sum w z^k| / sum w |z|^k for k = 3, 4, 5, with z the pixel's offset from the weighted centroid.

    These normalised complex moments measure k-fold symmetry: 0 for a disc, and on clean renders about 0.65 (k=3)
    for the triangle, 0.42 (k=4) for the square and 0.81 (k=5) for the star, with the other two k near 0. They
    ignore size, place and rotation, and an isotropic blur only shrinks them (to 0.17-0.45 at blur radius 2, while
    a circle stays under 0.07)."""
    ys, xs = np.mgrid[: weights.shape[0], : weights.shape[1]] + 0.5
    total = weights.sum()
    cx, cy = (weights * xs).sum() / total, (weights * ys).sum() / total
    z = (xs - cx) + 1j * (ys - cy)
    return {k: float(abs((weights * z**k).sum()) / max((weights * np.abs(z) ** k).sum(), 1e-12)) for k in _FOLDS}


def _shape(weights: np.ndarray) -> str:
    moments = shape_features(weights)
    k = max(moments, key=moments.get)
    return _FOLD_SHAPES[k] if moments[k] >= _CIRCLE_MAX else "circle"


_CIRCLE_MAX = 0.12  # strongest k-fold moment of a circle stays under ~0.07, of any other shape above ~0.17


def _third(x: float, size: int) -> int:
    return min(2, max(0, int(3 * x / size)))


def image_attributes(img) -> dict:
    """{"colour", "shape", "position"} of an image (PIL, path or array); None where nothing can be read."""
    a = _as_array(img)
    blob = _blob(a)
    if blob is None:
        return {"colour": None, "shape": None, "position": None}
    return {"colour": blob["colour"], "shape": _shape(blob["weights"]),
            "position": world.POSITIONS[_third(blob["centroid"][0], a.shape[1])]}


# --- videos ----------------------------------------------------------------------------------------------------

def load_frames(path) -> np.ndarray:
    """All frames of a video file as (T, H, W, 3) uint8, decoded with moviepy."""
    from moviepy import VideoFileClip

    clip = VideoFileClip(os.fspath(path), audio=False)
    try:
        return np.stack([f[..., :3] for f in clip.iter_frames()])
    finally:
        clip.close()


def _vote(values):
    values = [v for v in values if v is not None]
    return max(set(values), key=values.count) if values else None


def video_attributes(frames) -> dict:
    """{"colour", "shape", "direction"} of a video ((T, H, W, 3) frames or a path); None where unreadable."""
    if isinstance(frames, (str, os.PathLike)):
        frames = load_frames(frames)
    blobs = [_blob(_as_array(f)) for f in frames]
    found = [(t, b) for t, b in enumerate(blobs) if b is not None]
    out = {"colour": _vote([b["colour"] for _, b in found]), "shape": _vote([_shape(b["weights"]) for _, b in found]),
           "direction": None}
    if len(found) >= 2:
        t = np.array([t for t, _ in found], dtype=np.float64)
        xy = np.array([b["centroid"] for _, b in found])
        # Least-squares slope of the centroid path (px per frame): robust to one frame's badly read blob.
        vx, vy = (np.polyfit(t, xy[:, k], 1)[0] for k in (0, 1))
        if max(abs(vx), abs(vy)) * (len(frames) - 1) >= 4.0:  # under 4 px in all: not moving
            out["direction"] = ("right" if vx > 0 else "left") if abs(vx) >= abs(vy) else ("down" if vy > 0 else "up")
    return out


# --- sounds ----------------------------------------------------------------------------------------------------

def _band_energy(freqs: np.ndarray, power: np.ndarray, f: float, width: float = 0.04) -> float:
    band = (freqs >= f * (1 - width)) & (freqs <= f * (1 + width))
    return float(power[band].max(initial=0.0))


def _pitch(wave: np.ndarray, sr: int) -> float | None:
    nper = min(len(wave), 4096)  # ~4 Hz bins at 16 kHz
    freqs, power = signal.welch(wave, sr, nperseg=nper, noverlap=nper // 2)
    keep = (freqs >= 150) & (freqs <= 4000)  # a margin around the declared notes (262-1976 Hz)
    if not keep.any() or power[keep].max() <= 0:
        return None
    k = int(np.flatnonzero(keep)[np.argmax(power[keep])])
    if 0 < k < len(power) - 1:  # parabolic interpolation on log power around the peak
        a, b, c = np.log(power[k - 1: k + 2] + 1e-30)
        f = freqs[k] + 0.5 * (a - c) / (a - 2 * b + c) * (freqs[1] - freqs[0]) if (a - 2 * b + c) < 0 else freqs[k]
    else:
        f = freqs[k]
    peak = power[k]
    # Fundamental check: a sub-harmonic with a real share of the peak's energy is the pitch (lowest first).
    for div in (3, 2):
        if f / div >= 150 and _band_energy(freqs, power, f / div) >= 0.1 * peak:
            return f / div
    return float(f)


def _rhythm(wave: np.ndarray, sr: int, f0: float) -> str | None:
    hop, nper = sr // 100, min(len(wave), sr // 32)  # 10 ms hop, 31 ms window: resolves 4 Hz gating well
    freqs, _, spec = signal.stft(wave, sr, nperseg=nper, noverlap=nper - hop, boundary=None, padded=False)
    power = np.abs(spec) ** 2
    band = np.zeros(len(freqs), dtype=bool)
    for h in (1, 2, 3):  # the note's partials only, so broadband noise hardly fills the gaps
        band |= (freqs >= h * f0 * 0.9) & (freqs <= h * f0 * 1.1)
    env = power[band].sum(axis=0)
    if len(env) < 8 or env.max() <= 0:
        return None
    top = np.percentile(env, 95)
    on = np.flatnonzero(env > 0.25 * top)
    env = env[on[0]: on[-1] + 1]  # from the first to the last sounding frame: leading / trailing silence is not rhythm
    # Beeping spends about half of its time far below its peak; a steady tone (even a noisy or wobbly one) does not.
    quiet = float(np.mean(env < 0.1 * top))
    return "beeping" if quiet > 0.15 else "steady"


def sound_attributes(wave, sr: int | None = None) -> dict:
    """{"colour", "pitch_hz", "rhythm"} of a sound (waveform + sample rate, or a path)."""
    if isinstance(wave, (str, os.PathLike)):
        import soundfile

        wave, sr = soundfile.read(os.fspath(wave), dtype="float32", always_2d=True)
        wave = wave.mean(axis=1)
    sr = int(sr or world.SAMPLE_RATE)
    wave = np.asarray(wave, dtype=np.float64)
    if wave.ndim > 1:
        wave = wave.mean(axis=-1) if wave.shape[-1] <= 2 else wave.mean(axis=0)
    if len(wave) < sr // 20 or not np.any(wave):
        return {"colour": None, "pitch_hz": None, "rhythm": None}
    f0 = _pitch(wave, sr)
    if f0 is None:
        return {"colour": None, "pitch_hz": None, "rhythm": None}
    return {"colour": world.colour_of_pitch(f0), "pitch_hz": round(f0, 1), "rhythm": _rhythm(wave, sr, f0)}


# --- text ------------------------------------------------------------------------------------------------------

def _phrase_re(phrases) -> str:
    return "|".join(re.escape(p) for p in sorted(phrases, key=len, reverse=True))


_MOTION_VERBS = r"(?:mov(?:e|es|ing)|slid(?:e|es|ing)|travell?(?:s|ing)?|go(?:es|ing)?|head(?:s|ing)?|drift(?:s|ing)?)"
_DIRECTION_RES = [  # declared phrases first, then looser "moves to the left" / "goes up" forms
    (d, re.compile(rf"\b(?:{_phrase_re(world.DIRECTION_PHRASES[d])})\b")) for d in world.DIRECTIONS
] + [
    (d, re.compile(rf"\b{_MOTION_VERBS}\s+(?:to the |towards the |toward the )?{d}(?:wards?)?\b"))
    for d in world.DIRECTIONS
] + [("up", re.compile(r"\b(?:rises|upwards?)\b")), ("down", re.compile(r"\b(?:falls|sinks|downwards?)\b"))]
_POSITION_RES = [(p, re.compile(rf"\b(?:{_phrase_re(world.POSITION_PHRASES[p])})\b")) for p in world.POSITIONS] + [
    ("left", re.compile(r"\bleft\b")), ("right", re.compile(r"\bright\b")),
    ("centre", re.compile(r"\b(?:centre|center|middle|central)\b")),
]
_WORD_RES = {
    "colour": [(c, re.compile(rf"\b{c}\b")) for c in world.COLOURS],
    "shape": [(s, re.compile(rf"\b{s}s?\b")) for s in world.SHAPES],
    "rhythm": [(r, re.compile(rf"\b(?:{_phrase_re(world.RHYTHM_WORDS[r])})\b")) for r in world.RHYTHMS],
}


def _first(rules, text: str) -> tuple[str | None, tuple[int, int] | None]:
    """The value whose pattern matches earliest in `text` (earlier rules win ties), and the span it matched."""
    best = None
    for value, rx in rules:
        m = rx.search(text)
        if m and (best is None or m.start() < best[1][0]):
            best = (value, m.span())
    return best if best else (None, None)


def caption_attributes(text: str) -> dict:
    """The attributes a text names: any of colour, shape, position, direction, rhythm (first mention of each).

    Motion phrases are read first and blanked out, so "moving to the left" is a direction and not a position."""
    text = " " + text.lower().replace("-", " ") + " "
    text = text.replace("left hand", "left").replace("right hand", "right")
    out = {}
    direction, span = _first(_DIRECTION_RES, text)
    while span is not None:  # blank every motion phrase, keep the first one's direction
        out.setdefault("direction", direction)
        text = text[: span[0]] + " " * (span[1] - span[0]) + text[span[1]:]
        direction, span = _first(_DIRECTION_RES, text)
    for name, rules in _WORD_RES.items():
        value, _ = _first(rules, text)
        if value:
            out[name] = value
    position, _ = _first(_POSITION_RES, text)
    if position:
        out["position"] = position
    return out


def matches(found: dict, attrs: dict) -> dict:
    """Per attribute of `attrs`: whether `found` (an oracle's reading) agrees."""
    return {k: found.get(k) == v for k, v in attrs.items() if k in world.VALUES}
