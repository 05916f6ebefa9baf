"""The "encode" stage: ImageBind embeddings of media items, with NExT-GPT's post-processing.

NExT-GPT (like PandaGPT before it) changes ImageBind's output in two ways:
* audio skips the x20 `LearnableLogitScaling`: every modality is only L2-normalised;
* multi-clip inputs (audio: 3 clips, video: 15 clip-crops) are embedded per clip, normalised per clip and then
  averaged, so the result is *not* unit-norm.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import sys
import threading
import types
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from nextgpt.config import EncoderConfig
from nextgpt.media import Media, MediaLimits, check_file, content_hash, preprocess

__all__ = ["Encoder", "import_imagebind", "text_tokenizer", "tokenize"]

WEIGHTS_NAME = "encoder.safetensors"
_EXPECTED_NDIM = {"image": 4, "audio": 5, "video": 6}  # with the batch dimension


# --- importing imagebind-unofficial without torchvision / timm --------------------------------------------------


class _DropPath(nn.Module):
    """Stochastic depth (per sample), the part of timm.layers.DropPath ImageBind uses. Identity in eval()."""

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True):
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
            mask.div_(keep)
        return x * mask


@contextlib.contextmanager
def _timm_layers_available():
    """Make `from timm.layers import DropPath, trunc_normal_` work while ImageBind's modules are imported.

    Real timm is used when it imports. Otherwise a stub is placed in sys.modules only for the duration of the
    import and removed afterwards (ImageBind keeps its own references), so that other libraries probing for
    timm (transformers, diffusers) do not mistake the stub for the real package.
    """
    try:
        import timm.layers  # noqa: F401

        yield
        return
    except Exception:
        for key in [k for k in sys.modules if k == "timm" or k.startswith("timm.")]:
            del sys.modules[key]
    timm = types.ModuleType("timm")
    layers = types.ModuleType("timm.layers")
    layers.DropPath = _DropPath
    layers.trunc_normal_ = nn.init.trunc_normal_
    timm.layers = layers
    sys.modules["timm"], sys.modules["timm.layers"] = timm, layers
    try:
        yield
    finally:
        for key in ("timm.layers", "timm"):
            if sys.modules.get(key) in (timm, layers):
                del sys.modules[key]


@functools.lru_cache(maxsize=None)
def import_imagebind():
    """Return `(ImageBindModel, ModalityType)` from imagebind-unofficial.

    The package's `__init__` imports `imagebind.data`, which needs torchvision/torchaudio/pytorchvideo; we register
    a bare package object pointing at the installed folder instead, so only the model modules are imported.
    """
    if "imagebind" not in sys.modules:
        spec = importlib.util.find_spec("imagebind")
        if spec is None or not spec.submodule_search_locations:
            raise ImportError("imagebind-unofficial is not installed (pip install --no-deps imagebind-unofficial)")
        pkg = types.ModuleType("imagebind")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        pkg.__file__ = spec.origin
        sys.modules["imagebind"] = pkg
    with _timm_layers_available():
        from imagebind.models.imagebind_model import ImageBindModel, ModalityType
    return ImageBindModel, ModalityType


# --- the encoder ---------------------------------------------------------------------------------------------


def embed_raw(model: nn.Module, key: str, x: torch.Tensor) -> torch.Tensor:
    """One ImageBind modality (a `ModalityType` key) through its preprocessor, trunk and head, before any
    post-processing."""
    inputs = model.modality_preprocessors[key](**{key: x})
    y = model.modality_trunks[key](**inputs["trunk"])
    return model.modality_heads[key](y, **inputs["head"])


def text_tokenizer():
    """ImageBind's own SimpleTokenizer with the BPE file shipped inside the imagebind package."""
    import_imagebind()  # registers the package without its data.py
    from imagebind.models.multimodal_preprocessors import SimpleTokenizer

    folder = Path(importlib.util.find_spec("imagebind").submodule_search_locations[0])
    return SimpleTokenizer(bpe_path=str(folder / "bpe" / "bpe_simple_vocab_16e6.txt.gz"))


def tokenize(tokenizer, texts: list[str]) -> torch.Tensor:
    return tokenizer(list(texts)).reshape(len(texts), -1)  # SimpleTokenizer drops the batch dim for one text


def embed_media(model: nn.Module, modality: str, x: torch.Tensor) -> torch.Tensor:
    """Batched ImageBind inputs -> (B, D) embeddings with NExT-GPT's post-processing: an input of several clips per
    item (audio, video) is embedded clip by clip, each normalised, then averaged. `Encoder.embed` is its frozen use;
    called directly it keeps gradients (ImageBind-nano's training)."""
    _, modality_type = import_imagebind()
    key = modality_type.AUDIO if modality == "audio" else modality_type.VISION
    batch, clips = x.shape[0], None
    if x.ndim >= 5:  # several clips per item: embed each clip on its own
        clips = x.shape[1]
        x = x.reshape(batch * clips, *x.shape[2:])
    y = embed_raw(model, key, x)
    post = model.modality_postprocessors[key]
    # Only the L2 normalisation: for audio this drops ImageBind's x20 logit scaling (NExT-GPT / PandaGPT).
    normalize = post[0] if isinstance(post, nn.Sequential) else post
    y = normalize(y)
    if clips is not None:
        y = y.reshape(batch, clips, -1).mean(dim=1)
    return y


class Encoder(nn.Module):
    """A frozen ImageBindModel plus an LRU cache of embeddings keyed by (modality, file content hash)."""

    def __init__(self, model: nn.Module, cache_size: int = 256):
        super().__init__()
        self.model = model
        _, modality_type = import_imagebind()
        self._keys = {"image": modality_type.VISION, "video": modality_type.VISION, "audio": modality_type.AUDIO}
        self.cache_size = cache_size
        self._cache: OrderedDict[tuple[str, str], torch.Tensor] = OrderedDict()
        self._tokenizer = None  # ImageBind's text tokenizer, loaded on first use
        self._lock = threading.Lock()
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "Encoder":
        # Always eval: the encoder is frozen, and cached embeddings must not depend on train/eval state
        # (ImageBind's DropPath would otherwise be active).
        return super().train(False)

    # -- construction / saving --
    @classmethod
    def from_config(cls, cfg: EncoderConfig, *, device="cpu", dtype=torch.float32) -> "Encoder":
        image_bind_model, _ = import_imagebind()
        # Construction draws random init weights: seed it (random init = reproducible tests and tiny presets)
        # without disturbing the caller's RNG stream.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = image_bind_model(**cfg.model_kwargs)
        if cfg.pretrained is not None:
            path = Path(cfg.pretrained)
            if path.is_dir():
                from safetensors.torch import load_model

                weights = path / WEIGHTS_NAME
                if not weights.is_file():
                    raise FileNotFoundError(f"no {WEIGHTS_NAME} in {path}")
                load_model(model, str(weights), strict=True)  # handles tensors deduplicated by save_model
            elif path.is_file():
                # imagebind_huge.pth is a plain state dict. mmap keeps the peak memory near one copy of the
                # weights (4.5 GB for huge); checkpoints in the legacy (non-zip) format cannot be mapped.
                try:
                    state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
                except RuntimeError:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                model.load_state_dict(state, strict=True)
                del state
            else:
                raise FileNotFoundError(f"encoder weights not found: {path}")
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        return cls(model)

    def save_pretrained(self, folder) -> Path:
        """Write `encoder.safetensors` into `folder` (created if needed). Returns the file path."""
        from safetensors.torch import save_model

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        out = folder / WEIGHTS_NAME
        save_model(self.model, str(out))  # copes with shared tensors and makes them contiguous
        return out

    # -- properties --
    @property
    def embed_dim(self) -> int:
        head = self.model.modality_heads[self._keys["image"]]
        return head[-1].out_features  # the final Linear of the vision head

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- embedding --
    @torch.no_grad()  # not inference_mode: the embeddings feed trainable projectors
    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """Batched ImageBind inputs -> (B, D) embeddings with NExT-GPT's post-processing."""
        if modality not in self._keys:
            raise ValueError(f"unknown modality {modality!r}")
        if x.ndim != _EXPECTED_NDIM[modality]:
            raise ValueError(f"{modality} input must have {_EXPECTED_NDIM[modality]} dims, got {tuple(x.shape)}")
        return embed_media(self.model, modality, x.to(device=self.device, dtype=self.dtype))

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (n, D) L2-normalised ImageBind text embeddings, in the joint space of the media's."""
        _, modality_type = import_imagebind()
        if self._tokenizer is None:
            self._tokenizer = text_tokenizer()
        tokens = tokenize(self._tokenizer, texts).to(self.device)
        return nn.functional.normalize(embed_raw(self.model, modality_type.TEXT, tokens).float(), dim=-1)

    def encode(self, items: list[Media], limits: MediaLimits | None = None, batch_size: int = 8) -> torch.Tensor:
        """Media items -> (n, D) embeddings on the encoder's device, in the input order.

        Items are preprocessed, grouped by modality and embedded in batches. Results are cached by
        (modality, sha256 of the file), so media from earlier turns of a chat are not encoded again.
        Raises `MediaError` for unusable files.
        """
        out: list[torch.Tensor | None] = [None] * len(items)
        # modality -> {cache key: [indices of the items with that content]}; identical files are embedded once
        todo: dict[str, dict[tuple[str, str], list[int]]] = {}
        for i, item in enumerate(items):
            check_file(item.path, limits)  # cheap checks before hashing a possibly huge file
            key = (item.modality, content_hash(item.path))
            with self._lock:
                hit = self._cache.get(key)
                if hit is not None:
                    self._cache.move_to_end(key)
            if hit is not None:
                out[i] = hit
            else:
                todo.setdefault(item.modality, {}).setdefault(key, []).append(i)

        for modality, pending in todo.items():
            keys = list(pending)
            for s in range(0, len(keys), batch_size):
                chunk = keys[s: s + batch_size]
                x = torch.stack([preprocess(items[pending[k][0]], limits) for k in chunk])
                emb = self.embed(modality, x).to("cpu")
                for row, key in zip(emb, chunk):
                    row = row.clone()  # own storage, so a cached row does not pin the whole batch
                    self._remember(key, row)
                    for i in pending[key]:
                        out[i] = row

        if not items:
            return torch.empty(0, self.embed_dim, dtype=self.dtype, device=self.device)
        return torch.stack(out).to(device=self.device, dtype=self.dtype)

    def _remember(self, key: tuple[str, str], value: torch.Tensor) -> None:
        if self.cache_size <= 0:
            return
        with self._lock:
            self._cache[key] = value
            self._cache.move_to_end(key)
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)

    def clear_cache(self) -> None:
        with self._lock:
            self._cache.clear()
