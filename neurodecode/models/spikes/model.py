"""The spike-token transformer: next (unit, dt) token of the current window given its context.

Context (keys and values of the cross-attention, one sequence per window):

* the **past window**'s tokens (unit embedding + past-dt embedding) after a learnt start token,
  encoded by ``past_layers`` non-causal blocks (padding masked);
* optional **behaviour covariates** ``batch["covariates"]`` ``(B, T, F)``: a linear projection
  and a learnt time position per step;
* optional **stimulus frames** ``batch["frames"]`` ``(B, C, H, W)`` through a small conv encoder
  (:class:`FrameEncoder`, four tokens).

Current window: ``[SOS, tok_1 .. tok_N]`` (unit embedding + dt embedding + position) through
``layers`` pre-norm blocks of causal self-attention, cross-attention to the context and an MLP,
all on :func:`torch.nn.functional.scaled_dot_product_attention`. Padding of the current window
is trailing (as :meth:`~neurodecode.data.tokens.SpikeTokenizer.collate` makes it), so the
causal kernel (``is_causal``, flash where available) never lets a real token see one. Position
``i`` predicts token ``i + 1`` (the last real position predicts :data:`~neurodecode.data.tokens.
EOS`): ``unit_logits`` over the vocabulary (PAD and SOS at ``-inf``) and ``dt_logits`` over the
window's bins, from the same hidden state.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ...data.tokens import EOS, N_SPECIAL, PAD, SOS
from .config import SpikeModelConfig
from .embedding import UnitEmbedding

__all__ = ["CrossBlock", "FrameEncoder", "SelfBlock", "SpikeTransformer"]

Batch = dict[str, torch.Tensor]


class _Attention(nn.Module):
    """Multi-head attention (self or cross) on ``scaled_dot_product_attention``.

    No dropout on the attention weights (the blocks drop their residual branches and MLP
    activations): on a CPU it costs more than the attention itself.
    """

    def __init__(self, width: int, heads: int, *, cross: bool = False) -> None:
        super().__init__()
        self.heads, self.cross = heads, cross
        if cross:
            self.q = nn.Linear(width, width)
            self.kv = nn.Linear(width, 2 * width)
        else:
            self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None, causal: bool = False) -> torch.Tensor:
        """``x`` ``(B, L, D)`` attends to itself or to ``context`` ``(B, S, D)``.

        ``mask`` bool ``(B, 1, 1, S)``: True where a key may be attended.
        """
        b, n, d = x.shape
        h = self.heads
        if self.cross:
            assert context is not None
            q = self.q(x).reshape(b, n, h, d // h).transpose(1, 2)
            k, v = self.kv(context).reshape(b, context.shape[1], 2, h, d // h
                                            ).permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = self.qkv(x).reshape(b, n, 3, h, d // h).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


def _mlp(width: int, ratio: float) -> nn.Sequential:
    # no dropout inside (GPT-2's placement: embeddings and residual branches only); on a CPU
    # the random mask of the wide hidden layer costs more than the layer
    hidden = max(1, round(width * ratio))
    return nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))


class SelfBlock(nn.Module):
    """Pre-norm non-causal block with a key padding mask (the past-window encoder)."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(width), nn.LayerNorm(width)
        self.attn = _Attention(width, heads)
        self.mlp = _mlp(width, mlp_ratio)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, M, D)``; ``mask`` bool ``(B, 1, 1, M)``."""
        x = x + self.drop(self.attn(self.norm1(x), mask=mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class CrossBlock(nn.Module):
    """Pre-norm causal self-attention, cross-attention to the context, MLP."""

    def __init__(self, width: int, heads: int, mlp_ratio: float, dropout: float) -> None:
        super().__init__()
        self.norm1, self.norm_c, self.norm2 = (nn.LayerNorm(width), nn.LayerNorm(width),
                                               nn.LayerNorm(width))
        self.attn = _Attention(width, heads)
        self.cross = _Attention(width, heads, cross=True)
        self.mlp = _mlp(width, mlp_ratio)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor, mask: torch.Tensor
                ) -> torch.Tensor:
        """``x`` ``(B, L, D)`` (trailing padding), ``context`` ``(B, S, D)``, ``mask``
        ``(B, 1, 1, S)``."""
        x = x + self.drop(self.attn(self.norm1(x), causal=True))
        x = x + self.drop(self.cross(self.norm_c(x), context, mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class FrameEncoder(nn.Module):
    """Stimulus frames ``(B, C, H, W)`` → four tokens ``(B, 4, width)`` (2 × 2 pooled convs)."""

    def __init__(self, frame_shape: tuple[int, int, int], width: int) -> None:
        super().__init__()
        if len(frame_shape) != 3 or min(frame_shape) < 1:
            raise ValueError(f"frame_shape must be (channels, height, width), got {frame_shape}")
        self.frame_shape = tuple(int(s) for s in frame_shape)
        self.net = nn.Sequential(
            nn.Conv2d(self.frame_shape[0], 32, 5, stride=2, padding=2), nn.GELU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.GELU(), nn.AdaptiveAvgPool2d(2))
        self.proj = nn.Linear(64, width)
        self.position = nn.Parameter(torch.randn(4, width) * 0.02)

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        if frames.ndim != 4 or tuple(frames.shape[1:]) != self.frame_shape:
            raise ValueError(f"frames must be (batch, {', '.join(map(str, self.frame_shape))}), "
                             f"got {tuple(frames.shape)}")
        z = self.net(frames).flatten(2).transpose(1, 2)  # (B, 4, 64)
        return self.proj(z) + self.position


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``(B, L, D)`` over True positions of ``mask`` ``(B, L)`` (0 if none)."""
    w = mask.to(x.dtype)[..., None]
    return (x * w).sum(1) / w.sum(1).clamp_min(1.0)


class SpikeTransformer(nn.Module):
    """Generative model of a window's spike tokens given its past, behaviour and stimulus.

    Parameters
    ----------
    n_vocab : int
        Unit vocabulary size (``len(UnitVocabulary)``, special ids included).
    n_dt, n_past_dt : int
        Time bins of the current and past windows (``SpikeTokenizer.n_dt`` / ``n_past_dt``).
    config : SpikeModelConfig
    n_covariates : int
        Behaviour features per covariate step (0: no covariate input).
    frame_shape : (int, int, int), optional
        ``(channels, height, width)`` of stimulus frames (None: no frame input).

    Attributes
    ----------
    unit_embed : UnitEmbedding
        Input rows of unit tokens (SOS's row starts every window).
    unit_head : UnitEmbedding
        Output rows (and biases) of the next-unit head.
    """

    def __init__(self, n_vocab: int, n_dt: int, n_past_dt: int, config: SpikeModelConfig,
                 n_covariates: int = 0, frame_shape: tuple[int, int, int] | None = None
                 ) -> None:
        super().__init__()
        if n_vocab <= EOS:
            raise ValueError(f"n_vocab ({n_vocab}) must include the special ids PAD/SOS/EOS")
        if n_dt < 1 or n_past_dt < 1:
            raise ValueError(f"n_dt ({n_dt}) and n_past_dt ({n_past_dt}) must be >= 1")
        self.config = config
        self.n_dt, self.n_past_dt = int(n_dt), int(n_past_dt)
        self.n_covariates = int(n_covariates)
        self.frame_shape = None if frame_shape is None else tuple(int(s) for s in frame_shape)
        d, c = config.width, config
        self.unit_embed = UnitEmbedding(n_vocab, d)
        self.unit_head = UnitEmbedding(n_vocab, d, bias=True)
        self.dt_embed = nn.Embedding(self.n_dt + 1, d)  # row n_dt: SOS
        self.past_dt_embed = nn.Embedding(self.n_past_dt, d)
        self.position = nn.Parameter(torch.randn(c.max_tokens + 1, d) * 0.02)
        self.past_start = nn.Parameter(torch.randn(d) * 0.02)
        self.modality = nn.Parameter(torch.randn(3, d) * 0.02)  # past, covariates, frames
        self.past_blocks = nn.ModuleList(SelfBlock(d, c.heads, c.mlp_ratio, c.dropout)
                                         for _ in range(c.past_layers))
        self.context_norm = nn.LayerNorm(d)
        if self.n_covariates:
            self.covariate_proj = nn.Linear(self.n_covariates, d)
            self.covariate_position = nn.Parameter(torch.randn(c.max_covariate_steps, d) * 0.02)
        if self.frame_shape is not None:
            self.frame_encoder = FrameEncoder(self.frame_shape, d)  # type: ignore[arg-type]
        self.blocks = nn.ModuleList(CrossBlock(d, c.heads, c.mlp_ratio, c.dropout)
                                    for _ in range(c.layers))
        self.norm = nn.LayerNorm(d)
        self.dt_head = nn.Linear(d, self.n_dt)
        self.drop = nn.Dropout(c.dropout)
        if c.contrastive > 0 and self.n_covariates:
            self.contrast_neural = nn.Sequential(nn.Linear(2 * d, d), nn.GELU(), nn.Linear(d, d))
            self.contrast_behaviour = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, d))
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)

    @property
    def n_vocab(self) -> int:
        """Rows of the unit vocabulary."""
        return self.unit_embed.n_rows

    # ---- context ----------------------------------------------------------------------------

    def _run(self, block: nn.Module, *args: torch.Tensor) -> torch.Tensor:
        if self.config.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def encode_context(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Context tokens ``(B, S, D)``, their mask ``(B, S)`` and summaries of each part."""
        unit, dt, mask = batch["past_unit"], batch["past_dt"], batch["past_mask"]
        b = unit.shape[0]
        tokens = self.unit_embed(unit) + self.past_dt_embed(dt)
        start = self.past_start.expand(b, 1, -1).to(tokens.dtype)
        x = self.drop(torch.cat([start, tokens], dim=1) + self.modality[0])
        past_mask = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        attn_mask = past_mask[:, None, None, :]
        for block in self.past_blocks:
            x = self._run(block, x, attn_mask)
        parts, masks = [x], [past_mask]
        out: dict[str, torch.Tensor] = {"past": x, "past_mask": past_mask}
        cov = batch.get("covariates")
        if cov is not None:
            if not self.n_covariates:
                raise ValueError("covariates given to a model built without them "
                                 "(n_covariates=0)")
            if cov.ndim != 3 or cov.shape[2] != self.n_covariates:
                raise ValueError(f"covariates must be (batch, steps, {self.n_covariates}), got "
                                 f"{tuple(cov.shape)}")
            steps = cov.shape[1]
            if steps > self.config.max_covariate_steps:
                raise ValueError(f"{steps} covariate steps per window, more than "
                                 f"max_covariate_steps={self.config.max_covariate_steps}")
            z = self.covariate_proj(cov.to(self.covariate_proj.weight.dtype))
            z = z + self.covariate_position[:steps]
            out["behaviour"] = z.mean(dim=1)
            parts.append(z + self.modality[1])
            masks.append(mask.new_ones(b, steps))
        frames = batch.get("frames")
        if frames is not None:
            if self.frame_shape is None:
                raise ValueError("frames given to a model built without them (frame_shape=None)")
            z = self.frame_encoder(frames.to(self.frame_encoder.proj.weight.dtype))
            out["stimulus"] = z.mean(dim=1)
            parts.append(z + self.modality[2])
            masks.append(mask.new_ones(b, z.shape[1]))
        out["context"] = self.context_norm(torch.cat(parts, dim=1))
        out["context_mask"] = torch.cat(masks, dim=1)
        return out

    # ---- forward ----------------------------------------------------------------------------

    def _current(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Input ids, dt bins and mask ``(B, N + 1)`` of ``[SOS, tok_1..tok_N]``."""
        unit, dt, mask = batch["cur_unit"], batch["cur_dt"], batch["cur_mask"]
        if unit.ndim != 2 or unit.shape != dt.shape or unit.shape != mask.shape:
            raise ValueError(f"cur_unit {tuple(unit.shape)}, cur_dt {tuple(dt.shape)} and "
                             f"cur_mask {tuple(mask.shape)} must be one (batch, tokens) shape")
        if mask.device.type == "cpu" and bool((mask[:, 1:] & ~mask[:, :-1]).any()):
            raise ValueError("cur_mask must be True on a prefix of each row (trailing "
                             "padding, as SpikeTokenizer.collate makes it)")
        b = unit.shape[0]
        ids = torch.cat([unit.new_full((b, 1), SOS), unit], dim=1)
        dts = torch.cat([dt.new_full((b, 1), self.n_dt), dt], dim=1)
        full = torch.cat([mask.new_ones(b, 1), mask], dim=1)
        return ids, dts, full

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Logits of the next token at every position of the current window.

        Parameters
        ----------
        batch : dict of Tensor
            :meth:`~neurodecode.data.tokens.SpikeTokenizer.collate`'s ``cur_*`` and
            ``past_*`` tensors; optional ``covariates`` ``(B, T, F)`` and ``frames``
            ``(B, C, H, W)``.

        Returns
        -------
        dict of Tensor
            ``unit_logits`` ``(B, N + 1, V)`` (PAD, SOS at ``-inf``), ``dt_logits``
            ``(B, N + 1, n_dt)``, ``hidden`` ``(B, N + 1, D)``, ``mask`` ``(B, N + 1)`` (SOS
            and real tokens), ``context`` ``(B, S, D)``, ``context_mask`` ``(B, S)``, and
            ``neural`` ``(B, 2D)`` (mean past encoding and mean current token embedding:
            the spikes only, for the contrastive alignment), ``behaviour`` ``(B, D)`` with
            covariates, ``stimulus`` ``(B, D)`` with frames.
        """
        ctx = self.encode_context(batch)
        ids, dts, mask = self._current(batch)
        n = ids.shape[1]
        rows = self.position.shape[0]
        if n > rows:
            if bool(mask[:, rows:].any()):
                raise ValueError(f"a window has {int(mask.sum(1).max()) - 1} tokens, more than "
                                 f"max_tokens={rows - 1}")
            pos = self.position[torch.arange(n, device=ids.device).clamp(max=rows - 1)]
        else:
            pos = self.position[:n]
        emb = self.unit_embed(ids) + self.dt_embed(dts)
        x = self.drop(emb + pos)
        context, attn_mask = ctx["context"], ctx["context_mask"][:, None, None, :]
        for block in self.blocks:
            x = self._run(block, x, context, attn_mask)
        hidden = self.norm(x)
        unit_logits = self.unit_head.logits(hidden)
        special = torch.zeros(unit_logits.shape[-1], dtype=torch.bool, device=ids.device)
        special[[PAD, SOS]] = True
        unit_logits = unit_logits.masked_fill(special, float("-inf"))
        out = {"unit_logits": unit_logits, "dt_logits": self.dt_head(hidden), "hidden": hidden,
               "mask": mask, "context": context, "context_mask": ctx["context_mask"],
               "neural": torch.cat([_masked_mean(ctx["past"], ctx["past_mask"]),
                                    _masked_mean(emb[:, 1:], mask[:, 1:])], dim=-1)}
        for key in ("behaviour", "stimulus"):
            if key in ctx:
                out[key] = ctx[key]
        return out

    # ---- likelihood, features, alignment ------------------------------------------------------

    @staticmethod
    def next_log_probs(out: dict[str, torch.Tensor], prev_unit: torch.Tensor,
                       prev_dt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Log-probabilities of the next token restricted to canonical continuations.

        A window's tokens are in canonical order (time bin, then unit id), so after a token
        ``(u', k')`` only EOS, a later bin ``k > k'`` (any unit) or the same bin with a unit id
        ``>= u'`` can follow (the same unit again: two spikes in one bin, as binned counts and
        bursts have). The unit and dt heads give ``p(u) p(k)``; this renormalises their
        product over the outcomes that can follow, so no probability is spent on orders that
        cannot occur (the sequence then codes the window's count matrix one to one).

        Parameters
        ----------
        out : dict
            :meth:`forward`'s output (``unit_logits`` ``(B, P, V)``, ``dt_logits``
            ``(B, P, K)``).
        prev_unit, prev_dt : Tensor of int64, shape (B, P)
            The previous token at every position (``N_SPECIAL - 1`` and 0 after SOS: every
            token may come first).

        Returns
        -------
        log_unit, log_dt : Tensor
            ``log p(u)`` and ``log p(k)`` of the heads, ``(B, P, V)`` and ``(B, P, K)``.
        log_z : Tensor, shape (B, P)
            Log of the total weight of the allowed outcomes: the NLL of an allowed target is
            ``-log_unit[u] - log_dt[k] + log_z`` (EOS: ``-log_unit[EOS] + log_z``).
        """
        lu = torch.log_softmax(out["unit_logits"].float(), dim=-1)
        ld = torch.log_softmax(out["dt_logits"].float(), dim=-1)
        v, k = lu.shape[-1], ld.shape[-1]
        unit_ids = torch.arange(v, device=lu.device)
        bins = torch.arange(k, device=ld.device)
        not_eos = unit_ids != EOS
        neg = float("-inf")
        log_units = lu.masked_fill(~not_eos, neg).logsumexp(-1)  # any unit (not EOS)
        later = bins[None, None, :] > prev_dt[..., None]
        log_later = ld.masked_fill(~later, neg).logsumexp(-1)
        higher = (unit_ids[None, None, :] >= prev_unit[..., None]) & not_eos
        log_higher = lu.masked_fill(~higher, neg).logsumexp(-1)
        log_same = ld.gather(-1, prev_dt[..., None].clamp(0, k - 1))[..., 0]
        log_z = torch.stack([lu[..., EOS], log_units + log_later, log_same + log_higher],
                            dim=-1).logsumexp(-1)
        return lu, ld, log_z

    @staticmethod
    def nll_from(out: dict[str, torch.Tensor], batch: Batch) -> torch.Tensor:
        """Per-window NLL (nats) from :meth:`forward`'s ``out``; see :meth:`token_nll`."""
        mask = batch["cur_mask"]
        b, n = mask.shape
        count = mask.sum(dim=1)
        pos = torch.arange(n + 1, device=mask.device)[None, :]
        at_end = pos == count[:, None]
        unit_tgt = torch.where(at_end, EOS, F.pad(batch["cur_unit"], (0, 1), value=PAD))
        dt_tgt = F.pad(batch["cur_dt"], (0, 1), value=0)
        unit_use = pos <= count[:, None]
        truncated = batch.get("truncated")
        if truncated is not None:  # the window went on: no EOS after its last kept token
            unit_use = unit_use & ~(at_end & truncated.to(torch.bool)[:, None])
        dt_use = pos < count[:, None]
        prev_unit = F.pad(batch["cur_unit"], (1, 0), value=N_SPECIAL - 1)
        prev_dt = F.pad(batch["cur_dt"], (1, 0), value=0)
        lu, ld, log_z = SpikeTransformer.next_log_probs(out, prev_unit, prev_dt)
        tu = lu.gather(-1, unit_tgt[..., None])[..., 0]
        td = ld.gather(-1, dt_tgt[..., None])[..., 0]
        per = log_z - tu - td.masked_fill(~dt_use, 0.0)
        return per.masked_fill(~unit_use, 0.0).sum(1)

    def token_nll(self, batch: Batch) -> torch.Tensor:
        """Negative log-probability (nats) of each window's tokens, ``(B,)``.

        ``-sum_i [log p_unit(u_i | prefix) + log p_dt(k_i | prefix) - log Z_i] - log p_unit(EOS
        | all) + log Z_end`` over the real tokens of the window (padding excluded), where
        ``Z_i`` renormalises the heads' product over the tokens that can follow in canonical
        order (:meth:`next_log_probs`). With ``batch["truncated"]``
        (bool ``(B,)``) the EOS term is left out for truncated windows (they went on).
        """
        return self.nll_from(self(batch), batch)

    def features(self, batch: Batch, out: dict[str, torch.Tensor] | None = None
                 ) -> torch.Tensor:
        """A window embedding ``(B, D)`` for behaviour heads.

        The mean of the context's and the mean of the current window's hidden states over
        non-padding positions, averaged. The context includes covariates when the batch has
        them: leave out the behaviour that a head is to decode.
        """
        out = self(batch) if out is None else out
        ctx = _masked_mean(out["context"], out["context_mask"])
        cur = _masked_mean(out["hidden"], out["mask"])
        return 0.5 * (ctx + cur)

    def contrastive_loss(self, batch: Batch, out: dict[str, torch.Tensor] | None = None
                         ) -> torch.Tensor:
        """Symmetric InfoNCE between neural and behaviour embeddings of a batch's windows.

        The neural embedding sees the spikes only (past encoding and current token
        embeddings), the behaviour embedding the covariates only; positives are the two of one
        window, negatives the other windows of the batch (cosine similarity / temperature).
        """
        if "covariates" not in batch:
            raise ValueError("the contrastive loss needs batch['covariates']")
        if not hasattr(self, "contrast_neural"):
            raise ValueError("this model has no contrastive heads (config.contrastive = 0 or "
                             "n_covariates = 0)")
        out = self(batch) if out is None else out
        zn = F.normalize(self.contrast_neural(out["neural"]).float(), dim=-1)
        zb = F.normalize(self.contrast_behaviour(out["behaviour"]).float(), dim=-1)
        logits = zn @ zb.T / self.config.temperature
        target = torch.arange(len(zn), device=zn.device)
        return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))

    # ---- vocabulary -------------------------------------------------------------------------

    def grow_vocabulary(self, n_vocab: int) -> None:
        """Grow the unit embedding and the unit head to ``n_vocab`` rows (old rows unchanged)."""
        self.unit_embed.grow(n_vocab)
        self.unit_head.grow(n_vocab)

    def train_only_units(self, ids: Any) -> None:
        """Train only the unit rows ``ids`` (embedding and head); freeze everything else.

        ``None`` undoes it: every parameter trains again.
        """
        frozen = ids is not None
        for name, p in self.named_parameters():
            p.requires_grad_(not frozen or name.startswith(("unit_embed.", "unit_head.")))
        self.unit_embed.train_only(ids)
        self.unit_head.train_only(ids)
