"""Few-step smoke runs of the ImageBind-nano and LLM-nano training scripts on a tiny generated world.

Each script runs 2 steps, then again to 4 (it must resume, not restart), logs its losses, and exports a folder that
loads the way the presets load it (`Encoder.from_config`, `LlamaForCausalLM.from_pretrained`, `AutoTokenizer`).
"""

import json
import shutil

import pytest
import torch

from nextgpt.train.common import load_state
from nextgpt.encoder import import_imagebind
from nextgpt.nano import parts, world


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    path = tmp_path_factory.mktemp("nano_world")
    world.generate(path, seed=0, n_images=40, n_videos=24, n_audios=24, n_dialogues=24)
    return path


def _log(run):
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


ENCODER_DIMS = ["--out_embed_dim", "16", "--vision_embed_dim", "16", "--vision_num_blocks", "1",
                "--vision_num_heads", "2", "--vision_patch", "56", "--text_embed_dim", "8", "--text_num_blocks", "1",
                "--text_num_heads", "2", "--audio_embed_dim", "16", "--audio_num_blocks", "1", "--audio_num_heads", "2",
                "--audio_patch", "32", "--batch_size", "8", "--log_every", "1", "--eval_every", "2"]


def test_nano_encoder_resumes_logs_and_exports(tiny_world, tmp_path):
    from nextgpt.train import nano_encoder as ne

    run, out = tmp_path / "run", tmp_path / "out"
    args = ["--world", str(tiny_world), "--run", str(run), "--out", str(out), *ENCODER_DIMS]
    ne.main(args + ["--steps", "2"])
    ne.main(args + ["--steps", "4"])

    losses = [r for r in _log(run) if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4]  # the second run went on from step 2
    assert all(r["loss"] > 0 for r in losses)
    assert [r["step"] for r in _log(run) if r.get("split") == "validation"] == [2, 4]
    assert load_state(run / "state.pt")["step"] == 4

    # The folder loads through Encoder.from_config and reproduces the trained model's embeddings (fp16 weights).
    kwargs = json.loads((out / "config.json").read_text())["model_kwargs"]
    enc = parts.load_encoder(out)
    assert enc.embed_dim == 16 and (out / "encoder.safetensors").is_file()
    image_bind_model, _ = import_imagebind()
    trained = image_bind_model(**kwargs)
    trained.load_state_dict(load_state(run / "state.pt")["modules"]["model"])
    trained.eval()
    data = ne.load_cached(ne.EncoderTrainConfig(world=str(tiny_world), run=str(run)), "train")
    x = ne.model_input("image", data["image"]["x"][:4])
    with torch.no_grad():
        ours = enc.embed("image", x)
        ref = parts.embed(trained, "image", x)
    assert torch.nn.functional.cosine_similarity(ours, ref).min() > 0.99
    assert torch.equal(ours, parts.load_encoder(out).embed("image", x))  # loading is deterministic

    # Multi-clip inputs from the real loaders give the cached single-clip embedding (the cache shortcut is exact).
    from nextgpt.media import load_audio, load_video

    name = data["video"]["names"][0]
    full = load_video(tiny_world / "videos" / name)[None]
    one = ne.model_input("video", data["video"]["x"][:1])[:, None]
    assert torch.allclose(enc.embed("video", full), enc.embed("video", one), atol=1e-5)
    name = data["audio"]["names"][0]
    assert torch.allclose(enc.embed("audio", load_audio(tiny_world / "audios" / name)[None]),
                          enc.embed("audio", data["audio"]["x"][:1][:, None]), atol=1e-5)

    result = parts.evaluate_encoder(out, tiny_world, "test")
    assert set(result) == {"image", "video", "audio"}
    for r in result.values():
        assert r["n"] == 0 or 0.0 <= r["media_to_caption"] <= 1.0
    assert "media->caption" in parts.format_retrieval(result)


def test_nano_llm_resumes_logs_and_exports(tiny_world, tmp_path):
    from transformers import AutoTokenizer, LlamaForCausalLM

    from nextgpt.config import SignalTokenConfig
    from nextgpt.llm import add_signal_tokens
    from nextgpt.train import nano_llm

    run, out = tmp_path / "run", tmp_path / "out"
    args = ["--world", str(tiny_world), "--run", str(run), "--out", str(out), "--extra_dialogues", "32",
            "--talk_dialogues", "16",
            "--vocab_size", "400", "--hidden_size", "32", "--num_hidden_layers", "1", "--num_attention_heads", "2",
            "--intermediate_size", "64", "--block_size", "32", "--batch_size", "2", "--log_every", "1",
            "--eval_every", "2"]
    nano_llm.main(args + ["--steps", "2"])
    nano_llm.main(args + ["--steps", "4"])

    losses = [r for r in _log(run) if "loss" in r]
    assert [r["step"] for r in losses] == [1, 2, 3, 4]
    assert [r["step"] for r in _log(run) if r.get("split") == "validation"] == [2, 4]

    model = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(out)
    assert (out / "model.safetensors").is_file()
    assert model.config.vocab_size == len(tokenizer) and model.config.hidden_size == 32
    assert tokenizer.pad_token == tokenizer.eos_token == "</s>" and tokenizer.bos_token == "<s>"
    assert tokenizer.decode(tokenizer("### Human: a red circle\n### Assistant:", add_special_tokens=False)
                            .input_ids) == "### Human: a red circle\n### Assistant:"
    ids = add_signal_tokens(tokenizer, SignalTokenConfig(first_id=None))
    assert ids["media"] == [len(tokenizer) - 38, len(tokenizer) - 37] and len(ids["video"]) == 24
    model.resize_token_embeddings(len(tokenizer))
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([[tokenizer.bos_token_id, ids["image"][0]]])).logits
    assert logits.shape == (1, 2, len(tokenizer))
    eval_ = json.loads((out / "eval.json").read_text())
    assert eval_["validation_perplexity"] > 1 and len(eval_["samples"]) == len(nano_llm.SAMPLE_PROMPTS)
    assert set(eval_["talk_following"]) == {"in", "held_out"}
    assert 0 <= eval_["talk_following"]["held_out"]["all"] <= 1


def test_nano_encoder_learns_foreign_uploads_apart(tiny_world, tmp_path):
    """`--part foreign` continues an exported encoder on the talk's uploads: it resumes, logs both losses, exports in
    place, and scores the test split's uploads."""
    from nextgpt.nano import talk
    from nextgpt.train import nano_encoder as ne

    world_dir = tmp_path / "world"  # a copy: the talk's files stay out of the module's world
    shutil.copytree(tiny_world, world_dir)
    small = {"varied": {"image": 6, "video": 3, "audio": 3}, "foreign": {"image": 4, "video": 3, "audio": 3}}
    for split in ("train", "test"):  # the talk's upload files, each listed by one dialogue as talk.json lists them
        pools = talk._render_pools(world_dir, split, 0, small, log=lambda *_: None)
        items = [it for group in pools["varied"].values() for it in group] + [
            it for group in pools["foreign"].values() for it in group]
        records = [{f"{m}_list": [{f"{m}_name": it["name"], "attributes": it["attributes"]}
                                  for it in items if it["modality"] == m]} for m in ("image", "video", "audio")]
        (world_dir / split / "talk.json").write_text(json.dumps(records))
    uploads = ne.talk_uploads(world_dir, "train")
    assert all(u["foreign"] and u["world"] for u in uploads.values())
    assert all("_foreign_" in f for u in uploads.values() for f in u["foreign"])

    run, out = tmp_path / "run", tmp_path / "out"
    args = ["--world", str(world_dir), "--run", str(run), "--out", str(out), *ENCODER_DIMS]
    ne.main(args + ["--steps", "2"])
    before = parts.load_encoder(out)
    foreign = ["--part", "foreign", "--foreign_batch", "2", "--foreign_world_items", "4"]
    ne.main(args + foreign + ["--foreign_steps", "2"])
    ne.main(args + foreign + ["--foreign_steps", "3"])

    steps = [r for r in _log(run / "foreign") if "kept_image" in r]
    assert [r["step"] for r in steps] == [1, 2, 3]  # resumed from step 2
    assert all(r[f"apart_{m}"] >= 0 and r[f"kept_{m}"] >= 0 for r in steps for m in ("image", "video", "audio"))
    result = json.loads((out / "eval-foreign.json").read_text())
    assert set(result) == {"image", "video", "audio"}
    for r in result.values():
        assert r["n_foreign"] > 0 and 0.0 <= r["foreign_at_anchor"] <= 1.0 and r["world_cos_to_before"] > 0.5
    after = parts.load_encoder(out)
    x = torch.randn(2, 3, 224, 224)
    assert not torch.equal(before.embed("image", x), after.embed("image", x))  # the exported encoder changed
