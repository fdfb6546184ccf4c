"""Hostile files, written byte by byte in the test (nothing downloaded): each one broke a
run on a real-world corpus once (issue 15)."""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from launcher.sample import make_pdf, raw_pdf


def crop_box_pdf() -> bytes:
    """pdf.js's boundingBox_invalid.pdf in spirit: the crop box lies outside the media box,
    so the page has no area and pypdfium2's render raises "Crop exceeds page dimensions"."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 200 200] /CropBox [500 500 600 600] >>",
        ]
    )


def page_tree_loop_pdf() -> bytes:
    """A page tree whose node lists itself among its kids."""
    return raw_pdf(
        [
            b"<< /Type /Catalog /Pages 2 0 R >>",
            b"<< /Type /Pages /Kids [2 0 R 3 0 R] /Count 2 >>",
            b"<< /Type /Pages /Parent 2 0 R /Kids [2 0 R] /Count 1 >>",
        ]
    )


def blank_pages_pdf(pages: int = 5000) -> bytes:
    """``pages`` empty pages: no text, so each one is a candidate for rendering."""
    kids = " ".join(f"{3 + i} 0 R" for i in range(pages))
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>".encode(),
    ]
    objects += [b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 400] >>"] * pages
    return raw_pdf(objects)


def truncated_pdf() -> bytes:
    data = make_pdf([("A report that was cut short while downloading " * 20, True)] * 3)
    return data[: len(data) // 3]


def _zip(parts: dict[str, bytes | str]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return buf.getvalue()


def odt(paragraph_xml: str) -> bytes:
    text = "urn:oasis:names:tc:opendocument:xmlns:text:1.0"
    office = "urn:oasis:names:tc:opendocument:xmlns:office:1.0"
    content = (
        f'<office:document-content xmlns:office="{office}" xmlns:text="{text}">'
        f"<office:body><office:text>{paragraph_xml}</office:text></office:body>"
        "</office:document-content>"
    )
    return _zip({"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": content})


def odt_space_bomb() -> bytes:
    """A few hundred bytes that ask for 300 million spaces (22 GB of memory once)."""
    return odt('<text:p>before<text:s text:c="300000000"/>after</text:p>')


def docx(paragraphs: list[str]) -> bytes:
    ns = "http://schemas.openxmlformats.org"
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    return _zip(
        {
            "[Content_Types].xml": (
                f'<?xml version="1.0"?><Types xmlns="{ns}/package/2006/content-types">'
                '<Override PartName="/x" ContentType="application/vnd.openxmlformats-'
                'officedocument.wordprocessingml.document.main+xml"/></Types>'
            ),
            "word/document.xml": (
                f'<w:document xmlns:w="{ns}/wordprocessingml/2006/main"><w:body>{body}'
                "</w:body></w:document>"
            ),
        }
    )


def docx_truncated_entry() -> bytes:
    """A DOCX whose document.xml entry claims fewer compressed bytes than it has (its
    central directory says half): the inflater runs out in the middle of the stream."""
    data = bytearray(docx([f"paragraph {i} of a long report" for i in range(400)]))
    name = b"word/document.xml"
    central = data.rfind(b"PK\x01\x02", 0, data.find(name, data.find(b"PK\x01\x02")) + 1)
    (size,) = struct.unpack_from("<I", data, central + 20)
    struct.pack_into("<I", data, central + 20, size // 2)
    return bytes(data)


def tiff_16bit_big_endian() -> bytes:
    """A valid big-endian 16-bit grey TIFF (Pillow mode I;16B), a gradient."""
    values = np.linspace(0, 65535, 64 * 48).reshape(48, 64).astype(">u2")
    im = Image.frombuffer("I;16B", (64, 48), values.tobytes(), "raw", "I;16B", 0, 1)
    buf = io.BytesIO()
    im.save(buf, "TIFF")
    return buf.getvalue()


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_huge_declared_size() -> bytes:
    """A 100-byte PNG whose header says 100,000 x 100,000 pixels."""
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + _png_chunk(b"IEND", b"")
    )


def gif_many_frames(frames: int = 3000) -> bytes:
    images = [Image.new("P", (8, 8), i % 2) for i in range(frames)]
    for im in images:
        im.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    buf = io.BytesIO()
    images[0].save(buf, "GIF", save_all=True, append_images=images[1:], duration=10)
    return buf.getvalue()


def mp4_lying_moov(good_mp4: bytes) -> bytes:
    """A real MP4 whose moov atom lies: its size claims far more than the file holds, and
    the movie header claims a duration of days."""
    data = bytearray(good_mp4)
    moov = data.find(b"moov")
    assert moov > 4, "no moov atom"
    struct.pack_into(">I", data, moov - 4, 0x7FFFFFF0)
    mvhd = data.find(b"mvhd", moov)
    if mvhd > 0 and data[mvhd + 4] == 0:  # version 0: 32-bit timescale, duration
        struct.pack_into(">I", data, mvhd + 20, 0xFFFFFFF0)
    return bytes(data)


def write_mp4(path: Path, frames: int = 20) -> None:
    import av

    out = av.open(str(path), "w", format="mp4")
    stream = out.add_stream("mpeg4", rate=10)
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    for i in range(frames):
        arr = np.full((48, 64, 3), (i * 12) % 256, np.uint8)
        for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()
