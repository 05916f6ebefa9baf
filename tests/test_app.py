"""The chat app through its API (gradio_client, the app served on 127.0.0.1) and in a real browser."""

import json
import shutil
import threading
import time
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from PIL import Image

from app_helpers import ARTIFACTS, _files, _text, resend
from nextgpt.conversation import Message



def test_streamed_answer_arrives_in_several_updates(client):
    job = client.submit({"text": "Show me a picture.", "files": []}, [], "image", 5, api_name="/chat")
    updates = list(job)
    assert len(updates) >= 3  # the echo, the decoder at work, the final state with the media
    notes = [m["metadata"]["title"] for chat, _ in updates[1:-1] for m in chat if m.get("metadata")]
    assert any(n.startswith("Making an image") for n in notes)
    final = job.outputs()[-1][0]
    assert final[0]["role"] == "user" and final[-1]["metadata"]["title"].startswith("Signal tokens: [IMG0]")
    assert len(_files(final)) == 1


def test_updates_are_coalesced_and_nothing_is_lost(nano_model, client, tmp_path):
    """With a long stream interval, tokens and decoder steps reach the client in a handful of updates."""
    from demo import AppSettings, build_demo
    from nextgpt.serve import ChatService

    settings = AppSettings(outputs=str(tmp_path), stream_interval_s=3600.0)
    slow = build_demo(ChatService(nano_model, settings.limits()), settings)
    slow.launch(server_name="127.0.0.1", server_port=None, prevent_thread_lock=True, quiet=True)
    try:
        request = ({"text": "Show me a picture.", "files": []}, [], "image", 4)
        job = Client(slow.local_url, verbose=False).submit(*request, api_name="/chat")
        updates = list(job)
        final = job.outputs()[-1][0]
    finally:
        slow.close()
    # the echo, the first words, the decoder's start and the final state with the media: not one per token or step
    assert len(updates) <= 4
    assert _text(final) == _text(client.predict(*request, api_name="/chat")[0])
    assert len(_files(final)) == 1


def test_queue_polls_at_the_apps_interval(app):
    """The app slows gradio's idle polling; the attributes it sets must still be the ones gradio's queue reads."""
    import inspect

    from gradio import queueing

    from demo import AppSettings

    source = inspect.getsource(queueing.Queue)
    assert "await asyncio.sleep(self.sleep_when_free)" in source
    assert "await asyncio.sleep(self.progress_update_sleep_when_free)" in source
    assert app[0]._queue.sleep_when_free == AppSettings().queue_poll_s


def test_queue_polls_rarely_while_a_turn_generates(app, client, monkeypatch):
    from demo import AppSettings

    demo, service = app
    seen = []
    chat = service.chat

    def watched(messages, **options):
        for event in chat(messages, **options):
            seen.append(demo._queue.sleep_when_free)
            yield event

    monkeypatch.setattr(service, "chat", watched)
    client.predict({"text": "Show me a picture.", "files": []}, [], "text", 0, api_name="/chat")
    assert seen and set(seen) == {AppSettings().queue_poll_busy_s}
    assert demo._queue.sleep_when_free == AppSettings().queue_poll_s  # idle again: a new turn starts at once


def test_each_turn_hands_free_heap_back(app, client, monkeypatch):
    """The soak's RSS creep is mostly pages glibc keeps after a turn frees them: the service trims after each turn,
    a cancelled one included."""
    _, service = app
    trimmed = threading.Event()

    class Libc:
        def malloc_trim(self, pad):
            trimmed.set()
            return 1

    monkeypatch.setattr(service, "_libc", Libc())
    client.predict({"text": "Show me a picture.", "files": []}, [], "text", 0, api_name="/chat")
    assert trimmed.wait(5)
    trimmed.clear()
    events = service.chat([Message("user", ["Hello."])], seed=0, output="text")
    next(events)
    events.close()  # a turn left early (Stop, a disconnect) trims too
    assert trimmed.wait(5)


def test_scripted_demo_runs_its_turns(app, client):
    """The presenters' button: each scripted turn runs with its own output, on the answer before it."""
    from demo.examples import scripted_turns

    demo, service = app
    script = next(fn for fn in demo.fns.values() if fn.name == "script")
    defaults = [block.value for block in script.inputs[1:]]  # the settings as the page starts
    history, _ = client.predict([], *defaults, api_name="/script")
    asked = [part["text"] for m in history if m["role"] == "user" for part in m["content"] if part["type"] == "text"]
    assert asked == [message["text"] for message, _ in scripted_turns(service.config.name)]
    assert [Path(f).suffix for f in _files(history)] == [".png", ".png", ".wav"], history


@pytest.mark.parametrize("modality", ["image", "video", "audio"])
def test_each_output_modality_returns_a_file(client, modality):
    history, _ = client.predict({"text": f"Make me a {modality}.", "files": []}, [], modality, 1, api_name="/chat")
    files = _files(history)
    assert len(files) == 1
    path = files[0]
    if modality == "image":
        Image.open(path).verify()
    elif modality == "video":
        from moviepy import VideoFileClip
        with VideoFileClip(path, audio=False) as clip:
            assert clip.duration > 0
    else:
        import soundfile as sf
        assert sf.info(path).duration > 0
    notes = [m["metadata"]["title"] for m in history if m.get("metadata")]
    assert any(f"{modality} · seed 1" in n for n in notes)  # provenance at hand
    assert any(n.startswith("Signal tokens: [") for n in notes)


def test_second_turn_sees_the_first_turns_image(client, app, media_dir, monkeypatch):
    _, service = app
    first, _ = client.predict({"text": "Draw this.", "files": [handle_file(str(media_dir / "bird_image.jpg"))]},
                              [], "image", 2, api_name="/chat")
    generated = Path(_files(first)[0]).name
    seen = []
    original = service.model.encoder.encode
    monkeypatch.setattr(service.model.encoder, "encode",
                        lambda items, *a, **k: (seen.extend(items), original(items, *a, **k))[1])
    client.predict({"text": "What did you draw?", "files": []}, resend(first), "text", 2, api_name="/chat")
    names = [Path(m.path).name for m in seen]
    assert "bird_image.jpg" in names and generated in names


def test_corrupt_upload_gives_a_message_and_keeps_history(client, tmp_path):
    earlier, _ = client.predict({"text": "Hello there.", "files": []}, [], "text", 3, api_name="/chat")
    fake = tmp_path / "photo.jpg"
    fake.write_text("this is not a picture")
    history, box = client.predict({"text": "What is this?", "files": [handle_file(str(fake))]}, resend(earlier),
                                  "auto", 3, api_name="/chat")
    assert history[: len(earlier)] == earlier
    assert len(history) == len(earlier) + 2  # "Not sent" on the user's side, then the reason in a bubble of its own
    assert "photo.jpg" in history[-2]["metadata"]["title"] and history[-2]["content"][0]["text"] == "What is this?"
    assert "photo.jpg" in history[-1]["metadata"]["title"] and "Could not use your message" in history[-1]["metadata"]["title"]
    assert box["text"] == "What is this?"  # the user's text is back in the box, to fix and resend


def test_two_clients_at_once_get_their_own_answers(app):
    url = app[0].local_url
    prompts = {11: "Write a line about the sea.", 12: "Write a line about the hills."}
    alone = {s: Client(url, verbose=False).predict({"text": p, "files": []}, [], "text", s, api_name="/chat")[0]
             for s, p in prompts.items()}
    together = {}

    def run(s):
        together[s] = Client(url, verbose=False).predict({"text": prompts[s], "files": []}, [], "text", s,
                                                         api_name="/chat")[0]

    threads = [threading.Thread(target=run, args=(s,)) for s in prompts]
    [t.start() for t in threads]
    [t.join(timeout=120) for t in threads]
    for s in prompts:
        assert _text(together[s]) == _text(alone[s])


@pytest.mark.skipif(not shutil.which("chromium"), reason="Debian chromium is not installed (.ci/run installs it)")
def test_browser_attach_send_stream_and_see_media(app, media_dir):
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 1300})
        page.goto(app[0].local_url, wait_until="networkidle")
        page.locator("#message input[type=file]").set_input_files(str(media_dir / "bird_image.jpg"))
        page.wait_for_selector("#message img", timeout=20000)  # the attachment preview
        page.get_by_label("Image", exact=True).check()
        page.locator("#message textarea").fill("Make a picture like this one.")
        sent = time.perf_counter()
        page.locator("#message textarea").press("Enter")
        page.wait_for_selector("#message textarea[disabled]", timeout=10000)  # the box locks while the turn runs
        page.wait_for_selector("#chatbot .message.bot", timeout=30000)  # streamed text appears
        first_text = time.perf_counter() - sent
        page.wait_for_selector("#chatbot .message.bot img", timeout=60000)  # then the generated image
        media = time.perf_counter() - sent
        page.wait_for_selector("#message textarea:not([disabled])", timeout=30000)  # and unlocks, empty
        assert page.locator("#message textarea").input_value() == ""
        assert "Make a picture like this one." in page.locator("#chatbot .message.user").last.inner_text()
        page.screenshot(path=str(ARTIFACTS / "app-browser.png"), full_page=True)
        browser.close()
    timings = {"first streamed text (s)": round(first_text, 3), "media shown (s)": round(media, 3)}
    (ARTIFACTS / "browser-timings.json").write_text(json.dumps(timings))
    print("browser timings:", timings)
    assert (ARTIFACTS / "app-browser.png").stat().st_size > 10_000
