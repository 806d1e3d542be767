"""Lazy sources (issue 14 §2): a folder is decoded per batch, never held whole, and gives the same
ids, hashes, manifests and scores as the in-RAM set."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from genleak.attacks import get_attack
from genleak.attacks.base import Access, Attack
from genleak.data import ImageSet, MembershipSplit, folder_source, hf_source, make_split, split_from_sources
from genleak.data.sources import FileImage
from genleak.data.transforms import quantize_uint8, resize, to_model_range


def _write_folder(root, n, size, seed=0, grey_every=0):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        pixels = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels[..., 0] if grey_every and i % grey_every == 0 else pixels).save(root / f"{i:04d}.png")
    return root


def _tiny_target(size, channels=3):
    from diffusers import UNet2DModel

    from genleak.targets import DiffusionTarget, default_scheduler

    torch.manual_seed(0)
    unet = UNet2DModel(sample_size=size, in_channels=channels, out_channels=channels, block_out_channels=(16, 32),
                       layers_per_block=1, down_block_types=("DownBlock2D",) * 2, up_block_types=("UpBlock2D",) * 2,
                       norm_num_groups=8)
    return DiffusionTarget(unet, default_scheduler(), device="cpu")


def test_hashes_are_those_of_earlier_manifests(tmp_path):
    # sha256 that genleak 2ea2dfb (eager float32 folder source) gave these two files: split manifests
    # made before streaming must still verify. b.png is greyscale, so it is also a colour conversion.
    rgb = (np.arange(6 * 5 * 3) * 7 % 256).astype(np.uint8).reshape(6, 5, 3)
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "b.png")
    before = {
        None: ["f82be94573c74806b96543989586760ff55ba6994fa104696a6ec7acf42d667b",
               "db8ce0f4712dd921dee0c7bff2ff19b384ed8b07462e9954fcd6a9d3c283ca2b"],
        3: ["38e464a0540e45d68a6e9b4198a1383dc89f09bac93bda1d86ebfb0713fc21c0",  # bilinear down, re-quantised
            "87b49fa4cd44e81fd2e12edc7646028ee664018ff10f671df628ab742c55f490"],
        8: ["ef721cd7358f722be8b560773273f71c336d91187ada83f5c2c17b88c918c077",  # nearest-exact up
            "bf6b28259865ac1b9a0557fd69b909c45e9fa331c0a2c9f869a50c75fe4c9668"],
    }
    for size, hashes in before.items():
        images = folder_source(tmp_path, size=size)
        assert images.is_lazy and images.hashes == hashes
        assert images.ids == ["folder/a.png", "folder/b.png"]
    # the same pixels in a save_to_disk dataset hash the same (2ea2dfb gave these too), decoded in a worker
    import datasets

    datasets.Dataset.from_dict({"image": [Image.open(tmp_path / n) for n in ("a.png", "b.png")]}).save_to_disk(
        str(tmp_path / "ds"))
    for size in (None, 3):
        rows = hf_source(tmp_path / "ds", size=size)
        assert rows.is_lazy and rows.hashes == before[size] and rows.ids == ["hf/0", "hf/1"]
        (_, batch), = rows.batches(2, num_workers=1)
        assert torch.equal(batch, folder_source(tmp_path, size=size).images)


def test_lazy_folder_equals_eager_set(tmp_path, monkeypatch):
    import genleak.data.images

    root = _write_folder(tmp_path / "imgs", 20, 12, grey_every=7)
    monkeypatch.setattr(genleak.data.images, "_PARALLEL_HASH", 10)  # the sha256 pass of large sets: in workers
    lazy = folder_source(root, size=8)
    # the eager reference: every file decoded whole, converted and resized as sources always did
    rows = []
    for f in sorted(root.glob("*.png")):
        u8 = np.asarray(Image.open(f).convert("RGB")).transpose(2, 0, 1)[None]
        rows.append(quantize_uint8(resize(to_model_range(u8, (0.0, 255.0)), 8)))
    eager = ImageSet(torch.cat(rows), lazy.ids, source=lazy.source)
    assert lazy.shape == (3, 8, 8) and len(lazy) == 20
    assert lazy.hashes == eager.hashes
    got = torch.cat([x for _, x in lazy.batches(6)])
    assert torch.equal(got, eager.images)
    assert [i for ids, _ in lazy.batches(6) for i in ids] == lazy.ids
    assert lazy.is_lazy  # batches never materialised the set

    target = _tiny_target(8)
    for name in ("loss", "sima"):
        attack = get_attack(name)
        want = attack.score(target, eager.images, eager.ids, batch_size=4, progress=False)
        for batch_size, workers in ((4, 0), (7, 2)):
            got = attack.score(target, lazy, batch_size=batch_size, num_workers=workers, progress=False)
            assert torch.equal(got, want), (name, batch_size, workers)
    assert lazy.is_lazy


def test_split_manifest_and_random_access_stay_lazy(tmp_path):
    root = _write_folder(tmp_path / "imgs", 30, 8)
    images = folder_source(root)
    split = make_split(images, 10, 10, seed=3, name="s")
    eager = ImageSet(images.images, images.ids, source=images.source)  # .images materialises a copy
    assert images.is_lazy is False and split.members.is_lazy  # the subsets were taken before
    reference = make_split(eager, 10, 10, seed=3, name="s")
    assert split.to_manifest() == reference.to_manifest()
    split.save(tmp_path / "split.json")
    loaded = MembershipSplit.load(tmp_path / "split.json")
    assert loaded.fingerprint() == reference.fingerprint()
    assert loaded.members.is_lazy and loaded.nonmembers.is_lazy  # load verified the hashes by streaming

    # random access by id (caches, re-scoring): a lazy subset, decoded only when read
    pick = [loaded.nonmembers.ids[4], loaded.members.ids[0]]
    sub = loaded.members.concat(loaded.nonmembers).select_ids(pick)
    assert sub.is_lazy and sub.ids == pick
    assert torch.equal(sub.images, eager.select_ids(pick).images)
    assert sub.hashes == eager.select_ids(pick).hashes

    # a known-membership split from two folders keeps both sides lazy
    other = _write_folder(tmp_path / "other", 5, 8, seed=1)
    known = split_from_sources(f"folder:{root}", f"folder:{other}", n_members=5)
    assert known.members.is_lazy and known.nonmembers.is_lazy
    assert known.nonmembers.hashes == folder_source(other).hashes


class _Counting(Attack):
    """Scores the mean pixel and records how many images had been decoded, beyond those already
    scored, each time a batch arrives."""

    name = "counting"
    access = Access.GRAY_BOX
    ahead: list[int] = []

    @property
    def nfe(self) -> int:
        return 0

    def score_batch(self, target, x0, noise, cond=None):
        _Counting.ahead.append(_LOADS[0] - _Counting.scored)
        _Counting.scored += x0.shape[0]
        return x0.flatten(1).mean(1)


_LOADS = [0]


def test_scoring_a_folder_decodes_a_batch_at_a_time(tmp_path, monkeypatch):
    root = _write_folder(tmp_path / "imgs", 300, 64)
    images = folder_source(root)
    split = make_split(images, 150, 150, seed=0)
    load = FileImage.load

    def counted(self):
        _LOADS[0] += 1
        return load(self)

    monkeypatch.setattr(FileImage, "load", counted)
    split.validate()
    split.fingerprint()
    assert _LOADS[0] == 0  # validation, overlap-by-hash and the fingerprint decode nothing: hashes are cached
    _Counting.ahead, _Counting.scored = [], 0
    scores = _Counting().score(_tiny_target(64), split.members, batch_size=8, progress=False)
    # In-process decoding (num_workers=0) loads exactly one batch before it is scored, so this is
    # deterministic: a set materialised anywhere on the path would show 150 images decoded ahead.
    assert _Counting.ahead == [8] * 18 + [6] and _LOADS[0] == 150
    assert split.members.is_lazy and images.is_lazy
    want = torch.stack([folder_source(root).select_ids([i]).images.mean() for i in split.members.ids[:3]])
    assert torch.allclose(scores[:3], want)


def test_lazy_errors_are_one_line(tmp_path):
    root = _write_folder(tmp_path / "imgs", 3, 8)
    (root / "0001.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"broken" * 10)
    from genleak.errors import DataError

    with pytest.raises(DataError, match="cannot (open|decode) image '0001.png'"):
        folder_source(root)
    images = folder_source(_write_folder(tmp_path / "ok", 3, 8))
    _write_folder(tmp_path / "ok", 3, 16)  # the files change size after loading
    for workers in (0, 1):  # a worker's error comes back as the same one line, not its traceback
        with pytest.raises(DataError, match="now decodes to torch.uint8") as err:
            next(images.batches(2, num_workers=workers))
        assert "\n" not in str(err.value) and str(err.value).startswith("image 'folder/0000.png'")
