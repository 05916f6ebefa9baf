"""Train SD-nano: a CLIP-nano text encoder, a small `AutoencoderKL` and a `UNet2DConditionModel`, run through the stock
`StableDiffusionPipeline`.

    python -m nextgpt.train.nano_image [--part text|vae|unet|export|all] [--run runs/nano/image]
                                       [--out assets/nano/image_decoder] [--world data/nano-world] [--<field> V ...]
    python -m nextgpt.train.nano_image --eval [--out FOLDER] [--n N]      # oracle scores of an exported pipeline

Read it top to bottom: config, data (the world's train split, cached once), the three parts in training order
(text encoder, VAE, UNet), export, and `evaluate`, the test-split oracle table that `python -m nextgpt.eval` calls.
Each part has its own run folder (`<run>/text`, `<run>/vae`, `<run>/unet`: resumable `state.pt`, `log.jsonl`,
`samples/`) and hands the next part a finished artefact (`<run>/text/text_encoder`, `<run>/vae/vae`, latents).

Why it looks like this (issue 5, "What was measured here")
----------------------------------------------------------
* Text conditioning is the bottleneck when a from-scratch text encoder is trained jointly with the UNet. Real SD
  starts from a contrastively pretrained CLIP text tower and keeps it frozen; so does this: part `text` trains a
  small `CLIPTextModel` (the real CLIP BPE tokenizer, 77 positions) against a throwaway image tower and video tower
  on the world, then freezes it. The video decoder (`nano_video.py`) uses the very same text encoder, and NExT-GPT's
  output projectors (issue 6) regress its last hidden state (1, 77, D) for a caption, so that state must carry every
  attribute: colour, shape, position and motion direction all separate in its pooled (EOS) output.
* The VAE is tiny (64x64x3 <-> 16x16x4) and trains in minutes to reconstructions the oracles read perfectly. The
  UNet then trains on precomputed latent *means*, with the latents' per-channel mean and std folded into the VAE's
  `quant_conv` / `post_quant_conv` so that unit-variance latents come out of `encode` and go into `decode` with
  `scaling_factor = 1`: the stock pipeline needs no special handling.
* Attention is kept off the 16x16 level (blocks 32, 64, 64; cross-attention at 8x8 and 4x4 only): at batch 32 that
  ran ~3.5x faster than attention at every level, and position is still easily placed from 8x8.
* Classifier-free guidance: 10 % of captions are dropped to "" (the pipeline's negative prompt). Guidance ~5 with
  20 DDIM steps scored best in the issue's measurements; `evaluate` reports what the shipped settings give.
* An EMA of the UNet weights is what gets sampled and exported (cheap at 1.7 M params, and much steadier samples
  from a short run).
* Weights ship as fp16 safetensors; the token table (49408 x D) dominates the size, so D is kept at 64.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from nextgpt.nano import oracles
from nextgpt.nano import world as W
from nextgpt.train.common import Run, load_state, seed_everything


# --- config ----------------------------------------------------------------------------------------------------

@dataclass
class Config:
    world: str = "data/nano-world"
    run: str = "runs/nano/image"
    out: str = "assets/nano/image_decoder"
    cache: str = "runs/nano/cache"  # decoded media of the world, shared with nano_video.py
    part: str = "all"
    seed: int = 0
    threads: int = 1  # the machine is shared: one thread per training process
    save_every_s: float = 180.0
    log_every: int = 25
    fresh_caption_p: float = 0.5  # chance of replacing an item's caption by a fresh one with the same attributes
    # CLIP-nano text encoder, trained contrastively against throwaway image and video towers
    text_width: int = 64
    text_layers: int = 3
    text_heads: int = 4
    text_steps: int = 1200
    text_batch: int = 128  # items per modality per step
    text_lr: float = 2e-3
    text_eval_every: int = 200
    # VAE: 64x64x3 <-> 16x16x4
    vae_channels: tuple = (8, 16, 32)  # 0.17 M params: the full-res level dominates CPU time
    vae_groups: int = 4
    vae_steps: int = 1200
    vae_batch: int = 16
    vae_lr: float = 2e-3
    vae_fg_weight: float = 20.0  # extra loss weight of the shape's pixels
    vae_kl: float = 1e-6  # tiny: we want a near-deterministic code; the latent means are what the UNet sees
    vae_eval_every: int = 300
    # UNet
    unet_channels: tuple = (32, 64, 64)
    unet_heads: int = 4
    unet_layers: int = 1
    unet_steps: int = 3500
    unet_batch: int = 32
    unet_lr: float = 1e-3
    unet_warmup: int = 200
    uncond_p: float = 0.1  # classifier-free guidance dropout
    ema: float = 0.999
    unet_eval_every: int = 1000  # sample grid + oracle score on validation captions
    eval_n: int = 48
    max_minutes: float = 60.0  # safety stop per part on this shared machine; resumable after it
    # inference (saved with the export, reported by evaluate)
    guidance: float = 5.0
    steps: int = 20


# --- data ------------------------------------------------------------------------------------------------------

def world_items(world_dir, modality: str, split: str, sources=("pairs", "mosit")) -> list[dict]:
    """The world's items of one modality and split (pairs first, then dialogue media), with their attributes."""
    items = json.loads((Path(world_dir) / "world.json").read_text())["items"]
    out = [it for it in items if it["modality"] == modality and it["split"] == split and it["source"] in sources]
    return sorted(out, key=lambda it: sources.index(it["source"]))


def load_media(cfg: Config, modality: str, split: str) -> tuple[np.ndarray, list[dict]]:
    """uint8 pixels of every item: images (N, 64, 64, 3), videos (N, 8, 64, 64, 3); decoded once, then cached."""
    items = world_items(cfg.world, modality, split)
    cache = Path(cfg.cache) / f"{Path(cfg.world).resolve().name}-{modality}-{split}-{len(items)}.npy"
    if cache.exists():
        return np.load(cache), items
    folder = Path(cfg.world) / W.FOLDERS[modality]
    if not items:  # a tiny test world may have an empty split
        frame = (W.IMAGE_SIZE, W.IMAGE_SIZE, 3)
        return np.zeros((0, *frame) if modality == "image" else (0, W.VIDEO_FRAMES, *frame), np.uint8), items
    if modality == "image":
        data = np.stack([np.asarray(Image.open(folder / it["name"]).convert("RGB")) for it in items])
    else:  # H.264 frames, as the decoders' training data would be in the real world
        data = np.stack([oracles.load_frames(folder / it["name"])[: W.VIDEO_FRAMES] for it in items])
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.save(cache, data)
    return data, items


BACKGROUND = torch.tensor(W.BACKGROUND).float().div(127.5).sub(1.0)[:, None, None]  # in the VAE's range


def to_unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1], the VAE's range."""
    x = torch.as_tensor(x).float().div(127.5).sub(1.0)
    return x.movedim(-1, -3).contiguous()


def captions_for(items: list[dict], index, rng: np.random.Generator, fresh_p: float, drop_p: float = 0.0) -> list[str]:
    """The item's own caption, or (fresh_p) a fresh one from the world's templates, or (drop_p) "" for CFG."""
    out = []
    for i in index:
        it, u = items[int(i)], rng.uniform()
        if u < drop_p:
            out.append("")
        elif u < drop_p + fresh_p:
            out.append(W.caption(it["modality"], it["attributes"], rng))
        else:
            out.append(it["caption"])
    return out


def attribute_labels(items: list[dict]) -> torch.Tensor:
    """One integer per distinct attribute combination: items sharing it are positives for each other."""
    keys = [tuple(sorted(it["attributes"].items())) for it in items]
    ids = {k: i for i, k in enumerate(sorted(set(keys)))}
    return torch.tensor([ids[k] for k in keys])


# --- part 1: the CLIP-nano text encoder ------------------------------------------------------------------------

def clip_tokenizer():
    from nextgpt.offline import clip_tokenizer_offline

    return clip_tokenizer_offline()


def build_text_encoder(cfg: Config):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
        num_attention_heads=cfg.text_heads, num_hidden_layers=cfg.text_layers, max_position_embeddings=77,
        projection_dim=cfg.text_width, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))


class TextCache:
    """Token ids (and, once the encoder is frozen, its hidden states) per caption string: the world has a few
    thousand distinct captions, and tokenizing / encoding each once keeps the CPU for the UNet."""

    def __init__(self, tokenizer, encoder=None):
        self.tok, self.encoder = tokenizer, encoder
        self.ids: dict[str, torch.Tensor] = {}
        self.states: dict[str, torch.Tensor] = {}

    def tokens(self, texts: list[str]) -> torch.Tensor:
        missing = [t for t in dict.fromkeys(texts) if t not in self.ids]
        if missing:
            # Exactly what the pipeline does: pad to 77 with the end token, so pad positions are trained as used.
            ids = self.tok(missing, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
            self.ids.update(zip(missing, ids))
        return torch.stack([self.ids[t] for t in texts])

    @torch.no_grad()
    def hidden(self, texts: list[str]) -> torch.Tensor:
        """(B, 77, D) last hidden state of the frozen encoder: the decoders' conditioning."""
        missing = [t for t in dict.fromkeys(texts) if t not in self.states]
        if missing:
            out = self.encoder(self.tokens(missing)).last_hidden_state
            self.states.update(zip(missing, out))
        return torch.stack([self.states[t] for t in texts])


class Tower(nn.Module):
    """A small CNN on 32x32 inputs (frames stacked on channels for video, which makes motion visible). It flattens
    instead of pooling globally, so where things are (position, direction) stays readable. Discarded after use."""

    def __init__(self, in_ch: int, dim: int):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_ch, 32, 3, 2, 1), nn.GELU(), nn.Conv2d(32, 64, 3, 2, 1), nn.GELU(),
            nn.Conv2d(64, 64, 3, 2, 1), nn.GELU(), nn.Flatten(),
            nn.Linear(64 * 16, 256), nn.GELU(), nn.Linear(256, dim))

    def forward(self, x):
        return self.net(x)


def tower_input(pixels: np.ndarray) -> torch.Tensor:
    """uint8 images (B, 64, 64, 3) or videos (B, T, 64, 64, 3) -> (B, C, 32, 32) for the towers."""
    x = to_unit(pixels)
    if x.dim() == 5:
        x = x.flatten(1, 2)
    return F.avg_pool2d(x, 2)


def soft_clip_loss(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE in which every pair with identical attributes is a positive (a uniform target row): a
    batch of 128 from 72 image combinations holds many duplicates, which plain InfoNCE would push apart."""
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)
    return 0.5 * (-(target * logits.log_softmax(1)).sum(1).mean() - (target * logits.log_softmax(0)).sum(0).mean())


@torch.no_grad()
def text_retrieval(encoder, head, tower, cache: TextCache, pixels, items, modality: str) -> float:
    """Top-1 accuracy of picking an item's attribute combination among all combinations' canonical captions."""
    names = W.ATTRIBUTES[modality]
    combos = sorted({tuple(it["attributes"][a] for a in names) for it in items})
    texts = [W.caption(modality, dict(zip(names, c)), np.random.default_rng(k)) for k, c in enumerate(combos)]
    t = F.normalize(head(encoder(cache.tokens(texts)).pooler_output), dim=-1)
    m = F.normalize(tower(tower_input(pixels)), dim=-1)
    guess = (m @ t.T).argmax(1)
    truth = torch.tensor([combos.index(tuple(it["attributes"][a] for a in names)) for it in items])
    return float((guess == truth).float().mean())


def train_text(cfg: Config) -> Path:
    """Contrastive pretraining of the text encoder against image and video towers; saves the encoder frozen."""
    done = Path(cfg.run) / "text" / "text_encoder"
    if (done / "config.json").exists():
        return done
    run = Run(Path(cfg.run) / "text", cfg.save_every_s)
    seed_everything(cfg.seed)
    img, img_items = load_media(cfg, "image", "train")
    vid, vid_items = load_media(cfg, "video", "train")
    val_img, val_img_items = load_media(cfg, "image", "validation")
    val_vid, val_vid_items = load_media(cfg, "video", "validation")
    labels = {"image": attribute_labels(img_items), "video": attribute_labels(vid_items)}
    encoder = build_text_encoder(cfg)
    head = nn.Linear(cfg.text_width, cfg.text_width)  # CLIP's text projection; only the hidden states are kept
    towers = nn.ModuleDict({"image": Tower(3, cfg.text_width), "video": Tower(3 * W.VIDEO_FRAMES, cfg.text_width)})
    log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
    params = list(encoder.parameters()) + list(head.parameters()) + list(towers.parameters()) + [log_scale]
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.01)
    holder = nn.ParameterDict({"log_scale": log_scale})
    modules = {"encoder": encoder, "head": head, "towers": towers, "scale": holder}
    step, _ = run.resume(modules, {"opt": opt})
    cache = TextCache(clip_tokenizer())
    data = {"image": (img, img_items), "video": (vid, vid_items)}
    start = time.monotonic()
    while step < cfg.text_steps:
        lr = cfg.text_lr * min(1.0, (step + 1) / 100) * 0.5 * (1 + math.cos(math.pi * step / cfg.text_steps))
        for g in opt.param_groups:
            g["lr"] = lr
        rng = np.random.default_rng([cfg.seed, 1, step])  # per-step stream: resuming replays the same batches
        losses = {}
        for m, (pixels, items) in data.items():
            idx = rng.choice(len(items), size=min(cfg.text_batch, len(items)), replace=False)
            ids = cache.tokens(captions_for(items, idx, rng, cfg.fresh_caption_p))
            # CLIP's attention is causal, so positions after the end token cannot change the pooled (end-token)
            # output: cut the batch at its longest caption, ~4x less work than all 77 positions.
            ids = ids[:, : int((ids == 49407).int().argmax(1).max()) + 1]
            text = head(encoder(ids).pooler_output)
            media = towers[m](tower_input(pixels[idx]))
            losses[m] = soft_clip_loss(media, text, labels[m][idx], log_scale.exp().clamp(max=100))
        loss = sum(losses.values())
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.text_steps:
            run.log(step, part="text", loss=loss.item(), **{f"loss_{m}": v.item() for m, v in losses.items()},
                    lr=lr, scale=log_scale.exp().item(), steps_per_s=step / max(time.monotonic() - start, 1e-6))
        if (step % cfg.text_eval_every == 0 or step == cfg.text_steps) and val_img_items and val_vid_items:
            encoder.eval()
            top1 = {f"val_{m}_top1": text_retrieval(encoder, head, towers[m], cache, px, its, m)
                    for m, px, its in (("image", val_img, val_img_items), ("video", val_vid, val_vid_items))}
            run.log(step, part="text", **top1)
            encoder.train()
        run.maybe_save(step, modules, {"opt": opt})
    run.save(step, modules, {"opt": opt})
    encoder.eval().requires_grad_(False)
    encoder.save_pretrained(done)  # frozen from here on; the towers and the head are dropped
    return done


def load_text_encoder(folder):
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(folder, dtype=torch.float32).eval().requires_grad_(False)


# --- part 2: the VAE -------------------------------------------------------------------------------------------

def build_vae(cfg: Config):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)  # n blocks: n-1 halvings, 64 -> 16 with three
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=tuple(cfg.vae_channels),
                         layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * n,
                         up_block_types=("UpDecoderBlock2D",) * n, norm_num_groups=cfg.vae_groups,
                         sample_size=W.IMAGE_SIZE, scaling_factor=1.0)


@torch.no_grad()
def fold_latent_norm(vae, mean: torch.Tensor, std: torch.Tensor) -> None:
    """Make `encode` return (mu - mean) / std and `decode` take it, per channel, by rewriting the 1x1 convs around
    the latent. The pipeline divides latents by `scaling_factor` before decoding, so that stays 1."""
    c = mean.numel()
    q, p = vae.quant_conv, vae.post_quant_conv
    q.weight[:c] /= std[:, None, None, None]
    q.bias[:c] = (q.bias[:c] - mean) / std
    q.bias[c:] -= 2 * torch.log(std)  # log-variance of the scaled posterior
    p.bias += p.weight[:, :, 0, 0] @ mean  # z = z' * std + mean, pushed into the first conv of the decoder
    p.weight *= std[None, :, None, None]
    vae.register_to_config(scaling_factor=1.0)


@torch.no_grad()
def encode_means(vae, pixels: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Latent means of uint8 images (N, 64, 64, 3) -> (N, 4, 16, 16)."""
    return torch.cat([vae.encode(to_unit(pixels[i: i + batch])).latent_dist.mean for i in range(0, len(pixels), batch)])


@torch.no_grad()
def decode_to_uint8(vae, latents: torch.Tensor, batch: int = 64) -> np.ndarray:
    out = torch.cat([vae.decode(latents[i: i + batch]).sample for i in range(0, len(latents), batch)])
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().movedim(1, -1).numpy()


def oracle_scores(images: np.ndarray, items: list[dict], modality: str = "image") -> dict:
    """Per-attribute accuracy of the oracle reading `images` against the items' attributes."""
    read = oracles.image_attributes if modality == "image" else oracles.video_attributes
    if not items:
        return {}
    hits = [oracles.matches(read(x), it["attributes"]) for x, it in zip(images, items)]
    names = W.ATTRIBUTES[modality]
    out = {a: float(np.mean([h[a] for h in hits])) for a in names}
    out["all"] = float(np.mean([all(h.values()) for h in hits]))
    return out


def save_grid(path, images: np.ndarray, cols: int = 8) -> None:
    """uint8 (N, H, W, 3) images (or video frames laid out by the caller) -> one PNG."""
    n, h, w = images.shape[:3]
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * (h + 2): r * (h + 2) + h, c * (w + 2): c * (w + 2) + w] = im
    Image.fromarray(grid).save(path)


def train_vae(cfg: Config) -> Path:
    """Reconstruction (L1 + L2) with a tiny KL on images and video frames; then the latent norm is folded in."""
    done = Path(cfg.run) / "vae" / "vae"
    if (done / "config.json").exists():
        return done
    run = Run(Path(cfg.run) / "vae", cfg.save_every_s)
    seed_everything(cfg.seed + 1)
    img, _ = load_media(cfg, "image", "train")
    vid, _ = load_media(cfg, "video", "train")
    val, val_items = load_media(cfg, "image", "validation")
    frames = vid.reshape(-1, *vid.shape[2:])
    vae = build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    step, _ = run.resume({"vae": vae}, {"opt": opt})
    start = time.monotonic()
    while step < cfg.vae_steps:
        lr = cfg.vae_lr * min(1.0, (step + 1) / 50) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.vae_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        rng = np.random.default_rng([cfg.seed, 2, step])
        half = cfg.vae_batch // 2  # half still images, half video frames: one VAE serves both decoders
        x = to_unit(np.concatenate([img[rng.choice(len(img), half)], frames[rng.choice(len(frames), half)]]))
        post = vae.encode(x).latent_dist
        rec = vae.decode(post.sample()).sample
        # The shape covers ~5 % of the picture: weight its pixels up, or the plain background wins the loss and
        # colours come out grey for a long time.
        w = 1.0 + cfg.vae_fg_weight * ((x - BACKGROUND).abs().amax(1, keepdim=True) > 0.1).float()
        l1 = (w * (rec - x).abs()).mean() / w.mean()
        l2 = (w * (rec - x).pow(2)).mean() / w.mean()
        kl = post.kl().mean()
        loss = l1 + l2 + cfg.vae_kl * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        step += 1
        if step % cfg.log_every == 0:
            run.log(step, part="vae", loss=loss.item(), l1=l1.item(), l2=l2.item(), kl=kl.item(), lr=lr,
                    steps_per_s=step / max(time.monotonic() - start, 1e-6))
        if (step % cfg.vae_eval_every == 0 or step == cfg.vae_steps) and val_items:
            vae.eval()
            rec = decode_to_uint8(vae, encode_means(vae, val[:256]))
            psnr = 10 * math.log10(255 ** 2 / float(np.mean((rec.astype(np.float64) - val[:256]) ** 2)))
            run.log(step, part="vae", val_psnr=psnr, **{f"val_{k}": v for k, v in
                                                        oracle_scores(rec, val_items[:256]).items()})
            save_grid(run.folder / "samples" / f"recon_{step:06d}.png", np.concatenate([val[:16], rec[:16]]))
            vae.train()
        run.maybe_save(step, {"vae": vae}, {"opt": opt})
    run.save(step, {"vae": vae}, {"opt": opt})
    vae.eval().requires_grad_(False)
    # The latent statistics over the training images and frames, folded into the VAE (see module docstring).
    mu = encode_means(vae, np.concatenate([img, frames[:: W.VIDEO_FRAMES // 2]]))
    fold_latent_norm(vae, mu.mean(dim=(0, 2, 3)), mu.std(dim=(0, 2, 3)))
    vae.save_pretrained(done)
    return done


def load_vae(folder):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(folder, dtype=torch.float32).eval().requires_grad_(False)


# --- part 3: the UNet ------------------------------------------------------------------------------------------

def build_unet(cfg: Config):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=cfg.unet_layers,
        block_out_channels=tuple(cfg.unet_channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(cfg.unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(cfg.unet_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=cfg.text_width, attention_head_dim=cfg.unet_heads,
        norm_num_groups=min(32, cfg.unet_channels[0] // 2))


def noise_schedule_kwargs() -> dict:
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def build_scheduler():
    """The sampler saved with the pipeline: DDIM over SD's own training schedule."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **noise_schedule_kwargs())


def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    with torch.no_grad():
        for e, p in zip(ema.parameters(), model.parameters()):
            e.lerp_(p, 1.0 - decay)


def build_pipeline(text_encoder, vae, unet):
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer(), unet=unet,
                                   scheduler=build_scheduler(), safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate_images(pipe, prompts: list[str], guidance: float, steps: int, seed: int = 0, batch: int = 64):
    """uint8 (N, 64, 64, 3) from caption strings, through the pipeline exactly as a user calls it."""
    out = []
    for i in range(0, len(prompts), batch):
        g = torch.Generator("cpu").manual_seed(seed + i)
        res = pipe(prompts[i: i + batch], height=W.IMAGE_SIZE, width=W.IMAGE_SIZE, guidance_scale=guidance,
                   num_inference_steps=steps, generator=g, output_type="np")
        out.append((np.clip(res.images, 0, 1) * 255).round().astype(np.uint8))
    return np.concatenate(out) if out else np.zeros((0, W.IMAGE_SIZE, W.IMAGE_SIZE, 3), np.uint8)


def train_unet(cfg: Config) -> Path:
    run = Run(Path(cfg.run) / "unet", cfg.save_every_s)
    seed_everything(cfg.seed + 2)
    from diffusers import DDPMScheduler

    text_encoder = load_text_encoder(train_text(cfg))
    vae = load_vae(train_vae(cfg))
    img, items = load_media(cfg, "image", "train")
    latents_path = Path(cfg.run) / "unet" / "latents.pt"
    if latents_path.exists():
        latents = torch.load(latents_path, weights_only=True)
    else:  # once: the training set as unit-variance latent means (the VAE has the normalisation folded in)
        latents = encode_means(vae, img)
        torch.save(latents, latents_path)
    _, val_items = load_media(cfg, "image", "validation")
    val_items = val_items[: cfg.eval_n]
    cache = TextCache(clip_tokenizer(), text_encoder)
    unet = build_unet(cfg)
    ema = copy.deepcopy(unet).requires_grad_(False)
    noise = DDPMScheduler(**noise_schedule_kwargs())
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.01)
    step, extra = run.resume({"unet": unet, "ema": ema}, {"opt": opt})
    spent = extra.get("spent_s", 0.0)  # training time over all sessions, for the budget
    start, start_step = time.monotonic(), step
    print(f"unet: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M params, {len(latents)} latents, "
          f"from step {step}", flush=True)
    while step < cfg.unet_steps:
        if spent + time.monotonic() - start > cfg.max_minutes * 60:
            print(f"stopping at step {step}: the {cfg.max_minutes} min budget is spent (resumable)", flush=True)
            break
        lr = cfg.unet_lr * min(1.0, (step + 1) / cfg.unet_warmup) * (
            0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.unet_steps)))
        for g in opt.param_groups:
            g["lr"] = lr
        rng = np.random.default_rng([cfg.seed, 3, step])
        idx = rng.choice(len(latents), cfg.unet_batch)
        cond = cache.hidden(captions_for(items, idx, rng, cfg.fresh_caption_p, cfg.uncond_p))
        x0 = latents[idx]
        eps = torch.randn_like(x0)
        t = torch.randint(0, noise.config.num_train_timesteps, (len(idx),))
        pred = unet(noise.add_noise(x0, eps, t), t, cond).sample
        loss = F.mse_loss(pred, eps)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        step += 1
        ema_update(ema, unet, min(cfg.ema, (1 + step) / (10 + step)))
        elapsed = spent + time.monotonic() - start
        if step % cfg.log_every == 0:
            run.log(step, part="unet", loss=loss.item(), lr=lr,
                    steps_per_s=(step - start_step) / max(time.monotonic() - start, 1e-6), train_min=elapsed / 60)
        if (step % cfg.unet_eval_every == 0 or step == cfg.unet_steps) and val_items:
            pipe = build_pipeline(text_encoder, vae, ema)
            prompts = [it["caption"] for it in val_items]
            images = generate_images(pipe, prompts, cfg.guidance, cfg.steps, seed=cfg.seed)
            save_grid(run.folder / "samples" / f"samples_{step:06d}.png", images[:32])
            run.log(step, part="unet", **{f"val_{k}": v for k, v in oracle_scores(images, val_items).items()})
        run.maybe_save(step, {"unet": unet, "ema": ema}, {"opt": opt}, spent_s=elapsed)
    run.save(step, {"unet": unet, "ema": ema}, {"opt": opt}, spent_s=spent + time.monotonic() - start)
    return run.state_path


# --- export ----------------------------------------------------------------------------------------------------

def save_fp16(pipe, folder) -> None:
    """Half-precision safetensors (half the size), but loading with no dtype gives float32 everywhere: diffusers
    models load as float32 by default, while transformers 5 would follow the text encoder's saved `dtype` and mix
    a float16 text encoder with a float32 UNet. So its config says float32."""
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    path = Path(folder) / "text_encoder" / "config.json"
    config = json.loads(path.read_text())
    config["dtype"] = "float32"
    path.write_text(json.dumps(config, indent=2) + "\n")
    pipe.to(torch.float32)


def export(cfg: Config) -> Path:
    """The pipeline folder (fp16 safetensors) from the finished text encoder and VAE and the UNet's EMA weights."""
    text_encoder = load_text_encoder(Path(cfg.run) / "text" / "text_encoder")
    vae = load_vae(Path(cfg.run) / "vae" / "vae")
    unet = build_unet(cfg)
    state = load_state(Path(cfg.run) / "unet" / "state.pt")
    unet.load_state_dict(state["modules"]["ema"])
    pipe = build_pipeline(text_encoder, vae, unet.eval())
    save_fp16(pipe, cfg.out)
    info = {"trained_steps": state["step"], "train_minutes": round(state["extra"].get("spent_s", 0) / 60, 1),
            "guidance_scale": cfg.guidance, "num_inference_steps": cfg.steps, "config": dataclasses.asdict(cfg)}
    (Path(cfg.out) / "nano_training.json").write_text(json.dumps(info, indent=1) + "\n")
    return Path(cfg.out)


# --- evaluation ------------------------------------------------------------------------------------------------

def evaluate(pipeline_folder="assets/nano/image_decoder", world_dir="data/nano-world", split: str = "test",
             n: int | None = None, guidance: float = 5.0, steps: int = 20, seed: int = 0, batch: int = 64) -> dict:
    """Decode the split's held-out caption strings (its cc3m.json) through the pipeline; oracle-score the images."""
    from diffusers import StableDiffusionPipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pipe = StableDiffusionPipeline.from_pretrained(pipeline_folder, dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    by_name = {it["name"]: it for it in world_items(world_dir, "image", split, sources=("pairs",))}
    pairs = json.loads((Path(world_dir) / split / "cc3m.json").read_text())[:n]
    items = [{**by_name[p["image_name"]], "caption": p["caption"]} for p in pairs]
    start = time.perf_counter()
    images = generate_images(pipe, [it["caption"] for it in items], guidance, steps, seed=seed, batch=batch)
    seconds = time.perf_counter() - start
    return {"decoder": "image", "split": split, "n": len(items), **oracle_scores(images, items),
            "guidance_scale": guidance, "num_inference_steps": steps, "scheduler": type(pipe.scheduler).__name__,
            "seconds_per_image": round(seconds / max(len(items), 1), 4)}


# --- command line ----------------------------------------------------------------------------------------------

def parse_config(argv=None, cls=Config, prog="python -m nextgpt.train.nano_image"):
    """Every Config field is a `--flag` (tuples as comma-separated ints); plus --eval and --n."""
    p = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(cls):
        default = f.default
        kind = type(default)
        if isinstance(default, tuple):
            kind = lambda s: tuple(int(v) for v in s.split(","))  # noqa: E731
        elif isinstance(default, bool):
            kind = lambda s: s.lower() in ("1", "true", "yes")  # noqa: E731
        p.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, type=kind, default=default)
    p.add_argument("--eval", action="store_true", help="evaluate the exported pipeline at --out and print JSON")
    p.add_argument("--n", type=int, default=None, help="with --eval: first N test captions")
    a = vars(p.parse_args(argv))
    flags = {k: a.pop(k) for k in ("eval", "n")}
    return cls(**a), flags


def main(argv=None) -> None:
    cfg, flags = parse_config(argv)
    torch.set_num_threads(cfg.threads)
    if flags["eval"]:
        print(json.dumps(evaluate(cfg.out, cfg.world, n=flags["n"], guidance=cfg.guidance, steps=cfg.steps), indent=1))
        return
    if cfg.part in ("text", "all"):
        train_text(cfg)
    if cfg.part in ("vae", "all"):
        train_vae(cfg)
    if cfg.part in ("unet", "all"):
        train_unet(cfg)
    if cfg.part in ("export", "all"):
        out = export(cfg)
        scores = evaluate(out, cfg.world, guidance=cfg.guidance, steps=cfg.steps)
        info = json.loads((out / "nano_training.json").read_text())
        (out / "nano_training.json").write_text(json.dumps({**info, "evaluation": scores}, indent=1) + "\n")
        print(json.dumps(scores, indent=1), flush=True)


if __name__ == "__main__":
    main()
