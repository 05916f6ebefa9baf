"""Input stage: shapes from every kind of sample file, Kaldi fbank / resampling / clip sampling, and bad input."""

from __future__ import annotations

import os
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from nextgpt.media import (
    CLIP_MEAN,
    CLIP_STD,
    Media,
    MediaError,
    MediaLimits,
    _clip_spans,
    _fbank,
    content_hash,
    load_audio,
    load_image,
    load_video,
    preprocess,
)

IMAGE_SHAPE = (3, 224, 224)
AUDIO_SHAPE = (3, 1, 128, 204)
VIDEO_SHAPE = (15, 3, 2, 224, 224)


# --- shapes from real sample files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "modality, rel, shape",
    [
        ("image", "bird_image.jpg", IMAGE_SHAPE),  # 640x855 portrait
        ("image", "pairs/images/001310451.jpg", IMAGE_SHAPE),  # 256x256
        ("audio", "bird_audio.wav", AUDIO_SHAPE),  # PCM16 stereo 44.1 kHz, 5 s
        ("audio", "test.wav", AUDIO_SHAPE),  # float32 mono 16 kHz, 3 s
        ("audio", "pairs/audios/102666.wav", AUDIO_SHAPE),  # 48 kHz mono, 2 s
        ("audio", "pairs/audios/106158.wav", AUDIO_SHAPE),  # 48 kHz stereo, 2 s
        ("video", "test.mp4", VIDEO_SHAPE),  # 576x320, 8 fps, 3 s
        ("video", "pairs/videos/00048255.mp4", VIDEO_SHAPE),  # 596x336, 29.97 fps, 3 s
    ],
)
def test_sample_shapes(media_dir, modality, rel, shape):
    x = preprocess(Media(modality, str(media_dir / rel)))
    assert tuple(x.shape) == shape
    assert x.dtype == torch.float32
    assert torch.isfinite(x).all()
    assert x.std() > 0


def test_media_validates_modality():
    assert Media("image", Path("a.jpg")).path == "a.jpg"
    with pytest.raises(ValueError):
        Media("text", "a.txt")


def test_content_hash(tmp_path):
    p = tmp_path / "a.bin"
    p.write_bytes(b"abc")
    assert content_hash(p) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


# --- image -----------------------------------------------------------------------------------------------------


def _clip_pixels(x: torch.Tensor) -> torch.Tensor:
    """Undo CLIP normalisation -> 0..255."""
    mean = torch.tensor(CLIP_MEAN).view(3, 1, 1)
    std = torch.tensor(CLIP_STD).view(3, 1, 1)
    return (x * std + mean) * 255


def test_image_224_passes_through_and_crop_is_centred(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (224, 224, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    assert torch.allclose(_clip_pixels(x), torch.from_numpy(pixels).permute(2, 0, 1).float(), atol=1e-3)

    # 224 x 600 portrait: no resize, crop rows round((600-224)/2) = 188 .. 412
    tall = rng.integers(0, 256, (600, 224, 3), dtype=np.uint8)
    Image.fromarray(tall).save(tmp_path / "b.png")
    x = load_image(tmp_path / "b.png")
    assert torch.allclose(_clip_pixels(x), torch.from_numpy(tall[188:412]).permute(2, 0, 1).float(), atol=1e-3)


def test_image_grey_and_rgba_are_converted(tmp_path):
    Image.new("L", (300, 500), 128).save(tmp_path / "g.png")
    Image.new("RGBA", (500, 300), (10, 20, 30, 0)).save(tmp_path / "a.png")
    g = _clip_pixels(load_image(tmp_path / "g.png"))
    a = _clip_pixels(load_image(tmp_path / "a.png"))
    assert torch.allclose(g, torch.full_like(g, 128.0), atol=1e-3)
    assert torch.allclose(a, torch.tensor([10.0, 20.0, 30.0]).view(3, 1, 1).expand_as(a), atol=1e-3)


# --- audio -----------------------------------------------------------------------------------------------------


def _kaldi_fbank_reference(w: np.ndarray, sr: int = 16000, n_mel: int = 128, low: float = 20.0) -> np.ndarray:
    """Kaldi's fbank written out from its definition (snip_edges, per-frame DC removal, pre-emphasis 0.97 with
    the first sample replicated, symmetric Hann, 512-point power spectrum, triangles in Kaldi mel space,
    log with float32-eps floor). Returns (n_mel, frames)."""
    w = w.astype(np.float64)
    n = 1 + (len(w) - 400) // 160
    frames = np.stack([w[i * 160: i * 160 + 400] for i in range(n)])
    frames = frames - frames.mean(axis=1, keepdims=True)
    frames = frames - 0.97 * np.concatenate([frames[:, :1], frames[:, :-1]], axis=1)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 399)
    power = np.abs(np.fft.rfft(frames * window, n=512)) ** 2
    mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
    lo, step = mel(low), (mel(sr / 2) - mel(low)) / (n_mel + 1)
    fmel = mel(np.arange(256) * sr / 512)
    banks = np.zeros((n_mel, 257))
    for m in range(n_mel):
        left, centre, right = lo + m * step, lo + (m + 1) * step, lo + (m + 2) * step
        banks[m, :256] = np.clip(np.minimum((fmel - left) / (centre - left), (right - fmel) / (right - centre)), 0, None)
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps)).T


def test_fbank_matches_kaldi_definition():
    rng = np.random.default_rng(0)
    noise = (0.1 * rng.standard_normal(32000)).astype(np.float32)
    ours = _fbank(noise)
    assert ours.shape == (128, 198)  # 2 s at 16 kHz, 25 ms / 10 ms frames, snip_edges
    np.testing.assert_allclose(ours, _kaldi_fbank_reference(noise), atol=1e-4)


def test_fbank_sine_peaks_in_its_mel_bin():
    t = np.arange(32000) / 16000
    for freq in (440.0, 1000.0, 3000.0):
        fb = _fbank((0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32))
        mel = lambda f: 1127.0 * np.log(1.0 + f / 700.0)  # noqa: E731
        centres = mel(20.0) + (np.arange(128) + 1) * (mel(8000.0) - mel(20.0)) / 129
        assert fb.mean(axis=1).argmax() == np.abs(centres - mel(freq)).argmin()


def _write_sine(path, sr, seconds=3.0, freq=440.0, channels=1, subtype="FLOAT"):
    t = np.arange(int(sr * seconds)) / sr
    w = (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)
    sf.write(path, np.stack([w] * channels, axis=1), sr, subtype=subtype)


def test_resampling_matches_native_16k(tmp_path):
    _write_sine(tmp_path / "a16.wav", 16000)
    _write_sine(tmp_path / "a44.wav", 44100, channels=2, subtype="PCM_16")
    ref, x = load_audio(tmp_path / "a16.wav"), load_audio(tmp_path / "a44.wav")
    energetic = ref > 0.0  # log-mel above the normalisation mean; near-silent bins only differ in the noise floor
    assert energetic.float().mean() > 0.05
    assert (x - ref).abs()[energetic].max() < 2e-3
    assert (x - ref).abs().mean() < 0.01


def test_audio_clip_spans_follow_pytorchvideo_015():
    # ConstantClipsPerVideoSampler(2 s, 3 clips) from pytorchvideo 0.1.5: start_i = i * max(d - 2, 0) / 3
    assert [(float(a), float(b)) for a, b in _clip_spans(5.0, 2, 3)] == [(0, 2), (1, 3), (2, 4)]
    assert [float(a) for a, _ in _clip_spans(12.0, 2, 5)] == [0, 2, 4, 6, 8]
    assert [float(a) for a, _ in _clip_spans(1.0, 2, 3)] == [0, 0, 0]


def test_short_audio_is_padded(tmp_path):
    _write_sine(tmp_path / "short.wav", 16000, seconds=1.0)
    x = load_audio(tmp_path / "short.wav")
    # 1 s -> 98 frames; the other 106 are zero padding, normalised as (0 + 4.268) / 9.138
    assert torch.allclose(x[:, :, :, 98:], torch.full_like(x[:, :, :, 98:], 4.268 / 9.138))
    assert torch.equal(x[0], x[1]) and torch.equal(x[1], x[2])  # all clips start at 0


# --- video -----------------------------------------------------------------------------------------------------


def _write_grey_video(path, n_frames=50, fps=10, step=5):
    """Frame i is uniformly grey at level step*i, so decoded frames tell which index was picked."""
    import imageio_ffmpeg

    w = imageio_ffmpeg.write_frames(str(path), (64, 48), fps=fps, codec="libx264", output_params=["-crf", "0"])
    w.send(None)
    for i in range(n_frames):
        w.send(np.full((48, 64, 3), step * i, np.uint8))
    w.close()


def test_video_frame_indices_follow_decord(tmp_path):
    _write_grey_video(tmp_path / "g.mp4")
    x = load_video(tmp_path / "g.mp4")
    assert tuple(x.shape) == VIDEO_SHAPE
    level = x[:, 1].mean(dim=(-1, -2)) * CLIP_STD[1] + CLIP_MEAN[1]  # green channel, (15 clip-crops, 2 frames)
    picked = (level * 255 / 5).round().long().view(5, 3, 2)
    assert (picked == picked[:, :1]).all()  # the 3 crops of one clip come from the same frames
    # 5 s at 10 fps: starts i*3/5 s -> frames [ceil(10 s), ceil(10 (s+2))) -> first and last of each clip
    assert picked[:, 0].tolist() == [[0, 19], [6, 25], [12, 31], [18, 37], [24, 43]]


def test_video_spatial_crops_left_centre_right(media_dir):
    x = load_video(media_dir / "test.mp4")  # 576x320 -> 403x224: crops at x = 0, 90, 179
    clip = x[:3]
    assert torch.equal(clip[0, ..., 179:224], clip[2, ..., 0:45])
    assert torch.equal(clip[0, ..., 90:224], clip[1, ..., 0:134])
    assert not torch.equal(clip[0], clip[2])


# --- bad input -------------------------------------------------------------------------------------------------


def _assert_media_error(fn, path, *words, limits=None):
    with pytest.raises(MediaError) as info:
        fn(path, limits)
    msg = str(info.value)
    assert msg.startswith(os.path.basename(path) + ":"), msg
    assert os.path.dirname(str(path)) not in msg, msg  # no full paths in user-facing messages
    for w in words:
        assert w in msg, msg
    return msg


def test_missing_and_empty_files(tmp_path):
    _assert_media_error(load_image, tmp_path / "nope.jpg", "not found")
    _assert_media_error(load_audio, tmp_path / "nope.wav", "not found")
    for name, fn in (("e.jpg", load_image), ("e.wav", load_audio), ("e.mp4", load_video)):
        (tmp_path / name).write_bytes(b"")
        _assert_media_error(fn, tmp_path / name, "empty")
    _assert_media_error(load_image, tmp_path, "not a regular file")


def test_text_files_with_media_extensions(tmp_path):
    for name, fn in (("t.jpg", load_image), ("t.wav", load_audio), ("t.mp4", load_video)):
        (tmp_path / name).write_text("this is not media\n" * 10)
        _assert_media_error(fn, tmp_path / name, "not a readable")


def test_truncated_files(tmp_path):
    # wav cut inside its header
    _write_sine(tmp_path / "full.wav", 16000, seconds=1.0)
    (tmp_path / "cut.wav").write_bytes((tmp_path / "full.wav").read_bytes()[:30])
    _assert_media_error(load_audio, tmp_path / "cut.wav", "not a readable audio file")
    # a valid header but no samples
    sf.write(tmp_path / "none.wav", np.zeros((0, 1), np.float32), 16000)
    _assert_media_error(load_audio, tmp_path / "none.wav", "no samples")
    # jpeg cut in the middle of its scan data
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(
        tmp_path / "full.jpg", quality=95
    )
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "full.jpg").read_bytes()[:5000])
    _assert_media_error(load_image, tmp_path / "cut.jpg", "corrupt or truncated")


def test_truncated_mp4(tmp_path):
    _write_grey_video(tmp_path / "g.mp4", n_frames=40)  # moov atom written last
    data = (tmp_path / "g.mp4").read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    _assert_media_error(load_video, tmp_path / "cut.mp4", "not a readable video")


def test_truncated_mp4_with_index_first(tmp_path, media_dir):
    # moov before mdat: the header parses, but half of the frames are missing
    src = media_dir / "pairs/videos/00048255.mp4"
    data = src.read_bytes()
    (tmp_path / "half.mp4").write_bytes(data[: len(data) // 2])
    _assert_media_error(load_video, tmp_path / "half.mp4", "truncated")


def test_audio_file_given_as_video(tmp_path, media_dir):
    shutil.copy(media_dir / "bird_audio.wav", tmp_path / "sound.wav")
    _assert_media_error(load_video, tmp_path / "sound.wav", "no video stream")


def _png_claiming(path, width, height):
    """A tiny PNG whose IHDR claims width x height (the pixel data is a stub: only the header is ever read)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    Path(path).write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def test_pixel_limits_and_decompression_bomb(tmp_path):
    Image.new("RGB", (400, 300)).save(tmp_path / "small.png")
    _assert_media_error(load_image, tmp_path / "small.png", "too large", limits=MediaLimits(max_pixels=100_000))
    assert load_image(tmp_path / "small.png", MediaLimits(max_pixels=120_000)).shape == IMAGE_SHAPE

    _png_claiming(tmp_path / "bomb.png", 100_000, 100_000)
    assert (tmp_path / "bomb.png").stat().st_size < 200
    _assert_media_error(load_image, tmp_path / "bomb.png", "too large")  # our limit, from the header
    # with our limit out of the way, PIL's own DecompressionBombError is still turned into a MediaError
    _assert_media_error(load_image, tmp_path / "bomb.png", "decompression bomb", limits=MediaLimits(max_pixels=10**12))

    _png_claiming(tmp_path / "thin.png", 100_000, 1)  # 0.1 Mpx, but 224 x 22.4 M after the short-side resize
    _assert_media_error(load_image, tmp_path / "thin.png", "aspect ratio")


def test_duration_and_size_limits(tmp_path):
    _write_sine(tmp_path / "long.wav", 16000, seconds=3.0)
    _assert_media_error(load_audio, tmp_path / "long.wav", "too long", limits=MediaLimits(max_duration_s=2.0))
    _write_grey_video(tmp_path / "g.mp4", n_frames=30)
    _assert_media_error(load_video, tmp_path / "g.mp4", "too long", limits=MediaLimits(max_duration_s=2.0))
    _assert_media_error(load_audio, tmp_path / "long.wav", "too large", limits=MediaLimits(max_bytes=1000))


def test_non_finite_audio(tmp_path):
    w = np.zeros((16000, 1), np.float32)
    w[100] = np.nan
    sf.write(tmp_path / "nan.wav", w, 16000, subtype="FLOAT")
    _assert_media_error(load_audio, tmp_path / "nan.wav", "NaN")


def test_16_bit_grey_is_scaled_not_clipped(tmp_path):
    """PIL clips 16-bit grey at 255 when it converts to RGB; the reader scales it, as its 8-bit twin reads."""
    ramp = np.linspace(0, 255, 64 * 48).reshape(48, 64).round()
    Image.fromarray((ramp * 257).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(ramp.astype(np.uint8)).save(tmp_path / "flat.png")
    assert torch.allclose(load_image(tmp_path / "deep.png"), load_image(tmp_path / "flat.png"))


def test_m4a_is_read_through_ffmpeg_like_its_wav(tmp_path):
    import subprocess

    from imageio_ffmpeg import get_ffmpeg_exe

    t = np.arange(32000) / 16000
    sf.write(tmp_path / "tone.wav", (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 16000)
    subprocess.run([get_ffmpeg_exe(), "-loglevel", "error", "-i", str(tmp_path / "tone.wav"), "-c:a", "aac",
                    "-b:a", "192k", str(tmp_path / "tone.m4a")], check=True)
    wav, m4a = load_audio(tmp_path / "tone.wav"), load_audio(tmp_path / "tone.m4a")
    assert m4a.shape == wav.shape and (m4a - wav).abs().mean() < 0.1  # AAC is lossy
