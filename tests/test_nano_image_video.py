"""Smoke runs of SD-nano and Zeroscope-nano training (nextgpt/train/nano_image.py, nano_video.py) on a tiny world.

A few steps of every part at tiny sizes: each script runs end to end, logs, resumes where it stopped, and exports a
pipeline folder that the stock diffusers pipelines load and run from a plain string prompt. CI never trains for real.
"""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from nextgpt.nano import world
from nextgpt.train import nano_image, nano_video


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("nano_iv")
    world.generate(root / "world", seed=0, n_images=24, n_videos=10, n_audios=2, n_dialogues=0)
    return root


def _image_args(root: Path, **over) -> list[str]:
    args = dict(world=root / "world", run=root / "run_image", out=root / "image_decoder", cache=root / "cache",
                text_width=32, text_layers=1, text_heads=2, text_steps=2, text_batch=8, text_eval_every=2,
                vae_channels="8,8,8", vae_groups=4, vae_steps=2, vae_batch=4, vae_eval_every=2,
                unet_channels="16,16", unet_heads=2, unet_steps=2, unet_batch=4, unet_eval_every=2, eval_n=2,
                steps=2, log_every=1, save_every_s=0, threads=1)
    args.update(over)
    return [s for k, v in args.items() for s in (f"--{k.replace('_', '-')}", str(v))]


def _log(folder: Path) -> list[dict]:
    return [json.loads(line) for line in (folder / "log.jsonl").read_text().splitlines()]


def test_image_parts_resume_and_export(tiny):
    from diffusers import StableDiffusionPipeline

    nano_image.main(_image_args(tiny, part="text"))
    nano_image.main(_image_args(tiny, part="vae"))
    assert (tiny / "run_image" / "text" / "text_encoder" / "config.json").exists()
    assert (tiny / "run_image" / "vae" / "vae" / "config.json").exists()
    nano_image.main(_image_args(tiny, part="unet"))
    first = [r["step"] for r in _log(tiny / "run_image" / "unet") if "loss" in r]
    assert first == [1, 2]
    nano_image.main(_image_args(tiny, part="unet", unet_steps=4))  # resumes at step 2, does not start over
    log = _log(tiny / "run_image" / "unet")
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert any("val_colour" in r for r in log)
    assert list((tiny / "run_image" / "unet" / "samples").glob("*.png"))
    nano_image.main(_image_args(tiny, part="export"))

    out = tiny / "image_decoder"
    assert (out / "unet" / "diffusion_pytorch_model.safetensors").exists()
    pipe = StableDiffusionPipeline.from_pretrained(out)  # as a user loads it: no dtype, no extra arguments
    pipe.set_progress_bar_config(disable=True)
    img = pipe("a red circle on the left", num_inference_steps=2, height=64, width=64, guidance_scale=5.0,
               generator=torch.Generator().manual_seed(0)).images[0]
    assert img.size == (64, 64)
    embeds = pipe.text_encoder(pipe.tokenizer("a red circle", padding="max_length", max_length=77,
                                              return_tensors="pt").input_ids).last_hidden_state
    assert embeds.shape == (1, 77, 32)  # the conditioning NExT-GPT's image output projector regresses
    img = pipe(prompt_embeds=embeds, num_inference_steps=2, height=64, width=64, output_type="np").images
    assert img.shape == (1, 64, 64, 3) and np.isfinite(img).all()
    scores = nano_image.evaluate(out, tiny / "world", split="train", n=2, steps=2)  # tiny world: no test items
    assert scores["n"] == 2 and {"colour", "shape", "position"} <= set(scores)


def test_video_resume_and_export(tiny):
    from diffusers import TextToVideoSDPipeline

    if not (tiny / "image_decoder" / "model_index.json").exists():
        test_image_parts_resume_and_export(tiny)
    args = dict(world=tiny / "world", run=tiny / "run_video", out=tiny / "video_decoder", cache=tiny / "cache",
                image_decoder=tiny / "image_decoder", unet_heads=2, unet_steps=2, unet_batch=2, unet_eval_every=2,
                eval_n=1, steps=2, log_every=1, save_every_s=0, threads=1)
    argv = lambda **o: [s for k, v in {**args, **o}.items() for s in (f"--{k.replace('_', '-')}", str(v))]  # noqa
    nano_video.main(argv(part="unet"))
    nano_video.main(argv(part="unet", unet_steps=3))
    log = _log(tiny / "run_video" / "unet")
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3]
    nano_video.main(argv(part="export"))

    pipe = TextToVideoSDPipeline.from_pretrained(tiny / "video_decoder")
    pipe.set_progress_bar_config(disable=True)
    frames = pipe("a red circle moving left", num_inference_steps=2, height=64, width=64, num_frames=8,
                  output_type="np").frames
    assert np.asarray(frames).shape == (1, 8, 64, 64, 3)
    assert nano_video.inference_settings(tiny / "video_decoder") == {"guidance_scale": 5.0, "num_inference_steps": 2}
    scores = nano_video.evaluate(tiny / "video_decoder", tiny / "world", split="train", n=1)
    assert scores["n"] == 1 and {"colour", "direction"} <= set(scores) and scores["num_inference_steps"] == 2

    # retune: guidance chosen on validation captions, saved with the pipeline, the test split scored with it
    nano_video.main(argv(part="retune", guidance_grid="2,5", select_n=1))
    chosen = nano_video.inference_settings(tiny / "video_decoder")
    assert chosen["guidance_scale"] in (2.0, 5.0) and chosen["num_inference_steps"] == 2
    info = json.loads((tiny / "video_decoder" / "nano_training.json").read_text())
    assert info["retune"]["guidance_scale"] == chosen["guidance_scale"] and info["retune"]["split"] == "test"
    selected = [r for r in _log(tiny / "run_video" / "retune") if r.get("select")]
    assert [r["guidance_scale"] for r in selected] == [2.0, 5.0] and all(r["split"] == "validation" for r in selected)

    # a continuation may start from the exported (fp16) pipeline folder: its weights, not the image UNet's
    exported = nano_video.initial_weights(str(tiny / "video_decoder"))
    assert all(v.dtype == torch.float32 for v in exported.values())
    nano_video.main(argv(part="unet", run=tiny / "run_video2", init_state=tiny / "video_decoder", unet_steps=1))
    assert [r["step"] for r in _log(tiny / "run_video2" / "unet") if "loss" in r] == [1]
