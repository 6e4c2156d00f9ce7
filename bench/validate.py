#!/usr/bin/env python3
"""Validation benchmark: every rule over a generated extract (default 100,000 invoices).

Generates the extract once (seeded, 5 % injected defects), then validates it
--repeat times in this process and prints the median wall time, the median
time per rule, and the peak RSS. For scale, the same run also times reading
the extract (ingest), the floor any validation pays. The last line is one
JSON object with every figure.

    .venv/bin/python bench/validate.py [--invoices 100000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from pathlib import Path

from pipeline.ingest import load_extract
from pipeline.sample import generate_extract
from pipeline.settings import Settings
from pipeline.validate import validate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    settings = Settings()
    extract = Path(tempfile.mkdtemp(prefix="bench-validate-")) / "extract"
    generate_extract(extract, args.invoices, seed=2026, defect_rate=0.05)

    ingest_s, validate_s, per_rule = [], [], []
    for _ in range(args.repeat):
        start = time.perf_counter()
        bundle = load_extract(extract)
        ingest_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        result = validate(bundle, settings.seller, settings.validation)
        validate_s.append(time.perf_counter() - start)
        per_rule.append(result.rule_seconds)
        print(f"validate {validate_s[-1]:.2f} s ({len(result.rule_seconds)} rules), "
              f"ingest {ingest_s[-1]:.2f} s", flush=True)

    rule_ms = {code: round(statistics.median(run[code] for run in per_rule) * 1000, 1)
               for code in per_rule[0]}
    slowest = sorted(rule_ms.items(), key=lambda kv: -kv[1])
    for code, ms in slowest[:10]:
        print(f"  {code:28s} {ms:8.1f} ms")
    figures = {
        "invoices": bundle.invoices.height,
        "lines": bundle.invoice_lines.height,
        "rules": len(rule_ms),
        "runs": args.repeat,
        "validate_s": round(statistics.median(validate_s), 3),
        "ingest_s": round(statistics.median(ingest_s), 3),
        "rules_total_s": round(sum(rule_ms.values()) / 1000, 3),
        "invoices_per_s": round(bundle.invoices.height / statistics.median(validate_s)),
        "rejected": result.rejected,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "rule_ms": rule_ms,
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
