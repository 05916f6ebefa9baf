"""The 7B preset's own loading path over a Vicuna-v0-shaped folder, at reduced size (no download).

`NextGPT.from_pretrained("nextgpt-7b-tiva-v0", llm=..., encoder=..., checkpoint=...)` runs as for the release; only
the preset's dimensions are shrunk (`reduced_7b`), and the official checkpoint is random in the official layout.
"""

import pytest
import torch
from PIL import Image

from nextgpt import config as config_module
from nextgpt.conversation import Message
from nextgpt.encoder import Encoder
from nextgpt.media import Media
from nextgpt.model import NextGPT
from official_layout import tiny_official_layout, write_official_checkpoint
from vicuna_folder import BASE_VOCAB, reduced_7b, write_vicuna_folder


@pytest.fixture(scope="module")
def vicuna(tmp_path_factory):
    return write_vicuna_folder(tmp_path_factory.mktemp("vicuna-7b-v0"))


@pytest.fixture(scope="module")
def release(vicuna, tmp_path_factory):
    """The reduced 7B model loaded as the release is: base Llama and tokenizer from the Vicuna folder, the encoder
    from its weights, the trained parts from an official-layout `pytorch_model.pt`."""
    tmp = tmp_path_factory.mktemp("release")
    config = reduced_7b()
    encoder = Encoder.from_config(config.encoder).save_pretrained(tmp / "imagebind").parent
    trained = write_official_checkpoint(tmp / "pytorch_model.pt", tiny_official_layout(config))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(config_module, "get_preset", lambda name: reduced_7b())
        model = NextGPT.from_pretrained("nextgpt-7b-tiva-v0", llm=str(vicuna), encoder=str(encoder),
                                        tokenizer=str(vicuna), checkpoint=str(tmp / "pytorch_model.pt"),
                                        device="cpu", dtype=torch.float32)
    return model, trained


def test_the_sentencepiece_tokenizer_loads_and_takes_the_added_tokens_after_its_vocabulary(release):
    model, _ = release
    tok = model.tokenizer
    assert len(tok) == BASE_VOCAB + 38 == model.config.llm.vocab_size
    assert model.media_ids == [BASE_VOCAB, BASE_VOCAB + 1]  # <Img> = the base vocabulary size, as 32000 in 7B
    assert model.signal_ids["image"] == list(range(BASE_VOCAB + 2, BASE_VOCAB + 6))
    assert model.signal_ids["audio"][-1] == BASE_VOCAB + 37
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 2)  # pad = eos, as released
    pieces = tok.convert_ids_to_tokens(tok("### Human:", add_special_tokens=False).input_ids)
    assert pieces == ["▁###", "▁Human", ":"]


def test_a_tokenizer_folder_with_added_tokens_gives_the_same_ids(release, tmp_path):
    model, _ = release
    folder = write_vicuna_folder(tmp_path, added_tokens=model.config.signal.added_tokens())
    from nextgpt.llm import add_signal_tokens, load_tokenizer

    tok = load_tokenizer(model.config, str(folder))
    ids = add_signal_tokens(tok, model.config.signal)
    assert ids["media"] == model.media_ids and len(tok) == len(model.tokenizer)


def test_lora_and_the_trained_parts_come_from_the_official_checkpoint(release):
    model, trained = release
    q = model.llm.base_model.model.model.layers[1].self_attn.q_proj
    assert q.lora_A["default"].weight.shape == (32, 64) and q.scaling["default"] == 1.0  # r = alpha = 32
    expected = trained["llama_model.base_model.model.model.layers.1.self_attn.q_proj.lora_B.default.weight"]
    assert torch.equal(q.lora_B["default"].weight, expected.float())
    queries = trained["gen_text_hidden_fcs_video.0.query_embs"].float()
    assert torch.equal(model.output_projectors["video"].query_embs, queries)
    assert torch.equal(model.input_projector.weight, trained["llama_proj.weight"].float())
    assert torch.equal(model.llm.get_input_embeddings().weight,
                       trained["llama_model.base_model.model.model.embed_tokens.weight"].float())


def test_one_any_to_any_turn(release, tmp_path):
    model, _ = release
    picture = tmp_path / "in.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(picture)
    messages = [Message("user", [Media("image", str(picture)), "Please make a short video of the sea."])]
    result = model.generate(messages, seed=0, output="video", max_new_tokens=40, out_dir=tmp_path / "out")
    assert [m.modality for m in result.media] == ["video"] and not result.errors
    assert result.signal_tokens == [f"[VID{i}]" for i in range(24)]


# --- the official token ids ----------------------------------------------------------------------------------------


def slow_llama_tokenizer(vicuna, added: dict[str, int]):
    """What transformers 4.29's slow LlamaTokenizer gave with `add_special_tokens=False`, the tokenizer the official
    training used: the text split at added tokens, the spaces beside one stripped, each piece encoded by
    SentencePiece with its dummy-prefix space. (4.29 stripped newlines there too; no official prompt has one
    beside `<Img>`, and ours keep the newline of `\\n### Assistant:`.)"""
    import re

    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=str(vicuna / "tokenizer.model"))
    split = re.compile("(" + "|".join(map(re.escape, added)) + ")")

    def tokenize(text: str) -> list[int]:
        pieces = [p for p in split.split(text) if p]
        ids = []
        for k, p in enumerate(pieces):
            if p in added:
                ids.append(added[p])
                continue
            if k > 0 and pieces[k - 1] in added:
                p = p.lstrip(" ")
            if k + 1 < len(pieces) and pieces[k + 1] in added:
                p = p.rstrip(" ")
            ids += sp.encode(p) if p else []
        return ids

    return tokenize


def official_cases(picture):
    """Each case: the messages, and the strings the official training tokenized one call each for them (media as
    `<Img><feat></Img>`; the calls of `### Human: ` and of each turn are separate, as in its data code)."""
    img = Media("image", str(picture))
    media = "<Img><feat></Img>"
    return {
        "media first": ([Message("user", [img, "What is in this image?"])],
                        [f"### Human: {media} What is in this image?\n### Assistant:"]),
        "text only": ([Message("user", "Can you show me a picture of a red circle?")],
                      ["### Human: ", "Can you show me a picture of a red circle?\n### Assistant:"]),
        "media after text": ([Message("user", ["What is in this image?", img])],
                             ["### Human: ", f"What is in this image? {media}\n### Assistant:"]),
        "several media": ([Message("user", [img, img, "What about that one?"])],
                          [f"### Human: {media} {media} What about that one?\n### Assistant:"]),
        "multi-turn history": (
            [Message("user", [img, "What is in this image?"]), Message("assistant", "A blue square moving left."),
             Message("user", "Please make a sound of rain.")],
            [f"### Human: {media} What is in this image?\n### Assistant:", "A blue square moving left.\n###",
             "Human: Please make a sound of rain.\n### Assistant:"]),
    }


@pytest.fixture(scope="module")
def picture(tmp_path_factory):
    path = tmp_path_factory.mktemp("media") / "red.png"
    Image.new("RGB", (32, 32), (200, 30, 30)).save(path)
    return path


CASES = ["media first", "text only", "media after text", "several media", "multi-turn history"]


@pytest.mark.parametrize("case", CASES)
def test_official_tokenization_gives_the_ids_the_official_training_gave(release, vicuna, picture, case):
    from nextgpt.conversation import MEDIA_SLOT

    model, _ = release
    assert model.config.llm.tokenization == "official"  # the 7B preset's default
    added = {"<Img>": model.media_ids[0], "</Img>": model.media_ids[1], "<feat>": MEDIA_SLOT}
    slow = slow_llama_tokenizer(vicuna, added)
    messages, calls = official_cases(picture)[case]
    official = [model.tokenizer.bos_token_id] + [i for text in calls for i in slow(text)]
    assert model.prompt_ids(messages) == official


def test_joined_tokenization_differs_from_training_by_one_space_token(release, picture, monkeypatch):
    """The joined prompts tokenize `### Human: ` whole: a `▁` before a media-first turn's `<Img>`, none before
    the text of a text-only turn, where the official calls had one."""
    model, _ = release
    pieces = lambda messages: model.tokenizer.convert_ids_to_tokens(  # noqa: E731
        [i for i in model.prompt_ids(messages) if i >= 0])
    cases = official_cases(picture)
    official = {case: pieces(cases[case][0]) for case in ("media first", "text only")}
    monkeypatch.setattr(model.config.llm, "tokenization", "joined")
    joined = {case: pieces(cases[case][0]) for case in ("media first", "text only")}
    assert official["media first"][:5] == ["<s>", "▁###", "▁Human", ":", "<Img>"]
    assert joined["media first"][:6] == ["<s>", "▁###", "▁Human", ":", "▁", "<Img>"]
    assert official["text only"][:6] == ["<s>", "▁###", "▁Human", ":", "▁", "▁Can"]
    assert joined["text only"][:5] == ["<s>", "▁###", "▁Human", ":", "▁Can"]
    assert joined["media first"][6:] == official["media first"][5:]
    assert joined["text only"][4:] == official["text only"][5:]


def test_official_training_examples_have_the_ids_of_the_prompt_at_inference(release, tmp_path):
    """A stage-3 example's context, as the official recipe encodes it, is token for token the prompt `chat` builds
    for the same conversation: the 7B model trains on the ids it will see."""
    from nextgpt.conversation import MEDIA_SLOT
    from nextgpt.train import data
    from nextgpt.train.stages import StageModule

    model, _ = release
    (tmp_path / "images").mkdir()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(tmp_path / "images" / "a.png")
    dialogue = {"image_list": [{"image_name": "a.png", "caption": "a red circle"}], "conversation": [
        {"from": "human", "value": "What is in this image?",
         "media": [{"modality": "image", "name": "a.png", "at": 0}]},
        {"from": "gpt", "value": "A blue square moving left."},
        {"from": "human", "value": "Please make a sound of rain."},
        {"from": "gpt", "value": "Sure, here it is."},
    ]}
    example = data.stage3_examples(dialogue, tmp_path, "official")[-1]
    ids, labels, slots, _ = StageModule(model, store=None, l2_weight=1.0)._encode(example)
    context = ids[: next(i for i, label in enumerate(labels) if label != -100)]
    for pos, _ in slots:
        context[pos] = MEDIA_SLOT
    picture = Media("image", str(tmp_path / "images" / "a.png"))
    messages = [Message("user", [picture, "What is in this image?"]),
                Message("assistant", "A blue square moving left."), Message("user", "Please make a sound of rain.")]
    assert context == model.prompt_ids(messages)
