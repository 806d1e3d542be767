"""Known-membership splits (issue 14 §1): members from one source, non-members from another,
the ``list:FILE`` source, and subsampling with the seed recorded."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from genleak.data import MembershipSplit, load_source, split_from_sources
from genleak.data.transforms import to_uint8
from genleak.errors import DataError, SplitError


def _pixels(n: int, seed: int, hw: int = 8, c: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, hw, hw, c), dtype=np.uint8)


def _folder(root, arr: np.ndarray, names: list[str] | None = None):
    root.mkdir(parents=True, exist_ok=True)
    names = names or [f"{i}.png" for i in range(len(arr))]
    for name, img in zip(names, arr, strict=True):
        Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(root / name)
    return root


def _nchw(arr: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def test_folders_same_file_names_roundtrip_and_tamper(tmp_path):
    m_arr, n_arr = _pixels(4, 1), _pixels(3, 2)
    m, n = _folder(tmp_path / "m", m_arr), _folder(tmp_path / "n", n_arr)  # both have 0.png..2.png
    split = split_from_sources(f"folder:{m}", f"folder:{n}", name="known")
    assert split.members.ids == [f"members/folder/{i}.png" for i in range(4)]
    assert split.nonmembers.ids == [f"nonmembers/folder/{i}.png" for i in range(3)]
    assert torch.equal(to_uint8(split.members.images), _nchw(m_arr))
    assert torch.equal(to_uint8(split.nonmembers.images), _nchw(n_arr))
    assert split.source == {"kind": "known", "members": {"kind": "folder", "path": str(m), "size": None, "channels": None},
                            "nonmembers": {"kind": "folder", "path": str(n), "size": None, "channels": None}}
    assert split.seed is None and split.metadata == {}
    split.save(tmp_path / "split.json")
    again = MembershipSplit.load(tmp_path / "split.json")
    assert again.fingerprint() == split.fingerprint()
    assert torch.equal(again.nonmembers.images, split.nonmembers.images)

    Image.fromarray(_pixels(1, 9)[0]).save(n / "1.png")
    with pytest.raises(SplitError, match=r"'nonmembers/folder/1.png' has different pixels"):
        MembershipSplit.load(tmp_path / "split.json")


def test_overlap_sizes_and_channels_are_refused(tmp_path):
    m_arr = _pixels(3, 1)
    m = _folder(tmp_path / "m", m_arr)
    n = _folder(tmp_path / "n", np.concatenate([_pixels(2, 2), m_arr[1:2]]), ["x.png", "y.png", "copy.png"])
    with pytest.raises(SplitError, match=r"^split 'split': 1 samples appear in both members and non-members "
                                         r"\(same sha256\), e.g. id 'members/folder/1.png'; remove them"):
        split_from_sources(f"folder:{m}", f"folder:{n}")

    big = _folder(tmp_path / "big", _pixels(2, 3, hw=16))
    with pytest.raises(SplitError, match=r"members have shape \(3, 8, 8\) but non-members \(3, 16, 16\).*\?size=N"):
        split_from_sources(f"folder:{m}", f"folder:{big}")
    assert split_from_sources(f"folder:{m}", f"folder:{big}?size=8").nonmembers.shape == (3, 8, 8)

    grey = _folder(tmp_path / "grey", _pixels(2, 4, c=1))
    with pytest.raises(SplitError, match=r"\(3, 8, 8\) but non-members \(1, 8, 8\).*channels=3"):
        split_from_sources(f"folder:{m}", f"folder:{grey}")
    assert split_from_sources(f"folder:{m}", f"folder:{grey}?channels=3").nonmembers.shape == (3, 8, 8)


def test_subsampling_is_seeded_recorded_and_reloads(tmp_path):
    m, n = _folder(tmp_path / "m", _pixels(4, 1)), _folder(tmp_path / "n", _pixels(10, 2))
    a = split_from_sources(f"folder:{m}", f"folder:{n}", n_nonmembers=3, seed=5)
    b = split_from_sources(f"folder:{m}", f"folder:{n}", n_members=2, n_nonmembers=3, seed=5)
    assert len(a.members) == 4 and len(a.nonmembers) == 3 and a.seed == 5
    assert a.metadata == {"subsampled": {"nonmembers": {"from": 10, "kept": 3}}}
    # each side has its own stream: subsampling the members does not change the non-members drawn
    assert a.nonmembers.ids == b.nonmembers.ids and len(b.members) == 2
    assert a.nonmembers.ids == sorted(a.nonmembers.ids, key=lambda i: int(i.split("/")[-1][:-4]))  # source order
    draws = {tuple(split_from_sources(f"folder:{m}", f"folder:{n}", n_nonmembers=3, seed=s).nonmembers.ids)
             for s in range(6)}
    assert len(draws) > 1
    a.save(tmp_path / "a.json")
    manifest = json.loads((tmp_path / "a.json").read_text())
    assert manifest["seed"] == 5 and len(manifest["nonmembers"]) == 3
    assert MembershipSplit.load(tmp_path / "a.json").nonmembers.ids == a.nonmembers.ids
    with pytest.raises(SplitError, match="11 nonmembers asked for, but the nonmembers source has 10 images"):
        split_from_sources(f"folder:{m}", f"folder:{n}", n_nonmembers=11)


def test_list_source_text_and_csv(tmp_path):
    arr = _pixels(6, 3)
    pool = _folder(tmp_path / "pool", arr, [f"img{i}.png" for i in range(6)])
    (pool / "img4.txt").write_text("a caption\n")
    (tmp_path / "members.txt").write_text("# trained on\nimg3.png\n\nimg0.png\nfolder/img4.png\n")
    (tmp_path / "held.csv").write_text("path,note\nimg1.png,x\nimg5.png,y\n")
    with pytest.warns(UserWarning, match="2 of 3 images have no caption"):
        members = load_source(f"list:{tmp_path / 'members.txt'}?root={pool}")
    assert members.ids == ["folder/img3.png", "folder/img0.png", "folder/img4.png"]  # the list's order
    assert torch.equal(to_uint8(members.images), _nchw(arr[[3, 0, 4]]))
    assert members.captions == ["", "", "a caption"]
    split = split_from_sources(f"list:{tmp_path / 'members.txt'}?root={pool}", f"list:{tmp_path / 'held.csv'}?root={pool}")
    assert split.nonmembers.ids == ["nonmembers/folder/img1.png", "nonmembers/folder/img5.png"]
    assert split.nonmembers.captions == ["", ""]  # one side captioned: the other gets ""
    split.save(tmp_path / "s.json")
    assert MembershipSplit.load(tmp_path / "s.json").fingerprint() == split.fingerprint()

    (tmp_path / "both.txt").write_text("img0.png\n")
    with pytest.raises(SplitError, match="appear in both members and non-members"):
        split_from_sources(f"list:{tmp_path / 'members.txt'}?root={pool}", f"list:{tmp_path / 'both.txt'}?root={pool}")
    for text, message in (("img9.png\nimg0.png\n", r"1 entries are not files under root .*'img9.png'"),
                          ("../m.txt\n", "are outside root"), ("img0.png\nimg0.png\n", "'img0.png' is listed more than once"),
                          ("# nothing\n", "the list is empty")):
        (tmp_path / "bad.txt").write_text(text)
        with pytest.raises(DataError, match=message):
            load_source(f"list:{tmp_path / 'bad.txt'}?root={pool}")


def test_hf_dataset_sides_and_list_of_rows(tmp_path):
    import datasets

    arr = _pixels(5, 4)
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(a) for a in arr], "text": [f"t{i}" for i in range(5)]})
    ds.save_to_disk(str(tmp_path / "ds"))
    held = _folder(tmp_path / "held", _pixels(3, 5))
    split = split_from_sources(f"hf:{tmp_path / 'ds'}?caption_column=text", f"folder:{held}", n_members=4, seed=1)
    assert len(split.members) == 4 and split.members.ids[0].startswith("members/hf/")
    rows = [int(i.rsplit("/", 1)[1]) for i in split.members.ids]
    assert torch.equal(to_uint8(split.members.images), _nchw(arr[rows]))
    assert split.members.captions == [f"t{r}" for r in rows]
    split.save(tmp_path / "s.json")
    assert MembershipSplit.load(tmp_path / "s.json").members.ids == split.members.ids

    (tmp_path / "rows.txt").write_text("4\nhf/1\n")
    picked = load_source(f"list:{tmp_path / 'rows.txt'}?root={tmp_path / 'ds'}")
    assert picked.ids == ["hf/4", "hf/1"] and torch.equal(to_uint8(picked.images), _nchw(arr[[4, 1]]))


def test_cli_data_split_from_member_and_nonmember_sources(tmp_path, cli):
    m, n = _folder(tmp_path / "m", _pixels(4, 1)), _folder(tmp_path / "n", _pixels(6, 2))
    out = tmp_path / "split.json"
    code, stdout, err = cli("data", "split", "--member-source", f"folder:{m}", "--nonmember-source", f"folder:{n}",
                            "--nonmembers", "3", "--seed", "2", "--name", "known", "--out", str(out))
    assert code == 0, err
    assert stdout.strip() == f"wrote {out}: 4 members, 3 non-members, shape (3, 8, 8)"
    split = MembershipSplit.load(out)
    expected = split_from_sources(f"folder:{m}", f"folder:{n}", n_nonmembers=3, seed=2, name="known")
    assert split.fingerprint() == expected.fingerprint() and split.seed == 2
    code, _, err = cli("data", "split", "--member-source", f"folder:{m}", "--out", str(out))
    assert code == 2 and err.strip() == "error: give --member-source and --nonmember-source together, without --index-file"
    code, _, err = cli("data", "split", "--member-source", f"folder:{m}", "--nonmember-source", f"folder:{m}",
                       "--out", str(out))
    assert code == 2 and "4 samples appear in both members and non-members" in err and err.count("\n") == 1
