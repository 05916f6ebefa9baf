"""What every training script shares: seeding, resumable checkpoints, and a log of losses.

A run lives in one folder (`runs/<name>/`): `state.pt` is the latest resumable state (weights, optimizer, step,
RNG), `log.jsonl` one JSON object per logged step, and `samples/` whatever the script draws as it goes.
Sessions here can end without warning, so scripts save every few minutes and resume from `state.pt`.
"""

from __future__ import annotations

import json
import os
import random
import time
from pathlib import Path

import numpy as np
import torch


def read_inference(folder: str | Path) -> dict:
    """A diffusion pipeline folder's inference settings chosen at export or retune, kept under the scheduler config's
    private key "_nano_inference" (diffusers ignores it when loading the scheduler); {} where none were saved."""
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    return json.loads(path.read_text()).get("_nano_inference", {}) if path.exists() else {}


def save_inference(folder: str | Path, settings: dict) -> None:
    path = Path(folder) / "scheduler" / "scheduler_config.json"
    sched = json.loads(path.read_text())
    sched["_nano_inference"] = settings
    path.write_text(json.dumps(sched, indent=2) + "\n")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_state(path: str | Path) -> dict:
    """A run's `state.pt`: our own file, but still no arbitrary pickles; numpy's RNG state is allowed by name."""
    with torch.serialization.safe_globals([np.ndarray, np.dtype, np.core.multiarray._reconstruct,
                                           type(np.dtype("uint32"))]):
        return torch.load(path, map_location="cpu", weights_only=True)


class Run:
    """A training run's folder: resumable state, a JSON-lines log, and a save timer."""

    def __init__(self, folder: str | Path, save_every_s: float = 180.0):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / "samples").mkdir(exist_ok=True)
        self.save_every_s = save_every_s
        self._last_save = time.monotonic()
        self.start = time.monotonic()

    @property
    def state_path(self) -> Path:
        return self.folder / "state.pt"

    def save(self, step: int, modules: dict[str, torch.nn.Module], optimizers: dict | None = None, **extra) -> None:
        state = {
            "step": step,
            "modules": {k: m.state_dict() for k, m in modules.items()},
            "optimizers": {k: o.state_dict() for k, o in (optimizers or {}).items()},
            "rng": {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()},
            "extra": extra,
        }
        tmp = self.state_path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, self.state_path)  # never leave a half-written state behind
        self._last_save = time.monotonic()

    def maybe_save(self, step: int, modules, optimizers=None, **extra) -> bool:
        if time.monotonic() - self._last_save >= self.save_every_s:
            self.save(step, modules, optimizers, **extra)
            return True
        return False

    def resume(self, modules: dict[str, torch.nn.Module], optimizers: dict | None = None) -> tuple[int, dict]:
        """Load the latest state if there is one; returns (step to continue from, extra)."""
        if not self.state_path.exists():
            return 0, {}
        state = load_state(self.state_path)
        for k, m in modules.items():
            m.load_state_dict(state["modules"][k])
        for k, o in (optimizers or {}).items():
            if k in state["optimizers"]:
                o.load_state_dict(state["optimizers"][k])
        torch.set_rng_state(state["rng"]["torch"])
        np.random.set_state(state["rng"]["numpy"])
        random.setstate(state["rng"]["python"])
        return state["step"], state.get("extra", {})

    def log(self, step: int, **values) -> None:
        values = {"step": step, "elapsed_s": round(time.monotonic() - self.start, 1), **values}
        line = json.dumps({k: (round(v, 5) if isinstance(v, float) else v) for k, v in values.items()})
        with open(self.folder / "log.jsonl", "a") as f:
            f.write(line + "\n")
        print(line, flush=True)
