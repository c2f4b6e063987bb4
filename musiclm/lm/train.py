"""Training a stage LM on token caches with the shared Trainer."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from musiclm.errors import DataError
from musiclm.lm.guidance import drop_conditioning
from musiclm.lm.stages import StageLM
from musiclm.train import TrainTask


class StageDataset(Dataset):
    """Random training windows of one stage from token records.

    ``records`` is anything with ``len`` and ``[i] -> dict`` holding ``"codec"`` Long[Q, F_a],
    ``"semantic"`` Long[F_s] and ``"mulan_tokens"`` Long[Mq] (a token cache or a list).
    """

    def __init__(self, records, model: StageLM, seed: int = 0):
        if len(records) == 0:
            raise DataError("no token records to train on")
        self.records, self.model = records, model
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.model.training_example(self.records[i], self.rng)


class StageTask(TrainTask):
    """Cross-entropy on the generated part; conditioning dropped with ``cond_drop_prob`` (for CFG),
    melody tokens alone with ``melody_drop_prob`` (so the model also follows text without a melody),
    and so are the pitch classes of ``melody_chroma``; beat phases with ``beat_drop_prob``."""

    def __init__(self, model: StageLM):
        super().__init__()
        self.model = model
        # set by the command: with held-out ``records`` and a ``codec``, each validation writes audio;
        # ``later``: coarse / fine LM checkpoints to hear a semantic LM through. A plain dict, so the
        # codec is not registered as a submodule (it must not be trained, averaged or checkpointed).
        self.samples: dict = {"records": [], "codec": None, "seconds": 4.0, "later": {}}

    def validate(self, samples_dir: Path, step: int) -> dict[str, float]:
        figures = super().validate(samples_dir, step)
        if self.model.conditioned and self.valid_batches:
            figures["val/cond_gain"] = self.conditioning_gain()
        if self.model.input_ids is not None and self.valid_batches:
            figures["val/input_gain"] = self.input_gain()
        if self.model.chroma_embedding is not None and self.valid_batches:
            figures["val/chroma_gain"] = self.track_gain("chroma")
        if self.model.beat_embedding is not None and self.valid_batches:
            figures["val/beat_gain"] = self.track_gain("beats")
        s = self.samples
        if s["records"] and s["codec"] is not None:
            from musiclm.checkpoint import load_model
            from musiclm.lm.samples import write_samples

            device = next(self.parameters()).device
            later = {}  # the coarse and fine LMs as they are now, where their runs have exported one
            for name, directory in s["later"].items():
                if (Path(directory) / "config.json").is_file():
                    later[name] = load_model(directory).to(device)
            write_samples(
                self.model, s["records"], samples_dir / f"step-{step:07d}", codec=s["codec"].to(device),
                seconds=s["seconds"], coarse_lm=later.get("coarse_lm"), fine_lm=later.get("fine_lm"),
            )  # fmt: skip
        return figures

    def conditioning_gain(self) -> float:
        """Held-out loss with another clip's conditioning minus the loss with its own (nats per target
        token, no conditioning dropped): how much the LM reads its MuLaN (and melody) tokens. A low
        validation loss with a gain near 0 is an LM that ignores its prompt."""
        # conditioning sits at the same positions in every example: the next row's is another clip's
        return self._borrowed_gain(lambda batch, tokens: batch["cond_mask"].to(tokens.device))

    def input_gain(self) -> float:
        """The same with another clip's inputs (the coarse LM's semantic tokens, the fine LM's coarse
        codes) in place of its own: how much the LM reads what the previous stage gave it."""
        lo, hi = self.model.input_ids

        def swapped(batch, tokens):
            inputs = (tokens >= lo) & (tokens < hi)
            return inputs & inputs.roll(1, dims=0)  # where both this row and the next have inputs

        return self._borrowed_gain(swapped)

    @torch.no_grad()
    def track_gain(self, key: str) -> float:
        """Held-out loss without a per-frame track minus the loss with it: ``"chroma"`` (the pitch
        classes of melody_chroma) or ``"beats"`` (the beat phases of beat_phase)."""
        device = next(self.parameters()).device
        gains = []
        for batch in self.valid_batches:
            tokens, target = batch["tokens"].to(device), batch["loss_mask"].to(device)
            track = {key: batch[key].to(device)}
            gains.append(float(self.model.loss(tokens, target) - self.model.loss(tokens, target, **track)))
        return sum(gains) / max(len(gains), 1)

    @torch.no_grad()
    def _borrowed_gain(self, swapped) -> float:
        """Mean over the held-out batches of the loss with the positions ``swapped(batch, tokens)``
        taken from the next row (another clip) minus the loss as it is."""
        device = next(self.parameters()).device
        gains = []
        for batch in self.valid_batches:
            tokens, target = batch["tokens"].to(device), batch["loss_mask"].to(device)
            if len(tokens) < 2:
                continue  # no other clip in the batch to borrow from
            other = torch.where(swapped(batch, tokens), tokens.roll(1, dims=0), tokens)
            gains.append(float(self.model.loss(other, target) - self.model.loss(tokens, target)))
        return sum(gains) / max(len(gains), 1)

    def forward(self, batch, phase: str, step: int):
        config = self.model.config
        tokens = drop_conditioning(batch["tokens"], batch["cond_mask"], config.lm.cond_drop_prob)
        tokens = drop_conditioning(tokens, batch["melody_mask"], config.melody_drop_prob)
        tracks = {}  # each dropped on its own: a prompt may come without a melody, or name no tempo
        for key, p in (("chroma", config.melody_drop_prob), ("beats", config.beat_drop_prob)):
            if batch.get(key) is not None:
                keep = torch.rand(batch[key].shape[0], 1, device=batch[key].device) >= p
                tracks[key] = batch[key].masked_fill(~keep, -1)
        loss = self.model.loss(tokens, batch["loss_mask"], **tracks)
        return loss, {}


def compile_blocks(model: StageLM) -> None:
    """``torch.compile`` the pass through the transformer's blocks that training runs: on a GPU the
    norms, rotary embeddings and feed-forwards of a layer become a few fused kernels instead of many
    small ones (benchmarks/README.md, "GPU"). Passes with a KV cache (sampling, validation samples)
    stay eager, so their shapes never recompile; weights, their names and the checkpoint are
    unchanged. The first steps compile (a minute or so)."""
    eager = model.transformer.hidden
    compiled = torch.compile(eager)

    def hidden(tokens: torch.Tensor, cache=None, extra: torch.Tensor | None = None) -> torch.Tensor:
        return eager(tokens, cache, extra) if cache is not None else compiled(tokens, None, extra)

    model.transformer.hidden = hidden


def shapes_only(build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` on the meta device with no weight initialisation: the sizes alone, allocated
    nowhere, in milliseconds (a meta tensor's ``normal_`` runs torch's Python reference ops, whose
    first use costs seconds)."""
    normal = nn.init.normal_
    nn.init.normal_ = lambda tensor, *args, **kwargs: tensor
    try:
        with torch.device("meta"):
            return build()
    finally:
        nn.init.normal_ = normal


def training_memory(model: StageLM, batch_size: int) -> int:
    """Bytes a training step of ``batch_size`` windows needs at its peak, from the model's sizes:
    weights, gradients, Adam moments and EMA (5 float32 copies), plus per layer the activations kept
    for the backward pass and the float32 logits over a target's id range (:meth:`StageLM.loss`),
    their softmax and gradient. With dropout of the
    attention weights the attention runs unfused and keeps three ``T x T`` matrices a layer (the
    weights, the dropout mask and the dropped weights; measured on a CPU: 3.1); the fused kernel
    that runs without it keeps none."""
    c, length = model.config.lm, model.max_train_len
    params = sum(p.numel() for p in model.parameters())
    attention = 3 * c.heads * length if c.attention_dropout > 0 else 0
    per_layer = batch_size * length * (12 * c.dim + 2 * c.ff_dim + attention)
    logits = 3 * batch_size * length * max(hi - lo for lo, hi in model.target_ranges())
    return 4 * (5 * params + c.depth * per_layer + logits)


def check_batch_memory(model: StageLM, batch_size: int, max_memory_gb: float | None = None) -> None:
    """Refuse, in one line naming the flag, a batch whose training step does not fit in memory."""
    from musiclm.checks import memory_limit
    from musiclm.errors import ConfigError

    need = training_memory(model, batch_size)
    limit = memory_limit(torch.device("cuda" if torch.cuda.is_available() else "cpu"), max_memory_gb)
    if need > limit:
        raise ConfigError(
            f"a {model.stage} LM batch of {batch_size} windows needs about {need / 2**30:.1f} GB and "
            f"{limit / 2**30:.1f} GB are available: lower --batch-size (or the preset's window)"
        )
