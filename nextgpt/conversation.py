"""Structured messages -> prompt segments, with the released `### Human: ... \\n### Assistant:` template.

Prompts are built from parts (text and media), never by parsing user text: a user who types `<Image>/etc/passwd
</Image>` or `[IMG0]` gets exactly those characters as text. The model tokenises text segments with added and
special tokens disabled, so such strings can never turn into media slots or signal tokens.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Union

from .media import Media

Part = Union[str, Media]

HUMAN = "### Human: "
NEXT_HUMAN = " Human: "  # follows the "\n###" that closes an assistant turn
ASSISTANT = "\n### Assistant:"
TURN_END = "\n###"


@dataclass
class Message:
    role: str  # "user" or "assistant"
    content: list[Part] = field(default_factory=list)

    def __post_init__(self):
        if self.role not in ("user", "assistant"):
            raise ValueError(f"role must be 'user' or 'assistant', not {self.role!r}")
        if isinstance(self.content, (str, Media)):
            self.content = [self.content]
        for part in self.content:
            if not isinstance(part, (str, Media)):
                raise TypeError(f"message parts are str or Media, not {type(part).__name__}")

    @property
    def text(self) -> str:
        return "".join(p for p in self.content if isinstance(p, str))

    @property
    def media(self) -> list[Media]:
        return [p for p in self.content if isinstance(p, Media)]


@dataclass(frozen=True)
class TextSegment:
    text: str


@dataclass(frozen=True)
class MediaSegment:
    """Becomes <Img> [projected ImageBind embedding] </Img>, whatever the modality (as in the released model)."""

    media: Media


Segment = Union[TextSegment, MediaSegment]


def _parts(content: list[Part]) -> list[Segment]:
    """A message's parts in order; text that follows a media slot is separated from it by a space."""
    out: list[Segment] = []
    for part in content:
        if isinstance(part, Media):
            out.append(MediaSegment(part))
        elif part:
            if out and isinstance(out[-1], MediaSegment) and not part.startswith(" "):
                part = " " + part
            out.append(TextSegment(part))
    return out


def build_prompt(messages: list[Message]) -> list[Segment]:
    """The whole conversation as segments, ending with the open `\\n### Assistant:` the model continues.

    The last message must be the user's. Earlier media (uploaded or generated) stay in place, so every turn
    re-encodes them, as the released demo does.
    """
    if not messages or messages[-1].role != "user":
        raise ValueError("the conversation must end with a user message")
    raw: list[Segment] = []
    expect = "user"
    for i, msg in enumerate(messages):
        if msg.role != expect:
            raise ValueError("messages must alternate user / assistant, starting with the user")
        if msg.role == "user":
            raw.append(TextSegment(HUMAN if i == 0 else NEXT_HUMAN))
            raw.extend(_parts(msg.content))
            raw.append(TextSegment(ASSISTANT))
            expect = "assistant"
        else:
            raw.append(TextSegment(" "))
            raw.extend(_parts(msg.content))
            raw.append(TextSegment(TURN_END))
            expect = "user"
    # Merge neighbouring text so each run of text is tokenised in one piece.
    merged: list[Segment] = []
    for seg in raw:
        if isinstance(seg, TextSegment) and merged and isinstance(merged[-1], TextSegment):
            merged[-1] = TextSegment(merged[-1].text + seg.text)
        else:
            merged.append(seg)
    return merged
