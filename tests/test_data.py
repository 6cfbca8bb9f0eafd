"""Tests for neuro.data: sizes, ranges, determinism, disjoint splits, known facts, bad files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from neuro.data import Dataset, Split, data_root, dataset_names, load_dataset
from neuro.data import paths as data_paths
from neuro.data.vowels import load_vowels_with_talkers
from neuro.errors import ConfigError, DataError

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need(sub: str) -> Path:
    if not (SHARED / sub).is_dir():
        pytest.skip(f"{SHARED / sub} is absent (offline data not copied on this machine)")
    return SHARED


def _same(a: Dataset, b: Dataset) -> None:
    for part in ("train", "val", "test"):
        sa, sb = getattr(a, part), getattr(b, part)
        assert torch.equal(sa.x, sb.x) and torch.equal(sa.y, sb.y), part


def _check_basic(d: Dataset) -> None:
    for part in ("train", "val", "test"):
        s = getattr(d, part)
        assert isinstance(s, Split)
        assert s.x.dtype == torch.float32 and s.y.dtype == torch.int64
        assert s.x.shape == (len(s), d.n_features)
        assert torch.isfinite(s.x).all()
        assert 0 <= int(s.y.min()) and int(s.y.max()) < d.n_classes
    assert len(d.class_names) == d.n_classes
    assert int(np.prod(d.feature_shape)) == d.n_features
    assert "\n" not in d.source


def _assert_one_line(exc: pytest.ExceptionInfo, *needles: str) -> None:
    msg = str(exc.value)
    assert "\n" not in msg and msg.strip() == msg and msg, msg
    for n in needles:
        assert n in msg, (n, msg)


def _rows_key(x: torch.Tensor) -> set[bytes]:
    return {r.tobytes() for r in x.numpy()}


# ---------------------------------------------------------------- dispatch and root

def test_names_and_unknown_name():
    assert {"digits", "mnist", "vowels", "vowels_phyll", "yinyang"} <= set(dataset_names())
    with pytest.raises(ConfigError) as e:
        load_dataset("cifar")
    _assert_one_line(e, "cifar", "digits, mnist, mnist_first50k, vowels, vowels4, vowels_phyll, yinyang")


@pytest.mark.parametrize("kw", [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"seed": -1}, {"limit": 0}])
def test_bad_split_args(kw):
    with pytest.raises(ConfigError) as e:
        load_dataset("digits", **kw)
    _assert_one_line(e)


def test_data_root_order(tmp_path, monkeypatch):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    monkeypatch.setenv("NEUROHIL_DATA", str(b))
    assert data_root(a) == a.resolve()  # explicit argument wins
    assert data_root() == b.resolve()  # then the environment
    monkeypatch.delenv("NEUROHIL_DATA")
    monkeypatch.setattr(data_paths, "candidate_roots", lambda: (tmp_path / "nope", a))
    assert data_root() == a.resolve()  # then the first existing candidate
    monkeypatch.setattr(data_paths, "candidate_roots", lambda: (tmp_path / "nope",))
    with pytest.raises(DataError) as e:
        data_root()
    _assert_one_line(e, "NEUROHIL_DATA", "data.root")
    with pytest.raises(DataError) as e:
        data_root(tmp_path / "missing")
    _assert_one_line(e, str(tmp_path / "missing"))


# ---------------------------------------------------------------- digits (always available)

def test_digits_sizes_ranges_determinism():
    d = load_dataset("digits")
    _check_basic(d)
    assert (d.n_features, d.n_classes, d.feature_shape) == (64, 10, (8, 8))
    assert len(d.train) + len(d.val) + len(d.test) == 1797
    assert abs(len(d.test) - 0.2 * 1797) <= 10
    assert abs(len(d.val) - 0.1 * (1797 - len(d.test))) <= 10
    assert float(d.train.x.min()) == 0.0 and float(d.train.x.max()) == 1.0
    assert torch.bincount(d.test.y, minlength=10).min() >= 34  # stratified: ~36 per class
    _same(d, load_dataset("digits"))
    other = load_dataset("digits", seed=1)
    assert not torch.equal(d.test.y, other.test.y)
    # splits are disjoint (compare pixel rows; sklearn digits has no exact duplicates across them)
    tr, va, te = _rows_key(d.train.x), _rows_key(d.val.x), _rows_key(d.test.x)
    assert not (tr & te) and not (tr & va) and not (va & te)
    small = load_dataset("digits", limit=50)
    assert (len(small.train), len(small.val), len(small.test)) == (50, 50, 50)
    assert torch.equal(small.train.x, d.train.x[:50])


# ---------------------------------------------------------------- MNIST (shared files)

def test_mnist_known_facts_and_determinism():
    root = _need("mnist")
    d = load_dataset("mnist", root)
    _check_basic(d)
    assert len(d.train) + len(d.val) == 60000 and len(d.test) == 10000
    assert len(d.val) == 6000
    assert d.feature_shape == (28, 28) and d.n_features == 784
    assert float(d.train.x.min()) == 0.0 and float(d.train.x.max()) == 1.0
    counts = torch.bincount(d.test.y, minlength=10)
    assert int(counts[0]) == 980 and int(counts[1]) == 1135  # published MNIST test facts
    small = load_dataset("mnist", root, limit=200)
    assert torch.equal(small.val.x, d.val.x[:200]) and torch.equal(small.test.y, d.test.y[:200])
    _same(small, load_dataset("mnist", root, limit=200))


def _write_idx(path: Path, magic: int, arr: np.ndarray) -> None:
    header = magic.to_bytes(4, "big") + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + arr.astype(np.uint8).tobytes())


def _fake_mnist(root: Path, n_train: int = 40, n_test: int = 20) -> Path:
    folder = root / "mnist"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{part}-images-idx3-ubyte.gz", 0x803, rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{part}-labels-idx1-ubyte.gz", 0x801, np.arange(n) % 10)
    return folder


def test_mnist_fake_files_load(tmp_path):
    _fake_mnist(tmp_path)
    d = load_dataset("mnist", tmp_path, val_fraction=0.25)
    _check_basic(d)
    assert (len(d.train), len(d.val), len(d.test)) == (30, 10, 20)


def test_mnist_wrong_magic(tmp_path):
    folder = _fake_mnist(tmp_path)
    bad = folder / "train-images-idx3-ubyte.gz"
    _write_idx(bad, 0x801, np.zeros((40, 28, 28)))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    _assert_one_line(e, str(bad), "0x00000801", "0x00000803")


def test_mnist_truncated_gzip(tmp_path):
    folder = _fake_mnist(tmp_path)
    bad = folder / "t10k-images-idx3-ubyte.gz"
    raw = bad.read_bytes()
    bad.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    _assert_one_line(e, str(bad))


def test_mnist_not_gzip_and_short_payload(tmp_path):
    folder = _fake_mnist(tmp_path)
    bad = folder / "train-labels-idx1-ubyte.gz"
    bad.write_bytes(b"this is not gzip at all")
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    _assert_one_line(e, str(bad))
    # valid gzip, header says 40 labels but only 30 bytes follow
    with gzip.open(bad, "wb") as f:
        f.write((0x801).to_bytes(4, "big") + (40).to_bytes(4, "big") + bytes(30))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    _assert_one_line(e, str(bad), "truncated")


def test_mnist_count_mismatch(tmp_path):
    folder = _fake_mnist(tmp_path)
    _write_idx(folder / "train-labels-idx1-ubyte.gz", 0x801, np.zeros(39))
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    _assert_one_line(e, "40 images", "39 labels")


def test_mnist_missing_file(tmp_path):
    folder = _fake_mnist(tmp_path)
    (folder / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError) as e:
        load_dataset("mnist", tmp_path)
    _assert_one_line(e, str(folder / "t10k-labels-idx1-ubyte.gz"), str(tmp_path), "NEUROHIL_DATA", "data.root")


# ---------------------------------------------------------------- Yin-Yang

def test_yinyang_publication_splits():
    root = _need("yin_yang")
    d = load_dataset("yinyang", root)
    _check_basic(d)
    assert (len(d.train), len(d.val), len(d.test)) == (5000, 1000, 1000)
    assert d.class_names == ("yin", "yang", "dot")
    for s in (d.train, d.val, d.test):
        assert float(s.x.min()) >= 0.0 and float(s.x.max()) <= 1.0
        assert torch.allclose(s.x[:, 2:], 1 - s.x[:, :2], atol=1e-6)
    assert torch.bincount(d.train.y).tolist() == [1681, 1702, 1617]
    _same(d, load_dataset("yinyang", root, seed=5, val_fraction=0.3))  # seed/val_fraction ignored
    assert len(load_dataset("yinyang", root, limit=10).val) == 10


def _fake_yinyang(root: Path) -> Path:
    folder = root / "yin_yang"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for part in ("train", "validation", "test"):
        xy = rng.random((12, 2))
        np.save(folder / f"{part}_samples.npy", np.concatenate([xy, 1 - xy], axis=1))
        np.save(folder / f"{part}_labels.npy", np.arange(12) % 3)
    return folder


def test_yinyang_bad_files(tmp_path):
    folder = _fake_yinyang(tmp_path)
    assert len(load_dataset("yinyang", tmp_path).train) == 12
    bad = folder / "validation_samples.npy"
    np.save(bad, np.zeros((12, 3)))
    with pytest.raises(DataError) as e:
        load_dataset("yinyang", tmp_path)
    _assert_one_line(e, str(bad), "(N, 4)")
    bad.write_bytes(b"garbage, not npy")
    with pytest.raises(DataError) as e:
        load_dataset("yinyang", tmp_path)
    _assert_one_line(e, str(bad))
    np.save(bad, np.array([{"a": 1}], dtype=object))  # would need pickle
    with pytest.raises(DataError) as e:
        load_dataset("yinyang", tmp_path)
    _assert_one_line(e, str(bad))
    bad.unlink()
    with pytest.raises(DataError) as e:
        load_dataset("yinyang", tmp_path)
    _assert_one_line(e, str(bad), "NEUROHIL_DATA")


# ---------------------------------------------------------------- vowels

def test_vowels_sizes_talker_split_and_scaling():
    root = _need("hillenbrand_vowels")
    d, talkers = load_vowels_with_talkers(root)
    _check_basic(d)
    assert (d.n_features, d.n_classes) == (4, 12)
    assert d.class_names[0] == "ae" and "uw" in d.class_names
    assert len(d.train) + len(d.val) + len(d.test) == 1668 - 51
    assert "dropped 51 of 1668" in d.source
    tr, va, te = (set(talkers[k]) for k in ("train", "val", "test"))
    assert not (tr & va) and not (tr & te) and not (va & te)
    assert len(tr | va | te) == 139
    assert 0.6 < len(tr) / 139 < 0.8 and 0.1 < len(te) / 139 < 0.2
    assert all(len(talkers[k]) == len(getattr(d, k)) for k in talkers)
    # z-scored with train statistics
    assert torch.allclose(d.train.x.mean(0), torch.zeros(4), atol=1e-4)
    assert torch.allclose(d.train.x.std(0, unbiased=False), torch.ones(4), atol=1e-4)
    _same(d, load_dataset("vowels", root))
    d2, t2 = load_vowels_with_talkers(root, seed=1)
    assert set(t2["test"]) != te
    small, ts = load_vowels_with_talkers(root, limit=30)
    assert len(small.test) == 30 and len(ts["test"]) == 30
    assert torch.equal(small.train.x, d.train.x[:30])


def test_vowels_bad_file(tmp_path):
    folder = tmp_path / "hillenbrand_vowels"
    folder.mkdir()
    path = folder / "vowdata.dat"
    with pytest.raises(DataError) as e:
        load_dataset("vowels", tmp_path)
    _assert_one_line(e, str(path), "NEUROHIL_DATA")
    path.write_text("header line\nm01ae 323 174 663 2012\n")
    with pytest.raises(DataError) as e:
        load_dataset("vowels", tmp_path)
    _assert_one_line(e, str(path), "line 2", "16")


def test_val_fraction_zero_gives_an_empty_validation_split_and_trains():
    """val_fraction = 0: no validation samples (not a crash), every sample in train or test."""
    from neuro.build import build_experiment

    data = load_dataset("digits", val_fraction=0.0, seed=0)
    assert len(data.val) == 0 and tuple(data.val.x.shape) == (0, 64)
    assert len(data.train) + len(data.test) == 1797
    exp = build_experiment({"data": {"dataset": "digits", "val_fraction": 0.0, "limit": 64},
                            "model": {"hidden": [8], "time_steps": 4}, "train": {"epochs": 1, "batch_size": 32}})
    (record,) = exp.trainer(None, progress=False).fit()
    assert "val_accuracy" not in record and record["batches"] == 2


def test_torch_datasets_and_dataloaders_train_like_builtin_data():
    """A torch Dataset/DataLoader is read once into memory: same tensors, and the trainer accepts it directly."""
    import torch

    from neuro.data import from_torch
    from neuro.layers.mlp import MLP
    from neuro.rules.bptt import BPTT
    from neuro.trainer import Trainer

    digits = load_dataset("digits", limit=200)
    tensors = torch.utils.data.TensorDataset(digits.train.x.view(-1, 8, 8), digits.train.y)
    loader = torch.utils.data.DataLoader(tensors, batch_size=33, shuffle=False)
    data = from_torch(loader, test=(digits.test.x, digits.test.y), n_classes=10)
    assert torch.equal(data.train.x, digits.train.x) and torch.equal(data.train.y, digits.train.y)
    assert data.n_features == 64 and len(data.val) == 0 and torch.equal(data.test.y, digits.test.y)
    model = MLP(64, [32], 10)
    trainer = Trainer(model, BPTT(), torch.optim.Adam(model.parameters(), 1e-2), tensors, epochs=2, batch_size=32,
                      progress=False)
    trainer.fit()
    assert trainer.step == 2 * 7  # 200 samples in batches of 32
    with pytest.raises(DataError, match="labels must be class indices"):
        from_torch((torch.rand(4, 3), torch.tensor([0.5, 1.0, 2.0, 0.0])))


def test_vowels_phyll_is_the_authors_task():
    """Women's tokens of 7 vowels with all 12 formant features, balanced to 37 per vowel, 80/20 split by seed."""
    import collections

    root = _need("hillenbrand_vowels")
    ds = load_dataset("vowels_phyll", root, seed=3)
    assert (ds.n_features, ds.n_classes, len(ds.val)) == (12, 7, 0)
    assert ds.class_names == ("ae", "ah", "aw", "er", "ih", "iy", "uw")
    assert (len(ds.train), len(ds.test)) == (207, 52)
    counts = collections.Counter(ds.train.y.tolist()) + collections.Counter(ds.test.y.tolist())
    assert set(counts.values()) == {37}
    assert float(ds.train.x.min()) == 0.0 and float(ds.test.x.min()) > -3
    other = load_dataset("vowels_phyll", root, seed=4)
    assert not torch.equal(other.test.x, ds.test.x)
    assert torch.equal(load_dataset("vowels_phyll", root, seed=3).test.x, ds.test.x)
