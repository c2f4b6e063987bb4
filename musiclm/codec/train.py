"""Training the SoundStream codec with the shared Trainer (two phases: generator, discriminator)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from musiclm.codec.discriminators import CodecDiscriminator
from musiclm.codec.losses import (
    feature_matching_loss,
    hinge_discriminator_loss,
    hinge_generator_loss,
    mel_distance,
    multiscale_mel_loss,
    si_sdr,
)
from musiclm.codec.soundstream import CodecOutput, SoundStream
from musiclm.modules.quantization import codebook_perplexity
from musiclm.train import TrainTask


@dataclass
class CodecLossConfig:
    """Loss weights and the discriminator set-up (SoundStream: adversarial 1, features 100, mel 1)."""

    mel_weight: float = 1.0
    adversarial_weight: float = 1.0
    feature_weight: float = 1.0  # per-layer features are normalised by their real-audio scale
    waveform_l1_weight: float = 0.0
    adversarial_start: int = 2000  # steps of pure reconstruction before the GAN starts
    disc_channels: int = 16
    stft_ffts: tuple[int, ...] = (1024, 512, 256)
    wave_scales: int = 3
    mel_ffts: tuple[int, ...] = (64, 128, 256, 512, 1024, 2048)  # scales of the reconstruction loss
    # share of training crops replaced by digital silence: corpora drop silent clips, yet a codec must
    # decode silence as silence (not as its noise floor)
    silence_prob: float = 0.02


class CodecTask(TrainTask):
    """Reconstruction + commitment (+ adversarial and feature matching after ``adversarial_start``).

    With ``valid_clips`` (``[N, T]`` held-out audio) it validates: mel distance for every prefix of
    RVQ levels, SI-SDR at all levels, codebook perplexity per level, and a few decoded clips written
    beside the checkpoint. ``best/`` is chosen by the mel distance at all levels.

    ``decoder_only`` trains the decoder alone, on every RVQ level of the frozen encoder's codes: the
    codes of any audio stay what they were, so LMs trained on them stay valid while the decoder
    adapts to new music (a bundle's codec tuned to its own domain without tokenizing again).
    ``resample`` (with ``decoder_only``) gives the decoder, for ``resampled_share`` of the crops, the
    codes a generated piece would have instead of the encoder's own: e.g. a fine LM's levels sampled
    from the crop's coarse codes, so the decoder learns to render what the LMs make as the music it
    came from. It then also validates on such codes (``val/mel_distance_resampled``, which picks
    ``best/``): that is what the bundle decodes. ``resample_captioned`` resamples only crops of
    captioned clips (the music the LMs were trained on), so bare audio in a mixed corpus keeps
    teaching the decoder the encoder's own codes. ``resampled_mel_only`` scores resampled crops by
    the mel loss alone: their codes are another sample of the fine levels than the one the target
    was encoded from, so its spectrum is a fair target and its waveform (the phase) is not; a
    waveform L1 there pulls the decoder towards the mean of the possible waveforms, which is quieter.
    """

    validation_metric = "val/mel_distance"

    def __init__(
        self,
        model: SoundStream,
        losses: CodecLossConfig | None = None,
        *,
        valid_clips: torch.Tensor | None = None,
        samples: int = 3,
        decoder_only: bool = False,
        resample: Callable[[torch.Tensor], torch.Tensor] | None = None,
        resampled_share: float = 0.5,
        resample_captioned: bool = False,
        resampled_mel_only: bool = False,
    ):
        super().__init__()
        if resample is not None and not decoder_only:
            raise ValueError("resampled codes train the decoder alone (decoder_only)")
        if resample_captioned and resample is None:
            raise ValueError("resample_captioned narrows which crops resample rewrites: give resample too")
        if resampled_mel_only and resample is None:
            raise ValueError("resampled_mel_only changes the loss of resampled crops: give resample too")
        if not 0 < resampled_share <= 1:
            raise ValueError(f"resampled_share must lie in (0, 1], got {resampled_share}")
        self.model = model
        self.decoder_only = decoder_only
        self.resample, self.resampled_share = resample, resampled_share
        self.resample_captioned = resample_captioned
        self.resampled_mel_only = resampled_mel_only
        if resample is not None:
            self.validation_metric = "val/mel_distance_resampled"
        if decoder_only:
            model.encoder.requires_grad_(False)
            model.quantizer.requires_grad_(False)
        self.valid_clips = valid_clips
        self.samples = samples
        self.losses = losses or CodecLossConfig()
        self.discriminator = CodecDiscriminator(
            self.losses.stft_ffts, self.losses.wave_scales, self.losses.disc_channels
        )
        self._fakes: dict[int, torch.Tensor] = {}

    def phases(self) -> dict[str, list[nn.Parameter]]:
        return {
            "generator": list((self.model.decoder if self.decoder_only else self.model).parameters()),
            "discriminator": list(self.discriminator.parameters()),
        }

    def phase_active(self, phase: str, step: int) -> bool:
        return phase == "generator" or step >= self.losses.adversarial_start

    def forward(self, batch, phase: str, step: int):
        wav = batch["wav"] if isinstance(batch, dict) else batch
        cfg, sr = self.losses, self.model.sample_rate
        if phase == "discriminator":
            pair = self._fakes.pop(wav.data_ptr(), None)
            if pair is not None:
                wav, fake = pair
            else:
                with torch.no_grad():
                    fake = self.model.decode(self.model.encode(wav), wav.shape[-1])
            real_out = self.discriminator(wav)
            fake_out = self.discriminator(fake.detach())
            loss = hinge_discriminator_loss([o[0] for o in real_out], [o[0] for o in fake_out])
            return loss, {}
        key = wav.data_ptr()
        if cfg.silence_prob > 0:
            wav = wav * (torch.rand(wav.shape[0], 1, device=wav.device) >= cfg.silence_prob).to(wav.dtype)
        captioned = None
        if self.resample_captioned and isinstance(batch, dict):
            captioned = torch.tensor([bool(c.strip()) for c in batch["caption"]], device=wav.device)
        resampled = None
        if self.decoder_only:
            out, resampled = self._decoded(wav, captioned)
        else:
            out = self.model(wav)
        mel = multiscale_mel_loss(out.audio, wav, sr, ffts=cfg.mel_ffts)
        loss = cfg.mel_weight * mel + out.commit_loss
        metrics = {"mel_loss": mel.detach(), "commit": out.commit_loss.detach()}
        if cfg.waveform_l1_weight:
            l1 = (out.audio - wav).abs().mean(dim=-1)  # [B]
            if self.resampled_mel_only and resampled is not None:
                l1 = l1 * ~resampled  # each crop of the encoder's codes weighs as it did
            loss = loss + cfg.waveform_l1_weight * l1.mean()
        if step >= cfg.adversarial_start:
            fake_out = self.discriminator(out.audio)
            with torch.no_grad():
                real_out = self.discriminator(wav)
            adv = hinge_generator_loss([o[0] for o in fake_out])
            feat = feature_matching_loss([o[1] for o in real_out], [o[1] for o in fake_out])
            loss = loss + cfg.adversarial_weight * adv + cfg.feature_weight * feat
            metrics.update(adv=adv.detach(), feat=feat.detach())
            # the discriminator phase of this batch gets the same (real, fake) pair
            self._fakes = {key: (wav, out.audio.detach())} | (self._fakes if len(self._fakes) < 8 else {})
        with torch.no_grad():
            metrics["mel_distance"] = mel_distance(out.audio.detach(), wav, sr)
        return loss, metrics

    def _decoded(
        self, wav: torch.Tensor, captioned: torch.Tensor | None = None
    ) -> tuple[CodecOutput, torch.Tensor]:
        """The frozen encoder's codes at every level (no codebook update), a share of them resampled
        (of the ``captioned`` rows alone where given), decoded with gradients; and which rows were
        resampled (``[B]`` bool)."""
        codes = self.model.encode(wav)
        rows = torch.zeros(codes.shape[0], dtype=torch.bool, device=codes.device)
        if self.resample is not None:
            rows = torch.rand(codes.shape[0], device=codes.device) < self.resampled_share
            if captioned is not None:
                rows &= captioned
            if rows.any():
                codes = codes.clone()
                codes[rows] = self.resample(codes[rows]).to(codes)
        audio = self.model.decoder(self.model.quantizer.decode(codes))[:, 0, : wav.shape[-1]]
        return CodecOutput(audio, codes, torch.zeros((), device=audio.device)), rows

    def validate(self, samples_dir: Path, step: int) -> dict[str, float]:
        if self.valid_clips is None:
            return {}
        from musiclm.audio import save_audio

        model, sr = self.model, self.model.sample_rate
        clips = self.valid_clips.to(model._device)
        length = clips.shape[-1]

        def chunked(fn, x: torch.Tensor) -> torch.Tensor:  # 16 clips at a time bound the memory
            return torch.cat([fn(c) for c in x.split(16)])

        def decoded(c: torch.Tensor) -> torch.Tensor:
            return model.decode(c, length)

        codes = chunked(model.encode, clips)
        figures: dict[str, float] = {}
        for k in range(1, model.num_quantizers + 1):
            rec = chunked(decoded, codes[:, :k])
            figures[f"val/mel_distance@{k}"] = float(mel_distance(rec, clips, sr))
        figures["val/mel_distance"] = figures[f"val/mel_distance@{model.num_quantizers}"]
        figures["val/si_sdr"] = float(si_sdr(rec, clips).mean())
        if self.resample is not None:  # the same resampled codes at every validation (seeded)
            resampled = chunked(decoded, chunked(self.resample, codes))
            figures["val/mel_distance_resampled"] = float(mel_distance(resampled, clips, sr))
        perplexity = codebook_perplexity(codes, model.config.codebook_size)
        figures["val/perplexity_min"] = float(perplexity.min())
        figures.update({f"val/perplexity@{i + 1}": float(p) for i, p in enumerate(perplexity)})
        folder = samples_dir / f"step-{step:07d}"
        for i in range(min(self.samples, len(clips))):
            save_audio(folder / f"clip{i}-original.wav", clips[i], sr)
            save_audio(folder / f"clip{i}-decoded.wav", rec[i], sr)
        return figures
