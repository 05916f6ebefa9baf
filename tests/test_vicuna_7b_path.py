"""The 7B preset's own loading path over a Vicuna-v0-shaped folder, at reduced size (no download).

`NextGPT.from_pretrained("nextgpt-7b-tiva-v0", llm=..., encoder=..., checkpoint=...)` runs as for the release; only
the preset's dimensions are shrunk (`reduced_7b`), and the official checkpoint is random in the official layout.
"""

import pytest
import torch
from PIL import Image

from nextgpt import model as model_module
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
        mp.setattr(model_module, "get_preset", lambda name: reduced_7b())
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
    assert tok.convert_ids_to_tokens(tok("### Human:", add_special_tokens=False).input_ids) == ["▁###", "▁Human", ":"]


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
    assert torch.equal(model.output_projectors["video"].query_embs, trained["gen_text_hidden_fcs_video.0.query_embs"].float())
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
