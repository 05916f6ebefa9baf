"""The chat UI: layout, event handlers and how an answer is drawn. No model code: `ChatService` does that."""

from __future__ import annotations

import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import gradio as gr

from nextgpt.conversation import Message
from nextgpt.generation import ChatResult, MediaFailed, MediaProgress, MediaReady, SignalDetected, TextDelta
from nextgpt.media import Media, MediaError, guess_modality
from nextgpt.serve import ChatService

from .examples import examples, scripted_turns
from .history import export_zip, split_last_turn, to_messages
from .settings import AppSettings

OUTPUT_CHOICES = [("Auto", "auto"), ("Text only", "text"), ("Image", "image"), ("Video", "video"), ("Audio", "audio")]
ICONS = {"image": "🖼️", "video": "🎬", "audio": "🔊"}

HEADER = """# NExT-GPT: any-to-any chat
Attach images, audio or video, ask anything, and the model answers in text, and with an image, a video or a
sound when it decides to (or when you pick an **output** below). It streams its words; a decoder then draws the
media it asked for. Every turn sees the whole conversation, media included.
"""
UNTRAINED = (
    "⚠️ **This is the untrained `tiny` model** (random weights, for testing the app): its words and media are "
    "noise. Start the app with `--model` pointing at a trained model."
)


def _gpu(fn):
    """`spaces.GPU` on Hugging Face ZeroGPU hardware, a no-op everywhere else."""
    try:
        import spaces
    except ImportError:
        return fn
    return spaces.GPU(duration=180)(fn)


def _note(title: str, content: str = "", status: str | None = None) -> dict:
    meta = {"title": title}
    if status:
        meta["status"] = status
    return {"role": "assistant", "content": content, "metadata": meta}


@dataclass
class Answer:
    """The assistant's side of one turn, redrawn after every event: text split around its media."""

    text: str = ""
    media: list[dict] = field(default_factory=list)  # {"offset", "modality", "state", ...}
    tail: list[dict] = field(default_factory=list)

    def apply(self, event) -> None:
        if isinstance(event, TextDelta):
            self.text += event.text
        elif isinstance(event, SignalDetected):
            self.media.append({"offset": event.text_offset, "modality": event.modality, "state": "pending", "step": 0})
        elif isinstance(event, MediaProgress):
            item = self._current(event.modality)
            item.update(step=event.step, total=event.total)
        elif isinstance(event, MediaReady):
            item = self._current(event.modality)
            item.update(state="ready", path=event.path, info=event.info, offset=event.text_offset)
        elif isinstance(event, MediaFailed):
            item = self._current(event.modality)
            item.update(state="failed", message=event.message, offset=event.text_offset)
        elif isinstance(event, ChatResult):
            self.text = event.text
            tokens = " ".join(event.signal_tokens) if event.signal_tokens else "none (a text-only answer)"
            self.tail = [_note(f"Signal tokens: {tokens}")]

    @property
    def pending(self) -> bool:
        return any(item["state"] == "pending" for item in self.media)

    def _current(self, modality: str) -> dict:
        for item in self.media:
            if item["modality"] == modality and item["state"] == "pending":
                return item
        item = {"offset": len(self.text), "modality": modality, "state": "pending", "step": 0}
        self.media.append(item)
        return item

    def messages(self) -> list[dict]:
        out, start = [], 0
        for item in sorted(self.media, key=lambda i: i["offset"]):
            chunk = self.text[start : item["offset"]].strip()
            if chunk:
                out.append({"role": "assistant", "content": chunk})
            start = max(start, item["offset"])
            out += self._media_messages(item)
        rest = self.text[start:].strip()
        if rest:
            out.append({"role": "assistant", "content": rest})
        if not out:
            out.append({"role": "assistant", "content": "…"})
        return out + self.tail

    @staticmethod
    def _media_messages(item: dict) -> list[dict]:
        m = item["modality"]
        if item["state"] == "pending":
            total = item.get("total")
            progress = f"step {item['step']} of {total}" if total and item["step"] else "starting"
            return [_note(f"{ICONS[m]} Making {'an' if m == 'image' or m == 'audio' else 'a'} {m}: {progress}",
                          status="pending")]
        if item["state"] == "failed":
            return [_note(f"⚠️ {item['message']}")]
        info = item["info"]
        if m == "audio":
            size = f"{info.get('seconds')} s at 16 kHz"
        else:
            w, h = info.get("size", ("?", "?"))
            size = f"{info['frames']} frames at {w}×{h}" if m == "video" else f"{w}×{h}"
        title = (f"{ICONS[m]} {m} · seed {info.get('seed')} · {info.get('steps')} steps · "
                 f"guidance {info.get('guidance')} · {info.get('seconds_taken', 0):.1f} s")
        details = f"{size}. The same seed and settings give the same {m}."
        if info.get("nsfw_content_detected"):
            details += " The decoder's safety checker blanked this image."
        return [{"role": "assistant", "content": {"path": item["path"]}}, _note(title, details, status="done")]


def build_demo(service: ChatService, settings: AppSettings) -> gr.Blocks:
    cfg = service.config
    dec = cfg.decoders
    gen = cfg.generation
    outputs_dir = Path(settings.outputs)
    outputs_dir.mkdir(parents=True, exist_ok=True)
    allowed_roots = [Path(tempfile.gettempdir()).resolve(), outputs_dir.resolve(),
                     (Path(__file__).resolve().parents[1] / "assets").resolve()]
    limits = service.limits

    def run_turn(message, history, output, seed, randomize_seed, temperature, top_p, max_new_tokens,
                 image_guidance, image_steps, image_size, video_guidance, video_steps, video_frames,
                 audio_guidance, audio_steps, audio_seconds):
        """One turn: check the input, echo it, stream the answer. Yields (history, textbox)."""
        history = list(history or [])
        if isinstance(message, str):
            message = {"text": message, "files": []}
        message = message or {"text": "", "files": []}
        try:
            text = service.check_text(message.get("text") or "")
            files = [f if isinstance(f, str) else (f.get("path") if isinstance(f, dict) else str(f))
                     for f in (message.get("files") or [])]
            media = [Media(guess_modality(p), p) for p in files]
            if not text.strip() and not media:
                raise MediaError("type a message or attach a file first")
            messages = to_messages(history, allowed_roots)
            service.check_media(media)
        except MediaError as e:
            yield history + [_note(f"⚠️ Could not use your message: {e}")], message  # back in the box
            return
        history += [{"role": "user", "content": {"path": m.path}} for m in media]
        if text.strip():
            history.append({"role": "user", "content": text})
        parts = [*media, text] if text.strip() else media
        if messages and messages[-1].role == "user":
            messages[-1].content.extend(parts)
        else:
            messages.append(Message("user", parts))
        yield history, gr.MultimodalTextbox(value=None, interactive=False)  # locked until `_unlock`

        seed = random.randint(0, 2**31 - 1) if randomize_seed else int(seed)
        options = dict(
            seed=seed, temperature=float(temperature), top_p=float(top_p), max_new_tokens=int(max_new_tokens),
            output=output, out_dir=outputs_dir,
            decoder_options={
                "image": dict(guidance_scale=image_guidance, num_inference_steps=int(image_steps),
                              height=int(image_size), width=int(image_size)),
                "video": dict(guidance_scale=video_guidance, num_inference_steps=int(video_steps),
                              num_frames=int(video_frames)),
                "audio": dict(guidance_scale=audio_guidance, num_inference_steps=int(audio_steps),
                              audio_length_s=float(audio_seconds)),
            },
        )
        answer = Answer()
        events = service.chat(messages, **options)
        shown = time.monotonic()  # the echo above
        _poll_every(demo, settings.queue_poll_busy_s)  # see AppSettings.queue_poll_s
        try:
            for event in events:
                answer.apply(event)
                # Each yield is a render, a diff and a message to every browser, and costs a nano turn ~10 ms:
                # at most one update per stream interval, except that a decoder's start and a media item's end
                # show at once.
                now = time.monotonic()
                at_once = isinstance(event, (MediaReady, MediaFailed)) or (
                    isinstance(event, MediaProgress) and event.step == 0)
                if isinstance(event, ChatResult) or (not at_once and now - shown < settings.stream_interval_s):
                    continue  # (the result is the last event: the final update below shows it)
                if isinstance(event, (MediaReady, MediaFailed)) and not answer.pending:
                    continue  # media decode after the text, one by one: the result, and the final update, follow
                shown = now
                # The box is already empty and locked: an empty value, not gr.skip(), which Gradio 6 handles as a
                # property update, rebuilding the component and its API schema each time (3 ms against 0.5 ms).
                yield history + answer.messages(), None
        except Exception as e:  # the model failed mid-answer: keep what was shown and say what happened
            answer.tail = [_note(f"⚠️ The answer stopped: {type(e).__name__}: {e}")]
        finally:
            events.close()  # a cancelled turn stops generation at its next step
            _poll_every(demo, settings.queue_poll_s)
        yield history + answer.messages(), None

    run_turn = _gpu(run_turn)

    def retry(history, *settings_values):
        before, message = split_last_turn(history)
        yield from run_turn(message, before, *settings_values)

    def edit(history, edit_data: gr.EditData, *settings_values):
        index = edit_data.index[0] if isinstance(edit_data.index, (list, tuple)) else edit_data.index
        yield from run_turn({"text": edit_data.value, "files": []}, history[:index], *settings_values)

    def undo(history):
        before, message = split_last_turn(history)
        return before, gr.MultimodalTextbox(value=message, interactive=True)

    def script(history, *settings_values):
        """A scripted multi-turn conversation for presenters: each turn runs on the answer before it, with the output
        its script gives (the Output radio is not an input here)."""
        for message, output in scripted_turns(service.config.name):
            last = list(history)
            for last, _ in run_turn(message, history, output, *settings_values):
                yield last, None
            history = last
        yield history, None

    def export(history):
        return gr.DownloadButton(value=export_zip(history), visible=True)

    size_d, frames_d, secs_d = dec["image"].height, dec["video"].num_frames, dec["audio"].audio_length_s
    limits_text = (
        f"Limits: {limits.max_files} files per message, {settings.max_file_mb} MB each, images up to "
        f"{limits.media.max_pixels / 1e6:.0f} megapixels, audio and video up to {limits.media.max_duration_s:.0f} s, "
        f"{limits.max_prompt_chars:,} characters per message; the model sees the last {limits.max_history_turns} turns. "
        "Formats: PNG/JPEG/WebP images, WAV/FLAC/OGG/MP3 audio, MP4/WebM/MOV video."
    )

    with gr.Blocks(title="NExT-GPT chat", delete_cache=(1800, 3600)) as demo:
        gr.Markdown(HEADER)
        if service.untrained:
            gr.Markdown(UNTRAINED, elem_id="untrained-notice")
        chatbot = gr.Chatbot(label="NExT-GPT", height=560, editable="user", buttons=["copy", "copy_all"],
                             elem_id="chatbot", placeholder="Attach media or type a message to start.")
        textbox = gr.MultimodalTextbox(
            file_count="multiple", file_types=["image", "audio", "video"], sources=["upload"],
            placeholder="Ask anything; attach images, audio or video…", show_label=False, autofocus=True,
            elem_id="message",
        )
        with gr.Row():
            output = gr.Radio(OUTPUT_CHOICES, value="auto", label="Output",
                              info="Auto lets the model decide; the others force or forbid media.", scale=3)
            stop = gr.Button("⏹ Stop", variant="stop", scale=1)
            clear = gr.Button("🗑 Clear", scale=1)
            export_btn = gr.Button("⬇ Export", scale=1)
            download = gr.DownloadButton("Download conversation (.zip)", visible=False, scale=1)
        with gr.Accordion("Settings", open=False):
            with gr.Row():
                seed = gr.Number(0, label="Seed", precision=0, info="Same seed and settings, same answer.")
                randomize_seed = gr.Checkbox(False, label="Randomize seed each turn")
                temperature = gr.Slider(0.0, 2.0, gen.temperature, step=0.05, label="Temperature",
                                        info="0 = greedy decoding.")
                top_p = gr.Slider(0.01, 1.0, gen.top_p, step=0.01, label="Top-p",
                                  info="The official demo uses 0.01: nearly greedy.")
                max_new_tokens = gr.Slider(8, max(512, gen.max_new_tokens), gen.max_new_tokens, step=1,
                                           label="Max new tokens")
            with gr.Row():
                image_guidance = gr.Slider(1, 15, dec["image"].guidance_scale, step=0.5, label="Image guidance")
                image_steps = gr.Slider(1, 100, dec["image"].num_inference_steps, step=1, label="Image steps")
                image_size = gr.Slider(max(32, size_d // 2), size_d * 2, size_d, step=8, label="Image size (px)")
            with gr.Row():
                video_guidance = gr.Slider(1, 15, dec["video"].guidance_scale, step=0.5, label="Video guidance")
                video_steps = gr.Slider(1, 100, dec["video"].num_inference_steps, step=1, label="Video steps")
                video_frames = gr.Slider(max(2, frames_d // 2), frames_d * 2, frames_d, step=1, label="Video frames",
                                         info="The content changes with the frame count.")
            with gr.Row():
                audio_guidance = gr.Slider(1, 15, dec["audio"].guidance_scale, step=0.5, label="Audio guidance")
                audio_steps = gr.Slider(1, 100, dec["audio"].num_inference_steps, step=1, label="Audio steps")
                audio_seconds = gr.Slider(0.5, max(10.0, secs_d * 2), secs_d, step=0.01, label="Audio length (s)")
        gr.Markdown(limits_text, elem_id="limits")
        settings_inputs = [seed, randomize_seed, temperature, top_p, max_new_tokens, image_guidance, image_steps,
                           image_size, video_guidance, video_steps, video_frames, audio_guidance, audio_steps,
                           audio_seconds]
        with gr.Row():
            gr.Examples(examples(service.config.name), inputs=[textbox, output], label="Examples: one per direction")
            demo_btn = gr.Button("▶ Multi-turn demo", scale=0)

        model_events = dict(concurrency_limit=1, concurrency_id="model")  # one generation at a time, queued
        turn = textbox.submit(run_turn, [textbox, chatbot, output, *settings_inputs], [chatbot, textbox],
                              api_name="chat", **model_events)
        again = chatbot.retry(retry, [chatbot, output, *settings_inputs], [chatbot, textbox],
                              api_visibility="undocumented", **model_events)
        edited = chatbot.edit(edit, [chatbot, output, *settings_inputs], [chatbot, textbox],
                              api_visibility="undocumented", **model_events)
        scripted = demo_btn.click(script, [chatbot, *settings_inputs], [chatbot, textbox],
                                  api_visibility="undocumented", **model_events)
        running = [turn, again, edited, scripted]
        # The box unlocks in its own quick event after a turn, as gr.ChatInterface does: a property update inside
        # the turn rebuilds the component on the turn's time (3 ms). (It locks in the turn's first update: a lock
        # of its own could land after this unlock.)
        for event in running:
            event.then(_unlock, None, textbox, queue=False, api_visibility="undocumented")
        stop.click(_unlock, None, textbox, cancels=running, queue=False, api_visibility="undocumented")
        chatbot.undo(undo, chatbot, [chatbot, textbox], api_visibility="undocumented", queue=False)
        clear.click(lambda: ([], gr.DownloadButton(visible=False)), None, [chatbot, download], cancels=running,
                    queue=False, api_visibility="undocumented")
        export_btn.click(export, chatbot, download, api_visibility="undocumented")
    return configure_queue(demo, settings)


def _unlock():
    return gr.MultimodalTextbox(interactive=True)


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
