"""Train Zeroscope-nano: a `UNet3DConditionModel` text-to-video model, run through the stock `TextToVideoSDPipeline`.

    python -m nextgpt.train.nano_video [--part unet|export|all] [--run runs/nano/video]
                                       [--out assets/nano/video_decoder] [--image-decoder assets/nano/image_decoder]
    python -m nextgpt.train.nano_video --part retune [--out FOLDER]         # guidance chosen again, on validation
    python -m nextgpt.train.nano_video --eval [--out FOLDER] [--n N]      # oracle scores of an exported pipeline

It reuses SD-nano (exported by `nano_image.py` first): the frozen CLIP-nano text encoder and tokenizer (NExT-GPT nano
is one world, so both decoders read the same conditioning) and the frame VAE, trained on video frames as well as
stills. Read it top to bottom: config, the UNet, training, export, retune.

Why it looks like this
----------------------
* ModelScope / Zeroscope were initialised from Stable Diffusion's UNet and then learned the temporal layers on
  video. So does this: the 3D UNet has the image UNet's exact block layout, and every spatial weight (convs,
  resnets, spatial transformers) starts from SD-nano's; the temporal convs start as the identity (diffusers
  zero-initialises their last conv) and the temporal attention layers are new. It draws coloured shapes from the
  first step and only has to learn to move them.
* Attention stays off the 16x16 level (spatial attention over the largest latents dominates the time);
  `transformer_in`, the temporal attention every UNet3D has at its input, runs over 8 frames per pixel.
* The world's videos are 8 frames at 64x64; the VAE encodes each frame to 16x16x4 and the latents (unit variance,
  the normalisation is folded into the VAE) are precomputed once. Direction is only in the frame order: the
  temporal convolutions (kernel 3 over time, zero-padded at the ends) are what tell the first frame from the last.
* Classifier-free guidance dropout, EMA and the DDIM sampler as in the image part.
* Unlike the image part, zero terminal SNR with v-prediction (Lin et al. 2024) and DDIM "trailing" spacing: with
  SD's schedule the noisiest training input still holds 7 % of the video, so the model read the direction of
  motion from it instead of from the caption, and drew it with a random sign from pure noise.
* `--part retune` chooses the guidance again on validation captions: at 5 a "circle" came out as a rounded diamond
  that the oracle reads as a square; lower is rounder (docs/nano.md).
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nextgpt.nano import parts
from nextgpt.nano import world as W
from nextgpt.train.common import (Run, RunConfig, ema_update, load_state, optimizer_step, parse_config,
                                  seed_everything, warmup_cosine)
from nextgpt.train.diffusion import (TextCache, caption_batch_loss, encode_means, eval_flags, load_media, record,
                                     run_parts, save_fp16, save_grid, sd_schedule, select_inference)


@dataclass
class VideoTrainConfig(RunConfig):
    run: str = "runs/nano/video"
    out: str = "assets/nano/video_decoder"
    image_decoder: str = "assets/nano/image_decoder"  # text encoder, tokenizer, VAE and the UNet to start from
    cache: str = "runs/nano/cache"
    part: str = "all"
    log_every: int = 10
    max_minutes: float = 85.0
    fresh_caption_p: float = 0.5
    init_from_image: bool = True
    # a continuation: start from another run's state.pt (its EMA weights) or an exported pipeline folder
    init_state: str = ""
    unet_heads: int = 4  # must match the image UNet for the spatial weights to carry over
    unet_steps: int = 1500
    unet_batch: int = 8  # videos (x 8 frames) per step
    unet_lr: float = 2e-4  # the spatial layers, which start trained
    temporal_lr: float = 1e-3  # the new temporal layers, which have to learn motion (and its sign) from scratch
    warmup: int = 50
    uncond_prob: float = 0.1
    prediction_type: str = "v_prediction"
    zero_terminal_snr: bool = True
    ema: float = 0.995  # a short run: average over its last ~200 steps
    unet_eval_every: int = 250
    eval_n: int = 16
    # inference: the export's first settings (and the samples' while training); retune chooses the guidance again
    guidance_scale: float = 5.0
    num_inference_steps: int = 20
    guidance_grid: str = "2,3,4,5"
    select_n: int = 64  # validation captions for retune

    OLD_NAMES = {"unet_warmup": "warmup", "uncond_p": "uncond_prob", "guidance": "guidance_scale",
                 "steps": "num_inference_steps"}

    @property
    def inference(self) -> dict:
        return {"guidance_scale": self.guidance_scale, "num_inference_steps": self.num_inference_steps}


def video_latents(vae, videos: np.ndarray, batch: int = 16) -> torch.Tensor:
    """uint8 (N, T, 64, 64, 3) -> (N, 4, T, 16, 16) latent means, the layout UNet3DConditionModel takes."""
    n, t = videos.shape[:2]
    lat = encode_means(vae, videos.reshape(n * t, *videos.shape[2:]), batch=batch * t)
    return lat.reshape(n, t, *lat.shape[1:]).transpose(1, 2).contiguous()


# --- the UNet --------------------------------------------------------------------------------------------------

def build_unet3d(image_unet_config: dict, heads: int):
    """The image UNet's layout with 3D blocks (temporal convs and attention added to every block)."""
    from diffusers import UNet3DConditionModel

    c = image_unet_config
    n = len(c["block_out_channels"])
    return UNet3DConditionModel(
        sample_size=c["sample_size"], in_channels=4, out_channels=4, layers_per_block=c["layers_per_block"],
        block_out_channels=tuple(c["block_out_channels"]),
        down_block_types=("DownBlock3D",) + ("CrossAttnDownBlock3D",) * (n - 1),
        up_block_types=("CrossAttnUpBlock3D",) * (n - 1) + ("UpBlock3D",),
        cross_attention_dim=c["cross_attention_dim"], attention_head_dim=heads, norm_num_groups=c["norm_num_groups"])


@torch.no_grad()
def init_from_image_unet(unet3d, unet2d) -> int:
    """Copy every weight the two share (by name); 1x1-conv projections become the 3D transformer's linear ones."""
    own = unet3d.state_dict()
    copied = {}
    for k, v in unet2d.state_dict().items():
        if k in own:
            copied[k] = v.reshape(own[k].shape) if v.numel() == own[k].numel() else own[k]
    unet3d.load_state_dict(copied, strict=False)
    return len(copied)


TEMPORAL = ("temp_convs", "temp_attentions", "transformer_in")  # parameter names of the temporal layers


def no_dropout(module) -> None:
    # The temporal convs carry dropout 0.1: on a few thousand videos it only slows learning the motion.
    for m in module.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0


def schedule(cfg: VideoTrainConfig) -> dict:
    return dict(**sd_schedule(), prediction_type=cfg.prediction_type, rescale_betas_zero_snr=cfg.zero_terminal_snr)


def build_pipeline(cfg: VideoTrainConfig, text_encoder, tokenizer, vae, unet):
    """The pipeline: DDIM over the training schedule, "trailing" spacing so that sampling starts at the last
    (zero-SNR) timestep."""
    from diffusers import DDIMScheduler, TextToVideoSDPipeline

    scheduler = DDIMScheduler(clip_sample=False, set_alpha_to_one=False, timestep_spacing="trailing", **schedule(cfg))
    pipe = TextToVideoSDPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                                 scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def load_image_parts(folder):
    """Text encoder, tokenizer, VAE and UNet of the exported image pipeline, in float32 and frozen."""
    pipe = parts.load_pipeline("image", folder)
    for m in (pipe.text_encoder, pipe.vae, pipe.unet):
        m.eval().requires_grad_(False)
    return pipe.text_encoder, pipe.tokenizer, pipe.vae, pipe.unet


def initial_weights(path: str) -> dict:
    """The UNet weights a continuation starts from: a run's state.pt (its EMA) or an exported pipeline's unet/."""
    if Path(path).is_dir():
        from diffusers import UNet3DConditionModel

        unet = UNet3DConditionModel.from_pretrained(Path(path) / "unet", dtype=torch.float32)
        return unet.state_dict()
    return load_state(path)["modules"]["ema"]


def train_unet(cfg: VideoTrainConfig) -> Path:
    from diffusers import DDPMScheduler

    run = Run(Path(cfg.run) / "unet", cfg.save_every_s)
    seed_everything(cfg.seed + 4)
    text_encoder, tokenizer, vae, image_unet = load_image_parts(cfg.image_decoder)
    vid, items = load_media(cfg.world, cfg.cache, "video", "train")
    latents_path = run.folder / "latents.pt"
    if latents_path.exists():
        latents = torch.load(latents_path, weights_only=True)
    else:
        latents = video_latents(vae, vid)
        torch.save(latents, latents_path)
    _, val_items = load_media(cfg.world, cfg.cache, "video", "validation")
    val_prompts = [(it["caption"], it["attributes"]) for it in val_items[: cfg.eval_n]]
    cache = TextCache(tokenizer, text_encoder)
    unet = build_unet3d(dict(image_unet.config), cfg.unet_heads)
    if cfg.init_from_image:
        print(f"{init_from_image_unet(unet, image_unet)} tensors copied from the image UNet", flush=True)
    if cfg.init_state:
        unet.load_state_dict(initial_weights(cfg.init_state))
    no_dropout(unet)
    ema = copy.deepcopy(unet).requires_grad_(False)
    noise = DDPMScheduler(**schedule(cfg))
    # The spatial layers start trained (from SD-nano), the temporal ones new: they get a higher learning rate.
    temporal = [p for n, p in unet.named_parameters() if any(k in n for k in TEMPORAL)]
    spatial = [p for n, p in unet.named_parameters() if not any(k in n for k in TEMPORAL)]
    opt = torch.optim.AdamW([{"params": spatial, "base_lr": cfg.unet_lr},
                             {"params": temporal, "base_lr": cfg.temporal_lr}], weight_decay=0.01)
    print(f"unet3d: {sum(p.numel() for p in unet.parameters()) / 1e6:.2f} M params, {len(latents)} videos", flush=True)
    for step in run.steps(cfg.unet_steps, {"unet": unet, "ema": ema}, {"opt": opt}, cfg.max_minutes):
        scale = warmup_cosine(step, cfg.unet_steps, cfg.warmup, floor=0.1, decay_from_start=True)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * scale
        loss = caption_batch_loss(unet, noise, latents, items, cache, cfg, np.random.default_rng([cfg.seed, 5, step]))
        optimizer_step(opt, loss, unet.parameters())
        done_steps = step + 1
        ema_update(ema, unet, cfg.ema, done_steps)
        if done_steps % cfg.log_every == 0:
            run.log(done_steps, part="video", loss=loss.item(), lr=cfg.unet_lr * scale,
                    steps_per_s=run.speed(done_steps), train_min=run.minutes())
        if (done_steps % cfg.unet_eval_every == 0 or done_steps == cfg.unet_steps) and val_prompts:
            pipe = build_pipeline(cfg, text_encoder, tokenizer, vae, ema)
            scores, videos = parts.score(pipe, "video", val_prompts, cfg.inference, seed=cfg.seed)
            # one row per video: its 8 frames
            save_grid(run.folder / "samples" / f"samples_{done_steps:06d}.png",
                      np.concatenate(videos[:8]), cols=W.VIDEO_FRAMES)
            run.log(done_steps, part="video", **{f"val_{k}": v for k, v in scores.items()
                                                 if k in W.VALUES or k == "all"})
    return run.state_path


# --- export and retune -------------------------------------------------------------------------------------------

def export(cfg: VideoTrainConfig) -> Path:
    text_encoder, tokenizer, vae, image_unet = load_image_parts(cfg.image_decoder)
    unet = build_unet3d(dict(image_unet.config), cfg.unet_heads)
    state = load_state(Path(cfg.run) / "unet" / "state.pt")
    unet.load_state_dict(state["modules"]["ema"])
    save_fp16(build_pipeline(cfg, text_encoder, tokenizer, vae, unet.eval()), cfg.out)
    parts.save_inference(cfg.out, cfg.inference)
    record(cfg.out, trained_steps=state["step"], train_minutes=round(state["extra"].get("spent_s", 0) / 60, 1),
           **cfg.inference, config=dataclasses.asdict(cfg))
    return Path(cfg.out)


def retune(cfg: VideoTrainConfig) -> dict:
    """Choose the exported pipeline's guidance again on validation captions (all attributes right; the lower
    guidance wins ties), save it with the pipeline, and score the test split with it."""
    run = Run(Path(cfg.run) / "retune", cfg.save_every_s)
    prompts = parts.held_out(cfg.world, "video", "validation", cfg.select_n)
    candidates = [{"guidance_scale": g, "num_inference_steps": cfg.num_inference_steps}
                  for g in sorted(float(x) for x in cfg.guidance_grid.split(","))]
    parts.save_inference(cfg.out, select_inference(parts.load_pipeline("video", cfg.out), "video", prompts,
                                                   candidates, run, seed=cfg.seed))
    result = parts.evaluate_decoder("video", cfg.out, cfg.world, "test")
    record(cfg.out, retune=result)
    run.log(0, part="retune", final=True, **result)
    return result


def main(argv=None) -> None:
    cfg, flags = parse_config(VideoTrainConfig, argv, "python -m nextgpt.train.nano_video", __doc__.split("\n\n")[0],
                              extra=eval_flags)
    if cfg.part == "retune":
        torch.set_num_threads(cfg.threads)
        print(json.dumps(retune(cfg), indent=1))
        return
    run_parts("video", cfg, flags, {"unet": train_unet}, export)


if __name__ == "__main__":
    main()
