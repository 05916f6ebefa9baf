"""One configuration object for every NExT-GPT size.

`NextGPTConfig` describes the whole data flow (encoder -> input projector -> LLM + LoRA -> signal tokens ->
output projectors -> decoders) plus decoding defaults, and says in words what the model can do. The same
dataclasses describe the released 7B model (`nextgpt-7b-tiva-v0`) and the small random `tiny` model used by the
tests; only the numbers differ.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODALITIES = ("image", "video", "audio")


@dataclass
class EncoderConfig:
    """ImageBind. `model_kwargs` are `ImageBindModel` constructor arguments."""

    pretrained: str | None = None  # imagebind_huge.pth, or a folder with encoder.safetensors; None = random init
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def embed_dim(self) -> int:
        return self.model_kwargs.get("out_embed_dim", 768)


@dataclass
class LLMConfig:
    """The language model. `pretrained` is a local folder or hub id (Vicuna-7B v0 for the release)."""

    pretrained: str | None = None  # None = random init from `llama` (tiny) or a folder inside the model dir
    llama: dict[str, Any] = field(default_factory=dict)  # LlamaConfig kwargs used when building from scratch
    tokenizer: str | None = None  # folder / hub id; defaults to `pretrained`
    hidden_size: int = 4096
    vocab_size: int = 32038  # after the signal tokens are added
    # How prompts are cut into tokenizer calls (`conversation.build_prompt`): "official" reproduces the ids the
    # released model was trained on; "joined" tokenizes each run of text between media in one piece.
    tokenization: str = "joined"


@dataclass
class LoRAConfig:
    r: int = 32
    alpha: int = 32
    dropout: float = 0.1
    target_modules: list[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])


@dataclass
class SignalTokenConfig:
    """Tokens added to the LLM vocabulary, in the released insertion order: <Img>, </Img>, then per-index triples."""

    media_start: str = "<Img>"
    media_end: str = "</Img>"
    num_tokens: dict[str, int] = field(default_factory=lambda: {"image": 4, "video": 24, "audio": 8})
    prefixes: dict[str, str] = field(default_factory=lambda: {"image": "IMG", "video": "VID", "audio": "AUD"})
    first_id: int | None = 32000  # id of media_start when the base vocabulary is fixed (7B); None = whatever follows

    def names(self, modality: str) -> list[str]:
        return [f"[{self.prefixes[modality]}{i}]" for i in range(self.num_tokens[modality])]

    def added_tokens(self) -> list[str]:
        """All added tokens in the released order: <Img>=32000, </Img>=32001, [IMG0..3], [VID0..23], [AUD0..7]."""
        return [self.media_start, self.media_end] + [t for m in MODALITIES for t in self.names(m)]


@dataclass
class OutputProjectorConfig:
    """The released 'transformer' TextFcLayer: Linear -> nn.Transformer with learned queries -> Linear."""

    out_dim: int = 768
    num_queries: int = 77
    d_model: int = 512
    nhead: int = 4
    num_encoder_layers: int = 4
    num_decoder_layers: int = 4
    dim_feedforward: int = 2048


@dataclass
class DecoderConfig:
    """A frozen diffusers pipeline and its per-call defaults."""

    pretrained: str | None = None  # hub id or folder; None = a random tiny pipeline (tests)
    guidance_scale: float = 7.5
    num_inference_steps: int = 50
    guidance_fraction: float = 1.0  # classifier-free guidance on this first share of the steps; the rest unguided
    height: int = 512
    width: int = 512
    num_frames: int = 24  # video
    fps: int = 8  # video files are written at this rate
    audio_length_s: float = 9.0  # audio
    sample_rate: int = 16000  # audio
    # Samples decoded per item; with more than one, ImageBind picks the one nearest the answer's words before it.
    # 1 is the released model's way (one sample).
    candidates: int = 1


@dataclass
class GenerationConfig:
    """Text decoding defaults (the official demo: top_p 0.01 and temperature 1.0, i.e. nearly greedy)."""

    max_new_tokens: int = 246
    temperature: float = 1.0
    top_p: float = 0.01
    max_runs_per_modality: int = 1
    # Which hidden states feed the output projectors: "aligned" = at the signal tokens (as trained),
    # "shifted" = one position earlier (what the released demo does).
    signal_hidden: str = "aligned"
    # The released demo gives every text chunk of the prompt its own BOS; training did not.
    bos_per_segment: bool = False
    # The model sees only the last N user turns (None: all), e.g. the longest conversation it was trained on.
    max_history_turns: int | None = None


@dataclass
class NextGPTConfig:
    name: str = "nextgpt"
    # What the model can do, in a sentence or two, for the people using it (the chat app shows it). Empty: the
    # default for the name (`default_description`).
    description: str = ""
    # The trained parts (projectors, LoRA, embeddings, LM head): a file, or a hub repo id ("repo@revision")
    # holding the official pytorch_model.pt. None = keep the random init (tiny).
    checkpoint: str | None = None
    encoder: EncoderConfig = field(default_factory=EncoderConfig)
    llm: LLMConfig = field(default_factory=LLMConfig)
    lora: LoRAConfig = field(default_factory=LoRAConfig)
    signal: SignalTokenConfig = field(default_factory=SignalTokenConfig)
    output_projectors: dict[str, OutputProjectorConfig] = field(default_factory=dict)
    decoders: dict[str, DecoderConfig] = field(default_factory=dict)
    generation: GenerationConfig = field(default_factory=GenerationConfig)

    def __post_init__(self):
        self.description = self.description or default_description(self.name)

    # --- JSON -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NextGPTConfig":
        d = dict(d)
        return cls(
            name=d.get("name", "nextgpt"),
            description=d.get("description", ""),
            checkpoint=d.get("checkpoint"),
            encoder=EncoderConfig(**d.get("encoder", {})),
            llm=LLMConfig(**d.get("llm", {})),
            lora=LoRAConfig(**d.get("lora", {})),
            signal=SignalTokenConfig(**d.get("signal", {})),
            output_projectors={m: OutputProjectorConfig(**v) for m, v in d.get("output_projectors", {}).items()},
            decoders={m: DecoderConfig(**v) for m, v in d.get("decoders", {}).items()},
            generation=GenerationConfig(**d.get("generation", {})),
        )

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "NextGPTConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))


def default_description(name: str) -> str:
    """What a model of this name can do, for configs that do not say: NExT-GPT nano's world, read from the module
    that declares it; nothing for other names."""
    if not name.startswith("nextgpt-nano"):
        return ""
    from .nano import world

    def listing(words, last="and"):
        return ", ".join(words[:-1]) + f" {last} {words[-1]}"

    seconds = world.VIDEO_FRAMES / world.VIDEO_FPS
    return (
        f"NExT-GPT nano knows one small made-up world and nothing else: {listing([s + 's' for s in world.SHAPES])} "
        f"in {listing(list(world.COLOURS), 'or')}. It draws such a shape, makes a {seconds:g}-second video of it "
        f"moving {listing(world.DIRECTIONS, 'or')}, plays the tone of a colour (steady or beeping), and answers "
        "questions about the pictures, videos and sounds of its world."
    )


# --- presets ---------------------------------------------------------------------------------------------------


def nextgpt_7b_tiva_v0() -> NextGPTConfig:
    """The released checkpoint: ImageBind-huge, Vicuna-7B v0 + LoRA, SD 1.5, Zeroscope v2 576w, AudioLDM-l-full."""
    return NextGPTConfig(
        name="nextgpt-7b-tiva-v0",
        description=(
            "Open domain: the released NExT-GPT 7B (Vicuna-7B with ImageBind) talks about anything, understands "
            "images, sounds and videos, and makes images (Stable Diffusion 1.5), videos (Zeroscope) and sounds "
            "(AudioLDM)."
        ),
        checkpoint="ChocoWu/nextgpt_7b_tiva_v0",
        encoder=EncoderConfig(
            pretrained=None,
            model_kwargs=dict(
                vision_embed_dim=1280, vision_num_blocks=32, vision_num_heads=16,
                text_embed_dim=1024, text_num_blocks=24, text_num_heads=16,
                out_embed_dim=1024, audio_drop_path=0.1, imu_drop_path=0.7,
            ),
        ),
        llm=LLMConfig(
            pretrained=None,  # a local Vicuna-7B v0 folder (rebuilt from LLaMA-7B + vicuna-7b-delta-v0)
            tokenizer="ChocoWu/nextgpt_7b_tiva_v0",  # ships tokenizer.model with the 38 added tokens
            llama=dict(
                vocab_size=32000, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=2048,
                rms_norm_eps=1e-6, bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=False,
            ),
            hidden_size=4096,
            vocab_size=32038,
            tokenization="official",
        ),
        lora=LoRAConfig(r=32, alpha=32, dropout=0.1, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]),
        signal=SignalTokenConfig(first_id=32000),
        output_projectors={
            "image": OutputProjectorConfig(out_dim=768, num_queries=77),
            "video": OutputProjectorConfig(out_dim=1024, num_queries=77),
            "audio": OutputProjectorConfig(out_dim=512, num_queries=1),
        },
        decoders={
            "image": DecoderConfig("runwayml/stable-diffusion-v1-5", 7.5, 50, height=512, width=512),
            "video": DecoderConfig("cerspense/zeroscope_v2_576w", 7.5, 50, height=320, width=576, num_frames=24, fps=8),
            "audio": DecoderConfig("cvssp/audioldm-l-full", 7.5, 50, audio_length_s=9.0, sample_rate=16000),
        },
        generation=GenerationConfig(max_new_tokens=246, temperature=1.0, top_p=0.01),
    )


def tiny() -> NextGPTConfig:
    """Same architecture, random weights, built in seconds: for tests."""
    small_trunk = dict(
        out_embed_dim=32,
        vision_embed_dim=32, vision_num_blocks=1, vision_num_heads=2,
        text_embed_dim=32, text_num_blocks=1, text_num_heads=2,
        audio_embed_dim=32, audio_num_blocks=1, audio_num_heads=2,
        depth_embed_dim=16, depth_num_blocks=1, depth_num_heads=2,
        thermal_embed_dim=16, thermal_num_blocks=1, thermal_num_heads=2,
        imu_embed_dim=16, imu_num_blocks=1, imu_num_heads=2,
    )
    proj = dict(d_model=32, nhead=4, num_encoder_layers=1, num_decoder_layers=1, dim_feedforward=64)
    return NextGPTConfig(
        name="tiny",
        description=(
            "Untrained: random weights, for testing the app; its words and media are noise. Start the app with "
            "--model pointing at a trained model."
        ),
        encoder=EncoderConfig(model_kwargs=small_trunk),
        llm=LLMConfig(
            llama=dict(
                hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=4, max_position_embeddings=1024, tie_word_embeddings=False,
            ),
            hidden_size=64,
            vocab_size=0,  # set by the tokenizer that is built with it
        ),
        lora=LoRAConfig(r=4, alpha=8, dropout=0.0),
        signal=SignalTokenConfig(first_id=None),
        output_projectors={
            "image": OutputProjectorConfig(out_dim=32, num_queries=77, **proj),
            "video": OutputProjectorConfig(out_dim=32, num_queries=77, **proj),
            "audio": OutputProjectorConfig(out_dim=32, num_queries=1, **proj),
        },
        decoders={
            "image": DecoderConfig(None, 7.5, 4, height=64, width=64),
            "video": DecoderConfig(None, 7.5, 4, height=32, width=32, num_frames=4, fps=8),
            "audio": DecoderConfig(None, 2.5, 4, audio_length_s=1.28, sample_rate=16000),
        },
        generation=GenerationConfig(max_new_tokens=32, temperature=1.0, top_p=0.01),
    )


PRESETS = {"nextgpt-7b-tiva-v0": nextgpt_7b_tiva_v0, "tiny": tiny}

def _shipped(name: str) -> Path:
    """A shipped model's folder: `assets/<name>` beside the package in a clone, `nextgpt/assets/<name>` inside an
    installed wheel."""
    here = Path(__file__).resolve().parent
    repo = here.parent / "assets" / name
    return repo if (repo / "config.json").is_file() else here / "assets" / name


# Trained models that ship with the project, by name: NExT-GPT nano, the default of the app, CLI and tests.
SHIPPED = {"nano": _shipped("nano")}
DEFAULT_MODEL = "nano"


def get_preset(name: str) -> NextGPTConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]()


def locate(name_or_path: str) -> tuple[NextGPTConfig, Path | None]:
    """The config of a shipped model (`nano`), a model folder or a preset, and the folder its paths are relative to
    (None for a preset)."""
    path = SHIPPED.get(name_or_path, Path(name_or_path))
    if (path / "config.json").exists():
        return NextGPTConfig.load(path / "config.json"), path
    if name_or_path in PRESETS:
        return get_preset(name_or_path), None
    raise FileNotFoundError(f"{name_or_path!r} is neither a model folder, nor a shipped model "
                            f"({', '.join(SHIPPED)}), nor a preset ({', '.join(PRESETS)})")
