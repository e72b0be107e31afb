"""A small FastSpeech 2 style acoustic model: phoneme ids -> log-mel frames, non-autoregressive.

FastSpeech 2 (Ren et al. 2020, "FastSpeech 2: Fast and High-Quality End-to-End Text to Speech"): an encoder of
feed-forward Transformer blocks (self-attention + 1-D convolutions), a duration predictor, a length regulator
that repeats each phoneme's hidden state for its duration in frames, a decoder of the same blocks and a linear
projection to the mel bands. Kept from the paper: the FFT encoder, the log-duration predictor trained on given
durations (here the teacher voice's own, see genloom.data.speech), the length regulator. Changed for 2 CPU
cores: no pitch and energy predictors, no postnet, and a decoder of dilated residual convolutions (receptive
field +-40 frames) instead of FFT blocks, fed each frame's position inside its phoneme, so that training can
decode random windows of `crop` frames instead of whole utterances (a few times less compute per step).
A waveform comes from the Griffin-Lim vocoder (genloom.data.speech.griffin_lim).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass(kw_only=True)
class FastSpeechConfig:
    vocab_size: int = 256  # phoneme ids (the teacher's id map; 0 is its pad "_")
    n_mels: int = 80
    d_model: int = 128
    n_heads: int = 2
    encoder_layers: int = 3
    conv_hidden: int = 256  # the FFT block's convolutional feed-forward width (and the decoder's)
    kernel_size: int = 5
    decoder_dilations: tuple[int, ...] = (1, 2, 4, 1, 2)  # one residual convolution block each
    crop: int = 128  # training decodes windows of this many frames (0: whole utterances)
    predictor_hidden: int = 128
    dropout: float = 0.1
    max_phonemes: int = 1024  # positional table length
    symbols: str = ""  # JSON of the phoneme id map ({"a": [14], ...}) the ids come from; set from the data
    espeak_voice: str = "en-us"


def _positions(n: int, d: int) -> torch.Tensor:
    pos = torch.arange(n).unsqueeze(1)
    div = torch.exp(torch.arange(0, d, 2) * (-math.log(10000.0) / d))
    pe = torch.zeros(n, d)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * div), torch.cos(pos * div)
    return pe


class FFTBlock(nn.Module):
    """Self-attention then a two-layer 1-D convolution, each with a residual and layer norm (post-norm, as the paper)."""

    def __init__(self, c: FastSpeechConfig):
        super().__init__()
        self.attn = nn.MultiheadAttention(c.d_model, c.n_heads, batch_first=True)  # no attention dropout: the fast SDPA path
        self.norm1, self.norm2 = nn.LayerNorm(c.d_model), nn.LayerNorm(c.d_model)
        self.conv1 = nn.Conv1d(c.d_model, c.conv_hidden, c.kernel_size, padding=c.kernel_size // 2)
        self.conv2 = nn.Conv1d(c.conv_hidden, c.d_model, 1)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, pad):  # x (B, T, d); pad (B, T) True where padding
        a, _ = self.attn(x, x, x, key_padding_mask=pad, need_weights=False)
        x = self.norm1(x + self.drop(a)).masked_fill(pad.unsqueeze(-1), 0.0)
        h = self.conv2(F.relu(self.conv1(x.transpose(1, 2)))).transpose(1, 2)  # (B, T, d)
        return self.norm2(x + self.drop(h)).masked_fill(pad.unsqueeze(-1), 0.0)


class DurationPredictor(nn.Module):
    """Two convolutions with ReLU, layer norm and dropout, then a linear layer: log(1 + frames) per phoneme."""

    def __init__(self, c: FastSpeechConfig):
        super().__init__()
        self.conv1 = nn.Conv1d(c.d_model, c.predictor_hidden, 3, padding=1)
        self.conv2 = nn.Conv1d(c.predictor_hidden, c.predictor_hidden, 3, padding=1)
        self.norm1, self.norm2 = nn.LayerNorm(c.predictor_hidden), nn.LayerNorm(c.predictor_hidden)
        self.out = nn.Linear(c.predictor_hidden, 1)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x, pad):  # (B, T, d) -> (B, T)
        h = self.drop(self.norm1(F.relu(self.conv1(x.transpose(1, 2))).transpose(1, 2)))
        h = self.drop(self.norm2(F.relu(self.conv2(h.transpose(1, 2))).transpose(1, 2)))
        return self.out(h).squeeze(-1).masked_fill(pad, 0.0)


class ConvBlock(nn.Module):
    """x + conv1x1(dropout(relu(dilated conv(layer_norm(x))))): the decoder's block, local by design."""

    def __init__(self, c: FastSpeechConfig, dilation: int):
        super().__init__()
        self.norm = nn.LayerNorm(c.d_model)
        self.conv1 = nn.Conv1d(c.d_model, c.conv_hidden, c.kernel_size, dilation=dilation,
                               padding=dilation * (c.kernel_size // 2))
        self.conv2 = nn.Conv1d(c.conv_hidden, c.d_model, 1)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x):  # (B, F, d)
        h = self.conv1(self.norm(x).transpose(1, 2))
        return x + self.conv2(self.drop(F.relu(h))).transpose(1, 2)


def length_regulate(h: torch.Tensor, durations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Repeat each phoneme state for its duration: (B, T, d), (B, T) ints -> frames (B, F, d), each frame's
    (position in its phoneme, phoneme length) (B, F, 2) and a (B, F) pad mask."""
    frames = durations.sum(1)
    n = max(int(frames.max()), 1)
    out = h.new_zeros(h.shape[0], n, h.shape[2])
    where = h.new_zeros(h.shape[0], n, 2)
    for b in range(h.shape[0]):
        d = durations[b]
        rep = torch.repeat_interleave(h[b], d, dim=0)  # (F_b, d)
        out[b, : rep.shape[0]] = rep
        length = torch.repeat_interleave(d, d).float()  # (F_b,)
        start = torch.repeat_interleave(torch.cumsum(d, 0) - d, d)
        pos = torch.arange(rep.shape[0], device=h.device) - start
        where[b, : rep.shape[0]] = torch.stack([(pos.float() + 0.5) / length, length / 20.0], -1)
    pad = torch.arange(n, device=h.device)[None, :] >= frames[:, None]
    return out, where, pad


class FastSpeech(nn.Module):
    sampling_options = frozenset({"speed"})

    def __init__(self, config: FastSpeechConfig):
        super().__init__()
        c = self.config = config
        self.embed = nn.Embedding(c.vocab_size, c.d_model, padding_idx=0)
        self.register_buffer("pe", _positions(c.max_phonemes, c.d_model), persistent=False)
        self.encoder = nn.ModuleList(FFTBlock(c) for _ in range(c.encoder_layers))
        self.duration = DurationPredictor(c)
        self.where = nn.Linear(2, c.d_model)
        self.decoder = nn.ModuleList(ConvBlock(c, dil) for dil in c.decoder_dilations)
        self.out_norm = nn.LayerNorm(c.d_model)
        self.to_mel = nn.Linear(c.d_model, c.n_mels)
        self.mel_bias = nn.Parameter(torch.full((c.n_mels,), -6.0))  # log-mels start near silence

    @property
    def id_map(self) -> dict[str, list[int]]:
        return json.loads(self.config.symbols) if self.config.symbols else {}

    def encode(self, ids, pad):  # (B, T) -> (B, T, d)
        x = self.embed(ids) + self.pe[: ids.shape[1]].unsqueeze(0)
        for block in self.encoder:
            x = block(x, pad)
        return x

    def decode(self, x, where):  # (B, F, d), (B, F, 2) -> (B, F, n_mels)
        x = x + self.where(where)
        for block in self.decoder:
            x = block(x)
        return self.to_mel(self.out_norm(x)) + self.mel_bias

    def forward(self, ids, lengths, durations, mels=None, starts=None):
        """ids (B, T) int, lengths (B,), durations (B, T) frames; mels (B, C, n_mels): the target frames from
        starts (B,) (C = all frames when starts is None) -> (mel, loss).

        The loss: mean L1 over real mel frames + MSE of log(1 + duration) over real phonemes."""
        pad = torch.arange(ids.shape[1], device=ids.device)[None, :] >= lengths[:, None]  # (B, T)
        h = self.encode(ids, pad)  # (B, T, d)
        log_d = self.duration(h, pad)  # (B, T)
        x, where, fpad = length_regulate(h, durations)  # (B, F, d)
        if starts is not None:  # each row's window of C frames
            C = mels.shape[1]
            x, where, fpad = (F.pad(t, (0, 0, 0, C)) if t.dim() == 3 else F.pad(t, (0, C), value=True)
                              for t in (x, where, fpad))
            ix = starts[:, None] + torch.arange(C, device=ids.device)[None, :]  # (B, C)
            x = torch.gather(x, 1, ix[..., None].expand(-1, -1, x.shape[2]))
            where = torch.gather(where, 1, ix[..., None].expand(-1, -1, 2))
            fpad = torch.gather(fpad, 1, ix)
        mel = self.decode(x, where)  # (B, C or F, n_mels)
        if mels is None:
            return mel, None
        n = min(mel.shape[1], mels.shape[1])
        mel_loss = (mel[:, :n] - mels[:, :n]).abs().mean(-1)[~fpad[:, :n]].mean()
        dur_loss = F.mse_loss(log_d[~pad], torch.log1p(durations.float())[~pad])
        return mel, mel_loss + dur_loss

    @torch.no_grad()
    def synthesize(self, ids: list[int], speed: float = 1.0) -> torch.Tensor:
        """(n_mels, frames) log-mel for one phoneme id sequence; speed > 1 speaks faster."""
        x = torch.tensor([ids], dtype=torch.long, device=self.mel_bias.device)
        pad = torch.zeros_like(x, dtype=torch.bool)
        h = self.encode(x, pad)
        d = torch.clamp(torch.round(torch.expm1(self.duration(h, pad)) / speed), min=0).long()  # (1, T)
        d[0, -1] = max(int(d[0, -1]), 1)
        d = d[:, : len(ids)]
        x, where, _ = length_regulate(h, d)
        return self.decode(x, where)[0].T

    def configure_optimizer(self, weight_decay, lr, betas):
        decay = [p for n, p in self.named_parameters() if p.dim() >= 2 and "embed" not in n]
        rest = [p for n, p in self.named_parameters() if p.dim() < 2 or "embed" in n]
        return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                                  {"params": rest, "weight_decay": 0.0}], lr=lr, betas=betas)
