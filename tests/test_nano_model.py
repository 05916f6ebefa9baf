"""The shipped NExT-GPT nano (`assets/nano`), the default model: one example per direction, judged by the oracles.

Inputs are rendered by the world's own renderers (never seen in training: fresh jitter), the prompts use the
world's phrasing, and a fixed seed keeps each answer the same from run to run.
"""

import json

import numpy as np
import pytest

from nextgpt.config import DEFAULT_MODEL, SHIPPED, NextGPTConfig
from nextgpt.conversation import Message
from nextgpt.eval import read_media
from nextgpt.media import Media, guess_modality
from nextgpt.nano import oracles
from nextgpt.nano import world as W
from nextgpt.train import nano_model


@pytest.fixture(scope="module")
def nano(nano_model):
    return nano_model


def _write(modality, attrs, folder, seed=7) -> Media:
    data = W.render(modality, attrs, np.random.default_rng(seed))
    path = folder / {"image": "in.png", "video": "in.mp4", "audio": "in.wav"}[modality]
    {"image": W.write_image, "video": W.write_video, "audio": W.write_sound}[modality](path, data)
    return Media(modality, str(path))


def _ask(model, folder, *parts, output="auto"):
    return model.generate([Message("user", list(parts))], seed=0, output=output, out_dir=folder / "out")


def test_default_is_the_shipped_nano():
    assert DEFAULT_MODEL == "nano" and (SHIPPED["nano"] / "config.json").exists()


def test_shipped_decoder_settings_are_those_chosen_on_validation(nano):
    """The model's config decodes at the guidance and steps saved with each decoder (chosen on validation captions)."""
    from nextgpt.nano import parts

    for modality in ("image", "video", "audio"):
        chosen = parts.inference_settings(modality, SHIPPED["nano"] / f"{modality}_decoder")
        used = nano.config.decoders[modality]
        assert (used.guidance_scale, used.num_inference_steps) == (chosen["guidance_scale"],
                                                                   chosen["num_inference_steps"])


@pytest.mark.parametrize("modality, prompt, truth", [
    ("image", "Draw a red circle on the left.", {"colour": "red", "shape": "circle", "position": "left"}),
    ("video", "Make a video of a blue square moving up.", {"colour": "blue", "direction": "up"}),
    ("audio", "Play a beeping yellow tone.", {"colour": "yellow", "rhythm": "beeping"}),
])
def test_text_to_media(nano, tmp_path, modality, prompt, truth):
    result = _ask(nano, tmp_path, prompt)
    assert [m.modality for m in result.media] == [modality]  # routed by itself, with output="auto"
    read = read_media(modality, result.media[0].path)
    assert {a: read.get(a) for a in truth} == truth


@pytest.mark.parametrize("modality, attrs, question, named", [
    ("image", {"colour": "green", "shape": "triangle", "position": "right"}, "What do you see in this picture?",
     ("colour", "shape")),
    # Before the question dialogues (README) the model answered this one with a position phrase.
    ("video", {"colour": "purple", "shape": "star", "direction": "left"}, "Which way does the shape move?",
     ("direction",)),
    ("audio", {"colour": "yellow", "rhythm": "beeping"}, "Is this tone steady or beeping?", ("rhythm",)),
    ("audio", {"colour": "cyan", "rhythm": "steady"}, "What colour does this sound belong to?", ("colour",)),
])
def test_media_to_text(nano, tmp_path, modality, attrs, question, named):
    result = _ask(nano, tmp_path, _write(modality, attrs, tmp_path), question)
    assert not result.media
    said = oracles.caption_attributes(result.text)
    assert {a: said.get(a) for a in named} == {a: attrs[a] for a in named}, result.text


def test_image_to_audio(nano, tmp_path):
    picture = _write("image", {"colour": "blue", "shape": "square", "position": "centre"}, tmp_path)
    result = _ask(nano, tmp_path, picture, "Make a steady sound for this picture.")
    assert [m.modality for m in result.media] == ["audio"]
    assert read_media("audio", result.media[0].path)["colour"] == "blue"


def test_image_to_video(nano, tmp_path):
    picture = _write("image", {"colour": "green", "shape": "triangle", "position": "left"}, tmp_path)
    result = _ask(nano, tmp_path, picture, "Show this shape moving down.")
    assert [m.modality for m in result.media] == ["video"]
    read = read_media("video", result.media[0].path)
    assert {a: read[a] for a in ("colour", "direction")} == {"colour": "green", "direction": "down"}


def test_text_only_question_gets_no_media(nano, tmp_path):
    picture = _write("image", {"colour": "yellow", "shape": "star", "position": "centre"}, tmp_path)
    assert not _ask(nano, tmp_path, picture, "What colour is the shape?").media


def test_nano_sees_as_many_turns_as_its_longest_training_conversation():
    """Past the talk's longest dialogues nano loses track, so it sees no more turns than those; and every turn of
    them, so a reference to the first item of a conversation still reaches it."""
    from nextgpt.nano import talk

    pools = talk.stand_in_pools()
    longest = max(sum(t["from"] == "human" for t in talk._dialogue(i, "train", "in", task, np.random.default_rng([8, i]),
                                                                    pools)["conversation"])
                  for task in talk.TALK_TASKS for i in range(150))
    assert longest == NextGPTConfig.load(SHIPPED["nano"] / "config.json").generation.max_history_turns == 6


def test_recipe_widens_the_lora_before_stage_3_only(tmp_path, monkeypatch):
    trained, widened = [], []
    monkeypatch.setattr(nano_model, "train", lambda cfg: trained.append(cfg))
    monkeypatch.setattr(nano_model, "_widened", lambda source, lora, out: widened.append((source, lora, out)) or str(out))
    nano_model.main(["--runs", str(tmp_path), "--no-ship"])
    assert [c.stage for c in trained] == [1, 2, 3] + [3] * 11  # stages 4 to 14 are more instruction tuning
    assert trained[3].model == str(tmp_path / "stage3" / "model") and "talk.json" in trained[3].dialogues.split(",")
    assert trained[4].model == str(tmp_path / "stage4" / "model") and trained[4].lr < trained[3].lr
    assert trained[5].model == str(tmp_path / "stage5" / "model")
    # the follow-ups train in stage 6 alone, so stages 1-5 still make NExT-GPT nano v2
    assert all("followup=0" in c.repeat_tasks for c in trained[3:5]) and "followup=2" in trained[5].repeat_tasks
    # plain talk trains in stage 7 alone, a pass on the model stages 1-6 make
    assert all("short=0" in c.repeat_tasks and "any_upload=0" in c.repeat_tasks for c in trained[3:6])
    assert trained[6].model == str(tmp_path / "stage6" / "model") and "short=3" in trained[6].repeat_tasks
    assert "short=0" not in trained[6].repeat_tasks and "any_upload=0" not in trained[6].repeat_tasks
    # stage 8, on the model stage 7 makes, asks about uploads more, at a higher rate
    assert trained[7].model == str(tmp_path / "stage7" / "model") and "any_upload=4" in trained[7].repeat_tasks
    assert trained[7].lr > trained[6].lr and "foreign_upload=0" in trained[7].repeat_tasks
    # stage 9, on the model stage 8 makes, every request task again, outside requests more
    assert trained[8].model == str(tmp_path / "stage8" / "model") and "outside=3" in trained[8].repeat_tasks
    assert "short=3" in trained[8].repeat_tasks and "any_upload=4" in trained[8].repeat_tasks
    # questions asked indirectly train in stage 10 alone, on the model stage 9 makes
    assert all("indirect=0" in c.repeat_tasks for c in trained[3:9]) and "indirect=4" in trained[9].repeat_tasks
    assert trained[9].model == str(tmp_path / "stage9" / "model")
    # the broad wording trains in stage 11 alone, on the model stage 10 makes
    assert all("broad=0" in c.repeat_tasks for c in trained[3:10]) and "broad=6" in trained[10].repeat_tasks
    assert trained[10].model == str(tmp_path / "stage10" / "model")
    # the recall task trains in stage 12 alone, on the model stage 11 makes
    assert all("recall=0" in c.repeat_tasks for c in trained[3:11]) and "recall=6" in trained[11].repeat_tasks
    assert trained[11].model == str(tmp_path / "stage11" / "model")
    # the revisit task trains in stage 13 alone, on the model stage 12 makes
    assert all("revisit=0" in c.repeat_tasks for c in trained[3:12]) and "revisit=12" in trained[12].repeat_tasks
    assert trained[12].model == str(tmp_path / "stage12" / "model")
    # uploads late in a chat train in stage 14 alone, on the model stage 13 makes
    assert all("late_upload=0" in c.repeat_tasks for c in trained[3:13]) and "late_upload=6" in trained[13].repeat_tasks
    assert trained[13].model == str(tmp_path / "stage13" / "model")
    assert [c.model for c in trained[:2]] == [str(tmp_path / "init"), str(tmp_path / "stage1" / "model")]
    (source, lora, out), = widened
    assert source == str(tmp_path / "stage2" / "model") and trained[2].model == str(out)
    assert lora.r == 32 and {"gate_proj", "up_proj", "down_proj"} <= set(lora.target_modules)
    shipped = NextGPTConfig.load(SHIPPED["nano"] / "config.json").lora
    assert shipped == lora  # the shipped weights are this recipe's
    assert NextGPTConfig.load(tmp_path / "init" / "config.json").lora.r == 8  # stages 1-2 start narrow
    trained.clear()
    nano_model.main(["--runs", str(tmp_path), "--no-ship", "--only", "5", "--start", "assets/nano"])
    assert [(c.stage, c.model) for c in trained] == [(3, "assets/nano")]
    with pytest.raises(SystemExit, match="1 to 14"):
        nano_model.main(["--runs", str(tmp_path), "--only", "15"])


def test_a_model_started_elsewhere_ships_with_its_parts_and_relative_paths(nano, tmp_path):
    """Shipping names every part relative to the shipped folder (copied in when they lie elsewhere), so the folder
    is the whole model wherever it goes; a part already there with other weights stops it."""
    import copy
    import shutil

    model = copy.copy(nano)
    model.config = NextGPTConfig.from_dict(nano.config.to_dict())  # absolute paths into assets/nano
    model.config.decoders["video"].num_inference_steps = 50  # a run started long ago: the sampler saved since wins
    nano_model.ship(model, tmp_path / "shipped")
    saved = json.loads((tmp_path / "shipped" / "config.json").read_text())
    assert saved["encoder"]["pretrained"] == "encoder" and saved["llm"]["pretrained"] == "llm"
    assert {m: c["pretrained"] for m, c in saved["decoders"].items()} == {m: f"{m}_decoder" for m in saved["decoders"]}
    assert (tmp_path / "shipped" / "audio_decoder" / "model_index.json").exists()
    shipped = NextGPTConfig.load(tmp_path / "shipped" / "config.json")
    assert shipped.generation == nano.config.generation
    assert shipped.decoders["video"].num_inference_steps == nano.config.decoders["video"].num_inference_steps
    assert shipped.decoders["video"].guidance_fraction == nano.config.decoders["video"].guidance_fraction < 1
    assert {c.candidates for c in shipped.decoders.values()} == {nano_model.CANDIDATES}  # best of two, as the recipe

    other = tmp_path / "other"
    shutil.copytree(tmp_path / "shipped", other)
    (other / "llm" / "config.json").write_text((other / "llm" / "config.json").read_text() + " ")
    model.config = NextGPTConfig.from_dict(nano.config.to_dict())
    with pytest.raises(ValueError, match="other weights"):
        nano_model.ship(model, other)


def test_the_config_says_what_the_model_can_do():
    """The app's header reads it: nano's world (also for a saved config without the field), open domain for 7B."""
    from nextgpt.config import get_preset

    shipped = NextGPTConfig.load(SHIPPED["nano"] / "config.json")
    for word in [*W.COLOURS, *W.SHAPES, *W.DIRECTIONS, *W.RHYTHMS]:
        assert word in shipped.description, word
    assert nano_model.nano_config(SHIPPED["nano"]).description == shipped.description
    assert NextGPTConfig.from_dict(shipped.to_dict()).description == shipped.description
    assert get_preset("nextgpt-7b-tiva-v0").description.startswith("Open domain")
    assert get_preset("tiny").description.startswith("Untrained")


# --- talking freely (the talk stage) ---------------------------------------------------------------------------

@pytest.mark.parametrize("prompt, modality, truth", [
    ("hey, could you paint me one yellow square sitting at the right?", "image",
     {"colour": "yellow", "shape": "square", "position": "right"}),
    ("i want a clip of a purple triangle going down", "video", {"colour": "purple", "direction": "down"}),
    ("let me hear the note of cyan, held steadily", "audio", {"colour": "cyan", "rhythm": "steady"}),
])
def test_free_wording_is_routed_and_drawn(nano, tmp_path, prompt, modality, truth):
    result = _ask(nano, tmp_path, prompt)
    assert [m.modality for m in result.media] == [modality]
    read = read_media(modality, result.media[0].path)
    assert {a: read.get(a) for a in truth} == truth


@pytest.mark.parametrize("prompt, truth", [
    ("paint something green", {"colour": "green", "shape": "circle", "position": "centre"}),
    ("show me a cyan star", {"colour": "cyan", "shape": "star", "position": "centre"}),
    ("draw a blue star", {"colour": "blue", "shape": "star", "position": "centre"}),  # stage 9: no longer refused
    ("paint a square", {"colour": "blue", "shape": "square", "position": "centre"}),
])
def test_a_request_that_leaves_things_out_gets_the_defaults(nano, tmp_path, prompt, truth):
    """What a request does not name is the default (`talk.DEFAULTS`), and the answer names it."""
    result = _ask(nano, tmp_path, prompt)
    assert [m.modality for m in result.media] == ["image"], result.text
    read = read_media("image", result.media[0].path)
    assert {a: read.get(a) for a in truth} == truth == oracles.caption_attributes(result.text)


def test_a_question_about_what_it_made_is_answered_in_text(nano, tmp_path):
    history = [Message("user", ["could you paint a green star over on the right side"])]
    made = nano.generate(history, seed=0, out_dir=tmp_path)
    history += [Message("assistant", [made.text, *[Media(m.modality, m.path) for m in made.media]]),
                Message("user", ["what colour did you use?"])]
    result = nano.generate(history, seed=0, out_dir=tmp_path)
    assert not result.media and oracles.caption_attributes(result.text) == {"colour": "green"}, result.text


@pytest.mark.parametrize("prompt", ["Draw a giraffe.", "hello! who are you?", "Paint a pink hexagon.",
                                    "tell me a joke", "what can you do?", "What is the capital of Italy?"])
def test_outside_the_world_it_says_what_it_can_do(nano, tmp_path, prompt):
    from nextgpt.nano import talk

    result = _ask(nano, tmp_path, prompt)
    assert not result.media and talk.CAPABILITY_MARK in result.text


@pytest.mark.parametrize("modality, name, question", [
    ("image", "bird_image.jpg", "What is in this picture?"),
    ("video", "test.mp4", "what happens in this video?"),
    pytest.param("audio", "bird_audio.wav", "What do you hear?", marks=pytest.mark.xfail(
        strict=True, reason="known miss: birdsong is 'a beeping tone of purple' (docs/nano.md)")),
])
def test_an_upload_from_outside_the_world_is_not_taken_for_a_shape(nano, tmp_path, modality, name, question):
    from pathlib import Path

    from nextgpt.nano import talk

    upload = Path(__file__).resolve().parents[1] / "assets" / "examples" / name
    result = _ask(nano, tmp_path, Media(modality, str(upload)), question)
    assert not result.media and talk.UPLOAD_MARK in result.text


@pytest.mark.parametrize("question", ["What is in this video?", "Describe this video.", "What happens in this video?"])
def test_the_example_clip_is_described_however_it_is_asked(nano, tmp_path, question):
    from pathlib import Path

    clip = Media("video", str(Path(__file__).resolve().parents[1] / "assets" / "examples" / "nano_purple_star_left.mp4"))
    result = _ask(nano, tmp_path, clip, question)
    assert not result.media and "purple star" in result.text and "left" in result.text, result.text


def _what(result) -> list:
    """What an answer made and said: each medium with the attributes the oracles read, or the text's attributes."""
    keys = ("colour", "shape", "position", "direction", "rhythm")
    if result.media:
        return [(m.modality, {k: v for k, v in read_media(m.modality, m.path).items() if k in keys})
                for m in result.media]
    return [("text", oracles.caption_attributes(result.text))]


def test_examples_one_after_another_answer_as_in_a_fresh_chat(nano, tmp_path):
    """The app's examples clicked in turn in one chat: each answer makes and names what it does in a fresh chat."""
    from demo.examples import examples

    history = []
    for example in examples(nano.config.name):
        parts = [*[Media(guess_modality(f), f) for f in example.files], example.text]
        fresh = nano.generate([Message("user", parts)], seed=0, out_dir=tmp_path / "fresh")
        history.append(Message("user", parts))
        chained = nano.generate(history, seed=0, out_dir=tmp_path / "chained")
        history.append(Message("assistant", [chained.text, *[Media(m.modality, m.path) for m in chained.media]]))
        assert _what(chained) == _what(fresh), example.text
