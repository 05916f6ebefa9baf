"""The "decode" stage: frozen diffusers pipelines fed by the output projectors (`render.py` writes their output).

NExT-GPT conditions each decoder directly on its output projector's embeddings (`prompt_embeds`); the
unconditional branch of classifier-free guidance is each pipeline's own encoding of "" (SD / Zeroscope via CLIP,
AudioLDM via CLAP, which L2-normalises it). The projector output itself is passed as is. Pipelines are loaded
lazily, once per modality, and kept: loading them per request is what made the original demo's memory grow.
"""

from __future__ import annotations

import math
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from .config import MODALITIES, DecoderConfig
from .generation import new_seed


class DecoderError(RuntimeError):
    """A decoder failure, phrased for the person using the demo."""


@dataclass
class DecodedMedia:
    modality: str
    data: Any  # PIL.Image (image), uint8 (T, H, W, 3) array (video), float32 waveform (audio)
    sample_rate: int | None = None
    fps: int | None = None
    info: dict[str, Any] = field(default_factory=dict)


def _pipeline_class(modality: str):
    # Imported lazily: diffusers is slow to import and two of these print a deprecation line.
    import diffusers

    names = {"image": "StableDiffusionPipeline", "video": "TextToVideoSDPipeline", "audio": "AudioLDMPipeline"}
    if modality not in names:
        raise ValueError(f"unknown modality {modality!r}; expected one of {MODALITIES}")
    return getattr(diffusers, names[modality])


def guided_steps(steps: int, guidance_scale: float, guidance_fraction: float) -> int:
    """How many of `steps` run classifier-free guidance (all of them when guidance is off: nothing to cut)."""
    if guidance_scale <= 1.0 or guidance_fraction >= 1.0:
        return steps
    return min(steps, max(1, math.ceil(guidance_fraction * steps)))


@contextmanager
def guidance_on_first(pipe, steps: int, guidance_scale: float, guidance_fraction: float):
    """A pipeline's classifier-free guidance on the first `guidance_fraction` of the steps only (one UNet call
    per step, as for the multistep solvers we ship). Each later call runs the conditional half of the pipeline's
    [unconditional, conditional] batch and returns its prediction for both halves, which the pipeline's guidance
    formula leaves as it is: the last steps refine detail that guidance hardly changes, at half the cost."""
    guided = guided_steps(steps, guidance_scale, guidance_fraction)
    if guided >= steps:  # unguided, or guided throughout: nothing to change
        yield
        return
    calls, halved = 0, False

    def before(_module, args, kwargs):
        nonlocal calls, halved
        calls += 1
        halved = calls > guided and args[0].shape[0] % 2 == 0
        if not halved:
            return None
        half = args[0].shape[0] // 2

        def cut(x):
            return x[half:] if torch.is_tensor(x) and x.ndim and x.shape[0] == 2 * half else x

        return tuple(cut(a) for a in args), {k: cut(v) for k, v in kwargs.items()}

    def after(_module, _args, output):
        if not halved:
            return None
        if isinstance(output, tuple):
            return (torch.cat([output[0], output[0]]), *output[1:])
        return type(output)(sample=torch.cat([output.sample, output.sample]))

    unet = pipe.unet
    handles = [unet.register_forward_pre_hook(before, with_kwargs=True), unet.register_forward_hook(after)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


# --- the decoders ----------------------------------------------------------------------------------------------


def _is_oom(exc: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", ())
    return isinstance(exc, (MemoryError, oom_type)) or "out of memory" in str(exc).lower()


class Decoders:
    """The image, video and audio decoders, each loaded on first use, exactly once, and kept."""

    def __init__(self, configs: dict[str, DecoderConfig], *, cond_dims: dict[str, int], device: str = "cpu",
                 dtype: torch.dtype | None = None, cpu_offload: bool = False, pipelines: dict | None = None):
        self.configs = dict(configs)
        self.cond_dims = dict(cond_dims)
        self.device = torch.device(device)
        on_cuda = self.device.type == "cuda"
        self.dtype = dtype or (torch.float16 if on_cuda else torch.float32)  # half precision only where it pays
        self.cpu_offload = cpu_offload and on_cuda  # offload hooks need an accelerator to move weights onto
        self._pipes: dict[str, Any] = {}
        for m, pipe in (pipelines or {}).items():
            self._check(m)
            self._pipes[m] = self._quiet(pipe)  # passed-in pipelines are used where they are
        self._load_locks = {m: threading.Lock() for m in self.configs}
        self._run_locks = {m: threading.Lock() for m in self.configs}  # a pipeline's scheduler is not re-entrant
        self.load_count = {m: 0 for m in self.configs}

    def _check(self, modality: str) -> DecoderConfig:
        if modality not in self.configs:
            raise ValueError(f"no decoder configured for {modality!r}; configured: {sorted(self.configs)}")
        return self.configs[modality]

    @staticmethod
    def _quiet(pipe):
        if hasattr(pipe, "set_progress_bar_config"):
            pipe.set_progress_bar_config(disable=True)
        return pipe

    def is_loaded(self, modality: str) -> bool:
        return modality in self._pipes

    def get(self, modality: str):
        """The cached pipeline for `modality`, loading it on first call."""
        cfg = self._check(modality)
        with self._load_locks[modality]:
            if modality not in self._pipes:
                try:
                    self._pipes[modality] = self._load(modality, cfg)
                except Exception as exc:
                    where = cfg.pretrained or "a tiny random pipeline"
                    raise DecoderError(f"Could not load the {modality} decoder from {where}: {exc}") from exc
                self.load_count[modality] += 1
            return self._pipes[modality]

    def _load(self, modality: str, cfg: DecoderConfig):
        if cfg.pretrained is None:
            from .offline import build_tiny_pipeline

            pipe = build_tiny_pipeline(modality, cfg, self.cond_dims[modality])  # built in float32
            if self.dtype != torch.float32:
                pipe = pipe.to(dtype=self.dtype)
        else:
            # The image pipeline keeps its safety checker when the repo has one, as the official demo does.
            # diffusers 0.42 names it `dtype` (`torch_dtype` still works but warns).
            # AudioLDM-nano's model_index names our Griffin-Lim vocoder class; diffusers loads classes only from
            # modules already imported.
            from . import vocoder  # noqa: F401
            pipe = _pipeline_class(modality).from_pretrained(cfg.pretrained, dtype=self.dtype)
        if self.cpu_offload:
            pipe.enable_model_cpu_offload(device=self.device)  # the 7B set then fits a 24 GB GPU
        else:
            pipe = pipe.to(self.device)
        return self._quiet(pipe)

    def save_pretrained(self, folder: str | Path) -> dict[str, Path]:
        """Write each loaded pipeline to `folder/<modality>_decoder/` (loadable with `from_pretrained`)."""
        out = {}
        for m, pipe in self._pipes.items():
            out[m] = Path(folder) / f"{m}_decoder"
            pipe.save_pretrained(out[m])
        return out

    @torch.no_grad()
    def text_condition(self, modality: str, texts: list[str]) -> torch.Tensor:
        """The decoder's own conditioning for captions: what NExT-GPT's output projectors learn to produce.

        SD / Zeroscope: the CLIP text encoder's last hidden state (B, 77, D); AudioLDM: the L2-normalised CLAP
        text embedding (B, D). Computed by each pipeline's own prompt encoder, as the official precomputed
        `data/embed/*.npy` targets were.
        """
        pipe = self.get(modality)
        device = pipe._execution_device
        if modality == "audio":
            return pipe._encode_prompt(list(texts), device, 1, False).float().cpu()
        return pipe.encode_prompt(list(texts), device, 1, False)[0].float().cpu()

    def decode(self, modality: str, prompt_embeds: torch.Tensor, *, guidance_scale: float | None = None,
               num_inference_steps: int | None = None, height: int | None = None, width: int | None = None,
               num_frames: int | None = None, audio_length_s: float | None = None, seed: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> DecodedMedia:
        """Run one decoder on the output projector's embeddings. None arguments take the DecoderConfig defaults."""
        cfg = self._check(modality)
        guidance = cfg.guidance_scale if guidance_scale is None else guidance_scale
        steps = cfg.num_inference_steps if num_inference_steps is None else num_inference_steps
        seed = new_seed() if seed is None else int(seed)  # recorded so any output can be reproduced
        info: dict[str, Any] = dict(seed=seed, steps=steps, guidance=guidance,
                                    guided_steps=guided_steps(steps, guidance, cfg.guidance_fraction))
        done = 0

        def on_step(*_):  # the step index passed by pipelines counts scheduler orders; count calls instead
            nonlocal done
            done += 1
            if progress is not None:
                progress(done, steps)

        pipe = self.get(modality)
        if progress is not None:
            progress(0, steps)  # started: a streaming consumer can show it now, before a possibly slow first step
        start = time.perf_counter()
        try:
            with self._run_locks[modality]:
                device = getattr(pipe, "_execution_device", self.device)
                dtype = getattr(pipe, "dtype", self.dtype)
                # Offloaded pipelines keep weights on the CPU between calls; a CPU generator is valid for both.
                gen_device = "cpu" if (self.cpu_offload or torch.device(device).type == "cpu") else device
                generator = torch.Generator(device=gen_device).manual_seed(seed)
                embeds = prompt_embeds.detach().to(device=device, dtype=dtype)
                # negative_prompt_embeds=None: the pipeline encodes "" itself (AudioLDM L2-normalises its CLAP one).
                common = dict(prompt_embeds=embeds, negative_prompt_embeds=None, guidance_scale=guidance,
                              num_inference_steps=steps, generator=generator)
                with guidance_on_first(pipe, steps, guidance, cfg.guidance_fraction):
                    media = self._run(modality, pipe, cfg, common, on_step, info, height=height, width=width,
                                      num_frames=num_frames, audio_length_s=audio_length_s)
        except Exception as exc:
            if _is_oom(exc):
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                hint = {"video": "fewer frames or steps", "audio": "a shorter length or fewer steps"}
                hint = hint.get(modality, "fewer steps or a smaller size")
                raise DecoderError(f"The {modality} decoder ran out of memory; try {hint}.") from exc
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise DecoderError(f"The {modality} decoder failed: {reason[:300]}") from exc
        media.info["seconds_taken"] = round(time.perf_counter() - start, 3)
        return media

    @staticmethod
    def _run(modality, pipe, cfg, common, on_step, info, *, height, width, num_frames, audio_length_s) -> DecodedMedia:
        if modality == "audio":
            embeds = common["prompt_embeds"]
            common["prompt_embeds"] = embeds.reshape(embeds.shape[0], -1)  # (1, 1, D) from the projector -> (1, D)
            seconds = cfg.audio_length_s if audio_length_s is None else audio_length_s
            out = pipe(audio_length_in_s=seconds, callback=on_step, callback_steps=1, output_type="np", **common)
            vocoder = getattr(pipe, "vocoder", None)
            rate = int(vocoder.config.sampling_rate) if vocoder is not None else cfg.sample_rate
            info["seconds"] = seconds
            return DecodedMedia("audio", np.asarray(out.audios[0], dtype=np.float32), sample_rate=rate, info=info)
        height = cfg.height if height is None else height
        width = cfg.width if width is None else width
        info["size"] = (width, height)
        if modality == "image":
            def on_step_end(_pipe, _i, _t, _tensors):  # the newer callback API, which must return a dict
                on_step()
                return {}

            out = pipe(height=height, width=width, output_type="pil", callback_on_step_end=on_step_end, **common)
            nsfw = getattr(out, "nsfw_content_detected", None)
            info["nsfw_content_detected"] = bool(nsfw and nsfw[0])
            return DecodedMedia("image", out.images[0], info=info)
        frames_n = cfg.num_frames if num_frames is None else num_frames
        out = pipe(height=height, width=width, num_frames=frames_n, output_type="np",
                   callback=on_step, callback_steps=1, **common)
        frames = np.asarray(out.frames[0])  # (T, H, W, 3) floats in [0, 1]
        if frames.dtype != np.uint8:
            frames = (np.clip(frames, 0.0, 1.0) * 255).round().astype(np.uint8)
        info["frames"] = frames_n
        return DecodedMedia("video", frames, fps=cfg.fps, info=info)
