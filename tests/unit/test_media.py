"""Images are untrusted input: every bad case is refused with a one-line reason, every good one
becomes upright 8-bit RGB."""

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from assistant.errors import MediaError
from assistant.media import ImageLimits, decode_image, read_image_file


def encode(image: Image.Image, fmt: str = "PNG", **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header declares a huge canvas: a decompression bomb's signature."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")
    )


def assert_one_line(error: MediaError) -> None:
    message = str(error)
    assert message and "\n" not in message and "Traceback" not in message, f"not a one-line reason: {message!r}"


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty"),
        (b"this is not an image at all", "not a supported image"),
        (b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n", "not a supported image"),
        (encode(Image.new("RGB", (64, 64), "red"), "JPEG")[:200], "corrupt or truncated"),
        (encode(Image.new("RGB", (64, 64), "red"), "PNG")[:60], "corrupt"),
    ],
    ids=["empty", "text", "pdf", "truncated-jpeg", "truncated-png"],
)
def test_bad_bytes_are_refused_with_a_reason(data, reason):
    with pytest.raises(MediaError, match=reason) as caught:
        decode_image(data)
    assert_one_line(caught.value)


def test_unsupported_format_is_named():
    icon = encode(Image.new("RGB", (16, 16), "red"), "ICO")
    with pytest.raises(MediaError, match="ICO images are not supported") as caught:
        decode_image(icon)
    assert_one_line(caught.value)


def test_too_many_bytes_is_refused_before_decoding():
    data = encode(Image.new("RGB", (64, 64), "red"))
    with pytest.raises(MediaError, match="over the limit of") as caught:
        decode_image(data, ImageLimits(max_bytes=len(data) - 1))
    assert_one_line(caught.value)


@pytest.mark.parametrize("side", [100_000, 10_000], ids=["10-gigapixels", "100-megapixels"])
def test_decompression_bomb_is_refused_from_its_header(side):
    bomb = png_declaring(side, side)  # a huge canvas in a few dozen bytes
    assert len(bomb) < 200
    with pytest.raises(MediaError, match=r"over the limit of 40.0 megapixels") as caught:
        decode_image(bomb)
    assert_one_line(caught.value)


def test_pixel_limit_is_a_setting():
    data = encode(Image.new("RGB", (100, 100), "red"))
    assert decode_image(data, ImageLimits(max_pixels=10_000)).size == (100, 100)
    with pytest.raises(MediaError, match="megapixels"):
        decode_image(data, ImageLimits(max_pixels=9_999))


def test_exif_rotation_is_applied():
    landscape = Image.new("RGB", (40, 20), "red")
    landscape.paste((0, 0, 255), (0, 0, 10, 20))  # a blue stripe on the left
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: the camera was turned; rotate 90° clockwise to view
    upright = decode_image(encode(landscape, "JPEG", exif=exif.tobytes(), quality=95))
    assert upright.size == (20, 40), f"EXIF orientation ignored: got {upright.size}"
    top_r, top_g, top_b = upright.getpixel((10, 2))
    assert top_b > 200 and top_r < 60, f"the left stripe should now be at the top, got {(top_r, top_g, top_b)}"


def rgba_half_transparent():
    image = Image.new("RGBA", (8, 8), (255, 0, 0, 255))
    image.paste((0, 0, 0, 0), (0, 0, 4, 8))
    return image


def palette_with_transparency():
    image = Image.new("P", (8, 8), 0)
    image.putpalette([0, 0, 0, 0, 255, 0] + [0] * 762)
    image.paste(1, (4, 0, 8, 8))
    image.info["transparency"] = 0
    return image


@pytest.mark.parametrize(
    "make, fmt, left, right",
    [
        (rgba_half_transparent, "PNG", (255, 255, 255), (255, 0, 0)),
        (palette_with_transparency, "PNG", (255, 255, 255), (0, 255, 0)),
        (lambda: Image.new("LA", (8, 8), (100, 255)), "PNG", (100, 100, 100), (100, 100, 100)),
        (lambda: Image.new("L", (8, 8), 77), "PNG", (77, 77, 77), (77, 77, 77)),
        (lambda: Image.new("1", (8, 8), 1), "PNG", (255, 255, 255), (255, 255, 255)),
        (lambda: Image.new("CMYK", (8, 8), (0, 255, 255, 0)), "JPEG", (255, 0, 0), (255, 0, 0)),
        (lambda: Image.fromarray(np.full((8, 8), 32768, np.uint16)), "PNG", (128, 128, 128), (128, 128, 128)),
    ],
    ids=["rgba", "palette-transparent", "grey-alpha", "greyscale", "1-bit", "cmyk", "16-bit"],
)
def test_every_colour_mode_becomes_rgb(make, fmt, left, right):
    image = decode_image(encode(make(), fmt))
    assert image.mode == "RGB"
    for x, expected in ((1, left), (6, right)):
        got = image.getpixel((x, 4))
        assert all(abs(g - e) <= 12 for g, e in zip(got, expected)), f"pixel {x}: expected ~{expected}, got {got}"


def test_animated_gif_gives_its_first_frame():
    frames = [Image.new("RGB", (8, 8), colour) for colour in ("red", "blue")]
    buffer = io.BytesIO()
    frames[0].save(buffer, format="GIF", save_all=True, append_images=frames[1:])
    image = decode_image(buffer.getvalue())
    assert image.mode == "RGB" and image.getpixel((0, 0))[0] > 200


def test_files_name_themselves_in_errors(tmp_path):
    broken = tmp_path / "holiday.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(MediaError, match=r"^holiday.jpg: ") as caught:
        read_image_file(broken)
    assert_one_line(caught.value)
    with pytest.raises(MediaError, match=r"^missing.png: cannot read the file"):
        read_image_file(tmp_path / "missing.png")
    big = tmp_path / "big.png"
    big.write_bytes(encode(Image.new("RGB", (64, 64), "red")))
    with pytest.raises(MediaError, match=r"^big.png: the file is"):
        read_image_file(big, ImageLimits(max_bytes=100))
