"""Images are read as they look, whatever mode PIL opens them in, by every image input of the package.

Each file below is written from an 8-bit RGB picture in another form (16-bit, float, EXIF-rotated,
transparent, ...) together with the 8-bit RGB PNG it must read as; every reader (training files and
shards, ``simclip eval --dataset FOLDER``, CLIP_benchmark folders, captioning/VQA files, ``simclip attack
--image``) must give the same pixels for both, and ``simclip eval`` the same predictions.
"""
from __future__ import annotations

import io
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from _bomb_png import write_bomb_png
from _shapes_folder import write_shapes_folder
from PIL import Image

from simclip_bench.data.catalog import open_source
from simclip_bench.data.classification import image_folder_source
from simclip_bench.data.files import read_image
from simclip_bench.data.image_io import ImageReadError, read_rgb
from simclip_bench.data.preprocess import pixel_transform
from simclip_bench.data.vlm_samples import load_image
from simclip_bench.data.webdataset_source import WebDatasetSource
from simclip_bench.errors import UserError
from simclip_bench.jobs.attack_gallery import load_image_file
from simclip_bench.jobs.zeroshot_eval import EvalRequest, run_eval
from simclip_bench.results.store import read_samples

SIZE = 32
PREPROCESS = {"size": (SIZE, SIZE), "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "interpolation": "bicubic",
              "resize_mode": "shortest"}
EXIF_ORIENTATION = 0x0112


def _picture(height: int = 40, width: int = 56) -> np.ndarray:
    """An 8-bit RGB picture with every channel varying (not square, so a wrong rotation shows)."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([(x * 4) % 256, (y * 6) % 256, (x * y) % 256], axis=-1).astype(np.uint8)


def _gray(rgb: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(rgb).convert("L"))


def _as_rgb(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=-1)


# Each variant writes `rgb` in another form under `stem` and returns (that file, the RGB picture it must read as).
def _png16_gray(rgb, stem):
    gray = _gray(rgb)
    Image.fromarray(gray.astype(np.uint16) * 257).save(stem.with_suffix(".png"))  # mode I;16: 255 -> 65535
    return stem.with_suffix(".png"), _as_rgb(gray)


def _tiff16_big_endian(rgb, stem):
    gray = _gray(rgb)
    Image.frombytes("I;16B", gray.shape[::-1], (gray.astype(">u2") * 257).tobytes()).save(stem.with_suffix(".tif"))
    return stem.with_suffix(".tif"), _as_rgb(gray)


def _pgm16(rgb, stem):
    gray = _gray(rgb)
    Image.fromarray(gray.astype(np.uint16) * 257).save(stem.with_suffix(".pgm"))  # PIL opens it as mode I
    return stem.with_suffix(".pgm"), _as_rgb(gray)


def _tiff_int32(rgb, stem):
    gray = _gray(rgb)
    values = np.rint(gray / 255 * (2**31 - 1)).astype(np.int32)  # signed 32-bit: 2**31 - 1 is white
    Image.fromarray(values).save(stem.with_suffix(".tif"))
    return stem.with_suffix(".tif"), _as_rgb(gray)


def _tiff_float(rgb, stem):
    gray = _gray(rgb)
    Image.fromarray((gray / 255).astype(np.float32)).save(stem.with_suffix(".tif"))  # mode F, one channel
    return stem.with_suffix(".tif"), _as_rgb(gray)


def _jpeg_exif_rotated(rgb, stem):
    """Stored a quarter-turn anticlockwise with orientation 6 ("turn clockwise to view"), as phones do."""
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    Image.fromarray(np.ascontiguousarray(np.rot90(rgb, k=1))).save(stem.with_suffix(".jpg"), exif=exif.tobytes(),
                                                                   quality=95)
    with Image.open(stem.with_suffix(".jpg")) as stored:  # the decoded pixels, turned upright by hand
        upright = np.rot90(np.asarray(stored.convert("RGB")), k=-1)
    return stem.with_suffix(".jpg"), np.ascontiguousarray(upright)


def _png_rgba(rgb, stem):
    """Left half transparent over black: on white it must read white there, not black."""
    rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 255, np.uint8)], axis=-1)
    rgba[:, : rgb.shape[1] // 2] = 0
    Image.fromarray(rgba).save(stem.with_suffix(".png"))
    expected = rgb.copy()
    expected[:, : rgb.shape[1] // 2] = 255
    return stem.with_suffix(".png"), expected


def _png_palette_transparent(rgb, stem):
    """A palette image whose index 0 (black) is transparent."""
    pal = Image.fromarray(rgb).quantize(colors=16)
    indices = np.asarray(pal).copy()
    indices[: rgb.shape[0] // 3] = 0
    palette = pal.getpalette()
    palette[:3] = [0, 0, 0]
    out = Image.fromarray(indices, mode="P")
    out.putpalette(palette)
    out.save(stem.with_suffix(".png"), transparency=0)
    colours = np.array(palette[: 3 * 256] + [0] * (768 - len(palette[: 3 * 256])), np.uint8).reshape(256, 3)
    expected = colours[indices]
    expected[indices == 0] = 255
    return stem.with_suffix(".png"), expected


VARIANTS = {"png16-gray": _png16_gray, "tiff16-big-endian": _tiff16_big_endian, "pgm16": _pgm16,
            "tiff-int32": _tiff_int32, "tiff-float": _tiff_float, "jpeg-exif-rotated": _jpeg_exif_rotated,
            "png-rgba": _png_rgba, "png-palette-transparent": _png_palette_transparent}


def _write_pair(tmp_path: Path, variant: str, rgb: np.ndarray) -> tuple[Path, Path]:
    """(the variant's file, the 8-bit RGB PNG it must read as)."""
    (tmp_path / "variant").mkdir(exist_ok=True)
    (tmp_path / "reference").mkdir(exist_ok=True)
    path, expected = VARIANTS[variant](rgb, tmp_path / "variant" / "x")
    reference = tmp_path / "reference" / "x.png"
    Image.fromarray(expected).save(reference)
    return path, reference


def _eval_folder_reader(path: Path) -> torch.Tensor:
    root = path.parent.parent / f"folder-{path.parent.name}"
    for name in ("a", "b"):
        (root / name).mkdir(parents=True, exist_ok=True)
    (root / "a" / path.name).write_bytes(path.read_bytes())
    Image.new("RGB", (8, 8)).save(root / "b" / "other.png")
    x, _ = image_folder_source(root).load([0], SIZE, pixel_transform(PREPROCESS))
    return x[0]


def _webdataset_reader(path: Path) -> torch.Tensor:
    shard = path.parent / f"{path.stem}-shard.tar"
    with tarfile.open(shard, "w") as tar:
        data = path.read_bytes()
        info = tarfile.TarInfo("sample0.png")  # the key names a PNG; the decoder must go by the bytes
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    source = WebDatasetSource(str(shard), pixel_transform(PREPROCESS))
    return source.decode(next(source.samples(0))).image


READERS = {
    "train-files": lambda p: read_image(p, pixel_transform(PREPROCESS), 0).image,
    "train-webdataset": _webdataset_reader,
    "eval-folder": _eval_folder_reader,
    "vlm-files": lambda p: load_image(p, SIZE),
    "attack-image": lambda p: load_image_file(p, SIZE),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_every_reader_reads_every_mode_as_its_8_bit_rgb_equivalent(tmp_path, variant, reader):
    path, reference = _write_pair(tmp_path, variant, _picture())
    got, want = READERS[reader](path), READERS[reader](reference)
    assert got is not None and want is not None
    assert torch.equal(got, want), f"{variant} via {reader}: max difference {float((got - want).abs().max()):.3f}"


def test_a_clip_benchmark_folder_dataset_reads_16_bit_pngs_faithfully(tmp_path):
    from clip_benchmark.datasets.builder import all_imagenet_wordnet_ids

    root = tmp_path / "imagenet_sketch"
    filler = io.BytesIO()
    Image.new("RGB", (4, 4)).save(filler, format="PNG")
    for wnid in all_imagenet_wordnet_ids:  # the builder wants an image in every class folder
        (root / wnid).mkdir(parents=True)
        (root / wnid / "0.png").write_bytes(filler.getvalue())
    path, reference = _write_pair(tmp_path, "png16-gray", _picture())
    (root / all_imagenet_wordnet_ids[0] / "0.png").write_bytes(path.read_bytes())
    (root / all_imagenet_wordnet_ids[1] / "0.png").write_bytes(reference.read_bytes())
    x, _ = open_source("imagenet_sketch", str(tmp_path / "{dataset}")).load([0, 1], SIZE, pixel_transform(PREPROCESS))
    assert torch.equal(x[0], x[1])


def _variant_folder(reference_root: Path, root: Path, variant: str) -> Path:
    """The ImageFolder ``reference_root`` with every image written as ``variant``; the reference folder gets the
    8-bit RGB equivalents (grey for the single-channel variants) under ``root/reference``."""
    for image in sorted(reference_root.glob("*/*.png")):
        rgb = np.asarray(Image.open(image).convert("RGB"))
        for kind in ("variant", "reference"):
            (root / kind / image.parent.name).mkdir(parents=True, exist_ok=True)
        path, expected = VARIANTS[variant](rgb, root / "variant" / image.parent.name / image.stem)
        Image.fromarray(expected).save(root / "reference" / image.parent.name / f"{image.stem}.png")
    return root


def _predictions(folder: Path, out: Path) -> dict[str, int]:
    run_eval(EvalRequest(models=["tiny-clip"], datasets=[str(folder)], attack="none", n_samples=16, out=out,
                         device="cpu"))
    samples = read_samples(out)
    return {str(Path(s).with_suffix("")): int(p) for s, p in zip(samples["sample_id"], samples["clean_pred"],
                                                                    strict=True)}


@pytest.mark.parametrize("variant", ["png16-gray", "tiff-float", "jpeg-exif-rotated"])
def test_eval_predicts_the_same_for_a_file_and_its_8_bit_rgb_equivalent(tmp_path, variant):
    shapes = write_shapes_folder(tmp_path / "shapes", per_class=2)
    root = _variant_folder(shapes, tmp_path / variant, variant)
    reference = _predictions(root / "reference", tmp_path / "out-reference")
    assert len(reference) == 16 and len(set(reference.values())) > 2  # varied predictions, not one class for all
    assert _predictions(root / "variant", tmp_path / "out-variant") == reference


def test_a_float_image_outside_0_1_is_refused_with_what_and_how_to_fix(tmp_path):
    Image.fromarray(np.full((8, 8), 200.0, np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(ImageReadError, match=r"values in \[200, 200\].*rescale it to \[0, 1\]"):
        read_rgb(tmp_path / "hdr.tif")


def test_float_rounding_above_1_is_white_not_an_error(tmp_path):
    Image.fromarray(np.full((4, 4), 1.0005, np.float32)).save(tmp_path / "white.tif")
    assert np.asarray(read_rgb(tmp_path / "white.tif")).min() == 255


def test_a_float_image_with_nan_is_refused(tmp_path):
    values = np.full((4, 4), 0.5, np.float32)
    values[0, 0] = np.nan
    Image.fromarray(values).save(tmp_path / "nan.tif")
    with pytest.raises(ImageReadError, match="NaN"):
        read_rgb(tmp_path / "nan.tif")


def _float_rgb_tiff(path: Path, rgb: np.ndarray) -> None:
    """A 3-channel float32 TIFF (PIL cannot write one): header, one IFD, the strip."""
    h, w, c = rgb.shape
    data = rgb.astype("<f4").tobytes()
    ifd_at, count = 8, 11
    bits_at = ifd_at + 2 + count * 12 + 4
    formats_at, data_at = bits_at + 2 * c, bits_at + 4 * c
    tags = [(256, 3, 1, w), (257, 3, 1, h), (258, 3, c, bits_at), (259, 3, 1, 1), (262, 3, 1, 2), (273, 4, 1, data_at),
            (277, 3, 1, c), (278, 3, 1, h), (279, 4, 1, len(data)), (284, 3, 1, 1), (339, 3, c, formats_at)]
    out = b"II*\x00" + struct.pack("<IH", ifd_at, count)
    for tag, kind, n, value in tags:
        out += struct.pack("<HHIHH", tag, kind, n, value, 0) if kind == 3 and n == 1 else \
            struct.pack("<HHII", tag, kind, n, value)
    out += struct.pack("<I", 0) + struct.pack(f"<{c}H", *[32] * c) + struct.pack(f"<{c}H", *[3] * c) + data
    path.write_bytes(out)


def test_a_tiff_pillow_cannot_decode_says_so_and_how_to_fix(tmp_path):
    _float_rgb_tiff(tmp_path / "rgb-float.tif", _picture(6, 8) / 255)
    with pytest.raises(ImageReadError, match="TIFF that Pillow cannot decode.*8- or 16-bit"):
        read_rgb(tmp_path / "rgb-float.tif")


def test_eval_skips_and_reports_a_float_image_it_cannot_read_faithfully(tmp_path):
    root = write_shapes_folder(tmp_path / "shapes", per_class=2)
    bad = sorted(root.glob("circle/*.png"))[0]
    bad.unlink()
    Image.fromarray(np.full((40, 40), 255.0, np.float32)).save(bad.with_suffix(".tif"))  # 0..255 in a float file
    result = run_eval(EvalRequest(models=["tiny-clip"], datasets=[str(root)], attack="none", n_samples=16,
                                  out=tmp_path / "out", device="cpu"))
    assert result.rows[0]["n_samples"] == 15
    (line,) = result.unreadable
    assert "circle/0.tif" in line and "rescale it to [0, 1]" in line


def test_attack_image_names_the_file_and_the_fix(tmp_path):
    Image.fromarray(np.full((8, 8), 3.0, np.float32)).save(tmp_path / "hdr.tif")
    with pytest.raises(UserError, match=r"--image .*hdr.tif: a float image .*rescale it to \[0, 1\]"):
        load_image_file(tmp_path / "hdr.tif", SIZE)


def test_cmyk_and_one_bit_images_read_as_pil_converts_them(tmp_path):
    rgb = _picture()
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.tif")
    assert np.array_equal(np.asarray(read_rgb(tmp_path / "cmyk.tif")), rgb)
    Image.fromarray(rgb).convert("1").save(tmp_path / "bits.png")
    assert set(np.unique(np.asarray(read_rgb(tmp_path / "bits.png")))) <= {0, 255}


@pytest.mark.parametrize("side", [10_000, 20_000])  # 100 M pixels: Pillow only warns; 400 M: Pillow refuses
def test_a_decompression_bomb_is_refused_by_every_image_input_without_being_decoded(tmp_path, side):
    bomb = write_bomb_png(tmp_path / "bomb.png", side, side)
    with pytest.raises(ImageReadError, match=rf"decompression bomb \(Image size \({side * side} pixels\)"):
        read_rgb(bomb)
    with pytest.raises(UserError, match=r"bomb.png: refused as a possible decompression bomb"):
        load_image(bomb, SIZE)  # the captioning/VQA files
    with pytest.raises(UserError, match=r"--image .*bomb.png: refused as a possible decompression bomb"):
        load_image_file(bomb, SIZE)  # simclip attack --image
