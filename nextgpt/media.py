"""The input stage: read image / audio / video files and turn them into ImageBind input tensors.

This reproduces the preprocessing of NExT-GPT's copy of ImageBind (`code/model/ImageBind/data.py`, run with the
pinned `pytorchvideo==0.1.5` and decord) without torchvision, torchaudio, pytorchvideo or decord:

* image  -> (3, 224, 224)              bicubic short side 224, centre crop, CLIP mean/std
* audio  -> (3, 1, 128, 204)           16 kHz, 3 clips of 2 s, Kaldi fbank (128 mel), mean -4.268 / std 9.138
* video  -> (15, 3, 2, 224, 224)       5 clips of 2 s x 2 frames, short side 224 (bilinear), CLIP mean/std, 3 crops

Every failure to read a file becomes a `MediaError` whose message names the file (base name only) and the problem,
so the UI can show it as is. Size, pixel and duration limits are checked from headers before anything is decoded.
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from nextgpt.config import MODALITIES

if TYPE_CHECKING:  # torch is imported where it is used: the app serves its page before torch is loaded
    import torch

__all__ = [
    "MODALITIES", "Media", "MediaError", "MediaLimits", "check_file", "content_hash",
    "load_image", "load_audio", "load_video", "preprocess",
]

# --- constants (all from ImageBind's data.py) ------------------------------------------------------------------
IMAGE_SIZE = 224
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

AUDIO_SAMPLE_RATE = 16000
AUDIO_CLIP_S = 2
AUDIO_CLIPS = 3
AUDIO_MEL_BINS = 128
AUDIO_TARGET_FRAMES = 204
AUDIO_MEAN = -4.268
AUDIO_STD = 9.138
# Kaldi fbank settings used by ImageBind: 25 ms Hann ("hanning") window, 10 ms shift, 512-point FFT, no dither.
_FRAME_LENGTH = 400
_HOP_LENGTH = 160
_FFT_LENGTH = 512

VIDEO_CLIP_S = 2
VIDEO_CLIPS = 5
VIDEO_FRAMES_PER_CLIP = 2  # data.py passes num_samples=clip_duration (=2) to UniformTemporalSubsample
VIDEO_CROPS = 3


# --- media items, errors, limits -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Media:
    """One media item in a message: its modality ("image", "video" or "audio") and a local file path."""

    modality: str
    path: str

    def __post_init__(self) -> None:
        if self.modality not in MODALITIES:
            raise ValueError(f"unknown modality {self.modality!r}; expected one of {MODALITIES}")
        if not isinstance(self.path, str):
            object.__setattr__(self, "path", os.fspath(self.path))  # accept pathlib.Path


class MediaError(ValueError):
    """A media file could not be used. The message is short and safe to show to a user."""


@dataclass
class MediaLimits:
    max_bytes: int = 200 * 2**20
    max_pixels: int = 40_000_000  # per image / video frame
    max_duration_s: float = 600.0  # audio and video


def _name(path) -> str:
    return os.path.basename(os.fspath(path)) or os.fspath(path)


def _size_text(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{int(n)} bytes"


def check_file(path, limits: MediaLimits | None = None) -> str:
    """Cheap checks before any decoding (exists, regular file, not empty, not too large). Returns the base name."""
    limits = limits or MediaLimits()
    name = _name(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise MediaError(f"{name}: file not found") from None
    except OSError as e:
        raise MediaError(f"{name}: cannot access file ({e.strerror or type(e).__name__})") from None
    if not os.path.isfile(path):
        raise MediaError(f"{name}: not a regular file")
    if st.st_size == 0:
        raise MediaError(f"{name}: file is empty (0 bytes)")
    if st.st_size > limits.max_bytes:
        raise MediaError(
            f"{name}: file is too large ({_size_text(st.st_size)}; the limit is {_size_text(limits.max_bytes)})"
        )
    return name


def _check_pixels(name: str, width: int, height: int, limits: MediaLimits, what: str) -> None:
    if width <= 0 or height <= 0:
        raise MediaError(f"{name}: {what} has no pixels ({width}x{height})")
    if width * height > limits.max_pixels:
        raise MediaError(
            f"{name}: {what} is too large ({width}x{height} = {width * height:,} pixels; "
            f"the limit is {limits.max_pixels:,})"
        )
    # The short side is scaled to 224, so an extreme aspect ratio would blow up the *resized* size instead.
    short, long = min(width, height), max(width, height)
    if IMAGE_SIZE * int(IMAGE_SIZE * long / short) > limits.max_pixels:
        widest = limits.max_pixels // IMAGE_SIZE**2
        raise MediaError(f"{name}: {what} has an extreme aspect ratio ({width}x{height}; the limit is {widest}:1)")


def _check_duration(name: str, duration: float, limits: MediaLimits) -> None:
    if duration > limits.max_duration_s:
        raise MediaError(f"{name}: too long ({duration:.1f} s; the limit is {limits.max_duration_s:g} s)")


def content_hash(path) -> str:
    """sha256 hex digest of the file's bytes (read in 1 MiB chunks)."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for chunk in iter(lambda: f.read(2**20), b""):
                h.update(chunk)
    except OSError as e:
        raise MediaError(f"{_name(path)}: cannot read file ({e.strerror or type(e).__name__})") from None
    return h.hexdigest()


def _normalize_clip(x: torch.Tensor, channel_dim: int) -> torch.Tensor:
    import torch

    shape = [1] * x.ndim
    shape[channel_dim] = 3
    mean = torch.tensor(CLIP_MEAN, dtype=x.dtype).view(shape)
    std = torch.tensor(CLIP_STD, dtype=x.dtype).view(shape)
    return (x - mean) / std


def _clip_spans(duration: float, clip_s: int, n_clips: int) -> list[tuple[Fraction, Fraction]]:
    """pytorchvideo 0.1.5 `ConstantClipsPerVideoSampler` (the version NExT-GPT pins), as exact fractions.

    Starts are i * max(duration - clip_s, 0) / n_clips for i < n_clips, so the last clip does not reach the end.
    (Later pytorchvideo commits divide by max(n_clips - 1, 1) instead.) A short input gives n_clips clips at 0.
    """
    step = Fraction(Fraction(max(duration - clip_s, 0)), n_clips)
    return [(step * i, step * i + clip_s) for i in range(n_clips)]


# --- image -----------------------------------------------------------------------------------------------------


def load_image(path, limits: MediaLimits | None = None) -> torch.Tensor:
    """Image file -> (3, 224, 224) float32, exactly as torchvision Resize(224, BICUBIC) + CenterCrop + Normalize."""
    import torch
    from PIL import Image

    limits = limits or MediaLimits()
    name = check_file(path, limits)
    with warnings.catch_warnings():
        # Our own max_pixels limit governs; PIL's warning threshold is just noise here.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(path)  # lazy: only the header is read
        except Image.DecompressionBombError:
            raise MediaError(f"{name}: image is too large (decompression bomb protection)") from None
        except Image.UnidentifiedImageError:
            raise MediaError(f"{name}: not a readable image file (unrecognised format)") from None
        except Exception as e:
            raise MediaError(f"{name}: not a readable image file ({type(e).__name__})") from e
        with im:
            w, h = im.size
            _check_pixels(name, w, h, limits, "image")
            try:
                rgb = _to_rgb(im)  # decodes the pixels
            except Exception as e:  # truncated data, broken chunks, ...
                raise MediaError(f"{name}: image data is corrupt or truncated") from e

    # torchvision Resize(224) on a PIL image: short side 224, long side truncated, PIL bicubic.
    short, long = min(w, h), max(w, h)
    new_long = int(IMAGE_SIZE * long / short)
    size = (IMAGE_SIZE, new_long) if w <= h else (new_long, IMAGE_SIZE)
    rgb = rgb.resize(size, Image.BICUBIC)
    # CenterCrop(224): offsets are rounded, not floored.
    left = int(round((size[0] - IMAGE_SIZE) / 2.0))
    top = int(round((size[1] - IMAGE_SIZE) / 2.0))
    rgb = rgb.crop((left, top, left + IMAGE_SIZE, top + IMAGE_SIZE))
    x = torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).permute(2, 0, 1).float().div(255)  # ToTensor
    return _normalize_clip(x, channel_dim=0)


def _to_rgb(im) -> "Image.Image":
    """8-bit RGB. PIL clips 16- and 32-bit grey at 255 when it converts (a white picture), so those are scaled."""
    from PIL import Image

    if im.mode.startswith("I;16") or im.mode == "I":
        grey = np.asarray(im, dtype=np.float64) / 257.0  # 65535 -> 255
        return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8), "L").convert("RGB")
    return im.convert("RGB")


# --- audio -----------------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _kaldi_mel_filters() -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    with warnings.catch_warnings():
        # "At least one mel filter has all zero values": true for Kaldi too at 128 bins over 20-8000 Hz.
        warnings.simplefilter("ignore", UserWarning)
        return mel_filter_bank(
            num_frequency_bins=_FFT_LENGTH // 2 + 1, num_mel_filters=AUDIO_MEL_BINS, min_frequency=20.0,
            max_frequency=AUDIO_SAMPLE_RATE / 2, sampling_rate=AUDIO_SAMPLE_RATE, norm=None,
            mel_scale="kaldi", triangularize_in_mel_space=True,
        )


@lru_cache(maxsize=1)
def _kaldi_window() -> np.ndarray:
    from transformers.audio_utils import window_function

    return window_function(_FRAME_LENGTH, "hann", periodic=False)  # Kaldi "hanning" = symmetric Hann


def _fbank(clip: np.ndarray) -> np.ndarray:
    """torchaudio.compliance.kaldi.fbank(htk_compat, no energy, hanning, 128 bins, dither 0, 25/10 ms) -> (128, T)."""
    from transformers.audio_utils import spectrogram

    if clip.shape[0] < _FRAME_LENGTH:  # Kaldi (snip_edges) yields no frame at all
        return np.zeros((AUDIO_MEL_BINS, 0), dtype=np.float32)
    return spectrogram(
        clip, _kaldi_window(), frame_length=_FRAME_LENGTH, hop_length=_HOP_LENGTH, fft_length=_FFT_LENGTH,
        power=2.0, center=False, preemphasis=0.97, mel_filters=_kaldi_mel_filters(), log_mel="log",
        mel_floor=float(np.finfo(np.float32).eps), remove_dc_offset=True,
    )  # (mel bins, frames): already the layout data.py transposes to


def _resample(wav: np.ndarray, sr: int, target: int) -> np.ndarray:
    """Polyphase resampling (torchaudio uses a windowed-sinc kernel; both are band-limited, not bit-identical)."""
    if sr == target:
        return wav
    from scipy.signal import resample_poly

    g = math.gcd(sr, target)
    return resample_poly(wav, target // g, sr // g).astype(np.float32)


def load_audio(path, limits: MediaLimits | None = None) -> torch.Tensor:
    """Audio file -> (3, 1, 128, 204) float32 log-mel clips, as ImageBind's load_and_transform_audio_data."""
    import soundfile as sf

    limits = limits or MediaLimits()
    name = check_file(path, limits)
    if Path(os.fspath(path)).suffix.lower() in FFMPEG_AUDIO:
        data, sr = _decode_audio_with_ffmpeg(os.fspath(path), name, limits)
        return _audio_clips(name, data, sr)
    try:
        info = sf.info(path)
    except Exception as e:
        raise MediaError(f"{name}: not a readable audio file ({_short_reason(e)})") from e
    if info.frames <= 0 or info.samplerate <= 0:
        raise MediaError(f"{name}: audio has no samples")
    _check_duration(name, info.duration, limits)
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)  # PCM is scaled to [-1, 1) like torchaudio.load
    except Exception as e:
        raise MediaError(f"{name}: audio data is corrupt or truncated ({_short_reason(e)})") from e
    return _audio_clips(name, data, sr)


def _audio_clips(name: str, data: np.ndarray, sr: int) -> torch.Tensor:
    """(samples, channels) float32 -> the three log-mel clips."""
    import torch

    if data.shape[0] == 0:
        raise MediaError(f"{name}: audio has no samples")
    # kaldi.fbank uses channel 0 (channel=-1 -> 0). data.py first subtracts the mean over *all* channels of the
    # clip, but fbank removes each frame's DC offset anyway, so a constant offset cancels; channel 0 suffices.
    wav = np.ascontiguousarray(data[:, 0])
    if not np.isfinite(wav).all():
        raise MediaError(f"{name}: audio contains NaN or infinite samples")
    wav = _resample(wav, int(sr), AUDIO_SAMPLE_RATE)

    clips = []
    for start, end in _clip_spans(wav.shape[0] / AUDIO_SAMPLE_RATE, AUDIO_CLIP_S, AUDIO_CLIPS):
        clip = wav[int(start * AUDIO_SAMPLE_RATE): int(end * AUDIO_SAMPLE_RATE)]
        clip = clip - clip.mean(dtype=np.float32) if clip.size else clip
        fb = torch.from_numpy(_fbank(clip)).float()
        n = fb.shape[1]
        if n < AUDIO_TARGET_FRAMES:  # zero padding happens before normalisation, as upstream
            fb = torch.nn.functional.pad(fb, (0, AUDIO_TARGET_FRAMES - n))
        else:
            fb = fb[:, :AUDIO_TARGET_FRAMES]
        clips.append(((fb - AUDIO_MEAN) / AUDIO_STD).unsqueeze(0))
    return torch.stack(clips, dim=0)


def _decode_audio_with_ffmpeg(path: str, name: str, limits: MediaLimits) -> tuple[np.ndarray, int]:
    """Audio that libsndfile cannot read (AAC in .m4a, as phones record it): channel 0 decoded by ffmpeg."""
    import subprocess

    from imageio_ffmpeg import get_ffmpeg_exe
    from moviepy.video.io.ffmpeg_reader import ffmpeg_parse_infos

    try:
        info = ffmpeg_parse_infos(path)
    except Exception as e:
        raise MediaError(f"{name}: not a readable audio file") from e
    if not info.get("audio_found"):
        raise MediaError(f"{name}: contains no audio stream")
    _check_duration(name, float(info.get("duration") or 0.0), limits)
    command = [get_ffmpeg_exe(), "-loglevel", "error", "-i", path, "-map", "0:a:0", "-af", "pan=mono|c0=c0",
               "-ar", str(AUDIO_SAMPLE_RATE), "-f", "f32le", "pipe:1"]
    try:
        done = subprocess.run(command, capture_output=True, timeout=60, check=True)
    except (subprocess.SubprocessError, OSError) as e:
        raise MediaError(f"{name}: audio data is corrupt or truncated") from e
    return np.frombuffer(done.stdout, dtype="<f4").reshape(-1, 1), AUDIO_SAMPLE_RATE


def _short_reason(e: Exception) -> str:
    msg = str(e).strip().splitlines()
    text = msg[-1] if msg else type(e).__name__
    text = text.replace(os.sep, "/")
    # libsndfile messages quote the full path: keep only what follows it.
    if ": " in text:
        text = text.rsplit(": ", 1)[-1]
    return text[:120]


# --- video -----------------------------------------------------------------------------------------------------


def _probe_video(path: str, name: str, limits: MediaLimits) -> None:
    """Header checks with `ffmpeg -i` (no decoding): a video stream, its size and the duration."""
    from moviepy.video.io.ffmpeg_reader import ffmpeg_parse_infos

    try:
        info = ffmpeg_parse_infos(path)
    except Exception as e:
        raise MediaError(f"{name}: not a readable video file") from e
    if not info.get("video_found"):
        only_sound = " (only sound: send it as .m4a to use it as audio)" if info.get("audio_found") else ""
        raise MediaError(f"{name}: contains no video stream{only_sound}")
    w, h = info.get("video_size") or (0, 0)
    _check_pixels(name, int(w), int(h), limits, "video frame")
    _check_duration(name, float(info.get("duration") or 0.0), limits)


def _short_side_scale(x: torch.Tensor, size: int) -> torch.Tensor:
    """pytorchvideo ShortSideScale on (C, T, H, W): long side floored, bilinear, align_corners=False."""
    import torch

    _, _, h, w = x.shape
    if w < h:
        new_h, new_w = int(math.floor(h / w * size)), size
    else:
        new_h, new_w = size, int(math.floor(w / h * size))
    return torch.nn.functional.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=False)


def _uniform_crop(x: torch.Tensor, size: int, idx: int) -> torch.Tensor:
    """data.py `uniform_crop` on (C, T, H, W): 0/1/2 = left/centre/right (landscape) or top/centre/bottom."""
    h, w = x.shape[-2:]
    y0 = int(math.ceil((h - size) / 2))
    x0 = int(math.ceil((w - size) / 2))
    if h > w:
        y0 = {0: 0, 1: y0, 2: h - size}[idx]
    else:
        x0 = {0: 0, 1: x0, 2: w - size}[idx]
    return x[..., y0: y0 + size, x0: x0 + size]


def load_video(path, limits: MediaLimits | None = None) -> torch.Tensor:
    """Video file -> (15, 3, 2, 224, 224) float32, as ImageBind's load_and_transform_video_data."""
    import torch
    from moviepy import VideoFileClip

    limits = limits or MediaLimits()
    name = check_file(path, limits)
    _probe_video(os.fspath(path), name, limits)

    clip = None
    with warnings.catch_warnings():
        # moviepy warns (and repeats the last frame) on short reads; we detect those ourselves below.
        warnings.simplefilter("ignore")
        try:
            try:
                clip = VideoFileClip(os.fspath(path), audio=False)
            except Exception as e:
                raise MediaError(f"{name}: video could not be decoded") from e
            reader = clip.reader
            fps = float(clip.fps or 0.0)
            n_frames = int(reader.n_frames or 0)
            if fps <= 0 or n_frames <= 0:
                raise MediaError(f"{name}: video has no frames")
            # Decord (used upstream) defines the duration as frame count / average fps.
            duration = n_frames / fps
            # A frame index may fall just past the real end when the frame count comes from the container
            # duration; tolerate that near the end only, and call anything earlier a truncated file.
            tolerance = max(2, int(round(fps / 2)))
            last = {"frame": None, "index": None}

            def frame_at(index: int) -> np.ndarray:
                try:
                    frame = reader.get_frame(index / fps)  # moviepy: frame number int(t * fps + 1e-5) = index
                except Exception as e:
                    raise MediaError(f"{name}: video data is corrupt or truncated") from e
                # On a failed read moviepy hands back the previously read array object itself.
                if frame is last["frame"] and index != last["index"] and index < n_frames - tolerance:
                    raise MediaError(
                        f"{name}: video is truncated or corrupt (frame {index} of {n_frames} is unreadable)"
                    )
                last["frame"], last["index"] = frame, index
                return frame

            spans = []
            for start, end in _clip_spans(duration, VIDEO_CLIP_S, VIDEO_CLIPS):
                # EncodedVideoDecord.get_clip: frames [ceil(fps*start), min(ceil(fps*end), N)); then
                # UniformTemporalSubsample(2) keeps the first and the last of them.
                i0 = min(math.ceil(fps * start), n_frames - 1)
                i1 = max(min(math.ceil(fps * end), n_frames), i0 + 1)
                t = i1 - i0
                picks = torch.linspace(0, t - 1, VIDEO_FRAMES_PER_CLIP).clamp(0, t - 1).long().tolist()
                spans.append([i0 + k for k in picks])
            # Each frame once, in order: a backward seek restarts moviepy's ffmpeg reader, and short videos' clips
            # all ask for the same frames.
            frames = {i: frame_at(i)[..., :3] for i in sorted({i for span in spans for i in span})}
            clips = [torch.from_numpy(np.stack([frames[i] for i in span])).float().permute(3, 0, 1, 2)
                     for span in spans]  # (C, T, H, W)
        except MediaError:
            raise
        except Exception as e:
            raise MediaError(f"{name}: video could not be decoded ({type(e).__name__})") from e
        finally:
            if clip is not None:
                clip.close()  # terminates the ffmpeg reader process

    out = []
    for c in clips:
        c = _normalize_clip(_short_side_scale(c / 255.0, IMAGE_SIZE), channel_dim=0)
        out.extend(_uniform_crop(c, IMAGE_SIZE, i) for i in range(VIDEO_CROPS))
    return torch.stack(out, dim=0).contiguous()


# --- dispatch --------------------------------------------------------------------------------------------------

_LOADERS = {"image": load_image, "audio": load_audio, "video": load_video}

SUFFIXES = {
    "image": (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".ogg", ".mp3", ".m4a", ".aac"),
    "video": (".mp4", ".webm", ".mov", ".mkv", ".avi"),
}


FFMPEG_AUDIO = (".m4a", ".aac")  # read by ffmpeg; the other audio suffixes by libsndfile


def guess_modality(path) -> str:
    """The modality of an uploaded file from its name; the loaders then check that the bytes agree."""
    suffix = Path(str(path)).suffix.lower()
    for modality, suffixes in SUFFIXES.items():
        if suffix in suffixes:
            return modality
    allowed = ", ".join(s for group in SUFFIXES.values() for s in group)
    raise MediaError(f"{_name(path)}: unsupported file type (use one of {allowed})")


def preprocess(media: Media, limits: MediaLimits | None = None) -> torch.Tensor:
    """One media item -> its ImageBind input tensor (no batch dimension)."""
    return _LOADERS[media.modality](media.path, limits)
