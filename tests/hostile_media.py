"""Files people upload, made on the fly (PIL, soundfile and the ffmpeg that imageio-ffmpeg ships): the formats
phones and browsers produce, odd but valid media, and seeded byte-mutations of valid files."""

import random
import subprocess
from pathlib import Path

import numpy as np
import soundfile as sf
from PIL import Image


def _ffmpeg(*args: str) -> None:
    from imageio_ffmpeg import get_ffmpeg_exe

    subprocess.run([get_ffmpeg_exe(), "-y", "-loglevel", "error", *args], check=True, timeout=60)


def _picture(size=(64, 48), mode="RGB") -> Image.Image:
    w, h = size
    x = np.linspace(0, 255, w * h * 3, dtype=np.float64).reshape(h, w, 3).astype(np.uint8)
    return Image.fromarray(x, "RGB").convert(mode)


def _tone(seconds=1.0, rate=16000, channels=1) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    return np.repeat((0.3 * np.sin(2 * np.pi * 440 * t))[:, None], channels, axis=1).astype(np.float32)


def _video(path, *extra: str, seconds=1, audio=False) -> None:
    src = ["-f", "lavfi", "-i", f"testsrc=size=64x48:rate=8:duration={seconds}"]
    if audio:
        src += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}", "-shortest"]
    _ffmpeg(*src, *extra, str(path))


def _animated_gif(path) -> None:
    frames = [_picture().rotate(10 * i) for i in range(4)]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


# name -> (file name, maker). Formats phones, cameras and browsers produce.
FORMATS = {
    "WebM video": ("clip.webm", lambda p: _video(p, "-c:v", "libvpx", "-b:v", "200k")),
    "MOV video": ("clip.mov", lambda p: _video(p, "-c:v", "mpeg4", audio=True)),
    "AVI video": ("clip.avi", lambda p: _video(p, "-c:v", "mpeg4")),
    "animated GIF": ("clip.gif", _animated_gif),
    "WebP image": ("photo.webp", lambda p: _picture().save(p, "WEBP")),
    "GIF image": ("photo.gif", lambda p: _picture().convert("P").save(p, "GIF")),
    "BMP image": ("photo.bmp", lambda p: _picture().save(p, "BMP")),
    "TIFF image": ("photo.tiff", lambda p: _picture().save(p, "TIFF")),
    "HEIC-named image": ("IMG_0001.heic", lambda p: _picture().save(p, "JPEG")),
    "CMYK JPEG": ("print.jpg", lambda p: _picture(mode="CMYK").save(p, "JPEG")),
    "MP3 audio": ("voice.mp3", lambda p: sf.write(p, _tone(), 16000, format="MP3")),
    "FLAC audio": ("voice.flac", lambda p: sf.write(p, _tone(), 16000)),
    "OGG audio": ("voice.ogg", lambda p: sf.write(p, _tone(), 16000, format="OGG", subtype="VORBIS")),
    "M4A audio": ("voice.m4a", lambda p: _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                                                 "-c:a", "aac", str(p))),
}

# Odd but valid media.
ODD = {
    "1-frame video": ("one.mp4", lambda p: _ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=8", "-frames:v", "1",
                                                  "-pix_fmt", "yuv420p", str(p))),
    "1x1 px image": ("dot.png", lambda p: Image.new("RGB", (1, 1), (200, 10, 10)).save(p)),
    "10000x10 px image": ("strip.png", lambda p: Image.new("RGB", (10000, 10), (0, 90, 200)).save(p)),
    "16-bit PNG": ("deep.png", lambda p: Image.fromarray(
        np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(np.uint16)).save(p)),
    "palette PNG": ("palette.png", lambda p: _picture().convert("P").save(p)),
    "alpha PNG": ("alpha.png", lambda p: _picture(mode="RGBA").save(p)),
    "grayscale PNG": ("gray.png", lambda p: _picture(mode="L").save(p)),
    "8-bit WAV": ("u8.wav", lambda p: sf.write(p, _tone(), 16000, subtype="PCM_U8")),
    "float WAV": ("float.wav", lambda p: sf.write(p, _tone(), 16000, subtype="FLOAT")),
    "6-channel WAV": ("surround.wav", lambda p: sf.write(p, _tone(channels=6), 48000)),
    "8 kHz WAV": ("phone.wav", lambda p: sf.write(p, _tone(rate=8000), 8000)),
    "192 kHz WAV": ("studio.wav", lambda p: sf.write(p, _tone(rate=192000), 192000, subtype="PCM_24")),
    "silent WAV": ("silence.wav", lambda p: sf.write(p, np.zeros(16000, np.float32), 16000)),
    "10 ms WAV": ("blip.wav", lambda p: sf.write(p, _tone(0.01), 16000)),
    "video without audio": ("mute.mp4", lambda p: _video(p, "-pix_fmt", "yuv420p")),
    "audio-only MP4": ("sound.mp4", lambda p: _ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=1",
                                                      "-c:a", "aac", str(p))),
}


def make(cases: dict, name: str, folder: Path) -> Path:
    file_name, maker = cases[name]
    path = Path(folder) / file_name
    maker(path)
    return path


# Valid files to mutate, small so that each mutation decodes quickly.
SEEDS = {
    "png": ("seed.png", lambda p: _picture().save(p)),
    "jpeg": ("seed.jpg", lambda p: _picture().save(p, "JPEG")),
    "wav": ("seed.wav", lambda p: sf.write(p, _tone(0.5), 16000, subtype="PCM_16")),
    "mp4": ("seed.mp4", lambda p: _video(p, "-pix_fmt", "yuv420p")),
}


def mutate(data: bytes, rng: random.Random) -> bytes:
    """A few random byte edits: overwrite, insert, delete, or cut the file short."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.choice(("flip", "flip", "insert", "delete", "truncate"))
        i = rng.randrange(len(out)) if out else 0
        if op == "flip" and out:
            out[i] = rng.randrange(256)
        elif op == "insert":
            out[i:i] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 16)))
        elif op == "delete":
            del out[i:i + rng.randint(1, 16)]
        elif op == "truncate":
            del out[max(i, 1):]
    return bytes(out)
