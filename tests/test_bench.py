"""The benchmark script runs and reports every figure it promises (one repeat; the figures are not judged here)."""

import json

from bench import run as bench


def test_overhead_sections_report_their_ratios(tiny_model, tmp_path):
    wrapper = bench.wrapper_overhead(tiny_model, 1, tmp_path)
    app = bench.app_overhead(tiny_model, 1, tmp_path, model_name="tiny")
    assert wrapper["wrapper ratio"] > 0 and app["app ratio"] > 0
    assert 0 < app["gradio + client, idle answer as long (s)"] < app["app turn via gradio_client (s)"]
    assert app["app ratio less gradio + client"] < app["app ratio"]
    assert app["files fetched per app turn"] == 1  # the image the turn asked for, fetched as a browser does
    assert 0 < app["time to first word via the app (s)"] < app["app turn via gradio_client (s)"] + 1


def test_time_to_first_word_is_measured_from_the_call(tiny_model):
    assert 0 < bench.first_word(tiny_model, bench._turn(tiny_model, "What can you do?")) < 30


def test_compare_prints_new_over_old(tmp_path, capsys):
    old, new = tmp_path / "old.json", tmp_path / "new.json"
    old.write_text(json.dumps({"model": "tiny", "wrapper": {"wrapper ratio": 2.0}}))
    new.write_text(json.dumps({"model": "tiny", "wrapper": {"wrapper ratio": 1.0}}))
    assert bench.main(["--compare", str(old), str(new)]) == 0
    assert "x0.500" in capsys.readouterr().out


def test_gpu_bench_runs_at_tiny_size_on_cpu(tmp_path):
    from bench import gpu

    out = tmp_path / "gpu.json"
    assert gpu.main(["--size", "tiny", "--device", "cpu", "--prompt-tokens", "16", "--new-tokens", "4",
                     "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["size"] == "tiny" and result["device"] == "cpu"
    assert result["llm"]["prefill (s)"] > 0 and result["llm"]["decode tokens/s"] > 0
    assert all(result[f"{m} decoder (s)"] > 0 for m in ("image", "video", "audio"))
    assert result["decoder settings"]["video"]["frames"] == 4  # the tiny preset's; full size: the official 24
    assert result["peak GPU memory, all resident (GiB)"] is None  # no GPU here


def test_gpu_bench_decoders_have_the_published_sizes():
    """SD 1.5's UNet / VAE / CLIP-L, Zeroscope's 1.4 B UNet, AudioLDM-l-full's 975 M in all (weightless)."""
    import torch

    from bench import gpu

    def millions(modality):
        with torch.device("meta"):
            pipe = gpu.full_pipeline(modality)
        return {k: sum(p.numel() for p in c.parameters()) / 1e6 for k, c in pipe.components.items()
                if isinstance(c, torch.nn.Module)}

    image, video, audio = millions("image"), millions("video"), millions("audio")
    assert (round(image["unet"], 2), round(image["vae"], 2), round(image["text_encoder"], 2)) == (859.52, 83.65, 123.06)
    assert round(video["unet"]) == 1411
    assert round(sum(audio.values())) == 975


def test_turns_are_timed_beside_a_baselines(tiny_model, tmp_path):
    times = bench.turns(tiny_model, 1, tmp_path, baseline=tiny_model)
    assert set(times) == {f"{p}{k} turn (s)" for p in ("", "baseline: ") for k in bench.TURNS}
    assert all(t > 0 for t in times.values())


def test_a_sampler_choice_is_saved_with_its_decoder(tmp_path):
    """The decoder folder then loads with the chosen scheduler and steps, and the model's config has the steps."""
    from bench import samplers
    from nextgpt.config import get_preset
    from nextgpt.nano import parts
    from nextgpt.offline import build_tiny_pipeline

    cfg = get_preset("tiny")
    folder = tmp_path / "image_decoder"
    build_tiny_pipeline("image", cfg.decoders["image"], cfg.output_projectors["image"].out_dim).save_pretrained(folder)
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"decoders": {"image": {"num_inference_steps": 4}}}))
    choice = {"scheduler": "DPMSolverMultistepScheduler", "guidance_scale": 3.0, "num_inference_steps": 2,
              "guidance_fraction": 0.5}
    samplers.save_choice("image", folder, config, choice)
    assert type(parts.load_pipeline("image", folder).scheduler).__name__ == "DPMSolverMultistepScheduler"
    settings = {"guidance_scale": 3.0, "num_inference_steps": 2, "guidance_fraction": 0.5}
    assert parts.inference_settings("image", folder) == settings
    assert json.loads(config.read_text())["decoders"]["image"] == {"num_inference_steps": 2, "guidance_fraction": 0.5}
    assert parts.score(parts.load_pipeline("image", folder), "image", [("a red circle on the left", {})], settings)
    # candidates are tried cheapest first: a guided step costs two UNet passes
    assert samplers.passes({"num_inference_steps": 4, "guidance_fraction": 0.25}) == 5
    assert samplers.passes({"num_inference_steps": 8}) == 16
    base = {"colour": 0.9, "shape": 1.0, "position": 1.0, "all": 0.9}
    assert samplers.holds({**base, "colour": 0.89}, base, "image", 0.02)
    assert not samplers.holds({**base, "shape": 0.95}, base, "image", 0.02)
