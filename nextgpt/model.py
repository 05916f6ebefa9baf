"""NextGPT: encoder -> input projector -> LLM -> signal tokens -> output projectors -> decoders.

Like a diffusers pipeline, the model holds its components (passed in, not hidden) and saves as a folder;
`from_pretrained` loads a preset name (`tiny`, `nextgpt-7b-tiva-v0`) or a saved folder through one code path.
"""

from __future__ import annotations

import queue
import tempfile
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

import torch
from torch import nn
from transformers import LogitsProcessorList, StoppingCriteriaList
from transformers.generation.stopping_criteria import StopStringCriteria

from . import checkpoint as ckpt
from .config import MODALITIES, NextGPTConfig, locate
from .conversation import MEDIA_SLOT, MediaSegment, Message, Segment, TextSegment, build_prompt, recent
from .decoders import DecoderError, Decoders
from .encoder import Encoder
from .events import ChatResult, MediaFailed, MediaProgress, MediaReady, SignalDetected, TextDelta
from .generation import (
    STOP,
    CancelCriteria,
    SignalRunLogitsProcessor,
    TokenQueueStreamer,
    candidate_seed,
    decoder_seed,
    find_runs,
    lead_words,
    new_seed,
    stop_like_ids,
    visible_text,
)
from .llm import add_signal_tokens, build_llm, load_tokenizer
from .media import Media
from .projectors import OutputProjector, input_projector
from .render import SUFFIXES, write_media

OUTPUTS = ("auto", "text") + MODALITIES  # the output selector: auto, text only, or force one modality
TRAINED_FILE = "nextgpt.safetensors"


def _resolve(path: str | None, root: Path | None) -> str | None:
    """Paths in a saved model's config are relative to its folder; hub ids and absolute paths pass through."""
    if path is None or root is None:
        return path
    candidate = root / path
    return str(candidate) if candidate.exists() else path


def _resolve_paths(config: NextGPTConfig, root: Path | None) -> None:
    """Every component path of a saved model's config, as seen from here (once, before anything is built)."""
    config.llm.pretrained = _resolve(config.llm.pretrained, root)
    config.llm.tokenizer = _resolve(config.llm.tokenizer, root)
    config.checkpoint = _resolve(config.checkpoint, root)
    config.encoder.pretrained = _resolve(config.encoder.pretrained, root)
    for c in config.decoders.values():
        c.pretrained = _resolve(c.pretrained, root)


def _relative(path: str | None, folder: Path) -> str | None:
    """A local path as seen from `folder` (kept as is when it is a hub id or lies elsewhere)."""
    if path is None or not Path(path).exists():
        return path
    target, folder = Path(path).resolve(), folder.resolve()
    return str(target.relative_to(folder)) if target.is_relative_to(folder) else str(target)


class NextGPT(nn.Module):
    def __init__(
        self,
        config: NextGPTConfig,
        tokenizer,
        llm: nn.Module,
        input_projector: nn.Linear,
        output_projectors: nn.ModuleDict,
        encoder: Encoder | None = None,
        decoders: Decoders | None = None,
    ):
        super().__init__()
        self.config = config
        self.tokenizer = tokenizer
        self.llm = llm
        self.input_projector = input_projector
        self.output_projectors = output_projectors
        self.encoder = encoder
        self.decoders = decoders
        # One generation at a time. A plain Lock: a server may resume the chat generator on another thread.
        self._lock = threading.Lock()
        # Generation and decoding run off the caller's thread so that `chat` can stream; one long-lived thread
        # rather than a new one per request keeps torch's per-thread state warm between turns.
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="nextgpt")
        if tokenizer is not None:
            ids = add_signal_tokens(tokenizer, config.signal)
            self.media_ids = ids["media"]
            self.signal_ids = {m: ids[m] for m in MODALITIES}
            self._stop_like = stop_like_ids(tokenizer)

    # --- building ----------------------------------------------------------------------------------------------

    @classmethod
    def from_config(
        cls,
        config: NextGPTConfig,
        *,
        root: str | Path | None = None,
        checkpoint: str | None = None,
        device: str | None = None,
        dtype: torch.dtype | None = None,
        device_map: str | dict | None = None,
        cpu_offload: bool = False,
        load_encoder: bool = True,
        meta: bool = False,
    ) -> "NextGPT":
        """Build every component described by `config`; `meta=True` builds only the trained parts, weightless."""
        config = NextGPTConfig.from_dict(config.to_dict())  # never mutate the caller's config
        # The model's config keeps the resolved paths, so a save without components can point back at them.
        _resolve_paths(config, Path(root) if root is not None else None)
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        dtype = dtype or (torch.float16 if str(device).startswith("cuda") else torch.float32)
        if meta:
            tokenizer = None
            # tiny builds its tokenizer (cheaply) to know its vocabulary; fixed-vocabulary presets need none
            vocab = config.llm.vocab_size or len(load_tokenizer(config, None)) + len(config.signal.added_tokens())
            config.llm.vocab_size = vocab
            config.llm.pretrained = None
        else:
            tokenizer = load_tokenizer(config, config.llm.tokenizer or config.llm.pretrained)
            add_signal_tokens(tokenizer, config.signal)
            vocab = len(tokenizer)
            if config.llm.vocab_size and config.llm.vocab_size != vocab:
                raise ValueError(f"tokenizer has {vocab} tokens with the signal tokens, the model needs {config.llm.vocab_size}")
            config.llm.vocab_size = vocab
        source = None if meta else checkpoint or config.checkpoint  # the trained weights, if any
        with torch.device("meta") if meta else torch.device("cpu"):
            llm = build_llm(config, vocab, dtype=dtype, device_map=None if meta else device_map,
                            mean_resizing=not source)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                proj_in = input_projector(config.encoder.embed_dim, config.llm.hidden_size)
                proj_out = nn.ModuleDict(
                    {m: OutputProjector(config.llm.hidden_size, c) for m, c in config.output_projectors.items()}
                )
        encoder = decoders = None
        if not meta:
            if load_encoder:
                encoder = Encoder.from_config(config.encoder, device=device, dtype=dtype)
            decoders = Decoders(
                config.decoders,
                cond_dims={m: c.out_dim for m, c in config.output_projectors.items()},
                device=device,
                dtype=dtype,
                cpu_offload=cpu_offload,
            )
        model = cls(config, tokenizer, llm, proj_in, proj_out, encoder, decoders)
        if not meta:
            model.input_projector.to(device, dtype)
            model.output_projectors.to(device, dtype)
            if device_map is None:
                model.llm.to(device)
            if source:
                model.load_checkpoint(_fetch_checkpoint(source))
        return model

    @classmethod
    def from_pretrained(cls, name_or_path: str, **kwargs) -> "NextGPT":
        """A shipped model (`nano`), a preset name (`tiny`, `nextgpt-7b-tiva-v0`) or a folder written by
        `save_pretrained`.

        Keyword arguments are those of `from_config`, plus `llm`, `encoder` and `tokenizer` to point the base
        weights at local folders or files (e.g. Vicuna-7B v0 and imagebind_huge.pth for the release).
        """
        overrides = {k: kwargs.pop(k) for k in ("llm", "encoder", "tokenizer") if k in kwargs}
        config, root = locate(name_or_path)
        if "llm" in overrides:
            config.llm.pretrained = overrides["llm"]
        if "tokenizer" in overrides:
            config.llm.tokenizer = overrides["tokenizer"]
        if "encoder" in overrides:
            config.encoder.pretrained = overrides["encoder"]
        if root is None and config.checkpoint and not kwargs.get("meta"):  # a released preset: no random bases
            for what, value in (("llm", config.llm.pretrained), ("encoder", config.encoder.pretrained)):
                if not value:
                    raise ValueError(
                        f"{config.name} needs its base {what} weights: pass {what}=PATH "
                        "(see the README: Vicuna-7B v0 and imagebind_huge.pth)"
                    )
        return cls.from_config(config, root=root, **kwargs)

    def save_pretrained(self, folder: str | Path, components: bool = True) -> None:
        """Write config, tokenizer and the trained parts; with `components`, also the base LLM, the encoder and
        the decoders, so the folder is self-contained. Without, the config points at the components where they
        are (relative paths when they lie inside `folder`)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        config = NextGPTConfig.from_dict(self.config.to_dict())
        self.tokenizer.save_pretrained(folder)
        config.llm.tokenizer = "."
        config.checkpoint = TRAINED_FILE
        if not components:
            config.llm.pretrained = _relative(config.llm.pretrained, folder)
            config.encoder.pretrained = _relative(config.encoder.pretrained, folder)
            for c in config.decoders.values():
                c.pretrained = _relative(c.pretrained, folder)
            ckpt.save_trained(self.trained_state_dict(), folder / TRAINED_FILE)
            config.save(folder / "config.json")
            return
        self._save_base_llm(folder / "llm")
        config.llm.pretrained = "llm"
        if self.encoder is not None:
            self.encoder.save_pretrained(folder / "encoder")
            config.encoder.pretrained = "encoder"
        if self.decoders is not None:
            for m in self.config.decoders:
                self.decoders.get(m)
            self.decoders.save_pretrained(folder)
            for m in config.decoders:
                config.decoders[m].pretrained = f"{m}_decoder"
        ckpt.save_trained(self.trained_state_dict(), folder / TRAINED_FILE)
        config.save(folder / "config.json")

    def _save_base_llm(self, folder: Path) -> None:
        """The base Llama without LoRA (peft renames wrapped weights to `base_layer`; undo that)."""
        from safetensors.torch import save_file

        base = self.llm.get_base_model()
        state = {
            k.replace(".base_layer.", "."): v.detach().contiguous().cpu()
            for k, v in base.state_dict().items()
            if "lora_" not in k
        }
        folder.mkdir(parents=True, exist_ok=True)
        base.config.save_pretrained(folder)
        save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})

    # --- checkpoints -------------------------------------------------------------------------------------------

    def trained_shapes(self) -> dict[str, torch.Size]:
        return {k: v.shape for k, v in self.state_dict().items() if ckpt.is_trained_key(k)}

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v for k, v in self.state_dict().items() if ckpt.is_trained_key(k)}

    def load_checkpoint(self, path: str | Path) -> ckpt.KeyReport:
        """Strictly load the official `pytorch_model.pt` or our safetensors; raise naming any mismatch."""
        state, official = ckpt.read_state_dict(path)
        report = ckpt.check_keys(state, self.trained_shapes())
        if not report.ok:
            raise ckpt.CheckpointError(report.in_official_names() if official else report, str(path))
        result = self.load_state_dict(state, strict=False)
        assert not result.unexpected_keys, result.unexpected_keys
        return report

    # --- encode and project ------------------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        return self.input_projector.weight.device

    def _embed_ids(self, ids: list[int]) -> torch.Tensor:
        table = self.llm.get_input_embeddings()
        return table(torch.tensor(ids, dtype=torch.long, device=table.weight.device))

    def encode_media(self, items: list[Media]) -> torch.Tensor:
        """ImageBind embedding of each item, projected into the LLM's embedding space: (n, hidden)."""
        if self.encoder is None:
            raise RuntimeError("this model was built without its encoder")
        feats = self.encoder.encode(items).to(self.device, self.input_projector.weight.dtype)
        return self.input_projector(feats)

    def tokenize_text(self, text: str) -> list[int]:
        """Text is only text: special and added tokens typed by a user stay characters."""
        return self.tokenizer(text, add_special_tokens=False, split_special_tokens=True).input_ids

    def prompt_ids(self, segments: list[Segment] | list[Message]) -> list[int]:
        """Prompt segments (or the messages they come from) -> token ids, each media item as <Img> MEDIA_SLOT
        </Img>. One tokenizer call per text segment; BOS before the first (and before every one with
        `generation.bos_per_segment`, as the released demo did)."""
        if segments and isinstance(segments[0], Message):
            segments = build_prompt(segments, self.config.llm.tokenization)
        bos = self.tokenizer.bos_token_id
        ids: list[int] = []
        for i, seg in enumerate(segments):
            if isinstance(seg, TextSegment):
                if bos is not None and (i == 0 or self.config.generation.bos_per_segment):
                    ids.append(bos)
                ids += self.tokenize_text(seg.text)
            else:
                ids += [self.media_ids[0], MEDIA_SLOT, self.media_ids[1]]
        return ids

    def embed_prompt(self, segments: list[Segment]) -> torch.Tensor:
        """Prompt segments -> (1, T, hidden) input embeddings; each media item as <Img> feature </Img>."""
        media = [s.media for s in segments if isinstance(s, MediaSegment)]
        ids = torch.tensor(self.prompt_ids(segments), dtype=torch.long)
        slots = ids == MEDIA_SLOT
        table = self.llm.get_input_embeddings()
        embeds = table(ids.clamp(min=0).to(table.weight.device))
        if media:
            embeds[slots.to(embeds.device)] = self.encode_media(media).to(embeds.device, embeds.dtype)
        return embeds[None]

    def signal_hidden(self, prompt_embeds: torch.Tensor, generated: list[int], start: int, n: int) -> torch.Tensor:
        """Last-layer hidden states for the run generated[start:start+n]: (1, n, hidden).

        One teacher-forced pass over prompt + generated tokens. "aligned" takes the states at the signal tokens
        (as trained); "shifted" takes them one position earlier, as the released demo does.
        """
        shift = 1 if self.config.generation.signal_hidden == "shifted" else 0
        gen = self._embed_ids(generated[: start + n])[None].to(prompt_embeds.dtype)
        out = self.llm(inputs_embeds=torch.cat([prompt_embeds, gen], 1), output_hidden_states=True)
        t = prompt_embeds.shape[1] + start - shift
        return out.hidden_states[-1][:, t : t + n]

    def project_signal(self, modality: str, hidden: torch.Tensor, ids: list[int]) -> torch.Tensor:
        """Hidden states of a signal run -> the decoder's conditioning (1, Q, D); audio (1, D)."""
        proj = self.output_projectors[modality]
        w = proj.in_fc.weight
        signal = self._embed_ids(ids)[None].to(w.device, w.dtype)
        cond = proj(hidden.to(w.device, w.dtype), signal)
        return cond.reshape(cond.shape[0], -1) if modality == "audio" else cond

    # --- chat --------------------------------------------------------------------------------------------------

    @torch.inference_mode()
    def chat(
        self,
        messages: list[Message],
        *,
        seed: int | None = None,
        max_new_tokens: int | None = None,
        temperature: float | None = None,
        top_p: float | None = None,
        output: str = "auto",
        decode_media: bool = True,
        decoder_options: dict[str, dict] | None = None,
        out_dir: str | Path | None = None,
        cancel: threading.Event | None = None,
    ) -> Iterator:
        """Stream an answer as events: TextDelta, SignalDetected, MediaProgress, MediaReady / MediaFailed, and
        finally a ChatResult with the whole text and every media file.

        `output`: "auto", "text" (no media), or "image" / "video" / "audio" (that modality's run is forced).
        """
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}")
        gen_cfg = self.config.generation
        max_new_tokens = max_new_tokens or gen_cfg.max_new_tokens
        temperature = gen_cfg.temperature if temperature is None else temperature
        top_p = gen_cfg.top_p if top_p is None else top_p
        seed = new_seed() if seed is None else int(seed)  # the turn's one seed; each medium's is derived from it
        cancel = cancel or threading.Event()
        with self._lock:
            prompt = self.embed_prompt(build_prompt(recent(messages, gen_cfg.max_history_turns),
                                                    self.config.llm.tokenization))
            processor = SignalRunLogitsProcessor(
                self.signal_ids,
                never=self.media_ids,
                stop_ids=self._stop_like,
                allowed=set() if output == "text" else None,
                force=output if output in MODALITIES else None,
                max_runs=gen_cfg.max_runs_per_modality,
                max_new_tokens=max_new_tokens,
            )
            streamer = TokenQueueStreamer()
            failure: list[BaseException] = []

            def run():
                try:
                    torch.manual_seed(seed)
                    with torch.inference_mode():
                        self.llm.generate(
                            inputs_embeds=prompt,
                            attention_mask=torch.ones(prompt.shape[:2], dtype=torch.long, device=prompt.device),
                            max_new_tokens=max_new_tokens,
                            do_sample=temperature > 0,
                            temperature=temperature if temperature > 0 else None,
                            top_p=top_p if temperature > 0 else None,
                            top_k=None,
                            logits_processor=LogitsProcessorList([processor]),
                            stopping_criteria=StoppingCriteriaList(
                                [StopStringCriteria(self.tokenizer, [STOP]), CancelCriteria(cancel)]
                            ),
                            streamer=streamer,
                            pad_token_id=self.tokenizer.pad_token_id,
                            eos_token_id=self.tokenizer.eos_token_id,
                        )
                except BaseException as e:  # surfaced in the consumer thread below
                    failure.append(e)
                    streamer.end()

            worker = self._worker.submit(run)
            generated: list[int] = []
            shown = ""
            starts = {ids[0]: m for m, ids in self.signal_ids.items()}
            offsets: dict[int, int] = {}  # run start -> text offset
            try:
                for tok in streamer:
                    generated.append(tok)
                    decoded = self.tokenizer.decode(generated, skip_special_tokens=True)
                    if tok in starts:
                        m = starts[tok]
                        offsets[len(generated) - 1] = len(visible_text(decoded, final=True))
                        yield SignalDetected(
                            m, self.tokenizer.convert_ids_to_tokens(self.signal_ids[m]), offsets[len(generated) - 1]
                        )
                    text = visible_text(decoded)
                    if len(text) > len(shown) and text.startswith(shown):
                        yield TextDelta(text[len(shown):])
                        shown = text
            finally:
                cancel.set()  # the consumer left or finished: let generate stop at its next step
                worker.result()
            if failure:
                raise failure[0]
            text = visible_text(self.tokenizer.decode(generated, skip_special_tokens=True), final=True)
            if len(text) > len(shown) and text.startswith(shown):
                yield TextDelta(text[len(shown):])
            result = ChatResult(text=text)
            runs = find_runs(generated, self.signal_ids)
            for r in runs:
                result.signal_tokens += self.tokenizer.convert_ids_to_tokens(list(r.ids))
            if decode_media and runs:
                folder = Path(out_dir) if out_dir else Path(tempfile.mkdtemp(prefix="nextgpt-"))
                made = {m: 0 for m in MODALITIES}
                for r in runs:
                    hidden = self.signal_hidden(prompt, generated, r.start, len(r.ids))
                    cond = self.project_signal(r.modality, hidden, list(r.ids))
                    options = dict((decoder_options or {}).get(r.modality, {}))
                    media_seed = decoder_seed(seed, made[r.modality])
                    made[r.modality] += 1
                    offset = min(offsets.get(r.start, len(text)), len(text))
                    words = lead_words(text, offset)
                    for event in self._decode(r.modality, cond, media_seed, options, folder, words):
                        if isinstance(event, (MediaReady, MediaFailed)):
                            event.text_offset = offset
                        if isinstance(event, MediaReady):
                            result.media.append(event)
                        elif isinstance(event, MediaFailed):
                            result.errors.append(event.message)
                        yield event
            yield result

    def _decode(self, modality: str, cond: torch.Tensor, seed: int, options: dict, folder: Path,
                words: str = "") -> Iterator:
        """Run one decoder in a worker thread so its progress can be streamed, then write the file. With more than
        one candidate (`DecoderConfig.candidates`) and `words` that lead into the item, that many samples are decoded
        and the one whose ImageBind embedding lies nearest the words' is kept."""
        options = dict(options)
        n = max(1, int(options.pop("candidates", self.config.decoders[modality].candidates)))
        n = n if words.strip() else 1
        events: queue.Queue = queue.Queue()
        box: dict = {}

        def work():
            try:
                box["media"] = [self.decoders.decode(
                    modality, cond, seed=candidate_seed(seed, k),
                    progress=lambda i, total, k=k: events.put(MediaProgress(modality, i, total, k + 1, n)),
                    **options) for k in range(n)]
            except BaseException as e:
                box["error"] = e
            finally:
                events.put(None)

        self._worker.submit(work)
        while (event := events.get()) is not None:
            yield event
        if "error" in box:
            err = box["error"]
            yield MediaFailed(modality, str(err) if isinstance(err, DecoderError) else f"The {modality} decoder failed: {err}")
            return
        paths = [write_media(media, folder / f"{modality}-{uuid.uuid4().hex[:8]}{SUFFIXES[modality]}")
                 for media in box["media"]]
        best = self._nearest(modality, paths, words) if n > 1 else 0
        for k, path in enumerate(paths):
            if k != best:
                path.unlink(missing_ok=True)
        info = dict(box["media"][best].info)
        if n > 1:  # the medium's seed gives it again; the sample's own seed is kept beside it
            info.update(seed=seed, sample_seed=info["seed"], candidates=n, chosen=best,
                        seconds_taken=round(sum(media.info.get("seconds_taken", 0) for media in box["media"]), 3))
        yield MediaReady(modality, str(paths[best]), info)

    def _nearest(self, modality: str, paths: list[Path], words: str) -> int:
        """Which file ImageBind embeds nearest `words` (the first, should the files or words not embed)."""
        try:
            media = self.encoder.encode([Media(modality, str(p)) for p in paths]).float()
            text = self.encoder.embed_text([words]).to(media.device)
            media = nn.functional.normalize(media, dim=-1)  # a multi-clip mean is not unit-norm
        except Exception:  # a ranking that fails must not cost the answer its media
            return 0
        return int((media @ text.T).squeeze(1).argmax())

    def generate(self, messages: list[Message] | str, *, images=(), audios=(), videos=(), **kwargs) -> ChatResult:
        """One-shot: a prompt (or whole conversation) in, the final ChatResult out."""
        if isinstance(messages, str):
            media = [Media("image", p) for p in images] + [Media("audio", p) for p in audios]
            media += [Media("video", p) for p in videos]
            messages = [Message("user", [*media, messages])]
        result = None
        for event in self.chat(messages, **kwargs):
            result = event
        return result


def _fetch_checkpoint(source: str) -> str:
    """A local file, or a hub repo id holding the official `pytorch_model.pt` (downloaded on demand, never at import)."""
    if Path(source).exists():
        return source
    from huggingface_hub import hf_hub_download

    repo, _, revision = source.partition("@")
    return hf_hub_download(repo, "pytorch_model.pt", revision=revision or None)
