"""Generation pieces for transformers' `generate`: a logits processor for signal runs, stopping, streaming.

The released code asserted on partial signal runs (upstream NExT-GPT #46, #66) and let stray signal tokens into the
text (upstream NExT-GPT #68). Here a run, once started, is always completed, signal tokens never appear outside a
run, and a modality can be forced or forbidden (the app's output selector).
"""

from __future__ import annotations

import queue
import secrets
import time
from dataclasses import dataclass

import torch
from transformers import LogitsProcessor, StoppingCriteria
from transformers.generation.streamers import BaseStreamer

STOP = "###"
SEED_RANGE = 2**31  # seeds fit a signed 32-bit integer, as Gradio's number box and every generator take them


def new_seed() -> int:
    """A fresh random seed for a turn that was given none (recorded with its media, so it can be reproduced)."""
    return secrets.randbelow(SEED_RANGE)


def decoder_seed(turn_seed: int, index: int) -> int:
    """The seed of a turn's `index`-th medium of one modality, derived from the turn's one seed: the first uses the
    turn's seed itself, a second of the same modality the next one, so two images of one answer differ."""
    return (int(turn_seed) + index) % SEED_RANGE


def lead_words(text: str, offset: int) -> str:
    """The answer's words that lead into the item at `offset`: from the end of the sentence before (or the start)
    to the item, e.g. "And here is its note, a beeping blue tone:"."""
    head = text[:offset].rstrip()
    cut = max(head.rfind(mark, 0, len(head) - 1) for mark in (". ", "! ", "? ", ": "))
    return head[cut + 2:].strip() if cut >= 0 else head.strip()


def candidate_seed(media_seed: int, k: int) -> int:
    """The seed of a medium's k-th candidate sample: the first is the medium's own seed, the others far from the
    seeds of the answer's other media."""
    return (int(media_seed) + 7919 * k) % SEED_RANGE


# --- signal runs -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignalRun:
    modality: str
    start: int  # index of the first signal token among the generated tokens
    ids: tuple[int, ...]


def find_runs(generated: list[int], runs: dict[str, list[int]]) -> list[SignalRun]:
    """Complete signal runs in generated ids, in order."""
    found = []
    for m, ids in runs.items():
        n = len(ids)
        for i, tok in enumerate(generated):
            if tok == ids[0] and generated[i : i + n] == ids:
                found.append(SignalRun(m, i, tuple(ids)))
    return sorted(found, key=lambda r: r.start)


class SignalRunLogitsProcessor(LogitsProcessor):
    """Signal tokens only as whole runs, at most `max_runs` per modality; `force` / `allowed` pick modalities.

    Stateless: everything is derived from the ids generated so far, which are the only ids `generate` passes
    when it is called with `inputs_embeds` alone.
    - Inside a run, the next token of the run is the only choice (the original pre-Oct-2023 loop did this).
    - Outside a run, only the first token of an allowed modality's run may be chosen; `<Img>`/`</Img>` never.
    - With `force`, the forced modality's run is started where the model would otherwise stop (its best token
      is a stop: EOS or one containing "#"), or at the latest when only room for the run is left.
    """

    def __init__(
        self,
        runs: dict[str, list[int]],
        never: list[int],
        stop_ids: list[int],
        *,
        allowed: set[str] | None = None,
        force: str | None = None,
        max_runs: int = 1,
        max_new_tokens: int = 256,
    ):
        self.runs = runs
        self.allowed = set(runs) if allowed is None else set(allowed)
        if force is not None:
            self.allowed = {force}
        self.force = force
        self.max_runs = max_runs
        self.max_new_tokens = max_new_tokens
        self.never = list(never) + [i for ids in runs.values() for i in ids[1:]]
        self.starts = {m: ids[0] for m, ids in runs.items()}
        self.stop_ids = torch.tensor(sorted(set(stop_ids)), dtype=torch.long)
        self.position = {}  # token id -> (modality, index in run)
        for m, ids in runs.items():
            for k, i in enumerate(ids):
                self.position[i] = (m, k)

    def _state(self, generated: list[int]) -> tuple[int | None, dict[str, int]]:
        """(the id that must come next, or None; completed runs per modality)."""
        counts = {m: 0 for m in self.runs}
        pending = None
        i = 0
        while i < len(generated):
            pos = self.position.get(generated[i])
            if pos is not None and pos[1] == 0:
                m = pos[0]
                ids = self.runs[m]
                got = generated[i : i + len(ids)]
                if len(got) < len(ids):
                    pending = ids[len(got)]
                else:
                    counts[m] += 1
                i += len(got)
            else:
                i += 1
        return pending, counts

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        scores = scores.clone()
        for b in range(scores.shape[0]):
            generated = input_ids[b].tolist()
            pending, counts = self._state(generated)
            if pending is not None:
                scores[b] = -float("inf")
                scores[b, pending] = 0.0
                continue
            best = int(scores[b].argmax())
            row = scores[b]
            row[self.never] = -float("inf")
            for m, start in self.starts.items():
                if m not in self.allowed or counts[m] >= self.max_runs:
                    row[start] = -float("inf")
            m = self.force
            if m is not None and counts[m] == 0:
                room = self.max_new_tokens - len(generated)
                if best in self.stop_ids.tolist() or room <= len(self.runs[m]):
                    row[:] = -float("inf")
                    row[self.starts[m]] = 0.0
        return scores


def stop_like_ids(tokenizer) -> list[int]:
    """EOS and every token whose text contains '#', i.e. the ways the model ends its turn."""
    ids = [tokenizer.eos_token_id]
    for tok, i in tokenizer.get_vocab().items():
        if "#" in tokenizer.convert_tokens_to_string([tok]):
            ids.append(i)
    return ids


# --- streaming -------------------------------------------------------------------------------------------------


class TokenQueueStreamer(BaseStreamer):
    """Hands new token ids from the generate thread to the consumer; `None` marks the end.

    Tokens go over in batches at most every `interval_s` (the first at once): each handover wakes the consumer,
    whose turn at the GIL stalls generation, and a small model makes a token every few milliseconds."""

    def __init__(self, timeout: float | None = None, interval_s: float = 0.02):
        self.queue: queue.Queue = queue.Queue()
        self.timeout = timeout
        self.interval_s = interval_s
        self._prompt_seen = False
        self._pending: list[int] = []
        self._last = -float("inf")

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:  # the first call carries the prompt ids (empty with inputs_embeds)
            self._prompt_seen = True
            return
        self._pending += value.reshape(-1).tolist()
        now = time.monotonic()
        if now - self._last >= self.interval_s:
            self._flush()
            self._last = now

    def _flush(self) -> None:
        if self._pending:
            self.queue.put(self._pending)
            self._pending = []

    def end(self) -> None:
        self._flush()
        self.queue.put(None)

    def __iter__(self):
        while True:
            batch = self.queue.get(timeout=self.timeout)
            if batch is None:
                return
            yield from batch


def visible_text(text: str, final: bool = False) -> str:
    """Cut the text at the stop string; while streaming, hold back what may still become it or a split char."""
    cut = text.find(STOP)
    if cut >= 0:
        return text[:cut].rstrip()
    if final:
        return text.rstrip()
    text = text.rstrip("\ufffd")  # an incomplete multi-byte character
    for k in range(min(len(text), len(STOP) + 1), 0, -1):
        tail = text[-k:]
        if ("\n" + STOP).startswith(tail) or STOP.startswith(tail):
            return text[:-k]
    return text


class CancelCriteria(StoppingCriteria):
    """A stopping criterion that ends generation once `event` is set (the user pressed stop, or left)."""

    def __init__(self, event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        return torch.full((input_ids.shape[0],), self.event.is_set(), dtype=torch.bool, device=input_ids.device)
