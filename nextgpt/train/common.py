"""What every training script shares: a base run config and its command line, the resumable loop, the learning-rate
schedule, EMA and soft-target InfoNCE.

A run lives in one folder (`runs/<name>/`): `state.pt` is the latest resumable state (weights, optimizer, step,
RNG), `log.jsonl` one JSON object per logged step, and `samples/` whatever the script draws as it goes. Scripts
save every few minutes and resume from `state.pt`, so a run stopped at any point goes on where it was.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F


@dataclass
class RunConfig:
    """What every training run has; each part's config adds its recipe. Every field is a command-line flag."""

    world: str = "data/nano-world"  # the world the part trains on (`python -m nextgpt.nano.world`)
    run: str = "runs/nano"  # resumable state, log and samples
    out: str = "assets/nano"  # the exported part
    seed: int = 0
    threads: int = 1  # torch threads per training process
    log_every: int = 25
    save_every_s: float = 180.0
    max_minutes: float = 0.0  # stop (resumably) after this much training over all resumed runs; 0: no limit

    # Flags recorded recipes used before the names were made one per idea: old name -> field.
    OLD_NAMES = {}

    def save(self, path: str | Path) -> None:
        write_json(path, dataclasses.asdict(self))


def parse_config(cls: type[RunConfig], argv=None, prog: str = "", description: str = "",
                 extra=None) -> tuple[RunConfig, dict]:
    """`cls` (a dataclass) from the command line: every field is `--field-name` (or `--field_name`, or an old name
    in `cls.OLD_NAMES`); tuples are comma-separated ints, booleans true/false (a bare flag is true). `extra(parser)`
    may add flags that are not fields; their values come back in the dict."""
    p = argparse.ArgumentParser(prog=prog, description=description,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    old = {}
    for name, new in getattr(cls, "OLD_NAMES", {}).items():
        old.setdefault(new, []).append(name)
    for f in dataclasses.fields(cls):
        default = f.default
        how = dict(type=type(default))
        if isinstance(default, tuple):
            how = dict(type=lambda s: tuple(int(v) for v in s.split(",")))
        elif isinstance(default, bool):
            how = dict(type=lambda s: s.lower() in ("1", "true", "yes", "on"), nargs="?", const=True)
        names = [f.name, *old.get(f.name, [])]
        flags = dict.fromkeys(f"--{spelling}" for n in names for spelling in (n.replace("_", "-"), n))
        p.add_argument(*flags, dest=f.name, default=default, **how)
    if extra is not None:
        extra(p)
    args = vars(p.parse_args(argv))
    fields = {f.name for f in dataclasses.fields(cls)}
    return cls(**{k: v for k, v in args.items() if k in fields}), {k: v for k, v in args.items() if k not in fields}


def folder_hash(path: str | Path) -> str:
    """A hash of a folder's files (names and contents), so that the same weights anywhere give the same hash; a
    path that is not a local folder (a hub id) hashes as its name."""
    path = Path(path)
    h = hashlib.sha1()
    if not path.is_dir():
        h.update(str(path).encode())
        return h.hexdigest()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f.relative_to(path).as_posix().encode())
        content = hashlib.sha1()
        with open(f, "rb") as stream:
            for block in iter(lambda: stream.read(1 << 20), b""):
                content.update(block)
        h.update(content.digest())
    return h.hexdigest()


def write_json(path: str | Path, data) -> None:
    Path(path).write_text(json.dumps(data, indent=1) + "\n")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(step: int, total: int, warmup: int, floor: float = 0.0, *, decay_from_start: bool = False) -> float:
    """The learning-rate multiplier at `step`: a linear warmup over `warmup` steps, then a cosine from 1 down to
    `floor` at `total`. With `decay_from_start` the cosine spans all `total` steps and the warmup scales it."""
    if decay_from_start:
        cosine = 0.5 * (1 + math.cos(math.pi * step / total))
        return min(1.0, (step + 1) / warmup) * (floor + (1 - floor) * cosine)
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def optimizer_step(opt: torch.optim.Optimizer, loss: torch.Tensor, clip=None) -> None:
    """One update: gradients of `loss`, clipped to norm 1 over `clip` when given, and the optimizer's step."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip is not None:
        torch.nn.utils.clip_grad_norm_(clip, 1.0)
    opt.step()


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float, step: int) -> None:
    """Move `ema`'s weights towards `model`'s; early on (warm start) the average follows the weights closely."""
    d = min(decay, (1 + step) / (10 + step))
    torch._foreach_lerp_(list(ema.parameters()), list(model.parameters()), 1 - d)


def soft_infonce(a: torch.Tensor, b: torch.Tensor, labels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Symmetric InfoNCE in which every pair with the same label is a positive (a uniform target row). The nano
    world has few distinct meanings, so a batch holds many true matches that plain InfoNCE would push apart."""
    logits = scale * F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    same = (labels[:, None] == labels[None, :]).float()
    target = same / same.sum(1, keepdim=True)  # symmetric, so it serves both directions
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


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
        self.first_step = 0  # the step this process's loop resumed from
        self.spent_s = 0.0  # training time of the earlier, resumed runs

    @property
    def state_path(self) -> Path:
        return self.folder / "state.pt"

    def steps(self, total: int, modules: dict[str, torch.nn.Module], optimizers: dict | None = None,
              max_minutes: float = 0.0) -> Iterator[int]:
        """The loop of every training script: resume from the saved state, yield each step to take (from 0),
        save every few minutes and at the end. With `max_minutes`, stop early (resumably) once that much training
        time over all resumed runs is spent."""
        step, extra = self.resume(modules, optimizers)
        if step:
            print(f"resumed from step {step}", flush=True)
        self.first_step, self.spent_s, self.start = step, extra.get("spent_s", 0.0), time.monotonic()
        while step < total:
            if max_minutes and self.minutes() > max_minutes:
                print(f"stopping at step {step}: the {max_minutes} min budget is spent (resumable)", flush=True)
                break
            yield step
            step += 1
            self.maybe_save(step, modules, optimizers, spent_s=self.minutes() * 60)
        self.save(step, modules, optimizers, spent_s=self.minutes() * 60)
        self.step = step

    def minutes(self) -> float:
        """Training time over all resumed runs."""
        return (self.spent_s + time.monotonic() - self.start) / 60

    def speed(self, step: int) -> float:
        """Steps per second in this process, up to `step` (the number of steps done)."""
        return round((step - self.first_step) / max(time.monotonic() - self.start, 1e-6), 3)

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
