"""The "render" stage: decoded media written as files a browser plays (PNG, H.264 MP4, float WAV)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .config import DecoderConfig

SUFFIXES = {"image": ".png", "video": ".mp4", "audio": ".wav"}
# Written sounds peak here (-1 dBFS): vocoders overshoot full scale (a Griffin-Lim tone peaked at 2.0), and a
# player or a resampler needs some headroom.
AUDIO_PEAK = 10 ** (-1 / 20)


def write_media(media, path: str | Path) -> Path:
    """Write a `DecodedMedia` as PNG (image), MP4 (video, H.264 at its fps) or WAV (audio, float32 as in the demo,
    peak normalised to `AUDIO_PEAK`; the gain is recorded in `media.info["gain"]`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if media.modality == "image":
        media.data.save(path, format="PNG")
    elif media.modality == "video":
        from moviepy import ImageSequenceClip

        frames = np.asarray(media.data)
        # yuv420p (what browsers play) needs even sides: pad one edge row/column rather than resample.
        pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
        if pad_h or pad_w:
            frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
            media.info["padded_to"] = (frames.shape[2], frames.shape[1])
        clip = ImageSequenceClip(list(frames), fps=media.fps or DecoderConfig.fps)
        clip.write_videofile(str(path), codec="libx264", audio=False, logger=None, pixel_format="yuv420p")
        clip.close()
    elif media.modality == "audio":
        import soundfile

        wave, media.info["gain"] = peak_normalised(media.data)
        soundfile.write(str(path), wave, media.sample_rate, subtype="FLOAT", format="WAV")
    else:
        raise ValueError(f"cannot write media of modality {media.modality!r}")
    return path


def peak_normalised(wave, peak: float = AUDIO_PEAK) -> tuple[np.ndarray, float]:
    """(the waveform scaled so that its largest sample is `peak`, the gain); silence is left as it is."""
    wave = np.nan_to_num(np.asarray(wave, dtype=np.float32))
    loudest = float(np.abs(wave).max()) if wave.size else 0.0
    gain = peak / loudest if loudest > 1e-6 else 1.0
    return (wave * np.float32(gain)).astype(np.float32), round(gain, 6)
