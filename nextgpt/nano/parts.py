"""The shipped nano parts, loaded and scored on the world's held-out captions by the model-free oracles.

Used by `python -m nextgpt.eval parts` and by the training recipes (validation while training, the score at
export), so evaluation needs no training code. Every decoder score has the same keys: `n`, one accuracy per
attribute the oracles read (named as in the world), `all` (every attribute right), the inference settings and
`seconds_per_item`.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..config import MODALITIES, EncoderConfig
from ..decoders import guidance_on_first
from ..encoder import Encoder, embed_raw, import_imagebind, text_tokenizer, tokenize
from ..media import Media
from . import oracles
from . import world as W

# Inference settings of a decoder whose folder saved none (guidance and steps; audio also its length).
DEFAULT_INFERENCE = {
    "image": {"guidance_scale": 5.0, "num_inference_steps": 20},
    "video": {"guidance_scale": 5.0, "num_inference_steps": 20},
    "audio": {"guidance_scale": 7.0, "num_inference_steps": 20, "audio_length_in_s": 1.28},
}
PIPELINES = {"image": "StableDiffusionPipeline", "video": "TextToVideoSDPipeline", "audio": "AudioLDMPipeline"}


# --- a decoder folder's inference settings --------------------------------------------------------------------

def read_inference(folder: str | Path) -> dict:
    """A pipeline folder's inference settings chosen at export or retune, kept under the scheduler config's
    private key "_nano_inference" (diffusers ignores it when loading the scheduler); {} where none were saved."""
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()).get("_nano_inference", {}) if path.exists() else {}


def save_inference(folder: str | Path, settings: dict) -> None:
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    sched = json.loads(path.read_text())
    sched["_nano_inference"] = settings
    path.write_text(json.dumps(sched, indent=2) + "\n")


def inference_settings(modality: str, folder: str | Path) -> dict:
    """The settings saved with the pipeline, over the defaults."""
    return {**DEFAULT_INFERENCE[modality], **read_inference(folder)}


def load_pipeline(modality: str, folder: str | Path, dtype: torch.dtype = torch.float32):
    import diffusers

    from .. import vocoder  # noqa: F401  (AudioLDM-nano's model_index names its vocoder's module)

    pipe = getattr(diffusers, PIPELINES[modality]).from_pretrained(str(folder), dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


# --- ImageBind-nano ---------------------------------------------------------------------------------------------

PAIR_NAME_KEY = {"image": "image_name", "video": "video_name", "audio": "audio_name"}


def read_split(world_dir, split: str) -> dict:
    """{modality: {"names", "captions", "attrs"}} for the T_X pair items of one split (attributes from world.json)."""
    world_dir = Path(world_dir)
    manifest = json.loads((world_dir / "world.json").read_text())
    attrs = {(it["modality"], it["name"]): it["attributes"] for it in manifest["items"]}
    out = {}
    for m in MODALITIES:
        records = json.loads((world_dir / split / W.PAIR_FILES[m]).read_text())
        names = [r[PAIR_NAME_KEY[m]] for r in records]
        out[m] = {"names": names, "captions": [r["caption"] for r in records],
                  "attrs": [attrs[(m, n)] for n in names]}
    return out


def attr_key(modality: str, attrs: dict) -> tuple:
    return tuple(attrs[a] for a in W.ATTRIBUTES[modality])


def imagebind_keys() -> dict:
    _, modality_type = import_imagebind()
    return {"image": modality_type.VISION, "video": modality_type.VISION, "audio": modality_type.AUDIO,
            "text": modality_type.TEXT}


def embed(model, modality: str, x: torch.Tensor) -> torch.Tensor:
    """One clip per item -> L2-normalised (B, D): `Encoder.embed` without the multi-clip mean (and for text too)."""
    return F.normalize(embed_raw(model, imagebind_keys()[modality], x), dim=-1)


def retrieval(media: torch.Tensor, text: torch.Tensor, keys: list) -> dict:
    """Top-1 retrieval both ways over all items of a split; a hit is a result with the same attributes.

    Several items share attributes (and so captions that mean the same thing), so retrieving any of them counts."""
    if len(keys) == 0:
        return {"media_to_caption": None, "caption_to_media": None, "n": 0, "distinct": 0}
    sim = F.normalize(media.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
    m2c = sim.argmax(dim=1).tolist()
    c2m = sim.argmax(dim=0).tolist()
    n = len(keys)
    return {"media_to_caption": sum(keys[j] == keys[i] for i, j in enumerate(m2c)) / n,
            "caption_to_media": sum(keys[j] == keys[i] for i, j in enumerate(c2m)) / n,
            "n": n, "distinct": len(set(keys))}


def load_encoder(folder, dtype=torch.float32) -> Encoder:
    """An exported folder -> Encoder, through Encoder.from_config as the presets load it."""
    kwargs = json.loads((Path(folder) / "config.json").read_text())["model_kwargs"]
    return Encoder.from_config(EncoderConfig(pretrained=str(folder), model_kwargs=kwargs), dtype=dtype)


def evaluate_encoder(folder, world_dir, split: str = "test", batch_size: int = 16) -> dict:
    """Test-split retrieval table of a saved encoder, through the real path: files -> nextgpt.media -> Encoder.

    Returns {modality: {"media_to_caption", "caption_to_media", "n", "distinct"}}; candidates are all pair items of
    that modality in the split (and their captions); a retrieval is right when the attributes match."""
    encoder = load_encoder(folder)
    tokenizer = text_tokenizer()
    data = read_split(world_dir, split)
    out = {}
    with torch.no_grad():
        for m in MODALITIES:
            d = data[m]
            items = [Media(m, str(Path(world_dir) / W.FOLDERS[m] / n)) for n in d["names"]]
            media = encoder.encode(items, batch_size=batch_size) if items else torch.empty(0)
            text = torch.cat([embed(encoder.model, "text", tokenize(tokenizer, d["captions"][s:s + 256]))
                              for s in range(0, len(items), 256)]) if items else torch.empty(0)
            out[m] = retrieval(media, text, [attr_key(m, a) for a in d["attrs"]])
    return out


def format_retrieval(result: dict) -> str:
    lines = [f"{'modality':<8} {'n':>5} {'distinct':>8} {'media->caption':>15} {'caption->media':>15}"]
    for m, r in result.items():
        f = lambda v: "-" if v is None else f"{100 * v:.1f}%"  # noqa: E731
        lines.append(f"{m:<8} {r['n']:>5} {r['distinct']:>8} {f(r['media_to_caption']):>15} "
                     f"{f(r['caption_to_media']):>15}")
    return "\n".join(lines)


# --- the decoders -----------------------------------------------------------------------------------------------

def world_items(world_dir, modality: str, split: str, sources=("pairs", "mosit")) -> list[dict]:
    """The world's items of one modality and split (pairs first, then dialogue media), with their attributes."""
    items = json.loads((Path(world_dir) / "world.json").read_text())["items"]
    out = [it for it in items if it["modality"] == modality and it["split"] == split and it["source"] in sources]
    return sorted(out, key=lambda it: sources.index(it["source"]))


def held_out(world_dir, modality: str, split: str = "test", n: int | None = None) -> list[tuple[str, dict]]:
    """(caption, attributes) of the split's pair captions, in order, the first n."""
    by_name = {it["name"]: it for it in world_items(world_dir, modality, split, sources=("pairs",))}
    pairs = json.loads((Path(world_dir) / split / W.PAIR_FILES[modality]).read_text())[:n]
    return [(p["caption"], by_name[p[PAIR_NAME_KEY[modality]]]["attributes"]) for p in pairs]


def read(modality: str, x) -> dict:
    """The oracles' reading of one decoded item (uint8 image or frames, or a 16 kHz waveform)."""
    if modality == "image":
        return oracles.image_attributes(x)
    if modality == "video":
        return oracles.video_attributes(x)
    return oracles.sound_attributes(x, 16000)


def oracle_scores(modality: str, outputs, attributes: list[dict]) -> dict:
    """Per-attribute accuracy of the oracles reading `outputs` against the attributes, and `all` of them right."""
    if not attributes:
        return {}
    hits = [oracles.matches(read(modality, x), a) for x, a in zip(outputs, attributes)]
    names = [a for a in W.ATTRIBUTES[modality] if a in hits[0]]
    out = {a: float(np.mean([h[a] for h in hits])) for a in names}
    out["all"] = float(np.mean([all(h.values()) for h in hits]))
    return out


def generate(pipe, modality: str, prompts: list[str], guidance_scale: float, num_inference_steps: int,
             seed: int = 0, batch: int = 16, audio_length_in_s: float | None = None,
             guidance_fraction: float = 1.0) -> list:
    """Decoded items from caption strings, through the pipeline exactly as a user calls it: uint8 images
    (64, 64, 3) or videos (8, 64, 64, 3), or waveforms; batch k draws its noise from seed + k * batch."""
    out = []
    for i in range(0, len(prompts), batch):
        common = dict(guidance_scale=guidance_scale, num_inference_steps=num_inference_steps, output_type="np",
                      generator=torch.Generator("cpu").manual_seed(seed + i))
        chunk = prompts[i: i + batch]
        with guidance_on_first(pipe, num_inference_steps, guidance_scale, guidance_fraction):
            if modality == "audio":
                out += list(pipe(chunk, audio_length_in_s=audio_length_in_s, **common).audios)
                continue
            size = dict(height=W.IMAGE_SIZE, width=W.IMAGE_SIZE)
            if modality == "image":
                res = np.clip(pipe(chunk, **size, **common).images, 0, 1)
            else:
                res = np.clip(np.asarray(pipe(chunk, **size, num_frames=W.VIDEO_FRAMES, **common).frames), 0, 1)
        out += list((res * 255).round().astype(np.uint8))
    return out


def score(pipe, modality: str, prompts: list[tuple[str, dict]], settings: dict, seed: int = 0,
          batch: int = 16) -> tuple[dict, list]:
    """Decode (caption, attributes) pairs and score them: (the score, the decoded items)."""
    start = time.perf_counter()
    outputs = generate(pipe, modality, [p for p, _ in prompts], seed=seed, batch=batch, **settings)
    seconds = time.perf_counter() - start
    result = {"decoder": modality, "n": len(prompts), **oracle_scores(modality, outputs, [a for _, a in prompts]),
              **settings, "seconds_per_item": round(seconds / max(len(prompts), 1), 4)}
    return result, outputs


def evaluate_decoder(modality: str, folder, world_dir, split: str = "test", n: int | None = None, seed: int = 0,
                     **settings) -> dict:
    """A decoder folder on the split's held-out caption strings, at its saved inference settings (or the given
    ones); the oracles score what it made."""
    settings = {**inference_settings(modality, folder), **{k: v for k, v in settings.items() if v is not None}}
    result, _ = score(load_pipeline(modality, folder), modality, held_out(world_dir, modality, split, n), settings,
                      seed=seed, batch=64 if modality == "image" else 16)
    return {**result, "split": split}
