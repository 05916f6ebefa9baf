"""The world of NExT-GPT nano: its whole vocabulary, and a seeded generator of its media, captions and dialogues.

What is in the world
--------------------
* images, 64x64 RGB: one filled shape (circle, square, triangle, star) in one of six colours at a position
  (left / centre / right third, vertically centred, with small jitter of place and size) on a plain light-grey
  background.
* videos, 8 frames at 8 fps, 64x64: such a shape moving left, right, up or down by 28-34 px.
* sounds, 16 kHz mono, 1-2 s: a tone at the note of a colour (each colour has its own note, so "the sound of
  this picture" means something), with a few weak harmonics and a rhythm: steady, or beeping at about 4 Hz.

The vocabulary (`COLOURS`, `NOTES`, `SHAPES`, `POSITIONS`, `DIRECTIONS`, `RHYTHMS`) and every phrase that names
a value are declared here and nowhere else: the oracles (`oracles.py`) and training code read them from this module.

Files written by `generate(out_dir, seed)`
------------------------------------------
    out_dir/world.json                      vocabulary, settings, counts, and every item's split and attributes
    out_dir/images/000123.png               T_X pair media; the dialogue media are named like MosIT's,
    out_dir/videos/000123.mp4               mosit_{i,v,a}_{dialogue:06d}_{k:02d}.{png,mp4,wav}
    out_dir/audios/000123.wav               (16-bit PCM)
    out_dir/{train,validation,test}/cc3m.json       [{"caption", "id": "000123", "image_name"}]   (id: str)
    out_dir/{train,validation,test}/webvid.json     [{"caption", "id": 123, "video_name"}]        (id: int)
    out_dir/{train,validation,test}/audiocap.json   [{"audio_id": 123, "audio_name", "caption"}]  (id: int)
    out_dir/{train,validation,test}/dialogues.json  MosIT-style dialogues, below

The splits never share an item (pair items are split by id; a dialogue and all its media share one split), and
every attribute value of every modality appears in train.

Dialogue schema (MosIT raw, `mosit.json`, with media as structured fields instead of `<Image>name</Image>` tags)
---------------------------------------------------------------------------------------------------------------
    {"id": "mosit_000002",
     "task": "i2a",                          # t2i t2v t2a | i2t v2t a2t | i2a a2i i2v v2i v2a a2v |
                                             # edit_image edit_video edit_audio | chain
     "image_list": [{"image_name": "mosit_i_000002_00.png", "data_source": "nano",
                     "caption": "a picture of a blue star on the left"}],
     "video_list": [],                       # entries {"video_name", "data_source", "caption"}
     "audio_list": [{"audio_name": "mosit_a_000002_01.wav", "data_source": "nano",
                     "caption": "a continuous blue tone"}],
     "conversation": [
        {"from": "human", "value": "Look at this image. Play me the constant sound of this shape.",
         "media": [{"modality": "image", "name": "mosit_i_000002_00.png", "at": 19}]},
        {"from": "gpt", "value": "The shape in the picture is blue. Here is the sound of blue: That is a steady blue
                                  tone, as you asked.",
         "media": [{"modality": "audio", "name": "mosit_a_000002_01.wav", "at": 60}]}]}

With `--questions N`, train also holds N dialogues `question_{k:06d}` (tasks i2t / v2t / a2t) that ask one
attribute of a train pair item: the pair media, reused.

`value` is plain text and never contains a media name or tag. Each media item of a turn sits at character offset
`at` of `value`: the turn reads `value[:at]`, then the media, then `value[at:]` (strip the space at the seam), so
text may come before and after it. Turns alternate, start with "human" and end with "gpt", as
in MosIT. Media names resolve to `out_dir/{images,videos,audios}/name`; every media item of a dialogue is also in
its `*_list` with its caption (the target text of the output projectors) and in world.json with its attributes.

In memory
---------
`render_image`, `render_video`, `render_sound` draw one item from its attributes and a numpy Generator (its
jitter); `sample(modality, rng)` draws random attributes, media and a caption, so training code can make data on
the fly. `python -m nextgpt.nano.world OUT_DIR --seed 0` writes the default-sized world.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "COLOURS", "NOTES", "NOTE_NAMES", "SHAPES", "POSITIONS", "DIRECTIONS", "RHYTHMS", "BACKGROUND",
    "IMAGE_SIZE", "VIDEO_FRAMES", "VIDEO_FPS", "SAMPLE_RATE", "SPLITS", "ATTRIBUTES",
    "render_image", "render_video", "render_sound", "caption", "random_attributes", "sample", "asked_attributes",
    "colour_of_pitch", "generate", "write_image", "write_video", "write_sound",
]

# --- vocabulary ------------------------------------------------------------------------------------------------

IMAGE_SIZE = 64
BACKGROUND = (235, 235, 235)  # light grey: every colour below is >= 200 away from it in RGB
# Six hues 60 degrees apart, pushed apart in RGB (closest pair: blue/cyan and blue/purple, about 130 apart) so a
# decoded, colour-shifted image still lands nearest its own colour.
COLOURS = {
    "red": (215, 40, 40),
    "yellow": (240, 200, 20),
    "green": (40, 170, 60),
    "cyan": (20, 195, 215),
    "blue": (35, 65, 220),
    "purple": (160, 45, 185),
}
# A chain of fifths from middle C (ratio 1.5 between neighbours): wide apart on a 64-bin mel scale at 16 kHz, and
# the fundamental stays the strongest partial, so a pitch reader cannot confuse a note with a neighbour's harmonic.
NOTE_NAMES = {"red": "C4", "yellow": "G4", "green": "D5", "cyan": "A5", "blue": "E6", "purple": "B6"}
NOTES = {"red": 261.63, "yellow": 392.00, "green": 587.33, "cyan": 880.00, "blue": 1318.51, "purple": 1975.53}
SHAPES = ("circle", "square", "triangle", "star")
POSITIONS = ("left", "centre", "right")
DIRECTIONS = ("left", "right", "up", "down")
RHYTHMS = ("steady", "beeping")

ATTRIBUTES = {  # the attributes of each modality, in caption order
    "image": ("colour", "shape", "position"),
    "video": ("colour", "shape", "direction"),
    "audio": ("colour", "rhythm"),
}
VALUES = {"colour": tuple(COLOURS), "shape": SHAPES, "position": POSITIONS, "direction": DIRECTIONS,
          "rhythm": RHYTHMS}
SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

# --- geometry, timing and sound settings -----------------------------------------------------------------------

POSITION_X = {"left": 12.5, "centre": 32.0, "right": 51.5}  # centres of the horizontal thirds, kept off the edge
POSITION_JITTER = 1.5  # px, horizontal; the centroid then stays >= 7 px inside its third
VERTICAL_JITTER = 4.0  # px
IMAGE_SIZE_RANGE = (7.5, 9.5)  # nominal radius in px (circle radius; the other shapes scale to a similar area)
VIDEO_SIZE_RANGE = (6.5, 8.0)
VIDEO_FRAMES = 8
VIDEO_FPS = 8
VIDEO_TRAVEL = (28.0, 34.0)  # px from first to last frame: unambiguous even after blur and H.264
VIDEO_CROSS_JITTER = 6.0  # px off the centre line, across the motion
STAR_INNER = 0.45  # inner / outer radius: deep enough notches to survive blur, tips wide enough to survive it too
SUPERSAMPLE = 4  # draw at 4x and box-downsample, for anti-aliased edges

SAMPLE_RATE = 16000
DURATION_RANGE = (1.0, 2.0)  # s
AMPLITUDE_RANGE = (0.3, 0.8)  # peak
HARMONICS = (1.0, 0.3, 0.12)  # relative amplitudes of f, 2f, 3f: a little timbre, fundamental always strongest
PITCH_JITTER = 0.01  # +-1 %, far below the 50 % gap between notes
BEEP_RATE_RANGE = (3.6, 4.4)  # Hz, 50 % duty
RAMP_S = 0.01  # raised-cosine fades on every onset and offset, against clicks

# --- words -----------------------------------------------------------------------------------------------------
# Every phrase that names a value; captions, dialogues and `oracles.caption_attributes` all use these tables.

POSITION_PHRASES = {
    "left": ("on the left", "at the left side", "in the left third", "on the left-hand side"),
    "centre": ("in the centre", "in the middle", "at the center", "in the central third"),
    "right": ("on the right", "at the right side", "in the right third", "on the right-hand side"),
}
MOVE_TO = {"left": "to the left", "centre": "to the centre", "right": "to the right"}  # "move it to the left"
DIRECTION_PHRASES = {
    "left": ("moving left", "moving to the left", "sliding left", "travelling leftwards"),
    "right": ("moving right", "moving to the right", "sliding right", "travelling rightwards"),
    "up": ("moving up", "moving upwards", "rising", "floating up"),
    "down": ("moving down", "moving downwards", "falling", "sinking"),
}
RHYTHM_WORDS = {"steady": ("steady", "continuous", "constant"), "beeping": ("beeping", "pulsing", "intermittent")}
REGISTER = {"red": "low", "yellow": "low", "green": "medium", "cyan": "medium", "blue": "high", "purple": "high"}

# Caption templates: {c} colour, {s} shape, {pos} position phrase, {dir} direction phrase, {r} rhythm word,
# {reg} pitch register. Every template names every attribute of its modality.
IMAGE_TEMPLATES = (
    "a {c} {s} {pos}",
    "a picture of a {c} {s} {pos}",
    "an image of a {c} {s} {pos}",
    "a {c} {s} drawn {pos}",
    "{pos}, a {c} {s}",
    "a simple {c} {s} {pos} on a plain background",
    "a {s} in {c} {pos}",
    "one {c} {s} {pos}",
    "a flat {c} {s} sitting {pos}",
    "a drawing of a {c} {s}, {pos}",
)
VIDEO_TEMPLATES = (
    "a {c} {s} {dir}",
    "a video of a {c} {s} {dir}",
    "a {c} {s} {dir} across the frame",
    "a clip of a {s} in {c} {dir}",
    "an animation of a {c} {s} {dir}",
    "a short video: a {c} {s} {dir}",
    "a {c} {s} that keeps {dir}",
    "footage of a {c} {s} {dir}",
    "a single {c} {s} {dir} on a plain background",
)
AUDIO_TEMPLATES = (
    "a {r} {c} tone",
    "a {r} tone of {c}",
    "the sound of {c}: a {r} tone",
    "a {r} {reg} tone, the note of {c}",
    "the {c} note as a {r} tone",
    "a {r} sound at the pitch of {c}",
    "the note of {c}, {r}",
    "a {r} {c} note",
    "a {reg} {r} tone that sounds {c}",
)
TEMPLATES = {"image": IMAGE_TEMPLATES, "video": VIDEO_TEMPLATES, "audio": AUDIO_TEMPLATES}
# Noun phrases for dialogue text ("Draw {np}."): the subset of templates that read as one.
NOUN_PHRASES = {
    "image": ("a {c} {s} {pos}", "a {s} in {c} {pos}", "a {c} {s}, {pos}"),
    "video": ("a {c} {s} {dir}", "a {s} in {c} {dir}", "a {c} {s} {dir} across the frame"),
    "audio": ("a {r} {c} tone", "a {r} tone of {c}", "a {r} {reg} tone, the note of {c}", "the {c} note as a {r} tone"),
}


def _fill(template: str, attrs: dict, rng: np.random.Generator) -> str:
    """Fill a template with the attribute words, drawing the phrase for each from `rng`."""
    words = {}
    if "colour" in attrs:
        words["c"] = attrs["colour"]
        words["reg"] = REGISTER[attrs["colour"]]
    if "shape" in attrs:
        words["s"] = attrs["shape"]
    if "position" in attrs:
        words["pos"] = _pick(rng, POSITION_PHRASES[attrs["position"]])
    if "direction" in attrs:
        words["dir"] = _pick(rng, DIRECTION_PHRASES[attrs["direction"]])
    if "rhythm" in attrs:
        words["r"] = _pick(rng, RHYTHM_WORDS[attrs["rhythm"]])
    return template.format(**words)


def caption(modality: str, attrs: dict, rng: np.random.Generator) -> str:
    """A caption for an item, from a random template; it names every attribute of the item."""
    return _fill(_pick(rng, TEMPLATES[modality]), attrs, rng)


def noun_phrase(modality: str, attrs: dict, rng: np.random.Generator) -> str:
    return _fill(_pick(rng, NOUN_PHRASES[modality]), attrs, rng)


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def colour_of_pitch(hz: float) -> str:
    """The colour whose note is nearest `hz` on a log-frequency scale."""
    return min(NOTES, key=lambda c: abs(math.log(max(hz, 1e-6) / NOTES[c])))


# --- renderers -------------------------------------------------------------------------------------------------

def _shape_outline(shape: str, cx: float, cy: float, size: float) -> list[tuple[float, float]]:
    """Polygon vertices (pixel units, y down) of a shape centred at (cx, cy); a circle is a 64-gon.

    Sizes are scaled so that the four shapes cover similar areas (circle r = size: pi size^2; square side 1.76 size:
    3.1 size^2; triangle and star outer radius 1.2 size: about 1.9 size^2), so that size alone does not give the
    shape away. Triangle and star point up, and their area centroid is (cx, cy)."""
    if shape == "circle":
        angles = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        return [(cx + size * math.cos(a), cy + size * math.sin(a)) for a in angles]
    if shape == "square":
        h = 0.88 * size
        return [(cx - h, cy - h), (cx + h, cy - h), (cx + h, cy + h), (cx - h, cy + h)]
    r = 1.2 * size
    if shape == "triangle":
        angles = [-np.pi / 2 + k * 2 * np.pi / 3 for k in range(3)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in angles]
    if shape == "star":
        points = []
        for k in range(10):
            rk = r if k % 2 == 0 else r * STAR_INNER
            a = -np.pi / 2 + k * np.pi / 5
            points.append((cx + rk * math.cos(a), cy + rk * math.sin(a)))
        return points
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _draw(colour: str, shape: str, cx: float, cy: float, size: float) -> np.ndarray:
    """One anti-aliased frame: the shape drawn at SUPERSAMPLE x and box-filtered down to 64x64."""
    if colour not in COLOURS:
        raise ValueError(f"unknown colour {colour!r}; expected one of {tuple(COLOURS)}")
    big = IMAGE_SIZE * SUPERSAMPLE
    canvas = Image.new("RGB", (big, big), BACKGROUND)
    outline = [(x * SUPERSAMPLE, y * SUPERSAMPLE) for x, y in _shape_outline(shape, cx, cy, size)]
    ImageDraw.Draw(canvas).polygon(outline, fill=COLOURS[colour])
    return np.asarray(canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX), dtype=np.uint8)


def render_image(colour: str, shape: str, position: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """(64, 64, 3) uint8: the shape at its position; `rng` jitters place and size (None: the canonical item)."""
    if position not in POSITION_X:
        raise ValueError(f"unknown position {position!r}; expected one of {POSITIONS}")
    cx, cy, size = POSITION_X[position], IMAGE_SIZE / 2, sum(IMAGE_SIZE_RANGE) / 2
    if rng is not None:
        cx += rng.uniform(-POSITION_JITTER, POSITION_JITTER)
        cy += rng.uniform(-VERTICAL_JITTER, VERTICAL_JITTER)
        size = rng.uniform(*IMAGE_SIZE_RANGE)
    return _draw(colour, shape, cx, cy, size)


def render_video(colour: str, shape: str, direction: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """(8, 64, 64, 3) uint8: the shape moving in a straight line, evenly, by 28-34 px from first to last frame."""
    if direction not in DIRECTIONS:
        raise ValueError(f"unknown direction {direction!r}; expected one of {DIRECTIONS}")
    travel, size, cross, start = sum(VIDEO_TRAVEL) / 2, sum(VIDEO_SIZE_RANGE) / 2, 0.0, 0.0
    if rng is not None:
        travel = rng.uniform(*VIDEO_TRAVEL)
        size = rng.uniform(*VIDEO_SIZE_RANGE)
        cross = rng.uniform(-VIDEO_CROSS_JITTER, VIDEO_CROSS_JITTER)
        start = rng.uniform(-2.0, 2.0)
    # The path is centred on the frame, so the shape stays inside it at both ends.
    half = IMAGE_SIZE / 2
    a, b = half - travel / 2 + start, half + travel / 2 + start  # along the motion axis, increasing
    if direction in ("left", "up"):
        a, b = b, a
    frames = []
    for t in np.linspace(0.0, 1.0, VIDEO_FRAMES):
        along = a + (b - a) * t
        cx, cy = (along, half + cross) if direction in ("left", "right") else (half + cross, along)
        frames.append(_draw(colour, shape, cx, cy, size))
    return np.stack(frames)


def render_sound(colour: str, rhythm: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """float32 mono waveform at 16 kHz: the colour's note (with weak 2nd and 3rd harmonics) held steady or beeping.

    `rng` jitters duration (1-2 s), amplitude, pitch (+-1 %), phases and the beep rate (3.6-4.4 Hz)."""
    if colour not in NOTES:
        raise ValueError(f"unknown colour {colour!r}; expected one of {tuple(NOTES)}")
    if rhythm not in RHYTHMS:
        raise ValueError(f"unknown rhythm {rhythm!r}; expected one of {RHYTHMS}")
    duration, amp, f0, rate = 1.5, 0.5, NOTES[colour], sum(BEEP_RATE_RANGE) / 2
    phases = np.zeros(len(HARMONICS))
    if rng is not None:
        duration = rng.uniform(*DURATION_RANGE)
        amp = rng.uniform(*AMPLITUDE_RANGE)
        f0 *= 1 + rng.uniform(-PITCH_JITTER, PITCH_JITTER)
        phases = rng.uniform(0, 2 * np.pi, len(HARMONICS))
        rate = rng.uniform(*BEEP_RATE_RANGE)
    n = int(round(duration * SAMPLE_RATE))
    t = np.arange(n) / SAMPLE_RATE
    wave = sum(a * np.sin(2 * np.pi * (k + 1) * f0 * t + p) for k, (a, p) in enumerate(zip(HARMONICS, phases)))
    wave /= np.abs(wave).max()
    # Gate: on for the whole sound (steady) or for the first half of every beep period (beeping); the raised-cosine
    # ramps come from smoothing the hard gate with a Hann window as long as two ramps.
    gate = np.ones(n) if rhythm == "steady" else ((t * rate) % 1.0 < 0.5).astype(np.float64)
    half = int(RAMP_S * SAMPLE_RATE)
    gate[:half] = gate[-half:] = 0.0  # so that the sound also fades in from and out to silence at its ends
    ramp = np.hanning(2 * half + 1)
    gate = np.convolve(gate, ramp / ramp.sum(), mode="same")
    return (amp * wave * gate).astype(np.float32)


def random_attributes(modality: str, rng: np.random.Generator) -> dict:
    return {name: _pick(rng, VALUES[name]) for name in ATTRIBUTES[modality]}


def render(modality: str, attrs: dict, rng: np.random.Generator | None = None) -> np.ndarray:
    if modality == "image":
        return render_image(attrs["colour"], attrs["shape"], attrs["position"], rng)
    if modality == "video":
        return render_video(attrs["colour"], attrs["shape"], attrs["direction"], rng)
    if modality == "audio":
        return render_sound(attrs["colour"], attrs["rhythm"], rng)
    raise ValueError(f"unknown modality {modality!r}")


def sample(modality: str, rng: np.random.Generator) -> dict:
    """A random item made on the fly: {"attributes", "caption", "data"} (data as from the renderer)."""
    attrs = random_attributes(modality, rng)
    return {"attributes": attrs, "caption": caption(modality, attrs, rng), "data": render(modality, attrs, rng)}


# --- writers ---------------------------------------------------------------------------------------------------

def write_image(path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels).save(path, format="PNG")


def write_video(path, frames: np.ndarray) -> None:
    from moviepy import ImageSequenceClip

    clip = ImageSequenceClip(list(frames), fps=VIDEO_FPS)
    clip.write_videofile(os.fspath(path), codec="libx264", fps=VIDEO_FPS, audio=False, logger=None,
                         pixel_format="yuv420p")
    clip.close()


def write_sound(path, wave: np.ndarray) -> None:
    import soundfile

    soundfile.write(os.fspath(path), wave, SAMPLE_RATE, subtype="PCM_16", format="WAV")


EXTENSIONS = {"image": "png", "video": "mp4", "audio": "wav"}
FOLDERS = {"image": "images", "video": "videos", "audio": "audios"}
_WRITERS = {"image": write_image, "video": write_video, "audio": write_sound}
# Fixed stream numbers, so that each item's random stream depends on (seed, kind, index) only: adding items or
# changing one count never changes the others.
_STREAM = {"image": 1, "video": 2, "audio": 3, "dialogue": 4, "plan": 5, "question": 6}


def _rng(seed: int, kind: str, *index: int) -> np.random.Generator:
    return np.random.default_rng([seed, _STREAM[kind], *index])


# --- pair items and splits -------------------------------------------------------------------------------------

def _plan_attributes(seed: int, modality: str, n: int) -> list[dict]:
    """Balanced attributes: every combination once per cycle, in a fresh seeded order each cycle."""
    names = ATTRIBUTES[modality]
    combos = list(itertools.product(*(VALUES[a] for a in names)))
    out = []
    for cycle in range(math.ceil(n / len(combos))):
        order = _rng(seed, "plan", _STREAM[modality], cycle).permutation(len(combos))
        out.extend(dict(zip(names, combos[i])) for i in order)
    return out[:n]


def _split_of(u: float) -> str:
    return SPLITS[0] if u < SPLIT_FRACTIONS[0] else SPLITS[1] if u < sum(SPLIT_FRACTIONS[:2]) else SPLITS[2]


def _cover_train(items: list[dict], modality: str) -> None:
    """Move the first held-out item carrying a value train lacks into train, so train has every value."""
    for name in ATTRIBUTES[modality]:
        for value in VALUES[name]:
            having = [it for it in items if it["attributes"][name] == value]
            if having and not any(it["split"] == "train" for it in having):
                having[0]["split"] = "train"


def _pair_items(seed: int, modality: str, n: int) -> list[dict]:
    items = []
    for i, attrs in enumerate(_plan_attributes(seed, modality, n)):
        rng = _rng(seed, modality, i)
        split = _split_of(rng.uniform())
        name = f"{i:06d}.{EXTENSIONS[modality]}"
        items.append({"modality": modality, "id": f"{i:06d}" if modality == "image" else i, "name": name,
                      "split": split, "source": "pairs", "attributes": attrs, "caption": caption(modality, attrs, rng),
                      "_rng": rng})
    _cover_train(items, modality)
    return items


def _pair_record(item: dict) -> dict:
    """An official T_X pair record: cc3m {caption, id, image_name}, webvid {caption, id, video_name},
    audiocap {audio_id, audio_name, caption}."""
    if item["modality"] == "image":
        return {"caption": item["caption"], "id": item["id"], "image_name": item["name"]}
    if item["modality"] == "video":
        return {"caption": item["caption"], "id": item["id"], "video_name": item["name"]}
    return {"audio_id": item["id"], "audio_name": item["name"], "caption": item["caption"]}


PAIR_FILES = {"image": "cc3m.json", "video": "webvid.json", "audio": "audiocap.json"}

# --- dialogues -------------------------------------------------------------------------------------------------
# Wording tables. Slots: {np} noun phrase of the item shown or asked for, {c} {s} {pos} {dir} {r} as in captions.

_ASK = {
    "image": ("Draw {np}.", "Can you draw {np}?", "Please show me {np}.", "I'd like a picture of {np}.",
              "Make an image of {np}.", "Could you create {np} for me?", "Generate a picture: {np}."),
    "video": ("Make a video of {np}.", "Can you animate {np}?", "Please show me a clip of {np}.",
              "I'd like a video of {np}.", "Could you create an animation of {np}?", "Generate a video: {np}."),
    "audio": ("Play {np}.", "Can you make {np}?", "Please let me hear {np}.", "I'd like a sound: {np}.",
              "Could you create {np} for me?", "Generate a sound: {np}."),
}
_HERE = {
    "image": ("Sure! Here it is:", "Here you go:", "Of course. Here is the picture:", "Here is my drawing:"),
    "video": ("Sure! Here it is:", "Here you go:", "Of course. Here is the video:", "Here is the animation:"),
    "audio": ("Sure! Here it is:", "Here you go:", "Of course. Listen:", "Here is the sound:"),
}
_AFTER = ("It shows {np}.", "This is {np}.", "I made {np}.", "That is {np}, as you asked.")
_SHOW = {  # human turns that hand over a media item: (text before, text after)
    "image": (("Here is a picture:", "{q}"), ("", "{q}"), ("{q}", ""), ("Look at this image.", "{q}")),
    "video": (("Here is a video:", "{q}"), ("", "{q}"), ("{q}", ""), ("Watch this clip.", "{q}")),
    "audio": (("Here is a sound:", "{q}"), ("", "{q}"), ("{q}", ""), ("Listen to this.", "{q}")),
}
_DESCRIBE = {
    "image": ("What is in this picture?", "Can you describe this image?", "What do you see here?",
              "Tell me what this picture shows."),
    "video": ("What happens in this video?", "Can you describe this clip?", "What is going on here?",
              "Tell me what this video shows."),
    "audio": ("What is this sound?", "Can you describe this sound?", "What do you hear?",
              "Tell me what this sound is."),
}
_DESCRIPTION = ("It is {np}.", "This shows {np}.", "I can see {np}.", "{Np}.")
_DESCRIPTION_AUDIO = ("It is {np}.", "This is {np}.", "I can hear {np}.", "{Np}.")
# Single-attribute questions and their answers, for X->text turns that score one attribute.
_QUESTION = {
    "colour": ("What colour is the shape?", "Which colour is it?", "What colour does this sound belong to?"),
    "shape": ("What shape is it?", "Which shape do you see?"),
    "position": ("Where is the shape?", "Which side is the shape on?"),
    "direction": ("Which way does the shape move?", "Where is the shape going?"),
    "rhythm": ("Is this tone steady or beeping?", "What is the rhythm of this sound?"),
}


def asked_attributes(question: str, modality: str) -> tuple[str, ...]:
    """What a human X -> text turn asks about: the attribute of a single-attribute question, else all of them."""
    for name, questions in _QUESTION.items():
        if any(q in question for q in questions):
            return (name,)
    return ATTRIBUTES[modality]


_ANSWER = {
    "colour": ("It is {c}.", "The colour is {c}."),
    "colour_audio": ("It is the note of {c}.", "That is the sound of {c}."),
    "shape": ("It is a {s}.", "I see a {s}."),
    "position": ("It is {pos}.", "The {s} is {pos}."),
    "direction": ("It is {dir}.", "The {s} is {dir}."),
    "rhythm": ("It is {r}.", "The tone is {r}."),
}
_EDIT = {  # follow-up requests that change one attribute of the previous output
    "colour": ("Now make it {c}.", "Can you make it {c} instead?", "Change the colour to {c}.",
               "Same thing, but in {c}."),
    "shape": ("Now make it a {s}.", "Turn it into a {s}.", "Can it be a {s} instead?"),
    "position": ("Move it {to}.", "Now put it {to}.", "Can you move it {to}?"),
    "direction": ("Now make it move another way: {dir}.", "Show it {dir} instead.", "Now I want it {dir}."),
    "rhythm": ("Now make it {r}.", "Can it be {r} instead?", "Same note, but {r}."),
}
_EDITED = ("Here it is:", "Done:", "Sure, here is the new version:", "Of course:")


class _Dialogue:
    """Builds one dialogue: turns of text and media parts, and the media it owns."""

    def __init__(self, seed: int, index: int, split: str, rng: np.random.Generator):
        self.seed, self.index, self.split, self.rng = seed, index, split, rng
        self.turns: list[tuple[str, list]] = []
        self.media: list[dict] = []

    def item(self, modality: str, attrs: dict) -> dict:
        k = len(self.media)
        letter = modality[0]
        name = f"mosit_{letter}_{self.index:06d}_{k:02d}.{EXTENSIONS[modality]}"
        rng = _rng(self.seed, "dialogue", self.index, 1 + k)
        item = {"modality": modality, "id": name.rsplit(".", 1)[0], "name": name, "split": self.split,
                "source": "mosit", "dialogue": f"mosit_{self.index:06d}", "attributes": dict(attrs),
                "caption": caption(modality, attrs, rng), "_rng": rng}
        self.media.append(item)
        return item

    def say(self, role: str, *parts) -> None:
        self.turns.append((role, [p for p in parts if p != ""]))

    def words(self, text: str, modality: str | None = None, attrs: dict | None = None) -> str:
        """Fill a wording template; {np}/{Np} becomes a noun phrase of (modality, attrs)."""
        attrs = attrs or {}
        slots = {"c": attrs.get("colour", ""), "s": attrs.get("shape", ""), "r": "", "pos": "", "dir": "", "to": ""}
        if "position" in attrs:
            slots["pos"] = _pick(self.rng, POSITION_PHRASES[attrs["position"]])
            slots["to"] = MOVE_TO[attrs["position"]]
        if "direction" in attrs:
            slots["dir"] = _pick(self.rng, DIRECTION_PHRASES[attrs["direction"]])
        if "rhythm" in attrs:
            slots["r"] = _pick(self.rng, RHYTHM_WORDS[attrs["rhythm"]])
        if "{np}" in text or "{Np}" in text:
            np_ = noun_phrase(modality, attrs, self.rng)
            slots["np"], slots["Np"] = np_, np_[0].upper() + np_[1:]
        return text.format(**slots)

    def show(self, modality: str, item: dict, question: str) -> None:
        """A human turn handing over `item`, the question before or after it."""
        before, after = _pick(self.rng, _SHOW[modality])
        self.say("human", before.format(q=question), item, after.format(q=question))

    def reply(self, item: dict) -> None:
        """A gpt turn producing `item`, with text before and after it."""
        m, a = item["modality"], item["attributes"]
        self.say("gpt", _pick(self.rng, _HERE[m]), item, self.words(_pick(self.rng, _AFTER), m, a))

    def record(self, task: str) -> dict:
        lists = {f"{m}_list": [{f"{m}_name": it["name"], "data_source": "nano", "caption": it["caption"]}
                               for it in self.media if it["modality"] == m] for m in ("image", "video", "audio")}
        conversation = []
        for role, parts in self.turns:
            text, media = "", []
            for part in parts:
                if isinstance(part, dict):
                    media.append({"modality": part["modality"], "name": part["name"], "at": len(text)})
                else:
                    text = f"{text} {part}" if text else part
            conversation.append({"from": role, "value": text, "media": media})
        return {"id": f"mosit_{self.index:06d}", "task": task, **lists, "conversation": conversation}


def _other(rng: np.random.Generator, name: str, value: str) -> str:
    return _pick(rng, [v for v in VALUES[name] if v != value])


def _task_t2x(d: _Dialogue, m: str) -> None:
    attrs = random_attributes(m, d.rng)
    d.say("human", d.words(_pick(d.rng, _ASK[m]), m, attrs))
    d.reply(d.item(m, attrs))


def _task_x2t(d: _Dialogue, m: str) -> None:
    attrs = random_attributes(m, d.rng)
    item = d.item(m, attrs)
    if d.rng.uniform() < 0.6:  # describe everything
        d.show(m, item, _pick(d.rng, _DESCRIBE[m]))
        d.say("gpt", d.words(_pick(d.rng, _DESCRIPTION_AUDIO if m == "audio" else _DESCRIPTION), m, attrs))
    else:
        _ask_one(d, item)


def _ask_one(d: _Dialogue, item: dict) -> None:
    """A human turn asking about one attribute of `item`, and the answer."""
    m, attrs = item["modality"], item["attributes"]
    name = _pick(d.rng, ATTRIBUTES[m])
    questions = _QUESTION[name]
    if name == "colour":  # the third colour question is about sounds only
        questions = questions[2:] if m == "audio" else questions[:2]
    d.show(m, item, _pick(d.rng, questions))
    key = "colour_audio" if (name == "colour" and m == "audio") else name
    d.say("gpt", d.words(_pick(d.rng, _ANSWER[key]), m, attrs))


_CROSS_ASK = {  # (source, target) -> requests; the target takes the source's colour (and shape, between visuals)
    ("image", "audio"): ("Make a {r} sound for this picture.", "What does this picture sound like, as a {r} tone?",
                         "Play me the {r} sound of this shape."),
    ("video", "audio"): ("Make a {r} sound for this video.", "What does this video sound like, as a {r} tone?",
                         "Play me the {r} sound of this moving shape."),
    ("audio", "image"): ("Draw a {s} {pos} in the colour of this sound.",
                         "Show me a {s} {pos} that looks like this sound.",
                         "Paint this sound as a {s} {pos}."),
    ("audio", "video"): ("Make a video of a {s} in the colour of this sound, {dir}.",
                         "Animate a {s} that looks like this sound, {dir}.", "Show this sound as a {s} {dir}."),
    ("image", "video"): ("Show this shape {dir}.", "Animate this picture with the shape {dir}.",
                         "Make a video of this shape {dir}."),
    ("video", "image"): ("Draw this shape {pos}.", "Make a still picture of this shape {pos}.",
                         "Show me this shape standing still {pos}."),
}
_SOURCE_IS = {  # gpt may first say what it read from the source item
    "image": ("The picture is {c}.", "The shape in the picture is {c}."),
    "video": ("The video shows a {c} shape.", "The moving shape is {c}."),
    "audio": ("That is the note of {c}.", "This sound is {c}."),
}
_CROSS_SAY = {  # what gpt says just before the produced item
    "audio": ("{c} sounds like this:", "Here is its note:", "Here is the sound of {c}:"),
    "image": ("Here is a {c} {s}:", "Here is the picture:", "Sure, in {c}:"),
    # "a video of a {c} {s}", as the captions say it: LLM-nano does not learn to fill "Here is the {c} ___" with the
    # right shape, while "a {c} ___" it fills from any source.
    "video": ("Here is a video of a {c} {s}:", "Sure, here is the video:", "Here it is, in {c}:"),
}


def _task_cross(d: _Dialogue, src: str, dst: str) -> None:
    src_attrs = random_attributes(src, d.rng)
    dst_attrs = random_attributes(dst, d.rng)
    dst_attrs["colour"] = src_attrs["colour"]
    if "shape" in src_attrs and "shape" in dst_attrs:
        dst_attrs["shape"] = src_attrs["shape"]
    source = d.item(src, src_attrs)
    d.show(src, source, d.words(_pick(d.rng, _CROSS_ASK[(src, dst)]), dst, dst_attrs))
    target = d.item(dst, dst_attrs)
    lead = d.words(_pick(d.rng, _CROSS_SAY[dst]), dst, dst_attrs)
    if d.rng.uniform() < 0.5:
        lead = d.words(_pick(d.rng, _SOURCE_IS[src]), src, src_attrs) + " " + lead
    d.say("gpt", lead[0].upper() + lead[1:], target,
          d.words(_pick(d.rng, _AFTER), dst, dst_attrs))


def _task_edit(d: _Dialogue, m: str) -> None:
    attrs = random_attributes(m, d.rng)
    if d.rng.uniform() < 0.7:
        d.say("human", d.words(_pick(d.rng, _ASK[m]), m, attrs))
        d.reply(d.item(m, attrs))
    else:  # the user brings the first item
        d.show(m, d.item(m, attrs), _pick(d.rng, ("Can you change it a little?", "I want to edit this.")))
        d.say("gpt", _pick(d.rng, ("Sure, what should I change?", "Of course. What would you like?")))
    for _ in range(int(d.rng.integers(1, 3))):
        name = _pick(d.rng, ATTRIBUTES[m])
        attrs = {**attrs, name: _other(d.rng, name, attrs[name])}
        d.say("human", d.words(_pick(d.rng, _EDIT[name]), m, attrs))
        d.say("gpt", _pick(d.rng, _EDITED), d.item(m, attrs), d.words(_pick(d.rng, _AFTER), m, attrs))


def _task_chain(d: _Dialogue) -> None:
    """Text -> image, then the same thing as a sound or a video, then maybe the other."""
    attrs = random_attributes("image", d.rng)
    d.say("human", d.words(_pick(d.rng, _ASK["image"]), "image", attrs))
    d.reply(d.item("image", attrs))
    follow = {"audio": ("Now make a {r} sound for it.", "What would it sound like as a {r} tone?"),
              "video": ("Now show it {dir}.", "Can you make it move? I want it {dir}.")}
    order = ["audio", "video"] if d.rng.uniform() < 0.5 else ["video", "audio"]
    for m in order[: int(d.rng.integers(1, 3))]:
        new = {**random_attributes(m, d.rng), "colour": attrs["colour"]}
        if m == "video":
            new["shape"] = attrs["shape"]
        d.say("human", d.words(_pick(d.rng, follow[m]), m, new))
        lead = d.words(_pick(d.rng, _CROSS_SAY[m]), m, new)
        d.say("gpt", lead[0].upper() + lead[1:], d.item(m, new),
              d.words(_pick(d.rng, _AFTER), m, new))


TASKS = ("t2i", "t2v", "t2a", "i2t", "v2t", "a2t", "i2a", "a2i", "i2v", "v2i", "v2a", "a2v",
         "edit_image", "edit_video", "edit_audio", "chain")
_LETTER = {"i": "image", "v": "video", "a": "audio", "t": "text"}


def _dialogue(seed: int, index: int, task: str) -> tuple[dict, list[dict]]:
    rng = _rng(seed, "dialogue", index, 0)
    d = _Dialogue(seed, index, _split_of(rng.uniform()), rng)
    if task == "chain":
        _task_chain(d)
    elif task.startswith("edit_"):
        _task_edit(d, task[5:])
    else:
        src, dst = _LETTER[task[0]], _LETTER[task[2]]
        if src == "text":
            _task_t2x(d, dst)
        elif dst == "text":
            _task_x2t(d, src)
        else:
            _task_cross(d, src, dst)
    record = d.record(task)
    record["split"] = d.split
    return record, d.media


def _questions(seed: int, pairs: dict[str, list[dict]], n: int) -> list[dict]:
    """n train dialogues asking one attribute of a train pair item, the modalities in turn.

    Describing an item (stage 1) does not teach answering "is this tone steady or beeping?"; the dialogues alone
    hold too few such questions (a fifth of the X -> text ones per attribute). These reuse the pair media, so they
    add no media to render or encode."""
    train = {m: [it for it in items if it["split"] == "train"] for m, items in pairs.items()}
    order = [m for m in ("image", "video", "audio") if train.get(m)]
    records = []
    for k in range(n):
        m = order[k % len(order)]
        item = train[m][(k // len(order)) % len(train[m])]
        d = _Dialogue(seed, k, "train", _rng(seed, "question", k))
        d.media.append(item)
        _ask_one(d, item)
        records.append({**d.record(f"{m[0]}2t"), "id": f"question_{k:06d}", "split": "train"})
    return records


def _dialogues(seed: int, n: int) -> tuple[list[dict], list[dict]]:
    """n dialogues, every task once per cycle of len(TASKS) in a seeded order; returns (records, their media)."""
    records, media = [], []
    for i in range(n):
        cycle, j = divmod(i, len(TASKS))
        if j == 0:
            order = _rng(seed, "plan", _STREAM["dialogue"], cycle).permutation(len(TASKS))
        record, items = _dialogue(seed, i, TASKS[order[j]])
        records.append(record)
        media.extend(items)
    return records, media


# --- the whole world -------------------------------------------------------------------------------------------

def vocabulary() -> dict:
    return {
        "colours": {c: {"rgb": list(COLOURS[c]), "note_hz": NOTES[c], "note": NOTE_NAMES[c], "register": REGISTER[c]}
                    for c in COLOURS},
        "shapes": list(SHAPES), "positions": list(POSITIONS), "directions": list(DIRECTIONS),
        "rhythms": list(RHYTHMS), "background_rgb": list(BACKGROUND),
        "phrases": {"position": POSITION_PHRASES, "direction": DIRECTION_PHRASES, "rhythm": RHYTHM_WORDS},
        "templates": {m: list(t) for m, t in TEMPLATES.items()},
    }


def settings() -> dict:
    return {"image_size": IMAGE_SIZE, "video_frames": VIDEO_FRAMES, "video_fps": VIDEO_FPS,
            "sample_rate": SAMPLE_RATE, "audio_duration_s": list(DURATION_RANGE), "beep_rate_hz": list(BEEP_RATE_RANGE),
            "position_x": POSITION_X, "video_travel_px": list(VIDEO_TRAVEL),
            "splits": dict(zip(SPLITS, SPLIT_FRACTIONS))}


def generate(out_dir, seed: int = 0, n_images: int = 4000, n_videos: int = 1500, n_audios: int = 1500,
             n_dialogues: int = 2000, n_questions: int = 0, verbose: bool = False) -> dict:
    """Write the world to `out_dir` (layout in the module docstring) and return the world.json manifest.

    `n_questions` single-attribute question dialogues over the train pair media join the train dialogues."""
    out = Path(out_dir)
    for m in FOLDERS.values():
        (out / m).mkdir(parents=True, exist_ok=True)
    started = time.time()
    pairs = {m: _pair_items(seed, m, n) for m, n in (("image", n_images), ("video", n_videos), ("audio", n_audios))}
    dialogues, dialogue_media = _dialogues(seed, n_dialogues)
    dialogues += _questions(seed, pairs, n_questions)
    items = [it for m in pairs for it in pairs[m]] + dialogue_media
    for k, it in enumerate(items):
        _WRITERS[it["modality"]](out / FOLDERS[it["modality"]] / it["name"], render(it["modality"], it["attributes"],
                                                                                    it.pop("_rng")))
        if verbose and (k + 1) % 1000 == 0:
            print(f"{k + 1}/{len(items)} media written ({time.time() - started:.0f} s)", flush=True)
    for split in SPLITS:
        (out / split).mkdir(exist_ok=True)
        for m, file in PAIR_FILES.items():
            _write_json(out / split / file, [_pair_record(it) for it in pairs[m] if it["split"] == split])
        _write_json(out / split / "dialogues.json",
                    [{k: v for k, v in d.items() if k != "split"} for d in dialogues if d["split"] == split])
    manifest = {
        "seed": seed,
        "vocabulary": vocabulary(),
        "settings": settings(),
        "counts": {split: {**{m: sum(it["split"] == split for it in pairs[m]) for m in pairs},
                           "dialogues": sum(d["split"] == split for d in dialogues),
                           "dialogue_media": sum(it["split"] == split for it in dialogue_media)} for split in SPLITS},
        "items": [{k: it[k] for k in ("modality", "id", "name", "split", "source", "attributes", "caption")}
                  | ({"dialogue": it["dialogue"]} if "dialogue" in it else {}) for it in items],
    }
    _write_json(out / "world.json", manifest)
    if verbose:
        print(f"wrote {len(items)} media and {len(dialogues)} dialogues to {out} in {time.time() - started:.1f} s")
    return manifest


def _write_json(path: Path, data) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m nextgpt.nano.world", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--images", type=int, default=4000)
    p.add_argument("--videos", type=int, default=1500)
    p.add_argument("--audios", type=int, default=1500)
    p.add_argument("--dialogues", type=int, default=2000)
    p.add_argument("--questions", type=int, default=0,
                   help="train dialogues asking one attribute of a train pair item (no new media)")
    a = p.parse_args(argv)
    generate(a.out_dir, a.seed, a.images, a.videos, a.audios, a.dialogues, a.questions, verbose=True)


if __name__ == "__main__":
    main()
