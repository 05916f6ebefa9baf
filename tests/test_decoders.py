"""The decode and render stages on tiny random pipelines of the real architectures (SD, Zeroscope, AudioLDM)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from nextgpt.config import tiny
from nextgpt.decoders import DecodedMedia, Decoders, DecoderError
from nextgpt.render import AUDIO_PEAK, peak_normalised, write_media

COND_DIMS = {"image": 32, "video": 32, "audio": 32}
SHAPES = {"image": (1, 77, 32), "video": (1, 77, 32), "audio": (1, 32)}  # what the output projectors produce
SUFFIX = {"image": "png", "video": "mp4", "audio": "wav"}


def embeds(modality: str, seed: int = 0) -> torch.Tensor:
    return torch.randn(*SHAPES[modality], generator=torch.Generator().manual_seed(seed))


def as_array(media: DecodedMedia) -> np.ndarray:
    return np.asarray(media.data)


@pytest.fixture(scope="module")
def configs():
    return tiny().decoders


@pytest.fixture(scope="module")
def decoders(configs):
    return Decoders(configs, cond_dims=COND_DIMS)


def test_lazy_and_cached(configs):
    dec = Decoders(configs, cond_dims=COND_DIMS)
    assert not any(dec.is_loaded(m) for m in COND_DIMS)
    assert dec.load_count == {"image": 0, "video": 0, "audio": 0}
    dec.decode("image", embeds("image"), seed=0)
    dec.decode("image", embeds("image"), seed=1)
    assert dec.load_count == {"image": 1, "video": 0, "audio": 0}
    assert dec.is_loaded("image") and not dec.is_loaded("video")
    assert dec.get("image") is dec.get("image")


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_decode_and_write(decoders, configs, modality, tmp_path):
    cfg = configs[modality]
    calls = []
    media = decoders.decode(modality, embeds(modality), seed=3, progress=lambda i, n: calls.append((i, n)))
    steps = cfg.num_inference_steps
    assert calls == [(i, steps) for i in range(steps + 1)]  # (0, steps) as it starts
    assert media.modality == modality
    assert media.info["seed"] == 3 and media.info["steps"] == steps and media.info["guidance"] == cfg.guidance_scale
    assert media.info["seconds_taken"] >= 0
    path = write_media(media, tmp_path / "out" / f"x.{SUFFIX[modality]}")  # parent folder is created
    assert path.exists() and path.stat().st_size > 0

    if modality == "image":
        from PIL import Image

        assert media.data.size == (cfg.width, cfg.height)
        with Image.open(path) as im:
            assert im.format == "PNG" and im.size == (cfg.width, cfg.height)
    elif modality == "video":
        from moviepy import VideoFileClip

        assert media.data.shape == (cfg.num_frames, cfg.height, cfg.width, 3) and media.data.dtype == np.uint8
        assert media.fps == cfg.fps
        with VideoFileClip(str(path)) as clip:
            assert tuple(clip.size) == (cfg.width, cfg.height)
            assert clip.fps == cfg.fps
            assert round(clip.duration * clip.fps) == cfg.num_frames
            assert sum(1 for _ in clip.iter_frames()) == cfg.num_frames
    else:
        import soundfile

        assert media.data.dtype == np.float32 and media.data.ndim == 1
        assert media.sample_rate == cfg.sample_rate
        wav, rate = soundfile.read(str(path), dtype="float32")
        assert rate == cfg.sample_rate
        assert abs(len(wav) / rate - cfg.audio_length_s) <= 0.01  # within one 10 ms mel frame
        np.testing.assert_allclose(wav, media.data * media.info["gain"], rtol=1e-5)
        assert np.abs(wav).max() == pytest.approx(AUDIO_PEAK, rel=1e-5)  # normalised, with headroom


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_seeded(decoders, modality):
    e = embeds(modality)
    a = as_array(decoders.decode(modality, e, seed=11))
    b = as_array(decoders.decode(modality, e, seed=11))
    c = as_array(decoders.decode(modality, e, seed=12))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


def test_unseeded_records_a_reproducible_seed(decoders):
    e = embeds("audio")
    first = decoders.decode("audio", e)
    again = decoders.decode("audio", e, seed=first.info["seed"])
    np.testing.assert_array_equal(first.data, again.data)


def test_audio_accepts_projector_shape(decoders):
    e = embeds("audio")  # (1, D); the audio projector has one query, so it may also give (1, 1, D)
    a = decoders.decode("audio", e, seed=5).data
    b = decoders.decode("audio", e[:, None, :], seed=5).data
    np.testing.assert_array_equal(a, b)


def test_overrides(decoders):
    media = decoders.decode("video", embeds("video"), num_inference_steps=2, num_frames=2, height=16, width=24,
                            guidance_scale=1.0, seed=0)
    assert media.data.shape == (2, 16, 24, 3)
    assert media.info["steps"] == 2 and media.info["guidance"] == 1.0 and media.info["size"] == (24, 16)
    audio = decoders.decode("audio", embeds("audio"), audio_length_s=0.64, num_inference_steps=2, seed=0)
    assert audio.data.shape == (int(0.64 * 16000),) and audio.info["seconds"] == 0.64


def test_save_pretrained_round_trip(decoders, configs, tmp_path):
    for m in COND_DIMS:
        decoders.get(m)
    folders = decoders.save_pretrained(tmp_path)
    assert all((tmp_path / f"{m}_decoder" / "model_index.json").exists() for m in COND_DIMS)
    loaded_cfgs = {m: dataclasses.replace(configs[m], pretrained=str(folders[m])) for m in COND_DIMS}
    loaded = Decoders(loaded_cfgs, cond_dims=COND_DIMS)
    for m in COND_DIMS:
        assert type(loaded.get(m)) is type(decoders.get(m))
        # Not bit-exact for audio: weights memory-mapped from safetensors sit at other alignments, so CPU kernels
        # round differently (~1e-7). Images and video frames (uint8) come out identical.
        np.testing.assert_allclose(as_array(loaded.decode(m, embeds(m), seed=7)),
                                   as_array(decoders.decode(m, embeds(m), seed=7)), rtol=0, atol=1e-5)
    assert loaded.load_count == {"image": 1, "video": 1, "audio": 1}


class RaisingPipeline:
    def __init__(self, exc: BaseException):
        self.exc = exc

    def __call__(self, **kwargs):
        raise self.exc


def test_failure_becomes_decoder_error(configs):
    boom = ValueError("the scheduler exploded")
    dec = Decoders(configs, cond_dims=COND_DIMS, pipelines={"image": RaisingPipeline(boom)})
    assert dec.is_loaded("image") and dec.load_count["image"] == 0
    with pytest.raises(DecoderError, match="The image decoder failed: the scheduler exploded") as info:
        dec.decode("image", embeds("image"), seed=0)
    assert info.value.__cause__ is boom


@pytest.mark.parametrize("exc", [torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB"),
                                 RuntimeError("CUDA out of memory"), MemoryError()])
def test_out_of_memory_message(configs, exc):
    dec = Decoders(configs, cond_dims=COND_DIMS, pipelines={"video": RaisingPipeline(exc)})
    with pytest.raises(DecoderError, match="video decoder ran out of memory; try fewer frames or steps"):
        dec.decode("video", embeds("video"), seed=0)


def test_bad_inputs(configs, tmp_path):
    dec = Decoders(configs, cond_dims=COND_DIMS)
    with pytest.raises(ValueError, match="no decoder configured"):
        dec.get("smell")
    missing = Decoders({"image": dataclasses.replace(configs["image"], pretrained=str(tmp_path / "nope"))},
                       cond_dims=COND_DIMS)
    with pytest.raises(DecoderError, match="Could not load the image decoder"):
        missing.decode("image", embeds("image"))


def test_odd_video_sizes_are_padded_for_yuv420p(decoders, tmp_path):
    from moviepy import VideoFileClip

    frames = np.random.default_rng(0).integers(0, 255, (3, 33, 31, 3), dtype=np.uint8)
    media = DecodedMedia("video", frames, fps=8)
    path = write_media(media, tmp_path / "odd.mp4")
    with VideoFileClip(str(path)) as clip:
        assert tuple(clip.size) == (32, 34)
    assert media.info["padded_to"] == (32, 34)


def test_written_sounds_never_clip(decoders, tmp_path):
    """A vocoder that overshoots full scale (2.0), or one that whispers, is written peaking at -1 dBFS."""
    rate = 16000
    t = np.arange(rate, dtype=np.float32) / rate
    for amplitude in (2.0, 0.01):
        tone = DecodedMedia("audio", amplitude * np.sin(2 * np.pi * 440 * t), sample_rate=rate)
        wav, _ = sf.read(str(write_media(tone, tmp_path / f"{amplitude}.wav")), dtype="float32")
        assert np.abs(wav).max() == pytest.approx(AUDIO_PEAK, rel=1e-5) and AUDIO_PEAK < 1
        assert tone.info["gain"] == pytest.approx(AUDIO_PEAK / amplitude, rel=1e-4)
    silence, gain = peak_normalised(np.zeros(100))
    assert gain == 1.0 and not silence.any()


def test_shipped_audio_decoder_loads_in_a_fresh_process():
    """AudioLDM-nano's model_index.json names its vocoder's module (older folders name `nextgpt.nano.vocoder`):
    loading it through `Decoders` alone, with nothing imported beforehand, finds it."""
    import subprocess
    import sys

    code = ("from nextgpt.config import DecoderConfig\nfrom nextgpt.decoders import Decoders\n"
            "d = Decoders({'audio': DecoderConfig('assets/nano/audio_decoder')}, cond_dims={'audio': 32})\n"
            "print(type(d.get('audio').vocoder).__name__)")
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().endswith("GriffinLimVocoder")


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_guidance_on_the_first_steps_only_halves_the_later_passes(configs, modality):
    cfg = dataclasses.replace(configs[modality], guidance_scale=3.0, num_inference_steps=4)
    full = Decoders({modality: cfg}, cond_dims=COND_DIMS)
    half = Decoders({modality: dataclasses.replace(cfg, guidance_fraction=0.5)}, cond_dims=COND_DIMS)
    batches = []
    for dec in (full, half):
        dec.get(modality).unet.time_proj.register_forward_pre_hook(lambda _m, args: batches.append(args[0].shape[0]))
    a = as_array(full.decode(modality, embeds(modality), seed=0))
    b_media = half.decode(modality, embeds(modality), seed=0)
    b = as_array(b_media)
    assert b_media.info["guided_steps"] == 2
    c = as_array(full.decode(modality, embeds(modality), seed=0))
    assert batches == [2, 2, 2, 2] + [2, 2, 1, 1] + [2, 2, 2, 2]  # and the pipeline's guidance is left as it was
    np.testing.assert_array_equal(a, c)
    assert not np.array_equal(a, b)
