"""The events `NextGPT.chat` streams, as plain dataclasses: a UI reads them without importing torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class TextDelta:
    text: str


@dataclass
class SignalDetected:
    modality: str
    tokens: list[str]
    text_offset: int = 0  # where in the answer's text the run stands, so a UI can place the media there


@dataclass
class MediaProgress:
    modality: str
    step: int
    total: int
    sample: int = 1  # which of the item's candidate samples is being decoded (`DecoderConfig.candidates`)
    samples: int = 1


@dataclass
class MediaReady:
    modality: str
    path: str
    info: dict[str, Any] = field(default_factory=dict)
    text_offset: int = 0


@dataclass
class MediaFailed:
    modality: str
    message: str
    text_offset: int = 0


@dataclass
class ChatResult:
    """The whole answer: what the last event of `chat` carries."""

    text: str
    media: list[MediaReady] = field(default_factory=list)
    signal_tokens: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
