"""Each nano decoder's sampler and steps, chosen for speed on validation captions by the oracles.

    python -m bench.samplers [--world data/nano-world] [--only image,video] [--n 64] [--save] [--json OUT]

Per decoder, the saved settings and each candidate (a multistep solver at fewer steps, with classifier-free guidance
on every step or on the first half or quarter of them only) decode the same validation captions from the same
seeds, and the oracles score what they make. Candidates are tried cheapest first, by UNet passes (a guided step is
two); the chosen one is the first that loses at most `--tolerance` (2 points) on every attribute and on `all`. Then
the test captions score the saved and the chosen settings. `--save` writes the choice into the decoder's folder
(its scheduler, the steps, guidance and guided share) and into the model's config.json. No weights change.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from nextgpt.nano import parts
from nextgpt.nano import world as W

ROOT = Path(__file__).resolve().parents[1]
SOLVERS = ("DPMSolverMultistepScheduler", "UniPCMultistepScheduler")
# Sounds keep 20 steps, guided throughout: UniPC at 15 steps held on the captions, but through the whole model (the
# projector's embeddings) the sounds of the world's test dialogues lost 5-15 points (docs/benchmarks.md).
CANDIDATE_STEPS = {"image": (6, 8, 10, 12), "video": (4, 5, 6, 8), "audio": (20,)}
GUIDANCE_FRACTIONS = {"image": (1.0, 0.5, 0.25), "video": (1.0, 0.5, 0.25), "audio": (1.0,)}


def passes(settings: dict) -> float:
    """UNet passes of one decode: two for each guided step, one for each other."""
    steps = settings["num_inference_steps"]
    return steps * (1 + settings.get("guidance_fraction", 1.0))


def with_scheduler(pipe, name: str, base_config):
    import diffusers

    pipe.scheduler = getattr(diffusers, name).from_config(base_config)
    return pipe


def scored(pipe, modality: str, prompts, settings: dict, seed: int) -> dict:
    result, _ = parts.score(pipe, modality, prompts, settings, seed=seed, batch=64 if modality == "image" else 16)
    return {"scheduler": type(pipe.scheduler).__name__, **result}


def holds(candidate: dict, base: dict, modality: str, tolerance: float) -> bool:
    keys = [a for a in (*W.ATTRIBUTES[modality], "all") if a in base]
    return all(candidate[k] >= base[k] - tolerance for k in keys)


def choose(modality: str, folder: Path, world: Path, n: int, seed: int, tolerance: float, log=print) -> dict:
    """The saved settings' and the chosen candidate's scores, on validation (choosing) and test (reporting)."""
    pipe = parts.load_pipeline(modality, folder)
    base_config = pipe.scheduler.config
    base_name = type(pipe.scheduler).__name__
    saved = parts.inference_settings(modality, folder)
    val = parts.held_out(world, modality, "validation", n)
    base = scored(pipe, modality, val, saved, seed)
    log(json.dumps({"split": "validation", **base}))
    tried, chosen = [], None
    grid = [{**saved, "num_inference_steps": steps, "guidance_fraction": f}
            for steps in CANDIDATE_STEPS[modality] for f in GUIDANCE_FRACTIONS[modality]]
    for settings in sorted((g for g in grid if passes(g) < passes(saved)), key=passes):
        for name in SOLVERS:
            row = scored(with_scheduler(pipe, name, base_config), modality, val, settings, seed)
            log(json.dumps({"split": "validation", **row}))
            tried.append(row)
            if chosen is None and holds(row, base, modality, tolerance):
                chosen = (name, settings)
        if chosen is not None:
            break
    test = parts.held_out(world, modality, "test", n)
    out = {"validation": {"saved": base, "candidates": tried}, "tolerance_points": 100 * tolerance}
    out["test_saved"] = scored(with_scheduler(pipe, base_name, base_config), modality, test, saved, seed)
    log(json.dumps({"split": "test", **out["test_saved"]}))
    if chosen is not None:
        name, settings = chosen
        out["chosen"] = {"scheduler": name, **settings}
        out["test_chosen"] = scored(with_scheduler(pipe, name, base_config), modality, test, settings, seed)
        log(json.dumps({"split": "test", **out["test_chosen"]}))
    return out


def save_choice(modality: str, folder: Path, model_config: Path, choice: dict) -> None:
    """The decoder folder loads with the chosen scheduler and steps; the model's config uses the same steps."""
    import diffusers

    choice = dict(choice)
    name = choice.pop("scheduler")
    sched = getattr(diffusers, name).from_pretrained(folder / "scheduler")
    sched.save_pretrained(folder / "scheduler")
    index = json.loads((folder / "model_index.json").read_text())
    index["scheduler"] = ["diffusers", name]
    (folder / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    parts.save_inference(folder, choice)
    config = json.loads(model_config.read_text())
    config["decoders"][modality]["num_inference_steps"] = choice["num_inference_steps"]
    config["decoders"][modality]["guidance_fraction"] = choice.get("guidance_fraction", 1.0)
    model_config.write_text(json.dumps(config, indent=2) + "\n")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.samplers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "assets" / "nano"), help="a nano model folder")
    p.add_argument("--world", default="data/nano-world")
    p.add_argument("--only", default="image,video,audio")
    p.add_argument("--n", type=int, default=64, help="captions per split and decoder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tolerance", type=float, default=2.0, help="points an attribute may lose")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--save", action="store_true", help="write each choice into the model folder")
    p.add_argument("--json", help="write every score here")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    model = Path(a.model)
    results = {}
    for m in a.only.split(","):
        folder = model / f"{m}_decoder"
        results[m] = choose(m, folder, Path(a.world), a.n, a.seed, a.tolerance / 100)
        if a.json:
            Path(a.json).write_text(json.dumps(results, indent=1) + "\n")
        if a.save and "chosen" in results[m]:
            save_choice(m, folder, model / "config.json", results[m]["chosen"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
