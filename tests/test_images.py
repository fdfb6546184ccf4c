"""Image preprocessing as the official qwen_vl_utils does it."""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image

from launcher import images
from launcher.errors import ImageError


def official_smart_resize(
    height, width, factor=32, min_pixels=4 * 32 * 32, max_pixels=1800 * 32 * 32
):
    # qwen_vl_utils.vision_process.smart_resize, restated independently
    h_bar = max(factor, round(height / factor) * factor)
    w_bar = max(factor, round(width / factor) * factor)
    if h_bar * w_bar > max_pixels:
        beta = math.sqrt((height * width) / max_pixels)
        h_bar = math.floor(height / beta / factor) * factor
        w_bar = math.floor(width / beta / factor) * factor
    elif h_bar * w_bar < min_pixels:
        beta = math.sqrt(min_pixels / (height * width))
        h_bar = math.ceil(height * beta / factor) * factor
        w_bar = math.ceil(width * beta / factor) * factor
    return h_bar, w_bar


@pytest.mark.parametrize(
    "h,w",
    [
        (48, 48),
        (80, 80),
        (16, 16),
        (1, 100),
        (112, 208),
        (4000, 3000),
        (2000, 31),
        (1080, 1920),
        (33, 47),
    ],
)
def test_smart_resize_matches_official(h, w):
    assert images.smart_resize(h, w) == official_smart_resize(h, w)


def test_round_half_to_even():
    # 48/32 = 1.5 -> 2 (even), 80/32 = 2.5 -> 2 (even): Python's round, not C's
    assert images.smart_resize(48, 80)[0] == 64
    assert images.smart_resize(80, 80) == (64, 64)


def test_bounds():
    h, w = images.smart_resize(5000, 5000)
    assert h * w <= images.MAX_PIXELS and h % 32 == 0 and w % 32 == 0
    h, w = images.smart_resize(10, 10)
    assert h * w >= images.MIN_PIXELS


def test_extreme_aspect_ratio_is_an_image_error():
    with pytest.raises(ImageError, match="aspect ratio"):
        images.smart_resize(10, 3000)


def test_rgba_composited_on_white_and_modes_converted():
    rgba = Image.new("RGBA", (64, 64), (255, 0, 0, 0))  # fully transparent red
    prepared = images.prepare_image(rgba)
    assert prepared.rgb[:3] == b"\xff\xff\xff"
    cmyk = Image.new("CMYK", (64, 64), (0, 0, 0, 0))
    assert len(images.prepare_image(cmyk).rgb) == 64 * 64 * 3
    p = Image.new("P", (64, 64))
    assert images.prepare_image(p).width == 64


def test_resized_with_bicubic_like_official():
    src = Image.effect_noise((100, 70), 40).convert("RGB")
    prepared = images.prepare_image(src)
    h, w = official_smart_resize(70, 100)
    expected = src.resize((w, h), Image.Resampling.BICUBIC).tobytes()
    assert (prepared.width, prepared.height) == (w, h)
    assert prepared.rgb == expected
    assert prepared.tokens == (w // 32) * (h // 32)


def test_path_bytes_and_pil_agree(tmp_path):
    src = Image.effect_noise((90, 60), 30).convert("RGB")
    path = tmp_path / "x.png"
    src.save(path)
    a = images.prepare_image(path)
    b = images.prepare_image(path.read_bytes())
    c = images.prepare_image(src)
    assert a == b == c


def test_exif_orientation_applied(tmp_path):
    src = Image.new("RGB", (96, 64), (10, 20, 30))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees
    path = tmp_path / "rot.jpg"
    src.save(path, exif=exif)
    prepared = images.prepare_image(path)
    assert (prepared.width, prepared.height) == (64, 96)


def test_max_pixels_setting_lowers_size():
    src = Image.new("RGB", (1024, 1024))
    small = images.prepare_image(src, max_pixels=64 * 32 * 32)
    assert small.tokens <= 64


@pytest.mark.parametrize(
    "data,reason",
    [
        (b"not an image at all", "not an image"),
        (b"", "not an image"),
    ],
)
def test_bad_bytes(data, reason):
    with pytest.raises(ImageError, match=reason):
        images.load_image(data)


def test_truncated_image(tmp_path):
    buf = io.BytesIO()
    Image.effect_noise((200, 200), 50).convert("RGB").save(buf, "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        images.load_image(buf.getvalue()[: len(buf.getvalue()) // 2])


def test_missing_file(tmp_path):
    with pytest.raises(ImageError, match="not found"):
        images.load_image(tmp_path / "nope.png")


def test_oversized_image(monkeypatch):
    monkeypatch.setattr(images, "MAX_SOURCE_PIXELS", 100 * 100)
    buf = io.BytesIO()
    Image.new("RGB", (200, 200)).save(buf, "PNG")
    with pytest.raises(ImageError, match="too large"):
        images.load_image(buf.getvalue())
