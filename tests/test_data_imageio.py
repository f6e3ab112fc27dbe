"""read_image: grayscale conversion rules and errors that name the file."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from fnlab.data.imageio import (
    MAX_PIXELS,
    ImageReadError,
    is_ignored_file,
    is_image_file,
    read_image,
    scale_to_uint8,
    to_grayscale,
)


def test_grayscale_png_roundtrip(tmp_path, image_files):
    arr = image_files.noise(20, 30)
    path = image_files.save(tmp_path / "g.png", arr)
    out = read_image(path)
    assert out.dtype == np.uint8 and out.shape == (20, 30)
    np.testing.assert_array_equal(out, arr)


def test_rgb_becomes_luma(tmp_path):
    arr = np.zeros((4, 4, 3), np.uint8)
    arr[..., 1] = 200  # pure green
    Image.fromarray(arr).save(tmp_path / "rgb.png")
    out = read_image(tmp_path / "rgb.png")
    assert out.shape == (4, 4)
    assert abs(int(out[0, 0]) - round(0.587 * 200)) <= 1


def test_rgba_is_composited_on_black(tmp_path):
    arr = np.full((4, 6, 4), 255, np.uint8)
    arr[:, :3, 3] = 0  # left half fully transparent
    arr[:, 3:, 3] = 128  # right half half transparent
    Image.fromarray(arr, "RGBA").save(tmp_path / "rgba.png")
    out = read_image(tmp_path / "rgba.png")
    assert out.shape == (4, 6)
    assert (out[:, :3] == 0).all()
    assert np.all(np.abs(out[:, 3:].astype(int) - 128) <= 1)


def test_palette_png(tmp_path):
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:4] = (255, 255, 255)
    Image.fromarray(arr).convert("P").save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    out = read_image(tmp_path / "p.png")
    assert out.shape == (8, 8)
    assert (out[:4] == 255).all() and (out[4:] == 0).all()


def test_palette_with_transparency(tmp_path):
    img = Image.new("P", (4, 4), 1)
    img.putpalette([0, 0, 0, 255, 255, 255] + [0] * (256 * 3 - 6))
    img.info["transparency"] = 1
    img.save(tmp_path / "pt.png", transparency=1)
    out = read_image(tmp_path / "pt.png")
    assert (out == 0).all()  # white but transparent -> black


def test_16bit_png_is_scaled_by_its_range(tmp_path):
    arr = np.linspace(1000, 4000, 40 * 30).reshape(40, 30).astype(np.uint16)
    Image.fromarray(arr).save(tmp_path / "a16.png")
    assert Image.open(tmp_path / "a16.png").mode.startswith("I")
    out = read_image(tmp_path / "a16.png")
    assert out.dtype == np.uint8 and out.shape == (40, 30)
    assert out.min() == 0 and out.max() == 255
    assert np.all(np.diff(out.ravel().astype(int)) >= 0)  # monotone mapping


def test_one_bit_image(tmp_path):
    img = Image.new("1", (5, 5), 0)
    img.putpixel((2, 2), 1)
    img.save(tmp_path / "b.png")
    out = read_image(tmp_path / "b.png")
    assert out[2, 2] == 255 and out.sum() == 255


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpeg"
    path.write_bytes(b"")
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert info.value.path == str(path)
    assert "empty file" in info.value.reason
    assert str(path) in str(info.value)


def test_truncated_jpeg(tmp_path, image_files):
    path = image_files.truncated_jpeg(tmp_path / "cut.jpeg")
    with pytest.raises(ImageReadError, match="truncated or corrupt") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_corrupt_bytes_with_image_extension(tmp_path):
    path = tmp_path / "fake.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(ImageReadError) as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_non_image_file(tmp_path):
    path = tmp_path / "notes.jpeg"
    path.write_text("radiology report, not an image")
    with pytest.raises(ImageReadError, match="not a recognised image") as info:
        read_image(path)
    assert str(path) in str(info.value)


def test_missing_file_and_folder(tmp_path):
    with pytest.raises(ImageReadError, match="file not found"):
        read_image(tmp_path / "nope.png")
    with pytest.raises(ImageReadError, match="folder"):
        read_image(tmp_path)


def test_decompression_bomb_limit_parameter(tmp_path, image_files):
    path = image_files.save(tmp_path / "big.png", image_files.noise(100, 100))
    with pytest.raises(ImageReadError, match="decompression bomb") as info:
        read_image(path, max_pixels=1000)
    assert str(path) in str(info.value)
    assert read_image(path, max_pixels=None).shape == (100, 100)


def test_decompression_bomb_sized_header(tmp_path, image_files):
    """A tiny file claiming 50,000 x 50,000 pixels is refused before decoding."""
    path = image_files.bomb_png(tmp_path / "bomb.png")
    assert path.stat().st_size < 2000
    with pytest.raises(ImageReadError, match="decompression bomb") as info:
        read_image(path)
    assert str(path) in str(info.value)
    # Just over our own limit but under PIL's: our check catches it.
    path2 = image_files.bomb_png(tmp_path / "bomb2.png", 10_001, 10_000)
    assert 10_001 * 10_000 > MAX_PIXELS
    with pytest.raises(ImageReadError, match="exceeds the limit"):
        read_image(path2)
    # PIL's global limit is left alone
    assert Image.MAX_IMAGE_PIXELS is not None


def test_on_error_none_returns_none(tmp_path):
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    assert read_image(path, on_error="none") is None
    with pytest.raises(ValueError, match="on_error"):
        read_image(path, on_error="skip")


def test_draft_size_keeps_at_least_requested_side(tmp_path, image_files):
    path = image_files.save(tmp_path / "large.jpeg", image_files.noise(400, 512), "JPEG")
    out = read_image(path, draft_size=64)
    assert min(out.shape) >= 64 and out.shape[0] < 400


def test_error_is_a_value_error_and_picklable():
    import pickle

    err = ImageReadError("/x.png", "broken")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert again.path == "/x.png" and again.reason == "broken"


def test_to_grayscale_arrays():
    assert to_grayscale(np.zeros((3, 4, 1), np.uint8)).shape == (3, 4)
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255
    rgba[..., 3] = 255
    assert (to_grayscale(rgba) == 255).all()
    assert to_grayscale(np.array([[0.0, 0.5, 1.0]])).tolist() == [[0, 128, 255]]
    wide = to_grayscale(np.array([[100, 1100]], np.int32))
    assert wide.tolist() == [[0, 255]]
    with pytest.raises(ValueError, match="shape"):
        to_grayscale(np.zeros((2, 2, 2, 2)))


def test_scale_to_uint8_constant_and_nan():
    assert (scale_to_uint8(np.full((2, 2), 7.0)) == 0).all()
    out = scale_to_uint8(np.array([np.nan, 0.0, 10.0]))
    assert out.tolist() == [0, 0, 255]


def test_file_name_helpers():
    assert is_image_file("a/IM-0001-0001.JPEG")
    assert not is_image_file("a/readme.txt")
    assert is_ignored_file("x/Thumbs.db") and is_ignored_file("x/.hidden.png")
