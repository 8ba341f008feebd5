"""The contrastive LightningModule trains under a real Lightning Trainer (the GPU path)."""

from __future__ import annotations

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from neurodecode.models.contrastive import ContrastiveModule, InfoNCE, PairBatches, PairSampler
from neurodecode.models.encoders import OffsetEncoder


def _place_cells(n: int, n_units: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pos = np.abs(np.cumsum(rng.normal(0, 0.01, n))) % 2
    pos = np.where(pos > 1, 2 - pos, pos)
    centres = rng.uniform(0, 1, n_units)
    rate = 4 * np.exp(-0.5 * ((pos[:, None] - centres) / 0.1) ** 2) + 0.2
    return rng.poisson(rate).astype(np.float32), pos


def test_trainer_fit_two_sessions_lowers_the_loss():
    (xa, pa), (xb, pb) = _place_cells(3000, 20, 0), _place_cells(3000, 30, 1)
    torch.manual_seed(0)
    enc = OffsetEncoder([20, 30], n_outputs=4, n_hidden=16, receptive_field=10)
    sampler = PairSampler(
        [np.zeros(3000, int)] * 2, [pa[:, None], pb[:, None]], conditional="time_delta",
        left=enc.left, right=enc.right,
    )  # fmt: skip
    stream = PairBatches(
        [torch.from_numpy(xa), torch.from_numpy(xb)], sampler, 128, enc.left, enc.right, seed=0
    )
    losses: list[float] = []
    module = ContrastiveModule(
        enc, InfoNCE(), learning_rate=3e-3, on_step=lambda step, stats: losses.append(stats["loss"])
    )
    before = [p.detach().clone() for p in enc.parameters()]
    trainer = L.Trainer(
        max_steps=150,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(stream, batch_size=None))
    assert trainer.global_step == 150 and len(losses) == 150
    assert all(not torch.equal(a, b) for a, b in zip(before, enc.parameters(), strict=True))
    assert np.mean(losses[-20:]) < np.mean(losses[:20]) - 0.1


def test_adaptation_trains_only_the_new_input_layer():
    x, pos = _place_cells(2000, 12, 2)
    enc = OffsetEncoder([20], n_outputs=4, n_hidden=16)
    new = enc.add_session(12)
    sampler = PairSampler([np.zeros(2000, int)], [pos[:, None]], left=enc.left, right=enc.right)
    stream = PairBatches([torch.from_numpy(x)], sampler, 64, enc.left, enc.right)
    module = ContrastiveModule(enc, InfoNCE(), sessions=[new], train_sessions=[new])
    frozen = [p.detach().clone() for p in enc.shared_parameters()]
    first = [p.detach().clone() for p in enc.input_layers[0].parameters()]
    adapted = enc.input_layers[new].weight.detach().clone()
    trainer = L.Trainer(
        max_steps=5,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    trainer.fit(module, DataLoader(stream, batch_size=None))
    assert all(torch.equal(a, b) for a, b in zip(frozen, enc.shared_parameters(), strict=True))
    assert all(
        torch.equal(a, b) for a, b in zip(first, enc.input_layers[0].parameters(), strict=True)
    )
    assert not torch.equal(adapted, enc.input_layers[new].weight)


def test_estimator_lightning_trainer_matches_the_plain_loop():
    from neurodecode.models import ContrastiveEmbedding

    x, pos = _place_cells(2000, 16, 3)
    params = dict(output_dim=4, hidden_dim=16, batch_size=64, max_iter=15, random_state=1)
    loop = ContrastiveEmbedding(trainer="loop", **params).fit(x, pos)
    lit = ContrastiveEmbedding(trainer="lightning", **params).fit(x, pos)
    np.testing.assert_allclose(lit.log_["loss"], loop.log_["loss"], rtol=1e-5, atol=1e-6)
    for a, b in zip(loop.encoder_.parameters(), lit.encoder_.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
