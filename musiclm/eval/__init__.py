"""Evaluation metrics of the paper (section 5) and signal-level attribute checks.

Models that look at audio: clip embedders (``embedders``) and label classifiers (``classifiers``).
Metrics that only compare what those give: FAD and FAD-inf (``fad``), KL divergence of label
distributions (``kld``), MuLaN cycle consistency and the CLAP score (``mcc``), tempo / key estimators
with their accuracies (``attributes``). ``report`` runs them all on a prompt set.
"""

from musiclm.eval.attributes import (
    attribute_accuracy,
    estimate_key,
    estimate_tempo,
    normalize_key_name,
    order_accuracy,
    tempo_accuracy,
)
from musiclm.eval.classifiers import HFAudioClassifier, LabelClassifier, LabelClassifierConfig
from musiclm.eval.embedders import (
    ClapEmbedder,
    ClassifierEmbedder,
    EmbeddingProvider,
    EncodecEmbedder,
    MertEmbedder,
    MulanEmbedder,
)
from musiclm.eval.fad import (
    FadInf,
    embedding_statistics,
    fad,
    fad_infinity,
    fad_paired_bootstrap,
    frechet_distance,
)
from musiclm.eval.kld import kl_divergence, kl_per_clip
from musiclm.eval.mcc import clap_score, embedding_cosines, mulan_cycle_consistency

__all__ = [
    "ClapEmbedder",
    "ClassifierEmbedder",
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
    "fad_paired_bootstrap",
    "frechet_distance",
    "kl_divergence",
    "kl_per_clip",
    "mulan_cycle_consistency",
    "normalize_key_name",
    "order_accuracy",
    "tempo_accuracy",
]
