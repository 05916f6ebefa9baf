"""What the three nano diffusion decoders' training shares: the world's media cached as arrays, captions (fresh ones
and the empty one of classifier-free guidance), cached text conditioning, the denoising loss, sample grids,
choosing the inference settings on validation captions, and the fp16 export."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from ..nano import oracles, parts
from ..nano import world as W
from .common import Run, write_json


def load_media(world: str, cache: str, modality: str, split: str) -> tuple[np.ndarray, list[dict]]:
    """uint8 pixels of every item: images (N, 64, 64, 3), videos (N, 8, 64, 64, 3); decoded once, then cached."""
    items = parts.world_items(world, modality, split)
    path = Path(cache) / f"{Path(world).resolve().name}-{modality}-{split}-{len(items)}.npy"
    if path.exists():
        return np.load(path), items
    folder = Path(world) / W.FOLDERS[modality]
    if not items:  # a tiny test world may have an empty split
        frame = (W.IMAGE_SIZE, W.IMAGE_SIZE, 3)
        return np.zeros((0, *frame) if modality == "image" else (0, W.VIDEO_FRAMES, *frame), np.uint8), items
    if modality == "image":
        data = np.stack([np.asarray(Image.open(folder / it["name"]).convert("RGB")) for it in items])
    else:  # H.264 frames, as the decoders' training data would be in the real world
        data = np.stack([oracles.load_frames(folder / it["name"])[: W.VIDEO_FRAMES] for it in items])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, data)
    return data, items


def to_unit(x: np.ndarray | torch.Tensor) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [-1, 1], the VAE's range."""
    x = torch.as_tensor(x).float().div(127.5).sub(1.0)
    return x.movedim(-1, -3).contiguous()


@torch.no_grad()
def encode_means(vae, pixels: np.ndarray, batch: int = 64) -> torch.Tensor:
    """Latent means of uint8 images (N, 64, 64, 3) -> (N, 4, 16, 16)."""
    return torch.cat([vae.encode(to_unit(pixels[i: i + batch])).latent_dist.mean for i in range(0, len(pixels), batch)])


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


def sd_schedule() -> dict:
    """Stable Diffusion's training noise schedule, which SD-nano and Zeroscope-nano keep."""
    return dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")


def denoising_loss(unet, noise, x0: torch.Tensor, **cond) -> torch.Tensor:
    """The diffusion loss at random timesteps: the UNet predicts the noise (or, for a v-prediction schedule, the
    velocity) of `x0` noised by `noise` (a DDPMScheduler); `cond` goes to the UNet as it is."""
    eps = torch.randn_like(x0)
    t = torch.randint(0, noise.config.num_train_timesteps, (len(x0),))
    pred = unet(noise.add_noise(x0, eps, t), t, **cond).sample
    target = noise.get_velocity(x0, eps, t) if noise.config.prediction_type == "v_prediction" else eps
    return F.mse_loss(pred, target)


def caption_batch_loss(unet, noise, latents: torch.Tensor, items: list[dict], cache: TextCache, cfg,
                       rng: np.random.Generator) -> torch.Tensor:
    """The denoising loss of a batch of training items drawn by `rng`, each conditioned on its caption (a fresh
    one, or "" for guidance, at the config's rates) through the frozen text encoder."""
    idx = rng.choice(len(latents), cfg.unet_batch)
    cond = cache.hidden(captions_for(items, idx, rng, cfg.fresh_caption_p, cfg.uncond_prob))
    return denoising_loss(unet, noise, latents[idx], encoder_hidden_states=cond)


def save_grid(path, images: np.ndarray, cols: int = 8) -> None:
    """uint8 (N, H, W, 3) images (or video frames laid out by the caller) -> one PNG."""
    n, h, w = images.shape[:3]
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + 2), cols * (w + 2), 3), 255, np.uint8)
    for k, im in enumerate(images):
        r, c = divmod(k, cols)
        grid[r * (h + 2): r * (h + 2) + h, c * (w + 2): c * (w + 2) + w] = im
    Image.fromarray(grid).save(path)


def select_inference(pipe, modality: str, prompts: list[tuple[str, dict]], candidates: list[dict], run: Run,
                     seed: int = 0, key=lambda r: r.get("all", 0.0)) -> dict:
    """The candidate settings that score best on validation captions (by `key`; the earlier candidate wins ties);
    each candidate's score goes to the run's log."""
    best = None
    for settings in candidates:
        result, _ = parts.score(pipe, modality, prompts, settings, seed=seed)
        run.log(0, part=run.folder.name, select=True, split="validation", **result)
        if best is None or key(result) > best[0]:
            best = (key(result), settings)
    return best[1]


def save_fp16(pipe, folder) -> None:
    """Half-precision safetensors (half the size), but loading with no dtype gives float32 everywhere: diffusers
    models load as float32 by default, while transformers would follow the text encoder's saved `dtype` and mix a
    float16 text encoder with a float32 UNet. So its config says float32."""
    pipe.to(torch.float16).save_pretrained(folder, safe_serialization=True)
    path = Path(folder) / "text_encoder" / "config.json"
    config = json.loads(path.read_text())
    config["dtype"] = "float32"
    path.write_text(json.dumps(config, indent=2) + "\n")
    pipe.to(torch.float32)


def record(folder, **values) -> dict:
    """Add `values` to the export's `nano_training.json` (how it was trained and scored) and return it all."""
    path = Path(folder) / "nano_training.json"
    info = {**(json.loads(path.read_text()) if path.exists() else {}), **values}
    write_json(path, info)
    return info


def eval_flags(p) -> None:
    """The flags of a decoder script's `--eval` (for `parse_config`): score the exported pipeline at --out."""
    p.add_argument("--eval", action="store_true", help="evaluate the exported pipeline at --out and print JSON")
    p.add_argument("--n", type=int, default=None, help="with --eval: first N test captions")


def run_parts(modality: str, cfg, flags: dict, trainers: dict, export) -> None:
    """A decoder script's command: with --eval only the score of the exported pipeline; otherwise the part
    `cfg.part` names (or all, in order), then the export and its score on the test split."""
    torch.set_num_threads(cfg.threads)
    if flags["eval"]:
        print(json.dumps(parts.evaluate_decoder(modality, cfg.out, cfg.world, n=flags["n"]), indent=1))
        return
    Path(cfg.run).mkdir(parents=True, exist_ok=True)
    cfg.save(Path(cfg.run) / "config.json")
    for name, train in trainers.items():
        if cfg.part in (name, "all"):
            train(cfg)
    if cfg.part in ("export", "all"):
        scores = parts.evaluate_decoder(modality, export(cfg), cfg.world)
        record(cfg.out, evaluation=scores)
        print(json.dumps(scores, indent=1), flush=True)
