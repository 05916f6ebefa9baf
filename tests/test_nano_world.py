"""The nano world (nextgpt/nano/world.py) and its oracles (nextgpt/nano/oracles.py).

The oracles must read the generator's own media perfectly, and still read them after damage like a small decoder's:
Gaussian blur and pixel noise for images and videos (then H.264), noise, a lowpass and a 64-bin mel spectrogram
inverted by Griffin-Lim for sounds.
"""

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image, ImageFilter
from scipy import ndimage, signal

from nextgpt.nano import oracles, world
from nextgpt.nano.oracles import caption_attributes, image_attributes, sound_attributes, video_attributes

SR = world.SAMPLE_RATE
COUNTS = dict(n_images=48, n_videos=20, n_audios=24, n_dialogues=48)


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """The same small world written twice with seed 0, and once with seed 1."""
    out = {}
    for key, seed in (("a", 0), ("b", 0), ("c", 1)):
        path = tmp_path_factory.mktemp(f"world_{key}")
        out[key] = (path, world.generate(path, seed=seed, **COUNTS))
    return out


def _load(path: Path, name: str):
    return json.loads((path / name).read_text())


# --- vocabulary ------------------------------------------------------------------------------------------------

def test_vocabulary_is_well_separated():
    assert len(world.COLOURS) >= 6 and set(world.COLOURS) == set(world.NOTES) == set(world.NOTE_NAMES)
    assert world.SHAPES == ("circle", "square", "triangle", "star")
    assert world.POSITIONS == ("left", "centre", "right")
    assert world.DIRECTIONS == ("left", "right", "up", "down")
    assert world.RHYTHMS == ("steady", "beeping")
    rgb = {c: np.array(v, float) for c, v in world.COLOURS.items()}
    for a, b in itertools.combinations(rgb, 2):
        assert np.linalg.norm(rgb[a] - rgb[b]) >= 110, (a, b)
    for c in rgb:
        assert np.linalg.norm(rgb[c] - np.array(world.BACKGROUND)) >= 180, c
    notes = sorted(world.NOTES.values())
    assert 250 <= notes[0] and notes[-1] <= 2000
    assert all(b / a >= 1.3 for a, b in zip(notes, notes[1:]))
    assert all(world.colour_of_pitch(hz * 1.05) == c for c, hz in world.NOTES.items())


def test_renderers_shapes_and_ranges():
    rng = np.random.default_rng(0)
    img = world.render_image("red", "star", "left", rng)
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == world.BACKGROUND
    frames = world.render_video("blue", "square", "up", rng)
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8
    for _ in range(20):  # the motion is large: >= 24 px between the first and last frame's centroids
        d = world.DIRECTIONS[int(rng.integers(4))]
        frames = world.render_video("green", "circle", d, rng)
        c0, c1 = (oracles._blob(f.astype(float))["centroid"] for f in (frames[0], frames[-1]))
        assert np.hypot(c1[0] - c0[0], c1[1] - c0[1]) >= 24
    for rhythm in world.RHYTHMS:
        wave = world.render_sound("yellow", rhythm, rng)
        assert wave.dtype == np.float32 and SR <= len(wave) <= 2 * SR and np.abs(wave).max() <= 0.81
        assert abs(wave[0]) < 1e-3 and abs(wave[-1]) < 1e-3  # fades, no clicks at the ends
        env = np.abs(signal.hilbert(wave))[SR // 10: -SR // 10]
        gated = np.mean(env < 0.05 * env.max())
        assert (gated > 0.3) if rhythm == "beeping" else (gated == 0), (rhythm, gated)
    s = world.sample("video", rng)
    assert set(s) == {"attributes", "caption", "data"} and s["data"].shape == (8, 64, 64, 3)


# --- generation, splits, schemas ------------------------------------------------------------------------------

def test_generation_is_deterministic(worlds):
    (a, _), (b, _), (c, _) = worlds["a"], worlds["b"], worlds["c"]
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert (a / "world.json").read_bytes() != (c / "world.json").read_bytes()


def test_counts_are_independent_of_each_other(tmp_path):
    """An item depends on (seed, modality, index) only: more dialogues or images change no existing sound."""
    big = world.generate(tmp_path, seed=0, n_images=2, n_videos=0, n_audios=24, n_dialogues=0)
    first = big["items"]
    small = world.generate(tmp_path / "x", seed=0, n_images=1, n_videos=0, n_audios=24, n_dialogues=0)
    audio = lambda m: [(i["name"], i["caption"], i["attributes"]) for i in m["items"] if i["modality"] == "audio"]
    assert audio(small) == [(i["name"], i["caption"], i["attributes"]) for i in first if i["modality"] == "audio"]


def test_splits_are_disjoint_and_cover_every_value(worlds):
    path, manifest = worlds["a"]
    items = manifest["items"]
    by_name = {(it["modality"], it["name"]): it for it in items}
    assert len(by_name) == len(items)
    seen = {}
    for split in world.SPLITS:
        names = set()
        for modality, file in world.PAIR_FILES.items():
            key = f"{modality}_name"
            for rec in _load(path / split, file):
                names.add((modality, rec[key]))
        for d in _load(path / split, "dialogues.json"):
            for turn in d["conversation"]:
                names.update((m["modality"], m["name"]) for m in turn["media"])
        for key in names:
            assert by_name[key]["split"] == split
        seen[split] = names
    for a, b in itertools.combinations(world.SPLITS, 2):
        assert not seen[a] & seen[b]
    assert set().union(*seen.values()) == set(by_name)  # every item is in exactly one split's files
    for modality, names in world.ATTRIBUTES.items():
        for name in names:
            train = {it["attributes"][name] for it in items if it["modality"] == modality and it["split"] == "train"}
            assert train == set(world.VALUES[name]), (modality, name)
    for it in items:
        assert (path / world.FOLDERS[it["modality"]] / it["name"]).is_file()


def test_pair_files_use_the_official_schemas(worlds, media_dir):
    path, _ = worlds["a"]
    official = {f: json.loads((media_dir / "pairs" / f).read_text())[0] for f in world.PAIR_FILES.values()}
    for split in world.SPLITS:
        for modality, file in world.PAIR_FILES.items():
            records = _load(path / split, file)
            for rec in records:
                assert set(rec) == set(official[file]), file
                for key, value in rec.items():
                    assert type(value) is type(official[file][key]), (file, key)
    manifest = _load(path, "world.json")
    assert set(manifest["vocabulary"]["colours"]) == set(world.COLOURS)
    assert manifest["vocabulary"]["colours"]["red"]["rgb"] == list(world.COLOURS["red"])


def test_dialogues_follow_the_schema_and_make_sense(worlds):
    path, manifest = worlds["a"]
    attrs = {(it["modality"], it["name"]): it["attributes"] for it in manifest["items"]}
    tasks = set()
    for split in world.SPLITS:
        for d in _load(path / split, "dialogues.json"):
            tasks.add(d["task"])
            assert set(d) == {"id", "task", "image_list", "video_list", "audio_list", "conversation"}
            listed = {(m, e[f"{m}_name"]) for m in world.ATTRIBUTES for e in d[f"{m}_list"]}
            roles = [t["from"] for t in d["conversation"]]
            assert roles[0] == "human" and roles[-1] == "gpt"
            assert all(a != b for a, b in zip(roles, roles[1:]))
            media = []
            for turn in d["conversation"]:
                assert set(turn) == {"from", "value", "media"} and turn["value"].strip()
                for m in turn["media"]:
                    assert (m["modality"], m["name"]) in listed and 0 <= m["at"] <= len(turn["value"])
                    assert m["name"] not in turn["value"] and "<" not in turn["value"]
                    media.append((turn["from"], m, turn["value"]))
            assert {(m["modality"], m["name"]) for _, m, _ in media} == listed
            for role, m, value in media:  # whatever gpt says after a media item names its attributes
                a = attrs[(m["modality"], m["name"])]
                if role == "gpt" and value[m["at"]:].strip():
                    found = caption_attributes(value[m["at"]:])
                    assert all(found.get(k) == v for k, v in a.items()), value
                if role == "gpt" and a.get("shape") and a["shape"] in value[: m["at"]]:
                    # named before the item as captions name it: LLM-nano never learnt to fill "the <colour> ___"
                    assert f"a {a['colour']} {a['shape']}:" in value[: m["at"]], value
            src, dst = d["task"][0], d["task"][2] if len(d["task"]) == 3 else None
            if dst and "t" not in (src, dst):  # X -> Y: the output has the input's colour (and shape, if both have)
                (_, a_in, _), (_, a_out, _) = media
                a, b = attrs[(a_in["modality"], a_in["name"])], attrs[(a_out["modality"], a_out["name"])]
                assert a["colour"] == b["colour"] and a.get("shape", b.get("shape")) == b.get("shape", a.get("shape"))
    assert tasks == set(world.TASKS)


def test_question_dialogues_reuse_train_pair_media(worlds, tmp_path):
    """`n_questions` only adds train dialogues asking one attribute of a train pair item; nothing else changes."""
    path, manifest = worlds["a"]
    with_q = world.generate(tmp_path, seed=0, **COUNTS, n_questions=12)
    assert with_q["items"] == manifest["items"]
    for split in ("validation", "test"):
        assert _load(tmp_path / split, "dialogues.json") == _load(path / split, "dialogues.json")
    plain, extended = _load(path / "train", "dialogues.json"), _load(tmp_path / "train", "dialogues.json")
    assert extended[: len(plain)] == plain
    questions = extended[len(plain):]
    pairs = {it["name"]: it for it in manifest["items"] if it["source"] == "pairs" and it["split"] == "train"}
    assert [q["id"] for q in questions] == [f"question_{k:06d}" for k in range(12)]
    assert [q["task"] for q in questions] == ["i2t", "v2t", "a2t"] * 4
    for q in questions:
        human, gpt = q["conversation"]
        (shown,) = human["media"]
        item = pairs[shown["name"]]
        asked = world.asked_attributes(human["value"], item["modality"])
        assert len(asked) == 1 and not gpt["media"]
        assert caption_attributes(gpt["value"]).get(asked[0]) == item["attributes"][asked[0]], gpt["value"]


def test_every_caption_names_its_attributes(worlds):
    _, manifest = worlds["a"]
    for it in manifest["items"]:
        assert caption_attributes(it["caption"]) == it["attributes"], it["caption"]
    rng = np.random.default_rng(0)
    for modality, templates in world.TEMPLATES.items():
        assert len(templates) >= 8
        for template in templates:
            for _ in range(30):
                a = world.random_attributes(modality, rng)
                text = world._fill(template, a, rng)
                assert caption_attributes(text) == a, text


def test_caption_attributes_reads_free_answers():
    assert caption_attributes("A red circle moving to the left.") == {"colour": "red", "shape": "circle",
                                                                      "direction": "left"}
    assert caption_attributes("It shows a BLUE star on the right-hand side") == {"colour": "blue", "shape": "star",
                                                                                 "position": "right"}
    assert caption_attributes("two squares in the middle") == {"shape": "square", "position": "centre"}
    assert caption_attributes("a steady tone of green") == {"colour": "green", "rhythm": "steady"}
    assert caption_attributes("the purple triangle goes up") == {"colour": "purple", "shape": "triangle",
                                                                 "direction": "up"}
    assert caption_attributes("nothing here") == {}


def test_cli_writes_a_world(tmp_path, capsys):
    world.main([str(tmp_path), "--seed", "3", "--images", "3", "--videos", "1", "--audios", "2", "--dialogues", "2"])
    assert (tmp_path / "world.json").is_file() and "wrote" in capsys.readouterr().out


# --- oracles ---------------------------------------------------------------------------------------------------

def _blur_noise(img: np.ndarray, rng, sigma=10.0) -> np.ndarray:
    radius = rng.uniform(1.0, 1.5)
    a = np.asarray(Image.fromarray(img).filter(ImageFilter.GaussianBlur(radius)), dtype=np.float64)
    return np.clip(a + rng.normal(0, sigma, a.shape), 0, 255).round().astype(np.uint8)


def _score(found: dict, attrs: dict) -> dict:
    return {k: found[k] == v for k, v in attrs.items()}


def _accuracy(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}


def test_image_oracle_clean_and_degraded():
    rng = np.random.default_rng(1)
    clean, degraded = [], []
    for _ in range(300):
        a = world.random_attributes("image", rng)
        img = world.render("image", a, rng)
        clean.append(_score(image_attributes(img), a))
        degraded.append(_score(image_attributes(_blur_noise(img, rng)), a))
    assert all(v == 1.0 for v in _accuracy(clean).values()), _accuracy(clean)
    assert all(v >= 0.95 for v in _accuracy(degraded).values()), _accuracy(degraded)
    # Other input forms: PIL image and float array in [0, 1].
    img = world.render_image("cyan", "triangle", "right", rng)
    want = {"colour": "cyan", "shape": "triangle", "position": "right"}
    assert image_attributes(Image.fromarray(img)) == want == image_attributes(img / 255.0)
    assert image_attributes(np.full((64, 64, 3), 235, np.uint8)) == {"colour": None, "shape": None, "position": None}


def test_video_oracle_clean_and_degraded_through_mp4(tmp_path):
    rng = np.random.default_rng(2)
    clean, degraded = [], []
    for k in range(60):
        a = world.random_attributes("video", rng)
        frames = world.render("video", a, rng)
        clean.append(_score(video_attributes(frames), a))
        if k < 24:  # blur + noise, then the H.264 round trip
            path = tmp_path / f"{k}.mp4"
            world.write_video(path, np.stack([_blur_noise(f, rng) for f in frames]))
            decoded = oracles.load_frames(path)
            assert decoded.shape == (8, 64, 64, 3)
            degraded.append(_score(video_attributes(decoded), a))
    assert all(v == 1.0 for v in _accuracy(clean).values()), _accuracy(clean)
    assert all(v >= 0.95 for v in _accuracy(degraded).values()), _accuracy(degraded)
    still = np.stack([world.render_image("red", "square", "centre")] * 8)
    assert video_attributes(still)["direction"] is None


def _add_noise(x, rng, snr_db):
    return x + rng.normal(0, np.sqrt(np.mean(x**2) / 10 ** (snr_db / 10)), x.shape)


def _lowpass(x, hz):
    return signal.sosfilt(signal.butter(6, hz, fs=SR, output="sos"), x)


def _mel_filters(n_mels=64, n_fft=1024):
    """Slaney-style triangular mel filters (linear below 1 kHz, log above), area-normalised, as AudioLDM's."""
    to_mel = lambda f: np.where(f < 1000, f * 3 / 200, 15 + 27 * np.log(np.maximum(f, 1e-9) / 1000) / np.log(6.4))
    to_hz = lambda m: np.where(m < 15, m * 200 / 3, 1000 * np.exp((m - 15) * np.log(6.4) / 27))
    freqs = np.arange(n_fft // 2 + 1) * SR / n_fft
    edges = to_hz(np.linspace(0, to_mel(np.array(SR / 2)), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)))
    for i in range(n_mels):
        lo, mid, hi = edges[i: i + 3]
        fb[i] = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid))) * 2 / (hi - lo)
    return fb


def _mel_griffin_lim(x, rng, iters=16, smooth=1.0):
    """16 kHz -> 64-bin log-mel (1024-point STFT, 160 hop), blurred a little like a VAE would, then back through the
    filters' pseudo-inverse and Griffin-Lim: what an AudioLDM-nano without a trained vocoder would output."""
    stft = lambda y: signal.stft(y, SR, nperseg=1024, noverlap=1024 - 160)[2]
    istft = lambda s: signal.istft(s, SR, nperseg=1024, noverlap=1024 - 160)[1][: len(x)]
    fb = _mel_filters()
    logmel = ndimage.gaussian_filter(np.log(np.maximum(fb @ np.abs(stft(x)), 1e-5)), smooth)
    mag = np.maximum(np.linalg.pinv(fb) @ np.exp(logmel), 0)
    spec = mag * np.exp(2j * np.pi * rng.uniform(size=mag.shape))
    for _ in range(iters):
        spec = mag * np.exp(1j * np.angle(stft(istft(spec))))
    return istft(spec)


def test_sound_oracle_clean_and_degraded():
    rng = np.random.default_rng(3)
    clean, noisy, mel = [], [], []
    for k in range(200):
        a = world.random_attributes("audio", rng)
        wave = world.render("audio", a, rng)
        found = sound_attributes(wave, SR)
        clean.append(_score(found, a))
        assert abs(np.log2(found["pitch_hz"] / world.NOTES[a["colour"]])) < 0.03  # within half a semitone
        x = wave.astype(np.float64)
        noisy.append(_score(sound_attributes(_add_noise(_lowpass(x, rng.uniform(2500, 4000)), rng,
                                                        rng.uniform(15, 20)), SR), a))
        if k < 24:
            mel.append(_score(sound_attributes(_mel_griffin_lim(x, rng), SR), a))
    assert all(v == 1.0 for v in _accuracy(clean).values()), _accuracy(clean)
    assert all(v >= 0.95 for v in _accuracy(noisy).values()), _accuracy(noisy)
    assert all(v >= 0.95 for v in _accuracy(mel).values()), _accuracy(mel)
    assert sound_attributes(np.zeros(SR), SR) == {"colour": None, "pitch_hz": None, "rhythm": None}


def test_oracles_read_the_written_files(worlds):
    path, manifest = worlds["a"]
    readers = {"image": image_attributes, "video": video_attributes, "audio": sound_attributes}
    for it in manifest["items"]:
        file = path / world.FOLDERS[it["modality"]] / it["name"]
        found = readers[it["modality"]](file)
        assert {k: found[k] for k in it["attributes"]} == it["attributes"], it
        if it["modality"] == "video":
            assert len(oracles.load_frames(file)) == world.VIDEO_FRAMES
        if it["modality"] == "audio":
            info = soundfile.info(str(file))
            assert info.samplerate == SR and info.channels == 1 and 1.0 <= info.duration <= 2.0


def test_asked_attributes_of_a_question():
    assert world.asked_attributes("Here is a video: Where is the shape going?", "video") == ("direction",)
    assert world.asked_attributes("Which side is the shape on?", "image") == ("position",)
    assert world.asked_attributes("Look at this image. What do you see here?", "image") == world.ATTRIBUTES["image"]
    assert world.asked_attributes("What colour does this sound belong to?", "audio") == ("colour",)
