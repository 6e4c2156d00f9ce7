"""``docs/validation-rules.md``, generated from the registry so it never drifts."""

from __future__ import annotations

from pipeline.validate.registry import REGISTRY, THEMES

__all__ = ["rules_markdown"]

_THEME_TITLES = {
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
        "switched off or given another severity in the configuration:",
        "",
        "```toml",
        "[validation.rules]",
        'PRICE_MISMATCH = "warning"',
        'SEQUENCE_GAP = "off"',
        "```",
        "",
        f"{len(REGISTRY)} rules.",
    ]
    for theme in THEMES:
        lines += ["", f"## {_THEME_TITLES[theme]}", "", "| code | severity | explanation |",
                  "| --- | --- | --- |"]
        lines += [f"| `{r.code}` | {r.severity} | {r.explanation} |"
                  for r in REGISTRY.values() if r.theme == theme]
    return "\n".join(lines) + "\n"
