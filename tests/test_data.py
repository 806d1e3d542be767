"""Tests for the data layer (genleak.data) and atomic writes (genleak.io).

All data is built at run time under tmp_path; nothing is downloaded.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from genleak.data import (
    ImageSet,
    MembershipSplit,
    iter_batches,
    load_source,
    make_split,
    sample_hash,
    split_from_index_file,
)
from genleak.data.sources import (
    cifar10_source,
    digits_source,
    folder_source,
    hf_source,
    npz_source,
    parse_source_spec,
)
from genleak.data.transforms import quantize_uint8, resize, to_model_range, to_nchw, to_uint8
from genleak.errors import DataError, GenleakError, SplitError
from genleak.io import atomic_write_bytes, atomic_write_json


# ----------------------------------------------------------------------------- helpers
def rand_uint8(n: int, h: int = 6, w: int = 5, c: int = 3, seed: int = 0) -> np.ndarray:
    """Random NHWC uint8 images that always include the extreme values 0 and 255."""
    arr = np.random.default_rng(seed).integers(0, 256, size=(n, h, w, c), dtype=np.uint8)
    arr[:, 0, 0, 0] = 0
    arr[:, 0, 1, 0] = 255
    return arr


def as_nchw_tensor(arr_nhwc: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr_nhwc.transpose(0, 3, 1, 2)))


def tiny_set(n: int = 6, c: int = 1, hw: int = 4, seed: int = 0, source: dict | None = None) -> ImageSet:
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, c, hw, hw, generator=g) * 2 - 1
    return ImageSet(images=images, ids=[f"t/{i}" for i in range(n)], source=source)


@pytest.fixture(scope="module")
def digits8() -> ImageSet:
    return digits_source()


@pytest.fixture
def png_folder(tmp_path):
    arr = rand_uint8(5, seed=1)
    root = tmp_path / "imgs"
    (root / "sub").mkdir(parents=True)
    names = ["a.png", "b.png", "sub/c.png", "sub/d.png", "e.png"]
    for name, img in zip(names, arr, strict=True):
        Image.fromarray(img, "RGB").save(root / name)
    (root / "a.txt").write_text("a red cat\n")
    (root / "sub" / "metadata.jsonl").write_text(json.dumps({"file_name": "c.png", "text": "a blue dog"}) + "\n")
    # hidden files and non-images are ignored
    (root / ".hidden").mkdir()
    Image.fromarray(arr[0], "RGB").save(root / ".hidden" / "x.png")
    (root / "notes.md").write_text("not an image")
    return root, names, arr


# ----------------------------------------------------------------------------- transforms
def test_to_model_range_and_back_is_exact_for_all_uint8_values():
    values = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    x = to_model_range(values)
    assert x.dtype == torch.float32
    assert float(x.min()) == -1.0 and float(x.max()) == 1.0
    assert torch.equal(to_uint8(x), torch.from_numpy(values))
    # float [0, 1] and float [0, 255] inputs are detected
    assert torch.equal(to_uint8(to_model_range(values.astype(np.float32) / 255)), torch.from_numpy(values))
    assert torch.equal(to_uint8(to_model_range(values.astype(np.float32))), torch.from_numpy(values))
    with pytest.raises(DataError, match="outside the declared range"):
        to_model_range(np.full((1, 1, 2, 2), 2.0, np.float32), (0, 1))
    with pytest.raises(DataError, match="NaN"):
        to_model_range(np.full((1, 1, 2, 2), np.nan, np.float32))


def test_resize_policy():
    x = torch.rand(2, 3, 8, 8) * 2 - 1
    down = resize(x, 4)
    ref = F.interpolate(x, size=(4, 4), mode="bilinear", antialias=True, align_corners=False)
    assert torch.allclose(down, ref.clamp(-1, 1))
    up = resize(x, 16)  # nearest-exact: every source pixel becomes a 2x2 block
    assert torch.equal(up[:, :, ::2, ::2], x) and torch.equal(up[:, :, 1::2, 1::2], x)
    assert resize(x, 8) is not None and torch.equal(resize(x, 8), x)
    q = quantize_uint8(down)
    assert torch.equal(to_model_range(to_uint8(q)), q)


def test_to_nchw_detects_layout_and_refuses_ambiguity():
    assert to_nchw(np.zeros((2, 5, 4, 3))).shape == (2, 3, 5, 4)
    assert to_nchw(np.zeros((2, 3, 5, 4))).shape == (2, 3, 5, 4)
    assert to_nchw(np.zeros((2, 5, 4))).shape == (2, 1, 5, 4)
    with pytest.raises(DataError, match="layout"):
        to_nchw(np.zeros((2, 3, 5, 3)))
    assert to_nchw(np.zeros((2, 3, 5, 3)), "nhwc").shape == (2, 3, 3, 5)


# ----------------------------------------------------------------------------- ImageSet
def test_imageset_indexing_hashes_and_select_ids():
    s = tiny_set(6)
    assert len(s) == 6 and s.shape == (1, 4, 4)
    assert s.hashes[2] == sample_hash(s.images[2])
    assert len(set(s.hashes)) == 6
    one = s[-1]
    assert isinstance(one, ImageSet) and one.ids == ["t/5"] and one.images.shape == (1, 1, 4, 4)
    sub = s[[4, 1]]
    assert sub.ids == ["t/4", "t/1"] and sub.hashes == [s.hashes[4], s.hashes[1]]
    assert torch.equal(sub.images[0], s.images[4])
    assert s[1:3].ids == ["t/1", "t/2"]
    assert s[np.array([True, False] * 3)].ids == ["t/0", "t/2", "t/4"]
    assert s.select_ids(["t/3", "t/0"]).ids == ["t/3", "t/0"]
    with pytest.raises(DataError, match="'nope'"):
        s.select_ids(["t/3", "nope"])
    with pytest.raises(IndexError):
        s[6]
    both = s[:2].concat(s[4:])
    assert both.ids == ["t/0", "t/1", "t/4", "t/5"] and both.hashes == [s.hashes[i] for i in (0, 1, 4, 5)]
    with pytest.raises(DataError, match="unique"):
        s.concat(s[:1])
    # the cache is dropped when the tensor is replaced
    old = s.hashes[0]
    s.images = s.images * 0.5
    assert s.hashes[0] != old


def test_imageset_structure_errors_and_hash_of_negative_zero():
    with pytest.raises(DataError, match="4-D"):
        ImageSet(images=torch.zeros(3, 4, 4), ids=["a", "b", "c"])
    with pytest.raises(DataError, match="2 ids"):
        ImageSet(images=torch.zeros(3, 1, 4, 4), ids=["a", "b"])
    with pytest.raises(DataError, match="appears more than once"):
        ImageSet(images=torch.zeros(2, 1, 4, 4), ids=["a", "a"])
    with pytest.raises(DataError, match="to_model_range"):
        ImageSet(images=torch.zeros(2, 1, 4, 4, dtype=torch.uint8), ids=["a", "b"])
    assert sample_hash(torch.zeros(1, 2, 2)) == sample_hash(-torch.zeros(1, 2, 2))
    assert sample_hash(torch.zeros(1, 2, 2)) != sample_hash(torch.full((1, 2, 2), 1e-7))


def test_validate_names_bad_images():
    s = tiny_set(5)
    s.images[3, 0, 1, 1] = float("nan")
    with pytest.raises(DataError, match=r"1 images contain NaN/inf values, e\.g\. id 't/3'"):
        s.validate()
    r = tiny_set(5)
    r.images[1] += 1.5
    r.images[4] = -1.0 - 1e-5  # within tolerance: fine
    with pytest.raises(DataError, match=r"1 images have values outside \[-1, 1\].*'t/1'"):
        r.validate()
    s = tiny_set(3)
    s.images = s.images[:, 0]  # a 3-D tensor set after construction
    with pytest.raises(DataError, match="4-D"):
        s.validate()


def test_iter_batches_covers_everything_once():
    s = tiny_set(7)
    got = list(iter_batches(s, 3))
    assert [start for start, _ in got] == [0, 3, 6]
    assert [len(b) for _, b in got] == [3, 3, 1]
    assert torch.equal(torch.cat([b for _, b in got]), s.images)
    assert [start for start, _ in iter_batches(s.images, 10)] == [0]
    with pytest.raises(DataError, match="batch size"):
        list(iter_batches(s, 0))


# ----------------------------------------------------------------------------- sources
def test_digits_source(digits8):
    from sklearn.datasets import load_digits

    ref = load_digits()
    assert digits8.images.shape == (1797, 1, 8, 8) and digits8.images.dtype == torch.float32
    assert float(digits8.images.min()) == -1.0 and float(digits8.images.max()) == 1.0
    assert torch.equal(digits8.images[:, 0], torch.from_numpy(ref.images.astype(np.float32)) / 8 - 1)
    assert digits8.labels == [int(t) for t in ref.target] and set(digits8.labels) == set(range(10))
    assert digits8.ids[17] == "digits/17" and digits8.source == {"kind": "digits", "size": 8}
    big = load_source("digits:16")
    assert big.shape == (1, 16, 16) and big.source == {"kind": "digits", "size": 16}
    assert torch.equal(big.images[:, :, ::2, ::2], digits8.images)  # nearest-exact upsampling
    big.validate()


def test_folder_source_roundtrip_captions_and_spec(png_folder):
    root, names, arr = png_folder
    with pytest.warns(UserWarning, match="3 of 5 images have no caption"):
        s = folder_source(root)
    order = sorted(range(5), key=lambda i: names[i])
    assert s.ids == [f"folder/{names[i]}" for i in order]
    assert s.shape == (3, 6, 5)
    assert torch.equal(to_uint8(s.images), as_nchw_tensor(arr[order]))
    caps = dict(zip(s.ids, s.captions, strict=True))
    assert caps["folder/a.png"] == "a red cat" and caps["folder/sub/c.png"] == "a blue dog"
    assert caps["folder/b.png"] == ""
    assert s.source == {"kind": "folder", "path": str(root.resolve()), "size": None, "channels": None}
    with pytest.warns(UserWarning):
        again = load_source(s.source)
    assert again.ids == s.ids and torch.equal(again.images, s.images)
    with pytest.warns(UserWarning):
        small = load_source(f"folder:{root}?size=3&channels=1")
    assert small.shape == (1, 3, 3) and small.source["size"] == 3
    assert torch.equal(small.images, quantize_uint8(small.images))  # snapped to the 8-bit grid


def test_folder_source_modes_sizes_and_errors(tmp_path):
    grey = tmp_path / "grey"
    grey.mkdir()
    g = rand_uint8(2, c=1, seed=3)[..., 0]
    for i, img in enumerate(g):
        Image.fromarray(img, "L").save(grey / f"{i}.png")
    s = folder_source(grey)
    assert s.shape == (1, 6, 5) and s.captions is None
    assert torch.equal(to_uint8(s.images)[:, 0], torch.from_numpy(g))
    s3 = folder_source(grey, channels=3)
    assert s3.shape == (3, 6, 5) and torch.equal(s3.images[:, 0], s3.images[:, 2])

    rgba = tmp_path / "rgba"
    rgba.mkdir()
    a = rand_uint8(1, c=4, seed=4)
    Image.fromarray(a[0], "RGBA").save(rgba / "x.png")
    s = folder_source(rgba)
    assert s.shape == (3, 6, 5)
    assert torch.equal(to_uint8(s.images), as_nchw_tensor(a[..., :3]))

    mixed = tmp_path / "mixed"
    mixed.mkdir()
    Image.fromarray(rand_uint8(1, 6, 6)[0]).save(mixed / "a.png")
    Image.fromarray(rand_uint8(1, 8, 8)[0]).save(mixed / "b.png")
    with pytest.raises(DataError, match=r"different sizes.*'folder:PATH\?size=6'"):
        folder_source(mixed)
    assert folder_source(mixed, size=4).shape == (3, 4, 4)

    with pytest.raises(DataError, match="does not exist"):
        folder_source(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        folder_source(tmp_path / "empty")


def test_npz_source_layouts_ranges_and_extras(tmp_path):
    arr = rand_uint8(4, seed=5)
    expected = as_nchw_tensor(arr)
    np.savez(tmp_path / "nhwc.npz", images=arr, labels=np.arange(4), captions=np.array(list("abcd")))
    s = npz_source(tmp_path / "nhwc.npz")
    assert torch.equal(to_uint8(s.images), expected)
    assert s.labels == [0, 1, 2, 3] and s.captions == ["a", "b", "c", "d"] and s.ids[2] == "npz/2"
    np.savez(tmp_path / "nchw.npz", x=arr.transpose(0, 3, 1, 2), ids=np.array(["p", "q", "r", "s"]))
    s = npz_source(tmp_path / "nchw.npz")
    assert torch.equal(to_uint8(s.images), expected) and s.ids == ["p", "q", "r", "s"]
    np.savez(tmp_path / "float01.npz", arr.astype(np.float32) / 255)
    s = load_source(f"npz:{tmp_path / 'float01.npz'}")
    assert torch.equal(to_uint8(s.images), expected) and s.source["key"] == "arr_0"
    np.savez(tmp_path / "other.npz", pics=arr)
    with pytest.raises(DataError, match="pass key=NAME"):
        npz_source(tmp_path / "other.npz")
    assert torch.equal(to_uint8(npz_source(tmp_path / "other.npz", key="pics").images), expected)
    np.savez(tmp_path / "bad.npz", images=arr, labels=np.arange(3))
    with pytest.raises(DataError, match="'labels' has 3 entries"):
        npz_source(tmp_path / "bad.npz")


def test_imageset_save_npz_roundtrip_keeps_float_bits(tmp_path):
    # an all non-negative [-1, 1] set would be misread as [0, 1] without the stored value_range
    s = ImageSet(
        images=torch.rand(3, 1, 4, 4) * 0.9 + 0.05,
        ids=["x", "y", "z"],
        captions=["1", "2", "3"],
        labels=[7, 8, 9],
    )
    s.save_npz(tmp_path / "s.npz")
    back = npz_source(tmp_path / "s.npz")
    assert torch.equal(back.images, s.images) and back.hashes == s.hashes
    assert back.ids == s.ids and back.captions == s.captions and back.labels == s.labels
    assert [p.name for p in tmp_path.iterdir()] == ["s.npz"]


def test_hf_source_roundtrip(tmp_path):
    import datasets

    arr = rand_uint8(3, seed=6)
    ds = datasets.Dataset.from_dict(
        {"image": [Image.fromarray(a) for a in arr], "text": ["one", "two", "three"], "label": [2, 0, 1]}
    )
    ds.save_to_disk(str(tmp_path / "ds"))
    s = hf_source(tmp_path / "ds", caption_column="text", label_column="label")
    assert s.ids == ["hf/0", "hf/1", "hf/2"] and s.captions == ["one", "two", "three"] and s.labels == [2, 0, 1]
    assert torch.equal(to_uint8(s.images), as_nchw_tensor(arr))
    again = load_source(s.source)
    assert torch.equal(again.images, s.images) and again.captions == s.captions
    with pytest.raises(DataError, match="no caption column 'caption'"):
        hf_source(tmp_path / "ds", caption_column="caption")

    datasets.DatasetDict({"train": ds, "test": ds.select([0])}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="pass split=NAME"):
        hf_source(tmp_path / "dd")
    t = load_source(f"hf:{tmp_path / 'dd'}?split=test")
    assert len(t) == 1 and torch.equal(t.images, s.images[:1])


def _write_cifar(root, n_per_batch: int = 3, seed: int = 7) -> np.ndarray:
    """A CIFAR-10-style python batch folder with small random batches; returns all train rows."""
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    rows = []
    for b in range(1, 6):
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        rows.append(data)
        batch = {b"batch_label": b"x", b"data": data, b"labels": [(b + i) % 10 for i in range(n_per_batch)]}
        with open(root / f"data_batch_{b}", "wb") as f:
            pickle.dump(batch, f, protocol=2)
    test = {b"data": rng.integers(0, 256, size=(2, 3072), dtype=np.uint8), b"labels": [0, 1]}
    with open(root / "test_batch", "wb") as f:
        pickle.dump(test, f)
    return np.concatenate(rows)


def test_cifar10_source_global_order_and_pixels(tmp_path):
    rows = _write_cifar(tmp_path / "cifar-10-batches-py")
    s = cifar10_source(tmp_path)  # the parent folder works too
    assert len(s) == 15 and s.shape == (3, 32, 32)
    assert s.ids[0] == "cifar10/train/0" and s.ids[4] == "cifar10/train/4" and s.ids[-1] == "cifar10/train/14"
    assert s.labels[3] == 2  # batch 2, first row
    # row 4 = batch 2, second image; the 3072 bytes are the R plane, then G, then B
    assert torch.equal(to_uint8(s.images[4]), torch.from_numpy(rows[4].reshape(3, 32, 32)))
    assert torch.equal(to_uint8(s.images[4, 1]).flatten(), torch.from_numpy(rows[4][1024:2048]))
    t = load_source({"kind": "cifar10", "path": str(tmp_path / "cifar-10-batches-py"), "part": "test"})
    assert t.ids == ["cifar10/test/0", "cifar10/test/1"]
    os.remove(tmp_path / "cifar-10-batches-py" / "data_batch_3")
    with pytest.raises(DataError, match="missing data_batch_3"):
        cifar10_source(tmp_path)


def test_cifar10_refuses_pickles_that_run_code(tmp_path):
    _write_cifar(tmp_path / "c")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(tmp_path / "c" / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil(), b"labels": []}, f)
    with pytest.raises(DataError, match="refusing to load"):
        cifar10_source(tmp_path / "c", part="test")


def test_load_source_spec_errors():
    with pytest.raises(DataError, match="unknown source kind"):
        load_source({"kind": "imagenet"})
    with pytest.raises(DataError, match="no option 'sise'"):
        load_source({"kind": "digits", "sise": 8})
    with pytest.raises(DataError, match="unknown source"):
        load_source("not-a-kind-or-path")
    assert parse_source_spec("cifar10:/data/c?part=test") == {"kind": "cifar10", "path": "/data/c", "part": "test"}
    assert parse_source_spec("digits") == {"kind": "digits"}


# ----------------------------------------------------------------------------- splits
def test_make_split_deterministic_disjoint_and_sized(digits8):
    a = make_split(digits8, 50, seed=3)
    b = make_split(digits8, 50, seed=3)
    c = make_split(digits8, 50, seed=4)
    assert a.members.ids == b.members.ids and a.nonmembers.ids == b.nonmembers.ids
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()
    assert a.members.ids != c.members.ids
    assert len(a.members) == 50 and len(a.nonmembers) == 50
    assert not set(a.members.ids) & set(a.nonmembers.ids)
    assert not set(a.members.hashes) & set(a.nonmembers.hashes)
    assert a.source == {"kind": "digits", "size": 8} and a.seed == 3
    d = make_split(digits8, 30, 70, seed=0)
    assert (len(d.members), len(d.nonmembers)) == (30, 70)
    with pytest.raises(SplitError, match="not enough images"):
        make_split(digits8, 1000)


def test_make_split_removes_duplicates_first():
    base = tiny_set(4)
    dup = ImageSet(
        images=torch.cat([base.images, base.images, base.images]),
        ids=[f"d/{i}" for i in range(12)],
        source={"kind": "memory"},
    )
    for seed in range(20):  # without dedup most seeds would put a copy on both sides
        s = make_split(dup, 2, seed=seed)
        assert not set(s.members.hashes) & set(s.nonmembers.hashes)
    assert s.metadata["exact_duplicates_removed"] == 8
    with pytest.raises(SplitError, match=r"4 distinct images \(8 exact duplicates removed\)"):
        make_split(dup, 3)


def test_make_split_stratified(digits8):
    s = make_split(digits8, 100, seed=0, stratify=True)
    counts = np.bincount(s.members.labels, minlength=10)
    assert counts.sum() == 100 and counts.min() >= 9 and counts.max() <= 11
    with pytest.raises(SplitError, match="labels"):
        make_split(tiny_set(10), 2, stratify=True)


def test_split_save_load_roundtrip_digits(tmp_path, digits8):
    split = make_split(digits8, 20, 25, seed=1, name="d20")
    split.metadata["note"] = "hello"
    path = tmp_path / "split.json"
    split.save(path)
    manifest = json.loads(path.read_text())
    assert manifest["format"] == "genleak.split" and manifest["version"] == 1
    assert manifest["image_shape"] == [1, 8, 8] and manifest["name"] == "d20"
    assert manifest["members"][0] == {"id": split.members.ids[0], "sha256": split.members.hashes[0]}
    back = MembershipSplit.load(path)
    assert back.members.ids == split.members.ids and back.nonmembers.ids == split.nonmembers.ids
    assert torch.equal(back.members.images, split.members.images)
    assert torch.equal(back.nonmembers.images, split.nonmembers.images)
    assert back.members.labels == split.members.labels
    assert back.seed == 1 and back.metadata == {"note": "hello"}
    assert back.fingerprint() == split.fingerprint()


def test_split_load_from_folder_detects_changed_files(tmp_path, png_folder):
    root, _, _ = png_folder
    with pytest.warns(UserWarning):
        images = folder_source(root)
    split = make_split(images, 2, seed=0)
    path = tmp_path / "s.json"
    split.save(path)
    with pytest.warns(UserWarning):
        back = MembershipSplit.load(path)
    assert torch.equal(back.members.images, split.members.images)
    assert back.members.captions == split.members.captions
    victim = split.members.ids[0].removeprefix("folder/")
    Image.fromarray(np.zeros((6, 5, 3), np.uint8)).save(root / victim)
    with pytest.warns(UserWarning), pytest.raises(SplitError, match=f"source changed.*'folder/{victim}'"):
        MembershipSplit.load(path)


def test_split_with_relative_source_path_moves_with_its_folder(tmp_path):
    src_dir = tmp_path / "a"
    tiny_set(8).save_npz(src_dir / "data.npz")
    split = make_split(npz_source(src_dir / "data.npz"), 3, seed=2)
    assert split.source["path"] == str((src_dir / "data.npz").resolve())
    manifest = split.to_manifest()
    manifest["source"]["path"] = "data.npz"  # relative: resolved against the manifest's folder
    (src_dir / "split.json").write_text(json.dumps(manifest))
    src_dir.rename(tmp_path / "b")
    back = MembershipSplit.load(tmp_path / "b" / "split.json")
    assert back.members.ids == split.members.ids and torch.equal(back.members.images, split.members.images)
    assert load_source(str(tmp_path / "b" / "data.npz")).ids == [f"t/{i}" for i in range(8)]


def test_split_with_cli_style_relative_spec_is_stored_absolute(tmp_path, monkeypatch):
    tiny_set(6).save_npz(tmp_path / "d.npz")
    monkeypatch.chdir(tmp_path)
    spec = parse_source_spec("npz:d.npz")
    split = make_split(load_source(spec), 2, seed=0, source=spec)
    assert split.source["path"] == str((tmp_path / "d.npz").resolve())
    split.save(tmp_path / "runs" / "split.json")  # manifest in another folder than the data
    monkeypatch.chdir(tmp_path / "runs")
    assert MembershipSplit.load("split.json").members.ids == split.members.ids


def test_split_tampered_sha256(tmp_path, digits8):
    path = tmp_path / "s.json"
    make_split(digits8, 5, seed=0).save(path)
    manifest = json.loads(path.read_text())
    manifest["nonmembers"][2]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    bad_id = manifest["nonmembers"][2]["id"]
    with pytest.raises(SplitError, match=rf"source changed since the split was made: id '{bad_id}'"):
        MembershipSplit.load(path)


def test_split_load_bad_files(tmp_path, digits8):
    with pytest.raises(SplitError, match=r"nope\.json' not found"):
        MembershipSplit.load(tmp_path / "nope.json")
    good = make_split(digits8, 3, seed=0).to_manifest()
    for patch, words in (
        ({"format": "other"}, "not a genleak split"),
        ({"version": 2}, "version 2"),
        ({"source": {"kind": "folder", "path": str(tmp_path / "gone")}}, "cannot reload its source"),
    ):
        (tmp_path / "m.json").write_text(json.dumps({**good, **patch}))
        with pytest.raises(SplitError, match=words):
            MembershipSplit.load(tmp_path / "m.json")
    (tmp_path / "m.json").write_text("{not json")
    with pytest.raises(SplitError, match="not valid JSON"):
        MembershipSplit.load(tmp_path / "m.json")
    missing = {**good, "members": [{"id": "digits/99999", "sha256": "0" * 64}]}
    (tmp_path / "m.json").write_text(json.dumps(missing))
    with pytest.raises(SplitError, match="digits/99999"):
        MembershipSplit.load(tmp_path / "m.json")


def test_split_validate_errors(tmp_path):
    s = tiny_set(6, source={"kind": "memory"})
    with pytest.raises(SplitError, match=r"2 samples appear in both members and non-members.*'t/1'"):
        dup = ImageSet(images=s.images[[1, 3]].clone(), ids=["other/1", "other/3"])
        MembershipSplit(members=s[:3].concat(s[3:4]), nonmembers=dup, source={"kind": "memory"}).validate()
    with pytest.raises(SplitError, match="has no members"):
        MembershipSplit(members=s[[]], nonmembers=s[3:], source={}).validate()
    with pytest.raises(SplitError, match="has no non-members"):
        MembershipSplit(members=s[:3], nonmembers=s[[]], source={}).validate()
    other = tiny_set(3, hw=5, seed=1)
    with pytest.raises(SplitError, match=r"shape \(1, 4, 4\).*\(1, 5, 5\)"):
        MembershipSplit(members=s[:3], nonmembers=other, source={}).validate()
    nan = tiny_set(3, seed=2)
    nan.images[1, 0, 0, 0] = float("inf")
    with pytest.raises(DataError, match="non-members: 1 images contain NaN/inf.*'t/1'"):
        MembershipSplit(members=s[3:], nonmembers=nan, source={}).validate()
    big = tiny_set(3, seed=3)
    big.images[0] = 3.0
    with pytest.raises(DataError, match=r"members: 1 images have values outside \[-1, 1\]"):
        MembershipSplit(members=big, nonmembers=s[3:], source={}).validate()
    with pytest.raises(SplitError, match="no reloadable|could not be reloaded"):
        make_split(s, 2).save(tmp_path / "never.json")
    assert not (tmp_path / "never.json").exists()


def test_split_from_index_file(tmp_path, digits8):
    idx = tmp_path / "CIFAR10_train_ratio0.5.npz"
    members, nonmembers = np.array([5, 0, 17, 1796]), np.array([3, 8])
    np.savez(idx, mia_train_idxs=members, mia_eval_idxs=nonmembers, ratio=0.5)
    split = split_from_index_file(digits8, idx, {"kind": "digits", "size": 8})
    assert split.members.ids == [f"digits/{i}" for i in members]
    assert split.nonmembers.ids == ["digits/3", "digits/8"]
    assert torch.equal(split.members.images, digits8.images[members])
    assert split.members.labels == [digits8.labels[i] for i in members]
    assert split.seed is None and len(split.metadata["index_file_sha256"]) == 64
    split.save(tmp_path / "s.json")
    assert MembershipSplit.load(tmp_path / "s.json").members.ids == split.members.ids

    np.savez(idx, mia_train_idxs=np.array([1, 5000]), mia_eval_idxs=nonmembers)
    with pytest.raises(SplitError, match="outside 0..1796"):
        split_from_index_file(digits8, idx, digits8.source)
    np.savez(idx, train=members)
    with pytest.raises(SplitError, match="mia_train_idxs"):
        split_from_index_file(digits8, idx, digits8.source)
    np.savez(idx, mia_train_idxs=np.array([1, 2]), mia_eval_idxs=np.array([2]))
    with pytest.raises(SplitError, match="both members and non-members"):
        split_from_index_file(digits8, idx, digits8.source)


def test_errors_are_genleak_errors():
    assert issubclass(SplitError, GenleakError) and issubclass(DataError, GenleakError)


# ----------------------------------------------------------------------------- atomic writes
def test_atomic_write_json_leaves_no_temp_and_never_clobbers(tmp_path, monkeypatch):
    target = tmp_path / "out" / "x.json"
    atomic_write_json(target, {"a": 1, "b": [1, 2]})
    assert json.loads(target.read_text()) == {"a": 1, "b": [1, 2]}
    assert os.listdir(target.parent) == ["x.json"]
    before = target.read_bytes()

    with pytest.raises(TypeError):
        atomic_write_json(target, {"a": object()})
    with pytest.raises(ValueError):
        atomic_write_json(target, {"a": float("nan")})
    assert target.read_bytes() == before and os.listdir(target.parent) == ["x.json"]
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "out" / "new.json", {1, 2})
    assert not (tmp_path / "out" / "new.json").exists()

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        atomic_write_bytes(target, b"new content")
    assert target.read_bytes() == before and os.listdir(target.parent) == ["x.json"]


def test_split_save_failure_keeps_existing_file(tmp_path, digits8):
    path = tmp_path / "s.json"
    split = make_split(digits8, 4, seed=0)
    split.save(path)
    before = path.read_bytes()
    split.metadata["bad"] = torch.zeros(2)
    with pytest.raises(SplitError, match="not JSON-serialisable"):
        split.save(path)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["s.json"]
