"""Examples for presenters: one per direction, built from the files in `assets/examples/`."""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "examples"


def examples() -> list[list]:
    """[message, output] rows: text->image, text->video, text->audio, image->text, audio->text, video->text."""
    f = lambda name: str(ASSETS / name)  # noqa: E731
    return [
        [{"text": "Show me a picture of a small bird sitting on a branch.", "files": []}, "image"],
        [{"text": "Make a short video of waves rolling onto a beach.", "files": []}, "video"],
        [{"text": "Let me hear a bird singing in a quiet forest.", "files": []}, "audio"],
        [{"text": "What is in this picture?", "files": [f("bird_image.jpg")]}, "text"],
        [{"text": "What do you hear in this recording?", "files": [f("bird_audio.wav")]}, "text"],
        [{"text": "Describe what happens in this video.", "files": [f("test.mp4")]}, "text"],
    ]


def scripted_turns() -> list[tuple[dict, str]]:
    """A multi-turn conversation: each turn builds on the media of the one before."""
    return [
        ({"text": "Show me a picture of a bird.", "files": [str(ASSETS / "bird_image.jpg")]}, "image"),
        ({"text": "Now make a sound that fits the picture you made.", "files": []}, "audio"),
        ({"text": "What did you just make?", "files": []}, "text"),
    ]
