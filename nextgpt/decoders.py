"""The "decode" and "render" stages: frozen diffusers pipelines fed by the output projectors, and file writers.

NExT-GPT conditions each decoder directly on its output projector's embeddings (`prompt_embeds`); the
unconditional branch of classifier-free guidance is each pipeline's own encoding of "" (SD / Zeroscope via CLIP,
AudioLDM via CLAP, which L2-normalises it). The projector output itself is passed as is. Pipelines are loaded
lazily, once per modality, and kept: loading them per request is what made the original demo's memory grow.
"""

from __future__ import annotations

import gzip
import importlib.util
import secrets
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from nextgpt.config import DecoderConfig

MODALITIES = ("image", "video", "audio")
# Written sounds peak here (-1 dBFS): vocoders overshoot full scale (a Griffin-Lim tone peaked at 2.0), and a
# player or a resampler needs some headroom.
AUDIO_PEAK = 10 ** (-1 / 20)


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


# --- tiny random pipelines (real architectures, built offline in about a second) --------------------------------


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


def _roberta_tokenizer_offline():
    """A small byte-level BPE with RoBERTa's special tokens (CLAP's text tower uses RoBERTa's tokenizer)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import RobertaTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]  # ids 0..4, matching the ClapTextConfig below
    text = ["a dog barks in the distance", "rain falls on a tin roof", "birds sing at dawn", "a car engine starts"]
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=specials, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(text, trainer)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    return RobertaTokenizerFast(tokenizer_object=tok, model_max_length=77)


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

    _pipeline_class(modality)  # validates the name
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
        return _frozen(d.AudioLDMPipeline(vae=vae, text_encoder=text_encoder, tokenizer=_roberta_tokenizer_offline(),
                                          unet=unet, vocoder=vocoder, scheduler=scheduler))


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
            pipe = build_tiny_pipeline(modality, cfg, self.cond_dims[modality])  # built in float32
            if self.dtype != torch.float32:
                pipe = pipe.to(dtype=self.dtype)
        else:
            # The image pipeline keeps its safety checker when the repo has one, as the official demo does.
            # diffusers 0.42 names it `dtype` (`torch_dtype` still works but warns).
            # AudioLDM-nano's model_index names our Griffin-Lim vocoder class; diffusers loads classes only from
            # modules already imported.
            from .nano import vocoder  # noqa: F401
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
        seed = secrets.randbits(31) if seed is None else int(seed)  # recorded so any output can be reproduced
        info: dict[str, Any] = dict(seed=seed, steps=steps, guidance=guidance)
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
                media = self._run(modality, pipe, cfg, common, on_step, info,
                                  height=height, width=width, num_frames=num_frames, audio_length_s=audio_length_s)
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

    # --- render ----------------------------------------------------------------------------------------------

    def write(self, media: DecodedMedia, path: str | Path) -> Path:
        """Write PNG (image), MP4 (video, H.264 at the configured fps) or WAV (audio, float32 as in the demo, peak
        normalised to `AUDIO_PEAK`; the gain is recorded in `media.info["gain"]`)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        if media.modality == "image":
            media.data.save(path, format="PNG")
        elif media.modality == "video":
            from moviepy import ImageSequenceClip

            frames = np.asarray(media.data)
            # yuv420p (what browsers play) needs even sides: pad one edge row/column rather than resample.
            pad_h, pad_w = frames.shape[1] % 2, frames.shape[2] % 2
            if pad_h or pad_w:
                frames = np.pad(frames, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                media.info["padded_to"] = (frames.shape[2], frames.shape[1])
            fps = media.fps or self.configs.get("video", DecoderConfig()).fps
            clip = ImageSequenceClip(list(frames), fps=fps)
            clip.write_videofile(str(path), codec="libx264", audio=False, logger=None, pixel_format="yuv420p")
            clip.close()
        elif media.modality == "audio":
            import soundfile

            wave, media.info["gain"] = peak_normalised(media.data)
            soundfile.write(str(path), wave, media.sample_rate, subtype="FLOAT", format="WAV")
        else:
            raise ValueError(f"cannot write media of modality {media.modality!r}")
        return path


def peak_normalised(wave, peak: float = AUDIO_PEAK) -> tuple[np.ndarray, float]:
    """(the waveform scaled so that its largest sample is `peak`, the gain); silence is left as it is."""
    wave = np.nan_to_num(np.asarray(wave, dtype=np.float32))
    loudest = float(np.abs(wave).max()) if wave.size else 0.0
    gain = peak / loudest if loudest > 1e-6 else 1.0
    return (wave * np.float32(gain)).astype(np.float32), round(gain, 6)
