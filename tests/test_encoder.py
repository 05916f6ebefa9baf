"""Encode stage: tiny random ImageBind, NExT-GPT post-processing, cache, reproducible init, save/load."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from nextgpt.config import EncoderConfig, tiny
from nextgpt.encoder import Encoder, import_imagebind
from nextgpt.media import Media, MediaError, preprocess


@pytest.fixture(scope="module")
def media_files(tmp_path_factory, media_dir) -> dict[str, Path]:
    """The repository's sample image / audio / video under plain names, plus a second (random) image."""
    d = tmp_path_factory.mktemp("media")
    rng = np.random.default_rng(0)
    shutil.copy(media_dir / "bird_image.jpg", d / "image.jpg")
    shutil.copy(media_dir / "bird_audio.wav", d / "audio.wav")
    shutil.copy(media_dir / "test.mp4", d / "video.mp4")
    Image.fromarray(rng.integers(0, 256, (256, 320, 3), dtype=np.uint8)).save(d / "image2.png")
    return {"image": d / "image.jpg", "audio": d / "audio.wav", "video": d / "video.mp4", "image2": d / "image2.png"}


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder.from_config(tiny().encoder)


@pytest.fixture(scope="module")
def inputs(media_files) -> dict[str, torch.Tensor]:
    return {m: preprocess(Media(m, str(media_files[m]))).unsqueeze(0) for m in ("image", "audio", "video")}


def _items(files):
    return [Media("image", str(files["image"])), Media("audio", str(files["audio"])), Media("video", str(files["video"]))]


def test_import_leaves_no_stubs_behind():
    model_cls, modality = import_imagebind()
    assert model_cls.__name__ == "ImageBindModel" and modality.VISION == "vision"
    assert "torchvision" not in sys.modules and "torchaudio" not in sys.modules
    timm = sys.modules.get("timm")
    assert timm is None or getattr(timm, "__file__", None)  # only the real timm may stay registered


def test_encode_shapes_and_norms(encoder, media_files):
    assert encoder.embed_dim == 32
    emb = encoder.encode(_items(media_files))
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    norms = emb.norm(dim=-1)
    assert torch.isclose(norms[0], torch.tensor(1.0), atol=1e-5)  # a single image: unit norm
    assert (norms[1:] <= 1 + 1e-5).all() and (norms[1:] > 0).all()  # mean of unit clip embeddings
    assert encoder.encode([]).shape == (0, 32)


def test_postprocessing_matches_imagebind_except_audio_scale(encoder, inputs):
    _, modality = import_imagebind()
    with torch.no_grad():
        ref = encoder.model({modality.VISION: inputs["image"]})[modality.VISION]
        ref_video = encoder.model({modality.VISION: inputs["video"]})[modality.VISION]
        ref_audio = encoder.model({modality.AUDIO: inputs["audio"]})[modality.AUDIO]
    torch.testing.assert_close(encoder.embed("image", inputs["image"]), ref)
    torch.testing.assert_close(encoder.embed("video", inputs["video"]), ref_video)
    # upstream ImageBind scales audio by 20 after normalising; NExT-GPT does not
    torch.testing.assert_close(encoder.embed("audio", inputs["audio"]) * 20, ref_audio)


def test_embed_averages_per_clip_unit_vectors(encoder, inputs):
    audio = inputs["audio"]
    per_clip = torch.stack([encoder.embed("audio", audio[:, i: i + 1]) for i in range(audio.shape[1])], dim=1)
    assert torch.allclose(per_clip.norm(dim=-1), torch.ones(1, 3), atol=1e-5)
    torch.testing.assert_close(encoder.embed("audio", audio), per_clip.mean(dim=1))


def test_embed_rejects_wrong_rank(encoder, inputs):
    with pytest.raises(ValueError):
        encoder.embed("image", inputs["image"][0])
    with pytest.raises(ValueError):
        encoder.embed("text", inputs["image"])


def test_cache_hits_and_order(encoder, media_files, monkeypatch, tmp_path):
    encoder.clear_cache()
    calls = []
    real_embed = encoder.embed

    def counting_embed(modality, x):
        calls.append((modality, x.shape[0]))
        return real_embed(modality, x)

    monkeypatch.setattr(encoder, "embed", counting_embed)
    items = _items(media_files)
    first = encoder.encode(items)
    assert sorted(calls) == [("audio", 1), ("image", 1), ("video", 1)]

    calls.clear()
    second = encoder.encode(items)
    assert calls == [] and torch.equal(first, second)

    # same content under another name is a hit; a new image is embedded alone; the order is the input order
    copy = tmp_path / "renamed.jpg"
    shutil.copy(media_files["image"], copy)
    calls.clear()
    mixed = encoder.encode([Media("audio", str(media_files["audio"])), Media("image", str(media_files["image2"])),
                            Media("image", str(copy)), Media("image", str(media_files["image2"]))])
    assert calls == [("image", 1)]
    torch.testing.assert_close(mixed[0], first[1])
    torch.testing.assert_close(mixed[2], first[0])
    torch.testing.assert_close(mixed[1], mixed[3])


def test_cache_is_bounded(media_files):
    enc = Encoder.from_config(tiny().encoder)
    enc.cache_size = 1
    enc.encode([Media("image", str(media_files["image"])), Media("image", str(media_files["image2"]))])
    assert len(enc._cache) == 1


def test_encode_reports_bad_media(encoder, tmp_path):
    (tmp_path / "x.jpg").write_text("not an image")
    with pytest.raises(MediaError, match="x.jpg"):
        encoder.encode([Media("image", str(tmp_path / "x.jpg"))])
    with pytest.raises(MediaError, match="missing.wav"):
        encoder.encode([Media("audio", str(tmp_path / "missing.wav"))])


def test_random_init_is_reproducible_and_keeps_rng(encoder):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    other = Encoder.from_config(tiny().encoder)
    assert torch.equal(torch.rand(3), expected)  # the caller's RNG stream is untouched
    a, b = encoder.model.state_dict(), other.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert not any(p.requires_grad for p in other.parameters()) and not other.training


def test_save_and_load_round_trip(encoder, media_files, tmp_path):
    encoder.save_pretrained(tmp_path / "enc")
    assert (tmp_path / "enc" / "encoder.safetensors").is_file()
    torch.save(encoder.model.state_dict(), tmp_path / "encoder.pth")
    torch.save(encoder.model.state_dict(), tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    expected = encoder.encode(_items(media_files))
    cfg = tiny().encoder
    for source in (tmp_path / "enc", tmp_path / "encoder.pth", tmp_path / "legacy.pth"):
        loaded = Encoder.from_config(EncoderConfig(pretrained=str(source), model_kwargs=cfg.model_kwargs))
        torch.testing.assert_close(loaded.encode(_items(media_files)), expected, rtol=0, atol=0)
    with pytest.raises(FileNotFoundError):
        Encoder.from_config(EncoderConfig(pretrained=str(tmp_path / "nothing"), model_kwargs=cfg.model_kwargs))
