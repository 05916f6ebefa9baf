"""Examples for presenters: one per direction, built from the files in `assets/examples/`.

NExT-GPT nano knows only its synthetic world (coloured shapes, their motions, tones named after colours), so it
gets examples from that world; any other model gets the real-world ones from the official repository.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "examples"


@dataclass(frozen=True)
class Example:
    direction: str  # what goes in and what comes out, e.g. "text → image"
    text: str
    files: tuple[str, ...] = ()
    output: str = "auto"  # the Output choice it runs with

    @property
    def label(self) -> str:
        return f"{self.direction}: {self.text}"

    @property
    def message(self) -> dict:
        return {"text": self.text, "files": list(self.files)}


def _f(name: str) -> str:
    return str(ASSETS / name)


def _nano(model_name: str) -> bool:
    return model_name.startswith("nextgpt-nano")


def examples(model_name: str = "") -> list[Example]:
    """text->image, text->video, text->audio, image->text, audio->text, video->text, and one cross-modal."""
    if _nano(model_name):
        return [
            Example("Text → image", "Draw a red circle on the left."),
            Example("Text → video", "Make a video of a blue square moving up."),
            Example("Text → sound", "Play a beeping yellow tone."),
            Example("Image → text", "What is in this picture?", (_f("nano_green_triangle.png"),)),
            Example("Sound → text", "What colour does this sound belong to?", (_f("nano_cyan_beeping.wav"),)),
            Example("Video → text", "What is in this video?", (_f("nano_purple_star_left.mp4"),)),
            Example("Image → sound", "Make a beeping sound for this picture.", (_f("nano_green_triangle.png"),)),
        ]
    return [
        Example("Text → image", "Show me a picture of a small bird sitting on a branch.", output="image"),
        Example("Text → video", "Make a short video of waves rolling onto a beach.", output="video"),
        Example("Text → sound", "Let me hear a bird singing in a quiet forest.", output="audio"),
        Example("Image → text", "What is in this picture?", (_f("bird_image.jpg"),), "text"),
        Example("Sound → text", "What do you hear in this recording?", (_f("bird_audio.wav"),), "text"),
        Example("Video → text", "Describe what happens in this video.", (_f("test.mp4"),), "text"),
    ]


def scripted_turns(model_name: str = "") -> list[tuple[dict, str]]:
    """A multi-turn conversation: each turn builds on the media of the one before."""
    if _nano(model_name):
        return [
            ({"text": "Draw a yellow star in the middle.", "files": []}, "auto"),
            ({"text": "Now make it blue.", "files": []}, "auto"),
            ({"text": "Now make a steady sound for it.", "files": []}, "auto"),
        ]
    return [
        ({"text": "Show me a picture of a bird.", "files": [_f("bird_image.jpg")]}, "image"),
        ({"text": "Now make a sound that fits the picture you made.", "files": []}, "audio"),
        ({"text": "What did you just make?", "files": []}, "text"),
    ]
