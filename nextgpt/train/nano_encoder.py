"""Train ImageBind-nano: a small `ImageBindModel` whose image, video and sound embeddings sit next to their captions.

    python -m nextgpt.train.nano_encoder [--steps N] [--run runs/nano/encoder] [--out assets/nano/encoder]
    python -m nextgpt.train.nano_encoder --part foreign --world data/nano-world-8k   # after `nextgpt.nano.talk`

Read it top to bottom: config, data (the world's T_X pair files, preprocessed once by `nextgpt.media` exactly as
NExT-GPT feeds ImageBind, and cached under the run folder), the model's initialisation, the training loop and
export. The test-split retrieval table is `nextgpt.nano.parts.evaluate_encoder`, which `python -m nextgpt.eval`
calls too.

Why it looks like this
----------------------
* ImageBind's joint space is built by aligning every modality to *text* (images and videos share the vision trunk),
  so each step takes one batch of images, one of videos and one of sounds, each with its captions, and adds up
  three symmetric InfoNCE losses. The temperature is ImageBind's own learnable text `LearnableLogitScaling`.
* The world has few distinct meanings (72 image, 96 video, 12 sound attribute combinations), so a batch holds many
  items that mean the same thing. Plain InfoNCE would push those apart; instead every pair with identical attributes
  is a positive (the target row is uniform over them), which is what the captions say anyway.
* A shared linear classifier per attribute (colour, shape, position, direction, rhythm) on the embeddings of every
  modality and of the captions adds a dense signal that the all-or-nothing contrastive target lacks. It is training
  scaffolding only (`AttributeHeads`, not exported); the contrastive loss alone learned position, shape and motion
  far too slowly for the budget (docs/nano.md).
* Two fixes to ImageBind's stock initialisation for a tiny model on upscaled 64x64 pictures: position embeddings
  start from 2-D sin-cos tables, and the patch stems learn at lr * width / fan_in (see `init_positions` and
  `param_groups` for why: without that, the patch embeddings outgrow the position embeddings a hundredfold).
* Captions are half the time the item's own and half the time a fresh one drawn from the world's templates for the
  same attributes, so the text tower learns every phrasing rather than one caption per item.
* Inputs are exactly `nextgpt.media`'s: 64x64 PNGs upscaled by `load_image` (cached as the uint8 224x224 picture it
  normalises, which is lossless), sounds by `load_audio` (the world's sounds are <= 2 s, so its 3 clips are
  identical and one is kept), videos by `load_video` (8 frames at 8 fps = 1 s, square: its 5 clips x 3 crops are
  all the same first-and-last frame pair, so the two 64x64 frames are kept and upscaled per batch with the very
  same ops; the cache builder checks this against `load_video`). An item embedded through `Encoder.embed` with the
  full multi-clip input therefore gets the same embedding as in training: the mean of identical unit vectors.
* `--part foreign` continues the exported encoder once the talk's uploads exist (`learn_foreign`): uploads from
  outside the world go to one point per modality, the world's stay where they were (a frozen copy is the teacher).
* Weights ship as fp16 safetensors. The text trunk's token table is 49408 x text_embed_dim (ImageBind's fixed BPE
  vocabulary), so the text width is kept at 64 to keep the folder small.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nextgpt.config import MODALITIES
from nextgpt.encoder import Encoder, embed_media, import_imagebind, text_tokenizer, tokenize
from nextgpt.media import (CLIP_MEAN, CLIP_STD, IMAGE_SIZE, Media, _normalize_clip, _short_side_scale, load_audio,
                           load_image, load_video, preprocess)
from nextgpt.nano import parts
from nextgpt.nano import world as W
from nextgpt.nano.parts import attr_key, embed, imagebind_keys, read_split
from nextgpt.train.common import (Run, RunConfig, optimizer_step, parse_config, seed_everything, soft_infonce,
                                  warmup_cosine, write_json)


# --- config ----------------------------------------------------------------------------------------------------

@dataclass
class EncoderTrainConfig(RunConfig):
    run: str = "runs/nano/encoder"
    out: str = "assets/nano/encoder"
    cache: str = ""  # preprocessed inputs; default <run>/cache
    steps: int = 1200
    batch_size: int = 32  # items per modality per step
    lr: float = 2e-3
    min_lr: float = 5e-5
    warmup: int = 100
    weight_decay: float = 0.05
    fresh_caption_p: float = 0.5  # chance of replacing an item's caption by a fresh one with the same attributes
    aux_weight: float = 1.0  # attribute classifiers on the embeddings (training only, not exported)
    eval_every: int = 200  # validation retrieval line in the log
    # the model (ImageBindModel constructor arguments, see model_kwargs)
    out_embed_dim: int = 128
    vision_embed_dim: int = 128
    vision_num_blocks: int = 3
    vision_num_heads: int = 4
    vision_patch: int = 28  # 224 / 28 = 8x8 patches (each 8x8 px of the 64x64 original) instead of 16x16 at 14
    text_embed_dim: int = 64
    text_num_blocks: int = 2
    text_num_heads: int = 4
    audio_embed_dim: int = 96
    audio_num_blocks: int = 2
    audio_num_heads: int = 4
    audio_patch: int = 16  # kernel = stride: 8 x 12 patches of the 128 x 204 fbank instead of 12 x 19 overlapping
    minor_embed_dim: int = 8  # depth / thermal / IMU: NExT-GPT never uses them; the smallest the architecture allows
    # --part foreign: the exported encoder (`out`) continued on the talk's uploads (`learn_foreign`)
    part: str = "contrastive"  # "contrastive" (train from scratch) or "foreign" (continue on foreign uploads)
    foreign_steps: int = 500
    foreign_batch: int = 16  # foreign and world uploads each, per modality per step
    foreign_lr: float = 1e-4
    foreign_world_items: int = 600  # world uploads per modality kept in place (the foreign ones: all)
    foreign_keep_weight: float = 10.0  # at 1, the world's uploads drifted to 1 - cos = 0.05 from where they were

    def model_kwargs(self) -> dict:
        minor = dict(num_blocks=1, num_heads=1, embed_dim=self.minor_embed_dim)
        return dict(
            out_embed_dim=self.out_embed_dim,
            kernel_size=[2, self.vision_patch, self.vision_patch],
            vision_embed_dim=self.vision_embed_dim, vision_num_blocks=self.vision_num_blocks,
            vision_num_heads=self.vision_num_heads,
            text_embed_dim=self.text_embed_dim, text_num_blocks=self.text_num_blocks,
            text_num_heads=self.text_num_heads,
            audio_embed_dim=self.audio_embed_dim, audio_num_blocks=self.audio_num_blocks,
            audio_num_heads=self.audio_num_heads, audio_kernel_size=self.audio_patch, audio_stride=self.audio_patch,
            audio_drop_path=0.0,
            **{f"{m}_{k}": v for m in ("depth", "thermal", "imu") for k, v in minor.items()},
            imu_drop_path=0.0,
        )


# --- data: the world's pair items, preprocessed once -----------------------------------------------------------

def _image_pixels(path) -> torch.Tensor:
    """load_image's picture as the uint8 224x224 it normalised (exact: it is ToTensor of a uint8 PIL image)."""
    x = load_image(path)
    mean, std = torch.tensor(CLIP_MEAN).view(3, 1, 1), torch.tensor(CLIP_STD).view(3, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8)


def _video_frames(path) -> torch.Tensor:
    """The two frames load_video samples, (2, H, W, 3) uint8, for a short square video whose 15 clip-crops coincide.

    load_video takes frames [ceil(fps * start), min(ceil(fps * end), N)) of each 2 s clip and keeps their first and
    last; a video of <= 2 s has every clip at [0, N), so every clip is (frame 0, frame N - 1)."""
    from moviepy import VideoFileClip

    clip = VideoFileClip(str(path), audio=False)
    try:
        fps, n = float(clip.fps), int(clip.reader.n_frames)
        if n / fps > 2 or clip.reader.size[0] != clip.reader.size[1]:
            raise ValueError(f"{path}: the cache shortcut needs a square video of <= 2 s")
        frames = [clip.reader.get_frame(i / fps)[..., :3].copy() for i in (0, n - 1)]
    finally:
        clip.close()
    return torch.from_numpy(np.stack(frames))


def video_input(frames: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W, 3) uint8 frames -> (B, 3, 2, 224, 224): load_video's scaling and normalisation, batched."""
    b, t, h, w, _ = frames.shape
    x = frames.permute(0, 4, 1, 2, 3).float().div(255).reshape(b * 3, t, h, w)  # (C, T, H, W) per item, stacked
    x = _short_side_scale(x, IMAGE_SIZE).reshape(b, 3, t, IMAGE_SIZE, IMAGE_SIZE)
    return _normalize_clip(x, channel_dim=1)  # square input: the centre crop is the whole frame


def image_input(pixels: torch.Tensor) -> torch.Tensor:
    return _normalize_clip(pixels.float().div(255), channel_dim=1)


def _audio_clip(path) -> torch.Tensor:
    x = load_audio(path)
    if not all(torch.equal(x[0], x[i]) for i in range(1, x.shape[0])):
        raise ValueError(f"{path}: the cache shortcut needs a sound of <= 2 s (identical clips)")
    return x[0]


_CACHE_READERS = {"image": _image_pixels, "video": _video_frames, "audio": _audio_clip}


def load_cached(cfg: EncoderTrainConfig, split: str) -> dict:
    """The split's inputs, built once and kept as <cache>/<split>-<modality>.pt."""
    cache = Path(cfg.cache or Path(cfg.run) / "cache")
    cache.mkdir(parents=True, exist_ok=True)
    data = read_split(cfg.world, split)
    for m in MODALITIES:
        path = cache / f"{split}-{m}.pt"
        d = data[m]
        if path.exists():
            stored = torch.load(path, weights_only=True)
            if stored["names"] == d["names"]:
                d["x"] = stored["x"]
                continue
        started = time.time()
        files = [Path(cfg.world) / W.FOLDERS[m] / n for n in d["names"]]
        xs = [_CACHE_READERS[m](f) for f in files]
        d["x"] = torch.stack(xs) if xs else torch.empty(0)
        if m == "video" and xs:  # the shortcut must give load_video's own tensor
            ref = load_video(files[0])
            assert torch.allclose(video_input(d["x"][:1])[0], ref[0], atol=1e-5), "video cache differs from load_video"
            assert all(torch.equal(ref[0], ref[i]) for i in range(1, ref.shape[0]))
        tmp = path.with_suffix(".tmp")
        torch.save({"names": d["names"], "x": d["x"]}, tmp)
        tmp.replace(path)
        print(f"cached {len(xs)} {split} {m} inputs in {time.time() - started:.0f} s", flush=True)
    return data


def model_input(modality: str, x: torch.Tensor) -> torch.Tensor:
    """Cached rows -> the ImageBind input batch (one clip per item)."""
    if modality == "image":
        return image_input(x)
    if modality == "video":
        return video_input(x)
    return x.float()


# --- the model's initialisation and its training-only heads -----------------------------------------------------

def _sincos(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(N,) positions -> (N, dim) sines and cosines at geometric frequencies (the Transformer's table)."""
    omega = 1.0 / 10000 ** (torch.arange(dim // 2, dtype=torch.float32) / max(1, dim // 2))
    angles = positions[:, None].float() * omega[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)


@torch.no_grad()
def init_positions(model) -> None:
    """Start the learnable position embeddings from sin-cos tables (2-D over the patch grid for vision and audio).

    ImageBind draws them at std ~0.1, far below the patch embeddings; then the CLS token first learns only what
    survives averaging over patches (colour, pitch) and position, shape and motion come very slowly. A table of
    unit amplitude makes *where* a patch is visible from the first step; the embeddings stay learnable."""
    keys = imagebind_keys()
    for m in ("image", "audio"):
        pre = model.modality_preprocessors[keys[m]]
        pos = pre.pos_embedding_helper.pos_embed  # (1, cls + patches, D)
        h, w = pre.patches_layout[-2:]
        n, d = pos.shape[1] - 1, pos.shape[2]
        rows = torch.arange(h).repeat_interleave(w).repeat(n // (h * w))
        cols = torch.arange(w).repeat(h).repeat(n // (h * w))
        pos[0, 1:] = torch.cat([_sincos(rows, d // 2), _sincos(cols, d - d // 2)], dim=1)
        pos[0, :1] = 0.0


def param_groups(cfg: EncoderTrainConfig, model) -> list[dict]:
    """AdamW groups: the patch stems learn at lr * width / fan_in, everything else at lr.

    The stems see 2 x 28 x 28 x 3 = 4704 strongly correlated inputs per patch (a 64x64 picture upscaled 3.5x on a
    constant background), so Adam's per-weight steps add up coherently and at the common lr the patch embeddings
    grow a hundredfold within a few hundred steps; the position embeddings are then drowned and position and motion
    are never learned (validation position stays at chance). Scaling the stem's lr by width / fan_in keeps
    their sizes comparable."""
    keys = imagebind_keys()
    used = {keys[m] for m in ("image", "audio", "text")}  # depth / thermal / IMU keep their random init
    stems, decay, no_decay = [], [], []
    for name, p in model.named_parameters():
        if name.split(".")[1] not in used:
            continue
        if name.endswith("_stem.proj.weight") or ".rgbt_stem.proj." in name:
            fan_in = p[0].numel()
            stems.append({"params": [p], "weight_decay": cfg.weight_decay,
                          "lr_scale": min(1.0, p.shape[0] / fan_in)})
        elif p.ndim >= 2:
            decay.append(p)
        else:
            no_decay.append(p)
    return [{"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
            {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}, *stems]


class AttributeHeads(torch.nn.Module):
    """Linear classifiers of each attribute (colour, shape, ...) on the joint embedding, shared by every modality
    and by text. Captions are contrasted as whole meanings; these add a dense per-attribute signal (an image with
    the right colour and shape but the wrong position is partly right), and sharing them across modalities pushes
    one attribute geometry into the joint space. Training only: they are not part of ImageBind."""

    def __init__(self, dim: int):
        super().__init__()
        self.heads = torch.nn.ModuleDict({a: torch.nn.Linear(dim, len(v)) for a, v in W.VALUES.items()})

    def loss(self, modality: str, emb: torch.Tensor, attrs: list[dict]) -> torch.Tensor:
        out = 0.0
        for a in W.ATTRIBUTES[modality]:
            label = torch.tensor([W.VALUES[a].index(x[a]) for x in attrs])
            out = out + F.cross_entropy(self.heads[a](10.0 * emb), label)  # 10: unit vectors need a larger scale
        return out / len(W.ATTRIBUTES[modality])


def logit_scale(model) -> torch.Tensor:
    """ImageBind's learnable text LearnableLogitScaling, used as the (inverse) temperature."""
    post = model.modality_postprocessors[imagebind_keys()["text"]][1]
    return post.log_logit_scale.exp().clamp(max=post.max_logit_scale)


@torch.no_grad()
def evaluate_cached(model, tokenizer, data: dict, batch_size: int = 128) -> dict:
    """Retrieval on a cached split (used for the validation line during training)."""
    model.eval()
    out = {}
    for m in MODALITIES:
        d = data[m]
        if not d["names"]:
            out[m] = parts.retrieval(torch.empty(0), torch.empty(0), [])
            continue
        media = torch.cat([embed(model, m, model_input(m, d["x"][s:s + batch_size]))
                           for s in range(0, len(d["names"]), batch_size)])
        text = torch.cat([embed(model, "text", tokenize(tokenizer, d["captions"][s:s + batch_size]))
                          for s in range(0, len(d["names"]), batch_size)])
        out[m] = parts.retrieval(media, text, [attr_key(m, a) for a in d["attrs"]])
    model.train()
    return out


# --- part 1b: uploads from outside the world --------------------------------------------------------------------

def talk_uploads(world, split: str) -> dict[str, dict[str, list[str]]]:
    """{modality: {"world": paths, "foreign": paths}}: the items the talk's dialogues of a split attach (those from
    outside the world have no attributes), in a fixed order."""
    found: dict = {m: {"world": {}, "foreign": {}} for m in MODALITIES}
    for dialogue in json.loads((Path(world) / split / "talk.json").read_text()):
        for m in MODALITIES:
            for it in dialogue.get(f"{m}_list", []):
                side = "foreign" if it.get("attributes") is None else "world"
                found[m][side][str(Path(world) / W.FOLDERS[m] / it[f"{m}_name"])] = None
    return {m: {side: sorted(v) for side, v in sides.items()} for m, sides in found.items()}


def upload_input(modality: str, path) -> torch.Tensor:
    """`nextgpt.media`'s input for an item, as fp16; a video keeps every third of its 15 clip-crops (its 5 clips,
    centre crop), which is enough to train on and a third of the memory."""
    x = preprocess(Media(modality, str(path)))
    return (x[1::3] if modality == "video" else x).half()


def learn_foreign(cfg: EncoderTrainConfig) -> dict:
    """Continue the exported encoder so that each modality's uploads from outside the world (pictures, noise, speech,
    several shapes: `nextgpt.nano.talk`) embed at one point of their own, while the world's uploads keep their
    embeddings (the teacher is the encoder as it was). The LLM then has a plain signal for "not from my world": with
    the contrastive encoder alone they were linearly separable only along minor directions, and LLM-nano recognised
    about half (docs/nano.md)."""
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    run = Run(Path(cfg.run) / "foreign", save_every_s=cfg.save_every_s)
    cfg.save(run.folder / "config.json")
    teacher = parts.load_encoder(cfg.out).model
    student = copy.deepcopy(teacher)
    keys = imagebind_keys()
    params = [p for n, p in student.named_parameters() if n.split(".")[1] in {keys["image"], keys["audio"]}]
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.AdamW(params, lr=cfg.foreign_lr, weight_decay=0.0)
    rng = np.random.default_rng(cfg.seed)
    data, targets, anchors = {}, {}, {}
    started = time.time()
    for m, sides in talk_uploads(cfg.world, "train").items():
        world = [sides["world"][i] for i in sorted(rng.permutation(len(sides["world"]))[:cfg.foreign_world_items])]
        data[m] = {side: torch.stack([upload_input(m, f) for f in files])
                   for side, files in (("world", world), ("foreign", sides["foreign"]))}
        with torch.no_grad():
            targets[m] = torch.cat([embed_media(teacher, m, x.float()) for x in data[m]["world"].split(64)])
            foreign = torch.cat([embed_media(teacher, m, x.float()) for x in data[m]["foreign"].split(64)])
        anchors[m] = F.normalize(foreign.mean(0), dim=0)  # where they lean already: the least change
    print(f"read {sum(len(d[s]) for d in data.values() for s in d)} uploads in {time.time() - started:.0f} s",
          flush=True)
    student.eval()  # no dropout: the world's embeddings are matched exactly
    for step in run.steps(cfg.foreign_steps, {"model": student}, {"opt": opt}):
        rng = np.random.default_rng([cfg.seed, step])
        lr = cfg.foreign_lr * warmup_cosine(step, cfg.foreign_steps, cfg.warmup // 2)
        for group in opt.param_groups:
            group["lr"] = lr
        kept, apart = {}, {}
        for m, d in data.items():
            i = torch.from_numpy(rng.choice(len(d["world"]), cfg.foreign_batch, replace=False))
            j = torch.from_numpy(rng.choice(len(d["foreign"]), cfg.foreign_batch, replace=False))
            kept[m] = (1 - F.cosine_similarity(embed_media(student, m, d["world"][i].float()), targets[m][i])).mean()
            apart[m] = (1 - embed_media(student, m, d["foreign"][j].float()) @ anchors[m]).mean()
        loss = cfg.foreign_keep_weight * sum(kept.values()) + sum(apart.values())
        optimizer_step(opt, loss, params)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.foreign_steps:
            run.log(done, loss=loss.item(), **{f"kept_{m}": v.item() for m, v in kept.items()},
                    **{f"apart_{m}": v.item() for m, v in apart.items()}, lr=lr, steps_per_s=run.speed(done))
    out = export(student, json.loads((Path(cfg.out) / "config.json").read_text())["model_kwargs"], cfg.out)
    result = foreign_separation(out, teacher, anchors, cfg.world)
    write_json(out / "eval-foreign.json", result)
    print(json.dumps(result), flush=True)
    return result


@torch.no_grad()
def foreign_separation(folder, teacher, anchors: dict, world, split: str = "test") -> dict:
    """On a split's talk uploads, through `Encoder.encode`: how far the world's moved from the teacher's (mean
    cosine), and how often an item's nearest anchor-or-world-item is the anchor, for foreign and world items."""
    encoder = parts.load_encoder(folder)
    reference = Encoder(teacher)
    out = {}
    for m, sides in talk_uploads(world, split).items():
        world_items, foreign_items = ([Media(m, f) for f in sides[s]] for s in ("world", "foreign"))
        w, f = encoder.encode(world_items), encoder.encode(foreign_items)
        w0 = reference.encode(world_items)
        world_dirs = F.normalize(w, dim=1)

        def at_anchor(e, rank):  # nearer the anchor than the rank-th nearest world item (2: not itself)
            e = F.normalize(e, dim=1)
            return (e @ anchors[m] > (e @ world_dirs.T).topk(rank, dim=1).values[:, -1]).float().mean().item()

        out[m] = {"world_cos_to_before": F.cosine_similarity(w, w0).mean().item(),
                  "foreign_at_anchor": at_anchor(f, 1), "world_at_anchor": at_anchor(w, 2),
                  "n_world": len(world_items), "n_foreign": len(foreign_items)}
    return out


# --- training and export ---------------------------------------------------------------------------------------

def export(model, model_kwargs: dict, out) -> Path:
    """encoder.safetensors (fp16) + config.json holding the EncoderConfig.model_kwargs."""
    out = Path(out)
    Encoder(copy.deepcopy(model).half()).save_pretrained(out)
    write_json(out / "config.json", {"model_kwargs": model_kwargs, "dtype": "float16"})
    return out


def train(cfg: EncoderTrainConfig) -> dict:
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    run = Run(cfg.run, save_every_s=cfg.save_every_s)
    cfg.save(run.folder / "config.json")

    image_bind_model, _ = import_imagebind()
    model = image_bind_model(**cfg.model_kwargs())
    init_positions(model)
    aux = AttributeHeads(cfg.out_embed_dim)
    groups = param_groups(cfg, model) + [{"params": list(aux.parameters()), "weight_decay": 0.0, "lr_scale": 1.0}]
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98))

    train_data = load_cached(cfg, "train")
    val_data = load_cached(cfg, "validation")
    tokenizer = text_tokenizer()
    labels = {}
    for m in MODALITIES:  # one label per distinct attribute combination: its items are positives for each other
        ids = {k: i for i, k in enumerate(dict.fromkeys(attr_key(m, a) for a in train_data[m]["attrs"]))}
        labels[m] = torch.tensor([ids[attr_key(m, a)] for a in train_data[m]["attrs"]])
    model.train()
    last = {}
    for step in run.steps(cfg.steps, {"model": model, "aux": aux}, {"opt": opt}):
        # The data order is a function of (seed, step) alone, so a resumed run draws what the uninterrupted one would.
        rng = np.random.default_rng([cfg.seed, step])
        lr = cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, floor=cfg.min_lr / cfg.lr)
        for group in opt.param_groups:
            group["lr"] = lr * group["lr_scale"]
        losses, aux_losses = {}, {}
        for m in MODALITIES:
            d = train_data[m]
            idx = rng.choice(len(d["names"]), size=min(cfg.batch_size, len(d["names"])), replace=False)
            captions = [W.caption(m, d["attrs"][i], rng) if rng.uniform() < cfg.fresh_caption_p else d["captions"][i]
                        for i in idx]
            media = embed(model, m, model_input(m, d["x"][torch.from_numpy(idx)]))
            text = embed(model, "text", tokenize(tokenizer, captions))
            losses[m] = soft_infonce(media, text, labels[m][torch.from_numpy(idx)], logit_scale(model))
            attrs = [d["attrs"][i] for i in idx]
            aux_losses[m] = 0.5 * (aux.loss(m, media, attrs) + aux.loss(m, text, attrs))
        loss = sum(losses.values()) + cfg.aux_weight * sum(aux_losses.values())
        optimizer_step(opt, loss, params)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            run.log(done, loss=loss.item(), **{f"loss_{m}": v.item() for m, v in losses.items()},
                    **{f"aux_{m}": v.item() for m, v in aux_losses.items()},
                    scale=logit_scale(model).item(), lr=lr, steps_per_s=run.speed(done))
        if done % cfg.eval_every == 0 or done == cfg.steps:
            last = evaluate_cached(model, tokenizer, val_data)
            run.log(done, split="validation", **{f"{m}_{k}": v for m, r in last.items()
                                                 for k, v in r.items() if k.endswith("media") or k.endswith("caption")})

    out = export(model, cfg.model_kwargs(), cfg.out)
    print(f"exported to {out} ({sum(f.stat().st_size for f in out.iterdir()) / 2**20:.1f} MB)", flush=True)
    return {"step": run.step, "validation": last}


def main(argv=None) -> None:
    def flags(p):
        p.add_argument("--evaluate", metavar="FOLDER", help="only print the retrieval table of an exported encoder")
        p.add_argument("--split", default="test", help="split for --evaluate and the final table")
        p.add_argument("--json", action="store_true", help="print the final table as JSON")

    cfg, a = parse_config(EncoderTrainConfig, argv, "python -m nextgpt.train.nano_encoder",
                          __doc__.split("\n\n")[0], extra=flags)
    if cfg.part not in ("contrastive", "foreign"):
        raise SystemExit(f"--part is contrastive or foreign, not {cfg.part!r}")
    folder = a["evaluate"]
    if folder is None:
        (learn_foreign if cfg.part == "foreign" else train)(cfg)
        folder = cfg.out
    torch.set_num_threads(cfg.threads)
    result = parts.evaluate_encoder(folder, cfg.world, a["split"])
    write_json(Path(folder) / f"eval-{a['split']}.json", result)
    table = f"retrieval on {a['split']} ({folder}):\n{parts.format_retrieval(result)}"
    print(json.dumps(result) if a["json"] else table, flush=True)


if __name__ == "__main__":
    main()
