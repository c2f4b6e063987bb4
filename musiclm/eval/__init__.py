"""Evaluation metrics of the paper (section 5) and signal-level attribute checks.

FAD and FAD-inf over pluggable embedders (``fad``), KL divergence of classifier label distributions
(``kld``), MuLaN cycle consistency and the CLAP score (``mcc``), and tempo / key estimators with
their accuracies (``attributes``).
"""

from musiclm.eval.attributes import (
    attribute_accuracy,
    estimate_key,
    estimate_tempo,
    normalize_key_name,
    tempo_accuracy,
)
from musiclm.eval.fad import (
    ClapEmbedder,
    EmbeddingProvider,
    EncodecEmbedder,
    FadInf,
    MertEmbedder,
    MulanEmbedder,
    embedding_statistics,
    fad,
    fad_infinity,
    frechet_distance,
)
from musiclm.eval.kld import (
    HFAudioClassifier,
    LabelClassifier,
    LabelClassifierConfig,
    kl_divergence,
    kl_per_clip,
)
from musiclm.eval.mcc import clap_score, embedding_cosines, mulan_cycle_consistency

__all__ = [
    "ClapEmbedder",
    "EmbeddingProvider",
    "EncodecEmbedder",
    "FadInf",
    "HFAudioClassifier",
    "LabelClassifier",
    "LabelClassifierConfig",
    "MertEmbedder",
    "MulanEmbedder",
    "attribute_accuracy",
    "clap_score",
    "embedding_cosines",
    "embedding_statistics",
    "estimate_key",
    "estimate_tempo",
    "fad",
    "fad_infinity",
    "frechet_distance",
    "kl_divergence",
    "kl_per_clip",
    "mulan_cycle_consistency",
    "normalize_key_name",
    "tempo_accuracy",
]
