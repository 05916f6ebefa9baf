"""The turn API under the UI: a user's message checked before the turn, and a turn's options as one object."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from nextgpt.conversation import Message
from nextgpt.media import Media, MediaError
from nextgpt.serve import ChatService, TurnOptions


def test_unset_turn_options_leave_the_model_defaults():
    options = TurnOptions().chat_options()
    assert options == dict(output="auto", seed=None, temperature=None, top_p=None, max_new_tokens=None,
                           decoder_options={"image": {}, "video": {}, "audio": {}})


def test_turn_options_as_the_decoders_take_them():
    options = TurnOptions(output="image", seed=3.0, image_size=96.0, image_steps=12.0, audio_seconds=2,
                          video_frames=6.0).chat_options()
    assert options["seed"] == 3 and options["output"] == "image"
    assert options["decoder_options"] == {"image": dict(num_inference_steps=12, height=96, width=96),
                                          "video": dict(num_frames=6), "audio": dict(audio_length_s=2.0)}


def test_settings_panel_values_become_turn_options():
    from demo.ui import SETTINGS, turn_options

    values = dict.fromkeys(SETTINGS, 1) | {"seed": 7, "randomize_seed": False}
    assert turn_options("audio", list(values.values())).seed == 7
    values["randomize_seed"] = True
    assert turn_options("audio", list(values.values())).seed is None  # the model draws the turn's seed


class _Service(ChatService):
    def __init__(self):
        super().__init__(SimpleNamespace(encoder=SimpleNamespace(encode=lambda items, limits: None)))
        self.seen = []

    def chat(self, messages, **options):
        self.seen.append((messages, options))
        yield "done"


def test_user_message_is_checked_before_the_turn(tmp_path):
    service = _Service()
    with pytest.raises(MediaError, match="type a message"):
        service.user_message("  ", [])
    with pytest.raises(MediaError, match="characters long"):
        service.user_message("x" * (service.limits.max_prompt_chars + 1), [])
    picture = tmp_path / "p.png"
    message = service.user_message("What is it?\x07", [str(picture)])
    assert message.role == "user" and message.media == [Media("image", str(picture))]
    assert message.text == "What is it?"  # control characters dropped


def test_a_turn_continues_a_last_user_message():
    service = _Service()
    earlier = [Message("user", ["Hi."]), Message("assistant", ["Hello."]), Message("user", ["A picture:"])]
    assert list(service.turn(earlier, Message("user", ["Draw it."]), TurnOptions(seed=1))) == ["done"]
    messages, options = service.seen[0]
    assert [m.content for m in messages] == [["Hi."], ["Hello."], ["A picture:", "Draw it."]]
    assert options["seed"] == 1 and options["out_dir"] is None


def test_a_later_service_has_its_config_at_once_and_turns_wait_for_its_model():
    """The app draws its page from the config, then loads the model: a turn that comes sooner waits for it."""
    import threading

    from nextgpt.config import get_preset
    from nextgpt.events import ChatResult

    service = ChatService.later("tiny")
    assert service.config.name == get_preset("tiny").name
    results = []
    turn = threading.Thread(target=lambda: results.extend(service.turn([], Message("user", ["Hi."]),
                                                                       TurnOptions(output="text", seed=0))))
    turn.start()
    turn.join(timeout=0.5)
    assert turn.is_alive() and not results  # waiting for the model
    service.load()  # builds the model, then warms it up (a text answer and one step of each decoder)
    turn.join(timeout=60)
    assert isinstance(results[-1], ChatResult)
    assert all(service.model.decoders.is_loaded(m) for m in service.config.decoders)


def test_a_later_service_says_why_its_model_did_not_load():
    service = ChatService.later("tiny", checkpoint="/no/such/checkpoint.safetensors")
    with pytest.raises(Exception):
        service.load()
    with pytest.raises(RuntimeError, match="the model could not be loaded"):
        service.model


def test_the_apps_page_imports_neither_torch_nor_the_model_libraries():
    """What `python app.py` imports before it serves its page: the UI and the config, not torch."""
    import subprocess
    import sys

    code = ("import sys, demo, nextgpt.serve, nextgpt.events\n"
            "print(sorted(m for m in ('torch', 'transformers', 'diffusers', 'peft') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
