"""``node.filenames.display_name``: the one file-name rule of every way in."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.filenames import MAX_FILENAME, display_name
from node.models import ArchiveVersion


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("summary.pdf", "summary.pdf"),
        ("C:\\scans\\summary.pdf", "summary.pdf"),
        ("/home/ward/summary.pdf", "summary.pdf"),
        ("出院\x00小结.pdf", "出院小结.pdf"),
        ("  tab\there.txt  ", "tabhere.txt"),
        ("dir/", None),
        ("\x00\x1f\x7f", None),
        ("", None),
        (None, None),
        ("x" * 300, "x" * MAX_FILENAME),
    ],
)
def test_display_name(raw: str | None, shown: str | None) -> None:
    assert display_name(raw) == shown


@settings(deadline=None)  # a stalled example on a loaded host is not a failure (FlakyFailure)
@given(st.text())
def test_a_display_name_fits_its_column_and_holds_no_control_or_separator(raw: str) -> None:
    shown = display_name(raw)
    if shown is None:
        return
    assert 0 < len(shown) <= ArchiveVersion.__table__.c.filename.type.length
    assert not any(ord(c) < 0x20 or ord(c) == 0x7F or c in "/\\" for c in shown)
