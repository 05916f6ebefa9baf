"""Checkpoints: the official `pytorch_model.pt` layout, our safetensors, and a strict key report.

The official loader used `load_state_dict(strict=False)`, which silently ran broken checkpoints (upstream NExT-GPT #47, #51).
Here every key must map onto a parameter of the right shape, and every trained parameter must be present.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

# official prefix -> ours (module paths of the legacy NextGPTModel vs NextGPT)
_PREFIXES = [
    ("llama_proj.", "input_projector."),
    ("llama_model.", "llm."),
    ("gen_text_hidden_fcs.0.", "output_projectors.image."),
    ("gen_text_hidden_fcs_video.0.", "output_projectors.video."),
    ("gen_text_hidden_fcs_audio.0.", "output_projectors.audio."),
]
# inside an output projector: the released TextFcLayer calls its linear layers `fc` and `model`
_PROJ_RENAMES = {"fc.": "in_fc.", "model.": "out_fc."}
# peft 0.3.0 keeps the adapter name ("default") in the key; accept a key without it too
_LORA_NO_ADAPTER = re.compile(r"\.(lora_[AB])\.weight$")


def official_to_ours(key: str) -> str | None:
    for old, new in _PREFIXES:
        if key.startswith(old):
            rest = key[len(old):]
            if new.startswith("output_projectors."):
                for a, b in _PROJ_RENAMES.items():
                    if rest.startswith(a):
                        rest = b + rest[len(a):]
                        break
            if new == "llm.":
                rest = _LORA_NO_ADAPTER.sub(r".\1.default.weight", rest)
            return new + rest
    return None


def ours_to_official(key: str) -> str:
    for old, new in _PREFIXES:
        if key.startswith(new):
            rest = key[len(new):]
            if new.startswith("output_projectors."):
                for a, b in _PROJ_RENAMES.items():
                    if rest.startswith(b):
                        rest = a + rest[len(b):]
                        break
            return old + rest
    raise KeyError(key)


def is_trained_key(key: str) -> bool:
    """The parts NExT-GPT trains and ships: projectors, LoRA, and the resized embedding and LM head."""
    return (
        key.startswith(("input_projector.", "output_projectors."))
        or ".lora_" in key
        or key.endswith(("embed_tokens.weight", "lm_head.weight"))
    )


@dataclass
class KeyReport:
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    wrong_shape: list[tuple[str, tuple, tuple]] = field(default_factory=list)  # (key, in file, expected)
    num_params: int = 0
    dtypes: dict[str, int] = field(default_factory=dict)

    def in_official_names(self) -> "KeyReport":
        """The same report with keys named as in the official file, so errors name what the user has."""

        def name(k):
            try:
                return ours_to_official(k)
            except KeyError:
                return k

        return KeyReport(
            loaded=[name(k) for k in self.loaded],
            missing=[name(k) for k in self.missing],
            unexpected=[name(k) for k in self.unexpected],
            wrong_shape=[(name(k), a, b) for k, a, b in self.wrong_shape],
            num_params=self.num_params,
            dtypes=dict(self.dtypes),
        )

    @property
    def ok(self) -> bool:
        return not (self.missing or self.unexpected or self.wrong_shape)

    def format(self, limit: int = 20) -> str:
        lines = [
            f"keys matched: {len(self.loaded)}   parameters: {self.num_params:,} ({self.num_params / 1e6:.2f} M)",
            "dtypes: " + ", ".join(f"{k} x{v}" for k, v in sorted(self.dtypes.items())),
        ]
        for title, items in (("missing", self.missing), ("unexpected", self.unexpected)):
            lines.append(f"{title}: {len(items)}")
            lines += [f"  {k}" for k in items[:limit]] + ([f"  ... {len(items) - limit} more"] if len(items) > limit else [])
        lines.append(f"wrong shape: {len(self.wrong_shape)}")
        lines += [f"  {k}: file {tuple(a)} vs model {tuple(b)}" for k, a, b in self.wrong_shape[:limit]]
        lines.append("OK" if self.ok else "MISMATCH")
        return "\n".join(lines)


class CheckpointError(RuntimeError):
    def __init__(self, report: KeyReport, source: str):
        self.report = report
        parts = []
        if report.missing:
            parts.append(f"missing {len(report.missing)} keys: {', '.join(report.missing[:8])}")
        if report.unexpected:
            parts.append(f"unexpected {len(report.unexpected)} keys: {', '.join(report.unexpected[:8])}")
        if report.wrong_shape:
            parts.append("wrong shapes: " + ", ".join(f"{k} {tuple(a)} vs {tuple(b)}" for k, a, b in report.wrong_shape[:8]))
        super().__init__(f"checkpoint {source} does not match the model: " + "; ".join(parts))


def read_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], bool]:
    """(state dict with our key names, whether the file was in the official layout)."""
    path = Path(path)
    if path.suffix == ".safetensors":
        sd = load_file(str(path))
    else:
        sd = torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    official = any(k.startswith(("llama_proj.", "llama_model.", "gen_text_hidden_fcs")) for k in sd)
    if not official:
        return dict(sd), False
    out = {}
    for k, v in sd.items():
        new = official_to_ours(k)
        out[new if new is not None else k] = v
    return out, True


def check_keys(state_dict: dict[str, torch.Tensor], expected: dict[str, torch.Size]) -> KeyReport:
    """Compare a state dict (our names) with the trained parameters the model expects."""
    report = KeyReport()
    for k, v in state_dict.items():
        if k not in expected:
            report.unexpected.append(k)
        elif tuple(v.shape) != tuple(expected[k]):
            report.wrong_shape.append((k, tuple(v.shape), tuple(expected[k])))
        else:
            report.loaded.append(k)
            report.num_params += v.numel()
        dt = str(v.dtype).replace("torch.", "")
        report.dtypes[dt] = report.dtypes.get(dt, 0) + 1
    report.missing = sorted(set(expected) - set(state_dict))
    return report


def save_trained(state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    save_file({k: v.detach().contiguous().cpu() for k, v in state_dict.items()}, str(path))
