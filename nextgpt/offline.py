"""Small components built offline, with no download: the real CLIP tokenizer from ImageBind's vocabulary file,
byte-level BPE tokenizers trained on a given text, and random-weight pipelines of the real decoder architectures
(the tiny preset and the tests use them; the nano training scripts build their tokenizers here too)."""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import torch

from .config import MODALITIES, DecoderConfig

LLAMA_SPECIALS = ["<unk>", "<s>", "</s>"]
ROBERTA_SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4: bos, pad, eos as in ClapTextConfig


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def clip_tokenizer_offline():
    """The real 49408-token CLIP BPE tokenizer, rebuilt from the vocabulary file ImageBind ships (no hub access)."""
    from transformers import CLIPTokenizer

    # find_spec locates the package without running imagebind/__init__.py (which imports pkg_resources, torchaudio...).
    spec = importlib.util.find_spec("imagebind")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the CLIP vocabulary comes from ImageBind's bpe file; install imagebind-unofficial")
    bpe = Path(list(spec.submodule_search_locations)[0]) / "bpe" / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.decompress(bpe.read_bytes()).decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in lines[1 : 49152 - 256 - 2 + 1]]  # the same slice as CLIP's SimpleTokenizer
    chars = list(_bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + ["<|startoftext|>", "<|endoftext|>"]
    # transformers 5: pass vocab/merges objects; vocab_file/merges_file would be silently ignored.
    return CLIPTokenizer(vocab={t: i for i, t in enumerate(tokens)}, merges=merges, model_max_length=77)


def train_bpe(texts: list[str], vocab_size: int, specials: list[str], unk_token: str | None = None):
    """A byte-level BPE `tokenizers.Tokenizer` trained on `texts` (every byte encodable, so no unknown in practice)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token=unk_token))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(texts, trainer)
    return tok


def llama_bpe_tokenizer(texts: list[str], vocab_size: int):
    """A Llama-style fast tokenizer (<unk>, <s>, </s>; pad = eos, as released). NExT-GPT adds <s> itself, so no
    post-processor adds specials."""
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=train_bpe(texts, vocab_size, LLAMA_SPECIALS, "<unk>"),
                                   bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="</s>")


def roberta_bpe_tokenizer(texts: list[str], vocab_size: int):
    """A tokenizer with RoBERTa's special tokens and post-processing, as CLAP's text tower uses, max length 77."""
    from tokenizers import processors
    from transformers import RobertaTokenizerFast

    tok = train_bpe(texts, vocab_size, ROBERTA_SPECIALS)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return RobertaTokenizerFast(tokenizer_object=tok, model_max_length=77)


def clap_tokenizer_offline():
    """A small stand-in for CLAP's RoBERTa tokenizer, trained on a few sound captions."""
    texts = ["a dog barks in the distance", "rain falls on a tin roof", "birds sing at dawn", "a car engine starts"]
    return roberta_bpe_tokenizer(texts, 300)


def _frozen(pipe):
    # Modules built directly start in training mode; CLAP's text dropout would then make outputs random.
    # from_pretrained returns eval-mode modules, so this also makes save/load round trips match.
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.eval().requires_grad_(False)
    return pipe


def build_tiny_pipeline(modality: str, cfg: DecoderConfig, cond_dim: int, seed: int = 0):
    """A random-weight pipeline of the real architecture whose conditioning width is `cond_dim`.

    `cfg` is accepted for symmetry with loading; the tiny components work at any size the config asks for
    (image/video sides divisible by 2, audio lengths in 10 ms frames).
    """
    import diffusers as d
    from transformers import (ClapTextConfig, ClapTextModelWithProjection, CLIPTextConfig, CLIPTextModel,
                              SpeechT5HifiGan, SpeechT5HifiGanConfig)

    if modality not in MODALITIES:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    blocks = dict(block_out_channels=(32, 64), layers_per_block=1, norm_num_groups=32)
    vae_blocks = dict(down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    with torch.random.fork_rng(devices=[]):  # same seed -> same weights, without disturbing the caller's RNG
        torch.manual_seed(seed)
        if modality in ("image", "video"):
            vae = d.AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, sample_size=32, **vae_blocks, **blocks)
            text_encoder = CLIPTextModel(CLIPTextConfig(
                vocab_size=49408, hidden_size=cond_dim, intermediate_size=37, num_attention_heads=4,
                num_hidden_layers=2, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407,
                pad_token_id=49407))
            scheduler_kw = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
            if modality == "image":
                unet = d.UNet2DConditionModel(
                    sample_size=16, in_channels=4, out_channels=4, cross_attention_dim=cond_dim, attention_head_dim=8,
                    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), **blocks)
                scheduler = d.DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **scheduler_kw)
                return _frozen(d.StableDiffusionPipeline(
                    vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer_offline(), unet=unet,
                    scheduler=scheduler, safety_checker=None, feature_extractor=None, image_encoder=None,
                    requires_safety_checker=False))
            # Cross-attention only at the low-resolution level: attention over full-size latents dominates CPU time.
            unet = d.UNet3DConditionModel(
                sample_size=16, in_channels=4, out_channels=4, cross_attention_dim=cond_dim, attention_head_dim=8,
                down_block_types=("DownBlock3D", "CrossAttnDownBlock3D"),
                up_block_types=("CrossAttnUpBlock3D", "UpBlock3D"), **blocks)
            return _frozen(d.TextToVideoSDPipeline(
                vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer_offline(), unet=unet,
                scheduler=d.DPMSolverMultistepScheduler(**scheduler_kw)))
        # Audio: the CLAP embedding conditions the UNet as a class embedding; the VAE works on a 1-channel mel image.
        unet = d.UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, cross_attention_dim=(32, 64),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"), up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            class_embed_type="simple_projection", projection_class_embeddings_input_dim=cond_dim,
            class_embeddings_concat=True, **blocks)
        vae = d.AutoencoderKL(in_channels=1, out_channels=1, latent_channels=4, **vae_blocks, **blocks)
        text_encoder = ClapTextModelWithProjection(ClapTextConfig(
            vocab_size=1000, hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
            projection_dim=cond_dim, bos_token_id=0, eos_token_id=2, pad_token_id=1))
        # 16 mel bins, 160 samples per frame at 16 kHz = 10 ms frames, as in the real AudioLDM. The larger init
        # range gives an audible waveform (peak ~0.6) instead of ~1e-8 from the default 0.01.
        vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(
            initializer_range=0.2,
            model_in_dim=16, sampling_rate=16000, upsample_initial_channel=16, upsample_rates=[4, 4, 2, 5],
            upsample_kernel_sizes=[8, 8, 4, 10], resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
            normalize_before=False))
        scheduler = d.DDIMScheduler(beta_start=0.0015, beta_end=0.0195, beta_schedule="scaled_linear",
                                    clip_sample=False, set_alpha_to_one=False, steps_offset=1)
        return _frozen(d.AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clap_tokenizer_offline(),
                                          unet=unet, vocoder=vocoder, scheduler=scheduler))
