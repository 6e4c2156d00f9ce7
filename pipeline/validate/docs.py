"""``docs/validation-rules.md``, generated from the registry so it never drifts."""

from __future__ import annotations

from pipeline.validate.registry import REGISTRY, THEMES

__all__ = ["rules_markdown"]

_THEME_TITLES = {
    "integrity": "Integrity of the extract (keys, characters, lengths, ranges)",
    "numbering": "Numbering and dates",
    "parties": "Parties and channels",
    "matching": "Three-way match (purchase order, delivery note, invoice)",
    "amounts": "Amounts, VAT and credit notes",
}


def rules_markdown() -> str:
    """Every rule with its code, default severity and explanation, by theme."""
    lines = [
        "# Validation rules",
        "",
        "Generated from the rule registry by `invoices rules > docs/validation-rules.md`;",
        "do not edit by hand. `error` rejects the invoice (it is not sent; the reason is in",
        "the exceptions report), `warning` lets it through and lists it. Each rule can be",
        "switched off or given another severity in the configuration, except the rules marked",
        "*fixed*: they guard what rendering, delivery and archiving rely on (file names, formats,",
        "totals), so they always reject. `[validation.limits]` sets their limits:",
        "",
        "```toml",
        "[validation.rules]",
        'PRICE_MISMATCH = "warning"',
        'SEQUENCE_GAP = "off"',
        "",
        "[validation.limits]",
        "max_amount = \"999999999.99\"   # up to 9999999999999.99, what X12 can carry",
        "```",
        "",
        f"{len(REGISTRY)} rules.",
    ]
    for theme in THEMES:
        lines += ["", f"## {_THEME_TITLES[theme]}", "", "| code | severity | explanation |",
                  "| --- | --- | --- |"]
        lines += [f"| `{r.code}` | {r.severity}{', fixed' if r.fixed else ''} | {r.explanation} |"
                  for r in REGISTRY.values() if r.theme == theme]
    return "\n".join(lines) + "\n"
