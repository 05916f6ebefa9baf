"""AudioLDM-nano's mel front end and its vocoder: a deterministic Griffin-Lim inversion, not a learned HiFi-GAN.

The mel features (`log_mel`) and the inverse (`GriffinLimVocoder`) share one filterbank, built here from the
config, so the VAE is trained on exactly the spectrogram the vocoder inverts: 16 kHz, 1024-point STFT, hop 160
(10 ms frames, as in the real AudioLDM), 64 Slaney mel bins over 0-8 kHz, natural log of the magnitude floored at
1e-5.

Why Griffin-Lim: a small `SpeechT5HifiGan` trained briefly on a CPU did not learn pitch (docs/nano.md), and
HiFi-GAN's own recipe needs far more steps than the nano budget gives. The nano world's sounds are a note with two
weak harmonics, gated on and off: their log-mel spectrogram holds all that the oracles read (the strongest partial
and the envelope), and a pseudo-inverse of the mel filterbank followed by Griffin-Lim phase recovery brings both
back. So the pipeline's vocoder is this module: nothing learned, the same call signature as `SpeechT5HifiGan`
((B, T, bins) or (T, bins) log-mel -> (B, T * hop) or (T * hop,) waveform) and the config fields the pipeline reads
(`model_in_dim`, `sampling_rate`, `upsample_rates`).

Why a SpeechT5HifiGan subclass: `AudioLDMPipeline.save_pretrained` records each component as (module, class) in
model_index.json; a class outside diffusers/transformers is recorded under its full module path, and
`from_pretrained` imports that module and loads the class with the loading method of the base class it finds
there by name (`PreTrainedModel` -> `from_pretrained`, reading config.json and model.safetensors). Being a
`SpeechT5HifiGan` also passes the pipeline's check of the vocoder's type. diffusers looks such a module up among
those already imported; folders saved when this module was `nextgpt.nano.vocoder` name that path, so it is
registered under that name too.
"""

from __future__ import annotations

import sys

import numpy as np
import torch
# PreTrainedModel must be importable from this module by that name: see "Why a SpeechT5HifiGan subclass" above.
from transformers import PreTrainedModel, SpeechT5HifiGan, SpeechT5HifiGanConfig

__all__ = ["MelConfig", "mel_filterbank", "log_mel", "GriffinLimVocoder"]
sys.modules.setdefault("nextgpt.nano.vocoder", sys.modules[__name__])  # the module path older folders name


class MelConfig:
    """The one mel setting of AudioLDM-nano (AudioLDM's, at 64 bins)."""

    sampling_rate = 16000
    n_fft = 1024
    win_length = 1024
    hop_length = 160
    n_mels = 64
    f_min = 0.0
    f_max = 8000.0
    log_floor = 1e-5


def mel_filterbank(n_fft: int, n_mels: int, sampling_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """(n_mels, n_fft // 2 + 1) Slaney-scale, area-normalised triangles (librosa's default, as AudioLDM uses)."""
    from transformers.audio_utils import mel_filter_bank

    fb = mel_filter_bank(num_frequency_bins=n_fft // 2 + 1, num_mel_filters=n_mels, min_frequency=f_min,
                         max_frequency=f_max, sampling_rate=sampling_rate, norm="slaney", mel_scale="slaney")
    return torch.tensor(np.asarray(fb).T, dtype=torch.float32)


_FB_CACHE: dict = {}


def log_mel(wave: torch.Tensor | np.ndarray, cfg: type[MelConfig] = MelConfig) -> torch.Tensor:
    """Waveform(s) (..., N) at 16 kHz -> log-mel (..., frames, n_mels), frames = N // hop + 1 (centred STFT)."""
    wave = torch.as_tensor(np.asarray(wave) if not torch.is_tensor(wave) else wave, dtype=torch.float32)
    key = (cfg.n_fft, cfg.n_mels, cfg.sampling_rate, cfg.f_min, cfg.f_max)
    if key not in _FB_CACHE:
        _FB_CACHE[key] = mel_filterbank(cfg.n_fft, cfg.n_mels, cfg.sampling_rate, cfg.f_min, cfg.f_max)
    fb = _FB_CACHE[key]
    lead = wave.shape[:-1]
    spec = torch.stft(wave.reshape(-1, wave.shape[-1]), cfg.n_fft, cfg.hop_length, cfg.win_length,
                      window=torch.hann_window(cfg.win_length), center=True, pad_mode="reflect", return_complex=True)
    mel = fb @ spec.abs()  # (B, n_mels, frames)
    out = torch.log(torch.clamp(mel, min=cfg.log_floor)).transpose(1, 2)
    return out.reshape(*lead, *out.shape[1:])


class GriffinLimVocoder(SpeechT5HifiGan):
    """Log-mel -> waveform by mel pseudo-inverse and fast Griffin-Lim (momentum 0.99), deterministic (zero phase
    start), no learned weights. Called by `AudioLDMPipeline` exactly like `SpeechT5HifiGan`.

    A subclass of `SpeechT5HifiGan` with the same config class, so the pipeline's type check accepts it and
    `config.model_in_dim / sampling_rate / upsample_rates` mean what the pipeline expects; it skips HiFi-GAN's
    layers and keeps its own settings (n_fft, n_iter, ...) as extra config fields. Build one with `build()`."""

    def __init__(self, config: SpeechT5HifiGanConfig):
        PreTrainedModel.__init__(self, config)  # not SpeechT5HifiGan.__init__: no HiFi-GAN layers
        fb = mel_filterbank(config.n_fft, config.model_in_dim, config.sampling_rate, config.f_min, config.f_max)
        # The pseudo-inverse of the filterbank is the inversion's one linear map, saved as the folder's one weight
        # (a frozen Parameter rather than a buffer: transformers reads a model's dtype from its parameters).
        self.inverse_fb = torch.nn.Parameter(torch.linalg.pinv(fb), requires_grad=False)  # (n_fft//2+1, n_mels)
        self.post_init()

    @classmethod
    def build(cls, n_iter: int = 32, momentum: float = 0.99, m: type[MelConfig] = MelConfig) -> "GriffinLimVocoder":
        # The pipeline turns seconds into frames with prod(upsample_rates) / sampling_rate: that must be the hop.
        config = SpeechT5HifiGanConfig(
            model_in_dim=m.n_mels, sampling_rate=m.sampling_rate, upsample_rates=[m.hop_length],
            upsample_kernel_sizes=[m.hop_length], normalize_before=False, n_fft=m.n_fft, win_length=m.win_length,
            f_min=m.f_min, f_max=m.f_max, n_iter=n_iter, momentum=momentum)
        return cls(config).eval()

    def _init_weights(self, module):
        pass  # nothing random: the one buffer is computed in __init__ or loaded

    @property
    def hop_length(self) -> int:
        return int(np.prod(self.config.upsample_rates))

    def _stft(self, wave, window):
        c = self.config
        return torch.stft(wave, c.n_fft, self.hop_length, c.win_length, window=window, center=True,
                          pad_mode="reflect", return_complex=True)

    def _istft(self, spec, window, length):
        c = self.config
        return torch.istft(spec, c.n_fft, self.hop_length, c.win_length, window=window, center=True, length=length)

    @torch.no_grad()
    def forward(self, spectrogram: torch.Tensor) -> torch.Tensor:
        squeeze = spectrogram.dim() == 2
        mel = spectrogram.unsqueeze(0) if squeeze else spectrogram  # (B, T, bins)
        dtype, device = mel.dtype, mel.device
        window = torch.hann_window(self.config.win_length, device=device)
        inv = self.inverse_fb.to(device=device, dtype=torch.float32)  # the STFTs run in float32 whatever the dtype
        # Magnitude spectrogram: the least-squares linear spectrum under the mel, clipped at 0 (a magnitude).
        mag = torch.clamp(inv @ torch.exp(mel.float()).transpose(1, 2), min=0.0)  # (B, F, T)
        length = mag.shape[-1] * self.hop_length
        angles = torch.ones_like(mag, dtype=torch.complex64)
        previous = torch.zeros_like(angles)
        beta = self.config.momentum / (1 + self.config.momentum)
        for _ in range(self.config.n_iter):
            # T frames -> T * hop samples (what the pipeline keeps); its STFT has one frame more: drop it.
            rebuilt = self._stft(self._istft(mag * angles, window, length), window)[..., : mag.shape[-1]]
            angles = rebuilt - beta * previous  # "fast Griffin-Lim" (Perraudin et al. 2013): momentum on phases
            angles = angles / (angles.abs() + 1e-16)
            previous = rebuilt
        wave = self._istft(mag * angles, window, length).to(dtype)
        return wave[0] if squeeze else wave
