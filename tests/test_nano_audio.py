"""Smoke test of AudioLDM-nano's training script: every part runs a few steps on a tiny world with tiny dims, a part
resumes from its step counter, and the exported folder loads with `AudioLDMPipeline.from_pretrained` and makes
sound from a string prompt and from a (1, D) embedding. CI never trains for real."""

import json

import numpy as np
import pytest
import torch

from nextgpt.train.common import load_state
from nextgpt.nano import parts, world
from nextgpt.vocoder import GriffinLimVocoder, log_mel
from nextgpt.train import nano_audio


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = tmp_path_factory.mktemp("world")
    world.generate(out, seed=0, n_images=0, n_videos=0, n_audios=36, n_dialogues=0)
    return out


def tiny_config(world_dir, tmp_path, **over) -> nano_audio.AudioTrainConfig:
    cfg = dict(world=str(world_dir), run=str(tmp_path / "run"), out=str(tmp_path / "out"), save_every_s=1e9,
               vocab_size=300, text_width=16, text_layers=1, text_heads=2, embed_dim=8, tower_width=8,
               text_steps=2, text_batch=8, vae_channels=(8, 8, 8), norm_groups=4, vae_steps=2, vae_batch=2,
               vae_crop=32, unet_channels=(8, 8, 16), unet_steps=2, unet_batch=4, warmup=2, frames=32,
               unet_eval_every=2, report_n=1, num_inference_steps=2, guidance_grid="2", steps_grid="2", select_n=2,
               test_n=2)
    return nano_audio.AudioTrainConfig(**{**cfg, **over})


def test_griffin_lim_keeps_pitch_and_rhythm():
    rng = np.random.default_rng(0)
    for colour, rhythm in (("red", "beeping"), ("purple", "steady")):
        wave = world.render_sound(colour, rhythm, rng)
        mel = log_mel(wave)
        back = GriffinLimVocoder.build()(mel[:128])
        assert back.shape == (128 * 160,)
        from nextgpt.nano import oracles

        found = oracles.sound_attributes(back.numpy(), 16000)
        assert (found["colour"], found["rhythm"]) == (colour, rhythm)


def test_all_parts_resume_and_export(tiny_world, tmp_path):
    from diffusers import AudioLDMPipeline

    cfg = tiny_config(tiny_world, tmp_path)
    result = nano_audio.train(cfg, "all")
    assert {"colour", "rhythm", "all", "guidance_scale", "num_inference_steps"} <= set(result)

    # Resume: more steps continue from the saved step counter, and the log says so.
    nano_audio.train(tiny_config(tiny_world, tmp_path, text_steps=4), "text")
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "text" / "log.jsonl").read_text().splitlines()]
    assert steps[0] == 2 and steps[-1] == 4 and 3 not in steps[:2]
    state = load_state(tmp_path / "run" / "text" / "state.pt")
    assert state["step"] == 4

    # The exported folder is a plain AudioLDMPipeline, vocoder included, with its inference settings.
    pipe = AudioLDMPipeline.from_pretrained(str(tmp_path / "out"), dtype=torch.float32)
    assert type(pipe.vocoder).__name__ == "GriffinLimVocoder"
    settings = parts.inference_settings("audio", tmp_path / "out")
    assert settings["num_inference_steps"] == 2 and settings["guidance_scale"] == 2.0
    gen = torch.Generator().manual_seed(0)
    audio = pipe("a beeping red tone", num_inference_steps=2, audio_length_in_s=0.32, generator=gen).audios
    assert audio.shape == (1, 5120) and np.isfinite(audio).all()
    audio = pipe(prompt_embeds=torch.nn.functional.normalize(torch.randn(1, 8), dim=-1), num_inference_steps=2,
                 audio_length_in_s=0.32, generator=gen).audios
    assert audio.shape == (1, 5120)
    scores = parts.evaluate_decoder("audio", tmp_path / "out", tiny_world, "train", n=2)
    assert scores["n"] == 2 and 0.0 <= scores["colour"] <= 1.0

    # Retune: a wider grid chosen again on the exported folder; its settings are a point of the grid.
    result = nano_audio.train(tiny_config(tiny_world, tmp_path, guidance_grid="1,3", steps_grid="1,2"), "retune")
    settings = parts.inference_settings("audio", tmp_path / "out")
    assert settings["guidance_scale"] in (1.0, 3.0) and settings["num_inference_steps"] in (1, 2)
    assert result["guidance_scale"] == settings["guidance_scale"]
    assert json.loads((tmp_path / "run" / "retune" / "result.json").read_text())["n"] == 2
