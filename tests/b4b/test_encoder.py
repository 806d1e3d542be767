"""Encoder wrapping: any user module in, a saved folder out, loaded back bit-for-bit."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from genleak.b4b.encoder import Encoder, SmallConvEncoder
from genleak.errors import GenleakError


class UserNet(nn.Module):
    """A module genleak has never heard of (the Opacus-like "wrap what the user has" case)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.head = nn.Linear(4 * 16 * 16, 12)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.head(torch.relu(self.conv(x)).flatten(1)))


def test_user_module_round_trips_as_a_registered_architecture(tmp_path, monkeypatch):
    from genleak.b4b import encoder as encoder_module

    monkeypatch.setattr(encoder_module, "ARCHITECTURES", dict(encoder_module.ARCHITECTURES))  # registry per test
    torch.manual_seed(0)
    enc = Encoder(UserNet(), (1, 16, 16), name="user-net")
    with pytest.raises(GenleakError, match="not a registered architecture"):
        enc.save(tmp_path / "m")
    encoder_module.register_architecture("user-net", UserNet)
    x = np.random.default_rng(0).random((5, 1, 16, 16), dtype=np.float32)
    enc.save(tmp_path / "m")
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((tmp_path / "m" / "config.json").read_text())["architecture"] == "user-net"
    back = Encoder.load(tmp_path / "m")
    assert back.embed_dim == 12 and back.input_shape == (1, 16, 16)
    np.testing.assert_array_equal(back.embed(x), enc.embed(x))
    # A process that has not registered the class refuses the folder instead of guessing.
    del encoder_module.ARCHITECTURES["user-net"]
    with pytest.raises(GenleakError, match="'user-net' is not registered"):
        Encoder.load(tmp_path / "m")


def test_legacy_small_cnn_folder_still_loads(tmp_path):
    """Folders saved before the registry (encoder.json + weights.safetensors) are data only: still read."""
    torch.manual_seed(2)
    enc = Encoder(SmallConvEncoder(1, 8, 16, normalize=True), (1, 16, 16))
    enc.save(tmp_path / "old")
    meta = json.loads((tmp_path / "old" / "config.json").read_text())
    meta["format"] = "genleak-small-cnn"
    del meta["architecture"]
    (tmp_path / "old" / "encoder.json").write_text(json.dumps(meta))
    (tmp_path / "old" / "config.json").unlink()
    (tmp_path / "old" / "model.safetensors").rename(tmp_path / "old" / "weights.safetensors")
    assert Encoder.load(tmp_path / "old").fingerprint() == enc.fingerprint()


def test_builtin_cnn_round_trip_and_fingerprint(tmp_path):
    torch.manual_seed(1)
    enc = Encoder(SmallConvEncoder(1, 8, 16, normalize=True), (1, 16, 16))
    x = np.random.default_rng(1).random((7, 1, 16, 16), dtype=np.float32)
    out = enc.embed(x)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, rtol=1e-5)
    enc.save(tmp_path / "c")
    back = Encoder.load(tmp_path / "c")
    np.testing.assert_array_equal(back.embed(x), out)
    assert back.fingerprint() == enc.fingerprint()
    # Tampered weights are caught by the fingerprint.
    meta = json.loads((tmp_path / "c" / "config.json").read_text())
    meta["fingerprint"] = "0" * 16
    (tmp_path / "c" / "config.json").write_text(json.dumps(meta))
    with pytest.raises(GenleakError, match="fingerprint"):
        Encoder.load(tmp_path / "c")


def test_bad_modules_and_folders_are_user_errors(tmp_path):
    with pytest.raises(GenleakError, match=r"\(N, D\)"):
        Encoder(nn.Identity(), (1, 16, 16))
    with pytest.raises(GenleakError, match="input_shape"):
        Encoder(UserNet(), (16, 16))
    with pytest.raises(GenleakError, match="not an encoder folder"):
        Encoder.load(tmp_path)
