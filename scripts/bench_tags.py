"""Smart-tag figures: GIAI-96 encode+decode per second, QR labels (SVG, PNG) per second, and the
time of a PDF sheet of 45 labels. Pure CPU, no node or chain needed.

    .venv/bin/python scripts/bench_tags.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import time

from node.tags import Giai96, Label, label_png, label_sheet_pdf, label_svg


def rate(fn: object, n: int) -> float:
    start = time.perf_counter()
    for i in range(n):
        fn(i)  # type: ignore[operator]
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 2_000 if args.quick else 20_000
    labels = 20 if args.quick else 200
    print(f"machine: {os.cpu_count()} cores; load {os.getloadavg()[0]:.1f}")
    giai = rate(lambda i: Giai96.decode(Giai96(0, "0614141", i).encode()), n)
    print(f"GIAI-96 encode+decode: {giai:,.0f} per second")
    url = "https://hospital.example/v/01HZY3Z4Q8Q1V6S9N0M5K2J3H4?c=4c231fcf9abaa100"
    label = Label("01HZY3Z4Q8Q1V6S9N0M5K2J3H4", url)
    print(f"QR label SVG: {rate(lambda i: label_svg(label), labels):,.0f} per second")
    print(f"QR label PNG: {rate(lambda i: label_png(label), labels):,.0f} per second")
    start = time.perf_counter()
    sheet = label_sheet_pdf([label] * 45)
    print(f"PDF sheet of 45 labels: {time.perf_counter() - start:.2f} s, {len(sheet):,} bytes")


if __name__ == "__main__":
    main()
