"""Train SD-nano: a CLIP-nano text encoder, a small `AutoencoderKL` and a `UNet2DConditionModel`, run through the stock
`StableDiffusionPipeline`.

    python -m nextgpt.train.nano_image [--part text|vae|unet|export|all] [--run runs/nano/image]
                                       [--out assets/nano/image_decoder] [--world data/nano-world] [--<field> V ...]
    python -m nextgpt.train.nano_image --eval [--out FOLDER] [--n N]      # oracle scores of an exported pipeline

Read it top to bottom: config, the three parts in training order (text encoder, VAE, UNet), export. Each part has
its own run folder (`<run>/text`, `<run>/vae`, `<run>/unet`: resumable `state.pt`, `log.jsonl`, `samples/`) and
hands the next part a finished artefact (`<run>/text/text_encoder`, `<run>/vae/vae`, latents).

Why it looks like this
----------------------
* Text conditioning is the bottleneck when a from-scratch text encoder is trained jointly with the UNet. Real SD
  starts from a contrastively pretrained CLIP text tower and keeps it frozen; so does this: part `text` trains a
  small `CLIPTextModel` (the real CLIP BPE tokenizer, 77 positions) against a throwaway image tower and video tower
  on the world, then freezes it. The video decoder (`nano_video.py`) uses the very same text encoder, and NExT-GPT's
  output projectors regress its last hidden state (1, 77, D) for a caption, so that state must carry every
  attribute: colour, shape, position and motion direction all separate in its pooled (EOS) output.
* The VAE is tiny (64x64x3 <-> 16x16x4) and trains in minutes to reconstructions the oracles read perfectly. The
  UNet then trains on precomputed latent *means*, with the latents' per-channel mean and std folded into the VAE's
  `quant_conv` / `post_quant_conv` so that unit-variance latents come out of `encode` and go into `decode` with
  `scaling_factor = 1`: the stock pipeline needs no special handling.
* Attention is kept off the 16x16 level (blocks 32, 64, 64; cross-attention at 8x8 and 4x4 only): on a CPU that is
  several times faster than attention at every level, and position is still easily placed from 8x8.
* Classifier-free guidance: 10 % of captions are dropped to "" (the pipeline's negative prompt); guidance ~5 with
  20 DDIM steps (docs/nano.md).
* An EMA of the UNet weights is what gets sampled and exported (cheap at 1.7 M params, and much steadier samples
  from a short run).
* Weights ship as fp16 safetensors; the token table (49408 x D) dominates the size, so D is kept at 64.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from nextgpt.nano import parts
from nextgpt.nano import world as W
from nextgpt.offline import clip_tokenizer_offline
from nextgpt.train.common import (Run, RunConfig, ema_update, load_state, optimizer_step, parse_config,
                                  seed_everything, soft_infonce, warmup_cosine)
from nextgpt.train.diffusion import (TextCache, caption_batch_loss, captions_for, encode_means, eval_flags,
                                     load_media, record, run_parts, save_fp16, save_grid, sd_schedule, to_unit)


@dataclass
class ImageTrainConfig(RunConfig):
    run: str = "runs/nano/image"
    out: str = "assets/nano/image_decoder"
    cache: str = "runs/nano/cache"  # decoded media of the world, shared with nano_video.py
    part: str = "all"
    max_minutes: float = 60.0  # the UNet's training time; resumable after it
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
    kl_weight: float = 1e-6  # tiny: we want a near-deterministic code; the latent means are what the UNet sees
    vae_eval_every: int = 300
    # UNet
    unet_channels: tuple = (32, 64, 64)
    unet_heads: int = 4
    unet_layers: int = 1
    unet_steps: int = 3500
    unet_batch: int = 32
    unet_lr: float = 1e-3
    warmup: int = 200
    uncond_prob: float = 0.1  # classifier-free guidance dropout
    ema: float = 0.999
    unet_eval_every: int = 1000  # sample grid + oracle score on validation captions
    eval_n: int = 48
    # inference (saved with the export)
    guidance_scale: float = 5.0
    num_inference_steps: int = 20

    OLD_NAMES = {"vae_kl": "kl_weight", "unet_warmup": "warmup", "uncond_p": "uncond_prob",
                 "guidance": "guidance_scale", "steps": "num_inference_steps"}

    @property
    def inference(self) -> dict:
        return {"guidance_scale": self.guidance_scale, "num_inference_steps": self.num_inference_steps}


def attribute_labels(items: list[dict]) -> torch.Tensor:
    """One integer per distinct attribute combination: items sharing it are positives for each other."""
    keys = [tuple(sorted(it["attributes"].items())) for it in items]
    ids = {k: i for i, k in enumerate(sorted(set(keys)))}
    return torch.tensor([ids[k] for k in keys])


# --- part 1: the CLIP-nano text encoder ------------------------------------------------------------------------

def build_text_encoder(cfg: ImageTrainConfig):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=49408, hidden_size=cfg.text_width, intermediate_size=4 * cfg.text_width,
        num_attention_heads=cfg.text_heads, num_hidden_layers=cfg.text_layers, max_position_embeddings=77,
        projection_dim=cfg.text_width, bos_token_id=49406, eos_token_id=49407, pad_token_id=49407))


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


def train_text(cfg: ImageTrainConfig) -> Path:
    """Contrastive pretraining of the text encoder against image and video towers; saves the encoder frozen."""
    done = Path(cfg.run) / "text" / "text_encoder"
    if (done / "config.json").exists():
        return done
    run = Run(Path(cfg.run) / "text", cfg.save_every_s)
    seed_everything(cfg.seed)
    data = {m: load_media(cfg.world, cfg.cache, m, "train") for m in ("image", "video")}
    val = {m: load_media(cfg.world, cfg.cache, m, "validation") for m in ("image", "video")}
    labels = {m: attribute_labels(items) for m, (_, items) in data.items()}
    encoder = build_text_encoder(cfg)
    head = nn.Linear(cfg.text_width, cfg.text_width)  # CLIP's text projection; only the hidden states are kept
    towers = nn.ModuleDict({"image": Tower(3, cfg.text_width), "video": Tower(3 * W.VIDEO_FRAMES, cfg.text_width)})
    log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
    params = list(encoder.parameters()) + list(head.parameters()) + list(towers.parameters()) + [log_scale]
    opt = torch.optim.AdamW(params, lr=cfg.text_lr, weight_decay=0.01)
    modules = {"encoder": encoder, "head": head, "towers": towers, "scale": nn.ParameterDict({"log_scale": log_scale})}
    cache = TextCache(clip_tokenizer_offline())
    for step in run.steps(cfg.text_steps, modules, {"opt": opt}):
        lr = cfg.text_lr * warmup_cosine(step, cfg.text_steps, 100, decay_from_start=True)
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
            losses[m] = soft_infonce(media, text, labels[m][idx], log_scale.exp().clamp(max=100))
        loss = sum(losses.values())
        optimizer_step(opt, loss)
        done_steps = step + 1
        if done_steps % cfg.log_every == 0 or done_steps == cfg.text_steps:
            run.log(done_steps, part="text", loss=loss.item(), **{f"loss_{m}": v.item() for m, v in losses.items()},
                    lr=lr, scale=log_scale.exp().item(), steps_per_s=run.speed(done_steps))
        if (done_steps % cfg.text_eval_every == 0 or done_steps == cfg.text_steps) and all(v[1] for v in val.values()):
            encoder.eval()
            top1 = {f"val_{m}_top1": text_retrieval(encoder, head, towers[m], cache, px, its, m)
                    for m, (px, its) in val.items()}
            run.log(done_steps, part="text", **top1)
            encoder.train()
    encoder.eval().requires_grad_(False)
    encoder.save_pretrained(done)  # frozen from here on; the towers and the head are dropped
    return done


def load_text_encoder(folder):
    from transformers import CLIPTextModel

    return CLIPTextModel.from_pretrained(folder, dtype=torch.float32).eval().requires_grad_(False)


# --- part 2: the VAE -------------------------------------------------------------------------------------------

def build_vae(cfg: ImageTrainConfig):
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
def decode_to_uint8(vae, latents: torch.Tensor, batch: int = 64) -> np.ndarray:
    out = torch.cat([vae.decode(latents[i: i + batch]).sample for i in range(0, len(latents), batch)])
    return ((out.clamp(-1, 1) + 1) * 127.5).round().byte().movedim(1, -1).numpy()


BACKGROUND = torch.tensor(W.BACKGROUND).float().div(127.5).sub(1.0)[:, None, None]  # in the VAE's range


def train_vae(cfg: ImageTrainConfig) -> Path:
    """Reconstruction (L1 + L2) with a tiny KL on images and video frames; then the latent norm is folded in."""
    done = Path(cfg.run) / "vae" / "vae"
    if (done / "config.json").exists():
        return done
    run = Run(Path(cfg.run) / "vae", cfg.save_every_s)
    seed_everything(cfg.seed + 1)
    img, _ = load_media(cfg.world, cfg.cache, "image", "train")
    vid, _ = load_media(cfg.world, cfg.cache, "video", "train")
    val, val_items = load_media(cfg.world, cfg.cache, "image", "validation")
    frames = vid.reshape(-1, *vid.shape[2:])
    vae = build_vae(cfg)
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    for step in run.steps(cfg.vae_steps, {"vae": vae}, {"opt": opt}):
        lr = cfg.vae_lr * warmup_cosine(step, cfg.vae_steps, 50, floor=0.1, decay_from_start=True)
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
        loss = l1 + l2 + cfg.kl_weight * kl
        optimizer_step(opt, loss, vae.parameters())
        done_steps = step + 1
        if done_steps % cfg.log_every == 0:
            run.log(done_steps, part="vae", loss=loss.item(), l1=l1.item(), l2=l2.item(), kl=kl.item(), lr=lr,
                    steps_per_s=run.speed(done_steps))
        if (done_steps % cfg.vae_eval_every == 0 or done_steps == cfg.vae_steps) and val_items:
            vae.eval()
            rec = decode_to_uint8(vae, encode_means(vae, val[:256]))
            psnr = 10 * math.log10(255 ** 2 / float(np.mean((rec.astype(np.float64) - val[:256]) ** 2)))
            scores = parts.oracle_scores("image", rec, [it["attributes"] for it in val_items[:256]])
            run.log(done_steps, part="vae", val_psnr=psnr, **{f"val_{k}": v for k, v in scores.items()})
            save_grid(run.folder / "samples" / f"recon_{done_steps:06d}.png", np.concatenate([val[:16], rec[:16]]))
            vae.train()
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

def build_unet(cfg: ImageTrainConfig):
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=16, in_channels=4, out_channels=4, layers_per_block=cfg.unet_layers,
        block_out_channels=tuple(cfg.unet_channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (len(cfg.unet_channels) - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (len(cfg.unet_channels) - 1) + ("UpBlock2D",),
        cross_attention_dim=cfg.text_width, attention_head_dim=cfg.unet_heads,
        norm_num_groups=min(32, cfg.unet_channels[0] // 2))


def build_pipeline(text_encoder, vae, unet):
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, steps_offset=1, **sd_schedule())
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder, tokenizer=clip_tokenizer_offline(), unet=unet,
                                   scheduler=scheduler, safety_checker=None, feature_extractor=None,
                                   image_encoder=None, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def train_unet(cfg: ImageTrainConfig) -> Path:
    from diffusers import DDPMScheduler

    run = Run(Path(cfg.run) / "unet", cfg.save_every_s)
    seed_everything(cfg.seed + 2)
    text_encoder = load_text_encoder(train_text(cfg))
    vae = load_vae(train_vae(cfg))
    img, items = load_media(cfg.world, cfg.cache, "image", "train")
    latents_path = run.folder / "latents.pt"
    if latents_path.exists():
        latents = torch.load(latents_path, weights_only=True)
    else:  # once: the training set as unit-variance latent means (the VAE has the normalisation folded in)
        latents = encode_means(vae, img)
        torch.save(latents, latents_path)
    _, val_items = load_media(cfg.world, cfg.cache, "image", "validation")
    val_prompts = [(it["caption"], it["attributes"]) for it in val_items[: cfg.eval_n]]
    cache = TextCache(clip_tokenizer_offline(), text_encoder)
    unet = build_unet(cfg)
    ema = copy.deepcopy(unet).requires_grad_(False)
    noise = DDPMScheduler(**sd_schedule())
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.01)
    print(f"unet: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M params, {len(latents)} latents", flush=True)
    for step in run.steps(cfg.unet_steps, {"unet": unet, "ema": ema}, {"opt": opt}, cfg.max_minutes):
        lr = cfg.unet_lr * warmup_cosine(step, cfg.unet_steps, cfg.warmup, floor=0.1, decay_from_start=True)
        for g in opt.param_groups:
            g["lr"] = lr
        loss = caption_batch_loss(unet, noise, latents, items, cache, cfg, np.random.default_rng([cfg.seed, 3, step]))
        optimizer_step(opt, loss, unet.parameters())
        done_steps = step + 1
        ema_update(ema, unet, cfg.ema, done_steps)
        if done_steps % cfg.log_every == 0:
            run.log(done_steps, part="unet", loss=loss.item(), lr=lr, steps_per_s=run.speed(done_steps),
                    train_min=run.minutes())
        if (done_steps % cfg.unet_eval_every == 0 or done_steps == cfg.unet_steps) and val_prompts:
            pipe = build_pipeline(text_encoder, vae, ema)
            scores, images = parts.score(pipe, "image", val_prompts, cfg.inference, seed=cfg.seed, batch=64)
            save_grid(run.folder / "samples" / f"samples_{done_steps:06d}.png", np.stack(images[:32]))
            run.log(done_steps, part="unet", **{f"val_{k}": v for k, v in scores.items()
                                                if k in W.VALUES or k == "all"})
    return run.state_path


# --- export ----------------------------------------------------------------------------------------------------

def export(cfg: ImageTrainConfig) -> Path:
    """The pipeline folder (fp16 safetensors) from the finished text encoder and VAE and the UNet's EMA weights."""
    text_encoder = load_text_encoder(Path(cfg.run) / "text" / "text_encoder")
    vae = load_vae(Path(cfg.run) / "vae" / "vae")
    unet = build_unet(cfg)
    state = load_state(Path(cfg.run) / "unet" / "state.pt")
    unet.load_state_dict(state["modules"]["ema"])
    save_fp16(build_pipeline(text_encoder, vae, unet.eval()), cfg.out)
    parts.save_inference(cfg.out, cfg.inference)
    record(cfg.out, trained_steps=state["step"], train_minutes=round(state["extra"].get("spent_s", 0) / 60, 1),
           **cfg.inference, config=dataclasses.asdict(cfg))
    return Path(cfg.out)


def main(argv=None) -> None:
    cfg, flags = parse_config(ImageTrainConfig, argv, "python -m nextgpt.train.nano_image", __doc__.split("\n\n")[0],
                              extra=eval_flags)
    run_parts("image", cfg, flags, {"text": train_text, "vae": train_vae, "unet": train_unet}, export)


if __name__ == "__main__":
    main()
