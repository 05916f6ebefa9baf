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
TOKENIZATIONS = ("joined", "official")
MEDIA_SLOT = -200  # stands for a media item's embedding in token ids (LLaVA's IMAGE_TOKEN_INDEX)


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


def recent(messages: list[Message], turns: int | None) -> list[Message]:
    """The last `turns` user turns and what follows them (all of them when `turns` is None)."""
    users = [i for i, m in enumerate(messages) if m.role == "user"]
    if turns is None or len(users) <= turns:
        return messages
    return messages[users[-turns]:]


def build_prompt(messages: list[Message], style: str = "joined") -> list[Segment]:
    """The whole conversation as segments, ending with the open `\\n### Assistant:` the model continues.

    Each text segment is tokenized on its own. `style` says where text is cut (`LLMConfig.tokenization`):
    - "joined": every run of text between media is one segment;
    - "official": the pieces the official training tokenized one call each (`### Human: `, then each turn's text
      with its `\\n### Assistant:` or `\\n###`, later turns opening with `Human: `), and no space next to a media
      slot, as the slow LLaMA tokenizer of the time stripped spaces around an added token such as `<Img>`.

    The last message must be the user's. Earlier media (uploaded or generated) stay in place, so every turn
    re-encodes them, as the released demo does.
    """
    if style not in TOKENIZATIONS:
        raise ValueError(f"style must be one of {TOKENIZATIONS}, not {style!r}")
    if not messages or messages[-1].role != "user":
        raise ValueError("the conversation must end with a user message")
    expect = "user"
    for msg in messages:
        if msg.role != expect:
            raise ValueError("messages must alternate user / assistant, starting with the user")
        expect = "assistant" if msg.role == "user" else "user"
    if style == "official":
        return _official_segments(messages)
    raw: list[Segment] = []
    for i, msg in enumerate(messages):
        if msg.role == "user":
            raw.append(TextSegment(HUMAN if i == 0 else NEXT_HUMAN))
            raw.extend(_parts(msg.content))
            raw.append(TextSegment(ASSISTANT))
        else:
            raw.append(TextSegment(" "))
            raw.extend(_parts(msg.content))
            raw.append(TextSegment(TURN_END))
    # Merge neighbouring text so each run of text is tokenised in one piece.
    merged: list[Segment] = []
    for seg in raw:
        if isinstance(seg, TextSegment) and merged and isinstance(merged[-1], TextSegment):
            merged[-1] = TextSegment(merged[-1].text + seg.text)
        else:
            merged.append(seg)
    return merged


def _official_segments(messages: list[Message]) -> list[Segment]:
    """The official training's pieces: `### Human: ` | `{q}\\n### Assistant:` | `{a}\\n###` | `Human: {q}\\n###
    Assistant:` ..., each media item a slot of its own, spaces beside a slot dropped."""
    raw: list[Segment] = [TextSegment(HUMAN)]
    for i, msg in enumerate(messages):
        turn: list[Part] = [p for p in msg.content if p]
        if msg.role == "user" and i > 0:
            turn.insert(0, NEXT_HUMAN.lstrip())
        turn.append(ASSISTANT if msg.role == "user" else TURN_END)
        start = len(raw)
        for p in turn:  # the text of one turn is one tokenizer call, however many parts it has
            if isinstance(p, str) and len(raw) > start and isinstance(raw[-1], TextSegment):
                raw[-1] = TextSegment(raw[-1].text + p)
            else:
                raw.append(TextSegment(p) if isinstance(p, str) else MediaSegment(p))
    out: list[Segment] = []
    for k, seg in enumerate(raw):
        if isinstance(seg, TextSegment):
            text = seg.text
            if k > 0 and isinstance(raw[k - 1], MediaSegment):
                text = text.lstrip(" ")
            if k + 1 < len(raw) and isinstance(raw[k + 1], MediaSegment):
                text = text.rstrip(" ")
            if not text:
                continue
            seg = TextSegment(text)
        out.append(seg)
    return out
