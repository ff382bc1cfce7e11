"""Every row of DICOM PS3.15 Table E.1-1 (2024b), Basic Profile column, on pydicom's bundled test
files: each attribute of the table is put into the instance where the file lacks it (with a
value of its VR, and inside a sequence too), the instance is de-identified by ``dicom-basic``, and
each attribute is found removed (X), emptied (Z, X/Z), given a dummy (D, X/D, Z/D, X/Z/D),
given a new UID (U) or kept with its referenced UIDs replaced (X/Z/U*), as its row says."""

from __future__ import annotations

import hashlib
import io
from collections import Counter
from typing import Any

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from node import deid
from node.dicom_e11 import BASIC_PROFILE_ROWS

FILES = ["CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "rtstruct.dcm"]
ORIGINAL_UID = "1.2.826.0.1.3680043.2.1125.99"


def keyed(text: str) -> str:
    return hashlib.sha256(b"test-secret:" + text.encode()).hexdigest()


def sample_value(vr: str) -> Any:
    """A non-empty value of ``vr`` that identifies (the profile must not keep it)."""
    if vr == "SQ":
        item = Dataset()
        item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        item.ReferencedSOPInstanceUID = ORIGINAL_UID
        item.PatientName = "Secret^Name"
        return Sequence([item])
    return {
        "AE": "STATION7",
        "AS": "045Y",
        "CS": "SECRET",
        "DA": "20240102",
        "DT": "20240102030405",
        "TM": "030405",
        "UI": ORIGINAL_UID,
        "UR": "http://example.org/secret",
        "IS": "7",
        "DS": "1.5",
        "AT": 0x00100010,
        "US": 7,
        "SS": 7,
        "UL": 7,
        "SL": 7,
        "UV": 7,
        "SV": 7,
        "FL": 1.5,
        "FD": 1.5,
    }.get(vr, b"\x01\x02" if vr.startswith("O") or vr == "UN" else "Secret Value")


def _vr(tag: int) -> str:
    return dictionary_VR(tag).split(" or ")[0]


def test_the_table_is_every_single_tag_row_of_the_2024b_edition() -> None:
    assert len(BASIC_PROFILE_ROWS) == 617  # 621 rows, four of them ranges
    counts = Counter(action for _, _, action in BASIC_PROFILE_ROWS)
    assert counts == {
        "X": 380,
        "D": 92,
        "U": 54,
        "Z": 42,
        "X/D": 22,
        "X/Z": 11,
        "X/Z/D": 8,
        "Z/D": 6,
        "X/Z/U*": 2,
    }
    assert set(counts) <= set(deid.COMBINED_ACTIONS)


@pytest.mark.parametrize("name", FILES)
def test_every_attribute_of_table_e11_is_handled_as_its_action_says(name: str) -> None:
    original = pydicom.dcmread(get_testdata_file(name), force=True)
    added: list[int] = []
    for tag, _, _ in BASIC_PROFILE_ROWS:
        if tag >> 16 in (0x0000, 0x0002):  # command and file meta groups: not in a data set
            continue
        if tag not in original:
            original.add(DataElement(tag, _vr(tag), sample_value(_vr(tag))))
            added.append(tag)
    # and nested: a table attribute inside a sequence the table does not name
    holder = Dataset()
    holder.PatientName = "Nested^Secret"
    holder.StudyInstanceUID = ORIGINAL_UID
    original.add(DataElement(0x00081250, "SQ", Sequence([holder])))  # Related Series Sequence
    # the range rows: curves, overlays, private attributes (top level and nested)
    original.add(DataElement(0x50000010, "US", 3))
    original.add(DataElement(0x50023000, "OB", b"\x01\x02"))
    original.add(DataElement(0x60003000, "OB", b"\x01\x02"))
    original.add(DataElement(0x60024000, "LT", "overlay comment"))
    original.private_block(0x0009, "SECRET CREATOR", create=True).add_new(0x01, "LO", "secret")
    holder.private_block(0x0011, "NESTED CREATOR", create=True).add_new(0x01, "LO", "x")
    buffer = io.BytesIO()
    original.save_as(buffer)
    source = pydicom.dcmread(io.BytesIO(buffer.getvalue()), force=True)
    assert added, "the sample lacks none of the table's attributes?"

    out = pydicom.dcmread(io.BytesIO(deid.deidentify_dicom(buffer.getvalue(), keyed)), force=True)
    wrong: list[str] = []
    for tag, keyword, action in BASIC_PROFILE_ROWS:
        if tag >> 16 in (0x0000, 0x0002):
            continue
        assert tag in source, keyword
        before = source[tag]
        if action == "X":
            if tag in out:
                wrong.append(f"{keyword} {action}: still present")
            continue
        if tag not in out:
            wrong.append(f"{keyword} {action}: removed")
            continue
        after = out[tag]
        if action in ("Z", "X/Z"):
            if after.value not in ("", None, b"") and len(after.value or []) != 0:
                wrong.append(f"{keyword} {action}: not empty ({after.value!r})")
        elif action == "U" or (after.VR == "UI" and "D" in action):
            values = after.value if after.VM > 1 else [after.value]
            if not all(str(v).startswith("2.25.") for v in values) or after.value == before.value:
                wrong.append(f"{keyword} {action}: UID not replaced ({after.value!r})")
        elif action == "X/Z/U*" or (after.VR == "SQ" and "D" in action):
            for item in after.value:
                for uid_keyword in ("ReferencedSOPInstanceUID", "StudyInstanceUID"):
                    if uid_keyword in item and str(item[uid_keyword].value) == ORIGINAL_UID:
                        wrong.append(f"{keyword} {action}: a referenced UID kept")
                if "PatientName" in item and str(item.PatientName) == "Secret^Name":
                    wrong.append(f"{keyword} {action}: a name kept inside")
        elif "D" in action:
            if after.value in ("", None, b"") or after.value == before.value:
                wrong.append(f"{keyword} {action}: no dummy ({after.value!r})")
        else:  # pragma: no cover
            wrong.append(f"{keyword}: unknown action {action}")
    assert wrong == []
    # nested attributes follow the table too; ranges and private attributes are gone
    [nested] = out[0x00081250].value
    assert str(nested.PatientName) == ""
    assert str(nested.StudyInstanceUID).startswith("2.25.")
    for tag in (0x50000010, 0x50023000, 0x60003000, 0x60024000):
        assert tag not in out
    assert not any(elem.tag.is_private for elem in out.iterall())
    # the UIDs a study shares stay shared; the file meta follows the instance
    if "MediaStorageSOPInstanceUID" in out.file_meta:  # (0002,0003) U: follows the instance
        assert out.file_meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert out.SOPInstanceUID != source.SOPInstanceUID
    assert out.PatientIdentityRemoved == "YES"
    assert out.DeidentificationMethodCodeSequence[0].CodeValue == "113100"
    assert "PixelData" not in source or out.PixelData == source.PixelData
    text = deid.deidentify_dicom(buffer.getvalue(), keyed)
    for secret in (
        b"Secret Value",
        b"Secret^Name",
        b"STATION7",
        b"Nested^Secret",
        ORIGINAL_UID.encode(),
    ):
        assert secret not in text, secret
