"""``evaluate``: generate for a captioned benchmark and score it as the paper does (section 5).

For each system (the model, its unconditional baseline, the real reference audio as an upper bound,
and the references through the model's codec, the bound of any LM over that codec) it computes FAD
(and FAD-inf) against the references in MuLaN embedding space, the KL divergence of a label
classifier's outputs between paired reference and generated clips, MuLaN cycle consistency (MCC),
and, where the benchmark has labels, attribute adherence (tempo, key, mode, dynamics as the order of
the clips' loudness, and classifier-predicted factors). A prompts-shuffled MCC is the chance level.
Generated clips are kept on disk, so an interrupted evaluation resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from musiclm import checks

# load_clip is imported here for the benchmarks too, which take it from this module
from musiclm.audio import integrated_loudness, load_clip, save_audio
from musiclm.data.manifest import ManifestEntry, from_musiccaps, load_entries
from musiclm.errors import DataError
from musiclm.eval.attributes import (
    DYNAMICS,
    attribute_accuracy,
    estimate_key,
    estimate_tempo,
    normalize_key_name,
    order_accuracy,
    tempo_accuracy,
)
from musiclm.eval.embedders import ClassifierEmbedder, MulanEmbedder
from musiclm.eval.fad import fad, fad_infinity
from musiclm.eval.kld import kl_divergence
from musiclm.eval.mcc import embedding_cosines
from musiclm.files import write_text_atomic

SILENT_LUFS = -70.0  # BS.1770's absolute gate: a silent clip counts as the quietest


@dataclass
class EvalConfig:
    seconds: float = 10.0
    candidates: int = 1
    seed: int = 0
    batch_size: int = 4
    limit: int | None = None
    baselines: tuple[str, ...] = ("reference", "codec", "shuffled", "unconditional")
    guidance: float | tuple[float, float] | None = None  # (semantic, coarse); None: the model's default
    temperatures: tuple[float, float, float] | None = None  # semantic, coarse, fine; None: the LMs' own
    progress: bool = True  # a progress bar per set of generated clips
    extra: dict = field(default_factory=dict)


def load_prompts(
    source: str | Path, limit: int | None = None, reference: str | Path | None = None
) -> list[ManifestEntry]:
    """Benchmark entries (caption, optional reference audio and labels) from a manifest (.jsonl), a
    path/caption CSV, the MusicCaps CSV with ``reference`` = the folder of its downloaded clips
    (missing clips are reported and left out), or a text file of prompts (one a line)."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise DataError(f"limit must be a positive integer, got {limit!r}")
    source = Path(source)
    if source.suffix == ".csv" and reference is not None:
        entries, missing = from_musiccaps(source, reference)
        if missing:
            print(f"{len(missing)} MusicCaps clips are not in {reference} (first: {', '.join(missing[:3])})")
        entries = [e for e in entries if e.caption]
        if not entries:
            raise DataError(f"{source}: none of its clips are in {reference}")
        return entries[:limit] if limit else entries
    if source.suffix == ".txt":
        if not source.is_file():
            raise DataError(f"{source}: no such prompts file")
        lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        entries = [ManifestEntry(path="", caption=line, id=f"prompt{i:05d}") for i, line in enumerate(lines)]
    else:
        entries = [e for e in load_entries(source) if e.caption]
    if not entries:
        raise DataError(f"{source}: no captioned entries to evaluate")
    return entries[:limit] if limit else entries


def _generate_missing(model, entries, folder: Path, *, config: EvalConfig, unconditional: bool) -> list[Path]:
    """Generated clip per entry, reusing the ones already on disk (resumable)."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{i:05d}.wav" for i in range(len(entries))]
    todo = [i for i, p in enumerate(paths) if not p.is_file()]
    bar = tqdm(
        total=len(entries),
        initial=len(entries) - len(todo),
        desc=folder.name,
        unit="clip",
        disable=not config.progress,
    )
    for start in range(0, len(todo), config.batch_size):
        batch = todo[start : start + config.batch_size]
        out = model.generate(
            [entries[i].caption for i in batch],
            seconds=config.seconds,
            # unconditional samples draw one candidate: ranking them would read the prompt
            candidates=1 if unconditional else config.candidates,
            seed=config.seed + batch[0],
            guidance=config.guidance,
            temperatures=config.temperatures,
            progress=False,
            unconditional=unconditional,
        )
        for row, i in enumerate(batch):
            save_audio(paths[i], out.audio[row], out.sample_rate)
        bar.update(len(batch))
    bar.close()
    return paths


def _attributes(wavs: list[torch.Tensor], sample_rate: int, entries, *, classifier=None, probs=None) -> dict:
    """Per-factor accuracy against the entries' labels (only factors the labels have); ``probs`` are
    the classifier's label probabilities of ``wavs``."""
    labels = [e.labels or {} for e in entries]
    out: dict[str, float] = {}
    if all("bpm" in lab for lab in labels):
        pred = [estimate_tempo(w, sample_rate) for w in wavs]
        true = [float(lab["bpm"]) for lab in labels]
        out["tempo"] = tempo_accuracy(pred, true)
        out["tempo_octave"] = tempo_accuracy(pred, true, octave=True)
    if all("key" in lab and "mode" in lab for lab in labels):
        keys = [estimate_key(w, sample_rate) for w in wavs]
        out["key"] = attribute_accuracy(
            [normalize_key_name(k[0]) for k in keys], [normalize_key_name(lab["key"]) for lab in labels]
        )
        out["mode"] = attribute_accuracy([k[1] for k in keys], [lab["mode"] for lab in labels])
    dynamics = [lab.get("dynamics") for lab in labels]
    if all(d in DYNAMICS for d in dynamics) and len(set(dynamics)) > 1:
        levels = [integrated_loudness(w, sample_rate) for w in wavs]
        out["dynamics"] = order_accuracy([SILENT_LUFS if v is None else v for v in levels], dynamics)
    if classifier is not None:
        for factor, names in classifier.config.labels.items():
            if factor in classifier.config.multilabel or not all(factor in lab for lab in labels):
                continue
            pred = [names[p] for p in probs[factor].argmax(1).tolist()]
            out[factor] = attribute_accuracy(pred, [lab[factor] for lab in labels])
    return out


@torch.inference_mode()
def codec_round_trip(codec, wavs: list[torch.Tensor], batch_size: int = 8) -> list[torch.Tensor]:
    """The references encoded and decoded by the model's codec: the most any token LM over that
    codec can reach, so a figure of the model is read against it as well as against the references."""
    device = next(codec.parameters()).device
    out = []
    for batch in torch.stack(wavs).split(batch_size):
        audio = codec.decode(codec.encode(batch.to(device)), batch.shape[-1])
        out += list(audio.float().clamp(-1, 1).reshape(len(batch), -1).cpu())
    return out


def evaluate(
    model,
    source: str | Path | list[ManifestEntry],
    out: str | Path,
    *,
    config: EvalConfig,
    classifier=None,
    generated=None,
    reference=None,
) -> dict:
    """Run the benchmark; writes ``report.json`` and ``report.md`` into ``out`` and returns the report.
    ``source``: what :func:`load_prompts` reads, or its entries; ``reference``: the folder of
    MusicCaps clips when ``source`` is the MusicCaps CSV."""
    entries = source if isinstance(source, list) else load_prompts(source, config.limit, reference)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sr = model.sample_rate
    t0 = time.perf_counter()
    has_reference = all(e.path for e in entries)
    systems: dict[str, list[torch.Tensor]] = {}
    if generated is not None:
        files = sorted(Path(generated).glob("*.wav"))
        if len(files) < len(entries):
            raise DataError(f"{generated}: {len(files)} clips for {len(entries)} prompts")
        systems["model"] = [load_clip(str(f), sr, config.seconds) for f in files[: len(entries)]]
    else:
        paths = _generate_missing(model, entries, out / "generated", config=config, unconditional=False)
        systems["model"] = [load_clip(str(p), sr, config.seconds) for p in paths]
    if "unconditional" in config.baselines and generated is None:
        paths = _generate_missing(model, entries, out / "unconditional", config=config, unconditional=True)
        systems["unconditional"] = [load_clip(str(p), sr, config.seconds) for p in paths]
    if has_reference:
        systems["reference"] = [load_clip(e.path, sr, config.seconds, start=e.start) for e in entries]
        if "codec" in config.baselines:
            systems["codec round trip"] = codec_round_trip(model.codec, systems["reference"])
    generation_seconds = time.perf_counter() - t0

    captions = [e.caption for e in entries]
    embedder = MulanEmbedder(model.mulan)
    emb = {name: embedder.embed(torch.stack(w), sr) for name, w in systems.items()}  # FAD and MCC share them
    with torch.no_grad():
        text = model.mulan.embed_text(captions).float().cpu()
    probs, features = {}, {}
    if classifier is not None:  # one pass of the classifier gives both its FAD space and its labels
        embed_features = ClassifierEmbedder(classifier).embed
        features = {name: embed_features(torch.stack(w), sr) for name, w in systems.items()}
        probs = {name: classifier.probabilities(f) for name, f in features.items()}
    sampling = model.sampling_configs(config.temperatures)
    report: dict = {
        "prompts": len(entries),
        "seconds": config.seconds,
        "model": model.name,
        "candidates": config.candidates,  # of the model's clips; unconditional samples draw one
        "guidance": checks.guidance_record(model.guidance_scales(config.guidance)),
        "temperatures": {k: v.temperature for k, v in sampling.items()},
        "conditioning": getattr(model, "conditioning", "text"),  # what the LMs read of a prompt
        "systems": {},
    }
    for key in ("top_k", "top_p"):  # recorded where a stage truncates its sampling
        if any(getattr(v, key) is not None for v in sampling.values()):
            report[key] = {k: getattr(v, key) for k, v in sampling.items()}
    for name, wavs in systems.items():
        row: dict = {}
        row["mcc"], _ = embedding_cosines(text, emb[name])
        if has_reference and name != "reference":
            row["fad_mulan"] = fad(emb["reference"].numpy(), emb[name].numpy())
            if len(entries) >= 20:
                row["fad_inf_mulan"] = fad_infinity(
                    emb["reference"].numpy(), emb[name].numpy(), min_n=len(entries) // 4
                ).fad_inf
            if features:
                row["fad_classifier"] = fad(features["reference"].numpy(), features[name].numpy())
            for factor in probs.get(name, {}):
                multilabel = factor in classifier.config.multilabel
                row[f"kld_{factor}"] = kl_divergence(
                    probs["reference"][factor], probs[name][factor], multilabel=multilabel
                )
        row["adherence"] = _attributes(wavs, sr, entries, classifier=classifier, probs=probs.get(name))
        report["systems"][name] = row
    if "shuffled" in config.baselines and len(entries) > 1:
        rng = np.random.default_rng(config.seed)
        order = rng.permutation(len(entries))
        order = np.roll(np.arange(len(entries)), 1) if (order == np.arange(len(entries))).any() else order
        mcc, _ = embedding_cosines(text[torch.as_tensor(order)], emb["model"])
        report["systems"]["shuffled prompts"] = {"mcc": mcc}
    report["wall_seconds"] = {
        "generation": round(generation_seconds, 1),
        "total": round(time.perf_counter() - t0, 1),
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    write_text_atomic(out / "report.md", markdown_table(report))
    _plot(report, out / "adherence.png")
    return report


def evaluate_seeds(
    model, source: str | Path | list[ManifestEntry], out: str | Path, *, config: EvalConfig, seeds, **kwargs
) -> dict:
    """:func:`evaluate` once per seed into ``out/seed-S``, then ``out/report.json`` / ``report.md`` with
    each figure's mean over the seeds, its standard deviation under ``"spread"``, and, per seed, how
    far below its unconditional samples the model's FAD (MuLaN) is. On a few dozen prompts one
    draw of the model's clips and one of the unconditional ones can move a relative figure by more
    than the difference between two models; several seeds say how far it can be trusted."""
    seeds = list(dict.fromkeys(seeds))
    if not isinstance(source, list):  # read once, and refused before any folder is made
        source = load_prompts(source, config.limit, kwargs.get("reference"))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    runs = [
        evaluate(model, source, out / f"seed-{s}", config=replace(config, seed=s), **kwargs) for s in seeds
    ]
    names = [n for n in runs[0]["systems"] if all(n in r["systems"] for r in runs)]

    def combine(values: list, how) -> dict | float:
        if isinstance(values[0], dict):
            return {k: combine([v[k] for v in values], how) for k in values[0] if all(k in v for v in values)}
        return float(how(np.asarray(values, dtype=float)))

    rows = {n: [r["systems"][n] for r in runs] for n in names}
    report = {k: v for k, v in runs[0].items() if k not in ("systems", "wall_seconds")}
    report["seeds"] = seeds
    report["systems"] = {n: combine(r, np.mean) for n, r in rows.items()}
    report["spread"] = {
        n: combine(r, lambda x: x.std(ddof=1) if len(x) > 1 else 0.0) for n, r in rows.items()
    }
    if "unconditional" in names and "fad_mulan" in runs[0]["systems"].get("model", {}):
        report["fad_mulan_below_unconditional"] = [
            1 - r["systems"]["model"]["fad_mulan"] / r["systems"]["unconditional"]["fad_mulan"] for r in runs
        ]
    report["wall_seconds"] = {
        k: round(sum(r["wall_seconds"][k] for r in runs), 1) for k in runs[0]["wall_seconds"]
    }
    write_text_atomic(out / "report.json", json.dumps(report, indent=2) + "\n")
    table = markdown_table(report, heading=f"Mean over seeds {', '.join(map(str, seeds))}: evaluation of")
    spread = system_rows(report["spread"])
    below = report.get("fad_mulan_below_unconditional")
    extra = ["", "Standard deviation over the seeds:", "", *spread]
    if below:
        extra += ["", "FAD (MuLaN) below the unconditional samples', per seed: "
                  + ", ".join(f"{100 * b:.1f} %" for b in below)]  # fmt: skip
    write_text_atomic(out / "report.md", table + "\n".join(extra) + "\n")
    return report


def markdown_table(report: dict, *, heading: str = "Evaluation of") -> str:
    """The report as a Markdown table: one row per system, one column per metric."""
    setting = [f"{report['prompts']} prompts", f"{report['seconds']:g} s"]
    if report.get("candidates", 1) > 1:
        setting.append(f"best of {report['candidates']} candidates")
    scales = report.get("guidance")  # {"semantic": s, "coarse": c}; one number in older reports
    if isinstance(scales, dict):
        s, c = scales["semantic"], scales["coarse"]
        setting.append(f"guidance {s:g}" if s == c else f"guidance {s:g} / {c:g} (semantic / coarse)")
    elif scales is not None:
        setting.append(f"guidance {scales:g}")
    if report.get("temperatures"):
        setting.append("temperatures " + " / ".join(f"{t:g}" for t in report["temperatures"].values()))
    if report.get("conditioning", "text") != "text":
        setting.append(f"conditioned on the prompt's {report['conditioning']}")
    for key, name in (("top_k", "top-k"), ("top_p", "top-p")):
        if report.get(key):
            setting.append(
                f"{name} " + " / ".join("off" if v is None else f"{v:g}" for v in report[key].values())
            )
    lines = [f"# {heading} {report['model']} ({', '.join(setting)})", "", *system_rows(report["systems"])]
    lines += [
        "",
        "MCC: MuLaN text-audio cosine (higher is better); FAD: Frechet distance to the references in MuLaN "
        "space, or in the label classifier's (fad_classifier: independent of the MuLaN that conditions "
        "the model and ranks its candidates; lower is better); KLD: KL divergence of classifier label "
        "distributions, reference vs system (lower is better); acc: attribute adherence against the "
        "benchmark's labels (dynamics: the share of differently labelled pairs whose loudness comes in "
        "the labels' order, 0.5 chance).",
    ]
    return "\n".join(lines) + "\n"


def system_rows(rows: dict) -> list[str]:
    """Markdown table lines, header first, for ``{system: {metric: value or {sub: value}}}``."""
    columns: list[str] = []
    for row in rows.values():
        for k, v in row.items():
            keys = [f"{k}:{a}" for a in v] if isinstance(v, dict) else [k]
            columns += [c for c in keys if c not in columns]
    lines = [
        "| system | " + " | ".join(c.replace("adherence:", "acc ") for c in columns) + " |",
        "|---|" + "---|" * len(columns),
    ]
    for name, row in rows.items():
        cells = []
        for c in columns:
            k, _, sub = c.partition(":")
            v = row.get(k, {}).get(sub) if sub else row.get(k)
            cells.append("" if v is None else f"{v:.3f}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def _plot(report: dict, path: Path) -> None:
    """Per-factor accuracy bars (needs matplotlib; skipped without it)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    systems = {k: v.get("adherence", {}) for k, v in report["systems"].items() if v.get("adherence")}
    factors = sorted({f for v in systems.values() for f in v})
    if not factors:
        return
    fig, ax = plt.subplots(figsize=(1.2 * len(factors) + 2, 3.5))
    width = 0.8 / len(systems)
    for j, (name, acc) in enumerate(systems.items()):
        ax.bar(np.arange(len(factors)) + j * width, [acc.get(f, 0) for f in factors], width, label=name)
    ax.set_xticks(np.arange(len(factors)) + 0.4 - width / 2, factors)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
