"""A folder shaped like a Vicuna-7B v0 checkpoint, at toy size, made offline.

FastChat's Vicuna v0 ships the LLaMA SentencePiece `tokenizer.model` (no `tokenizer.json`), the slow tokenizer's
`tokenizer_config.json` and `special_tokens_map.json`, a Llama `config.json` and the weights. Here the SentencePiece
model is trained on a few sentences with LLaMA's trainer settings (BPE, byte fallback, a dummy-prefix space, no
whitespace folding, <unk> <s> </s> = 0 1 2), and the Llama is random and tiny.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from nextgpt.config import NextGPTConfig, OutputProjectorConfig, nextgpt_7b_tiva_v0, tiny

CORPUS = [
    "### Human: Can you show me a picture of a red circle?\n### Assistant: Sure, here it is.\n###",
    "### Human: What is in this image, video or sound?\n### Assistant: A blue square moving left.\n###",
    "### Human: generate a caption\n### Assistant: a bird sings in the garden\n###",
    "Please make a short video of the sea and a sound of rain. Thanks, what about that one?",
    "The quick brown fox jumps over the lazy dog. 0123456789 , . ! ? ' \" ( ) [ ] < > / : ; - _ #",
]
BASE_VOCAB = 600


def train_sentencepiece(vocab_size: int = BASE_VOCAB) -> bytes:
    """A SentencePiece model trained as LLaMA's was, on `CORPUS`: the bytes of its `tokenizer.model`."""
    import sentencepiece as spm

    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 20), model_writer=out, vocab_size=vocab_size, model_type="bpe",
        byte_fallback=True, split_digits=True, add_dummy_prefix=True, remove_extra_whitespaces=False,
        normalization_rule_name="identity", allow_whitespace_only_pieces=True, character_coverage=1.0,
        unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
    )
    return out.getvalue()


def write_vicuna_folder(folder: str | Path, *, added_tokens: list[str] = ()) -> Path:
    """Write the folder; `added_tokens` also writes the `added_tokens.json` of a tokenizer with tokens added
    after the base vocabulary (as the released NExT-GPT tokenizer folder has)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.model").write_bytes(train_sentencepiece())
    special = {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"}
    (folder / "special_tokens_map.json").write_text(json.dumps(special))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        **special, "tokenizer_class": "LlamaTokenizer", "model_max_length": 2048, "add_bos_token": True,
        "add_eos_token": False, "clean_up_tokenization_spaces": False, "sp_model_kwargs": {},
    }))
    if added_tokens:
        (folder / "added_tokens.json").write_text(json.dumps({t: BASE_VOCAB + i for i, t in enumerate(added_tokens)}))
    config = LlamaConfig(**reduced_7b().llm.llama)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def reduced_7b(hidden: int = 64) -> NextGPTConfig:
    """The 7B preset with every dimension shrunk (the tiny encoder, projectors and random decoders): the same
    fields, the same tokenizer layout (`<Img>` = the base vocabulary size), the same LoRA targets."""
    config, small = nextgpt_7b_tiva_v0(), tiny()
    config.encoder.model_kwargs = small.encoder.model_kwargs
    config.llm.hidden_size = hidden
    config.llm.llama.update(vocab_size=BASE_VOCAB, hidden_size=hidden, intermediate_size=2 * hidden,
                            num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=4)
    config.llm.vocab_size = BASE_VOCAB + len(config.signal.added_tokens())
    config.signal.first_id = BASE_VOCAB
    proj = dict(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64)
    config.output_projectors = {m: OutputProjectorConfig(out_dim=32, num_queries=c.num_queries, **proj)
                                for m, c in config.output_projectors.items()}
    config.decoders = small.decoders
    return config
