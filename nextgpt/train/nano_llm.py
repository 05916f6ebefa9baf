"""Pretrain LLM-nano: a byte-level BPE tokenizer and a small `LlamaForCausalLM` on the world's text (Vicuna's stand-in).

    python -m nextgpt.train.nano_llm [--steps N] [--run runs/nano/llm] [--out assets/nano/llm]

Read it top to bottom: config, the corpus (the world's dialogues in NExT-GPT's `### Human: ... \\n### Assistant:`
template, plus captions and a few facts of the world), the model, the training loop (with a byte-level BPE
tokenizer from `nextgpt.offline`), held-out perplexity and greedy samples, and export as a Hugging Face folder
(fp16 safetensors + tokenizer files).

Why it looks like this
----------------------
* Vicuna brings two things to NExT-GPT: the language and the turn format. Here the language is the world's (colours,
  shapes, positions, motions, notes, rhythms, and the dialogue wordings), and the format is exactly the one
  `nextgpt.conversation` builds: `### Human: {user}\\n### Assistant: {answer}\\n### Human: ...\\n###`, so the model
  learns to close an answer with "\\n###", where generation stops.
* Media do not exist for a text-only model. A medium the human hands over is, half the time, replaced by its caption
  in parentheses and otherwise left out; a medium the assistant produces is left out (the text around it stays).
  Stage 3 of NExT-GPT later teaches the model to put signal tokens there.
* The world's default 2,000 dialogues (1,600 in train) are little text, so the corpus also draws dialogues from the
  world's own generator with other seeds (text only, no media rendered), plus "describe ..." requests answered by
  a caption, and the fixed facts of the world (each colour's note and register). Held-out perplexity is measured on
  the default world's validation dialogues and captions, which the model never sees.
* How people talk to the model is language too, so it is learned here, where Vicuna learned English: the corpus
  adds text-only talk dialogues (`nextgpt.nano.talk.text_dialogues`: free wording in the grammar's train side,
  conversations, answers outside the world, small talk). Without them the stages had to teach a 3.4 M-parameter
  model every synonym through its LoRA, and held-out wording stayed near 54% right (docs/nano.md).
  `talk_following` scores the result on first requests worded in ways it never trained on.
* Documents are `<s> text </s>` (the model adds `<s>` before a prompt itself), packed into one stream; each step
  takes random windows of it, drawn from (seed, step), so a resumed run draws what the uninterrupted one would.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from nextgpt.conversation import ASSISTANT, HUMAN, NEXT_HUMAN, TURN_END
from nextgpt.nano import talk, world as W
from nextgpt.offline import llama_bpe_tokenizer
from nextgpt.train.common import (Run, RunConfig, optimizer_step, parse_config, seed_everything, warmup_cosine,
                                  write_json)


# --- config ----------------------------------------------------------------------------------------------------

@dataclass
class LLMTrainConfig(RunConfig):
    run: str = "runs/nano/llm"
    out: str = "assets/nano/llm"
    extra_dialogues: int = 20000  # text-only dialogues from the generator with other seeds
    talk_dialogues: int = 20000  # text-only talk dialogues (`nextgpt.nano.talk`, train phrasings) with other seeds
    fact_repeats: int = 20  # the 18 fact documents (each colour's note) are repeated so they are actually learned
    vocab_size: int = 2048  # room for the talk's words (sketch, clip, chime, violet...) as whole tokens
    steps: int = 2400
    threads: int = 2
    batch_size: int = 16
    block_size: int = 192
    lr: float = 2e-3
    min_lr: float = 1e-4
    warmup: int = 50
    weight_decay: float = 0.1
    log_every: int = 10
    eval_every: int = 100
    # the model (LlamaConfig)
    hidden_size: int = 256
    num_hidden_layers: int = 4
    num_attention_heads: int = 4
    intermediate_size: int = 688
    max_position_embeddings: int = 512

    def llama_kwargs(self, tokenizer) -> dict:
        return dict(
            vocab_size=len(tokenizer), hidden_size=self.hidden_size, intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers, num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_attention_heads, max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=1e-6, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id, tie_word_embeddings=False,  # as Vicuna
        )


# --- the corpus ------------------------------------------------------------------------------------------------

def render_dialogue(record: dict, rng: np.random.Generator, describe_p: float = 0.5) -> str:
    """A MosIT-style record -> NExT-GPT's template, media replaced by "(caption)" or left out (see the docstring)."""
    captions = {it[f"{m}_name"]: it["caption"] for m in ("image", "video", "audio")
                for it in record.get(f"{m}_list", [])}
    text = ""
    for i, turn in enumerate(record["conversation"]):
        value, pieces, at = turn["value"], [], 0
        for media in sorted(turn["media"], key=lambda x: x["at"]):
            pieces.append(value[at:media["at"]].strip())
            if turn["from"] == "human" and rng.uniform() < describe_p:
                pieces.append(f"({captions[media['name']]})")
            at = media["at"]
        pieces.append(value[at:].strip())
        said = " ".join(p for p in pieces if p)
        if turn["from"] == "human":
            text += (HUMAN if i == 0 else NEXT_HUMAN) + said + ASSISTANT
        else:
            text += " " + said + TURN_END
    return text


_DESCRIBE_ASK = ("describe {np}", "Describe {np}.", "What is {np}?", "Tell me about {np}.")
_FACT_ASK = ("What note is {c}?", "Which note belongs to {c}?", "What does {c} sound like?")
_FACT_SAY = ("The note of {c} is {note}, a {reg} tone.", "{C} is the note {note}. It sounds {reg}.")


def extra_documents(seed: int, n_dialogues: int, rng: np.random.Generator, fact_repeats: int = 1) -> list[str]:
    """Text-only dialogues from the generator (with a seed other than the world's), describe-requests, facts."""
    records, _ = W._dialogues(seed, n_dialogues)  # the generator's dialogue text; no media are rendered
    docs = [render_dialogue(r, rng) for r in records]
    for _ in range(n_dialogues // 4):
        m = ("image", "video", "audio")[int(rng.integers(3))]
        attrs = W.random_attributes(m, rng)
        ask = _DESCRIBE_ASK[int(rng.integers(len(_DESCRIBE_ASK)))].format(np=W.noun_phrase(m, attrs, rng))
        answer = W.caption(m, attrs, rng)
        docs.append(HUMAN + ask + ASSISTANT + " " + answer[0].upper() + answer[1:] + "." + TURN_END)
    for c in [c for c in W.COLOURS for _ in range(fact_repeats)]:
        for ask in _FACT_ASK:
            say = _FACT_SAY[int(rng.integers(len(_FACT_SAY)))]
            say = say.format(c=c, C=c.capitalize(), note=W.NOTE_NAMES[c], reg=W.REGISTER[c])
            docs.append(HUMAN + ask.format(c=c) + ASSISTANT + " " + say + TURN_END)
    return docs


def world_documents(world_dir, split: str, rng: np.random.Generator) -> list[str]:
    """The default world's dialogues and pair captions of one split."""
    world_dir = Path(world_dir)
    docs = [render_dialogue(r, rng) for r in json.loads((world_dir / split / "dialogues.json").read_text())]
    for file in W.PAIR_FILES.values():
        docs += [r["caption"] for r in json.loads((world_dir / split / file).read_text())]
    return docs


def corpus(cfg: LLMTrainConfig) -> dict[str, list[str]]:
    rng = np.random.default_rng([cfg.seed, 1])
    train = world_documents(cfg.world, "train", rng)
    # Other seeds than the world's (1000 + seed), so no generated dialogue is a copy of a held-out one by design.
    train += extra_documents(1000 + cfg.seed, cfg.extra_dialogues, rng, cfg.fact_repeats)
    train += [render_dialogue(r, rng) for r in talk.text_dialogues(2000 + cfg.seed, cfg.talk_dialogues)]
    order = rng.permutation(len(train))
    return {"train": [train[i] for i in order], "validation": world_documents(cfg.world, "validation", rng)}


def token_stream(tokenizer, docs: list[str]) -> torch.Tensor:
    ids = tokenizer(docs, add_special_tokens=False).input_ids
    out = []
    for d in ids:
        out += [tokenizer.bos_token_id, *d, tokenizer.eos_token_id]
    return torch.tensor(out, dtype=torch.long)


# --- training --------------------------------------------------------------------------------------------------

@torch.no_grad()
def perplexity(model, stream: torch.Tensor, block_size: int, batch_size: int = 16) -> float:
    """exp(mean next-token loss) over the stream cut into consecutive blocks."""
    model.eval()
    n = (len(stream) - 1) // block_size
    x = stream[: n * block_size].view(n, block_size)
    y = stream[1: n * block_size + 1].view(n, block_size)
    total, count = 0.0, 0
    for s in range(0, n, batch_size):
        logits = model(input_ids=x[s:s + batch_size]).logits
        total += torch.nn.functional.cross_entropy(logits.flatten(0, 1).float(), y[s:s + batch_size].flatten(),
                                                   reduction="sum").item()
        count += y[s:s + batch_size].numel()
    model.train()
    return math.exp(total / max(1, count))


SAMPLE_PROMPTS = (
    "### Human: describe a red circle\n### Assistant:",
    "### Human: Draw a blue star on the left.\n### Assistant:",
    "### Human: Make a video of a green square moving up.\n### Assistant:",
    "### Human: What note is purple?\n### Assistant:",
    "### Human: Here is a picture: (a yellow triangle in the middle) What colour is the shape?\n### Assistant:",
)


@torch.no_grad()
def samples(model, tokenizer, prompts=SAMPLE_PROMPTS, max_new_tokens: int = 48) -> list[str]:
    """Greedy continuations (as NExT-GPT prompts: <s> added by hand), cut after the first "###"."""
    model.eval()
    out = []
    for p in prompts:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(p, add_special_tokens=False).input_ids]])
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, pad_token_id=tokenizer.eos_token_id)
        text = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
        out.append(p + (text[: text.index("###") + 3] if "###" in text else text))
    model.train()
    return out


@torch.no_grad()
def request_following(model, tokenizer, world_dir, split: str = "validation", limit: int = 60) -> dict:
    """Does the answer to a held-out text->X request ("Draw a blue star on the left.") name what was asked?

    The first human turn of each t2i / t2v / t2a dialogue is the prompt; the greedy answer (up to "###") is read by
    `oracles.caption_attributes` and compared with the requested item's attributes. Returns the fraction of answers
    right on each attribute and on all of them, and the fraction that close the turn with "###"."""
    from nextgpt.nano.oracles import caption_attributes

    world_dir = Path(world_dir)
    attrs = {it["name"]: it["attributes"] for it in json.loads((world_dir / "world.json").read_text())["items"]
             if it["source"] == "mosit"}
    records = [r for r in json.loads((world_dir / split / "dialogues.json").read_text())
               if r["task"] in ("t2i", "t2v", "t2a")][:limit]
    model.eval()
    hits, total, closed = {}, {}, 0
    for r in records:
        prompt = HUMAN + r["conversation"][0]["value"] + ASSISTANT
        want = attrs[r["conversation"][1]["media"][0]["name"]]
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]])
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=40, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
        answer = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True)
        closed += "###" in answer
        found = caption_attributes(answer.split("###")[0])
        for k, v in list(want.items()) + [("all", None)]:
            ok = all(found.get(a) == b for a, b in want.items()) if k == "all" else found.get(k) == v
            hits[k] = hits.get(k, 0) + ok
            total[k] = total.get(k, 0) + 1
    model.train()
    return {"n": len(records), "closed_with_###": closed / max(1, len(records)),
            **{k: hits[k] / total[k] for k in total}}


@torch.no_grad()
def talk_following(model, tokenizer, phrasing: str = "held_out", n: int = 200, seed: int = 99) -> dict:
    """Does LLM-nano alone answer a freely worded first request as the talk dialogues do? A request for a medium
    must be answered with that item's noun phrase ("a video of a red star moving left"), one outside the world
    with the capability text. Prompts come from `talk.text_dialogues` (`phrasing` "held_out": wordings it never
    trained on). Returns the fraction right for media requests, capability answers and both."""
    records = talk.text_dialogues(seed, n, phrasing)
    model.eval()
    hits = {"media": [0, 0], "capability": [0, 0]}
    for r in records:
        user, reply = r["conversation"][0], r["conversation"][1]
        if user["media"] or reply["kind"] not in hits:
            continue
        prompt = HUMAN + user["value"] + ASSISTANT
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(prompt, add_special_tokens=False).input_ids]])
        gen = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=32, do_sample=False,
                             pad_token_id=tokenizer.eos_token_id)
        answer = tokenizer.decode(gen[0, ids.shape[1]:], skip_special_tokens=True).split("###")[0]
        if reply["kind"] == "media":
            item = next(it for m in ("image", "video", "audio") for it in r[f"{m}_list"]
                        if it[f"{m}_name"] == reply["media"][0]["name"])
            m = reply["media"][0]["modality"]
            w = talk.answer_words(item["attributes"])
            ok = talk.noun_phrase(m, item["attributes"]) in answer or (
                m == "audio" and "the note of {c}, {r}".format(**w) in answer)
        else:
            ok = talk.CAPABILITY_MARK in answer
        hits[reply["kind"]][0] += ok
        hits[reply["kind"]][1] += 1
    model.train()
    out = {k: h / max(1, t) for k, (h, t) in hits.items()}
    return {"n": {k: t for k, (_, t) in hits.items()}, **out,
            "all": sum(h for h, _ in hits.values()) / max(1, sum(t for _, t in hits.values()))}


def train(cfg: LLMTrainConfig) -> dict:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    run = Run(cfg.run, save_every_s=cfg.save_every_s)
    cfg.save(run.folder / "config.json")

    docs = corpus(cfg)
    tok_dir = run.folder / "tokenizer"  # trained once, so a resumed run keeps the same ids
    if (tok_dir / "tokenizer.json").exists():
        tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    else:  # byte-level BPE: every byte encodable, so no <unk> in practice
        tokenizer = llama_bpe_tokenizer(docs["train"], cfg.vocab_size)
        tokenizer.save_pretrained(tok_dir)
    streams = {k: token_stream(tokenizer, v) for k, v in docs.items()}
    print(f"vocab {len(tokenizer)}, train tokens {len(streams['train']):,}, "
          f"validation tokens {len(streams['validation']):,}", flush=True)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = LlamaForCausalLM(LlamaConfig(**cfg.llama_kwargs(tokenizer)))
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    model.train()
    train_stream, ppl = streams["train"], None
    for step in run.steps(cfg.steps, {"model": model}, {"opt": opt}):
        rng = np.random.default_rng([cfg.seed, step])
        ix = torch.from_numpy(rng.integers(0, len(train_stream) - cfg.block_size - 1, size=cfg.batch_size))
        x = torch.stack([train_stream[i: i + cfg.block_size] for i in ix])
        y = torch.stack([train_stream[i + 1: i + cfg.block_size + 1] for i in ix])
        lr = cfg.lr * warmup_cosine(step, cfg.steps, cfg.warmup, floor=cfg.min_lr / cfg.lr)
        for group in opt.param_groups:
            group["lr"] = lr
        logits = model(input_ids=x).logits
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.flatten())
        optimizer_step(opt, loss, model.parameters())
        done = step + 1
        if done % cfg.log_every == 0 or done == cfg.steps:
            run.log(done, loss=loss.item(), lr=lr, steps_per_s=run.speed(done))
        if done % cfg.eval_every == 0 or done == cfg.steps:
            ppl = perplexity(model, streams["validation"], cfg.block_size)
            run.log(done, split="validation", perplexity=ppl,
                    request_following_all=request_following(model, tokenizer, cfg.world, limit=20).get("all"))

    if ppl is None:
        ppl = perplexity(model, streams["validation"], cfg.block_size)
    texts = samples(model, tokenizer)
    following = request_following(model, tokenizer, cfg.world)
    talking = {p: talk_following(model, tokenizer, p) for p in ("in", "held_out")}
    run.log(run.step, split="validation-final", request_following=following, talk_following=talking)
    (run.folder / "samples" / f"step{run.step:06d}.txt").write_text("\n\n".join(texts) + "\n")
    out = export(model, tokenizer, cfg.out)
    write_json(out / "eval.json", {"validation_perplexity": ppl, "steps": run.step, "request_following": following,
                                   "talk_following": talking, "samples": texts})
    size = sum(f.stat().st_size for f in out.iterdir()) / 2**20
    print(f"validation perplexity {ppl:.3f}; exported to {out} ({size:.1f} MB)\n", flush=True)
    print("\n\n".join(texts), flush=True)
    print(f"request following (validation t2x prompts): {json.dumps(following)}", flush=True)
    print(f"talk following (first requests, in / held-out wording): {json.dumps(talking)}", flush=True)
    return {"step": run.step, "validation_perplexity": ppl, "request_following": following,
            "talk_following": talking, "samples": texts}


def export(model, tokenizer, out) -> Path:
    """A Hugging Face folder: fp16 model.safetensors + config.json + the tokenizer files."""
    import copy

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    half = copy.deepcopy(model).to(torch.float16)
    half.generation_config.pad_token_id = tokenizer.eos_token_id
    half.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def main(argv=None) -> None:
    cfg, _ = parse_config(LLMTrainConfig, argv, "python -m nextgpt.train.nano_llm", __doc__.split("\n\n")[0])
    train(cfg)


if __name__ == "__main__":
    main()
