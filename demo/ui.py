"""The chat UI: layout, event handlers and the page's style. No model code: `ChatService` does that; how an
answer is drawn is `answer.py`."""

from __future__ import annotations

import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import quote

import gradio as gr

from nextgpt.events import ChatResult, MediaFailed, MediaProgress, MediaReady, TextDelta
from nextgpt.media import SUFFIXES, MediaError
from nextgpt.serve import ChatService, TurnOptions

from .answer import Answer, note, refused, stopped
from .examples import examples, scripted_turns
from .history import as_shown, as_typed, export_zip, split_last_turn, to_messages
from .settings import AppSettings

OUTPUT_CHOICES = [("Auto", "auto"), ("Text only", "text"), ("Image", "image"), ("Video", "video"), ("Audio", "audio")]
# Button icons, drawn from SVG by the page's style: no emoji font needed, and no files for Gradio's cache to expire.
ICONS = {
    "export": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16" fill="none" stroke="#4b5563" '
              'stroke-width="1.6" stroke-linecap="round" stroke-linejoin="round">'
              '<path d="M8 2v8M4.5 6.5 8 10l3.5-3.5M2.5 11v2.5h11V11"/></svg>',
    "new-chat": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16" fill="none" stroke="#4b5563" '
                'stroke-width="1.6" stroke-linecap="round"><path d="M8 3v10M3 8h10"/></svg>',
    "multi-turn": '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 16 16">'
                  '<path d="M4.5 2.8v10.4L13 8z" fill="#4b5563"/></svg>',
}

# The page's own style, carried by the page itself (a hidden HTML block), so it holds wherever the app is launched.
STYLE = """
#page-style { display: none; }
/* Media in the chat at a readable size that fits the chat, on a desktop and on a phone. */
#chatbot .message.component img, #chatbot .message.component video {
  width: min(100%, var(--media-size)) !important; height: auto !important; max-height: 50vh !important;
  object-fit: contain;
}
#chatbot { --media-size: 320px; }
#chatbot .message.component .image-frame, #chatbot .message.component .image-container { width: 100%; }
/* Small media (nano's 64 px) are scaled up crisp; `crisp` is set by the script below. */
#chatbot img.crisp, #chatbot video.crisp { image-rendering: pixelated; }
/* "New chat" is the one clear. */
#chatbot button[aria-label="Clear"] { display: none; }
#examples .gallery { display: flex; flex-direction: column; gap: 6px; }
#examples .gallery-item, #examples button { width: 100%; text-align: left; white-space: normal; }
#header p { margin: 0; }
#export::before, #new-chat::before, #multi-turn::before {
  content: ""; display: inline-block; width: 1.1em; height: 1.1em; margin-right: 0.45em; flex: none;
  background: center / contain no-repeat;
}
""" + "".join(f'#{name}::before {{ background-image: url("data:image/svg+xml,{quote(svg)}"); }}\n'
              for name, svg in ICONS.items())
# Short clips loop; a generated clip starts by itself (muted). Media scaled up at least twice are drawn crisp.
SCRIPT = """
const look = () => document.querySelectorAll('#chatbot video, #chatbot img').forEach((m) => {
  if (m.dataset.seen) return;
  m.dataset.seen = '1';
  const crisp = () => {
    const w = m.naturalWidth || m.videoWidth;
    if (w && w * 2 <= m.getBoundingClientRect().width) m.classList.add('crisp');
  };
  m.addEventListener(m.tagName === 'VIDEO' ? 'loadedmetadata' : 'load', crisp);
  crisp();
  if (m.tagName === 'VIDEO') {
    m.loop = true;
    m.playsInline = true;
    if (m.closest('.bot-row')) { m.muted = true; m.play().catch(() => {}); }
  }
});
new MutationObserver(look).observe(document.body, { childList: true, subtree: true });
look();
// On a phone the examples sit below the chat: bring the chat and the loaded message box into view.
document.addEventListener('click', (e) => {
  if (!e.target.closest('#examples')) return;
  const chat = document.querySelector('#chatbot').getBoundingClientRect();
  const box = document.querySelector('#message');
  if (chat.top < 0 || box.getBoundingClientRect().bottom > window.innerHeight) box.scrollIntoView({ block: 'end' });
});
"""


def header(config) -> str:
    """A short header that says what the loaded model can do (from its config)."""
    about = config.description or "Attach images, sounds or videos and ask; it answers in text and media."
    return (f"## NExT-GPT: any-to-any chat\n**Model: {config.name}.** {about} "
            "Type a message, attach a picture, sound or video, or pick an example.")


# The Settings panel's inputs, in the order the turn handlers receive them.
SETTINGS = ("seed", "randomize_seed", "temperature", "top_p", "max_new_tokens", "image_guidance", "image_steps",
            "image_size", "video_guidance", "video_steps", "video_frames", "audio_guidance", "audio_steps",
            "audio_seconds")


def turn_options(output: str, settings) -> TurnOptions:
    """The Output choice and the Settings panel's values as a turn's options."""
    values = dict(zip(SETTINGS, settings))
    randomize = values.pop("randomize_seed")
    return TurnOptions(output=output, **{**values, "seed": None if randomize else values["seed"]})


def calm_stop() -> gr.Button:
    """Stop while nothing runs: grey and disabled, not a red button that does nothing."""
    return gr.Button(variant="secondary", interactive=False)


def _gpu(fn):
    """`spaces.GPU` on Hugging Face ZeroGPU hardware, a no-op everywhere else."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=180)(fn)


def build_demo(service: ChatService, settings: AppSettings) -> gr.Blocks:
    cfg = service.config
    dec = cfg.decoders
    gen = cfg.generation
    outputs_dir = Path(settings.outputs)
    outputs_dir.mkdir(parents=True, exist_ok=True)
    exports_dir = outputs_dir / "exports"
    exports_dir.mkdir(exist_ok=True)
    allowed_roots = [Path(tempfile.gettempdir()).resolve(), outputs_dir.resolve(),
                     (Path(__file__).resolve().parents[1] / "assets").resolve()]
    limits = service.limits
    # Stop asks the session's running turn to end rather than cancelling it: the turn's own last update is then the
    # stopped chat, so no update already on its way to the browser can land after it. One flag per running turn.
    stops: dict[str, threading.Event] = {}

    def arm(request: gr.Request) -> None:
        stops[request.session_hash] = threading.Event()

    def until_stopped(updates, request: gr.Request):
        """A turn's updates, until Stop: then the turn is closed and its last update is the chat as Stop leaves it."""
        stop = stops.get(request.session_hash) or threading.Event()
        last = None
        try:
            for last in updates:
                if stop.is_set():
                    break
                yield last
        finally:
            updates.close()
            if stops.get(request.session_hash) is stop:
                del stops[request.session_hash]
        if stop.is_set() and last is not None:
            yield stopped(last[0]), None

    def run_turn(message, history, output, *values):
        """One turn: check the input, echo it, stream the answer. Yields (history, textbox)."""
        history = list(history or [])
        if isinstance(message, str):
            message = {"text": message, "files": []}
        message = message or {"text": "", "files": []}
        files = []
        try:
            files = [f if isinstance(f, str) else (f.get("path") if isinstance(f, dict) else str(f))
                     for f in (message.get("files") or [])]
            user = service.user_message(message.get("text") or "", files)
            messages = to_messages(history, allowed_roots)
        except MediaError as e:
            yield history + refused(message.get("text") or "", files, str(e)), message  # back in the box
            return
        history += [{"role": "user", "content": {"path": m.path}} for m in user.media]
        if user.text.strip():
            history.append({"role": "user", "content": as_shown(user.text)})
        yield history, gr.MultimodalTextbox(value=None, interactive=False)  # locked until `idle`

        answer = Answer()
        events = service.turn(messages, user, turn_options(output, values), outputs_dir)
        shown = time.monotonic()  # the echo above
        words = False  # whether the answer's first words have been shown
        _poll_every(demo, settings.queue_poll_busy_s)  # see AppSettings.queue_poll_s
        try:
            for event in events:
                answer.apply(event)
                # Each yield is a render, a diff and a message to every browser: at most one update per stream
                # interval, except that the first words, a decoder's start and a media item's end show at once.
                now = time.monotonic()
                at_once = isinstance(event, (MediaReady, MediaFailed)) or (
                    isinstance(event, MediaProgress) and event.step == 0 and event.sample == 1) or (
                    isinstance(event, TextDelta) and not words)
                words = words or isinstance(event, TextDelta)
                if isinstance(event, ChatResult) or (not at_once and now - shown < settings.stream_interval_s):
                    continue  # (the result is the last event: the final update below shows it)
                if isinstance(event, (MediaReady, MediaFailed)) and not answer.pending:
                    continue  # media decode after the text, one by one: the result, and the final update, follow
                shown = now
                # The box is already empty and locked: an empty value, not gr.skip(), which Gradio 6 handles as a
                # property update, rebuilding the component and its API schema each time (3 ms against 0.5 ms).
                yield history + answer.messages(), None
        except Exception as e:  # the model failed mid-answer: keep what was shown and say what happened
            answer.tail = [note(f"The answer stopped: {type(e).__name__}: {e}")]
        finally:
            events.close()  # a cancelled turn stops generation at its next step
            _poll_every(demo, settings.queue_poll_s)
        yield history + answer.messages(), None

    gpu_turn = _gpu(run_turn)

    def stoppable_turn(request: gr.Request, *inputs):
        yield from until_stopped(gpu_turn(*inputs), request)

    def retry(history, request: gr.Request):
        """Retry: the last user message goes back into the (locked) box, and the turn runs again from there."""
        before, message = split_last_turn(history)
        return before, *busy(request, message)

    def edit(history, edit_data: gr.EditData, request: gr.Request):
        index = edit_data.index[0] if isinstance(edit_data.index, (list, tuple)) else edit_data.index
        return history[:index], *busy(request, {"text": as_typed(edit_data.value), "files": []})

    def undo(history):
        before, message = split_last_turn(history)
        return before, gr.MultimodalTextbox(value=message, interactive=True), export(before)

    def script_turns(history, settings_values):
        for message, output in scripted_turns(service.config.name):
            last = list(history)
            for last, _ in gpu_turn(message, history, output, *settings_values):
                yield last, None  # the box stays locked (`busy`) until the whole script is done
            history = last
        yield history, None

    def script(request: gr.Request, history, *settings_values):
        """A scripted multi-turn conversation for presenters: each turn runs on the answer before it, with the output
        its script gives (the Output radio is not an input here). Stop ends the whole script."""
        yield from until_stopped(script_turns(history, settings_values), request)

    def export(history):
        """Export always holds the conversation as it is now: refreshed whenever a turn ends or the chat changes."""
        if not history:
            return gr.DownloadButton(value=None, interactive=False)
        folder = tempfile.mkdtemp(prefix="export-", dir=exports_dir)
        return gr.DownloadButton(value=export_zip(history, folder, allowed_roots), interactive=True)

    # While a turn runs, the box is locked, Stop is live and Export waits for the turn's end; `idle` undoes it.
    def busy(request: gr.Request, message=None):
        arm(request)
        box = gr.MultimodalTextbox(interactive=False) if message is None else gr.MultimodalTextbox(
            value=message, interactive=False)
        return box, gr.Button(variant="stop", interactive=True), gr.DownloadButton(interactive=False)

    def idle(history):
        return gr.MultimodalTextbox(interactive=True), calm_stop(), export(history)

    def stop_turn(request: gr.Request):
        if request.session_hash in stops:
            stops[request.session_hash].set()
        return calm_stop()

    def new_chat(keep_box: bool = False):
        """An empty chat; an example's click keeps the box, which the example fills."""
        box = gr.MultimodalTextbox(interactive=True) if keep_box else gr.MultimodalTextbox(value=None, interactive=True)
        return [], box, calm_stop(), gr.DownloadButton(value=None, interactive=False)

    size_d, frames_d, secs_d = dec["image"].height, dec["video"].num_frames, dec["audio"].audio_length_s
    limits_text = (
        f"Limits: {limits.max_files} files per message, {settings.max_file_mb} MB each, images up to "
        f"{limits.media.max_pixels / 1e6:.0f} megapixels, audio and video up to {limits.media.max_duration_s:.0f} s, "
        f"{limits.max_prompt_chars:,} characters per message; the model sees the last {limits.max_history_turns} turns. "
        "Formats: " + "; ".join(f"{m} " + " ".join(x.lstrip(".") for x in group) for m, group in SUFFIXES.items()) + "."
    )

    with gr.Blocks(title="NExT-GPT chat", delete_cache=(1800, 3600)) as demo:
        gr.HTML(f"<style>{STYLE}</style>", js_on_load=SCRIPT, elem_id="page-style")
        gr.Markdown(header(cfg), elem_id="header")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3, min_width=340):
                chatbot = gr.Chatbot(label="NExT-GPT", height=520, editable="user", buttons=["copy", "copy_all"],
                                     elem_id="chatbot", placeholder="Pick an example, or type a message to start.")
                textbox = gr.MultimodalTextbox(
                    file_count="multiple", file_types=["image", "audio", "video"], sources=["upload"],
                    placeholder="Type a message; attach images, audio or video…", show_label=False,
                    autofocus=True, elem_id="message",
                )
                with gr.Row(elem_id="controls"):
                    output = gr.Radio(OUTPUT_CHOICES, value="auto", label="Output", scale=4, min_width=300,
                                      info="Auto lets the model decide; the others force or forbid media.")
                    stop = gr.Button("Stop", variant="secondary", interactive=False, scale=1, min_width=90,
                                     elem_id="stop")
                    download = gr.DownloadButton("Export", interactive=False, scale=1, min_width=110,
                                                 elem_id="export")
            with gr.Column(scale=1, min_width=300, elem_id="side"):
                with gr.Row():
                    new_chat_btn = gr.Button("New chat", size="sm", min_width=100, elem_id="new-chat")
                    demo_btn = gr.Button("Multi-turn demo", size="sm", min_width=150, elem_id="multi-turn")
                shown = examples(cfg.name)
                example_list = gr.Examples([[e.message, e.output] for e in shown], inputs=[textbox, output],
                                           example_labels=[e.label for e in shown], examples_per_page=len(shown),
                                           label="Examples: each starts a new chat", elem_id="examples")
        w = {}  # the Settings panel's inputs, by the names in SETTINGS
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                w["seed"] = gr.Number(0, label="Seed", precision=0, info="Same seed and settings, same answer.")
                w["randomize_seed"] = gr.Checkbox(False, label="Randomize seed each turn")
                w["temperature"] = gr.Slider(0.0, 2.0, gen.temperature, step=0.05, label="Temperature",
                                             info="0 = greedy decoding.")
                w["top_p"] = gr.Slider(0.01, 1.0, gen.top_p, step=0.01, label="Top-p",
                                       info="The official demo uses 0.01: nearly greedy.")
                w["max_new_tokens"] = gr.Slider(8, max(512, gen.max_new_tokens), gen.max_new_tokens, step=1,
                                                label="Max new tokens")
            with gr.Row():
                w["image_guidance"] = gr.Slider(1, 15, dec["image"].guidance_scale, step=0.5, label="Image guidance")
                w["image_steps"] = gr.Slider(1, 100, dec["image"].num_inference_steps, step=1, label="Image steps")
                w["image_size"] = gr.Slider(max(32, size_d // 2), size_d * 2, size_d, step=8,
                                            label="Image size (px)")
            with gr.Row():
                w["video_guidance"] = gr.Slider(1, 15, dec["video"].guidance_scale, step=0.5, label="Video guidance")
                w["video_steps"] = gr.Slider(1, 100, dec["video"].num_inference_steps, step=1, label="Video steps")
                w["video_frames"] = gr.Slider(max(2, frames_d // 2), frames_d * 2, frames_d, step=1,
                                              label="Video frames", info="The content changes with the frame count.")
            with gr.Row():
                w["audio_guidance"] = gr.Slider(1, 15, dec["audio"].guidance_scale, step=0.5, label="Audio guidance")
                w["audio_steps"] = gr.Slider(1, 100, dec["audio"].num_inference_steps, step=1, label="Audio steps")
                w["audio_seconds"] = gr.Slider(0.5, max(10.0, secs_d * 2), secs_d, step=0.01,
                                               label="Audio length (s)")
        gr.Markdown(limits_text, elem_id="limits")
        settings_inputs = [w[name] for name in SETTINGS]
        model_events = dict(concurrency_limit=1, concurrency_id="model")  # one generation at a time, queued
        quick = dict(queue=False, api_visibility="undocumented")
        turn_inputs = [textbox, chatbot, output, *settings_inputs]
        controls = [textbox, stop, download]
        # Each turn: lock the controls (at once), run (queued), unlock them and refresh the export.
        turn = textbox.submit(busy, None, controls, **quick).then(
            stoppable_turn, turn_inputs, [chatbot, textbox], api_name="chat", **model_events)
        again = chatbot.retry(retry, chatbot, [chatbot, *controls], **quick).then(
            stoppable_turn, turn_inputs, [chatbot, textbox], api_visibility="undocumented", **model_events)
        edited = chatbot.edit(edit, chatbot, [chatbot, *controls], **quick).then(
            stoppable_turn, turn_inputs, [chatbot, textbox], api_visibility="undocumented", **model_events)
        scripted = demo_btn.click(busy, None, controls, **quick).then(
            script, [chatbot, *settings_inputs], [chatbot, textbox], api_visibility="undocumented", **model_events)
        running = [turn, again, edited, scripted]
        for event in running:
            event.then(idle, chatbot, controls, **quick)
        stop.click(stop_turn, None, stop, **quick)
        chatbot.undo(undo, chatbot, [chatbot, textbox, download], **quick)
        new_chat_btn.click(new_chat, None, [chatbot, *controls], cancels=running, **quick)
        chatbot.clear(new_chat, None, [chatbot, *controls], cancels=running, **quick)
        example_list.dataset.click(lambda: new_chat(keep_box=True), None, [chatbot, *controls], cancels=running,
                                   **quick)
    return configure_queue(demo, settings)


def configure_queue(blocks: gr.Blocks, settings: AppSettings) -> gr.Blocks:
    """One turn at a time, a bounded queue, polled every `settings.queue_poll_s`."""
    blocks.queue(max_size=settings.queue_size, default_concurrency_limit=1)
    _poll_every(blocks, settings.queue_poll_s)
    # The progress loop serves gr.Progress, which this app does not use.
    blocks._queue.progress_update_sleep_when_free = settings.queue_poll_busy_s
    return blocks


def _poll_every(blocks: gr.Blocks, seconds: float) -> None:
    """How often the queue looks for work. No public setting for it (gradio 6); test_app checks gradio reads it."""
    blocks._queue.sleep_when_free = seconds
