"""A tiny MusicLM bundle of random components, shared by the pipeline and golden-token tests."""

import torch

from musiclm.checkpoint import save_model
from musiclm.codec.soundstream import SoundStream
from musiclm.config import CodecConfig, LMConfig, MelodyConfig, MulanConfig, SemanticConfig
from musiclm.lm.stages import CoarseStage, FineStage, SemanticStage, StageConfig
from musiclm.melody.model import MelodyEmbedder
from musiclm.mulan.model import MuLaN
from musiclm.semantic.tokenizer import SemanticTokenizer

SR = 16000
PROMPTS = ["a calm piano piece", "loud rock with drums", "fast techno beat", "a slow sad waltz"]


def word_tokenizer(texts: list[str]):
    """A WordPiece tokenizer whose vocabulary is the words and letters of ``texts``, numbered in sorted
    order (a trained one numbers its tokens differently in every process)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers

    words = sorted(
        {w for t in texts for w in t.lower().split()} | set("".join(texts).lower().replace(" ", ""))
    )
    vocab = {t: i for i, t in enumerate(["[PAD]", "[UNK]", "[CLS]", *words])}
    tok = Tokenizer(models.WordPiece(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    return tok


def stage_config(stage: str, window: float, melody: bool, **kw) -> StageConfig:
    return StageConfig(
        stage=stage,
        lm=LMConfig(dim=32, depth=1, heads=2, ff_dim=64, dropout=0.0, window_seconds=window, **kw),
        mulan_quantizers=4,
        mulan_codebook=16,
        melody_quantizers=4 if melody else 0,
        melody_codebook=32 if melody else 0,
        melody_window_seconds=2.0,
        melody_hop_seconds=1.5,
        semantic_clusters=16,
        codec_levels=4,
        codec_codebook=64,
        coarse_levels=2,
    )


def components(melody: bool = True) -> dict:
    torch.manual_seed(0)
    codec = SoundStream(
        CodecConfig(sample_rate=SR, channels=4, strides=(2, 4, 5, 8), latent_dim=16, num_quantizers=4,
                    codebook_size=64, num_coarse_quantizers=2)
    )  # fmt: skip
    semantic = SemanticTokenizer(
        SemanticConfig(dim=32, depth=1, heads=2, n_mels=32, layer=1, num_clusters=16)
    )
    semantic.centroids.normal_()
    mulan = MuLaN(
        MulanConfig(embed_dim=32, n_mels=32, patch_frames=10, audio_dim=32, audio_depth=1, audio_heads=2,
                    text_vocab_size=200, text_dim=32, text_depth=1, text_heads=2, max_text_tokens=16,
                    dropout=0.0, window_seconds=2.0, window_hop_seconds=1.0, num_quantizers=4, codebook_size=16)
    )  # fmt: skip
    mulan.text.set_tokenizer(word_tokenizer(PROMPTS))
    mulan.quantizer.fit(torch.nn.functional.normalize(torch.randn(256, 32), dim=-1))
    parts = {"codec": codec, "semantic": semantic, "mulan": mulan}
    if melody:
        mel = MelodyEmbedder(
            MelodyConfig(sample_rate=SR, n_fft=512, hop_length=160, n_mels=32, patch_frames=4, dim=32, depth=1,
                         heads=2, embed_dim=16, window_seconds=2.0, hop_seconds=1.5, num_quantizers=4,
                         codebook_size=32)
        )  # fmt: skip
        mel.quantizer.fit(torch.nn.functional.normalize(torch.randn(256, 16), dim=-1))
        parts["melody"] = mel
    parts["semantic_lm"] = SemanticStage(stage_config("semantic", 2.0, melody))
    parts["coarse_lm"] = CoarseStage(stage_config("coarse", 1.0, melody))
    parts["fine_lm"] = FineStage(stage_config("fine", 0.5, False))
    return parts


def save_parts(root, parts) -> dict:
    dirs = {}
    for name, module in parts.items():
        dirs[name] = save_model(module, root / name)
    return dirs
