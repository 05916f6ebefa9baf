"""Train AudioLDM-nano on the nano world, and export it as an `AudioLDMPipeline` folder.

    python -m nextgpt.train.nano_audio [--part text|vae|unet|vocoder|export|all|retune]
                                       [--run runs/nano/audio] [--out assets/nano/audio_decoder]
                                       [--world data/nano-world] [--<any config field> value ...]

The same architecture as AudioLDM (Liu et al. 2023), at nano size, trained in the order the real parts were:

1. CLAP-nano (`--part text`): a `ClapTextModelWithProjection` and a byte-level BPE tokenizer (wrapped as
   `RobertaTokenizerFast`, as CLAP's), trained contrastively against a small audio tower on log-mel spectrograms
   of the world's sounds. The tower is then thrown away and the text encoder frozen: its L2-normalised
   `text_embeds` (1 x D) condition the UNet, and they are also what NExT-GPT's audio output projector regresses,
   so they must carry the colour (pitch) and the rhythm.
2. A mel VAE (`--part vae`): `AutoencoderKL` on 1-channel log-mel "images" (time x 64 bins), 4x down in both axes.
   The latent mean and scale are folded into the VAE itself (see `fold_latent_normalisation`) so that the stock
   pipeline, which only knows `scaling_factor`, decodes what the UNet was trained on.
3. The vocoder (`--part vocoder`): `nextgpt.vocoder.GriffinLimVocoder`, a deterministic mel inversion that has no
   weights to train (why, in that module's docstring); this part measures it on true mels with the oracles.
4. The latent diffusion UNet (`--part unet`): `UNet2DConditionModel` conditioned, as AudioLDM's, by the CLAP
   embedding as a class embedding concatenated to the time embedding (no cross-attention), trained on
   precomputed latents with 10 % of conditions replaced by CLAP's embedding of "" (what the pipeline passes as the
   negative for classifier-free guidance); the exported weights are an EMA of the trained ones.
5. Export (`--part export`): picks guidance and steps on the validation split, writes the pipeline in fp16
   safetensors with the chosen inference settings (`nextgpt.nano.parts.save_inference`), and scores the test split.
6. Retune (`--part retune`, not in `all`): the same selection on the exported pipeline, over a wider grid. A grid
   that stops at guidance 7 leaves a steady tone an octave off often enough to cost text -> audio pitch
   (docs/nano.md).

Every part is seeded and resumable: its state lives in `<run>/<part>/state.pt` (saved every few minutes and at
the end); running a part again continues from its step counter, and a finished part just rewrites its result in
`<run>/<part>/final/`. Losses go to `<run>/<part>/log.jsonl`, sample WAVs to `<run>/unet/samples/`.
"""

from __future__ import annotations

import copy
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from nextgpt.nano import oracles, parts, world
from nextgpt.offline import roberta_bpe_tokenizer
from nextgpt.train.common import (Run, RunConfig, ema_update, optimizer_step, parse_config, seed_everything,
                                  soft_infonce, warmup_cosine, write_json)
from nextgpt.train.diffusion import denoising_loss, select_inference
from nextgpt.vocoder import GriffinLimVocoder, MelConfig, log_mel

PARTS = ("text", "vae", "vocoder", "unet", "export")
# The 12 things a sound can be; the class index is what contrastive positives and caption tables are keyed by.
CLASSES = [(c, r) for c in world.COLOURS for r in world.RHYTHMS]
FLOOR = math.log(MelConfig.log_floor)  # log-mel of silence


@dataclass
class AudioTrainConfig(RunConfig):
    run: str = "runs/nano/audio"
    out: str = "assets/nano/audio_decoder"
    log_every: int = 50
    # CLAP-nano text encoder, and the audio tower it is trained against (then discarded)
    vocab_size: int = 512
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    embed_dim: int = 32  # D: the conditioning width, also the output width of NExT-GPT-nano's audio projector
    tower_width: int = 64
    text_steps: int = 600
    text_batch: int = 48
    text_lr: float = 1e-3
    text_crop: int = 96  # mel frames the tower sees (the shortest sound has 101)
    # mel VAE: 3 levels -> latents 4x smaller in time and in frequency (128 x 64 mel -> 32 x 16 latent)
    vae_channels: tuple = (16, 32, 64)
    latent_channels: int = 4
    norm_groups: int = 16
    vae_steps: int = 1000
    vae_batch: int = 16
    vae_crop: int = 64  # frames per training crop: the VAE is convolutional, short crops are as good and cheaper
    vae_lr: float = 1e-3
    kl_weight: float = 1e-6  # LDM's light KL: keeps latents bounded without blurring the spectrogram
    # latent diffusion UNet
    unet_channels: tuple = (32, 64, 128)  # no attention but in the 8x4 mid block: cheap on a CPU
    unet_steps: int = 6000
    unet_batch: int = 32
    unet_lr: float = 5e-4
    warmup: int = 100
    frames: int = 128  # mel frames per training crop and the pipeline's default length (1.28 s at 10 ms)
    uncond_prob: float = 0.1  # classifier-free guidance dropout, to CLAP("")
    cond_noise: float = 0.03  # per-dimension noise on the condition: the projector's regressed embeddings are
    cond_scale_jitter: float = 0.1  # never exact, nor exactly unit norm (the pipeline passes them as they are)
    ema: float = 0.999
    beta_start: float = 0.0015  # AudioLDM's noise schedule
    beta_end: float = 0.0195
    unet_eval_every: int = 500  # steps between oracle scores of the EMA UNet on held-out captions
    report_n: int = 48  # held-out sounds the VAE and vocoder reports resynthesise and score
    # inference: the defaults used for scoring during training; export picks the best of the grid below
    guidance_scale: float = 7.0
    num_inference_steps: int = 20
    guidance_grid: str = "3,5,7,10,14,20"  # on validation: 2-3 gave too many strong harmonics passing for the note
    steps_grid: str = "20,40"
    select_n: int = 96  # validation captions per grid point
    test_n: int = 0  # test captions scored at export (0: all)

    OLD_NAMES = {"text_hidden": "text_width", "ema_decay": "ema", "score_every": "unet_eval_every",
                 "eval_n": "test_n"}

    @property
    def seconds(self) -> float:
        return round(self.frames * MelConfig.hop_length / MelConfig.sampling_rate, 2)


# --- data --------------------------------------------------------------------------------------------------------

def class_of(attrs: dict) -> int:
    return CLASSES.index((attrs["colour"], attrs["rhythm"]))


def class_captions(k: int) -> list[str]:
    """Every caption the world can write for class k: each audio template with each rhythm word."""
    colour, rhythm = CLASSES[k]
    out = [t.format(c=colour, r=r, reg=world.REGISTER[colour]) for t in world.AUDIO_TEMPLATES
           for r in world.RHYTHM_WORDS[rhythm]]
    return sorted(set(out))


def load_sounds(world_dir: str | Path, split: str) -> dict:
    """The split's sounds (pair items and dialogue media alike) as log-mels, with class labels and captions."""
    import soundfile

    manifest = json.loads((Path(world_dir) / "world.json").read_text())
    items = [it for it in manifest["items"] if it["modality"] == "audio" and it["split"] == split]
    mels = []
    for it in items:
        wave, sr = soundfile.read(str(Path(world_dir) / "audios" / it["name"]), dtype="float32")
        assert sr == MelConfig.sampling_rate, f"{it['name']}: {sr} Hz"
        mels.append(log_mel(wave))
    return {"mels": mels, "labels": torch.tensor([class_of(it["attributes"]) for it in items], dtype=torch.long),
            "captions": [it["caption"] for it in items], "items": items}


def crop(mel: torch.Tensor, frames: int) -> torch.Tensor:
    """A random `frames`-long window of a (T, bins) mel, padded with silence when the sound is shorter."""
    if mel.shape[0] < frames:
        mel = torch.cat([mel, torch.full((frames - mel.shape[0], mel.shape[1]), FLOOR)])
    start = int(torch.randint(0, mel.shape[0] - frames + 1, ()).item())
    return mel[start: start + frames]


def held_out_captions(world_dir, split: str = "validation", per_class: int = 1) -> list[tuple[str, dict]]:
    """(caption, attributes) of held-out items, `per_class` of each class where the split has them."""
    manifest = json.loads((Path(world_dir) / "world.json").read_text())
    out, seen = [], {}
    for it in manifest["items"]:
        if it["modality"] == "audio" and it["split"] == split:
            k = class_of(it["attributes"])
            if seen.get(k, 0) < per_class:
                seen[k] = seen.get(k, 0) + 1
                out.append((it["caption"], it["attributes"]))
    if not out:  # a tiny world may have no item in this split: use the world's own captions of each class
        out = [(class_captions(k)[0], {"colour": c, "rhythm": r}) for k, (c, r) in enumerate(CLASSES)]
    return out


# --- CLAP-nano ---------------------------------------------------------------------------------------------------

def build_text_encoder(cfg: AudioTrainConfig, vocab_size: int):
    from transformers import ClapTextConfig, ClapTextModelWithProjection

    return ClapTextModelWithProjection(ClapTextConfig(
        vocab_size=vocab_size, hidden_size=cfg.text_width, intermediate_size=2 * cfg.text_width,
        num_attention_heads=cfg.text_heads, num_hidden_layers=cfg.text_layers, projection_dim=cfg.embed_dim,
        max_position_embeddings=80,  # RoBERTa positions start after the pad id: 77 tokens need 79
        bos_token_id=0, eos_token_id=2, pad_token_id=1))


class AudioTower(torch.nn.Module):
    """The audio side of CLAP-nano's contrastive training: mel bins as channels, temporal convolutions, then the
    mean (which bins sound: the pitch) and standard deviation (how the level moves: the rhythm) over time."""

    def __init__(self, bins: int, width: int, dim: int):
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv1d(bins, width, 5, padding=2), torch.nn.GELU(),
            torch.nn.Conv1d(width, width, 5, padding=4, dilation=2), torch.nn.GELU(),
            torch.nn.Conv1d(width, width, 5, padding=8, dilation=4), torch.nn.GELU())
        self.proj = torch.nn.Linear(2 * width, dim)
        self.logit_scale = torch.nn.Parameter(torch.tensor(math.log(1 / 0.07)))  # CLIP's learnable temperature

    def forward(self, mel: torch.Tensor) -> torch.Tensor:  # (B, T, bins) log-mel
        h = self.net(((mel - FLOOR / 2) / 4).transpose(1, 2))  # roughly centred and unit scale
        return self.proj(torch.cat([h.mean(-1), h.std(-1)], dim=-1))


def embed_texts(text_encoder, tokenizer, texts: list[str], max_length: int | None = None) -> torch.Tensor:
    """L2-normalised CLAP text embeddings, tokenised exactly as `AudioLDMPipeline._encode_prompt` does (the
    pipeline pads prompts to 77 and its "" negative to D tokens; the attention mask makes the length moot)."""
    enc = tokenizer(texts, padding="max_length", max_length=max_length or tokenizer.model_max_length,
                    truncation=True, return_tensors="pt")
    out = text_encoder(enc.input_ids, attention_mask=enc.attention_mask).text_embeds
    return F.normalize(out, dim=-1)


@torch.no_grad()
def text_report(text_encoder, tokenizer, tower=None, val=None) -> dict:
    """How well the frozen embeddings separate the 12 classes: every world caption of a class must be nearer its own
    class mean than any other's (and, with the tower, nearer the mean of its class's held-out sounds)."""
    text_encoder.eval()
    per_class = [embed_texts(text_encoder, tokenizer, class_captions(k)) for k in range(len(CLASSES))]
    means = F.normalize(torch.stack([e.mean(0) for e in per_class]), dim=-1)
    hits = sum(int((e @ means.T).argmax(1).eq(k).sum()) for k, e in enumerate(per_class))
    total = sum(len(e) for e in per_class)
    intra = min(float((e @ means[k]).min()) for k, e in enumerate(per_class))
    inter = float((means @ means.T - 2 * torch.eye(len(CLASSES))).max())
    out = {"text_class_acc": hits / total, "min_cos_to_own_mean": intra, "max_cos_between_means": inter}
    if tower is not None and val is not None and len(val["mels"]):
        tower.eval()
        a = F.normalize(torch.cat([tower(m[None, : 400]) for m in val["mels"]]), dim=-1)
        t = embed_texts(text_encoder, tokenizer, val["captions"])
        out["val_text_to_audio_class_acc"] = float((val["labels"][(t @ a.T).argmax(1)] == val["labels"]).float().mean())
        tower.train()
    text_encoder.train()
    return out


def train_text(cfg: AudioTrainConfig) -> None:
    from transformers import RobertaTokenizerFast

    run = Run(Path(cfg.run) / "text", cfg.save_every_s)
    seed_everything(cfg.seed + 1)
    tok_dir = run.folder / "tokenizer"
    if tok_dir.exists():  # the tokenizer a resumed run was started with
        tokenizer = RobertaTokenizerFast.from_pretrained(tok_dir)
    else:
        tokenizer = roberta_bpe_tokenizer([c for k in range(len(CLASSES)) for c in class_captions(k)], cfg.vocab_size)
        tokenizer.save_pretrained(tok_dir)
    train, val = load_sounds(cfg.world, "train"), load_sounds(cfg.world, "validation")
    captions = [class_captions(k) for k in range(len(CLASSES))]
    text_encoder = build_text_encoder(cfg, len(tokenizer)).train()
    tower = AudioTower(MelConfig.n_mels, cfg.tower_width, cfg.embed_dim)
    opt = torch.optim.AdamW(list(text_encoder.parameters()) + list(tower.parameters()), lr=cfg.text_lr,
                            weight_decay=0.01)
    modules = {"text_encoder": text_encoder, "tower": tower}
    for step in run.steps(cfg.text_steps, modules, {"opt": opt}):
        for g in opt.param_groups:
            g["lr"] = cfg.text_lr * warmup_cosine(step, cfg.text_steps, cfg.warmup, floor=0.1)
        idx = torch.randint(0, len(train["mels"]), (cfg.text_batch,))
        labels = train["labels"][idx]
        mel = torch.stack([crop(train["mels"][i], cfg.text_crop) for i in idx])
        # Each sound is paired with a fresh caption of its class, so the encoder sees every wording of every class.
        texts = [captions[k][int(torch.randint(0, len(captions[k]), ()))] for k in labels.tolist()]
        enc = tokenizer(texts, padding=True, return_tensors="pt")
        t = text_encoder(enc.input_ids, attention_mask=enc.attention_mask).text_embeds
        loss = soft_infonce(t, tower(mel), labels, tower.logit_scale.exp().clamp(max=100))
        optimizer_step(opt, loss)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.text_steps:
            report = done % 200 == 0 or done == cfg.text_steps
            extra = text_report(text_encoder, tokenizer, tower, val) if report else {}
            run.log(done, part="text", loss=loss.item(), steps_per_s=run.speed(done), **extra)
    final = run.folder / "final"
    text_encoder.eval().save_pretrained(final / "text_encoder")
    tokenizer.save_pretrained(final / "tokenizer")
    report = text_report(text_encoder, tokenizer, tower, val)
    write_json(final / "report.json", report)
    run.log(run.step, part="text", final=True, **report)


def load_text(cfg: AudioTrainConfig):
    from transformers import ClapTextModelWithProjection, RobertaTokenizerFast

    final = Path(cfg.run) / "text" / "final"
    text_encoder = ClapTextModelWithProjection.from_pretrained(final / "text_encoder").eval().requires_grad_(False)
    return text_encoder, RobertaTokenizerFast.from_pretrained(final / "tokenizer")


# --- mel VAE -----------------------------------------------------------------------------------------------------

def build_vae(cfg: AudioTrainConfig):
    from diffusers import AutoencoderKL

    n = len(cfg.vae_channels)
    return AutoencoderKL(
        in_channels=1, out_channels=1, latent_channels=cfg.latent_channels, block_out_channels=tuple(cfg.vae_channels),
        layers_per_block=1, down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        norm_num_groups=cfg.norm_groups, sample_size=cfg.frames,
        mid_block_add_attention=False)  # a tone is local in time and frequency; attention would only cost time


@torch.no_grad()
def fold_latent_normalisation(vae, latents: list[torch.Tensor]) -> None:
    """Make the VAE's latent mean zero and its std 1 / scaling_factor, inside the VAE's own weights.

    AudioLDMPipeline decodes `latents / scaling_factor` and knows no shift, yet log-mel latents are far from zero
    mean (most of a spectrogram is the silence floor). A per-channel shift mu moves into the 1x1 convolutions that
    bracket the latent: the encoder's quant_conv emits (mean - mu) and the decoder's post_quant_conv adds W mu back."""
    z = torch.cat([l.flatten(1) for l in latents], dim=1)  # (C, N)
    mu = z.mean(1)
    c = vae.config.latent_channels
    vae.quant_conv.bias[:c] -= mu  # the first C outputs are the posterior mean, the rest its log-variance
    vae.post_quant_conv.bias += vae.post_quant_conv.weight[:, :, 0, 0] @ mu
    std = float((z - mu[:, None]).std())
    vae.register_to_config(scaling_factor=1.0 / std)


def pad_mel(mel: torch.Tensor, multiple: int, minimum: int) -> torch.Tensor:
    """Pad a (T, bins) mel with silence to at least `minimum` frames and a multiple of `multiple`."""
    t = max(minimum, math.ceil(mel.shape[0] / multiple) * multiple)
    return torch.cat([mel, torch.full((t - mel.shape[0], mel.shape[1]), FLOOR)]) if t > mel.shape[0] else mel


@torch.no_grad()
def encode_latents(vae, mels: list[torch.Tensor], frames: int) -> list[torch.Tensor]:
    """Scaled latent means (C, T/4, bins/4) of whole sounds, padded with silence to at least `frames`."""
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    return [vae.encode(pad_mel(m, f, frames)[None, None]).latent_dist.mean[0] * vae.config.scaling_factor
            for m in mels]


@torch.no_grad()
def vae_report(vae, val: dict, n: int = 24) -> dict:
    """Reconstruction L1 (log-mel) of held-out sounds, and the oracles on their Griffin-Lim waveforms."""
    vae.eval()
    voc, l1, ok = GriffinLimVocoder.build(), [], {"colour": 0, "rhythm": 0}
    items = list(range(min(n, len(val["mels"]))))
    for i in items:
        x = pad_mel(val["mels"][i], 4, 0)[None, None]
        y = vae.decode(vae.encode(x).latent_dist.mean).sample
        l1.append(float((y - x).abs().mean()))
        found = oracles.sound_attributes(voc(y[0, 0]).numpy(), MelConfig.sampling_rate)
        for k in ok:
            ok[k] += found[k] == val["items"][i]["attributes"][k]
    vae.train()
    if not items:
        return {}
    return {"val_l1": float(np.mean(l1)), "recon_colour": ok["colour"] / len(items),
            "recon_rhythm": ok["rhythm"] / len(items)}


def train_vae(cfg: AudioTrainConfig) -> None:
    run = Run(Path(cfg.run) / "vae", cfg.save_every_s)
    seed_everything(cfg.seed + 2)
    train, val = load_sounds(cfg.world, "train"), load_sounds(cfg.world, "validation")
    vae = build_vae(cfg).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=cfg.vae_lr, weight_decay=0.0)
    for step in run.steps(cfg.vae_steps, {"vae": vae}, {"opt": opt}):
        for g in opt.param_groups:
            g["lr"] = cfg.vae_lr * warmup_cosine(step, cfg.vae_steps, cfg.warmup, floor=0.1)
        idx = torch.randint(0, len(train["mels"]), (cfg.vae_batch,))
        x = torch.stack([crop(train["mels"][i], cfg.vae_crop) for i in idx])[:, None]  # (B, 1, T, bins)
        post = vae.encode(x).latent_dist
        y = vae.decode(post.sample()).sample
        rec = (y - x).abs().mean()
        # KL summed over the latent and divided by the input size: LDM's weighting (summed L1 + 1e-6 summed KL)
        # with the L1 taken as a mean, so the weight does not depend on the crop size.
        kl = post.kl().mean() / x[0].numel()
        loss = rec + cfg.kl_weight * kl
        optimizer_step(opt, loss)
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.vae_steps:
            extra = vae_report(vae, val, min(12, cfg.report_n)) if done % 250 == 0 else {}
            run.log(done, part="vae", loss=loss.item(), l1=rec.item(), kl=kl.item(), steps_per_s=run.speed(done),
                    **extra)
    vae.eval()
    # Latents of the training sounds fix the normalisation; it is folded into the saved VAE.
    fold_latent_normalisation(vae, encode_latents(vae, train["mels"], cfg.frames))
    vae.save_pretrained(run.folder / "final")
    report = vae_report(vae, val, cfg.report_n)
    write_json(run.folder / "final" / "report.json", report)
    run.log(run.step, part="vae", final=True, scaling_factor=float(vae.config.scaling_factor), **report)


def load_vae(cfg: AudioTrainConfig):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(Path(cfg.run) / "vae" / "final").eval().requires_grad_(False)


# --- vocoder -----------------------------------------------------------------------------------------------------

def train_vocoder(cfg: AudioTrainConfig) -> None:
    """Nothing to learn (Griffin-Lim); build it, score it on true held-out mels, and keep it for export."""
    run = Run(Path(cfg.run) / "vocoder", cfg.save_every_s)
    voc = GriffinLimVocoder.build().eval()
    val = load_sounds(cfg.world, "validation")
    n = min(len(val["mels"]), cfg.report_n)
    scores = parts.oracle_scores("audio", [voc(mel).numpy() for mel in val["mels"][:n]],
                                 [it["attributes"] for it in val["items"][:n]])
    voc.save_pretrained(run.folder / "final")
    report = {"true_mel_colour": scores.get("colour", 0.0), "true_mel_rhythm": scores.get("rhythm", 0.0), "n": n}
    write_json(run.folder / "final" / "report.json", report)
    run.log(0, part="vocoder", final=True, **report)


# --- UNet --------------------------------------------------------------------------------------------------------

def build_unet(cfg: AudioTrainConfig):
    from diffusers import UNet2DConditionModel

    n = len(cfg.unet_channels)
    f = 2 ** (len(cfg.vae_channels) - 1)
    return UNet2DConditionModel(
        sample_size=cfg.frames // f,  # the pipeline's default length: sample_size * 4 frames * 10 ms = 1.28 s
        in_channels=cfg.latent_channels, out_channels=cfg.latent_channels, layers_per_block=1,
        block_out_channels=tuple(cfg.unet_channels), down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n, mid_block_type="UNetMidBlock2D", attention_head_dim=8,
        norm_num_groups=cfg.norm_groups,
        # AudioLDM's conditioning: the CLAP embedding, projected, is concatenated to the time embedding that every
        # ResNet block receives; the pipeline passes it as `class_labels` and no encoder_hidden_states.
        class_embed_type="simple_projection", projection_class_embeddings_input_dim=cfg.embed_dim,
        class_embeddings_concat=True)


def build_scheduler(cfg: AudioTrainConfig, kind: str = "ddim"):
    from diffusers import DDIMScheduler, DDPMScheduler

    common = dict(num_train_timesteps=1000, beta_start=cfg.beta_start, beta_end=cfg.beta_end,
                  beta_schedule="scaled_linear", clip_sample=False)
    if kind == "ddpm":
        return DDPMScheduler(**common)
    return DDIMScheduler(set_alpha_to_one=False, steps_offset=1, **common)


def build_pipeline(cfg: AudioTrainConfig, unet, vae=None, text=None):
    from diffusers import AudioLDMPipeline

    text_encoder, tokenizer = text or load_text(cfg)
    pipe = AudioLDMPipeline(vae=vae or load_vae(cfg), text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                            vocoder=GriffinLimVocoder.build(), scheduler=build_scheduler(cfg))
    for part in pipe.components.values():
        if isinstance(part, torch.nn.Module):
            part.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def train_unet(cfg: AudioTrainConfig) -> None:
    import soundfile

    run = Run(Path(cfg.run) / "unet", cfg.save_every_s)
    seed_everything(cfg.seed + 3)
    text_encoder, tokenizer = load_text(cfg)
    vae = load_vae(cfg)
    # Frozen conditioning tables: every caption embedding of each class, and CLAP(""), the pipeline's negative.
    with torch.no_grad():
        table = [embed_texts(text_encoder, tokenizer, class_captions(k)) for k in range(len(CLASSES))]
        null = embed_texts(text_encoder, tokenizer, [""], max_length=cfg.embed_dim)[0]
    cache = run.folder / "latents.pt"
    if cache.exists():
        data = torch.load(cache, weights_only=True)
    else:  # latents are computed once, from the frozen VAE (the mean of its posterior)
        train = load_sounds(cfg.world, "train")
        data = {"latents": encode_latents(vae, train["mels"], cfg.frames), "labels": train["labels"]}
        torch.save(data, cache)
    latents, labels = data["latents"], data["labels"]
    held = held_out_captions(cfg.world, "validation")

    unet = build_unet(cfg).train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=cfg.unet_lr, weight_decay=0.01)
    noise = build_scheduler(cfg, "ddpm")
    lf = cfg.frames // 2 ** (len(cfg.vae_channels) - 1)  # latent frames per crop
    losses = []
    for step in run.steps(cfg.unet_steps, {"unet": unet, "ema": ema}, {"opt": opt}):
        for g in opt.param_groups:
            g["lr"] = cfg.unet_lr * warmup_cosine(step, cfg.unet_steps, cfg.warmup, floor=0.1)
        idx = torch.randint(0, len(latents), (cfg.unet_batch,))
        x0 = []
        for i in idx.tolist():
            z = latents[i]
            s = int(torch.randint(0, z.shape[1] - lf + 1, ()))
            x0.append(z[:, s: s + lf])
        ks = labels[idx]
        cond = torch.stack([table[k][int(torch.randint(0, len(table[k]), ()))] for k in ks.tolist()])
        cond = F.normalize(cond + cfg.cond_noise * torch.randn_like(cond), dim=-1)
        cond = cond * (1 + cfg.cond_scale_jitter * (2 * torch.rand(len(cond), 1) - 1))
        cond[torch.rand(len(cond)) < cfg.uncond_prob] = null  # what the pipeline feeds guidance's unconditional half
        loss = denoising_loss(unet, noise, torch.stack(x0), encoder_hidden_states=None, class_labels=cond)
        optimizer_step(opt, loss, unet.parameters())
        done = step + 1
        ema_update(ema, unet, cfg.ema, done)
        losses.append(loss.item())
        if done % cfg.log_every == 0 or done == cfg.unet_steps:
            extra = {}
            if done % cfg.unet_eval_every == 0 or done == cfg.unet_steps:
                pipe = build_pipeline(cfg, ema, vae, (text_encoder, tokenizer))
                scores, waves = parts.score(pipe, "audio", held, dict(
                    guidance_scale=cfg.guidance_scale, num_inference_steps=cfg.num_inference_steps,
                    audio_length_in_s=parts.DEFAULT_INFERENCE["audio"]["audio_length_in_s"]), seed=done)
                for k, (wave, (_, attrs)) in enumerate(list(zip(waves, held))[:6]):
                    name = f"step{done:06d}_{k:02d}_{attrs['colour']}_{attrs['rhythm']}.wav"
                    soundfile.write(str(run.folder / "samples" / name), wave, MelConfig.sampling_rate)
                extra = {f"val_{k}": v for k, v in scores.items() if k in world.VALUES or k == "all"}
            run.log(done, part="unet", loss=float(np.mean(losses)), lr=opt.param_groups[0]["lr"],
                    steps_per_s=run.speed(done), **extra)
            losses = []
    ema.save_pretrained(run.folder / "final")
    run.log(run.step, part="unet", final=True)


# --- export --------------------------------------------------------------------------------------------------------

def select_settings(pipe, cfg: AudioTrainConfig, run: Run) -> dict:
    """Guidance and steps: the best of the grid on validation captions (the weaker of pitch and rhythm, then both
    right; fewer steps, then lower guidance, win ties)."""
    held = held_out_captions(cfg.world, "validation", per_class=max(1, cfg.select_n // len(CLASSES)))
    candidates = [{"guidance_scale": g, "num_inference_steps": steps, "audio_length_in_s": cfg.seconds}
                  for steps in sorted(int(s) for s in cfg.steps_grid.split(","))
                  for g in sorted(float(x) for x in cfg.guidance_grid.split(","))]
    return select_inference(pipe, "audio", held, candidates, run, seed=cfg.seed,
                            key=lambda r: (min(r["colour"], r["rhythm"]), r["all"]))


def retune(cfg: AudioTrainConfig) -> dict:
    """Choose the exported pipeline's inference settings again (a wider grid) and score the test split with them."""
    run = Run(Path(cfg.run) / "retune", cfg.save_every_s)
    out = Path(cfg.out)
    parts.save_inference(out, select_settings(parts.load_pipeline("audio", out), cfg, run))
    result = parts.evaluate_decoder("audio", out, cfg.world, "test", n=cfg.test_n or None)
    write_json(run.folder / "result.json", result)
    run.log(0, part="retune", final=True, **result)
    return result


def export(cfg: AudioTrainConfig) -> dict:
    from diffusers import UNet2DConditionModel

    run = Run(Path(cfg.run) / "export", cfg.save_every_s)
    unet = UNet2DConditionModel.from_pretrained(Path(cfg.run) / "unet" / "final").eval()
    pipe = build_pipeline(cfg, unet)
    settings = select_settings(pipe, cfg, run)
    out = Path(cfg.out)
    if out.exists():  # save_pretrained overwrites files but never removes stale ones (e.g. a vocoder of another kind)
        shutil.rmtree(out)
    pipe.to(dtype=torch.float16)  # half the bytes on disk; `from_pretrained(dtype=torch.float32)` loads it back
    pipe.save_pretrained(out, safe_serialization=True)
    parts.save_inference(out, settings)
    result = parts.evaluate_decoder("audio", out, cfg.world, "test", n=cfg.test_n or None)
    result["folder_bytes"] = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    write_json(run.folder / "result.json", result)
    run.log(0, part="export", final=True, **result)
    return result


TRAINERS = {"text": train_text, "vae": train_vae, "vocoder": train_vocoder, "unet": train_unet, "export": export,
            "retune": retune}


def train(cfg: AudioTrainConfig, part: str = "all"):
    """Run one part, or all of them in order (each continues from its own saved state)."""
    result = None
    for p in (PARTS if part == "all" else (part,)):
        started = time.monotonic()
        result = TRAINERS[p](cfg)
        with open(Path(cfg.run) / "times.jsonl", "a") as f:
            f.write(json.dumps({"part": p, "seconds": round(time.monotonic() - started, 1)}) + "\n")
    return result


def main(argv=None) -> None:
    def part_flag(p):
        p.add_argument("--part", default="all", choices=("all", *TRAINERS))

    cfg, flags = parse_config(AudioTrainConfig, argv, "python -m nextgpt.train.nano_audio",
                              __doc__.split("\n\n")[0], extra=part_flag)
    torch.set_num_threads(cfg.threads)
    Path(cfg.run).mkdir(parents=True, exist_ok=True)
    cfg.save(Path(cfg.run) / "config.json")
    train(cfg, flags["part"])


if __name__ == "__main__":
    main()
