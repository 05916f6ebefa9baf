"""A few steps of each of NExT-GPT's three stages on a tiny world, with the tiny model."""

import json
from pathlib import Path

import pytest
import torch

from nextgpt.config import LoRAConfig
from nextgpt.conversation import Message
from nextgpt.model import NextGPT
from nextgpt.nano import world
from nextgpt.train import data
from nextgpt.train.stages import StageConfig, train, trainable_parameters, widen_lora


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    world.generate(root, seed=0, n_images=20, n_videos=10, n_audios=10, n_dialogues=16)
    return root


def test_stage3_examples_put_context_media_in_slots_and_targets_in_runs(tiny_world):
    dialogues = data.read_dialogues(tiny_world)
    edit = next(d for d in dialogues if d["task"].startswith("edit"))
    examples = data.stage3_examples(edit, tiny_world)
    assert len(examples) == sum(t["from"] == "gpt" for t in edit["conversation"])
    last = examples[-1]
    runs = [p for p in last if isinstance(p, data.Run)]
    slots = [p for p in last if isinstance(p, data.Slot)]
    assert len(runs) == len(edit["conversation"][-1]["media"])  # only the target turn's media are runs
    assert slots  # the earlier turns' media are inputs
    turn_start = max(i for i, p in enumerate(last) if isinstance(p, data.Text) and p.text.endswith(data.ASSISTANT)) + 1
    assert not any(p.target for p in last[:turn_start] if isinstance(p, data.Text))
    assert all(p.target for p in last[turn_start:] if isinstance(p, data.Text))
    # Text tokenizes as at inference: no two text pieces of one kind side by side, the answer starts " <word>".
    assert not any(isinstance(a, data.Text) and isinstance(b, data.Text) and a.target == b.target
                   for a, b in zip(last, last[1:]))
    first = last[turn_start]
    assert not isinstance(first, data.Text) or (first.text.startswith(" ") and first.text[1:2].strip())


def test_three_stages_train_resume_and_save(tiny_world, tmp_path):
    base = NextGPT.from_pretrained("tiny")
    frozen_before = base.llm.base_model.model.model.layers[0].mlp.up_proj.weight.clone()
    common = dict(data=str(tiny_world), batch_size=2, log_every=1, warmup=1, lr=1e-2,
                  features=str(tmp_path / "features"))
    s1 = StageConfig(stage=1, model="tiny", out=str(tmp_path / "s1/model"), run=str(tmp_path / "s1"), steps=2, **common)
    train(s1)
    s1.steps = 4
    model1 = train(s1)  # resumes at step 2
    steps = [json.loads(l)["step"] for l in (tmp_path / "s1/log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert not torch.equal(model1.input_projector.weight, base.input_projector.weight)
    old_rows = base.llm.get_input_embeddings().weight[: min(base.media_ids)]
    assert torch.equal(model1.llm.get_input_embeddings().weight[: min(base.media_ids)], old_rows)

    s2 = StageConfig(stage=2, model=s1.out, out=str(tmp_path / "s2/model"), run=str(tmp_path / "s2"), steps=2, **common)
    model2 = train(s2)
    assert torch.equal(model2.input_projector.weight, model1.input_projector.weight)
    assert not torch.equal(model2.output_projectors["audio"].out_fc.weight, model1.output_projectors["audio"].out_fc.weight)
    logs = [json.loads(l) for l in (tmp_path / "s2/log.jsonl").read_text().splitlines()]
    assert all(l["l2"] > 0 for l in logs)

    s3 = StageConfig(stage=3, model=s2.out, out=str(tmp_path / "s3/model"), run=str(tmp_path / "s3"), steps=2, **common)
    model3 = train(s3)
    q = model3.llm.base_model.model.model.layers[0].self_attn.q_proj
    assert q.lora_B["default"].weight.abs().sum() > 0  # LoRA trained (it starts at zero)
    assert torch.equal(model3.llm.base_model.model.model.layers[0].mlp.up_proj.weight, frozen_before)
    assert len(list((tmp_path / "features").iterdir())) == 1  # one store served all three stages

    again = NextGPT.from_pretrained(s3.out)
    result = again.generate([Message("user", "Show me a red circle.")], seed=0, output="image",
                            out_dir=tmp_path / "out")
    assert result.media and result.media[0].modality == "image"


def test_lora_trains_in_stage_3_by_default_and_in_any_stage_when_asked():
    model = NextGPT.from_pretrained("tiny")
    lora = {id(p) for n, p in model.llm.named_parameters() if "lora_" in n}
    chosen = lambda stage, flag=None: {id(p) for p in trainable_parameters(model, stage, flag)}  # noqa: E731
    assert not lora & chosen(1) and not lora & chosen(2)
    assert lora <= chosen(3)
    assert lora <= chosen(1, True)  # the nano recipe: its 4-layer LLM cannot read a media token frozen
    assert not lora & chosen(3, False)


def test_widening_the_lora_keeps_what_the_model_computes_and_trains_the_new_ranks(tmp_path):
    model = NextGPT.from_pretrained("tiny")
    with torch.no_grad():  # a trained adapter, so that there is something to keep
        for n, p in model.llm.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.02)
    ids = torch.randint(0, 200, (2, 12))
    with torch.no_grad():
        before = model.llm(input_ids=ids).logits
    old = model.config.lora
    wide = LoRAConfig(r=old.r * 4, alpha=old.alpha * 4, dropout=old.dropout,
                      target_modules=[*old.target_modules, "gate_proj", "up_proj", "down_proj"])
    widen_lora(model, wide)
    with torch.no_grad():
        assert torch.allclose(model.llm(input_ids=ids).logits, before, atol=1e-5)
    names = [n for n, _ in model.llm.named_parameters() if "lora_A" in n]
    assert any("gate_proj" in n for n in names) and all(
        p.shape[0] == wide.r for n, p in model.llm.named_parameters() if "lora_A" in n)
    assert {id(p) for n, p in model.llm.named_parameters() if "lora_" in n} <= {
        id(p) for p in trainable_parameters(model, 3)}
    model.save_pretrained(tmp_path, components=False)  # and it loads back with its new LoRA
    assert NextGPT.from_pretrained(tmp_path).config.lora == wide
    with pytest.raises(ValueError, match="alpha / r"):
        widen_lora(model, LoRAConfig(r=wide.r * 2, alpha=wide.alpha, target_modules=wide.target_modules))


def test_stage3_blends_pair_examples_into_each_batch_when_asked(tiny_world):
    from nextgpt.train.stages import build_examples

    plain, none = build_examples(StageConfig(stage=3, data=str(tiny_world)))
    assert not none
    examples, blended = build_examples(StageConfig(stage=3, data=str(tiny_world), pair_mix=0.25))
    assert examples == plain  # the dialogues' examples and their order do not change
    captions = [p for ex in blended for p in ex if isinstance(p, data.Text) and p.target]
    assert any(isinstance(p, data.Slot) for ex in blended for p in ex) and captions  # stage 1: media -> caption
    assert any(isinstance(p, data.Run) for ex in blended for p in ex)  # stage 2: caption -> signal run
    assert len(blended) == 2 * len(data.read_pairs(tiny_world))


def test_stage3_repeats_or_leaves_out_the_dialogues_of_named_tasks(tiny_world):
    from nextgpt.train.stages import build_examples

    dialogues = data.read_dialogues(tiny_world)
    task = dialogues[0]["task"]
    turns = sum(len(data.stage3_examples(d, tiny_world)) for d in dialogues if d["task"] == task)
    plain, _ = build_examples(StageConfig(stage=3, data=str(tiny_world)))
    repeated, _ = build_examples(StageConfig(stage=3, data=str(tiny_world), repeat_tasks=f"{task}=3"))
    assert len(repeated) == len(plain) + 2 * turns
    left_out, _ = build_examples(StageConfig(stage=3, data=str(tiny_world), repeat_tasks=f"{task}=0"))
    assert len(left_out) == len(plain) - turns  # =0 leaves a task out


def test_evaluation_scores_the_reference_answers_as_right(tiny_world):
    """A stand-in model that replays the reference answers (and their media) must score 100%."""
    from nextgpt.eval import evaluate_model
    from nextgpt.events import ChatResult, MediaReady

    dialogues = {d["id"]: d for d in data.read_dialogues(tiny_world)}
    folders = {"image": "images", "video": "videos", "audio": "audios"}

    class Replay:
        def generate(self, history, **kw):
            asked = history[-1].text
            for d in dialogues.values():
                turns = d["conversation"]
                for i, t in enumerate(turns[:-1]):
                    if t["from"] == "human" and t["value"] == asked:
                        ref = turns[i + 1]
                        media = [MediaReady(m["modality"], str(tiny_world / folders[m["modality"]] / m["name"]))
                                 for m in ref.get("media", [])]
                        return ChatResult(text=ref["value"], media=media)
            raise AssertionError(asked)

    r = evaluate_model(Replay(), tiny_world, split="train", log=None)
    assert r["routing"] == 1.0
    assert all(row["all_correct"] == 1.0 for row in r["tasks"].values()), r["tasks"]
    assert all(v == 1.0 for v in r["attributes"].values())
    assert r["failures"] == []


def test_evaluation_lists_each_wrong_turn_with_what_was_expected_and_read(tiny_world):
    from nextgpt.eval import evaluate_model
    from nextgpt.events import ChatResult

    class Mute:  # answers every turn with a text that names nothing and makes nothing
        def __init__(self):
            self.seeds = set()

        def generate(self, history, **kw):
            self.seeds.add(kw["seed"])
            return ChatResult(text="Hello.")

    every = Mute()
    evaluate_model(every, tiny_world, split="train", log=None, seed=5)
    assert len(every.seeds) > 1 and every.seeds == set(range(5, 5 + len(every.seeds)))  # dialogue n at seed 5 + n
    r = evaluate_model(Mute(), tiny_world, split="train", log=None, tasks={"t2i", "t2v"})
    assert len(r["failures"]) == sum(row["turns"] for row in r["tasks"].values()) > 0
    f = r["failures"][0]
    assert f["answer"] == "Hello." and f["made"] == [] and f["task"] in ("t2i", "t2v") and f["asked"]
    assert f["expected"]["image colour" if f["task"] == "t2i" else "video colour"]
    assert set(f["got"].values()) == {None}


def test_one_command_for_all_nano_parts_runs_them_in_order(monkeypatch):
    from nextgpt.train import nano

    calls = []
    monkeypatch.setattr(nano.importlib, "import_module",
                        lambda name: type("M", (), {"main": staticmethod(lambda argv: calls.append((name, argv)))}))
    nano.main(["all"])
    assert [c[0] for c in calls] == [nano.PARTS[p][0] for p in nano.PARTS]
    calls.clear()
    nano.main(["video", "--", "--max-minutes", "1"])
    assert calls == [("nextgpt.train.nano_video", ["--max-minutes", "1"])]
    with pytest.raises(SystemExit):
        nano.main(["video", "llm", "--", "--max-minutes", "1"])


def test_feature_store_is_shared_however_a_decoder_folder_is_spelled(nano_model, monkeypatch):
    """A model saved by a stage names the decoders' folders absolutely; its cache is the one it started from."""
    from pathlib import Path
    from types import SimpleNamespace

    from nextgpt.train.stages import FeatureStore

    spelled = lambda how: SimpleNamespace(encoder=nano_model.encoder, config=SimpleNamespace(decoders={  # noqa: E731
        m: SimpleNamespace(pretrained=how(c.pretrained)) for m, c in nano_model.config.decoders.items()}))
    assert all(Path(c.pretrained).exists() for c in nano_model.config.decoders.values())
    absolute = FeatureStore.fingerprint(spelled(lambda p: str(Path(p).resolve())))
    monkeypatch.chdir(Path(nano_model.config.decoders["image"].pretrained).resolve().parents[1])
    relative = FeatureStore.fingerprint(spelled(lambda p: str(Path(p).resolve().relative_to(Path.cwd()))))
    assert absolute == relative
    hub = SimpleNamespace(encoder=nano_model.encoder, config=SimpleNamespace(decoders={
        "image": SimpleNamespace(pretrained="stable-diffusion-v1-5/stable-diffusion-v1-5")}))
    assert FeatureStore.fingerprint(hub) != absolute  # a hub name is kept as it is


def test_feature_store_is_shared_by_the_same_decoders_in_another_folder(nano_model, tmp_path):
    """The store is keyed by what makes the conditioning (each decoder's text encoder and tokenizer files), not by
    where the decoders lie: a copy elsewhere reuses it, and other text-encoder weights do not."""
    import shutil
    from types import SimpleNamespace

    from nextgpt.train.stages import FeatureStore

    copies = {}
    for m, c in nano_model.config.decoders.items():
        for part in ("text_encoder", "tokenizer"):
            shutil.copytree(Path(c.pretrained) / part, tmp_path / m / part)
        copies[m] = SimpleNamespace(pretrained=str(tmp_path / m))
    model = lambda decoders: SimpleNamespace(encoder=nano_model.encoder,  # noqa: E731
                                             config=SimpleNamespace(decoders=decoders))
    assert FeatureStore.fingerprint(model(copies)) == FeatureStore.fingerprint(nano_model)
    config = tmp_path / "audio" / "text_encoder" / "config.json"
    config.write_text(config.read_text() + " ")
    assert FeatureStore.fingerprint(model(copies)) != FeatureStore.fingerprint(nano_model)


def test_talk_evaluation_can_start_each_dialogue_after_unrelated_exchanges(tmp_path):
    from nextgpt.eval import evaluate_talk
    from nextgpt.events import ChatResult

    def dialogue(i):  # a text-only exchange outside the world, as nextgpt.nano.talk writes them
        return {"id": f"talk_{i}", "task": "outside" if i < 4 else "small_talk", "phrasing": "in", "conversation": [
            {"from": "human", "value": f"question {i}", "media": []},
            {"from": "gpt", "value": f"answer {i}", "media": [], "kind": "capability", "move": "outside"}]}

    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "talk.json").write_text(json.dumps([dialogue(i) for i in range(5)]))

    class Recorder:  # remembers what it was shown before each answer, and the seed it was given
        def __init__(self):
            self.seen, self.seeds = [], []

        def generate(self, history, **kw):
            self.seen.append([m.text for m in history])
            self.seeds.append(kw["seed"])
            return ChatResult(text="Hello.")

    plain, later = Recorder(), Recorder()
    evaluate_talk(plain, tmp_path, limit=3, log=None)
    r = evaluate_talk(later, tmp_path, limit=3, log=None, after=2)
    assert plain.seen == [["question 0"], ["question 1"], ["question 2"]]
    assert plain.seeds == [0, 1, 2]  # each dialogue its own seed, as each chat turn in the app draws its own
    for i, seen in enumerate(later.seen):
        others = {int(t.split()[1]) for t in seen[:4]}
        assert len(others) == 2 and i not in others and seen[:4:2] != seen[1:4:2]
        assert seen[4:] == [f"question {i}"]  # then the dialogue itself, scored alone
    assert r["rows"]["outside [in]"]["turns"] == 3
    only = Recorder()
    evaluate_talk(only, tmp_path, log=None, tasks=["small_talk"])
    assert only.seen == [["question 4"]]
