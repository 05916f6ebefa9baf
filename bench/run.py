"""Benchmarks: where the time of one turn goes, what the wrapper and the app cost, and how cost grows.

    python -m bench.run [--model nano] [--repeat 5] [--json bench/results.json] [--skip app,cold] [--baseline M]
    python -m bench.run --compare OLD.json NEW.json     # ratios NEW / OLD, to judge a change on one machine

Every figure is the median of `--repeat` runs (after one warm-up). Nothing here is asserted: targets (wrapper
<= 1.05x, app <= 1.15x) are printed next to the measured ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch

from nextgpt.config import DEFAULT_MODEL

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT / "assets" / "examples"


def times_together(fns: dict, repeat: int) -> dict[str, list[float]]:
    """Each function's times, the functions run in turn: a machine's drift touches each alike."""
    for fn in fns.values():
        fn()  # warm-up
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def timed_together(fns: dict, repeat: int) -> dict[str, float]:
    """The median time of each function, run in turn."""
    return {name: statistics.median(t) for name, t in times_together(fns, repeat).items()}


def timed(fn, repeat: int) -> float:
    return timed_together({"fn": fn}, repeat)["fn"]


def _turn(model, text="Show me a picture.", media=()):
    from nextgpt import Media, Message

    return [Message("user", [*[Media(m, str(p)) for m, p in media], text])]


def first_word(model, messages) -> float:
    """Seconds from the `chat` call to its first streamed text, for a text answer."""
    from nextgpt.events import TextDelta

    start = time.perf_counter()
    for event in model.chat(messages, seed=0, output="text"):
        if isinstance(event, TextDelta):
            return time.perf_counter() - start
    raise RuntimeError("the answer had no text")


def stages(model, repeat: int, tmp: Path) -> dict:
    """Each stage of one any-to-any turn, measured on its own."""
    from nextgpt.conversation import build_prompt
    from nextgpt.media import Media, preprocess
    from nextgpt.render import write_media

    items = {"image": MEDIA / "bird_image.jpg", "audio": MEDIA / "bird_audio.wav", "video": MEDIA / "test.mp4"}
    out = {}
    for m, path in items.items():
        out[f"preprocess {m}"] = timed(lambda: preprocess(Media(m, str(path))), repeat)
        x = preprocess(Media(m, str(path)))[None]
        out[f"encode {m}"] = timed(lambda: model.encoder.embed(m, x), repeat)
    messages = _turn(model, media=[("image", items["image"])])
    segments = build_prompt(messages, model.config.llm.tokenization)
    model.embed_prompt(segments)  # fills the encoder's cache: the next line times assembly + projection only
    out["prompt assembly"] = timed(lambda: model.embed_prompt(segments), repeat)
    prompt = model.embed_prompt(segments)
    with torch.inference_mode():
        out["prefill"] = timed(lambda: model.llm(inputs_embeds=prompt), repeat)

    out["time to first word, text turn"] = timed(lambda: first_word(model, _turn(model, "What can you do?")), repeat)
    out["time to first word, after an image"] = timed(lambda: first_word(model, messages), repeat)
    n = 64
    gen_time = timed(lambda: model.generate(messages, seed=0, output="text", max_new_tokens=n, decode_media=False),
                     repeat)
    result = model.generate(messages, seed=0, output="text", max_new_tokens=n, decode_media=False)
    tokens = len(model.tokenizer(result.text, add_special_tokens=False).input_ids) or 1
    out["tokens per second"] = tokens / gen_time
    hidden = {m: torch.randn(1, len(ids), model.config.llm.hidden_size) for m, ids in model.signal_ids.items()}
    for m in ("image", "video", "audio"):
        with torch.inference_mode():
            out[f"output projection {m}"] = timed(lambda: model.project_signal(m, hidden[m], model.signal_ids[m]),
                                                  repeat)
            cond = model.project_signal(m, hidden[m], model.signal_ids[m])
        out[f"decoder {m}"] = timed(lambda: model.decoders.decode(m, cond, seed=0), repeat)
        media = model.decoders.decode(m, cond, seed=0)
        suffix = {"image": ".png", "video": ".mp4", "audio": ".wav"}[m]
        out[f"write {m}"] = timed(lambda: write_media(media, tmp / f"x{suffix}"), repeat)
    return out


def wrapper_overhead(model, repeat: int, tmp: Path) -> dict:
    """`generate` against the same work done by calling the parts directly (no thread, no streaming)."""
    from transformers import LogitsProcessorList, StoppingCriteriaList
    from transformers.generation.stopping_criteria import StopStringCriteria

    from nextgpt.conversation import build_prompt
    from nextgpt.generation import STOP, SignalRunLogitsProcessor, find_runs
    from nextgpt.render import write_media

    messages = _turn(model, media=[("image", MEDIA / "bird_image.jpg")])
    cfg = model.config.generation

    def direct():
        with torch.inference_mode():
            prompt = model.embed_prompt(build_prompt(messages, model.config.llm.tokenization))
            torch.manual_seed(0)
            processor = SignalRunLogitsProcessor(model.signal_ids, model.media_ids, model._stop_like, force="image",
                                                 max_runs=1, max_new_tokens=cfg.max_new_tokens)
            ids = model.llm.generate(
                inputs_embeds=prompt, attention_mask=torch.ones(prompt.shape[:2], dtype=torch.long),
                max_new_tokens=cfg.max_new_tokens, do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                top_k=None, logits_processor=LogitsProcessorList([processor]),
                stopping_criteria=StoppingCriteriaList([StopStringCriteria(model.tokenizer, [STOP])]),
                pad_token_id=model.tokenizer.pad_token_id, eos_token_id=model.tokenizer.eos_token_id,
            )[0].tolist()
            model.tokenizer.decode(ids, skip_special_tokens=True)
            for r in find_runs(ids, model.signal_ids):
                hidden = model.signal_hidden(prompt, ids, r.start, len(r.ids))
                cond = model.project_signal(r.modality, hidden, list(r.ids))
                write_media(model.decoders.decode(r.modality, cond, seed=0), tmp / "direct.png")

    t = timed_together({"library": lambda: model.generate(messages, seed=0, output="image", out_dir=tmp),
                        "parts": direct}, repeat)
    library, parts = t["library"], t["parts"]
    return {"library turn (s)": library, "parts called directly (s)": parts, "wrapper ratio": library / parts}


def app_overhead(model, repeat: int, tmp: Path, model_name: str = DEFAULT_MODEL) -> dict:
    """A gradio_client turn against `python app.py` (its own process, as deployed) vs the same library call in this
    process, which serves nothing: the two in turn, so that the machine's drift touches both alike.

    Also, with the app stopped, the floor: a server (its own process too) whose endpoint streams an answer as long
    as the library turn and as often as the app does, but does no work. Its round trip less that time is what
    Gradio and gradio_client cost a streamed turn, which no app can go below: the queue, the messages, and the
    client, which looks for new messages every 50 ms (half of that, on average, after the last). One server runs
    at a time, as in a deployment.

    That poll puts every app turn on a 50 ms grid, a tenth of a nano turn, while library turns vary by more than
    that from one to the next on this machine; a ratio of two medians then jumps by 0.1 between runs. So the
    overhead is the median of each pair's difference (app turn less the library turn right after it), over three
    times `repeat` pairs, and the ratio is 1 + that over the library's median."""
    import httpx
    from gradio_client import Client

    library = lambda: model.generate(_turn(model), seed=0, output="image", out_dir=tmp)  # noqa: E731
    # One SSL context for every request: gradio_client otherwise builds one (loading the CA bundle, ~20 ms) per
    # request, even over plain http, which a browser never does.
    context = ssl.create_default_context()
    message = {"text": "Show me a picture.", "files": []}
    app = ["app.py", "--model", model_name, "--threads", "1"]
    with _server(app) as (url, _), httpx.Client() as http:
        # The answer's files are fetched once, over one connection, as a browser does. gradio_client's own
        # download_files fetches every file in the history again with each streamed update, each over a new
        # connection into a new temporary folder (two fetches of the image per turn here, ~15 ms on nano).
        client = Client(url, verbose=False, ssl_verify=context, download_files=False)

        fetched = []

        def app_turn():
            history, _ = client.predict(message, [], "image", 0, api_name="/chat")
            fetched.append(_file_urls(history))
            for url in fetched[-1]:
                http.get(url).raise_for_status()

        t = times_together({"app": app_turn, "library": library}, 3 * repeat)

        def first_word_via_app() -> float:
            start = time.perf_counter()
            job = client.submit({"text": "What can you do?", "files": []}, [], "text", 0, api_name="/chat")
            seconds = None
            for history, _ in job:
                if seconds is None and history and history[-1]["role"] == "assistant" and _text(history[-1]):
                    seconds = time.perf_counter() - start
            return seconds

        first = timed(first_word_via_app, repeat)
    lib = statistics.median(t["library"])
    overhead = statistics.median(a - b for a, b in zip(t["app"], t["library"]))
    with _server(["-m", "bench.run", "--serve-idle"]) as (url, _):
        client = Client(url, verbose=False, ssl_verify=context)
        floor = timed(lambda: client.predict(lib, api_name="/idle"), repeat) - lib
    return {"app turn via gradio_client (s)": statistics.median(t["app"]), "library turn, no server (s)": lib,
            "app turn less library turn, per pair (s)": overhead, "files fetched per app turn": len(fetched[-1]),
            "app ratio": 1 + overhead / lib, "gradio + client, idle answer as long (s)": floor,
            "app ratio less gradio + client": 1 + (overhead - floor) / lib,
            "time to first word via the app (s)": first}


def _text(message: dict) -> str:
    content = message["content"]
    parts = content if isinstance(content, list) else [content]
    return "".join(p.get("text", "") if isinstance(p, dict) else str(p) for p in parts).strip()


def _file_urls(history: list[dict]) -> list[str]:
    return [part["file"]["url"] for m in history for part in (m["content"] if isinstance(m["content"], list) else [])
            if part.get("type") == "file"]


def serve_idle(port: int) -> None:
    """`--serve-idle`, for `app_overhead`: an endpoint that streams for the seconds asked, updating as often as the
    app's turns do, and computes nothing; queued as the app's is."""
    import gradio as gr

    from demo import AppSettings
    from demo.ui import configure_queue

    settings = AppSettings()

    def idle(seconds):
        end = time.monotonic() + float(seconds)
        while (left := end - time.monotonic()) > 0:
            time.sleep(min(settings.stream_interval_s, left))
            yield f"{left:.2f}"

    with gr.Blocks() as blocks:
        box = gr.Number()
        box.submit(idle, box, gr.Textbox(), api_name="idle")
    configure_queue(blocks, settings)
    blocks.launch(server_name="127.0.0.1", server_port=port, quiet=True)


@contextlib.contextmanager
def _server(argv: list[str], must_start: bool = True):
    """`python ARGV --port P`, stopped on exit; yields (its URL, seconds until it answered /config, or None)."""
    port = _free_port()
    proc = subprocess.Popen([sys.executable, *argv, "--port", str(port)], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        start, ready = time.perf_counter(), None
        while ready is None and time.perf_counter() - start < 300 and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=2) as r:
                    if r.status == 200:
                        ready = time.perf_counter() - start
            except OSError:
                time.sleep(0.2)
        if must_start and ready is None:
            raise RuntimeError(f"python {' '.join(argv)} did not start (exit code {proc.poll()})")
        yield f"http://127.0.0.1:{port}/", ready
    finally:
        proc.terminate()
        proc.wait()


def decoder_caching(model, repeat: int) -> dict:
    """The first image request (loads the pipeline), a cached one, and reloading per request as the official demo."""
    from nextgpt.decoders import Decoders

    cfg = model.config
    cond = torch.randn(1, cfg.output_projectors["image"].num_queries, cfg.output_projectors["image"].out_dim)

    def fresh():
        return Decoders(cfg.decoders, cond_dims={m: c.out_dim for m, c in cfg.output_projectors.items()})

    d = fresh()
    start = time.perf_counter()
    d.decode("image", cond, seed=0)
    first = time.perf_counter() - start
    cached = timed(lambda: d.decode("image", cond, seed=0), repeat)
    reload = timed(lambda: fresh().decode("image", cond, seed=0), repeat)
    return {"first image request (s)": first, "cached request (s)": cached, "reload per request (s)": reload,
            "reload / cached": reload / cached}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cold_start(model_name: str) -> dict:
    """`python app.py` to a page that answers, to its first text answer and then its first image (the model loads
    behind the page: those turns wait for it), and the peak RSS of one full any-to-any turn in a fresh process."""
    from gradio_client import Client

    start = time.perf_counter()
    with _server(["app.py", "--model", model_name], must_start=False) as (url, ready):
        answered = drawn = None
        if ready is not None:
            client = Client(url, verbose=False, download_files=False)
            client.predict({"text": "What can you do?", "files": []}, [], "text", 0, api_name="/chat")
            answered = time.perf_counter() - start
            client.predict({"text": "Show me a picture.", "files": []}, [], "image", 0, api_name="/chat")
            drawn = time.perf_counter() - start
    code = (
        "import resource, sys\n"
        "from nextgpt.model import NextGPT\nfrom nextgpt import Media, Message\n"
        f"m = NextGPT.from_pretrained({model_name!r})\n"
        f"msg = [Message('user', [Media('image', {str(MEDIA / 'bird_image.jpg')!r}), "
        f"Media('audio', {str(MEDIA / 'bird_audio.wav')!r}), Media('video', {str(MEDIA / 'test.mp4')!r}), 'go'])]\n"
        "for out in ('image', 'video', 'audio'):\n    m.generate(msg, seed=0, output=out)\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    rss = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return {"python app.py to a ready page (s)": ready, "python app.py to its first text answer (s)": answered,
            "python app.py to its first image answer (s)": drawn,
            "peak RSS of any-to-any turns (MB)": int(rss.stdout.strip().splitlines()[-1]) / 1024}


def growth(model, repeat: int, tmp: Path) -> dict:
    """Time per text turn against history length (turns with an image each), and image time against steps."""
    from nextgpt import Media, Message

    out = {}
    img = str(MEDIA / "bird_image.jpg")
    for turns in (1, 4, 16):
        history = []
        for i in range(turns - 1):
            history += [Message("user", [Media("image", img), f"turn {i}"]), Message("assistant", "ok")]
        history.append(Message("user", [Media("image", img), "and now?"]))
        out[f"turn with {turns} turns of history (s)"] = timed(
            lambda: model.generate(history, seed=0, output="text", max_new_tokens=16), repeat)
    base = model.config.decoders["image"].num_inference_steps
    cfg = model.config.output_projectors["image"]
    cond = torch.randn(1, cfg.num_queries, cfg.out_dim)
    for steps in (base, base * 2, base * 4):
        out[f"image decoder at {steps} steps (s)"] = timed(
            lambda: model.decoders.decode("image", cond, seed=0, num_inference_steps=steps), repeat)
    return out


# Each kind of turn as a person asks for it: the words, and the Output choice.
TURNS = {"text": ("What can you do?", "text"), "image": ("Show me a picture.", "image"),
         "video": ("Make a video of it moving.", "video"), "audio": ("Play me a sound.", "audio")}


def turns(model, repeat: int, tmp: Path, baseline=None) -> dict:
    """Each kind of turn (text, or text plus one medium at the model's default settings) from the call to the
    written file; with `baseline` (another model, e.g. the same weights at other decoder settings) its turns too, run
    in turn with these, so that the machine's drift touches both alike."""
    fns = {}
    for prefix, m in (("", model), ("baseline: ", baseline)):
        for kind, (text, output) in TURNS.items():
            if m is not None:
                fns[f"{prefix}{kind} turn (s)"] = lambda m=m, text=text, output=output: m.generate(
                    _turn(m, text), seed=0, output=output, out_dir=tmp)
    return timed_together(fns, repeat)


SECTIONS = {"turns": turns, "stages": stages, "wrapper": wrapper_overhead, "app": app_overhead,
            "caching": decoder_caching, "growth": growth}


def run(model_name: str, repeat: int, skip: set[str], baseline: str | None = None) -> dict:
    from nextgpt.model import NextGPT

    torch.manual_seed(0)
    model = NextGPT.from_pretrained(model_name)
    results = {"model": model_name, "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
               "first turn after loading: time to first word": first_word(model, _turn(model, "What can you do?"))}
    with tempfile.TemporaryDirectory() as tmp:
        for name, fn in SECTIONS.items():
            if name in skip:
                continue
            args = (model, repeat) if name == "caching" else (model, repeat, Path(tmp))
            if name == "app":
                results[name] = fn(*args, model_name=model_name)
            elif name == "turns" and baseline:
                results[name] = fn(*args, baseline=NextGPT.from_pretrained(baseline))
            else:
                results[name] = fn(*args)
            print(format_section(name, results[name]), flush=True)
    if "cold" not in skip:
        results["cold"] = cold_start(model_name)
        print(format_section("cold", results["cold"]), flush=True)
    return results


TARGETS = {"wrapper ratio": "<= 1.05", "app ratio": "<= 1.15"}


def format_section(name: str, values: dict) -> str:
    lines = [f"\n## {name}"]
    for k, v in values.items():
        unit = "" if "(" in k or "ratio" in k or "/" in k or "per second" in k else " s"
        target = f"   (target {TARGETS[k]})" if k in TARGETS else ""
        lines.append(f"  {k:45s} {v:10.4f}{unit}{target}" if isinstance(v, float) else f"  {k:45s} {v}")
    return "\n".join(lines)


def compare(old: dict, new: dict) -> str:
    lines = [f"ratios new / old ({new.get('model')} vs {old.get('model')}); below 1 is faster"]
    for section, values in new.items():
        if not isinstance(values, dict) or not isinstance(old.get(section), dict):
            continue
        lines.append(f"\n## {section}")
        for k, v in values.items():
            o = old[section].get(k)
            if isinstance(v, (int, float)) and isinstance(o, (int, float)) and o:
                lines.append(f"  {k:45s} {o:10.4f} -> {v:10.4f}   x{v / o:.3f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads, as the app sets them (0: torch's default)")
    p.add_argument("--skip", default="", help="comma-separated sections: " + ",".join([*SECTIONS, "cold"]))
    p.add_argument("--json", help="write the results here")
    p.add_argument("--baseline", help="a model whose turns are timed in turn with the model's (the turns section)")
    p.add_argument("--compare", nargs=2, metavar=("OLD", "NEW"))
    p.add_argument("--serve-idle", action="store_true", help=argparse.SUPPRESS)  # the app section's floor server
    p.add_argument("--port", type=int, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve_idle:
        serve_idle(a.port)
        return 0
    if a.compare:
        old, new = (json.loads(Path(f).read_text()) for f in a.compare)
        print(compare(old, new))
        return 0
    if a.threads > 0:
        torch.set_num_threads(a.threads)
    results = run(a.model, a.repeat, {s for s in a.skip.split(",") if s}, a.baseline)
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
