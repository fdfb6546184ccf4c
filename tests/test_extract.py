"""Extraction of every kind from files generated on the fly; the token budget of chunks."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import pytest
from PIL import Image

from launcher.errors import InputError
from launcher.extract import (
    ExtractError,
    Locator,
    estimate_tokens,
    extract,
    html_to_text,
    name_card,
    sniff,
)
from launcher.sample import make_pdf
from launcher.walk import IndexSettings

SMALL = IndexSettings(card_tokens=20, chunk_tokens=60, chunk_overlap=10, max_chunks=200)


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def image_bytes(mode: str, fmt: str, size=(64, 48), color=None, **save) -> bytes:
    img = Image.new(mode, size, color if color is not None else (200, 30, 30))
    buf = io.BytesIO()
    img.save(buf, fmt, **save)
    return buf.getvalue()


def make_zip(path: Path, parts: dict[str, str | bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in parts.items():
            zf.writestr(name, data)
    return path


NS = "http://schemas.openxmlformats.org"
CT = (
    f'<?xml version="1.0"?><Types xmlns="{NS}/package/2006/content-types">'
    '<Override PartName="/x" '
    'ContentType="application/vnd.openxmlformats-officedocument.{}.main+xml"/></Types>'
)
W = f'xmlns:w="{NS}/wordprocessingml/2006/main"'
CORE = (
    f'<cp:coreProperties xmlns:cp="{NS}/package/2006/metadata/core-properties" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>{}</dc:title></cp:coreProperties>'
)


def make_docx(path: Path, paragraphs: list[str], title: str = "Quarterly plan") -> Path:
    body = "".join(f"<w:p><w:r><w:t>{p}</w:t></w:r></w:p>" for p in paragraphs)
    return make_zip(
        path,
        {
            "[Content_Types].xml": CT.format("wordprocessingml.document"),
            "word/document.xml": f"<w:document {W}><w:body>{body}</w:body></w:document>",
            "docProps/core.xml": CORE.format(title),
        },
    )


# --- sniffing ------------------------------------------------------------------------


def test_sniff_by_content(tmp_path: Path) -> None:
    cases = {
        "a.png": image_bytes("RGB", "PNG"),
        "a.jpg": image_bytes("RGB", "JPEG"),
        "a.gif": image_bytes("P", "GIF", color=3),
        "a.webp": image_bytes("RGB", "WEBP"),
        "a.bmp": image_bytes("RGB", "BMP"),
        "a.tif": image_bytes("RGB", "TIFF"),
        "no_extension": image_bytes("RGB", "PNG"),  # content, not the name, decides
        "doc.pdf": make_pdf([("hello", False)]),
        "clip.mp4": b"\x00\x00\x00\x18ftypisom\x00\x00\x02\x00isomiso2" + b"\x00" * 64,
        "clip.mkv": b"\x1a\x45\xdf\xa3" + b"\x00" * 64,
        "clip.avi": b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 64,
        "song.mp3": b"ID3\x03\x00" + b"\x00" * 64,
        "photo.heic": b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\x00" * 64,
        "notes.txt": b"plain words\n",
        "main.py": b"import os\n",
        "script": b"#!/bin/sh\necho hi\n",
        "README.md": b"# Title\n",
        "page.txt": b"<!DOCTYPE html><html><body>x</body></html>",
        "utf16.txt": "caf\u00e9 na\u00efve\n".encode("utf-16"),
        "utf16-nobom.txt": "plain ASCII as UTF-16\n".encode("utf-16-le"),
        "latin1.txt": "Ceci est d\u00e9j\u00e0 un texte fran\u00e7ais.\n".encode("latin-1"),
        "fake.png": b"this is text, not a PNG\n",
        "junk.bin": os.urandom(4096),
        "nul.txt": b"abc\x00def\x00" * 100,
        "empty.txt": b"",
        "archive.zip": b"",  # replaced below by a real non-office zip
    }
    for name, data in cases.items():
        write(tmp_path / name, data)
    make_zip(tmp_path / "archive.zip", {"a.txt": "hi"})
    make_docx(tmp_path / "report.docx", ["x"])
    expected = {
        "a.png": "image", "a.jpg": "image", "a.gif": "image", "a.webp": "image",
        "a.bmp": "image", "a.tif": "image", "no_extension": "image", "doc.pdf": "pdf",
        "clip.mp4": "video", "clip.mkv": "video", "clip.avi": "video", "song.mp3": "audio",
        "photo.heic": "image", "notes.txt": "text", "main.py": "code", "script": "code",
        "README.md": "markdown", "page.txt": "html", "utf16.txt": "text",
        "utf16-nobom.txt": "text", "latin1.txt": "text", "fake.png": "text", "junk.bin": None,
        "nul.txt": None, "empty.txt": "text", "archive.zip": None, "report.docx": "office",
    }  # fmt: skip
    got = {name: sniff(tmp_path / name) for name in expected}
    assert got == expected


def test_sniff_unreadable_file_is_typed(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="file vanished"):
        sniff(tmp_path / "gone.txt")


# --- text ----------------------------------------------------------------------------


def test_short_text_is_all_card(tmp_path: Path) -> None:
    p = write(tmp_path / "todo.txt", b"buy milk\ncall mum\n")
    x = extract(p, "text", SMALL)
    assert x.chunks == []
    assert x.card.role == "card" and x.card.image is None
    lines = x.card.text.splitlines()
    assert lines[0] == "todo.txt" and lines[2] == "Type: text file"
    assert "buy milk\ncall mum" in x.card.text
    assert x.card.preview == "buy milk call mum"


def test_long_text_chunks_with_overlap_and_line_ranges(tmp_path: Path) -> None:
    lines = [f"line {i:03d} " + "word " * 8 for i in range(1, 201)]
    p = write(tmp_path / "long.md", "\n".join(lines).encode())
    x = extract(p, "markdown", SMALL, estimate_tokens)
    assert x.kind == "markdown" and not x.truncated
    assert x.card.text.count("line ") >= 1 and "Type: Markdown document" in x.card.text
    assert len(x.chunks) > 5
    for chunk in x.chunks:
        assert chunk.role == "chunk"
        assert estimate_tokens(chunk.text) <= SMALL.chunk_tokens + 4
        loc = chunk.locator
        assert chunk.text.startswith(f"long.md (lines {loc.line_start}–{loc.line_end})\n")
        body = chunk.text.split("\n", 1)[1].splitlines()
        assert body[0].startswith(f"line {loc.line_start:03d}")
        assert body[-1].startswith(f"line {loc.line_end:03d}")
    # Every line is in some chunk; consecutive chunks overlap by a line or more.
    covered = set()
    for a, b in zip(x.chunks, x.chunks[1:], strict=False):
        assert b.locator.line_start <= a.locator.line_end
        assert b.locator.line_start > a.locator.line_start
    for c in x.chunks:
        covered.update(range(c.locator.line_start, c.locator.line_end + 1))
    assert covered == set(range(1, 201))


def test_one_huge_line_is_split(tmp_path: Path) -> None:
    p = write(tmp_path / "min.js", ("var a=1; " * 2000).encode())
    x = extract(p, "code", SMALL)
    assert len(x.chunks) > 10
    assert all(estimate_tokens(c.text) <= SMALL.chunk_tokens + 8 for c in x.chunks)
    assert all(c.locator == Locator(line_start=1, line_end=1) for c in x.chunks)


def test_max_chunks_truncates_and_counts_lazily(tmp_path: Path) -> None:
    p = write(tmp_path / "big.txt", ("some words here\n" * 50_000).encode())
    calls = 0

    def count(text: str) -> int:
        nonlocal calls
        calls += 1
        return estimate_tokens(text)

    settings = IndexSettings(card_tokens=20, chunk_tokens=60, chunk_overlap=10, max_chunks=3)
    x = extract(p, "text", settings, count)
    assert len(x.chunks) == 3 and x.truncated
    assert calls < 200  # only the lines that were needed were measured


def test_text_encodings(tmp_path: Path) -> None:
    text = "Grüße, café, naïve – ça va?"
    for name, data in {
        "utf8bom.txt": b"\xef\xbb\xbf" + text.encode(),
        "utf16.txt": text.encode("utf-16"),
        "utf16be.txt": b"\xfe\xff" + text.encode("utf-16-be"),
        "utf32.txt": text.encode("utf-32"),
    }.items():
        x = extract(write(tmp_path / name, data), "text")
        assert x.card.text.endswith(text), name
    cyrillic = "Привет, это проверка кодировки windows-1251, всё хорошо. " * 4
    x = extract(write(tmp_path / "ru.txt", cyrillic.encode("cp1251")), "text")
    assert "Привет" in x.card.text


def test_binary_and_nul_bytes_are_typed_errors(tmp_path: Path) -> None:
    junk = write(tmp_path / "junk.txt", os.urandom(5000))
    with pytest.raises(ExtractError, match="binary"):
        extract(junk, "text")
    with pytest.raises(ExtractError, match="binary") as info:
        extract(junk, None)
    assert isinstance(info.value, InputError)
    with pytest.raises(ExtractError, match="binary"):
        extract(write(tmp_path / "nul.txt", b"ab\x00cd" * 50), "text")


def test_empty_file_is_a_name_card(tmp_path: Path) -> None:
    x = extract(write(tmp_path / "empty.py", b""), "code")
    assert x.chunks == [] and x.card.text.splitlines()[0] == "empty.py"
    assert "Type: empty file" in x.card.text


def test_non_utf8_name_gives_tokenizable_text(tmp_path: Path) -> None:
    raw = os.path.join(os.fsencode(tmp_path), b"r\xe9sum\xe9.txt")
    with open(raw, "wb") as f:
        f.write(b"experience")
    path = os.fsdecode(raw)
    x = extract(path, sniff(path))
    x.card.text.encode("utf-8")  # no lone surrogates left
    assert x.card.text.startswith("r\ufffdsum\ufffd.txt")


def test_missing_file_is_typed(tmp_path: Path) -> None:
    with pytest.raises(ExtractError, match="vanished"):
        extract(tmp_path / "nope.txt", "text")


# --- HTML ----------------------------------------------------------------------------


def test_html_meta_charset_title_and_visible_text(tmp_path: Path) -> None:
    html = (
        '<html><head><meta charset="windows-1251"><title>Отчёт  за год</title>'
        "<style>body{color:red}</style><script>var secret = 1;</script>"
        "<body><h1>Итоги</h1><p>Продажи выросли&nbsp;на 5%.</p><ul><li>один<li>два</ul>"
    )
    p = write(tmp_path / "report.html", html.encode("cp1251"))
    assert sniff(p) == "html"
    x = extract(p, "html", SMALL)
    assert x.title == "Отчёт за год"
    assert "Title: Отчёт за год" in x.card.text
    assert "Итоги\nПродажи выросли на 5%.\nодин\nдва" in x.card.text
    assert "secret" not in x.card.text and "color" not in x.card.text


def test_html_to_text_without_head_end_tag() -> None:
    text, title = html_to_text("<html><head><title>T</title><body><p>Body text</p>")
    assert text == "Body text" and title == "T"


# --- images --------------------------------------------------------------------------


def test_rgba_png_is_flattened_on_white(tmp_path: Path) -> None:
    img = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    img.paste((255, 0, 0, 255), (0, 0, 20, 30))
    img.save(tmp_path / "logo.png")
    x = extract(tmp_path / "logo.png", "image")
    assert x.chunks == []
    assert x.card.image.mode == "RGB" and x.card.image.size == (40, 30)
    assert x.card.image.getpixel((30, 10)) == (255, 255, 255)
    assert x.card.image.getpixel((5, 10)) == (255, 0, 0)
    # the card is the picture alone (an indexed image must find itself); the label previews
    assert x.card.text is None and x.card.preview == "image (PNG, 40×30)"
    assert x.card.to_input().images == (x.card.image,)


def test_gif_first_frame_and_formats(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in ((0, 0, 255), (0, 255, 0))]
    frames[0].save(tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    x = extract(tmp_path / "anim.gif", "image")
    r, g, b = x.card.image.getpixel((5, 5))
    assert b > 200 and g < 50
    for fmt, ext in (("WEBP", "webp"), ("BMP", "bmp"), ("TIFF", "tif"), ("JPEG", "jpg")):
        p = write(tmp_path / f"a.{ext}", image_bytes("RGB", fmt))
        assert extract(p, "image").card.image.size == (64, 48)


def test_large_image_is_downscaled(tmp_path: Path) -> None:
    p = write(tmp_path / "big.jpg", image_bytes("RGB", "JPEG", size=(3000, 1000)))
    x = extract(p, "image", IndexSettings(image_max_side=600))
    assert max(x.card.image.size) == 600
    assert "3000×1000" in x.card.preview  # the preview tells the original size


def test_exif_orientation_and_date(tmp_path: Path) -> None:
    img = Image.new("RGB", (60, 20), (10, 200, 10))
    exif = Image.Exif()
    exif[274] = 6  # rotated: must be shown upright (20×60)
    exif[306] = "2019:07:14 10:00:00"
    img.save(tmp_path / "photo.jpg", exif=exif)
    x = extract(tmp_path / "photo.jpg", "image")
    assert x.card.image.size == (20, 60)
    assert "taken 2019-07-14" in x.card.preview


def test_truncated_and_fake_images_are_typed_errors(tmp_path: Path) -> None:
    data = image_bytes("RGB", "JPEG", size=(256, 256), quality=95)
    truncated = write(tmp_path / "cut.jpg", data[: len(data) // 2])
    with pytest.raises(ExtractError, match="truncated image"):
        extract(truncated, "image")
    png = image_bytes("RGB", "PNG", size=(256, 256))
    with pytest.raises(ExtractError, match="truncated image|corrupt image"):
        extract(write(tmp_path / "cut.png", png[: len(png) // 2]), "image")
    fake = write(tmp_path / "fake.png", b"just some text\n" * 10)
    assert sniff(fake) == "text"
    with pytest.raises(ExtractError, match="not a readable image"):
        extract(fake, "image")


def test_image_pixel_limit(tmp_path: Path) -> None:
    p = write(tmp_path / "wide.png", image_bytes("L", "PNG", size=(2000, 2000), color=0))
    with pytest.raises(ExtractError, match="image too large"):
        extract(p, "image", IndexSettings(max_image_pixels=1_000_000))


def test_heic_without_pillow_heif_says_what_to_install(tmp_path: Path) -> None:
    pytest.importorskip  # noqa: B018 - keep pytest import used when the module exists
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        pass
    else:
        pytest.skip("pillow-heif is installed")
    p = write(tmp_path / "p.heic", b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + b"\0" * 99)
    with pytest.raises(ExtractError, match="install pillow-heif"):
        extract(p, "image")


# --- PDF -----------------------------------------------------------------------------


def test_pdf_text_pages_and_image_pages(tmp_path: Path) -> None:
    words = "\n".join(f"Budget line {i} for the quarterly review of expenses" for i in range(25))
    pdf = make_pdf(
        [
            (words, False),
            ("Figure 1", True),
            (words.replace("Budget", "Travel"), False),
            ("", False),
        ]
    )
    p = write(tmp_path / "report.pdf", pdf)
    assert sniff(p) == "pdf"
    x = extract(p, "pdf", IndexSettings(card_tokens=40, chunk_tokens=200, chunk_overlap=20))
    assert x.pages == 4
    assert "Type: PDF document, 4 pages" in x.card.text
    assert "Budget line 0" in x.card.text
    text_chunks = [c for c in x.chunks if c.image is None]
    image_chunks = [c for c in x.chunks if c.image is not None]
    # Page 2 has little text: it is rendered; page 4 is blank: nothing to embed.
    assert [c.locator.page for c in image_chunks] == [2]
    img = image_chunks[0].image
    assert max(img.size) == 1024 and img.mode == "RGB"
    assert image_chunks[0].text == "report.pdf (page 2)\nFigure 1"
    assert {c.locator.page for c in text_chunks} >= {1, 3}
    assert any("Travel line 24" in c.text for c in text_chunks)
    pages = [c.locator.page for c in x.chunks]
    assert pages == sorted(pages)
    assert all(c.text.startswith("report.pdf (page") for c in x.chunks)


def test_scanned_pdf_card_is_the_first_page_image(tmp_path: Path) -> None:
    p = write(tmp_path / "scan.pdf", make_pdf([("", True), ("", True)]))
    x = extract(p, "pdf", IndexSettings(pdf_render_px=300))
    assert x.card.image is not None and max(x.card.image.size) == 300
    assert [c.locator.page for c in x.chunks] == [2]


def test_corrupt_pdf_is_typed(tmp_path: Path) -> None:
    p = write(tmp_path / "bad.pdf", b"%PDF-1.4\n" + os.urandom(300))
    assert sniff(p) == "pdf"
    with pytest.raises(ExtractError, match="corrupt PDF"):
        extract(p, "pdf")


# --- office --------------------------------------------------------------------------


def test_docx(tmp_path: Path) -> None:
    paras = [f"Paragraph {i} about the migration of servers" for i in range(30)]
    p = make_docx(tmp_path / "plan.docx", paras)
    assert sniff(p) == "office"
    x = extract(p, "office", SMALL)
    assert x.title == "Quarterly plan"
    assert "Type: Word document" in x.card.text and "Title: Quarterly plan" in x.card.text
    assert "Paragraph 0 about" in x.card.text
    assert any("Paragraph 29" in c.text for c in x.chunks)


def test_pptx_slides_are_pages(tmp_path: Path) -> None:
    A = 'xmlns:a="http://schemas.openxmlformats.org/drawingml/2006/main"'
    slide = "<p:sld {} xmlns:p='p'><a:p><a:r><a:t>{}</a:t></a:r></a:p></p:sld>"
    parts = {"[Content_Types].xml": CT.format("presentationml.presentation")}
    for i in (1, 2, 10):  # numeric, not string, order
        parts[f"ppt/slides/slide{i}.xml"] = slide.format(A, f"Slide {i} says " + "hello " * 30)
    x = extract(make_zip(tmp_path / "deck.pptx", parts), "office", SMALL)
    assert "Type: presentation" in x.card.text
    assert [c.locator.page for c in x.chunks][-1] == 10
    assert x.pages == 3


def test_xlsx_shared_strings_and_sheet_names(tmp_path: Path) -> None:
    S = 'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"'
    R = 'xmlns:r="http://schemas.openxmlformats.org/officeDocument/2006/relationships"'
    rels = f'<Relationships xmlns="{NS}/package/2006/relationships">'
    rels += '<Relationship Id="rId1" Target="worksheets/sheet1.xml"/></Relationships>'
    rows = (
        '<row r="1"><c t="s"><v>0</v></c><c><v>1200</v></c></row>'
        '<row r="2"><c t="s"><v>1</v></c><c t="inlineStr"><is><t>n/a</t></is></c></row>'
    )
    parts = {
        "[Content_Types].xml": CT.format("spreadsheetml.sheet"),
        "xl/workbook.xml": f'<workbook {S} {R}><sheets><sheet name="Costs" sheetId="1" '
        'r:id="rId1"/></sheets></workbook>',
        "xl/_rels/workbook.xml.rels": rels,
        "xl/sharedStrings.xml": f"<sst {S}><si><t>Rent</t></si><si><t>Power</t></si></sst>",
        "xl/worksheets/sheet1.xml": f"<worksheet {S}><sheetData>{rows}</sheetData></worksheet>",
    }
    x = extract(make_zip(tmp_path / "costs.xlsx", parts), "office")
    assert "Type: spreadsheet" in x.card.text
    assert "Rent\t1200\nPower\tn/a" in x.card.text


def test_odt(tmp_path: Path) -> None:
    T = 'xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"'
    content = (
        f'<office:document-content xmlns:office="o" {T}><office:body><text:h>Heading</text:h>'
        '<text:p>two<text:s text:c="2"/>spaces<text:tab/>tab</text:p>'
        "</office:body></office:document-content>"
    )
    p = make_zip(
        tmp_path / "letter.odt",
        {"mimetype": "application/vnd.oasis.opendocument.text", "content.xml": content},
    )
    assert sniff(p) == "office"
    x = extract(p, "office")
    assert "Heading\ntwo  spaces\ttab" in x.card.text


def test_corrupt_office_files_are_typed(tmp_path: Path) -> None:
    missing = make_zip(
        tmp_path / "a.docx", {"[Content_Types].xml": CT.format("wordprocessingml.document")}
    )
    with pytest.raises(ExtractError, match="corrupt office document"):
        extract(missing, "office")
    bad_xml = make_zip(
        tmp_path / "b.docx",
        {
            "[Content_Types].xml": CT.format("wordprocessingml.document"),
            "word/document.xml": "<w:document",
        },
    )
    with pytest.raises(ExtractError, match="bad XML"):
        extract(bad_xml, "office")
    bomb = make_zip(
        tmp_path / "c.docx",
        {
            "[Content_Types].xml": CT.format("wordprocessingml.document"),
            "word/document.xml": '<!DOCTYPE d [<!ENTITY a "aaaa">]><d>&a;</d>',
        },
    )
    with pytest.raises(ExtractError, match="entities"):
        extract(bomb, "office")
    with pytest.raises(ExtractError, match="bad zip"):
        extract(write(tmp_path / "d.docx", b"PK\x03\x04" + os.urandom(100)), "office")


# --- media ---------------------------------------------------------------------------


def test_video_and_audio_are_name_cards(tmp_path: Path) -> None:
    p = write(tmp_path / "holiday.mp4", b"\x00\x00\x00\x18ftypisom" + os.urandom(1000))
    x = extract(p, sniff(p), IndexSettings(video_frames=0))  # frames: see the video tests
    assert x.kind == "video" and x.chunks == []
    assert x.card.text.splitlines()[0] == "holiday.mp4"
    assert "Type: video (MP4)" in x.card.text and x.card.image is None


def test_name_card_for_failed_files(tmp_path: Path) -> None:
    x = name_card(tmp_path / "broken.jpg", "image")
    assert x.card.text.splitlines()[0] == "broken.jpg" and x.chunks == []
    assert name_card(tmp_path / "blob", None).card.text.endswith("Type: file")


def test_locator_labels_and_json() -> None:
    assert Locator(page=3).label() == "page 3"
    assert Locator(page=3, page_end=4).label() == "pages 3–4"
    assert Locator(line_start=10, line_end=42).label() == "lines 10–42"
    assert Locator(section="Costs", line_start=2, line_end=9).label() == "Costs, rows 2–9"
    loc = Locator(page=2, line_start=5, line_end=5)
    assert Locator.from_json(loc.to_json()) == loc


def _write_video(path: Path, seconds: int = 3, fps: int = 10) -> None:
    av = pytest.importorskip("av")
    import numpy as np

    out = av.open(str(path), "w")
    stream = out.add_stream("mpeg4", rate=fps)
    stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
    for i in range(seconds * fps):
        arr = np.zeros((120, 160, 3), np.uint8)
        arr[:, :, (i // fps) % 3] = 220  # red, then green, then blue: one colour a second
        for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
            out.mux(packet)
    for packet in stream.encode():
        out.mux(packet)
    out.close()


def test_video_frames_become_pictures(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_video(path)
    x = extract(path, sniff(path), IndexSettings(video_frames=3))
    assert x.kind == "video"
    frames = [x.card, *x.chunks]
    assert len(frames) == 3 and all(p.image is not None for p in frames)
    assert x.card.preview.startswith("video (0:03")
    # evenly spread: the three frames are the red, green and blue seconds
    colours = sorted(max(range(3), key=lambda c: p.image.getpixel((80, 60))[c]) for p in frames)
    assert colours == [0, 1, 2]
    assert {p.locator.section for p in x.chunks} == {"at 0:00", "at 0:02"}


def test_broken_video_is_typed(tmp_path: Path) -> None:
    pytest.importorskip("av")
    path = tmp_path / "broken.mp4"
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42" + os.urandom(500))
    with pytest.raises(ExtractError, match="video"):
        extract(path, "video")


def test_video_name_only_when_frames_are_off(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    _write_video(path, seconds=1)
    x = extract(path, "video", IndexSettings(video_frames=0))
    assert x.card.image is None and x.chunks == []
