"""Encoders for contrastive embeddings: offset convolutional models and an MLP.

An *offset* model maps a window of ``receptive_field`` consecutive samples to one embedding. The
window around time ``t`` spans ``[t - left, t + right)``; a centred model (the CEBRA
``offset10-model`` layout) has ``left = receptive_field // 2``, a causal one ``left =
receptive_field - 1, right = 1`` so that the embedding at ``t`` uses no future samples (online
use).

Layers work channels-last on ``(batch, time, channels)``: a temporal layer with kernel ``k``
concatenates the ``k`` shifted slices and multiplies once, which on CPU is about twice as fast as
:class:`torch.nn.Conv1d` for these small kernels and computes the same function. Applied to a whole
recording the same layers compute every window's embedding at once
(:meth:`OffsetEncoder.forward_sequence`), without gathering windows.

Several sessions with different channel counts share everything but the first layer: one input
layer per session maps its channels into the shared hidden space (``session=`` selects it).
Adapting to a new session trains a new input layer only (:meth:`OffsetEncoder.add_session`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["OffsetEncoder", "TemporalLinear", "layer_kernels"]


class TemporalLinear(nn.Module):
    """A 1-D convolution over time with no padding, channels-last.

    Parameters
    ----------
    n_inputs, n_outputs : int
        Channels in and out.
    kernel_size : int
        Samples combined per output; the output is ``kernel_size - 1`` samples shorter.

    Notes
    -----
    ``weight`` is ``(n_outputs, kernel_size * n_inputs)`` with the taps in time order
    (column block ``j`` multiplies sample ``t + j``); it equals a :class:`torch.nn.Conv1d`
    weight ``w`` as ``w.permute(0, 2, 1).reshape(n_outputs, -1)``. Initialised like
    :class:`~torch.nn.Conv1d` (uniform with fan-in ``n_inputs * kernel_size``). When
    ``n_inputs <= n_outputs`` the ``k`` shifted slices are concatenated and multiplied once: one
    large matrix product whose backward pass needs no scatter, about twice as fast as ``Conv1d``
    on CPU for these shapes. A wider input (the first layer on many channels or voxels) is
    instead projected onto all ``k`` taps and the shifted taps are added, so the intermediate
    holds ``k * n_outputs`` rather than ``k * n_inputs`` values per sample.
    """

    def __init__(self, n_inputs: int, n_outputs: int, kernel_size: int) -> None:
        super().__init__()
        self.n_inputs, self.n_outputs, self.kernel_size = n_inputs, n_outputs, kernel_size
        self.weight = nn.Parameter(torch.empty(n_outputs, kernel_size * n_inputs))
        self.bias = nn.Parameter(torch.empty(n_outputs))
        bound = 1 / math.sqrt(n_inputs * kernel_size)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Map ``(batch, time, n_inputs)`` to ``(batch, time - kernel_size + 1, n_outputs)``."""
        k = self.kernel_size
        n = x.shape[-2] - k + 1
        if n < 1:
            raise ValueError(f"need at least {k} samples, got {x.shape[-2]}")
        if k == 1:
            return F.linear(x, self.weight, self.bias)
        if self.n_inputs <= self.n_outputs:
            x = torch.cat([x[..., j : j + n, :] for j in range(k)], dim=-1)
            return F.linear(x, self.weight, self.bias)
        # Wide input: project every sample onto the k taps, then add the shifted taps. The
        # intermediate has k * n_outputs channels instead of k * n_inputs.
        m = self.n_outputs
        taps = self.weight.view(m, k, self.n_inputs).transpose(0, 1).reshape(k * m, -1)
        y = F.linear(x, taps)
        out = y[..., :n, :m] + self.bias
        for j in range(1, k):
            out = out + y[..., j : j + n, j * m : (j + 1) * m]
        return out


def layer_kernels(receptive_field: int) -> tuple[int, int, int]:
    """Return ``(first_kernel, n_residual_layers, last_kernel)`` for a receptive field.

    The first layer has kernel 2, each residual layer kernel 3 and the last kernel 1-3, so that
    ``1 + (first - 1) + 2 * n_residual + (last - 1) == receptive_field``; ``receptive_field=10``
    is CEBRA's ``offset10-model`` (2, 3, 3). ``receptive_field=1`` gives an MLP applied to each
    sample (three residual layers).
    """
    r = int(receptive_field)
    if r < 1:
        raise ValueError(f"receptive_field must be >= 1, got {receptive_field}")
    if r == 1:
        return 1, 3, 1
    rest = r - 2
    n_res = max(0, (rest - 1) // 2)
    return 2, n_res, 1 + rest - 2 * n_res


class OffsetEncoder(nn.Module):
    """Residual temporal-convolution encoder with an explicit receptive field.

    Parameters
    ----------
    n_inputs : int or list of int
        Channels of the input; a list gives one input layer per session.
    n_outputs : int
        Embedding dimension.
    n_hidden : int
        Width of the hidden layers.
    receptive_field : int
        Samples per window (10 = CEBRA ``offset10-model``, 1 = per-sample MLP).
    causal : bool
        If True, the window ends at the embedded sample (no look-ahead).
    normalize : bool
        L2-normalise the output (for cosine similarity).

    Attributes
    ----------
    left, right : int
        The window of sample ``t`` is ``[t - left, t + right)``.
    """

    def __init__(
        self,
        n_inputs: int | list[int],
        n_outputs: int = 8,
        n_hidden: int = 32,
        receptive_field: int = 10,
        causal: bool = False,
        normalize: bool = True,
    ) -> None:
        super().__init__()
        sizes = [int(n_inputs)] if isinstance(n_inputs, int) else [int(n) for n in n_inputs]
        if not sizes or min(sizes) < 1:
            raise ValueError(f"n_inputs must be positive, got {n_inputs}")
        self.n_hidden, self.n_outputs = int(n_hidden), int(n_outputs)
        self.receptive_field, self.causal, self.normalize = int(receptive_field), causal, normalize
        first, n_res, last = layer_kernels(self.receptive_field)
        self.first_kernel = first
        self.input_layers = nn.ModuleList([TemporalLinear(n, self.n_hidden, first) for n in sizes])
        res_kernel = 3 if self.receptive_field > 1 else 1
        self.residual = nn.ModuleList(
            [TemporalLinear(self.n_hidden, self.n_hidden, res_kernel) for _ in range(n_res)]
        )
        self.output_layer = TemporalLinear(self.n_hidden, self.n_outputs, last)
        r = self.receptive_field
        self.left = r - 1 if causal else r // 2
        self.right = r - self.left

    @property
    def n_sessions(self) -> int:
        """Number of input layers (sessions)."""
        return len(self.input_layers)

    @property
    def n_inputs(self) -> list[int]:
        """Channels of each session's input layer."""
        return [layer.n_inputs for layer in self.input_layers]

    def add_session(self, n_inputs: int) -> int:
        """Append a fresh input layer for a new session and return its index."""
        self.input_layers.append(TemporalLinear(int(n_inputs), self.n_hidden, self.first_kernel))
        return len(self.input_layers) - 1

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters shared by all sessions (everything but the input layers)."""
        return [*self.residual.parameters(), *self.output_layer.parameters()]

    def _trunk(self, h: torch.Tensor) -> torch.Tensor:
        h = F.gelu(h)
        for layer in self.residual:
            k = layer.kernel_size
            crop = (k - 1) // 2
            skip = h[..., crop : h.shape[-2] - (k - 1 - crop), :]
            h = skip + F.gelu(layer(h))
        out = self.output_layer(h)
        return F.normalize(out, dim=-1) if self.normalize else out

    def forward(self, x: torch.Tensor, session: int = 0) -> torch.Tensor:
        """Embed windows.

        Parameters
        ----------
        x : torch.Tensor, shape (batch, receptive_field, n_inputs[session])
            Windows of consecutive samples, channels last.
        session : int
            Which input layer to use.

        Returns
        -------
        torch.Tensor, shape (batch, n_outputs)
        """
        if x.shape[-2] != self.receptive_field:
            raise ValueError(f"windows must have {self.receptive_field} samples, got {x.shape[-2]}")
        return self._trunk(self.input_layers[session](x))[..., 0, :]

    def forward_sequence(self, x: torch.Tensor, session: int = 0) -> torch.Tensor:
        """Embed every full window of a contiguous sequence ``(time, n_inputs)``.

        Returns ``(time - receptive_field + 1, n_outputs)``; row ``i`` is the embedding of sample
        ``i + left``.
        """
        return self._trunk(self.input_layers[session](x[None]))[0]
