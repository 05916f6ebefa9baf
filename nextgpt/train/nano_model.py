"""NExT-GPT nano, part 2: the frozen nano parts assembled into one NExT-GPT and aligned through its three stages.

    python -m nextgpt.nano.world data/nano-world-8k --seed 0 --dialogues 8000 --questions 12000
    python -m nextgpt.nano.talk data/nano-world-8k --seed 0
    python -m nextgpt.train.nano_model [--parts assets/nano] [--world data/nano-world-8k] [--only 1..14]

The parts folder holds what part 1 trained (`encoder/`, `llm/`, `image_decoder/`, `video_decoder/`,
`audio_decoder/`); this script writes the trained NExT-GPT beside them (`config.json`, `nextgpt.safetensors`,
the tokenizer with the signal tokens), so the folder is the whole shipped model. Each stage resumes from
`runs/nano-stages/stage<N>/` if a session ended mid-way. Stage 4 is a second instruction-tuning run (stage 3's
kind) on the world's dialogues together with `talk.json`: free wording, conversations, and honest answers outside
the world (`nextgpt.nano.talk`). Stage 5 is a short, gentler pass of the same kind that rebalances stage 4: fewer
foreign uploads, more of the world's own uploads to describe, so the world's items are not taken for foreign ones.
Stage 6, the same kind again, adds the talk's follow-ups (requests that leave out what a default fills in, chat and
questions to the model within conversations), which stages 4 and 5 leave out. Stage 7, once more, adds the talk's
plain talk (requests as first typed, references, any question about any upload, general knowledge). Stage 8
repeats any question about any upload, so that the upload, which the encoder now embeds apart when it comes from
outside the world, and not the question, decides whether it is described. Stage 9 is a pass like stage 7 on the
talk as it is now: requests outside the world in the world's own frames (they once had frames of their own, and nano
refused "draw a blue star"), and more of the words people use for a question or a request. Stage 10, once more, adds
questions asked indirectly ("do you know which way it goes?"), about uploads and about what the model made. Stage 11
adds the broad wording: the trained phrases taken apart and put together in new orders and combinations. Stage 12
adds the recall task: conversations that keep coming back to earlier items by name. Stage 13 adds the revisit
task: the same, longer, and mostly about items other than the latest. Stage 14 adds uploads late in a chat, after
turns of any kind.

`--start FOLDER` starts the chosen stage from a model folder instead of the previous stage's output (the shipped
folder is the input and output of a last stage run alone); the shipped config names every part relative to the parts
folder, and parts the started model had elsewhere are copied in.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..config import (DecoderConfig, EncoderConfig, GenerationConfig, LLMConfig, LoRAConfig, NextGPTConfig,
                      OutputProjectorConfig, SignalTokenConfig)
from ..model import NextGPT
from ..nano import parts, talk
from .common import folder_hash, parse_config
from .stages import StageConfig, train, widen_lora


_SKIP_LATE_UPLOAD = "late_upload=0"  # stages 4-13; stage 14 trains on uploads late in a chat
_SKIP_REVISIT = "revisit=0," + _SKIP_LATE_UPLOAD  # stages 4-12; stage 13 trains on the revisit task
_SKIP_RECALL = "recall=0," + _SKIP_REVISIT  # stages 4-11; stage 12 trains on the recall task
_SKIP_BROAD = "broad=0," + _SKIP_RECALL  # stages 4-10; stage 11 trains on the broad wording
_SKIP_INDIRECT = "indirect=0," + _SKIP_BROAD  # stages 4-9; stage 10 trains on questions asked indirectly
_SKIP_PLAIN_TALK = ",".join(f"{task}=0" for task in talk.PLAIN_TALK) + "," + _SKIP_INDIRECT  # stages 4-6
_SKIP_FOLLOW_UPS = ",".join(f"{task}=0" for task in talk.FOLLOW_UPS) + "," + _SKIP_PLAIN_TALK  # stages 4-5
# What stages 12 to 14 repeat besides the recall kind: every request and question task, the edits and references
# three times, the broad wording three times.
_RECALL_STAGES_MIX = ("outside=2,foreign_upload=0,i2t=2,v2t=2,a2t=2,defaults=2,followup=2,short=2,refer=3,edits=3,"
                      "any_upload=4,knowledge=2,small_talk=2,asks=2,indirect=2,conversation=2,broad=3,")


# Each item is decoded twice and ImageBind-nano keeps the sample nearest the answer's words: on 40 test captions a
# modality, the decoders alone were right 95-97.5% of the time from one sample and 97.5-100% from the better of two
# (docs/nano.md).
CANDIDATES = 2


@dataclass
class NanoStage:
    """One stage of the recipe: which of NExT-GPT's three kinds it is, and how long and on what it trains."""

    kind: int
    steps: int
    lr: float
    batch_size: int = 10
    lora: bool = True  # train the LoRA too
    pair_mix: float = 0.1  # share of each batch that is T_X pairs
    repeat_tasks: str = ""  # "task=n,...": dialogues of a task n times (0: left out)
    dialogues: str = "dialogues.json,talk.json"
    lora_config: LoRAConfig | None = None  # widen the LoRA to this before the stage (`widen_lora`)


def _stages() -> dict[int, NanoStage]:
    """The recipe's stages (the world is small; the released recipe ran one epoch each). Why each is as it is:
    docs/nano.md."""
    return {
        # Stage 1 also trains the LoRA here. Vicuna-7B reads a projected ImageBind token with its weights frozen;
        # the 4-layer LLM-nano cannot: with only the projector training, its captions ignored the media.
        1: NanoStage(1, 4000, 1e-3, batch_size=16, pair_mix=0.0, dialogues="dialogues.json"),
        2: NanoStage(2, 3000, 1e-3, batch_size=16, lora=False, pair_mix=0.0, dialogues="dialogues.json"),
        # Stage 3 widens the LoRA, computing the same function, from r=8 on attention to r=32 on every linear
        # layer, as the official new code's `find_all_linear_names` does: with r=8 on attention alone, LLM-nano
        # named the wrong shape in a third of its image -> video and audio -> video answers. 2 of each 10 examples
        # are T_X pairs (as the official stage 3 blended its T2X sets in), and the rare X -> video dialogues
        # repeat, so the video projector learns to carry a shape read from other media.
        3: NanoStage(3, 16000, 3e-4, pair_mix=0.2, repeat_tasks="i2v=6,a2v=6,t2v=2", dialogues="dialogues.json",
                     lora_config=LoRAConfig(r=32, alpha=64, dropout=0.05, target_modules=[
                         "q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])),
        # Stage 4 adds the talk dialogues to the world's (about two thirds of its examples); the rarer talk tasks
        # repeat: answers outside the world, and uploads from outside it.
        4: NanoStage(3, 4000, 3e-4, repeat_tasks="outside=2,foreign_upload=4," + _SKIP_FOLLOW_UPS),
        # Stage 5 repeats the world's own uploads to describe instead, since stage 4 called some of them foreign.
        5: NanoStage(3, 1000, 1e-4, repeat_tasks="outside=2,i2t=2,v2t=2,a2t=2," + _SKIP_FOLLOW_UPS),
        # The talk's follow-ups (requests that leave out what a default fills in; chat and questions to the model
        # about what it made; more ways to ask about an upload; general knowledge) train in stage 6 alone, a pass on
        # the model stages 1-5 make (NExT-GPT nano v2): a pass takes minutes where a rerun takes hours. Foreign
        # uploads repeat there too: a sixth stage without them recognised a fifth fewer.
        6: NanoStage(3, 2000, 1e-4, repeat_tasks="outside=2,foreign_upload=3,i2t=2,v2t=2,a2t=2,defaults=2,followup=2,"
                     + _SKIP_PLAIN_TALK),
        # Stage 7 adds plain talk (requests as first typed, items taken into another medium, plainer edits, any
        # question about any upload, general knowledge). It leaves out stage 4's foreign uploads, which are asked
        # only their own questions and so teach the words, not the upload; `any_upload` asks world and foreign
        # uploads alike instead.
        7: NanoStage(3, 1500, 1e-4, repeat_tasks="outside=2,foreign_upload=0,i2t=3,v2t=3,a2t=3,defaults=2,followup=2,"
                     "short=3,refer=2,edits=2,any_upload=5,knowledge=2," + _SKIP_INDIRECT),
        # Stage 8, at twice the rate, is on uploads, after the encoder learned foreign uploads apart
        # (`nano_encoder --part foreign`): stage 7 alone still told them apart by the question.
        8: NanoStage(3, 1000, 2e-4, repeat_tasks="outside=2,foreign_upload=0,i2t=2,v2t=2,a2t=2,any_upload=4,"
                     + _SKIP_INDIRECT),
        # Stage 9 retrains every request task on the talk whose outside requests share the world's frames.
        9: NanoStage(3, 1500, 2e-4, repeat_tasks="outside=3,foreign_upload=0,i2t=2,v2t=2,a2t=2,defaults=2,followup=2,"
                     "short=3,refer=2,edits=2,any_upload=4,knowledge=2,small_talk=2," + _SKIP_INDIRECT),
        # Stage 10 adds questions asked indirectly, about uploads and about what the model made, and repeats the
        # conversations, where edits by reference and questions about the model's own output are.
        10: NanoStage(3, 1500, 2e-4, repeat_tasks="outside=2,foreign_upload=0,i2t=2,v2t=2,a2t=2,defaults=2,"
                      "followup=2,short=2,refer=2,edits=2,any_upload=4,knowledge=2,small_talk=2,asks=2,indirect=4,"
                      "conversation=2," + _SKIP_BROAD),
        # Stage 11 adds the broad wording (the trained phrases in new orders and combinations, two media asked
        # briefly, questions to the model about what it made) and repeats the edits, a quarter of its examples.
        11: NanoStage(3, 2000, 2e-4, repeat_tasks="outside=2,foreign_upload=0,i2t=2,v2t=2,a2t=2,defaults=2,"
                      "followup=2,short=2,refer=2,edits=3,any_upload=4,knowledge=2,small_talk=2,asks=2,indirect=2,"
                      "conversation=2,broad=6," + _SKIP_RECALL),
        # Stage 12 adds the recall task (edits, questions and references that come back to earlier items, always
        # named when not the latest; questions asking the model to describe what it made), a third of its
        # examples, and repeats the edits and references.
        12: NanoStage(3, 2000, 2e-4, repeat_tasks=_RECALL_STAGES_MIX + "recall=6," + _SKIP_REVISIT),
        # Stage 13 adds the revisit task (the recall task longer and mostly about earlier items, whose edits stage
        # 12 still got wrong four times in five, with questions outside the world between them): with recall, a
        # third of its dialogues and half of its tokens. Stage 12 saw each recall dialogue under once; this one sees
        # the recall kind twice as often. Without the outside questions, such a stage answered "what colour is
        # grass?" about the shapes (docs/nano.md).
        13: NanoStage(3, 2000, 2e-4, repeat_tasks=_RECALL_STAGES_MIX + "recall=4,revisit=12," + _SKIP_LATE_UPLOAD),
        # Stage 14 adds uploads late in a chat, the world's or from outside it, after turns of any kind: stage 13
        # recognised a foreign upload in a fresh chat but described it as a shape after a turn or two.
        14: NanoStage(3, 1000, 2e-4, repeat_tasks=_RECALL_STAGES_MIX + "recall=4,revisit=12,late_upload=6"),
    }


@dataclass
class NanoStages:
    """The recipe, stage by stage."""

    stages: dict[int, NanoStage] = field(default_factory=_stages)


def nano_config(folder: Path) -> NextGPTConfig:
    """NExT-GPT at nano size: the same architecture, dimensions read from the trained parts."""
    folder = Path(folder).resolve()
    enc = json.loads((folder / "encoder" / "config.json").read_text())
    llm = json.loads((folder / "llm" / "config.json").read_text())
    text_dim = json.loads((folder / "image_decoder" / "text_encoder" / "config.json").read_text())["hidden_size"]
    video_dim = json.loads((folder / "video_decoder" / "text_encoder" / "config.json").read_text())["hidden_size"]
    clap_dim = json.loads((folder / "audio_decoder" / "text_encoder" / "config.json").read_text())["projection_dim"]
    # guidance and steps chosen on validation captions
    image = parts.inference_settings("image", folder / "image_decoder")
    video = parts.inference_settings("video", folder / "video_decoder")
    audio = parts.inference_settings("audio", folder / "audio_decoder")
    proj = dict(d_model=128, nhead=4, num_encoder_layers=2, num_decoder_layers=2, dim_feedforward=512)
    return NextGPTConfig(
        name="nextgpt-nano",
        encoder=EncoderConfig(pretrained=str(folder / "encoder"), model_kwargs=enc.get("model_kwargs", enc)),
        llm=LLMConfig(pretrained=str(folder / "llm"), tokenizer=str(folder / "llm"), hidden_size=llm["hidden_size"],
                      vocab_size=0),
        lora=LoRAConfig(r=8, alpha=16, dropout=0.05),
        signal=SignalTokenConfig(first_id=None),
        output_projectors={
            "image": OutputProjectorConfig(out_dim=text_dim, num_queries=77, **proj),
            "video": OutputProjectorConfig(out_dim=video_dim, num_queries=77, **proj),
            "audio": OutputProjectorConfig(out_dim=clap_dim, num_queries=1, **proj),
        },
        decoders={
            "image": DecoderConfig(str(folder / "image_decoder"), image["guidance_scale"], image["num_inference_steps"],
                                   image.get("guidance_fraction", 1.0), height=64, width=64, candidates=CANDIDATES),
            "video": DecoderConfig(str(folder / "video_decoder"), video["guidance_scale"], video["num_inference_steps"],
                                   video.get("guidance_fraction", 1.0), height=64, width=64, num_frames=8, fps=8,
                                   candidates=CANDIDATES),
            "audio": DecoderConfig(str(folder / "audio_decoder"), audio["guidance_scale"], audio["num_inference_steps"],
                                   audio.get("guidance_fraction", 1.0), audio_length_s=audio["audio_length_in_s"],
                                   sample_rate=16000, candidates=CANDIDATES),
        },
        # 160: the answer that says what nano can do is about 115 tokens; the talk's longest dialogues have 6 turns,
        # and past them nano lost track (a picture asked "what's in this one?" after seven turns got "I can't")
        generation=GenerationConfig(max_new_tokens=160, temperature=1.0, top_p=0.01, max_history_turns=6),
    )


@dataclass
class ShipConfig:
    """The command line: where the parts are (and the model ships), the world, the runs, which stages."""

    parts: str = "assets/nano"
    world: str = "data/nano-world-8k"
    runs: str = "runs/nano-stages"
    only: int = 0  # run this stage alone (its input: the previous stage's output); 0: all of them
    start: str = ""  # a model folder to start the first stage run from, instead of its input
    no_ship: bool = False  # keep the last stage's output in the runs folder only


def main(argv=None) -> None:
    a, _ = parse_config(ShipConfig, argv, "python -m nextgpt.train.nano_model", __doc__)
    runs, plan = Path(a.runs), NanoStages().stages
    stages = sorted(plan)
    if a.only and a.only not in stages:
        raise SystemExit(f"--only takes a stage, 1 to {stages[-1]}, not {a.only}")
    init = runs / "init"
    init.mkdir(parents=True, exist_ok=True)
    nano_config(Path(a.parts)).save(init / "config.json")
    source = str(init)
    for stage in stages:
        out = runs / f"stage{stage}" / "model"
        if a.only and stage != a.only:
            source = str(out)
            continue
        if a.start:
            source, a.start = a.start, ""
        p = plan[stage]
        if p.lora_config is not None:
            source = _widened(source, p.lora_config, runs / f"stage{stage}" / "widened")
        model = train(StageConfig(
            stage=p.kind, model=source, data=a.world, out=str(out), run=str(runs / f"stage{stage}"), steps=p.steps,
            batch_size=p.batch_size, lr=p.lr, warmup=100, features=str(runs / "features"), lora=p.lora,
            pair_mix=p.pair_mix, repeat_tasks=p.repeat_tasks, dialogues=p.dialogues,
        ))
        source = str(out)
        if stage == stages[-1] and not a.no_ship:
            ship(model, Path(a.parts))


def ship(model: NextGPT, folder: Path) -> None:
    """Write the trained model into `folder` beside its parts, with every path relative to it: the shipped folder is
    the whole model. A part the model was started with from another folder is copied in; one already there must
    hold the same weights."""
    config = model.config
    components = {"encoder": config.encoder, "llm": config.llm,
                  **{f"{m}_decoder": c for m, c in config.decoders.items()}}
    for name, c in components.items():
        source, target = Path(c.pretrained), folder / name
        if source.resolve() != target.resolve():
            if not target.exists():
                shutil.copytree(source, target)
            elif folder_hash(source) != folder_hash(target):
                raise ValueError(f"{target} holds other weights than the {name} the model was trained with ({source})")
        c.pretrained = str(target)
    fresh = nano_config(folder)  # a started run keeps older settings: text decoding and each decoder's sampler
    config.generation = fresh.generation
    for m, c in config.decoders.items():
        for name in ("guidance_scale", "num_inference_steps", "guidance_fraction", "candidates"):
            setattr(c, name, getattr(fresh.decoders[m], name))
    model.save_pretrained(folder, components=False)


def _widened(source: str, lora: LoRAConfig, out: Path) -> str:
    """`source` with its LoRA widened, saved once in `out` (a resumed stage finds it there)."""
    if not (out / "config.json").exists():
        model = NextGPT.from_pretrained(source)
        widen_lora(model, lora)
        model.save_pretrained(out, components=False)
    return str(out)


if __name__ == "__main__":
    main()
