"""NExT-GPT's three training stages, one script: `python -m nextgpt.train --stage {1,2,3} ...`.

1. Encoder-side alignment: media -> caption, LM loss on the caption; trains the input projector.
2. Decoder-side alignment: a caption (or a request naming it) -> the reply and a signal run; trains the output
   projectors with the LM loss plus the L2 distance (per token, not squared, as released) between each
   projector's output and the decoder's own text-encoder conditioning of the caption.
3. Instruction tuning (MosIT): LoRA on the LLM plus both projectors, on dialogues.

`--recipe official` (the 7B preset's default) trains as the official code did, `--recipe nano` as NExT-GPT nano
was trained (`RECIPES`).

In every stage the rows of the 38 added tokens (`<Img>`, `</Img>`, the signal tokens) in the input embedding and
the LM head train too; the rest of both matrices stays frozen. (The released model trained both matrices fully,
by a quirk of `resize_token_embeddings`; training only the new rows is the intended behaviour.) Built on
`accelerate`, so the same script runs in one process, or in several that share each batch (several GPUs and
machines, DeepSpeed ZeRO-2 for the 7B preset: `accelerate launch --config_file configs/accelerate_zero2.yaml
-m nextgpt.train ...`).
"""

from __future__ import annotations

import hashlib
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from ..config import LoRAConfig, NextGPTConfig
from ..llm import build_llm
from ..media import Media
from ..model import NextGPT
from . import data
from .common import Run, folder_hash, seed_everything


@dataclass
class StageConfig:
    stage: int = 1
    model: str = "tiny"  # preset or folder to start from (stage 2 starts from stage 1's output, and so on)
    data: str = "data/nano-world"  # official layout: {split}/cc3m.json ..., {split}/dialogues.json, images/ ...
    out: str = "runs/stage1/model"  # the trained model folder
    run: str = "runs/stage1"  # resumable state and logs
    features: str = "runs/features"  # frozen encoder inputs and decoder targets, shared between stages
    steps: int = 1000
    batch_size: int = 8
    grad_accum: int = 1
    recipe: str | None = None  # "official" or "nano" (RECIPES); None: "official" for the 7B preset, else "nano"
    lr: float = 5e-4  # the released recipe's peak
    weight_decay: float = 0.001
    warmup: int | None = None  # warm-up steps; None: the recipe's
    l2_weight: float = 1.0
    max_grad_norm: float = 1.0
    seed: int = 13
    log_every: int = 10
    modalities: tuple[str, ...] = ("image", "video", "audio")
    max_examples: int | None = None  # cap the dataset (smoke tests)
    lora: bool | None = None  # train the LoRA too; None: in stage 3 only, as released
    # Stage 3: this share of each batch is T_X pair examples (stage 1's media -> caption and stage 2's caption ->
    # signal run, half each), as the official stage 3 blended its T2X and LLaVA sets with the instructions.
    pair_mix: float = 0.0
    # Stage 3: repeat the dialogues of these tasks ("i2v=3,a2v=3": three times each) by their "task" field, which
    # the nano world writes (official MosIT dialogues have none, and are not repeated).
    repeat_tasks: str = ""
    # Stage 3: the dialogue files under `{data}/train/`, comma-separated.
    dialogues: str = "dialogues.json"


# --- recipes: what each stage trains, on what, and how ------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """One stage of a recipe. `docs/training.md` tabulates every recipe's stages, and a test holds the table to
    these values. Both recipes use AdamW with betas (0.9, 0.95), weight decay 1e-3 and gradient clipping at 1."""

    examples: str  # the data formats: "official" (the official code's templates) or "nano"
    trains: tuple[str, ...]  # besides the added tokens' rows: "input projector", "output projectors", "LoRA"
    video_l2: float = 1.0  # weight of the video signal runs' L2 term (the other modalities: 1)
    schedule: str = "cosine"  # the decay after a linear warm-up: "linear" or "cosine", to 0 at the last step
    warmup: int = 50  # warm-up steps, at least
    warmup_share: float = 0.0  # or this share of the steps, if that is more

    def warmup_steps(self, steps: int) -> int:
        return max(self.warmup, round(self.warmup_share * steps))


_OFFICIAL = dict(examples="official", schedule="linear", warmup=10, warmup_share=0.1)  # DeepSpeed WarmupDecayLR
RECIPES: dict[str, dict[int, Recipe]] = {
    # The official code's: its data templates (stage 2 echoes the caption), video L2 x2 in stage 3.
    "official": {
        1: Recipe(trains=("input projector",), **_OFFICIAL),
        2: Recipe(trains=("output projectors",), **_OFFICIAL),
        3: Recipe(trains=("input projector", "output projectors", "LoRA"), video_l2=2.0, **_OFFICIAL),
    },
    # NExT-GPT nano's: varied questions and requests, a cosine schedule.
    "nano": {
        1: Recipe(examples="nano", trains=("input projector",)),
        2: Recipe(examples="nano", trains=("output projectors",)),
        3: Recipe(examples="nano", trains=("input projector", "output projectors", "LoRA")),
    },
}


def default_recipe(model: str) -> str:
    """"official" for the released 7B model (a preset or a folder made from it), "nano" for the others."""
    from ..config import PRESETS, get_preset

    folder = Path(model) / "config.json"
    name = NextGPTConfig.load(folder).name if folder.exists() else get_preset(model).name if model in PRESETS else ""
    return "official" if name.startswith("nextgpt-7b") else "nano"


def recipe_of(cfg: StageConfig) -> Recipe:
    name = cfg.recipe or default_recipe(cfg.model)
    if name not in RECIPES:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name][cfg.stage]


# --- what trains in each stage -----------------------------------------------------------------------------------


def trainable_parameters(model: NextGPT, stage: int, lora: bool | None = None,
                         recipe: str = "nano") -> list[nn.Parameter]:
    """Freeze everything, then unfreeze the stage's parts (`lora` adds or removes the LoRA); the added-token rows
    train through a gradient mask."""
    model.requires_grad_(False)
    trains = set(RECIPES[recipe][stage].trains)
    if lora is not None:
        trains = trains | {"LoRA"} if lora else trains - {"LoRA"}
    params: list[nn.Parameter] = []
    if "input projector" in trains:
        params += list(model.input_projector.parameters())
    if "output projectors" in trains:
        params += list(model.output_projectors.parameters())
    if "LoRA" in trains:
        params += [p for n, p in model.llm.named_parameters() if "lora_" in n]
    first = min(model.media_ids)
    for matrix in (model.llm.get_input_embeddings().weight, model.llm.get_output_embeddings().weight):
        mask = torch.zeros(matrix.shape[0], 1, dtype=matrix.dtype, device=matrix.device)
        mask[first:] = 1.0  # the added tokens come last in the vocabulary
        matrix.requires_grad_(True)
        matrix.register_hook(lambda g, mask=mask: g * mask)
        params.append(matrix)
    for p in params:
        p.requires_grad_(True)
    return params


def widen_lora(model: NextGPT, lora: LoRAConfig) -> None:
    """Give `model` a LoRA of more ranks and more target modules that computes the same function: the trained
    adapters fill the first ranks, and every new rank starts as a new LoRA does (B = 0). The scale alpha / r stays."""
    old = model.config.lora
    if lora.r < old.r or lora.alpha * old.r != old.alpha * lora.r or not set(old.target_modules) <= set(
            lora.target_modules):
        raise ValueError(f"cannot widen {old} to {lora}: ranks and targets may only grow, at the same alpha / r")
    config = NextGPTConfig.from_dict(model.config.to_dict())
    config.lora = lora
    weight = model.llm.get_input_embeddings().weight
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        wide = build_llm(config, weight.shape[0], dtype=weight.dtype, mean_resizing=False).to(weight.device)
    state = wide.state_dict()
    named = {k.replace(".base_layer.", "."): k for k in state}  # peft renames the weights of a module it wraps
    for k, v in model.llm.state_dict().items():
        k = named[k.replace(".base_layer.", ".")]
        if "lora_A" in k:
            state[k][: old.r] = v
        elif "lora_B" in k:
            state[k][:, : old.r] = v
        else:
            state[k] = v
    wide.load_state_dict(state)
    wide.train(model.llm.training)
    model.llm, model.config.lora = wide, lora


# --- examples, features and targets -------------------------------------------------------------------------------


def build_examples(cfg: StageConfig) -> tuple[list[list[data.Piece]], list[list[data.Piece]]]:
    """The stage's examples, and the pair examples stage 3 blends in (`pair_mix`; empty otherwise)."""
    rng = random.Random(cfg.seed)
    style = recipe_of(cfg).examples
    stage1, stage2 = ((data.official_stage1_example, data.official_stage2_example) if style == "official"
                      else (data.stage1_example, data.stage2_example))
    if cfg.stage in (1, 2):
        make = stage1 if cfg.stage == 1 else stage2
        examples = [make(p, rng) for p in data.read_pairs(cfg.data, cfg.modalities)]
    else:
        repeats = {task: int(n) for task, n in (kv.split("=") for kv in cfg.repeat_tasks.split(",") if kv)}
        examples = [ex for d in data.read_dialogues(cfg.data, files=cfg.dialogues)
                    for ex in data.stage3_examples(d, cfg.data, style) for _ in range(repeats.get(d.get("task"), 1))]
    if not examples:
        raise ValueError(f"no training data for stage {cfg.stage} under {cfg.data}")
    rng.shuffle(examples)
    blended = []
    if cfg.stage == 3 and cfg.pair_mix > 0:
        rng = random.Random(cfg.seed + 1)  # its own stream: the dialogues' examples stay as without the blend
        blended = [make(p, rng) for p in data.read_pairs(cfg.data, cfg.modalities) for make in (stage1, stage2)]
        rng.shuffle(blended)
    if cfg.max_examples:
        return examples[: cfg.max_examples], blended[: cfg.max_examples]
    return examples, blended


def _key(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


class FeatureStore:
    """Frozen inputs and targets, computed once and kept on disk in the run folder.

    - ImageBind embeddings of every input media file (the encoder is frozen, as in the paper);
    - each decoder's conditioning of every output caption (the official code precomputed these as .npy files).
    """

    def __init__(self, model: NextGPT, examples, folder: Path):
        # Shared by every stage and run that uses the same frozen parts: one file per encoder + decoders.
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / f"features-{self.fingerprint(model)}.safetensors"
        stored = load_file(str(self.path)) if self.path.exists() else {}
        slots = {(p.modality, p.path) for ex in examples for p in ex if isinstance(p, data.Slot)}
        runs = {(p.modality, p.caption) for ex in examples for p in ex if isinstance(p, data.Run)}
        todo_slots = sorted(s for s in slots if "media/" + _key(s[1]) not in stored)
        todo_runs = sorted(r for r in runs if f"cond/{r[0]}/" + _key(r[1]) not in stored)
        saved = time.monotonic()
        for i in range(0, len(todo_slots), 32):
            chunk = todo_slots[i : i + 32]
            feats = model.encoder.encode([Media(m, p) for m, p in chunk]).float().cpu()
            stored.update({"media/" + _key(p): f for (_, p), f in zip(chunk, feats)})
            if time.monotonic() - saved > 300:  # encoding many videos takes long: a stopped run keeps its work
                self._save(stored)
                saved = time.monotonic()
        for m in {r[0] for r in todo_runs}:
            captions = [c for mm, c in todo_runs if mm == m]
            for i in range(0, len(captions), 64):
                cond = model.decoders.text_condition(m, captions[i : i + 64])
                stored.update({f"cond/{m}/" + _key(c): t for c, t in zip(captions[i : i + 64], cond)})
        if todo_slots or todo_runs:
            self._save(stored)
        self.tensors = stored

    def _save(self, stored: dict) -> None:
        tmp = self.path.with_suffix(".tmp")
        save_file({k: v.contiguous() for k, v in stored.items()}, str(tmp))
        os.replace(tmp, self.path)

    @staticmethod
    def fingerprint(model: NextGPT) -> str:
        """A short hash of the encoder's weights and of what makes each decoder's conditioning (its text encoder and
        tokenizer files; a hub id by its name), so the same parts under another path share one store."""
        h = hashlib.sha1()
        for name, t in sorted(model.encoder.state_dict().items()):
            h.update(name.encode())
            h.update(t.detach().float().cpu().numpy().tobytes()[:4096])
        for m, c in sorted(model.config.decoders.items()):
            folder = Path(str(c.pretrained))
            text = [folder / "text_encoder", folder / "tokenizer"]
            h.update(f"{m}:".encode())
            for part in (text if all(p.is_dir() for p in text) else [folder]):
                h.update(folder_hash(part).encode())
        return h.hexdigest()[:12]

    def media(self, path: str) -> torch.Tensor:
        return self.tensors["media/" + _key(path)]

    def condition(self, modality: str, caption: str) -> torch.Tensor:
        return self.tensors[f"cond/{modality}/" + _key(caption)]


# --- the loss ------------------------------------------------------------------------------------------------------


class StageModule(nn.Module):
    """NextGPT plus the stage's loss: forward(examples, totals) -> (loss, parts).

    The loss is a sum over this process's examples divided by the counts of the whole batch (`totals`): target
    tokens for the LM loss, signal runs for the L2 term. Processes that split a batch then add up to the loss of
    the batch, so any number of them trains the same model."""

    def __init__(self, model: NextGPT, store: FeatureStore, l2_weight: float, video_l2: float = 1.0):
        super().__init__()
        self.model = model
        self.store = store
        self.l2_weight = l2_weight
        self.video_l2 = video_l2

    def totals(self, examples: list[list[data.Piece]]) -> tuple[int, int]:
        """(target tokens, signal runs) of a batch."""
        encoded = [self._encode(ex) for ex in examples]
        return sum(sum(t != -100 for t in e[1]) for e in encoded), sum(len(e[3]) for e in encoded)

    def _encode(self, pieces: list[data.Piece]):
        """token ids (media slots as placeholders), labels, slot positions and run positions."""
        m = self.model
        ids, labels, slots, runs = [m.tokenizer.bos_token_id], [-100], [], []
        for p in pieces:
            if isinstance(p, data.Text):
                tok = m.tokenize_text(p.text)
                ids += tok
                labels += tok if p.target else [-100] * len(tok)
            elif isinstance(p, data.Slot):
                start, end = m.media_ids
                slots.append((len(ids) + 1, p.path))
                ids += [start, m.tokenizer.pad_token_id, end]
                labels += [-100] * 3
            else:
                run = m.signal_ids[p.modality]
                runs.append((len(ids), p.modality, p.caption))
                ids += run
                labels += run
        return ids, labels, slots, runs

    def forward(self, examples: list[list[data.Piece]], totals: tuple[int, int]):
        m = self.model
        table = m.llm.get_input_embeddings()
        encoded = [self._encode(ex) for ex in examples]
        length = max(len(e[0]) for e in encoded)
        pad = m.tokenizer.pad_token_id
        ids = torch.full((len(encoded), length), pad, dtype=torch.long)
        labels = torch.full((len(encoded), length), -100, dtype=torch.long)
        mask = torch.zeros((len(encoded), length), dtype=torch.long)
        for b, (i, l, _, _) in enumerate(encoded):
            ids[b, : len(i)] = torch.tensor(i)
            labels[b, : len(l)] = torch.tensor(l)
            mask[b, : len(i)] = 1
        device = table.weight.device
        embeds = table(ids.to(device))
        for b, (_, _, slots, _) in enumerate(encoded):
            if slots:
                feats = torch.stack([self.store.media(p) for _, p in slots]).to(device, m.input_projector.weight.dtype)
                projected = m.input_projector(feats).to(embeds.dtype)
                for (pos, _), vec in zip(slots, projected):
                    embeds[b, pos] = vec
        out = m.llm(inputs_embeds=embeds, attention_mask=mask.to(device), output_hidden_states=True)
        logits = out.logits[:, :-1].float()
        target = labels[:, 1:].to(logits.device)
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100,
                             reduction="sum") / max(totals[0], 1)
        hidden = out.hidden_states[-1]
        l2_terms = []
        for b, (_, _, _, runs) in enumerate(encoded):
            for pos, modality, caption in runs:
                n = len(m.signal_ids[modality])
                pred = m.project_signal(modality, hidden[b : b + 1, pos : pos + n], m.signal_ids[modality])[0]
                goal = self.store.condition(modality, caption).to(pred.device, pred.dtype)
                weight = self.video_l2 if modality == "video" else 1.0
                l2_terms.append(weight * (pred - goal).norm(dim=-1).mean())  # the released l2_loss: per-token norm
        l2 = torch.stack(l2_terms).sum() / max(totals[1], 1) if l2_terms else ce.new_zeros(())
        return ce + self.l2_weight * l2, {"ce": ce.detach(), "l2": l2.detach()}


class _Trained(nn.Module):
    """The trained tensors of a NextGPT, as one state dict for resumable runs."""

    def __init__(self, model: NextGPT):
        super().__init__()
        self._model = [model]  # not a submodule: its full state dict is not ours to save

    def state_dict(self, *args, **kwargs):
        return {k: v.detach().clone() for k, v in self._model[0].trained_state_dict().items()}

    def load_state_dict(self, state, strict=True):
        return self._model[0].load_state_dict(state, strict=False)


# --- the loop ------------------------------------------------------------------------------------------------------


def train(cfg: StageConfig) -> NextGPT:
    """Train one stage. Under `accelerate launch` each process takes its share of every batch."""
    from accelerate import Accelerator, DistributedDataParallelKwargs
    from transformers import get_cosine_schedule_with_warmup, get_linear_schedule_with_warmup

    seed_everything(cfg.seed)
    recipe = recipe_of(cfg)
    # Not every trained part is used by every batch (a batch may have no video run).
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum,
                              kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
    main = accelerator.is_main_process
    run = Run(cfg.run)
    model = NextGPT.from_pretrained(cfg.model, device=str(accelerator.device))
    examples, blended = build_examples(cfg)
    with accelerator.main_process_first():  # the main process computes and stores the features, the others read them
        store = FeatureStore(model, examples + blended, Path(cfg.features))
    params = trainable_parameters(model, cfg.stage, cfg.lora, cfg.recipe or default_recipe(cfg.model))
    decay = [p for p in params if p.ndim >= 2 and p.shape[0] != model.config.llm.vocab_size]
    no_decay = [p for p in params if not any(p is q for q in decay)]  # biases, norms, the masked matrices
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    warmup = recipe.warmup_steps(cfg.steps) if cfg.warmup is None else cfg.warmup
    make_schedule = get_linear_schedule_with_warmup if recipe.schedule == "linear" else get_cosine_schedule_with_warmup
    # Stepped once per optimizer step on every process (not through accelerate, which would step it once per process).
    schedule = make_schedule(optimizer, warmup, cfg.steps)
    module = StageModule(model, store, cfg.l2_weight, recipe.video_l2)
    module, optimizer = accelerator.prepare(module, optimizer)
    trained = _Trained(model)
    step, _ = run.resume({"trained": trained}, {"optimizer": optimizer, "schedule": schedule})
    model.llm.train()
    rng = random.Random(cfg.seed + step)
    n_pairs = round(cfg.batch_size * cfg.pair_mix) if blended else 0
    rank, world = accelerator.process_index, accelerator.num_processes
    if cfg.batch_size < world:
        raise ValueError(f"a batch of {cfg.batch_size} cannot be shared by {world} processes")
    while step < cfg.steps:
        with accelerator.accumulate(module):
            # Every process draws the same batch and takes its share.
            batch = rng.sample(examples, min(cfg.batch_size - n_pairs, len(examples)))
            batch += rng.sample(blended, min(n_pairs, len(blended)))
            totals = module_totals(module, batch)
            loss, parts = module(batch[rank::world], totals)
            accelerator.backward(loss * world)  # the processes' gradients are averaged: undo the 1 / world
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            if accelerator.sync_gradients:
                schedule.step()
            optimizer.zero_grad()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            parts = {k: float(v) for k, v in accelerator.reduce(parts, reduction="sum").items()}  # the whole batch's
            if main:
                run.log(step, stage=cfg.stage, loss=parts["ce"] + cfg.l2_weight * parts["l2"], ce=parts["ce"],
                        l2=parts["l2"], lr=schedule.get_last_lr()[0])
        if main:
            run.maybe_save(step, {"trained": trained}, {"optimizer": optimizer, "schedule": schedule})
    if main:
        run.save(step, {"trained": trained}, {"optimizer": optimizer, "schedule": schedule}, config=asdict(cfg))
    model.llm.eval()
    model.requires_grad_(False)
    if main:
        model.save_pretrained(cfg.out, components=False)
    accelerator.wait_for_everyone()
    return model


def module_totals(module, batch) -> tuple[int, int]:
    """`StageModule.totals`, through the wrapper `accelerator.prepare` may have put around it."""
    return getattr(module, "module", module).totals(batch)
