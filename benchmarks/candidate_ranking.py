"""Which candidate to keep: ranking rules compared on the same candidates of held-out prompts.

    python benchmarks/candidate_ranking.py --model BUNDLE --prompts MANIFEST [MANIFEST ...] \
        --classifier CLS --work DIR [--limit 48] [--candidates 4] [--neighbours 8 32 128] [--picks DIR]

Generates ``--candidates`` clips per prompt as ``musiclm eval --candidates N --batch-size 8`` draws
them (seed = the batch's first index), keeps every one in ``--work`` (a rerun reuses them), and
scores each rule's pick against the prompts' reference clips, pooled over the manifests: MCC (MuLaN
text-audio cosine), FAD in MuLaN space and in the label classifier's (independent of MuLaN), genre
by the classifier, tempo (within 4 %, or also at double / half). Rules: one fixed candidate (each,
and their mean: what one candidate gives), the paper's MuLaN text score, the consensus pick
(MuLaN audio nearest the other candidates), and the bundle's audio prototypes at each
``--neighbours`` (the bundle needs a ``prototypes`` component), and the bundle's own prototypes on
the first 2, 4, ... of the candidates: what fewer candidates would have given, on the same draws;
and targets drawn among the bundle's neighbours (the mean of ``--draws`` of them, two draws each)
or the candidate nearest any one neighbour. ``--picks DIR`` also links what ``generate`` keeps (by
its own ranking target, ``MusicLM.rank_targets``) into ``DIR/kept`` and the first candidate (what one
candidate gives) into ``DIR/first``, one ``00000.wav`` per prompt as ``musiclm eval`` writes them, for
``benchmarks/fad_paired.py`` to compare two runs on the same prompts.
"""

from __future__ import annotations

import argparse
import copy
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from musiclm.audio import save_audio
from musiclm.eval.attributes import attribute_accuracy, estimate_tempo, tempo_accuracy
from musiclm.eval.classifiers import LabelClassifier
from musiclm.eval.embedders import ClassifierEmbedder, MulanEmbedder
from musiclm.eval.fad import fad
from musiclm.eval.report import load_clip, load_prompts
from musiclm.pipeline import MusicLM

BATCH = 8  # prompts per generate call, as the eval's --batch-size 8


def candidates(model, entries, folder: Path, n: int, seconds: float) -> torch.Tensor:
    """``[P, N, T]`` every candidate of every prompt, generated where ``folder`` lacks them."""
    folder.mkdir(parents=True, exist_ok=True)
    for start in range(0, len(entries), BATCH):
        rows = range(start, min(start + BATCH, len(entries)))
        if all((folder / f"{i:05d}-{n - 1}.wav").is_file() for i in rows):
            continue
        out = model.generate([entries[i].caption for i in rows], seconds=seconds, candidates=n, seed=start,
                             progress=False)  # fmt: skip
        for row, i in enumerate(rows):
            for k in range(n):
                save_audio(folder / f"{i:05d}-{k}.wav", out.candidates[row, k], out.sample_rate)
    sr = model.sample_rate
    return torch.stack(
        [torch.stack([load_clip(str(folder / f"{i:05d}-{k}.wav"), sr, seconds) for k in range(n)])
         for i in range(len(entries))]
    )  # fmt: skip


def link_picks(out: Path, sources: list[tuple[Path, int]], picks: dict[str, torch.Tensor]) -> None:
    """``out/NAME/00000.wav``, ...: each prompt's picked candidate (a hard link), numbered as pooled."""
    for name, pick in picks.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        for i, ((folder, row), k) in enumerate(zip(sources, pick.tolist(), strict=True)):
            source, target = folder / f"{row:05d}-{k}.wav", out / name / f"{i:05d}.wav"
            target.unlink(missing_ok=True)
            try:
                target.hardlink_to(source)
            except OSError:  # another file system: a copy instead
                shutil.copyfile(source, target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--prompts", nargs="+", required=True, help="labelled manifests with reference clips")
    parser.add_argument(
        "--classifier", required=True, help="label classifier checkpoint (musiclm train classifier)"
    )
    parser.add_argument("--work", required=True, help="folder the candidates are kept in")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--neighbours", type=int, nargs="*", default=[8, 32, 128])
    parser.add_argument("--picks", default=None, help="folder to link the kept and the first candidates into")
    parser.add_argument(
        "--draws", type=int, nargs="*", default=[1, 4], help="neighbours drawn for a drawn prototype"
    )
    args = parser.parse_args()

    model = MusicLM.from_pretrained(args.model)
    classifier = LabelClassifier.load(args.classifier)
    sr, n = model.sample_rate, args.candidates
    mulan, features = MulanEmbedder(model.mulan), ClassifierEmbedder(classifier)
    parts = {k: [] for k in ("m", "f", "tempo", "m_ref", "f_ref", "text", "bpm", "genre", "captions")}
    sources: list[tuple[Path, int]] = []  # each prompt's candidate folder and row, pooled
    for index, manifest in enumerate(args.prompts):
        entries = load_prompts(manifest, args.limit, None)
        folder = Path(args.work) / f"{index}-{Path(manifest).stem}"
        audio = candidates(model, entries, folder, n, args.seconds)
        sources += [(folder, row) for row in range(len(entries))]
        flat = audio.reshape(-1, audio.shape[-1])
        refs = torch.stack([load_clip(e.path, sr, args.seconds, start=e.start) for e in entries])
        parts["m"].append(mulan.embed(flat, sr).reshape(len(entries), n, -1))
        parts["f"].append(features.embed(flat, sr).reshape(len(entries), n, -1))
        parts["tempo"].append(torch.tensor([estimate_tempo(w, sr) for w in flat]).reshape(len(entries), n))
        parts["m_ref"].append(mulan.embed(refs, sr))
        parts["f_ref"].append(features.embed(refs, sr))
        parts["bpm"] += [float(e.labels["bpm"]) for e in entries]
        parts["genre"] += [e.labels["genre"] for e in entries]
        parts["captions"] += [e.caption for e in entries]
    m, f, tempo = (torch.cat(parts[k]) for k in ("m", "f", "tempo"))
    m_ref, f_ref = torch.cat(parts["m_ref"]).numpy(), torch.cat(parts["f_ref"]).numpy()
    p = len(m)
    with torch.no_grad():
        text = model.mulan.embed_text(parts["captions"]).float().cpu()
    unit = F.normalize(m, dim=-1)
    genre_probs = classifier.probabilities(f.reshape(p * n, -1))["genre"].reshape(p, n, -1)
    names = classifier.config.labels["genre"]

    if args.picks:  # what generate keeps: its own ranking target, prototypes or the paper's text
        targets = model.rank_targets(parts["captions"]).float().cpu()  # no_grad inside
        kept = torch.einsum("pd,pnd->pn", targets, unit).argmax(1)
        link_picks(Path(args.picks), sources, {"kept": kept, "first": torch.zeros(p, dtype=torch.long)})

    rules = {f"candidate {k}": torch.full((p,), k) for k in range(n)}
    rules["MuLaN text score (paper)"] = torch.einsum("pd,pnd->pn", F.normalize(text, dim=-1), unit).argmax(1)
    rules["consensus (nearest the others)"] = torch.einsum("pnd,ped->pne", unit, unit).sum(-1).argmax(1)
    if model.prototypes is not None:
        for k in args.neighbours:
            bank = copy.copy(model.prototypes)
            bank.config = replace(bank.config, neighbours=k)
            target = bank.prototype(text.to(bank.audio.device)).float().cpu()
            rules[f"prototypes, {k} neighbours"] = torch.einsum("pd,pnd->pn", target, unit).argmax(1)
        # How many candidates: the bundle's own rule on the first k of the same candidates.
        target = model.prototypes.prototype(text.to(model.prototypes.audio.device)).float().cpu()
        score = torch.einsum("pd,pnd->pn", target, unit)
        k = 2
        while k < n:
            rules[f"prototypes (bundle's), best of the first {k}"] = score[:, :k].argmax(1)
            k *= 2
        # Targets drawn among the same neighbours instead of their mean: a mean is a typical clip,
        # and the candidates nearest typical clips spread less than the music they stand for.
        near = model.prototypes.neighbours(text.to(model.prototypes.audio.device)).cpu()
        bank = F.normalize(model.prototypes.audio.float().cpu(), dim=-1)
        for draws in args.draws:
            for seed in range(2):
                g = torch.Generator().manual_seed(seed)
                cols = torch.stack([torch.randperm(near.shape[1], generator=g)[:draws] for _ in range(p)])
                target = F.normalize(bank[near.gather(1, cols)].mean(1), dim=-1)
                name = f"prototypes, mean of {draws} drawn neighbours (draw {seed})"
                rules[name] = torch.einsum("pd,pnd->pn", target, unit).argmax(1)
        nearest = torch.einsum("pkd,pnd->pkn", bank[near], unit).amax(1)
        rules["nearest to any neighbour"] = nearest.argmax(1)

    rows = torch.arange(p)
    print(f"{p} prompts, {n} candidates each\n")
    # spread: the chosen clips' total variance in MuLaN's space over the references' (FAD also counts it)
    ref_spread = float(np.trace(np.cov(m_ref, rowvar=False)))
    print("| rule | MCC | FAD (MuLaN) | FAD (classifier) | genre | tempo | tempo x2 | spread |")
    print("|---|---|---|---|---|---|---|---|")
    single = []
    for name, pick in rules.items():
        chosen_m, chosen_f = m[rows, pick], f[rows, pick]
        genre = [names[j] for j in genre_probs[rows, pick].argmax(-1).tolist()]
        bpm = tempo[rows, pick].tolist()
        figures = (
            float(F.cosine_similarity(chosen_m, text).mean()),
            fad(m_ref, chosen_m.numpy()),
            fad(f_ref, chosen_f.numpy()),
            attribute_accuracy(genre, parts["genre"]),
            tempo_accuracy(bpm, parts["bpm"]),
            tempo_accuracy(bpm, parts["bpm"], octave=True),
            float(np.trace(np.cov(chosen_m.numpy(), rowvar=False))) / ref_spread,
        )
        if name.startswith("candidate "):
            single.append(figures)
        print(f"| {name} | " + " | ".join(f"{x:.3f}" for x in figures) + " |")
        if len(single) == n and name == f"candidate {n - 1}":
            print(
                "| one candidate (mean of the above) | "
                + " | ".join(f"{x:.3f}" for x in np.mean(single, 0))
                + " |"
            )


if __name__ == "__main__":
    main()
