"""Decoding images the way a viewer shows them: EXIF orientation, palette, alpha, 16 bits."""
import io

import numpy as np
import pytest
from PIL import Image

from pipeline.prep.images import decode_image


def encode(img: Image.Image, fmt: str = "PNG", **kwargs) -> bytes:
    out = io.BytesIO()
    img.save(out, format=fmt, **kwargs)
    return out.getvalue()


def test_sixteen_bit_images_are_scaled_not_clipped():
    wide = (np.arange(16, dtype=np.uint16).reshape(4, 4) * 4369)  # 0 .. 65535
    got = decode_image(encode(Image.fromarray(wide)), channels=1, height=4, width=4)
    assert got.dtype == np.uint8 and got.shape == (1, 4, 4)
    assert got[0, 0, 0] == 0 and got[0, 3, 3] == 255 and got[0, 1, 3] == round(7 * 4369 / 257)  # Pillow's convert gives 255


def test_palette_rgba_and_grey_alpha_convert_like_pillow():
    rgba = Image.new("RGBA", (3, 2), (10, 200, 30, 0))  # fully transparent: alpha is dropped, colour kept
    assert decode_image(encode(rgba), 3, 2, 3)[:, 0, 0].tolist() == [10, 200, 30]
    palette = Image.fromarray(np.array([[0, 1], [1, 0]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.info["transparency"] = 0
    assert decode_image(encode(palette), 3, 2, 2)[:, 0, 1].tolist() == [0, 0, 255]
    grey_alpha = Image.new("LA", (2, 2), (77, 10))
    assert decode_image(encode(grey_alpha), 1, 2, 2).tolist() == [[[77, 77], [77, 77]]]


def test_exif_orientation_is_applied():
    pixels = np.zeros((2, 4), np.uint8)
    pixels[0, 3] = 255  # top-right corner white, stored landscape
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    stored = encode(Image.fromarray(pixels, "L"), "PNG", exif=exif.tobytes())
    got = decode_image(stored, 1, 4, 2)[0]
    assert got.shape == (4, 2) and got[3, 1] == 255  # displayed portrait: the white corner moved


def test_floating_point_and_garbage_are_refused():
    with pytest.raises(ValueError, match="floating-point image"):
        decode_image(encode(Image.fromarray(np.ones((2, 2), np.float32)), "TIFF"), 1, 2, 2)
    with pytest.raises(OSError):
        decode_image(b"\x89PNG\r\n\x1a\nnot really a png", 1, 2, 2)
