"""GPU figures for the released model's size, from random weights (nothing is downloaded).

    python -m bench.gpu                 # full size, fp16, on the GPU: writes bench/results/gpu-<device>.json
    python -m bench.gpu --size tiny     # the same measurements on the tiny model (what the tests run, on CPU)

It builds the architecture of `nextgpt-7b-tiva-v0` (ImageBind-huge, Vicuna-7B with LoRA and the 38 added tokens,
the projectors, SD 1.5, Zeroscope v2 576w, AudioLDM-l-full; the decoders' shapes written out below from their
published configs) and measures:
- peak GPU memory of one turn (encode an image, prefill, decode, all three decoders), everything resident, and
  again with the decoders offloaded to the CPU between calls (`--cpu-offload` of the app);
- the LLM's prefill time and decoding speed in tokens per second (greedy, a fixed number of new tokens);
- each decoder's seconds at the official settings (SD 1.5 512x512, Zeroscope 320x576 24 frames, AudioLDM 9 s;
  50 steps, guidance 7.5), after one short warm-up call.
Random weights take the time and memory of trained ones; what they generate is noise.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import re
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from nextgpt.config import MODALITIES, NextGPTConfig, get_preset

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def default_dtype(dtype: torch.dtype):
    """Build modules directly in `dtype` (a 7B model built in float32 first would need twice the memory)."""
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


# --- the released model's decoders, at full size, random -------------------------------------------------------


def full_pipeline(modality: str):
    """SD 1.5, Zeroscope v2 576w or AudioLDM-l-full: their published model shapes, random weights."""
    import diffusers as d
    from transformers import (ClapTextConfig, ClapTextModelWithProjection, CLIPTextConfig, CLIPTextModel,
                              SpeechT5HifiGan, SpeechT5HifiGanConfig)

    from nextgpt.offline import clap_tokenizer_offline, clip_tokenizer_offline

    sd_vae = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
                  down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                  layers_per_block=2, sample_size=512)
    clip = dict(vocab_size=49408, max_position_embeddings=77, bos_token_id=49406, eos_token_id=49407, pad_token_id=1)
    scheduler = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    if modality == "image":
        unet = d.UNet2DConditionModel(sample_size=64, cross_attention_dim=768, attention_head_dim=8)  # defaults = SD
        text = CLIPTextModel(CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                                            num_attention_heads=12, hidden_act="quick_gelu", **clip))
        return d.StableDiffusionPipeline(
            vae=d.AutoencoderKL(**sd_vae), text_encoder=text, tokenizer=clip_tokenizer_offline(), unet=unet,
            scheduler=d.PNDMScheduler(skip_prk_steps=True, steps_offset=1, **scheduler), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False)
    if modality == "video":
        unet = d.UNet3DConditionModel(sample_size=32, cross_attention_dim=1024, attention_head_dim=64)  # = ModelScope
        text = CLIPTextModel(CLIPTextConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                                            num_attention_heads=16, hidden_act="gelu", **clip))  # OpenCLIP-H
        return d.TextToVideoSDPipeline(vae=d.AutoencoderKL(**sd_vae), text_encoder=text,
                                       tokenizer=clip_tokenizer_offline(), unet=unet,
                                       scheduler=d.DDIMScheduler(clip_sample=False, **scheduler))
    # AudioLDM-L: model channels 256 x (1, 2, 3, 5), attention below the first level, the CLAP embedding (512)
    # as a concatenated class embedding; a 1-channel mel VAE with 8 latent channels; the HiFi-GAN of 64 mel bins.
    channels = (256, 512, 768, 1280)
    unet = d.UNet2DConditionModel(
        sample_size=128, in_channels=8, out_channels=8, block_out_channels=channels, layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=channels, attention_head_dim=(4, 8, 12, 20), class_embed_type="simple_projection",
        projection_class_embeddings_input_dim=512, class_embeddings_concat=True)
    vae = d.AutoencoderKL(in_channels=1, out_channels=1, latent_channels=8, block_out_channels=(128, 256, 512),
                          down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                          layers_per_block=2, sample_size=256)
    text = ClapTextModelWithProjection(ClapTextConfig(projection_dim=512, bos_token_id=0, eos_token_id=2,
                                                      pad_token_id=1))  # RoBERTa-base size
    vocoder = SpeechT5HifiGan(SpeechT5HifiGanConfig(model_in_dim=64, sampling_rate=16000, upsample_initial_channel=1024,
                                                    upsample_rates=[5, 4, 2, 2, 2],
                                                    upsample_kernel_sizes=[16, 16, 8, 4, 4], normalize_before=False))
    return d.AudioLDMPipeline(vae=vae, text_encoder=text, tokenizer=clap_tokenizer_offline(), unet=unet,
                              vocoder=vocoder,
                              scheduler=d.DDIMScheduler(beta_start=0.0015, beta_end=0.0195,
                                                        beta_schedule="scaled_linear", clip_sample=False))


def llama_tokenizer(base_vocab: int):
    """A stand-in for the LLaMA tokenizer with its vocabulary size (words w3 ... w31999), so `<Img>` gets id 32000."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2, **{f"w{i}": i for i in range(3, base_vocab)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                   pad_token="</s>")


# --- building ---------------------------------------------------------------------------------------------------


def build(size: str, device: str, dtype: torch.dtype, cpu_offload: bool):
    """The model of `size` ("full": the 7B preset's architecture; "tiny"), random, every part on `device`."""
    from nextgpt.decoders import Decoders
    from nextgpt.encoder import Encoder
    from nextgpt.llm import add_signal_tokens, build_llm, load_tokenizer
    from nextgpt.model import NextGPT
    from nextgpt.projectors import OutputProjector, input_projector

    config: NextGPTConfig = get_preset("nextgpt-7b-tiva-v0" if size == "full" else "tiny")
    config.checkpoint = None
    if size == "full":
        tokenizer = llama_tokenizer(config.llm.llama["vocab_size"])
    else:
        tokenizer = load_tokenizer(config, None)
    add_signal_tokens(tokenizer, config.signal)
    config.llm.vocab_size = len(tokenizer)
    with torch.device(device), default_dtype(dtype):
        llm = build_llm(config, len(tokenizer), dtype=dtype)
        proj_in = input_projector(config.encoder.embed_dim, config.llm.hidden_size)
        proj_out = nn.ModuleDict({m: OutputProjector(config.llm.hidden_size, c)
                                  for m, c in config.output_projectors.items()})
        pipelines = {m: full_pipeline(m) for m in MODALITIES} if size == "full" else None
    encoder = Encoder.from_config(config.encoder, device=device, dtype=dtype)
    cond_dims = {m: c.out_dim for m, c in config.output_projectors.items()}
    on_gpu = torch.device(device).type == "cuda"
    if pipelines is not None:
        for pipe in pipelines.values():
            if cpu_offload and on_gpu:
                pipe.to("cpu")
                pipe.enable_model_cpu_offload(device=device)
            else:
                pipe.to(device)
    decoders = Decoders(config.decoders, cond_dims=cond_dims, device=device, dtype=dtype,
                        cpu_offload=cpu_offload, pipelines=pipelines)
    model = NextGPT(config, tokenizer, llm.to(device), proj_in.to(device, dtype), proj_out.to(device, dtype),
                    encoder, decoders)
    for m in MODALITIES:
        decoders.get(m)  # tiny pipelines are built on first use: build them now, outside the timings
    return model


def parameters(model) -> dict[str, float]:
    """Millions of parameters of each part."""
    count = lambda module: round(sum(p.numel() for p in module.parameters()) / 1e6, 1)  # noqa: E731
    out = {"encoder": count(model.encoder.model), "llm (with LoRA)": count(model.llm),
           "projectors": count(model.input_projector) + count(model.output_projectors)}
    for m in MODALITIES:
        pipe = model.decoders.get(m)
        out[f"{m} decoder"] = round(sum(count(c) for c in pipe.components.values() if isinstance(c, nn.Module)), 1)
    return out


# --- measuring --------------------------------------------------------------------------------------------------


def sync(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def seconds(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


@torch.inference_mode()
def measure_llm(model, device: str, prompt_tokens: int, new_tokens: int) -> dict:
    """Prefill of a prompt of `prompt_tokens` embeddings; greedy decoding of exactly `new_tokens` tokens."""
    ids = torch.randint(3, model.media_ids[0], (1, prompt_tokens), device=model.device)
    embeds = model.llm.get_input_embeddings()(ids)
    mask = torch.ones(ids.shape, dtype=torch.long, device=ids.device)

    def generate(n):
        model.llm.generate(inputs_embeds=embeds, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                           do_sample=False, pad_token_id=model.tokenizer.pad_token_id)

    generate(2)  # warm-up
    prefill = seconds(lambda: model.llm(inputs_embeds=embeds, attention_mask=mask), device)
    total = seconds(lambda: generate(new_tokens), device)
    return {"prompt tokens": prompt_tokens, "prefill (s)": round(prefill, 4), "new tokens": new_tokens,
            "generate (s)": round(total, 3), "decode tokens/s": round((new_tokens - 1) / max(total - prefill, 1e-9), 1)}


def measure_turn(model, device: str, steps: int | None) -> dict:
    """An image encoded, then each decoder once (at its configured settings, or `steps`): seconds of each."""
    from PIL import Image

    from nextgpt.media import Media

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        picture = Path(tmp) / "in.png"
        Image.new("RGB", (640, 480), (120, 60, 200)).save(picture)
        model.encoder.clear_cache()
        image = [Media("image", str(picture))]
        out["encode an image (s)"] = round(seconds(lambda: model.encode_media(image), device), 3)
    for m in MODALITIES:
        proj = model.config.output_projectors[m]
        shape = (1, proj.out_dim) if m == "audio" else (1, proj.num_queries, proj.out_dim)
        cond = torch.randn(shape, generator=torch.Generator().manual_seed(0))
        model.decoders.decode(m, cond, seed=0, num_inference_steps=2)  # warm-up
        out[f"{m} decoder (s)"] = round(seconds(lambda: model.decoders.decode(m, cond, seed=0,
                                                                                num_inference_steps=steps), device), 2)
    return out


def peak_gb(device: str) -> float | None:
    return round(torch.cuda.max_memory_allocated() / 2**30, 2) if torch.device(device).type == "cuda" else None


def reset_peak(device: str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def device_slug(device: str) -> str:
    name = torch.cuda.get_device_name() if torch.device(device).type == "cuda" else "cpu"
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def run(size: str, device: str, prompt_tokens: int, new_tokens: int) -> dict:
    on_gpu = torch.device(device).type == "cuda"
    dtype = torch.float16 if on_gpu else torch.float32
    result: dict = {"size": size, "device": torch.cuda.get_device_name() if on_gpu else "cpu", "dtype": str(dtype),
                    "torch": torch.__version__}
    model = build(size, device, dtype, cpu_offload=False)
    cfg = model.config.decoders
    result["decoder settings"] = {m: {"steps": c.num_inference_steps, "guidance": c.guidance_scale,
                                      **({"seconds": c.audio_length_s} if m == "audio" else
                                         {"height": c.height, "width": c.width}),
                                      **({"frames": c.num_frames} if m == "video" else {})} for m, c in cfg.items()}
    result["parameters (M)"] = parameters(model)
    reset_peak(device)
    result["llm"] = measure_llm(model, device, prompt_tokens, new_tokens)
    result.update(measure_turn(model, device, None))
    result["peak GPU memory, all resident (GiB)"] = peak_gb(device)
    del model
    gc.collect()
    if on_gpu:  # the same turn with the decoders offloaded (a short one: the peak does not depend on the steps)
        model = build(size, device, dtype, cpu_offload=True)
        reset_peak(device)
        measure_llm(model, device, prompt_tokens, 8)
        offloaded = measure_turn(model, device, 2)
        result["peak GPU memory, decoders offloaded to CPU (GiB)"] = peak_gb(device)
        result["decoders offloaded, 2 steps (s)"] = {k: v for k, v in offloaded.items() if "decoder" in k}
    else:
        result["peak GPU memory, decoders offloaded to CPU (GiB)"] = None
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", choices=("full", "tiny"), default="full")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--prompt-tokens", type=int, default=512)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--out", help="the JSON file (default: bench/results/gpu-<device>.json)")
    a = p.parse_args(argv)
    result = run(a.size, a.device, a.prompt_tokens, a.new_tokens)
    out = Path(a.out) if a.out else ROOT / "bench" / "results" / f"gpu-{device_slug(a.device)}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
