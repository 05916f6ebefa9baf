"""The talk layer of the nano world: free wording with a held-out side, conversations, the world's edges, uploads."""

import numpy as np
import pytest

from nextgpt.config import MODALITIES
from nextgpt.nano import oracles, talk
from nextgpt.nano import world as W
from nextgpt.train import data

# Phrases that only the held-out side of the grammar has.
# The held-out side is new templates and new combinations of trained words, not words never trained on ("still
# picture", a held-out medium noun, is also in one trained video -> image template).
HELD_OUT_ONLY = ("let me see", "i'd love", "could i get", "let me watch", "let's hear", "gliding towards", "dead centre",
                 "short and choppy", "long and steady", "film clip", "in the very middle",
                 "can you tell me where it", "as one constant note", "audio tone")


@pytest.fixture(scope="module")
def dialogues():
    pools = talk.stand_in_pools()
    out = {}
    for phrasing in ("in", "held_out"):
        out[phrasing] = [talk._dialogue(i, "test", phrasing, talk.TALK_TASKS[i % 4], np.random.default_rng([1, i]),
                                        pools) for i in range(400)]
    return out


def _human_text(records):
    return " ".join(t["value"].lower() for r in records for t in r["conversation"] if t["from"] == "human")


def test_held_out_wording_never_appears_in_distribution(dialogues):
    seen = _human_text(dialogues["in"])
    held = _human_text(dialogues["held_out"])
    assert not [p for p in HELD_OUT_ONLY if p in seen]
    assert sum(p in held for p in HELD_OUT_ONLY) >= 8


def test_media_turns_name_what_they_make(dialogues):
    """The text before each made item names exactly its attributes, in words the oracles read."""
    assert _named_right(dialogues["in"] + dialogues["held_out"]) > 500


def _attributes(record) -> dict:
    """Each item's name in a talk record -> its attributes."""
    return {it[f"{m}_name"]: it["attributes"] for m in talk.MODALITIES for it in record[f"{m}_list"]}


def _named_right(records) -> int:
    checked = 0
    for r in records:
        attrs = _attributes(r)
        for turn in r["conversation"]:
            if turn["from"] != "gpt" or turn["kind"] != "media":
                continue
            start = 0
            for m in turn["media"]:
                said = oracles.caption_attributes(turn["value"][start:m["at"]])
                truth = attrs[m["name"]]
                assert {a: said.get(a) for a in W.ATTRIBUTES[m["modality"]]} == truth, turn["value"]
                start, checked = m["at"], checked + 1
    return checked


def test_edges_of_the_world_get_text_only(dialogues):
    kinds = {"capability": 0, "upload": 0}
    for r in dialogues["in"]:
        for k, turn in enumerate(r["conversation"]):
            if turn["from"] == "gpt" and turn["kind"] in kinds:
                kinds[turn["kind"]] += 1
                assert turn["media"] == []
                mark = talk.CAPABILITY_MARK if turn["kind"] == "capability" else talk.UPLOAD_MARK
                assert mark in turn["value"]
                if turn["kind"] == "upload":
                    assert r["conversation"][k - 1]["media"][0]["name"].startswith("foreign")
    assert kinds["capability"] > 20 and kinds["upload"] > 10


def test_conversations_hold_every_move(dialogues):
    moves = {t["move"] for r in dialogues["in"] for t in r["conversation"] if t["from"] == "gpt"}
    assert {"t2i", "t2v", "t2a", "i2t", "v2t", "a2t", "own_question", "edit", "correct", "two_media", "outside",
            "foreign_upload"} <= moves
    lengths = [sum(t["from"] == "gpt" for t in r["conversation"]) for r in dialogues["in"] if r["task"] ==
               "conversation"]
    assert min(lengths) >= 2 and max(lengths) <= 6


def test_records_become_stage3_examples(dialogues, tmp_path):
    for r in dialogues["in"][:40]:
        examples = data.stage3_examples(r, tmp_path)
        assert len(examples) == sum(t["from"] == "gpt" for t in r["conversation"])
        for ex in examples:
            runs = [p for p in ex if isinstance(p, data.Run)]
            assert all(p.caption for p in runs)


@pytest.mark.parametrize("seed", range(24))
def test_uploads_as_people_make_them_keep_their_attributes(seed):
    rng = np.random.default_rng(seed)
    attrs = W.random_attributes("image", rng)
    pixels, _ = talk.upload_image(attrs, rng)
    assert oracles.image_attributes(pixels) == attrs
    attrs = W.random_attributes("video", rng)
    frames, fps = talk.upload_video(attrs, rng)
    assert oracles.video_attributes(frames) == attrs and fps > 0
    attrs = W.random_attributes("audio", rng)
    wave, sr = talk.upload_sound(attrs, rng)
    mono = wave.mean(axis=1) if wave.ndim == 2 else wave
    from scipy.signal import resample_poly

    read = oracles.sound_attributes(resample_poly(mono, 16000, sr).astype(np.float32), 16000)
    assert {a: read[a] for a in attrs} == attrs


def test_foreign_uploads_are_not_single_world_shapes():
    rng = np.random.default_rng(0)
    pictures = [talk.foreign_image(rng) for _ in range(12)]
    assert all(p.ndim == 3 and p.shape[2] == 3 and p.dtype == np.uint8 for p in pictures)
    frames, fps = talk.foreign_video(rng)
    assert frames.ndim == 4 and fps > 0
    wave, sr = talk.foreign_sound(rng)
    assert wave.ndim == 1 and sr == 16000 and np.abs(wave).max() <= 1.0


def test_small_talk_and_questions_with_nothing_attached_get_what_nano_can_do():
    """Greetings, thanks and "what can you do?" get a fitting opening and the capability text; a question about an
    attachment, asked before anything is attached or made, says there is nothing to look at."""
    pools = talk.stand_in_pools()
    nothing = chat = 0
    for i in range(200):
        phrasing = "in" if i % 2 == 0 else "held_out"
        r = talk._dialogue(i, "test", phrasing, "small_talk", np.random.default_rng([2, i]), pools)
        turns = r["conversation"]
        k = next(k for k, t in enumerate(turns) if t.get("move") == "small_talk")
        said, asked = turns[k]["value"], turns[k - 1]["value"].lower()
        assert turns[k]["kind"] == "capability" and turns[k]["media"] == [] and talk.CAPABILITY_MARK in said
        assert turns[k - 1]["media"] == []
        if said.startswith(talk.NOTHING_SAYS):
            nothing += 1
            assert not any(t["media"] for t in turns[:k])  # only when nothing came before
        else:
            chat += 1
            table = talk.SMALL_TALK["train" if phrasing == "in" else "held_out"]
            assert any(said.startswith(opening) for text, openings in table for opening in openings)
            if "thank" in asked:
                assert said.startswith(("You're welcome", "Glad"))
    assert nothing > 30 and chat > 80


def test_text_dialogues_for_pretraining_keep_to_the_trained_wording():
    """LLM-nano's pretraining text: every task, small talk included, in train wordings only, media as stand-ins."""
    records = talk.text_dialogues(5, 300)
    assert {r["task"] for r in records} == {*talk.TASK_SHARES, "small_talk"}  # the follow-ups train in stage 6
    assert not [p for p in HELD_OUT_ONLY if p in _human_text(records)]
    assert talk.text_dialogues(5, 300) == records  # seeded
    held = talk.text_dialogues(5, 300, phrasing="held_out")
    assert sum(p in _human_text(held) for p in HELD_OUT_ONLY) >= 5


def test_follow_ups_fill_in_defaults_and_ask_the_model_about_what_it_made():
    """A request that leaves attributes out gets their defaults, named in the answer; a question to the model about
    what it made is about the item it made last; chat and general knowledge within a conversation make no media."""
    pools = talk.stand_in_pools()
    moves = {"defaults": 0, "own_question": 0, "small_talk": 0, "outside": 0}
    short = 0  # "draw a star", "play a tone": as most people type
    for i in range(400):
        phrasing = "in" if i % 2 == 0 else "held_out"
        task = ("defaults", "followup", "general", "followup")[i // 2 % 4]
        r = talk._dialogue(i, "test", phrasing, task, np.random.default_rng([3, i]), pools)
        attrs = _attributes(r)
        made = []
        for k, turn in enumerate(r["conversation"]):
            if turn["from"] != "gpt":
                continue
            made += [m["name"] for m in turn["media"]]
            if turn["move"] in moves:
                moves[turn["move"]] += 1
            if turn["move"] == "defaults":
                asked = oracles.caption_attributes(r["conversation"][k - 1]["value"])
                short += len(r["conversation"][k - 1]["value"].split()) <= 5
                truth = attrs[turn["media"][0]["name"]]
                assert all(asked[a] == truth[a] for a in asked if a in truth), r["conversation"][k - 1]["value"]
                assert any(a not in asked for a in truth)
                said = oracles.caption_attributes(turn["value"])
                assert {a: said.get(a) for a in truth} == truth, turn["value"]
            elif turn["move"] == "own_question":
                assert turn["media"] == [] and turn["about"] == made[-1]
                assert r["conversation"][k - 1]["media"] == []
            elif turn["move"] in ("small_talk", "outside"):
                assert turn["media"] == [] and talk.CAPABILITY_MARK in turn["value"]
    assert min(moves.values()) > 30, moves
    assert short > 0.1 * moves["defaults"]


def test_more_questions_keep_the_held_out_wording_held_out():
    """The stage-6 questions about an upload: trained wordings never hold a held-out phrase, and the held-out test
    dialogues ask in `QUESTIONS`' held-out wording; every answer is about the upload, in text."""
    pools = talk.stand_in_pools()
    records = {p: [talk._dialogue(i, "test", p, "asks", np.random.default_rng([4, i]), pools) for i in range(150)]
               for p in ("in", "held_out")}
    trained = " ".join(q.lower() for qs in talk.MORE_QUESTIONS.values() for q in qs)
    assert not [p for p in HELD_OUT_ONLY if p in trained + _human_text(records["in"])]
    held = {q.split("{")[0].strip() for t in talk.QUESTIONS.values() for q in t["held_out"]}
    asked = [turn["value"].lower() for r in records["held_out"] for turn in r["conversation"] if turn["from"] == "human"]
    assert sum(any(h in q for h in held) for q in asked) > 0.85 * len(asked)  # the others have a typo
    for r in records["in"] + records["held_out"]:
        upload = r["conversation"][0]["media"][0]["name"]
        assert all(t["kind"] == "answer" and t["about"] == upload and not t["media"]
                   for t in r["conversation"] if t["from"] == "gpt")


def test_plain_talk_words_decide_and_items_carry_over():
    """Plain talk: short requests for what nano can make get it (the rest defaulted) and, in the same
    frames, what it cannot gets the text that says what it can; an item taken into another medium keeps its colour;
    edits nano cannot make get that text too; held-out wording stays out of the trained side."""
    pools = talk.stand_in_pools()
    records = {p: [talk._dialogue(i, "test", p, list(talk.PLAIN_TALK)[i % 5], np.random.default_rng([6, i]), pools)
                   for i in range(500)] for p in ("in", "held_out")}
    assert _named_right(records["in"] + records["held_out"]) > 800
    outside_words = set(talk.OTHER_COLOURS) | set(talk.OTHER_SHAPES)
    moves = {"defaults": 0, "refer": 0, "edit": 0, "outside": 0, "foreign_upload": 0, "small_talk": 0}
    for r in records["in"] + records["held_out"]:
        colours = []
        attrs = _attributes(r)
        for k, turn in enumerate(r["conversation"]):
            asked = r["conversation"][k - 1]["value"].lower()
            if turn["from"] == "human":
                colours += [attrs[m["name"]]["colour"] for m in turn["media"] if attrs.get(m["name"])]
                continue
            moves[turn["move"]] = moves.get(turn["move"], 0) + 1
            if turn["kind"] in ("capability", "upload"):
                assert turn["media"] == [] and (talk.CAPABILITY_MARK in turn["value"] or talk.UPLOAD_MARK in turn["value"])
            elif turn["move"] == "defaults":
                assert not outside_words & set(asked.replace(",", " ").split()), asked
            elif turn["move"] == "refer":
                assert attrs[turn["media"][0]["name"]]["colour"] in colours, (asked, turn["value"])
            colours += [attrs[m["name"]]["colour"] for m in turn["media"]]
    assert min(moves[k] for k in ("defaults", "refer", "edit", "outside", "foreign_upload", "small_talk")) > 20, moves
    held_out = [talk.phrase_pattern(f) for table in (
        talk.SHORT_FRAMES, talk.REFER, talk.REFER_FROM_SOUND, talk.PLAIN_EDITS) for side in table.values()
        for f in side["held_out"]]
    said = {p: [t["value"].lower() for r in records[p] for t in r["conversation"] if t["from"] == "human"]
            for p in records}
    assert not [(h.pattern, t) for h in held_out for t in said["in"] if h.search(t)]
    assert sum(any(h.search(t) for t in said["held_out"]) for h in held_out) > 0.6 * len(held_out)


def test_any_upload_wording_never_tells_a_foreign_upload_from_a_world_one():
    """Any question about an upload is asked of world and foreign uploads alike, so only the upload itself can tell
    the model which it is; a world upload asked "what is this?" gets its description."""
    pools = talk.stand_in_pools()
    asked = {True: [], False: []}  # foreign? -> the questions
    for i in range(2000):
        r = talk._dialogue(i, "test", "in", "any_upload", np.random.default_rng([7, i]), pools)
        turns = r["conversation"]
        if not turns[0]["media"]:
            continue
        foreign = turns[1]["kind"] == "upload"
        asked[foreign].append(turns[0]["value"].lower())
        if not foreign and turns[0]["value"].lower().rstrip("?. ").endswith(talk.LOOK_ASKS):
            attrs = _attributes(r)
            said = oracles.caption_attributes(turns[1]["value"])
            assert said == {a: v for a, v in attrs[turns[0]["media"][0]["name"]].items() if a in said}
            assert len(said) >= 2, turns[1]["value"]  # a description: the colour and more
    assert 0.3 < len(asked[True]) / (len(asked[True]) + len(asked[False])) < 0.5
    for looks in (("what is this", "what's this", "what is it"), ("describe", "tell me about"), ("colour", "note")):
        share = [sum(any(w in q for w in looks) for q in asked[f]) / len(asked[f]) for f in (True, False)]
        assert 0.75 < share[0] / share[1] < 1.33, (looks, share)


def test_requests_outside_the_world_come_in_the_worlds_own_frames():
    """A request outside the world is a world request with one thing swapped (another colour, shape or thing), so
    its frame is no clue: outside and world requests open alike. (Outside requests once had a few frames of their
    own, "draw a pink star" among them, and nano refused the bare "draw a blue star".)"""
    rng = np.random.default_rng(3)
    others = (*talk.OTHER_COLOURS, *talk.OTHER_SHAPES, *talk.OTHER_THINGS, *talk.OTHER_SOUNDS)
    for m in MODALITIES:
        said = {"in": [], "out": []}
        for k in range(3000):
            short = k % 2 == 0
            named = talk._named(m, rng) if k % 4 < 2 else set(W.ATTRIBUTES[m])
            attrs = W.random_attributes(m, rng)
            attrs.update({a: talk.DEFAULTS[a] for a in W.ATTRIBUTES[m] if a not in named})
            partial = None if named == set(W.ATTRIBUTES[m]) else named
            said["in"].append(talk.request(m, attrs, "in", rng, partial, short))
            said["out"].append(talk.outside_request(m, "in", rng, short))
        assert np.mean([any(o.split()[-1][:4] in t.lower() for o in others) for t in said["out"]]) > 0.9
        firsts = {k: np.array([t.lower().split()[0].strip(",!?.") for t in v]) for k, v in said.items()}
        gap = sum(abs(np.mean(firsts["in"] == w) - np.mean(firsts["out"] == w)) for w in set(np.concatenate(
            list(firsts.values())))) / 2
        assert gap < 0.1, (m, gap)  # total variation between the openings' distributions


def _task_dialogues(task: str, seed: int, n: int) -> tuple[dict, dict]:
    """`n` stand-in test dialogues of `task` per phrasing split (dialogue i at seed [seed, i]), and what the human
    says in them, lower-cased."""
    pools = talk.stand_in_pools()
    records = {p: [talk._dialogue(i, "test", p, task, np.random.default_rng([seed, i]), pools) for i in range(n)]
               for p in ("in", "held_out")}
    said = {p: [t["value"].lower() for r in records[p] for t in r["conversation"] if t["from"] == "human"]
            for p in records}
    return records, said


def test_questions_asked_indirectly_answer_the_item_and_keep_the_held_out_wording_held_out():
    """Questions wrapped as people wrap them ("do you know which way it goes?") about an upload or about what the
    model made: answered in text about that item, never with a held-out question on the trained side, and the
    held-out side asks in the held-out wording."""
    records, said = _task_dialogues("indirect", 8, 300)
    assert not [t for t in said["in"] if talk._held_out_question(t) or any(p in t for p in HELD_OUT_ONLY)]
    assert sum(t.startswith(talk.WRAPPERS) or " " + talk.WRAPPERS[1] in t for t in said["in"]) > 100
    moves, held_out = {}, []
    for p, recs in records.items():
        for r in recs:
            attrs = _attributes(r)
            turns = r["conversation"]
            for k, turn in enumerate(turns):
                if turn["from"] == "gpt" and turn["kind"] == "answer":
                    moves[turn["move"]] = moves.get(turn["move"], 0) + 1
                    assert not turn["media"]
                    named = oracles.caption_attributes(turn["value"])
                    assert named and named.items() <= attrs[turn["about"]].items(), (turn, attrs[turn["about"]])
                    if p == "held_out":
                        held_out.append(talk._held_out_question(turns[k - 1]["value"].lower()))
    assert min(moves.get(k, 0) for k in ("own_question", "i2t", "v2t", "a2t")) > 30, moves
    assert np.mean(held_out) > 0.85  # the others have a typo


def _moves_answering_their_item(records) -> dict:
    """How often each assistant move comes, checking that every answer names only what its item is."""
    moves = {}
    for r in records:
        attrs = _attributes(r)
        for turn in r["conversation"]:
            if turn["from"] == "gpt":
                moves[turn["move"]] = moves.get(turn["move"], 0) + 1
                if turn["kind"] == "answer":
                    named = oracles.caption_attributes(turn["value"])
                    assert named and named.items() <= attrs[turn["about"]].items(), turn
    return moves


def test_broad_wording_holds_no_held_out_phrase_and_names_what_it_makes():
    """The broad wording (stage 11) recombines trained phrases: no held-out phrase on the trained side, the held-out
    side asks in the held-out wording, every made item named right and every answer about its item."""
    records, said = _task_dialogues("broad", 9, 150)
    assert not [t for t in said["in"] if talk.held_out_text(t) or any(p in t for p in HELD_OUT_ONLY)]
    assert np.mean([talk.held_out_text(t) for t in said["held_out"]]) > 0.3
    assert _named_right(records["in"] + records["held_out"]) > 300
    moves = _moves_answering_their_item(records["in"])
    assert min(moves.get(k, 0) for k in ("two_media", "own_question", "edit", "refer", "outside", "t2i", "t2v",
                                         "t2a", "i2t")) >= 5, moves


def test_held_out_text_finds_held_out_phrases_in_any_sentence():
    assert talk.held_out_text("Hey, draw a star on the left of the frame please")
    assert talk.held_out_text("ok, which color does this clip show?")
    assert not talk.held_out_text("draw a red star on the left")


def test_recall_names_each_earlier_item_it_comes_back_to_and_answers_about_it():
    """The recall task (stage 12) keeps coming back to earlier items. An edit or reference to an item other than the
    latest always names it ("same thing but blue" is for the latest only), earlier tasks keep their draws, answers
    are about their item, and the held-out wording of its questions stays held out."""
    a, b = {"modality": "image"}, {"modality": "audio"}
    exact, loose = (talk._Talk(0, "test", "in", None, {}, exact=e) for e in (True, False))
    exact.held = loose.held = [a, b]
    tables = [*talk.EDITS.values(), talk.REVERSE, *(side for table in (talk.PLAIN_EDITS, talk.REFER,
                                                                      talk.REFER_FROM_SOUND)
                                                    for sides in table.values() for side in sides.values())]
    for options in tables:
        assert all("{ref}" in o for o in talk._with_ref(exact, a, options)), options
        assert talk._with_ref(exact, b, options) is options and talk._with_ref(loose, a, options) is options
    records, said = _task_dialogues("recall", 10, 150)
    held_out = [talk.phrase_pattern(p) for table in (*talk.RECALL_QUESTIONS.values(), talk.OWN_DESCRIBE)
                for p in table["held_out"]]
    assert not [t for t in said["in"] if any(p.search(t) for p in held_out)]
    assert sum(any(p.search(t) for p in held_out) for t in said["held_out"]) > 20
    assert _named_right(records["in"] + records["held_out"]) > 300
    moves = _moves_answering_their_item(records["in"] + records["held_out"])
    assert min(moves.get(k, 0) for k in ("edit", "own_question", "upload_question", "refer", "correct")) >= 20, moves
    own = [talk.phrase_pattern(p) for p in talk.OWN_DESCRIBE["train"]]
    assert sum(any(p.search(t) for p in own) for t in said["in"]) > 10


def test_revisit_is_recall_longer_and_mostly_about_earlier_items(monkeypatch):
    """The revisit task (stage 13) is the recall task with four to six turns, whose edits, references and questions
    are mostly about an item other than the latest; it names that item and answers about it as recall does, and asks
    things outside the world between them (recall does not)."""
    about_latest = {"recall": [], "revisit": []}
    task = ""
    for name in ("_edit", "_plain_edit", "_refer_to", "_recall_ask"):
        def noting(t, item, *args, _move=getattr(talk, name), **kwargs):
            about_latest[task].append(item is t.held[-1])
            return _move(t, item, *args, **kwargs)
        monkeypatch.setattr(talk, name, noting)
    for task in about_latest:
        records, _ = _task_dialogues(task, 12, 100)
    records = records["in"] + records["held_out"]
    assert {sum(t["from"] == "human" for t in r["conversation"]) for r in records} == {4, 5, 6}
    assert _named_right(records) > 300
    moves = _moves_answering_their_item(records)
    assert min(moves.get(k, 0) for k in ("edit", "own_question", "refer", "correct", "outside", "small_talk")) >= 20, \
        moves
    assert np.mean(about_latest["revisit"]) < 0.33 < np.mean(about_latest["recall"]), \
        {k: np.mean(v) for k, v in about_latest.items()}


def test_late_uploads_come_after_other_turns_and_half_are_foreign(monkeypatch):
    """The late_upload task (stage 14) uploads an item after one to three turns of any kind: the world's, answered
    about that item, or (about half the time) one from outside the world, which gets "not from my world"."""
    late = []  # (turns before the upload, whether it was foreign, the answer) per dialogue
    def noting(t, *args, _real=talk._upload_question, **kwargs):
        before = len(t.turns)
        foreign = _real(t, *args, **kwargs)
        late.append((before // 2, foreign, t.turns[before + 1]))
        return foreign
    monkeypatch.setattr(talk, "_upload_question", noting)
    records, _ = _task_dialogues("late_upload", 14, 150)
    assert len(late) == 300 and {n for n, _, _ in late} == {1, 2, 3}
    assert 0.4 < np.mean([f for _, f, _ in late]) < 0.6
    assert all((answer["move"] == "foreign_upload") == foreign for _, foreign, answer in late)
    moves = _moves_answering_their_item(records["in"] + records["held_out"])
    assert min(moves.get(k, 0) for k in ("foreign_upload", "i2t", "v2t", "a2t", "outside")) >= 20, moves
