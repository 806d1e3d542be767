"""Hostile inputs to the trainers (issue 12, items 1-3, training side): a crafted checkpoint never
runs code, a corrupt record or checkpoint is a one-line error, a folder trained on other data is
never reused or resumed, and impossible numbers are refused before anything is written."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import pytest
import torch

from genleak.errors import GenleakError
from genleak.train import TrainConfig, train_ddpm

TINY = {"block_out_channels": (16, 32), "seed": 0}


@pytest.fixture(scope="module")
def splits(digits8):
    from genleak.data import make_split

    src = {"kind": "digits", "size": 8}
    return make_split(digits8, 8, 8, seed=0, source=src), make_split(digits8, 8, 8, seed=1, source=src)


def _train(kind, images, out, manifest=None, steps=4):
    """One tiny run of the ``kind`` trainer (checkpoint every 2 steps)."""
    if kind == "ddpm":
        return train_ddpm(images, TrainConfig(steps=steps, checkpoint_every=2, **TINY), out,
                          split_manifest=manifest, progress=False)
    if kind == "vae":
        from genleak.train.vae import VAEConfig, train_vae

        split = {"split_manifest": manifest} if manifest is not None else {}
        return train_vae(images, VAEConfig(steps=steps, checkpoint_every=2, batch_size=8, **TINY), out, **split,
                         progress=False)
    if kind == "iar":
        from genleak.iar.train import IARTrainConfig, train_iar

        return train_iar(images, torch.zeros(len(images), dtype=torch.long),
                         IARTrainConfig(kind="rar", steps=steps, tokenizer_steps=3), out, split_manifest=manifest,
                         progress=False)
    from genleak.targets.latent import build_vae
    from genleak.train.latent import LatentTrainConfig, train_latent

    torch.manual_seed(0)
    return train_latent(images, build_vae(8, 1, (16, 32), 4, 1).eval(),
                        LatentTrainConfig(steps=steps, checkpoint_every=2, **TINY), out,
                        split_manifest=manifest, progress=False)


def _one_line_error(call, *needles):
    with pytest.raises(GenleakError) as info:
        call()
    text = str(info.value)
    assert "\n" not in text, text
    for needle in needles:
        assert str(needle) in text, (needle, text)
    return text


class _Payload:
    """Unpickling this creates ``marker``: what a crafted checkpoint could do instead."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("kind", ["ddpm", "vae", "latent"])
def test_crafted_checkpoint_runs_no_code(kind, digits8, tmp_path):
    out, marker = tmp_path / "run", tmp_path / "pwned"
    (out / "checkpoint").mkdir(parents=True)
    torch.save({"config": _Payload(marker), "step": 0}, out / "checkpoint" / "state.pt")
    with pytest.raises(GenleakError) as info:
        _train(kind, digits8[:8].images, out)
    assert not marker.exists(), "loading the checkpoint ran code"
    assert "state.pt" in str(info.value) and "\n" not in str(info.value)


def test_truncated_checkpoint_and_corrupt_record_are_one_line_errors(digits8, tmp_path):
    x, out = digits8[:8].images, tmp_path / "run"
    _train("ddpm", x, out)
    record = out / "genleak_train.json"
    record.write_text('{"config": ')
    _one_line_error(lambda: _train("ddpm", x, out), "genleak_train.json")
    record.write_text("[1, 2]")
    _one_line_error(lambda: _train("ddpm", x, out), "genleak_train.json")
    record.unlink()
    ckpt = out / "checkpoint" / "state.pt"
    ckpt.write_bytes(ckpt.read_bytes()[: ckpt.stat().st_size // 2])
    _one_line_error(lambda: _train("ddpm", x, out), "state.pt")


@pytest.mark.parametrize("kind", ["ddpm", "vae", "latent", "iar"])
def test_finished_folder_of_another_split_is_refused(kind, splits, tmp_path):
    a, b = splits
    out = tmp_path / "run"
    _train(kind, a.members.images, out, a.to_manifest())
    _one_line_error(lambda: _train(kind, b.members.images, out, b.to_manifest()), a.fingerprint(), b.fingerprint())
    # no manifest: the member images themselves are compared
    plain = tmp_path / "plain"
    _train(kind, a.members.images, plain)
    _one_line_error(lambda: _train(kind, b.members.images, plain), "member images")
    _train(kind, a.members.images, plain)  # the same data is still reused


@pytest.mark.parametrize("kind", ["ddpm", "vae", "latent"])
def test_resume_on_another_split_is_refused(kind, splits, tmp_path):
    a, b = splits
    out = tmp_path / "run"
    _train(kind, a.members.images, out, a.to_manifest())
    for record in ("genleak_train.json", "genleak_vae.json"):  # as if killed after the last checkpoint
        (out / record).unlink(missing_ok=True)
    recorded = sorted(p.read_bytes() for p in out.glob("*.json"))
    _one_line_error(lambda: _train(kind, b.members.images, out, b.to_manifest()), a.fingerprint(), b.fingerprint())
    assert sorted(p.read_bytes() for p in out.glob("*.json")) == recorded  # split.json still names split a


@pytest.mark.parametrize("bad", [{"steps": 0}, {"batch_size": 0}, {"ema_decay": 1.0}, {"ema_decay": -0.1},
                                 {"lr": 0.0}, {"lr": math.nan}, {"lr": math.inf}, {"block_out_channels": (16, 0)},
                                 {"checkpoint_every": 0}])
def test_bad_numbers_are_refused_before_anything_is_written(bad, digits8, tmp_path):
    from genleak.train.latent import LatentTrainConfig
    from genleak.train.vae import VAEConfig

    for config_cls in (TrainConfig, VAEConfig, LatentTrainConfig):
        if not set(bad) <= {f.name for f in dataclasses.fields(config_cls)}:
            continue  # the VAE has no EMA
        with pytest.raises(GenleakError, match=next(iter(bad))):
            config_cls(**bad)
    config = TrainConfig(steps=5, **TINY)
    for key, value in bad.items():
        setattr(config, key, value)  # a config changed after construction is checked again by the trainer
    _one_line_error(lambda: train_ddpm(digits8[:8].images, config, tmp_path / "run", progress=False), next(iter(bad)))
    assert not (tmp_path / "run").exists()


def test_out_that_is_a_file_and_divergence_publish_nothing(digits8, tmp_path):
    x, file = digits8[:8].images, tmp_path / "file"
    file.write_text("keep me")
    _one_line_error(lambda: train_ddpm(x, TrainConfig(steps=2, **TINY), file, progress=False), "existing file")
    assert file.read_text() == "keep me"
    out = tmp_path / "run"
    _one_line_error(lambda: train_ddpm(x, TrainConfig(steps=20, lr=1e30, **TINY), out, progress=False), "diverged")
    assert not (out / "genleak_train.json").exists() and not (out / "model_index.json").exists()


def test_cli_train_validates_and_records_its_split(cli, splits, tmp_path):
    a, _ = splits
    split = tmp_path / "split.json"
    a.save(split)
    args = ["train", "ddpm", "--split", str(split), "--steps", "5", "--channels", "16,32", "--threads", "1"]
    for bad, needle in ((["--batch-size", "0"], "batch_size"), (["--threads", "-1"], "--threads"),
                        (["--lr", "nan"], "lr"), (["--ema", "1"], "ema_decay")):
        code, _, err = cli(*args, "--out", str(tmp_path / "bad"), *bad)
        assert code == 2 and err.strip().count("\n") == 0 and needle in err, (bad, code, err)
        assert not (tmp_path / "bad").exists()
    (tmp_path / "file").write_text("")
    code, _, err = cli(*args, "--out", str(tmp_path / "file"))
    assert code == 2 and "existing file" in err
    code, out, err = cli(*args, "--out", str(tmp_path / "model"))
    assert code == 0, err
    record = json.loads((tmp_path / "model" / "genleak_train.json").read_text())
    assert record["split_fingerprint"] == a.fingerprint() and record["members"] == 8
    # the data fingerprint can be recomputed from the split manifest's member hashes alone
    hashes = [m["sha256"] for m in json.loads(split.read_text())["members"]]
    assert record["data_fingerprint"] == hashlib.sha256(",".join(hashes).encode()).hexdigest()
    state = torch.load(tmp_path / "model" / "checkpoint" / "state.pt", weights_only=True)
    assert state["split_fingerprint"] == a.fingerprint() and state["step"] == 5
