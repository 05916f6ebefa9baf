"""The LLM stage: LlamaForCausalLM + tokenizer with NExT-GPT's added tokens + a peft LoRA adapter."""

from __future__ import annotations

import torch
from peft import LoraConfig, PeftModel, get_peft_model
from transformers import AddedToken, AutoTokenizer, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerBase

from .config import MODALITIES, NextGPTConfig, SignalTokenConfig
from .offline import llama_bpe_tokenizer


def add_signal_tokens(tokenizer: PreTrainedTokenizerBase, signal: SignalTokenConfig) -> dict[str, list[int]]:
    """Add <Img>, </Img> and the signal tokens in the released order and return their ids by role.

    They are registered as *special* tokens (the ids are unchanged if the tokenizer already has them, as the
    released one does): decoding can then skip them, and user text can be tokenised with special tokens split,
    so typing "[IMG0]" never produces a signal token.
    """
    tokens = signal.added_tokens()
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)
    ids = tokenizer.convert_tokens_to_ids(tokens)
    if ids != list(range(ids[0], ids[0] + len(ids))):
        raise ValueError(f"added tokens are not contiguous: {dict(zip(tokens, ids))}")
    if signal.first_id is not None and ids[0] != signal.first_id:
        raise ValueError(
            f"{signal.media_start} has id {ids[0]}, expected {signal.first_id}: this tokenizer does not match the "
            "checkpoint (the released model needs the Vicuna-7B v0 / LLaMA-1 vocabulary of 32000 tokens)"
        )
    out = {"media": ids[:2]}
    for m in MODALITIES:
        out[m] = tokenizer.convert_tokens_to_ids(signal.names(m))
    return out


def build_tiny_tokenizer(signal: SignalTokenConfig) -> PreTrainedTokenizerBase:
    """A small byte-level BPE tokenizer trained on a fixed text, for the random tiny model."""
    corpus = [
        "### Human: Can you show me a picture of a red circle?\n### Assistant: Sure, here it is.\n###",
        "### Human: What is in this image, video or sound?\n### Assistant: A blue square moving left.\n###",
        "The quick brown fox jumps over the lazy dog. 0123456789 , . ! ? ' \" ( ) [ ] < > / : ; - _ #",
    ] * 4
    return llama_bpe_tokenizer(corpus, vocab_size=400)


def load_tokenizer(config: NextGPTConfig, source: str | None) -> PreTrainedTokenizerBase:
    """The tokenizer from `source` (folder or hub id), or a tiny trained one when there is none."""
    if source is None:
        tokenizer = build_tiny_tokenizer(config.signal)
    else:
        # The released model used the slow LlamaTokenizer; transformers 5 converts tokenizer.model to the
        # equivalent fast tokenizer, which gives the same ids.
        tokenizer = AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token  # as released: pad = eos
    return tokenizer


def build_llm(
    config: NextGPTConfig,
    vocab_size: int,
    *,
    dtype: torch.dtype = torch.float32,
    device_map: str | dict | None = None,
    mean_resizing: bool = True,
) -> PeftModel:
    """Base Llama (pretrained, or random from `config.llm.llama`), resized to `vocab_size`, wrapped with LoRA.

    `mean_resizing=False` when trained weights will overwrite the new rows: sampling them from the old rows'
    mean and covariance is then wasted work (a 4096 x 4096 covariance for the 7B model)."""
    if config.llm.pretrained:
        base = LlamaForCausalLM.from_pretrained(config.llm.pretrained, dtype=dtype, device_map=device_map)
    else:
        kwargs = dict(config.llm.llama)
        kwargs["vocab_size"] = vocab_size
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            base = LlamaForCausalLM(LlamaConfig(**kwargs)).to(dtype)
    if base.get_input_embeddings().weight.shape[0] != vocab_size:
        base.resize_token_embeddings(vocab_size, mean_resizing=mean_resizing)
    lora = LoraConfig(
        r=config.lora.r,
        lora_alpha=config.lora.alpha,
        lora_dropout=config.lora.dropout,
        target_modules=list(config.lora.target_modules),
        task_type="CAUSAL_LM",
    )
    model = get_peft_model(base, lora)
    model.eval()
    return model
