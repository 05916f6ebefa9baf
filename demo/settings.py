"""App settings: command line first, then environment variables (how Spaces passes them), then defaults."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from nextgpt.media import MediaLimits
from nextgpt.serve import ServiceLimits

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = "tiny"


@dataclass
class AppSettings:
    model: str = DEFAULT_MODEL
    host: str = "127.0.0.1"
    port: int = 7860
    max_file_mb: int = 50
    max_files: int = 4
    max_pixels: int = 40_000_000
    max_duration_s: float = 120.0
    max_prompt_chars: int = 4000
    max_history_turns: int = 8
    queue_size: int = 32
    outputs: str = str(ROOT / "outputs")  # generated media; cleaned with Gradio's cache

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
        p.add_argument("--host", default=env.get("NEXTGPT_HOST", env.get("GRADIO_SERVER_NAME", default.host)))
        p.add_argument("--port", type=int, default=int(env.get("NEXTGPT_PORT", env.get("GRADIO_SERVER_PORT", default.port))))
        p.add_argument("--max-file-mb", type=int, default=int(env.get("NEXTGPT_MAX_FILE_MB", default.max_file_mb)))
        p.add_argument("--max-files", type=int, default=int(env.get("NEXTGPT_MAX_FILES", default.max_files)))
        p.add_argument("--max-history-turns", type=int,
                       default=int(env.get("NEXTGPT_MAX_HISTORY_TURNS", default.max_history_turns)))
        a = p.parse_args(argv)
        return cls(model=a.model, host=a.host, port=a.port, max_file_mb=a.max_file_mb, max_files=a.max_files,
                   max_history_turns=a.max_history_turns)
