"""The "project" stages: ImageBind -> LLM (input projector) and LLM -> diffusion conditioning (output projectors)."""

from __future__ import annotations

import warnings

import torch
from torch import nn

from .config import OutputProjectorConfig


def input_projector(encoder_dim: int, llm_dim: int) -> nn.Linear:
    """The released `llama_proj`: one LLM token per media item."""
    return nn.Linear(encoder_dim, llm_dim)


class OutputProjector(nn.Module):
    """The released `TextFcLayer(mode="transformer")`.

    The LLM's hidden states at the N signal positions, plus those signal tokens' own input embeddings, go
    through Linear -> nn.Transformer (learned queries as the decoder input, no masks) -> Linear, giving the
    (Q, D) conditioning a diffusion decoder expects in place of its text encoder's output.
    """

    def __init__(self, llm_dim: int, cfg: OutputProjectorConfig):
        super().__init__()
        self.in_fc = nn.Linear(llm_dim, cfg.d_model)
        with warnings.catch_warnings():  # nested tensors are off with norm_first; torch says so at every build
            warnings.filterwarnings("ignore", message="enable_nested_tensor")
            self.tfm = self._transformer(cfg)
        self.out_fc = nn.Linear(cfg.d_model, cfg.out_dim)
        self.query_embs = nn.Parameter(torch.randn(1, cfg.num_queries, cfg.d_model))

    @staticmethod
    def _transformer(cfg: OutputProjectorConfig) -> nn.Transformer:
        return nn.Transformer(
            d_model=cfg.d_model,
            nhead=cfg.nhead,
            num_encoder_layers=cfg.num_encoder_layers,
            num_decoder_layers=cfg.num_decoder_layers,
            dim_feedforward=cfg.dim_feedforward,
            dropout=0.0,
            batch_first=True,
            norm_first=True,
        )

    def forward(self, hidden: torch.Tensor, signal_embeds: torch.Tensor) -> torch.Tensor:
        """hidden, signal_embeds: (B, N, llm_dim) -> (B, Q, out_dim)."""
        x = self.in_fc(hidden + signal_embeds)
        x = self.tfm(x, self.query_embs.expand(x.shape[0], -1, -1))
        return self.out_fc(x)
