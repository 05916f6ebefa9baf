"""The model wrapper that a server puts under its UI: created once per process, shared by every user.

It owns nothing per user (each request brings its whole conversation), checks a user's message before the turn
starts (so a bad upload fails before anything is shown), keeps decoders warm, and runs one turn from a
conversation and a `TurnOptions`.
"""

from __future__ import annotations

import ctypes
import sys
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .conversation import Message, recent
from .media import Media, MediaError, MediaLimits, guess_modality


@dataclass
class ServiceLimits:
    media: MediaLimits
    max_prompt_chars: int = 4000
    max_files: int = 4
    max_history_turns: int = 8  # earlier turns are left out of the model's context


@dataclass
class TurnOptions:
    """What a turn can set besides the conversation; None takes the model config's default.

    `seed` None draws a fresh seed for the turn; it and each decoder's seed are recorded with the media."""

    output: str = "auto"  # "auto", "text", or force "image" / "video" / "audio"
    seed: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    max_new_tokens: int | None = None
    image_guidance: float | None = None
    image_steps: int | None = None
    image_size: int | None = None  # square images: height and width
    video_guidance: float | None = None
    video_steps: int | None = None
    video_frames: int | None = None
    audio_guidance: float | None = None
    audio_steps: int | None = None
    audio_seconds: float | None = None

    def decoder_options(self) -> dict[str, dict]:
        """Per decoder, the keyword arguments of `Decoders.decode` that this turn sets."""
        size = None if self.image_size is None else int(self.image_size)
        options = {
            "image": dict(guidance_scale=self.image_guidance, num_inference_steps=_int(self.image_steps),
                          height=size, width=size),
            "video": dict(guidance_scale=self.video_guidance, num_inference_steps=_int(self.video_steps),
                          num_frames=_int(self.video_frames)),
            "audio": dict(guidance_scale=self.audio_guidance, num_inference_steps=_int(self.audio_steps),
                          audio_length_s=None if self.audio_seconds is None else float(self.audio_seconds)),
        }
        return {m: {k: v for k, v in o.items() if v is not None} for m, o in options.items()}

    def chat_options(self) -> dict:
        """The keyword arguments of `NextGPT.chat` for this turn."""
        return dict(output=self.output, seed=_int(self.seed),
                    temperature=None if self.temperature is None else float(self.temperature),
                    top_p=None if self.top_p is None else float(self.top_p),
                    max_new_tokens=_int(self.max_new_tokens), decoder_options=self.decoder_options())


def _int(value) -> int | None:
    return None if value is None else int(value)


class ChatService:
    def __init__(self, model=None, limits: ServiceLimits | None = None, *, config=None):
        """A service over `model`, or, with `config` alone, one whose model `load` builds later: the config is all
        a UI needs to be drawn, and a turn that comes before the model waits for it."""
        self._model = model
        self._config = config
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._pending: tuple[str, dict] | None = None
        if model is not None:
            self._ready.set()
        self.limits = limits or ServiceLimits(MediaLimits())
        self._libc = _glibc()

    @classmethod
    def later(cls, name_or_path: str, limits: ServiceLimits | None = None, **kwargs) -> "ChatService":
        """A service over `NextGPT.from_pretrained(name_or_path, **kwargs)`, built by `load()` when the caller
        chooses (the app: after its page is served); only the config is read now, which imports neither torch nor
        the model's libraries."""
        from .config import locate

        service = cls(None, limits, config=locate(name_or_path)[0])
        service._pending = (name_or_path, kwargs)
        return service

    def load(self) -> None:
        """Build the model `later` deferred (turns waiting for it go on), then warm it up."""
        if self._pending is not None:
            name_or_path, kwargs = self._pending
            try:
                from .model import NextGPT

                self._model = NextGPT.from_pretrained(name_or_path, **kwargs)
            except BaseException as e:  # every waiting turn, and every later one, says why
                self._failure = e
                raise
            finally:
                self._ready.set()
                self._pending = None
        self.warm_up()

    @property
    def model(self):
        """The model, once built (waits while `load` builds it)."""
        self._ready.wait()
        if self._failure is not None:
            raise RuntimeError(f"the model could not be loaded: {self._failure}") from self._failure
        return self._model

    @property
    def config(self):
        return self._model.config if self._model is not None else self._config

    def warm_up(self) -> None:
        """Pay each part's first-call costs before a person does: a short text answer, then each decoder, loaded
        and run for one step (its first run takes about twice as long as later ones). A turn that needs a decoder
        meanwhile waits for its load, then takes its turn."""
        import torch

        from .decoders import DecoderError

        model = self.model
        for _ in model.chat([Message("user", ["Hello."])], seed=0, output="text", max_new_tokens=4):
            pass
        for modality in model.config.decoders:
            ids = model.signal_ids[modality]
            with torch.inference_mode():
                cond = model.project_signal(modality, torch.zeros(1, len(ids), model.config.llm.hidden_size), ids)
            try:
                model.decoders.decode(modality, cond, seed=0, num_inference_steps=1)
            except DecoderError as e:  # the turns that need it will say so; the others work
                print(f"warm-up: {e}", file=sys.stderr)

    def check_text(self, text: str) -> str:
        """Plain text within the limit; control characters other than newline and tab are dropped."""
        if not isinstance(text, str):
            raise MediaError(f"the message text must be a string, not {type(text).__name__}")
        text = "".join(ch for ch in text if ch in "\n\t" or unicodedata.category(ch) != "Cc")
        if len(text) > self.limits.max_prompt_chars:
            raise MediaError(
                f"your message is {len(text):,} characters long; the limit is {self.limits.max_prompt_chars:,}"
            )
        return text

    def check_media(self, items: list[Media]) -> None:
        """Decode and embed uploads up front: errors name the file, and the embeddings are cached for the turn."""
        if len(items) > self.limits.max_files:
            raise MediaError(f"{len(items)} files attached; the limit is {self.limits.max_files} per message")
        if items:
            self.model.encoder.encode(items, self.limits.media)

    def user_message(self, text: str, files: list[str]) -> Message:
        """The user's message, checked: text within the limits, a message at all, and files that decode and embed
        (so an error names the file). Raises `MediaError` with a sentence for the user."""
        text = self.check_text(text)
        media = [Media(guess_modality(f), f) for f in files]
        if not text.strip() and not media:
            raise MediaError("type a message or attach a file first")
        self.check_media(media)
        return Message("user", [*media, text] if text.strip() else media)

    def turn(self, history: list[Message], message: Message, options: TurnOptions,
             out_dir: str | Path | None = None) -> Iterator:
        """One turn: `message` after `history` (joined to a last user message, whose turn it continues), answered
        as `NextGPT.chat` events."""
        if history and history[-1].role == "user":
            history, message = history[:-1], Message("user", [*history[-1].content, *message.content])
        yield from self.chat([*history, message], **options.chat_options(), out_dir=out_dir)

    def context(self, messages: list[Message]) -> list[Message]:
        """The last `max_history_turns` turns, always starting with a user message."""
        return recent(messages, self.limits.max_history_turns)

    def chat(self, messages: list[Message], **options) -> Iterator:
        """`NextGPT.chat` over the recent context (the model runs one request at a time)."""
        try:
            yield from self.model.chat(self.context(messages), **options)
        finally:
            self._return_free_memory()

    def _return_free_memory(self) -> None:
        """glibc keeps the pages a turn freed, so a long-lived server's memory creeps up turn after turn. Hand them
        back after each turn, in a thread of its own: ctypes releases the GIL, so the turn's last update is not held
        up."""
        if self._libc is not None:
            threading.Thread(target=self._libc.malloc_trim, args=(0,), daemon=True).start()


def _glibc():
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc if hasattr(libc, "malloc_trim") else None
    except OSError:  # not glibc (macOS, Windows, musl): nothing to do
        return None
