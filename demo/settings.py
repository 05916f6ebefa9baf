"""App settings: command line first, then environment variables (how Spaces passes them), then defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from nextgpt.config import DEFAULT_MODEL
from nextgpt.media import MediaLimits
from nextgpt.serve import ServiceLimits

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class AppSettings:
    model: str = DEFAULT_MODEL
    llm: str | None = None  # base weights for the 7B preset: a Vicuna-7B v0 folder
    encoder: str | None = None  # and imagebind_huge.pth
    checkpoint: str | None = None  # the NExT-GPT checkpoint file or "repo@revision" (default: the preset's)
    device: str | None = None  # default: cuda when available
    cpu_offload: bool = False
    # torch intra-op threads. Each chat streams from worker threads, and on a CPU every such thread starts its own
    # OpenMP team; teams of several threads contend on a small CPU, and one thread per team is as fast for models
    # this small. 0 leaves torch's default.
    threads: int = 1
    host: str = "127.0.0.1"
    port: int = 7860
    max_file_mb: int = 50
    max_files: int = 4
    max_pixels: int = 40_000_000
    max_duration_s: float = 120.0
    max_prompt_chars: int = 4000
    max_history_turns: int = 8
    queue_size: int = 32
    # The least time between two streamed updates of the chat. Each update takes the GIL from generation several
    # times (a thread hop, a render, a diff, a message), so fewer updates make a faster turn; 5 a second still
    # reads as streaming.
    stream_interval_s: float = 0.2
    # Gradio's queue looks for work every 1 ms by default, even while a turn runs, and each look takes the GIL from
    # generation. Idle, it looks every 5 ms (a turn starts within 5 ms); while a turn runs nothing else of the
    # model's may start, so it looks every 100 ms.
    queue_poll_s: float = 0.005
    queue_poll_busy_s: float = 0.1
    outputs: str = str(ROOT / "outputs")  # generated media; cleaned with Gradio's cache

    def model_kwargs(self) -> dict:
        """Keyword arguments for `NextGPT.from_pretrained` beyond the model name."""
        kw = {k: getattr(self, k) for k in ("llm", "encoder", "checkpoint", "device") if getattr(self, k)}
        if self.cpu_offload:
            kw["cpu_offload"] = True
        return kw

    def limits(self) -> ServiceLimits:
        media = MediaLimits(
            max_bytes=self.max_file_mb * 2**20, max_pixels=self.max_pixels, max_duration_s=self.max_duration_s
        )
        return ServiceLimits(media, self.max_prompt_chars, self.max_files, self.max_history_turns)

    @classmethod
    def from_args(cls, argv: list[str] | None = None) -> "AppSettings":
        env = os.environ
        default = cls()
        p = argparse.ArgumentParser(description="NExT-GPT chat app")
        p.add_argument("--model", default=env.get("NEXTGPT_MODEL", default.model), help="preset name or model folder")
        p.add_argument("--llm", default=env.get("NEXTGPT_LLM"), help="base LLM folder (7B: Vicuna-7B v0)")
        p.add_argument("--encoder", default=env.get("NEXTGPT_ENCODER"), help="ImageBind weights (7B: imagebind_huge.pth)")
        p.add_argument("--checkpoint", default=env.get("NEXTGPT_CHECKPOINT"), help="NExT-GPT checkpoint or repo@revision")
        p.add_argument("--device", default=env.get("NEXTGPT_DEVICE"))
        p.add_argument("--threads", type=int, default=int(env.get("NEXTGPT_THREADS", default.threads)),
                       help="torch intra-op threads (default 1; 0 = torch's default)")
        p.add_argument("--cpu-offload", action="store_true", default=env.get("NEXTGPT_CPU_OFFLOAD") == "1",
                       help="decoders use enable_model_cpu_offload (the 7B set on a 24 GB GPU)")
        p.add_argument("--host", default=env.get("NEXTGPT_HOST", env.get("GRADIO_SERVER_NAME", default.host)))
        p.add_argument("--port", type=int, default=int(env.get("NEXTGPT_PORT", env.get("GRADIO_SERVER_PORT", default.port))))
        p.add_argument("--max-file-mb", type=int, default=int(env.get("NEXTGPT_MAX_FILE_MB", default.max_file_mb)))
        p.add_argument("--max-files", type=int, default=int(env.get("NEXTGPT_MAX_FILES", default.max_files)))
        p.add_argument("--max-history-turns", type=int,
                       default=int(env.get("NEXTGPT_MAX_HISTORY_TURNS", default.max_history_turns)))
        a = p.parse_args(argv)
        return cls(model=a.model, llm=a.llm, encoder=a.encoder, checkpoint=a.checkpoint, device=a.device,
                   cpu_offload=a.cpu_offload, threads=a.threads, host=a.host, port=a.port, max_file_mb=a.max_file_mb, max_files=a.max_files,
                   max_history_turns=a.max_history_turns)
