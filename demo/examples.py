"""Examples for presenters: one per direction, built from the files in `assets/examples/`.

NExT-GPT nano knows only its synthetic world (coloured shapes, their motions, tones named after colours), so it
gets examples from that world; any other model gets the real-world ones from the official repository.
"""

from __future__ import annotations

from pathlib import Path

ASSETS = Path(__file__).resolve().parents[1] / "assets" / "examples"


def _f(name: str) -> str:
    return str(ASSETS / name)


def _nano(model_name: str) -> bool:
    return model_name.startswith("nextgpt-nano")


def examples(model_name: str = "") -> list[list]:
    """[message, output] rows: text->image, text->video, text->audio, image->text, audio->text, video->text,
    and one cross-modal (image->audio)."""
    if _nano(model_name):
        return [
            [{"text": "Draw a red circle on the left.", "files": []}, "auto"],
            [{"text": "Make a video of a blue square moving up.", "files": []}, "auto"],
            [{"text": "Play a beeping yellow tone.", "files": []}, "auto"],
            [{"text": "What is in this picture?", "files": [_f("nano_green_triangle.png")]}, "auto"],
            [{"text": "What colour does this sound belong to?", "files": [_f("nano_cyan_beeping.wav")]}, "auto"],
            [{"text": "What happens in this video?", "files": [_f("nano_purple_star_left.mp4")]}, "auto"],
            [{"text": "Make a steady sound for this picture.", "files": [_f("nano_green_triangle.png")]}, "auto"],
        ]
    return [
        [{"text": "Show me a picture of a small bird sitting on a branch.", "files": []}, "image"],
        [{"text": "Make a short video of waves rolling onto a beach.", "files": []}, "video"],
        [{"text": "Let me hear a bird singing in a quiet forest.", "files": []}, "audio"],
        [{"text": "What is in this picture?", "files": [_f("bird_image.jpg")]}, "text"],
        [{"text": "What do you hear in this recording?", "files": [_f("bird_audio.wav")]}, "text"],
        [{"text": "Describe what happens in this video.", "files": [_f("test.mp4")]}, "text"],
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
