"""Real training data: ImageFolder / ImageNet layout, CSV / JSONL lists, webdataset shards; bad images counted."""
from __future__ import annotations

import io
import json
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from simclip_bench.data.files import image_folder, list_file
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.data.sources import open_train_data
from simclip_bench.data.webdataset_source import WebDatasetSource
from simclip_bench.errors import UserError
from simclip_bench.train.batches import MapBatches, Split, StreamBatches
from simclip_bench.train.config import TrainConfig
from simclip_bench.train.loop import train

TINY_PREPROCESS = {"size": (32, 32), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic",
                   "resize_mode": "shortest"}
CLASSES = ("circle", "square")


def _png(value: int, size=(40, 48)) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.full((*size, 3), value, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture()
def transform():
    return pixel_transform(TINY_PREPROCESS)


@pytest.fixture()
def folder(tmp_path):
    """ImageNet layout: train/<class>/*.png with one corrupt file, and a val split."""
    for split in ("train", "val"):
        for c, name in enumerate(CLASSES):
            d = tmp_path / "imnet" / split / name
            d.mkdir(parents=True)
            for i in range(6 if split == "train" else 2):
                (d / f"{i}.png").write_bytes(_png(40 * c + i))
    (tmp_path / "imnet" / "train" / "square" / "broken.jpg").write_bytes(b"not an image")
    (tmp_path / "imnet" / "train" / "square" / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path / "imnet"


def test_image_folder_uses_the_train_split_and_sorted_folder_names_as_classes(folder, transform):
    ds = image_folder(folder, transform)
    assert ds.classnames == CLASSES and len(ds) == 13
    item = ds[0]
    assert item.image.shape == (3, 32, 32) and item.label == 0
    assert 0.0 <= float(item.image.min()) and float(item.image.max()) <= 1.0


def test_model_preprocessing_resizes_and_crops_without_normalising(transform):
    img = Image.fromarray(np.full((40, 80, 3), 255, dtype=np.uint8))
    x = transform(img)
    assert x.shape == (3, 32, 32) and torch.allclose(x, torch.ones_like(x))


def test_unreadable_image_is_reported_not_raised(folder, transform):
    ds = image_folder(folder, transform)
    broken = [ds[i] for i in range(len(ds)) if ds.paths[i].endswith("broken.jpg")][0]
    assert broken.image is None and "broken.jpg" in broken.error


def test_csv_and_jsonl_lists_read_paths_relative_to_the_list_and_name_labels(folder, transform, tmp_path):
    files = sorted((folder / "train").glob("*/*.png"))
    rows = [(f.relative_to(folder).as_posix(), f.parent.name) for f in files]
    (folder / "list.csv").write_text("path,label\n" + "\n".join(f"{p},{lab}" for p, lab in rows) + "\n")
    (folder / "list.jsonl").write_text("\n".join(json.dumps({"path": p, "label": lab}) for p, lab in rows))
    for name in ("list.csv", "list.jsonl"):
        ds = list_file(folder / name, transform)
        assert ds.classnames == CLASSES and len(ds) == 12
        assert ds[0].image is not None and ds[len(ds) - 1].label == 1


def test_list_without_labels_is_unlabelled_and_a_half_labelled_list_is_refused(folder, transform):
    (folder / "plain.jsonl").write_text(json.dumps({"path": "train/circle/0.png"}) + "\n")
    assert list_file(folder / "plain.jsonl", transform).labels == [-1]
    (folder / "half.csv").write_text("path,label\ntrain/circle/0.png,circle\ntrain/circle/1.png,\n")
    with pytest.raises(UserError, match="label all rows or none"):
        list_file(folder / "half.csv", transform)


def _write_shards(tmp_path, n_shards=2, per_shard=5):
    for s in range(n_shards):
        with tarfile.open(tmp_path / f"shard-{s:02d}.tar", "w") as tar:
            for i in range(per_shard):
                key = f"s{s}i{i}"
                for ext, data in (("png", _png(10 * s + i)), ("cls", str(i % 2).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(data)
                    tar.addfile(info, io.BytesIO(data))
    return f"{tmp_path}/shard-{{00..{n_shards - 1:02d}}}.tar"


def test_webdataset_stream_resumes_at_the_saved_position(tmp_path, transform):
    spec = _write_shards(tmp_path)
    src = WebDatasetSource(spec, transform, seed=0)
    split = Split(batch_size=3)
    whole = StreamBatches(src, split)
    batches = [whole.next_step()[0] for _ in range(5)]  # 15 samples: crosses into the second epoch
    assert whole.state()["epoch"] == 1
    part = StreamBatches(src, split)
    part.next_step()
    part.next_step()
    resumed = StreamBatches(src, split, part.state())
    for expected in batches[2:]:
        got = resumed.next_step()[0]
        assert torch.equal(got.x, expected.x) and torch.equal(got.labels, expected.labels)


def test_map_batches_split_over_ranks_cover_the_global_batch_exactly(folder, transform):
    ds = image_folder(folder, transform)
    single = MapBatches(ds, Split(batch_size=4), seed=0, workers=0).sampler
    ranks = [MapBatches(ds, Split(4, 1, 2, r), seed=0, workers=0).sampler for r in range(2)]
    whole = next(iter(single))
    halves = [next(iter(s)) for s in ranks]
    assert halves[0] + halves[1] == whole and len(halves[0]) == 2


def test_training_on_an_image_folder_with_tecoa_counts_the_unreadable_image(folder, tmp_path):
    cfg = TrainConfig(objective="tecoa", data=str(folder), steps=3, batch_size=13, train_size=13, probe_size=4,
                      attack_steps=1, log_every=1, device="cpu", workers=0, out=str(tmp_path / "run"))
    run = train(cfg, log=lambda *_: None)
    last = json.loads((run / "metrics.jsonl").read_text().splitlines()[-1])
    assert last["unreadable_images"] == 3  # one broken file, seen once per step
    assert (run / "encoder.safetensors").is_file()


def test_on_error_fail_makes_an_unreadable_image_fatal(folder, tmp_path):
    cfg = TrainConfig(data=str(folder), steps=1, batch_size=13, probe_size=0, attack_steps=1, device="cpu",
                      workers=0, on_error="fail", out=str(tmp_path / "run"))
    with pytest.raises(UserError, match="broken.jpg"):
        train(cfg, log=lambda *_: None)


@pytest.mark.parametrize("spec, message", [("/no/such/dir", "does not exist"), ("missing.csv", "does not exist"),
                                           ("/no/shards-{0..3}.tar", "shard")])
def test_bad_data_specs_are_refused(spec, message, transform):
    with pytest.raises(UserError, match=message):
        open_train_data(spec, transform, 32)
