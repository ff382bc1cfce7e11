#!/usr/bin/env python3
"""Compile contracts/*.sol into anchoring/contracts/ (same as `archivechain contracts compile`).

Usage: .venv/bin/python scripts/compile_contracts.py [--check] [--build-dir DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from archivechain import main

if __name__ == "__main__":
    sys.exit(main(["contracts", "compile", *sys.argv[1:]]))
