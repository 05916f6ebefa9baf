"""NExT-GPT's three training stages, one script: `python -m nextgpt.train --stage {1,2,3} ...`.

1. Encoder-side alignment: media -> caption, LM loss on the caption; trains the input projector.
2. Decoder-side alignment: a request naming a caption -> a reply and a signal run; trains the output projectors
   with the LM loss plus the L2 distance (per token, not squared, as released) between each projector's output
   and the decoder's own text-encoder conditioning of the caption.
3. Instruction tuning (MosIT): LoRA on the LLM plus both projectors, on dialogues.

In every stage the rows of the 38 added tokens (`<Img>`, `</Img>`, the signal tokens) in the input embedding and
the LM head train too; the rest of both matrices stays frozen. (The released model trained both matrices fully,
by a quirk of `resize_token_embeddings`; training only the new rows is the intended behaviour.) Built on
`accelerate`, so the same script runs on one CPU here and on many GPUs with DeepSpeed ZeRO for the 7B preset
(`accelerate launch --config_file configs/accelerate_zero2.yaml -m nextgpt.train ...`).
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
    lr: float = 5e-4  # the released recipe's peak
    weight_decay: float = 0.001
    warmup: int = 50
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


# --- what trains in each stage -----------------------------------------------------------------------------------


def trainable_parameters(model: NextGPT, stage: int, lora: bool | None = None) -> list[nn.Parameter]:
    """Freeze everything, then unfreeze the stage's parts; the added-token rows train through a gradient mask."""
    model.requires_grad_(False)
    params: list[nn.Parameter] = []
    if stage in (1, 3):
        params += list(model.input_projector.parameters())
    if stage in (2, 3):
        params += list(model.output_projectors.parameters())
    if (stage == 3) if lora is None else lora:
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
    if cfg.stage in (1, 2):
        make = data.stage1_example if cfg.stage == 1 else data.stage2_example
        examples = [make(p, rng) for p in data.read_pairs(cfg.data, cfg.modalities)]
    else:
        repeats = {task: int(n) for task, n in (kv.split("=") for kv in cfg.repeat_tasks.split(",") if kv)}
        examples = [ex for d in data.read_dialogues(cfg.data, files=cfg.dialogues) for ex in data.stage3_examples(d, cfg.data)
                    for _ in range(repeats.get(d.get("task"), 1))]
    if not examples:
        raise ValueError(f"no training data for stage {cfg.stage} under {cfg.data}")
    rng.shuffle(examples)
    blended = []
    if cfg.stage == 3 and cfg.pair_mix > 0:
        rng = random.Random(cfg.seed + 1)  # its own stream: the dialogues' examples stay as without the blend
        blended = [make(p, rng) for p in data.read_pairs(cfg.data, cfg.modalities)
                   for make in (data.stage1_example, data.stage2_example)]
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
    """NextGPT plus the stage's loss: forward(examples) -> (loss, parts)."""

    def __init__(self, model: NextGPT, store: FeatureStore, l2_weight: float):
        super().__init__()
        self.model = model
        self.store = store
        self.l2_weight = l2_weight

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

    def forward(self, examples: list[list[data.Piece]]):
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
        ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100)
        hidden = out.hidden_states[-1]
        l2_terms = []
        for b, (_, _, _, runs) in enumerate(encoded):
            for pos, modality, caption in runs:
                n = len(m.signal_ids[modality])
                pred = m.project_signal(modality, hidden[b : b + 1, pos : pos + n], m.signal_ids[modality])[0]
                goal = self.store.condition(modality, caption).to(pred.device, pred.dtype)
                l2_terms.append((pred - goal).norm(dim=-1).mean())  # the released l2_loss: per-token norm
        l2 = torch.stack(l2_terms).mean() if l2_terms else ce.new_zeros(())
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
    from accelerate import Accelerator
    from transformers import get_cosine_schedule_with_warmup

    seed_everything(cfg.seed)
    accelerator = Accelerator(gradient_accumulation_steps=cfg.grad_accum)
    run = Run(cfg.run)
    model = NextGPT.from_pretrained(cfg.model, device=str(accelerator.device))
    examples, blended = build_examples(cfg)
    store = FeatureStore(model, examples + blended, Path(cfg.features))
    params = trainable_parameters(model, cfg.stage, cfg.lora)
    decay = [p for p in params if p.ndim >= 2 and p.shape[0] != model.config.llm.vocab_size]
    no_decay = [p for p in params if not any(p is q for q in decay)]  # biases, norms, the masked matrices
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8,
    )
    schedule = get_cosine_schedule_with_warmup(optimizer, cfg.warmup, cfg.steps)
    module = StageModule(model, store, cfg.l2_weight)
    module, optimizer, schedule = accelerator.prepare(module, optimizer, schedule)
    trained = _Trained(model)
    step, _ = run.resume({"trained": trained}, {"optimizer": optimizer, "schedule": schedule})
    model.llm.train()
    rng = random.Random(cfg.seed + step)
    n_pairs = round(cfg.batch_size * cfg.pair_mix) if blended else 0
    while step < cfg.steps:
        with accelerator.accumulate(module):
            batch = rng.sample(examples, min(cfg.batch_size - n_pairs, len(examples)))
            batch += rng.sample(blended, min(n_pairs, len(blended)))
            loss, parts = module(batch)
            accelerator.backward(loss)
            accelerator.clip_grad_norm_(params, cfg.max_grad_norm)
            optimizer.step()
            schedule.step()
            optimizer.zero_grad()
        step += 1
        if step % cfg.log_every == 0 or step == cfg.steps:
            run.log(step, stage=cfg.stage, loss=float(loss.detach()), ce=float(parts["ce"]), l2=float(parts["l2"]),
                    lr=schedule.get_last_lr()[0])
        run.maybe_save(step, {"trained": trained}, {"optimizer": optimizer, "schedule": schedule})
    run.save(step, {"trained": trained}, {"optimizer": optimizer, "schedule": schedule}, config=asdict(cfg))
    model.llm.eval()
    model.requires_grad_(False)
    if accelerator.is_main_process:
        model.save_pretrained(cfg.out, components=False)
    return model
