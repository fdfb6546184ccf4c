"""A small sample folder for the demo, benchmarks and tests: notes, code, a PDF, pictures.

Everything is generated here (text written out, pictures drawn with PIL, a PDF written by
hand), so the demo needs nothing but the model.
"""

from __future__ import annotations

import random
from pathlib import Path

TEXTS = {
    "notes/meeting-2024-03-12.md": (
        "# Budget meeting, 12 March\n\n"
        "- Q2 marketing budget approved: 42,000 EUR\n"
        "- Hiring: one backend engineer, one designer\n"
        "- Next review after the product launch in June\n"
    ),
    "notes/recipes/tomato-soup.txt": (
        "Tomato soup for four\n\n"
        "Roast 1 kg of tomatoes with garlic and olive oil, 30 minutes at 200 C.\n"
        "Blend with a litre of vegetable stock, season with salt, pepper and basil.\n"
    ),
    "notes/travel/lisbon.md": (
        "# Lisbon trip\n\n"
        "Flight TP1351 lands 14:05. Hotel near Rossio square, check-in after 15:00.\n"
        "Day 2: tram 28 to Alfama, pasteis de nata in Belem, sunset at the Miradouro.\n"
    ),
    "notes/todo.txt": (
        "- renew passport before the summer\n"
        "- call the plumber about the kitchen leak\n"
        "- invoice INV-2024-0917 is overdue: send a reminder\n"
    ),
    "notes/errors.log": (
        "2024-05-02 10:14:03 ERROR db: connection refused (ECONNREFUSED 127.0.0.1:5432)\n"
        "2024-05-02 10:14:08 WARN retrying in 5 s\n"
        "2024-05-02 10:15:40 ERROR E1042 payment gateway timeout after 30 s\n"
    ),
    "code/fibonacci.py": (
        "def fibonacci(n: int) -> int:\n"
        '    """The n-th Fibonacci number, iteratively."""\n'
        "    a, b = 0, 1\n"
        "    for _ in range(n):\n"
        "        a, b = b, a + b\n"
        "    return a\n"
    ),
    "code/server.js": (
        'const http = require("http");\n\n'
        "// A tiny HTTP server that answers every request with the current time.\n"
        "http.createServer((req, res) => {\n"
        '  res.writeHead(200, { "Content-Type": "text/plain" });\n'
        "  res.end(new Date().toISOString());\n"
        "}).listen(8080);\n"
    ),
    "code/backup.sh": (
        "#!/bin/sh\n"
        "# Nightly backup of the photos folder to the external drive.\n"
        'rsync -a --delete "$HOME/Pictures/" /media/backup/pictures/\n'
    ),
}

PDF_PAGES = [
    (
        "Quarterly report, Q1 2024\n\nRevenue grew 12% to 1.3 million EUR.\n"
        "Operating costs fell thanks to the new warehouse.\n"
        "Outlook: two new markets in the second half of the year.\n"
        "The board approved the budget for the new Porto office.",
        False,
    ),
    ("Appendix: sales by region (chart)", True),
]


def make_pdf(pages: list[tuple[str, bool]]) -> bytes:
    """A minimal PDF: each page shows ``text`` (Helvetica) and, if asked, a filled square."""
    objects: list[bytes] = []
    n_pages = len(pages)
    kids = " ".join(f"{3 + 2 * i} 0 R" for i in range(n_pages))
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {n_pages} >>".encode())
    font_id = 3 + 2 * n_pages
    for i, (text, square) in enumerate(pages):
        content_id = 4 + 2 * i
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 400] /Contents {content_id} 0 R "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> >>".encode()
        )
        ops = []
        y = 370
        for line in text.splitlines():
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"BT /F1 9 Tf 10 {y} Td ({escaped}) Tj ET")
            y -= 12
        if square:
            ops.append("0.1 0.3 0.9 rg 50 50 200 200 re f")
        stream = "\n".join(ops).encode()
        objects.append(b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream")
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    return raw_pdf(objects)


def raw_pdf(objects: list[bytes]) -> bytes:
    """A PDF of the given objects (1 is the catalog), with a correct xref table."""
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1,
        xref,
    )
    return bytes(out)


def _pictures(folder: Path) -> None:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    # a sunset: sky gradient, sun, sea
    img = Image.new("RGB", (480, 320))
    draw = ImageDraw.Draw(img)
    for y in range(200):
        draw.line([(0, y), (480, y)], fill=(255, 120 + y // 3, 60 + y // 4))
    draw.ellipse([190, 120, 290, 220], fill=(255, 220, 80))
    draw.rectangle([0, 200, 480, 320], fill=(20, 60, 120))
    img.save(folder / "sunset.jpg", quality=90)
    # a bar chart
    img = Image.new("RGB", (400, 300), "white")
    draw = ImageDraw.Draw(img)
    rng = random.Random(3)
    for i in range(6):
        h = rng.randint(40, 240)
        draw.rectangle([30 + i * 60, 270 - h, 70 + i * 60, 270], fill=(40, 90, 200))
    draw.line([(20, 270), (390, 270)], fill="black", width=2)
    draw.text((30, 10), "Sales by month", fill="black")
    img.save(folder / "chart.png")
    # a screenshot of a terminal with an error
    img = Image.new("RGB", (520, 200), (30, 30, 30))
    draw = ImageDraw.Draw(img)
    lines = ["$ make deploy", "error: permission denied (publickey)", "fatal: could not read"]
    for i, line in enumerate(lines):
        draw.text((12, 14 + i * 22), line, fill=(230, 230, 230) if i == 0 else (255, 90, 90))
    img.save(folder / "screenshot-terminal.png")
    # a cat, roughly
    img = Image.new("RGB", (300, 300), (200, 230, 200))
    draw = ImageDraw.Draw(img)
    grey = (120, 120, 120)
    draw.ellipse([80, 120, 220, 260], fill=grey)
    draw.ellipse([100, 50, 200, 150], fill=grey)
    draw.polygon([(105, 80), (115, 30), (140, 65)], fill=grey)
    draw.polygon([(195, 80), (185, 30), (160, 65)], fill=grey)
    draw.ellipse([125, 85, 140, 100], fill=(40, 160, 40))
    draw.ellipse([160, 85, 175, 100], fill=(40, 160, 40))
    img.save(folder / "cat.png")


def build_sample(folder: Path) -> Path:
    """Write the sample files under ``folder`` (existing ones are kept) and return it."""
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in TEXTS.items():
        path = folder / rel
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
    pdf = folder / "documents" / "q1-report.pdf"
    if not pdf.exists():
        pdf.parent.mkdir(parents=True, exist_ok=True)
        pdf.write_bytes(make_pdf(PDF_PAGES))
    if not (folder / "pictures" / "cat.png").exists():
        _pictures(folder / "pictures")
    return folder
