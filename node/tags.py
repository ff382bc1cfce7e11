"""Smart tags: what a QR label encodes and the RFID EPC of a folder or box (GS1 GIAI-96).

QR: the URL of the public verification page plus the first 16 hex digits of the archive's
content commitment, ``{public_url}/v/{archive id}?c={prefix}``; its ``tag_hash`` is over those
exact bytes (docs/proof-format.md §4.3).

RFID: GIAI-96 per the GS1 EPC Tag Data Standard (§14.5.5 of TDS 2.x): 96 bits = header
``0x34`` (8) · filter (3) · partition (3) · company prefix (M bits) · individual asset reference
(N bits), big-endian, with M/N from the partition table (``GIAI96_PARTITIONS``). The asset
reference of GIAI-96 is an integer (no leading zeros in its URI form). ``tag_hash`` for
``rfid_epc`` is over the 12 binary EPC bytes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from node.errors import InputError

GIAI96_HEADER: Final = 0x34
GIAI96_PARTITIONS: Final[dict[int, tuple[int, int, int, int]]] = {
    # partition: (company prefix bits, digits, asset reference bits, max digits)
    0: (40, 12, 42, 13),
    1: (37, 11, 45, 14),
    2: (34, 10, 48, 15),
    3: (30, 9, 52, 16),
    4: (27, 8, 55, 17),
    5: (24, 7, 58, 18),
    6: (20, 6, 62, 19),
}
_TAG_URI: Final = re.compile(r"^urn:epc:tag:giai-96:([0-7])\.([0-9]{6,12})\.(0|[1-9][0-9]*)$")


@dataclass(frozen=True)
class Giai96:
    """A GIAI-96 EPC: filter value, company prefix (digits, leading zeros kept), asset number."""

    filter: int
    company_prefix: str
    asset_reference: int

    def __post_init__(self) -> None:
        if not 0 <= self.filter <= 7:
            raise InputError("GIAI-96 filter must be 0-7", code="invalid_epc")
        if not re.fullmatch(r"[0-9]{6,12}", self.company_prefix):
            raise InputError("a GS1 company prefix has 6 to 12 digits", code="invalid_epc")
        _, _, bits, digits = GIAI96_PARTITIONS[self.partition]
        if not 0 <= self.asset_reference < 1 << bits or len(str(self.asset_reference)) > digits:
            raise InputError(
                f"asset reference does not fit GIAI-96 with a {len(self.company_prefix)}-digit "
                "company prefix",
                code="invalid_epc",
            )

    @property
    def partition(self) -> int:
        return 12 - len(self.company_prefix)

    def encode(self) -> bytes:
        """The 12 bytes of the EPC memory bank's EPC (after the PC word)."""
        prefix_bits, _, asset_bits, _ = GIAI96_PARTITIONS[self.partition]
        value = GIAI96_HEADER
        value = value << 3 | self.filter
        value = value << 3 | self.partition
        value = value << prefix_bits | int(self.company_prefix)
        value = value << asset_bits | self.asset_reference
        return value.to_bytes(12, "big")

    @property
    def tag_uri(self) -> str:
        return f"urn:epc:tag:giai-96:{self.filter}.{self.company_prefix}.{self.asset_reference}"

    @property
    def pure_identity_uri(self) -> str:
        return f"urn:epc:id:giai:{self.company_prefix}.{self.asset_reference}"

    @classmethod
    def decode(cls, epc: bytes) -> Giai96:
        """Parse 12 EPC bytes; ``InputError`` (``invalid_epc``) for anything not GIAI-96."""
        if len(epc) != 12 or epc[0] != GIAI96_HEADER:
            raise InputError("not a GIAI-96 EPC (12 bytes, header 0x34)", code="invalid_epc")
        value = int.from_bytes(epc, "big")
        filter_value = value >> 85 & 0b111
        partition = value >> 82 & 0b111
        if partition not in GIAI96_PARTITIONS:
            raise InputError(f"GIAI-96 partition {partition} is reserved", code="invalid_epc")
        prefix_bits, digits, asset_bits, _ = GIAI96_PARTITIONS[partition]
        prefix = value >> asset_bits & ((1 << prefix_bits) - 1)
        asset = value & ((1 << asset_bits) - 1)
        if prefix >= 10**digits:
            raise InputError("company prefix out of range for its partition", code="invalid_epc")
        return cls(filter_value, str(prefix).zfill(digits), asset)

    @classmethod
    def from_tag_uri(cls, uri: str) -> Giai96:
        match = _TAG_URI.fullmatch(uri)
        if match is None:
            raise InputError("not a GIAI-96 tag URI", code="invalid_epc")
        return cls(int(match[1]), match[2], int(match[3]))


def qr_payload(public_url: str, archive_id: str, commitment_prefix: str | None) -> str:
    """The text a QR label encodes: the public page URL, plus ``?c=`` the commitment prefix."""
    url = f"{public_url.rstrip('/')}/v/{archive_id}"
    return f"{url}?c={commitment_prefix}" if commitment_prefix else url


# -- printable labels ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Label:
    """What one printed label shows: the QR payload and the human-readable archive id."""

    archive_id: str
    payload: str


def _qr(payload: str) -> Any:
    import segno

    return segno.make(payload, error="m", micro=False)


def label_svg(label: Label) -> bytes:
    """An SVG label: the QR symbol and, under it, the archive id in text."""
    import io

    qr = _qr(label.payload)
    scale, border = 4, 4
    width, height = qr.symbol_size(scale=scale, border=border)
    buffer = io.BytesIO()
    qr.save(buffer, kind="svg", scale=scale, border=border, xmldecl=False, svgns=True)
    inner = buffer.getvalue().decode("utf-8")
    text_height = 28
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height + text_height}"'
        f' viewBox="0 0 {width} {height + text_height}">'
        f'<rect width="100%" height="100%" fill="#fff"/>{inner}'
        f'<text x="{width // 2}" y="{height + 16}" font-family="monospace" font-size="11"'
        f' text-anchor="middle">{label.archive_id}</text></svg>'
    ).encode()


def label_png(label: Label) -> bytes:
    """A PNG label: the QR symbol and the archive id under it."""
    import io

    from PIL import Image, ImageDraw

    qr = _qr(label.payload)
    buffer = io.BytesIO()
    qr.save(buffer, kind="png", scale=6, border=4)
    symbol = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    canvas = Image.new("RGB", (symbol.width, symbol.height + 24), "white")
    canvas.paste(symbol, (0, 0))
    draw = ImageDraw.Draw(canvas)
    text_width = draw.textlength(label.archive_id)
    draw.text(((symbol.width - text_width) / 2, symbol.height + 4), label.archive_id, fill="black")
    out = io.BytesIO()
    canvas.save(out, format="PNG")
    return out.getvalue()


def label_sheet_pdf(labels: Sequence[Label]) -> bytes:
    """An A4 sheet (or several) of labels, 3 by 7, each the PNG label at 60 mm wide."""
    import io

    from fpdf import FPDF

    pdf = FPDF(format="A4", unit="mm")
    pdf.set_auto_page_break(False)
    columns, rows, width, height = 3, 5, 60.0, 55.0
    for position, label in enumerate(labels):
        if position % (columns * rows) == 0:
            pdf.add_page()
        slot = position % (columns * rows)
        x = 10 + (slot % columns) * (width + 5)
        y = 10 + (slot // columns) * height
        pdf.image(io.BytesIO(label_png(label)), x=x, y=y, h=height - 5)
    return bytes(pdf.output())
