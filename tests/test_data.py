import json

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from musiclm.data.datasets import AudioCropDataset
from musiclm.data.manifest import (
    ManifestEntry,
    from_musiccaps,
    load_entries,
    read_manifest,
    write_manifest,
)
from musiclm.data.procedural import ProceduralMusic, render_piece
from musiclm.errors import AudioError, DataError

SR = 16000


def _write(path, seconds, sr=SR, channels=1):
    t = np.arange(int(seconds * sr)) / sr
    x = (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)
    sf.write(path, np.stack([x] * channels, 1) if channels > 1 else x, sr)


@pytest.fixture
def folder(tmp_path):
    _write(tmp_path / "a.wav", 2.0)
    (tmp_path / "a.txt").write_text("a calm sine tone\n")
    _write(tmp_path / "b.flac", 0.5, sr=44100, channels=2)
    (tmp_path / "broken.wav").write_bytes(b"RIFFnonsense")
    _write(tmp_path / "tiny.wav", 0.01)
    return tmp_path


def test_folder_import_and_manifest_round_trip(folder):
    entries = load_entries(folder)
    assert {e.id for e in entries} == {"a", "b", "broken", "tiny"}
    assert next(e for e in entries if e.id == "a").caption == "a calm sine tone"
    write_manifest(folder / "m.jsonl", entries)
    again = read_manifest(folder / "m.jsonl")
    assert [e.path for e in again] == [e.path for e in entries]
    (folder / "bad.jsonl").write_text('{"path": "a.wav"}\nnot json\n')
    with pytest.raises(DataError, match="bad.jsonl:2"):
        read_manifest(folder / "bad.jsonl")


def test_crops_have_fixed_length_and_bad_files_are_reported(folder):
    ds = AudioCropDataset(folder, SR, 1.0, seed=0)
    assert len(ds) == 2
    skipped = {p.split("/")[-1] for p, _ in ds.report}
    assert skipped == {"broken.wav", "tiny.wav"}
    batch = next(iter(DataLoader(ds, batch_size=2)))
    assert batch["wav"].shape == (2, SR)
    assert isinstance(batch["caption"], list)
    short = ds[[e.id for e in ds.entries].index("b")]["wav"]  # 0.5 s stereo 44.1 kHz -> padded mono 16 kHz
    assert short[: SR // 2 - 10].abs().max() > 0.1 and short[SR // 2 + 10 :].abs().max() == 0


def test_no_usable_audio_is_a_clear_error(tmp_path):
    (tmp_path / "x.wav").write_bytes(b"junk")
    with pytest.raises(AudioError, match="no usable audio"):
        AudioCropDataset(tmp_path, SR, 1.0)


def test_musiccaps_import_reports_missing_clips(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    _write(clips / "abc123.wav", 1.0)
    _write(clips / "zzz999_30-40.wav", 1.0)
    csv = tmp_path / "musiccaps.csv"
    csv.write_text(
        "ytid,start_s,end_s,audioset_positive_labels,aspect_list,caption,author_id,is_balanced_subset,is_audioset_eval\n"
        "abc123,30,40,\"/m/04rlf,/m/0342h\",\"['lo-fi', 'piano']\",A calm lo-fi piano.,1,True,False\n"
        "missing1,0,10,/m/04rlf,\"['rock']\",Loud rock.,2,False,True\n"
        "zzz999,30,40,/m/04rlf,\"['jazz', 'sax']\",Smooth jazz.,3,False,False\n"
    )
    entries, missing = from_musiccaps(csv, clips)
    assert missing == ["missing1"]
    assert [e.id for e in entries] == ["abc123", "zzz999"]
    assert entries[0].labels["aspects"] == ["lo-fi", "piano"] and entries[0].labels["is_balanced_subset"]
    assert entries[0].caption == "A calm lo-fi piano."


def test_procedural_music_is_deterministic_and_audible():
    a, la = render_piece([1, 2], SR, 2.0)
    b, lb = render_piece([1, 2], SR, 2.0)
    assert np.array_equal(a, b) and la == lb
    assert np.sqrt((a**2).mean()) > 0.02 and np.abs(a).max() <= 1.0
    item = ProceduralMusic(3, SR, 1.0)[2]
    assert item["wav"].shape == (SR,) and item["caption"]
    captions = {ProceduralMusic(40, SR, 0.1)[i]["caption"] for i in range(40)}
    assert len(captions) > 30  # varied wording
    assert not torch.equal(ProceduralMusic(3, SR, 1.0)[0]["wav"], item["wav"])


def test_entry_ids():
    assert ManifestEntry(path="/x/song.wav", start=12.5).id == "song@12.5"


def test_tokenize_builds_resumes_and_feeds_the_fine_lm(tmp_path, capsys):
    from musiclm.checkpoint import save_model
    from musiclm.cli import main
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import CodecConfig
    from musiclm.data.cache import TokenCache

    audio = tmp_path / "audio"
    audio.mkdir()
    for i in range(3):
        sf.write(audio / f"{i}.wav", ProceduralMusic(3, SR, 2.5, seed=i)[0]["wav"].numpy(), SR)
    (audio / "broken.wav").write_bytes(b"RIFF")
    save_model(SoundStream(CodecConfig(channels=4, latent_dim=16, codebook_size=32)), tmp_path / "codec")
    args = [
        "tokenize",
        "--data",
        str(audio),
        "--out",
        str(tmp_path / "cache"),
        "--codec",
        str(tmp_path / "codec"),
        "--segment-seconds",
        "1.0",
        "--shard-size",
        "2",
    ]
    assert main(args) == 0
    cache = TokenCache(tmp_path / "cache")
    assert (
        cache.fields == ["codec"] and len(cache) == 6
    )  # 3 files x two whole 1 s segments (0.5 s tail dropped)
    assert cache[0]["codec"].shape == (8, 50)
    shard = tmp_path / "cache" / "codec" / "shard-00000.safetensors"
    stamp = shard.stat().st_mtime_ns
    assert "tokenize codec" in capsys.readouterr().err  # a progress bar by default
    assert main([*args, "--no-progress"]) == 0  # rerun: nothing recomputed, and no bar
    assert shard.stat().st_mtime_ns == stamp and "tokenize codec" not in capsys.readouterr().err
    # another codec into the same cache: refused, not mixed in (a rerun skips finished shards)
    torch.manual_seed(1)
    save_model(SoundStream(CodecConfig(channels=4, latent_dim=16, codebook_size=32)), tmp_path / "codec2")
    other = [*args[: args.index("--codec") + 1], str(tmp_path / "codec2"), *args[args.index("--codec") + 2 :]]
    assert main(other) == 1 and "field codec was made by another model" in capsys.readouterr().err
    assert shard.stat().st_mtime_ns == stamp
    # in a cache of its own it is fine, but never read with the first one: pooled or as validation
    other[other.index("--out") + 1] = str(tmp_path / "cache-other")
    assert main(other) == 0
    run = ["--out", str(tmp_path / "mixed"), "--steps", "1", "--batch-size", "2", "--no-progress"]
    both = [str(tmp_path / "cache"), str(tmp_path / "cache-other")]
    capsys.readouterr()
    assert main(["train", "fine-lm", "--tokens", *both, *run]) == 1
    assert main(["train", "fine-lm", "--tokens", both[0], "--valid-tokens", both[1], *run]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all("field codec was made by different models" in line for line in err), err
    # validation on the training clips is refused: a best checkpoint chosen there is chosen for memory
    assert main(["train", "fine-lm", "--tokens", both[0], "--valid-tokens", both[0], *run]) == 1
    assert "6 of its 6 clips are in the training data" in capsys.readouterr().err
    with pytest.raises(DataError, match="missing"):
        TokenCache(tmp_path / "cache", fields=["codec", "semantic"])
    out = tmp_path / "fine"
    assert (
        main(
            [
                "train",
                "fine-lm",
                "--tokens",
                str(tmp_path / "cache"),
                "--out",
                str(out),
                "--steps",
                "2",
                "--batch-size",
                "2",
                "--no-progress",
            ]
        )
        == 0
    )
    assert (out / "model" / "model.safetensors").is_file()
    record = json.loads((out / "model" / "config.json").read_text())["token_sources"]  # for `bundle`
    assert record == {"codec": json.loads((tmp_path / "cache" / "codec" / "source.json").read_text())}
    warm = ["train", "fine-lm", "--tokens", str(tmp_path / "cache"), "--out", str(tmp_path / "warm")]
    assert (
        main(warm + ["--steps", "1", "--batch-size", "2", "--no-progress", "--init", str(out / "model")]) == 0
    )
    assert (
        main(["train", "coarse-lm", "--tokens", str(tmp_path / "cache"), "--out", str(out)]) == 1
    )  # no semantic

    # a second cache (data added later) is pooled with the first, clip for clip, without re-tokenizing
    from musiclm.data.cache import open_token_caches

    more = tmp_path / "more"
    more.mkdir()
    sf.write(more / "late.wav", ProceduralMusic(3, SR, 2.5, seed=7)[0]["wav"].numpy(), SR)
    assert main(args[:2] + [str(more)] + args[3:4] + [str(tmp_path / "cache2")] + args[5:]) == 0
    pool = open_token_caches([tmp_path / "cache", tmp_path / "cache2"], fields=["codec"])
    second = TokenCache(tmp_path / "cache2", fields=["codec"])
    assert len(pool) == len(cache) + len(second) == 8
    assert pool[5]["id"] == cache[5]["id"] and pool[6]["id"] == second[0]["id"]
    assert torch.equal(pool[7]["codec"], second[1]["codec"])
    with pytest.raises(IndexError):
        pool[8]
    pooled = ["train", "fine-lm", "--tokens", str(tmp_path / "cache"), str(tmp_path / "cache2")]
    assert (
        main(
            pooled + ["--out", str(tmp_path / "pooled"), "--steps", "1", "--batch-size", "2", "--no-progress"]
        )
        == 0
    )
    with pytest.raises(DataError, match="given twice"):
        open_token_caches([tmp_path / "cache", tmp_path / "x" / ".." / "cache"])

    # a validation cache of other codec levels is refused before training (it once scored nan)
    import shutil

    from safetensors.torch import load_file, save_file

    slim = tmp_path / "slim"
    shutil.copytree(tmp_path / "cache", slim)
    for shard in (slim / "codec").glob("*.safetensors"):
        save_file({k: v[:3].contiguous() for k, v in load_file(str(shard)).items()}, str(shard))
    capsys.readouterr()
    run = ["--out", str(tmp_path / "v"), "--steps", "1", "--batch-size", "2", "--no-progress"]
    assert (
        main(["train", "fine-lm", "--tokens", str(tmp_path / "cache"), "--valid-tokens", str(slim), *run])
        == 1
    )
    assert "codec tokens have 3 levels" in capsys.readouterr().err
    assert not (tmp_path / "v" / "model").exists()
    # codes beyond the LM's codebook (a cache of another codec): one line, not an IndexError
    wide = tmp_path / "wide"
    shutil.copytree(tmp_path / "cache", wide)
    for shard in (wide / "codec").glob("*.safetensors"):
        save_file({k: (v + 2000).contiguous() for k, v in load_file(str(shard)).items()}, str(shard))
    assert main(["train", "fine-lm", "--tokens", str(wide), *run]) == 1
    assert "codec codes up to" in capsys.readouterr().err


def test_unusable_files_are_listed_and_a_mostly_bad_folder_refused(folder, capsys):
    from musiclm.data.datasets import training_dataset

    ds = training_dataset(str(folder), SR, 0.25, max_bad_fraction=0.6)
    out = capsys.readouterr().out
    assert "skipped 2 of 4 files" in out and "broken.wav" in out and "tiny.wav" in out
    assert len(ds) == 2
    with pytest.raises(DataError, match="50% of the files are unusable"):
        training_dataset(str(folder), SR, 0.25, max_bad_fraction=0.2)


def test_merge_and_summary_commands(folder, tmp_path, capsys):
    from musiclm.cli import main

    manifest = tmp_path / "m.jsonl"
    write_manifest(
        manifest,
        [ManifestEntry(str(folder / "a.wav"), caption="again"), ManifestEntry(str(folder / "b.flac"))],
    )
    csv_file = tmp_path / "c.csv"
    csv_file.write_text(f"path,caption\n{folder / 'a.wav'},from csv\n")
    out = tmp_path / "merged" / "all.jsonl"
    assert main(["data", "merge", str(folder), str(manifest), str(csv_file), "-o", str(out)]) == 0
    merged = read_manifest(out)
    assert (
        len(merged) == 4
    )  # a, b, broken, tiny from the folder; the manifest's and csv's a and b repeat them
    assert {e.caption for e in merged if e.id == "a"} == {"a calm sine tone"}
    assert main(["data", "summary", str(out)]) == 0
    text = capsys.readouterr().out
    assert "2 usable clips" in text and "1 captioned" in text and "2 unusable" in text
    assert "broken.wav" in text


def test_tokenize_writes_caption_text_tokens_for_captioned_clips(tmp_path):
    from musiclm.checkpoint import save_model
    from musiclm.cli import main
    from musiclm.data.cache import TokenCache
    from tests._tiny_bundle import PROMPTS, components

    mulan = components(melody=False)["mulan"]
    save_model(mulan, tmp_path / "mulan")
    entries = []
    for i in range(3):
        sf.write(tmp_path / f"{i}.wav", ProceduralMusic(3, SR, 2.5, seed=i)[0]["wav"].numpy(), SR)
        entries.append(ManifestEntry(str(tmp_path / f"{i}.wav"), PROMPTS[i] if i < 2 else ""))
    data = write_manifest(tmp_path / "data.jsonl", entries)
    out = tmp_path / "cache"
    assert main(["tokenize", "--data", str(data), "--out", str(out), "--mulan", str(tmp_path / "mulan")]) == 0
    cache = TokenCache(out)
    assert cache.fields == ["mulan_text_tokens", "mulan_tokens"]
    for i in range(2):
        assert torch.equal(cache[i]["mulan_text_tokens"].long(), mulan.tokens_from_text([PROMPTS[i]])[0])
    assert cache[2]["mulan_text_tokens"].numel() == 0  # no caption: no text tokens


def test_mulan_data_keeps_only_captioned_clips(tmp_path, capsys):
    from musiclm.data.datasets import training_dataset

    entries = []
    for i in range(4):
        _write(tmp_path / f"{i}.wav", 1.0)
        entries.append(ManifestEntry(str(tmp_path / f"{i}.wav"), "a tone" if i % 2 else ""))
    mixed = str(write_manifest(tmp_path / "mixed.jsonl", entries))
    assert len(training_dataset(mixed, SR, 0.5)) == 4  # audio-only trainers: every clip
    ds = training_dataset(mixed, SR, 0.5, captioned=True)
    assert len(ds) == 2 and all(ds[i]["caption"] == "a tone" for i in range(2))
    assert "2 captioned clips of 4" in capsys.readouterr().out
    bare = str(write_manifest(tmp_path / "bare.jsonl", [ManifestEntry(e.path) for e in entries]))
    with pytest.raises(DataError, match="no captioned clips"):
        training_dataset(bare, SR, 0.5, captioned=True)


def test_recaption_writes_the_same_clips_in_other_wordings(tmp_path, capsys):
    from musiclm.cli import main
    from musiclm.data.manifest import ManifestEntry, read_manifest, write_manifest
    from musiclm.data.synth.styles import STYLES

    labels = {"genre": "trap", "bpm": 140, "key": "G", "mode": "minor", "instruments": ["synth bass", "drum kit"],
              "dynamics": "loud", "mood": "dark", "register": "low", "drums": True}  # fmt: skip
    source = tmp_path / "test.jsonl"
    held_out = "Here we have a dark trap song with synth bass."
    write_manifest(
        source, [ManifestEntry(path=f"clip{i}.flac", caption=held_out, labels=labels) for i in range(6)]
    )
    out = tmp_path / "train-words.jsonl"
    assert main(["data", "recaption", str(source), "--wording", "train", "-o", str(out)]) in (0, None)
    before, after = read_manifest(source), read_manifest(out)
    assert [e.path for e in after] == [e.path for e in before] and after[0].labels == labels
    captions = [e.caption for e in after]
    train_words = STYLES["trap"].words[:-1]
    assert all(any(w in c for w in train_words) and "dark trap" not in c for c in captions)
    assert len(set(captions)) > 1 and held_out not in captions
    again = tmp_path / "again.jsonl"
    main(["data", "recaption", str(source), "--wording", "train", "-o", str(again)])
    assert [e.caption for e in read_manifest(again)] == captions  # the seed decides
    capsys.readouterr()
    write_manifest(tmp_path / "bare.jsonl", [ManifestEntry(path="x.flac", caption="piano")])
    assert (
        main(["data", "recaption", str(tmp_path / "bare.jsonl"), "--wording", "test", "-o", str(again)]) == 1
    )
    assert "entry 1 (x) has no synthetic style label" in capsys.readouterr().err


def test_tokenize_chroma_gives_a_pitch_class_per_semantic_frame(tmp_path):
    from musiclm.cli import main
    from musiclm.data.cache import TokenCache

    audio = tmp_path / "audio"
    audio.mkdir()
    t = np.arange(int(1.2 * SR)) / SR
    sf.write(audio / "a4.wav", (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32), SR)
    assert main(["tokenize", "--data", str(audio), "--out", str(tmp_path / "cache"), "--chroma"]) == 0
    chroma = TokenCache(tmp_path / "cache", fields=["chroma"])[0]["chroma"]
    assert chroma.shape == (30,) and (chroma[2:-2] == 9).all()  # 25 Hz; A is pitch class 9


def test_tokenize_beats_reads_a_tempo_label_or_tracks_the_beats(tmp_path, capsys):
    from musiclm.cli import main
    from musiclm.data.cache import TokenCache
    from musiclm.tempo import beat_phase_grid

    sr = 22050
    wav = np.zeros(6 * sr, dtype=np.float32)
    click = np.exp(-np.arange(400) / 60.0) * np.sin(2 * np.pi * 1000 * np.arange(400) / sr)
    for t in np.arange(0.0, 6.0, 0.5):  # 120 bpm from the first sample
        wav[int(t * sr) : int(t * sr) + 400] += click
    sf.write(tmp_path / "clicks.wav", wav, sr)
    entries = [
        ManifestEntry(path=str(tmp_path / "clicks.wav"), id="labelled", labels={"bpm": 90}),  # the label wins
        ManifestEntry(path=str(tmp_path / "clicks.wav"), id="tracked"),
    ]
    write_manifest(tmp_path / "m.jsonl", entries)
    out = tmp_path / "cache"
    assert main(["tokenize", "--data", str(tmp_path / "m.jsonl"), "--out", str(out), "--beats"]) == 0
    cache = TokenCache(out, fields=["beats"])
    labelled, tracked = cache[0]["beats"].long(), cache[1]["beats"].long()
    assert torch.equal(labelled, beat_phase_grid(90, 150))
    off = (tracked - beat_phase_grid(120, 150)).remainder(8)
    assert ((off <= 1) | (off >= 7)).float().mean() > 0.9
    capsys.readouterr()
    write_manifest(
        tmp_path / "bad.jsonl", [ManifestEntry(path=str(tmp_path / "clicks.wav"), labels={"bpm": "fast"})]
    )
    assert (
        main(["tokenize", "--data", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path / "c2"), "--beats"])
        == 1
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label bpm" in err[0], err


def test_a_cache_shard_cut_short_leaves_no_file_and_the_rerun_finishes(tmp_path, monkeypatch):
    """A shard is written through a temporary name: a crash while writing it leaves neither the shard
    nor its done mark, and the next run computes it whole (as does a second run beside the first)."""
    import musiclm.data.cache as cache_module
    from musiclm.data.cache import TokenCache, fill_field, write_index

    items = [{"id": f"clip{i}", "caption": ""} for i in range(5)]
    write_index(tmp_path, items, shard_size=2)
    real_save = cache_module.save_file

    def crash_on_the_second_shard(tensors, path):
        if "clip2" in tensors:
            real_save(tensors, path)  # the bytes reach the disk, then the process dies before the rename
            raise KeyboardInterrupt
        real_save(tensors, path)

    monkeypatch.setattr(cache_module, "save_file", crash_on_the_second_shard)
    extract = lambda item: torch.full((3,), int(item["id"][-1]))  # noqa: E731
    with pytest.raises(KeyboardInterrupt):
        fill_field(tmp_path, "x", items, shard_size=2, extract=extract)
    assert sorted(p.name for p in (tmp_path / "x").iterdir()) == [
        "shard-00000.done",
        "shard-00000.safetensors",
        "skipped-00000.json",
    ]
    monkeypatch.setattr(cache_module, "save_file", real_save)
    fill_field(tmp_path, "x", items, shard_size=2, extract=extract)
    cache = TokenCache(tmp_path)
    assert [int(cache[i]["x"][0]) for i in range(5)] == [0, 1, 2, 3, 4]


def test_a_broken_link_in_a_folder_is_reported_not_dropped(tmp_path, capsys):
    import os

    from musiclm.cli import main

    folder = tmp_path / "clips"
    folder.mkdir()
    sf.write(folder / "a.wav", 0.1 * np.sin(np.arange(SR) / 20).astype(np.float32), SR)
    os.symlink(folder / "gone.wav", folder / "link.wav")
    assert main(["data", "summary", str(folder)]) == 0
    text = capsys.readouterr().out
    assert "1 usable clips" in text and "1 unusable" in text and "link.wav: no such audio file" in text
    assert "copies or links" not in text
    (folder / "b.wav").write_bytes((folder / "a.wav").read_bytes())  # a copy under another name
    assert main(["data", "summary", str(folder)]) == 0
    assert "copies or links of another file (the same bytes): 1 of 2 usable files" in capsys.readouterr().out


def test_a_codec_fingerprint_follows_its_codes_not_its_decoder():
    """A field's record is of what makes its tokens: a decoder tuned alone keeps every code, so a
    cache filled before and after it is one field; another encoder is another model."""
    from musiclm.codec.soundstream import SoundStream
    from musiclm.config import CodecConfig
    from musiclm.data.cache import model_fingerprint

    codec = SoundStream(CodecConfig(channels=4, latent_dim=16, codebook_size=32))
    before = model_fingerprint(codec)
    with torch.no_grad():
        next(codec.decoder.parameters()).add_(1.0)
    assert model_fingerprint(codec) == before
    with torch.no_grad():
        next(codec.encoder.parameters()).add_(1.0)
    assert model_fingerprint(codec) != before
