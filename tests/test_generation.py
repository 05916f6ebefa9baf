"""Signal runs, modality forcing, stopping and stream text handling, without a model."""

import torch

from nextgpt.generation import SignalRunLogitsProcessor, find_runs, lead_words, visible_text

RUNS = {"image": [10, 11, 12, 13], "video": [20, 21, 22], "audio": [30, 31]}
NEVER = [8, 9]  # <Img>, </Img>
STOPS = [2, 40]  # EOS and a '#' token
V = 50


def greedy(processor, biases, steps):
    """Pick the argmax each step; `biases[step]` = token the raw model 'wants' (others random and low)."""
    ids = torch.zeros((1, 0), dtype=torch.long)
    g = torch.Generator().manual_seed(0)
    for step in range(steps):
        scores = torch.randn(1, V, generator=g)
        scores[0, STOPS] = -10.0  # the raw model only stops where a test says so
        if step in biases:
            scores[0, biases[step]] = 100.0
        scores = processor(ids, scores)
        ids = torch.cat([ids, scores.argmax(-1, keepdim=True)], 1)
    return ids[0].tolist()


def test_partial_run_is_completed():
    p = SignalRunLogitsProcessor(RUNS, NEVER, STOPS, max_new_tokens=20)
    # the model starts an image run, then 'wants' stray text and a video token mid-run
    out = greedy(p, {2: 10, 3: 5, 4: 21}, 10)
    assert out[2:6] == [10, 11, 12, 13]
    assert find_runs(out, RUNS)[0].modality == "image"


def test_no_stray_signal_tokens_and_no_media_tags():
    p = SignalRunLogitsProcessor(RUNS, NEVER, STOPS, max_new_tokens=30)
    out = greedy(p, {0: 12, 1: 22, 2: 8, 3: 9, 4: 31}, 6)
    assert not set(out[:5]) & {12, 22, 8, 9, 31}


def test_one_run_per_modality():
    p = SignalRunLogitsProcessor(RUNS, NEVER, STOPS, max_new_tokens=30)
    out = greedy(p, {0: 30, 5: 30}, 8)
    assert out[:2] == [30, 31] and out[5] != 30


def test_forbidden_modality_never_starts():
    p = SignalRunLogitsProcessor(RUNS, NEVER, STOPS, allowed=set(), max_new_tokens=30)
    out = greedy(p, {0: 10, 1: 20, 2: 30}, 4)
    assert not set(out) & {10, 20, 30}


def test_forced_modality_replaces_the_stop():
    p = SignalRunLogitsProcessor(RUNS, NEVER, STOPS, force="video", max_new_tokens=30)
    out = greedy(p, {0: 10, 3: 2}, 8)  # wants an image first (refused), then wants to stop at step 3
    assert out[0] != 10
    assert out[3:6] == [20, 21, 22]


def test_forced_modality_fits_in_the_budget():
    p = SignalRunLogitsProcessor(RUNS, NEVER, STOPS, force="image", max_new_tokens=6)
    out = greedy(p, {}, 6)
    assert out[2:6] == [10, 11, 12, 13]


def test_visible_text_cuts_and_holds_back_the_stop():
    assert visible_text("Hello\n### Human: x") == "Hello"
    assert visible_text("Hello\n#") == "Hello"
    assert visible_text("Hello\n") == "Hello"
    assert visible_text("a # b") == "a # b"
    assert visible_text("Hello ", final=True) == "Hello"
    assert visible_text("caf\ufffd") == "caf"


def test_stop_string_in_every_tokenisation():
    """`###` stops generation whether it arrives as one token or as several (the official code missed [2277, 29937])."""
    from transformers.generation.stopping_criteria import StopStringCriteria

    from nextgpt.config import tiny
    from nextgpt.generation import STOP
    from nextgpt.llm import build_tiny_tokenizer

    tok = build_tiny_tokenizer(tiny().signal)
    stop = StopStringCriteria(tok, [STOP])
    hello = tok("Hello there", add_special_tokens=False).input_ids
    whole = tok("\n###", add_special_tokens=False).input_ids
    pieces = [i for ch in "\n###" for i in tok(ch, add_special_tokens=False).input_ids]
    assert whole != pieces
    for tail in (whole, pieces):
        assert bool(stop(torch.tensor([hello + tail]), None)[0])
    assert not bool(stop(torch.tensor([hello + pieces[:-1]]), None)[0])


def test_lead_words_are_the_sentence_that_leads_into_an_item():
    text = "Sure! Here is a blue star: And here is its note, a beeping blue tone:"
    assert lead_words(text, len("Sure! Here is a blue star:")) == "Here is a blue star:"
    assert lead_words(text, len(text)) == "And here is its note, a beeping blue tone:"
    assert lead_words("Here it is.", 0) == ""
