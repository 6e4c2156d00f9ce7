"""A realistic French B2B sample extract, generated vectorised (NumPy + Polars).

Same seed, same bytes. ``defect_rate`` injects each kind of defect validation
must catch and lists every injected defect in ``generator_defects.parquet``
(not part of the contract; ingest ignores it) so tests can check validation
against the generator's own ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path

import numpy as np
import polars as pl
from stdnum import ean
from stdnum.iso7064 import mod_11_10

from pipeline import money
from pipeline.money import decimal_series
from pipeline.schemas import polars_schema

__all__ = ["generate_extract", "DEFECT_CODES", "SampleReport", "DEFECTS_FILE", "with_header_totals"]

DEFECTS_FILE = "generator_defects.parquet"

# defect kind -> the reason code validation must give it
DEFECT_CODES: dict[str, str] = {
    "price_mismatch": "PRICE_MISMATCH",
    "quantity_over_delivered": "QTY_OVER_DELIVERED",
    "unknown_po": "PO_UNKNOWN",
    "unknown_customer": "CUSTOMER_UNKNOWN",
    "missing_email": "CHANNEL_ADDRESS_MISSING",
    "invalid_siren": "SIREN_INVALID",
    "duplicate_number": "DUPLICATE_NUMBER",
}

EXTRACT_END = date(2026, 11, 26)

_NAMES = ["Martin", "Bernard", "Dubois", "Thomas", "Robert", "Richard", "Petit", "Durand",
          "Leroy", "Moreau", "Simon", "Laurent", "Lefèvre", "Michel", "Garcia", "David",
          "Bertrand", "Roux", "Vincent", "Fournier", "Morel", "Girard", "André", "Mercier",
          "Dupont", "Lambert", "Bonnet", "François", "Martinez", "Legrand", "Garnier", "Faure"]
_TRADES = ["Boulangerie", "Transports", "Garage", "Cabinet", "Menuiserie", "Imprimerie",
           "Pharmacie", "Hôtel", "Librairie", "Plomberie", "Restaurant", "Laboratoire",
           "Atelier", "Quincaillerie", "Fromagerie", "Bureau d'études"]
_FORMS = ["SARL", "SAS", "SA", "EURL", "SASU", "& Fils", "et Associés"]
_STREETS = ["rue de la République", "avenue Jean Jaurès", "boulevard Victor Hugo",
            "rue Pasteur", "place de la Mairie", "rue du Général Leclerc", "chemin des Vignes",
            "allée des Tilleuls", "rue Nationale", "quai de la Loire", "impasse des Lilas",
            "route de Lyon", "rue Gambetta", "cours Mirabeau"]
_CITIES = [("75002", "Paris"), ("69003", "Lyon"), ("13001", "Marseille"),
           ("31000", "Toulouse"), ("44000", "Nantes"), ("59800", "Lille"),
           ("67000", "Strasbourg"), ("33000", "Bordeaux"), ("34000", "Montpellier"),
           ("35000", "Rennes"), ("21000", "Dijon"), ("37000", "Tours"), ("63000",
           "Clermont-Ferrand"), ("06000", "Nice"), ("76000", "Rouen"), ("29200", "Brest")]
# (description, unit, unit price in cents, VAT rate in hundredths of a percent, nature)
_CATALOGUE = [
    ("Farine de blé T65 – sac 25 kg", "C62", 2190, 550, "goods"),
    ("Sucre en poudre", "KGM", 189, 550, "goods"),
    ("Café en grains – arabica", "KGM", 2450, 550, "goods"),
    ("Huile d'olive vierge extra 5 L", "C62", 4290, 550, "goods"),
    ("Ramette papier A4 80 g", "C62", 549, 2000, "goods"),
    ("Cartouche d'encre noire XL", "C62", 3990, 2000, "goods"),
    ("Écran 27\" IPS", "C62", 28900, 2000, "goods"),
    ("Clavier AZERTY sans fil", "C62", 4590, 2000, "goods"),
    ("Câble réseau Cat6 – 5 m", "C62", 790, 2000, "goods"),
    ("Prestation de conseil – audit SI", "HUR", 9500, 2000, "services"),
    ("Maintenance corrective", "HUR", 7200, 2000, "services"),
    ("Développement spécifique", "HUR", 8500, 2000, "services"),
    ("Formation inter-entreprises (jour)", "DAY", 69000, 2000, "services"),
    ("Travaux de rénovation énergétique", "HUR", 5200, 1000, "services"),
    ("Repas séminaire (par personne)", "C62", 3400, 1000, "services"),
    ("Transport de voyageurs", "C62", 1850, 1000, "services"),
    ("Ouvrage technique (livre)", "C62", 4200, 550, "goods"),
    ("Abonnement presse professionnelle", "C62", 1290, 210, "goods"),
    ("Médicament remboursable – boîte", "C62", 1275, 210, "goods"),
    ("Palette bois 120×80", "C62", 1450, 2000, "goods"),
    ("Vis inox 4×40 – boîte de 200", "C62", 1790, 2000, "goods"),
    ("Peinture acrylique blanche 10 L", "C62", 8990, 2000, "goods"),
    ("Gasoil non routier", "LTR", 142, 2000, "goods"),
    ("Location nacelle (jour)", "DAY", 21000, 2000, "services"),
]
# Services a French buyer gets without VAT: (description, unit, cents, category, reason).
_UNTAXED_SERVICES = [
    ("Formation professionnelle continue (jour)", "DAY", 65000, "E",
     "Exonération de TVA, art. 261-4-4° a du CGI"),
    ("Travaux de sous-traitance – gros œuvre", "HUR", 4800, "AE",
     "Autoliquidation, art. 283-2 nonies du CGI"),
]
# Buyers outside France: (country, language, legal name, street, postcode, city, VAT prefix);
# an EU buyer is billed intra-community (K goods, AE services), another for export (G).
_FOREIGN = [
    ("DE", "de", "Müller Maschinenbau GmbH", "Friedrichstraße 12", "10117", "Berlin", "DE"),
    ("US", "en", "Acme Industrial Supplies Inc.", "350 Fifth Avenue", "10118", "New York",
     None),
    ("BE", "en", "Janssens & Peeters NV", "Rue de la Loi 16", "1000", "Bruxelles", "BE"),
    ("CH", "de", "Präzisionswerk Zürich AG", "Bahnhofstrasse 21", "8001", "Zürich", None),
    ("DE", "de", "Schneider Logistik AG", "Leopoldstraße 48", "80802", "München", "DE"),
]
_EU = ("DE", "BE")
# Delivery sites that are not the buyer's address (BG-15).
_SITES = [("Zone artisanale, lot 7", "69800", "Saint-Priest"),
          ("Chantier Les Terrasses, 4 allée des Pins", "33600", "Pessac"),
          ("Entrepôt 3, port de Gennevilliers", "92230", "Gennevilliers")]


@dataclass(frozen=True)
class SampleReport:
    """What was written."""

    out: Path
    invoices: int
    lines: int
    customers: int
    defects: int


def _digits(rng: np.random.Generator, n: int, width: int) -> np.ndarray:
    return rng.integers(0, 10, size=(n, width), dtype=np.int64)


def _luhn_check(payload: np.ndarray) -> np.ndarray:
    """Luhn check digit for each row of a digit matrix (SIREN, SIRET)."""
    rev = payload[:, ::-1]
    doubled = rev.copy()
    doubled[:, 0::2] *= 2
    doubled = np.where(doubled > 9, doubled - 9, doubled)
    return (10 - doubled.sum(axis=1) % 10) % 10


def _gs1_check(payload: np.ndarray) -> np.ndarray:
    """GS1 mod-10 check digit (GLN) for each row of a digit matrix."""
    weights = np.where(np.arange(payload.shape[1])[::-1] % 2 == 0, 3, 1)
    return (10 - (payload * weights).sum(axis=1) % 10) % 10


def _join_digits(matrix: np.ndarray) -> pl.Series:
    numbers = np.zeros(len(matrix), dtype=np.int64)
    for column in matrix.T:
        numbers = numbers * 10 + column
    return pl.Series(numbers).cast(pl.String).str.zfill(matrix.shape[1])


def _pick(rng: np.random.Generator, values: list[str], n: int) -> pl.Series:
    return pl.Series(values, dtype=pl.String).gather(rng.integers(0, len(values), n))


def _customers(rng: np.random.Generator, n: int) -> pl.DataFrame:
    payload = np.hstack([rng.integers(1, 10, (n, 1)), _digits(rng, n, 7)])
    siren = np.hstack([payload, _luhn_check(payload)[:, None]])
    nic = _digits(rng, n, 4)
    siret = np.hstack([siren, nic, _luhn_check(np.hstack([siren, nic]))[:, None]])
    gln_payload = np.hstack([np.tile([3, 0, 1, 2], (n, 1)), _digits(rng, n, 8)])
    gln = np.hstack([gln_payload, _gs1_check(gln_payload)[:, None]])
    siren_int = (siren * 10 ** np.arange(8, -1, -1)).sum(axis=1)
    vat_key = (12 + 3 * (siren_int % 97)) % 97
    city = rng.integers(0, len(_CITIES), n)
    channel = rng.choice(["email", "print", "edi", "peppol"], n, p=[0.6, 0.2, 0.15, 0.05])
    frame = pl.DataFrame({
        "i": np.arange(n),
        "trade": _pick(rng, _TRADES, n), "name": _pick(rng, _NAMES, n),
        "form": _pick(rng, _FORMS, n), "siren": _join_digits(siren),
        "siret": _join_digits(siret), "gln": _join_digits(gln), "vat_key": vat_key,
        "street_no": rng.integers(1, 200, n), "street": _pick(rng, _STREETS, n),
        "postcode": pl.Series([c[0] for c in _CITIES]).gather(city),
        "city": pl.Series([c[1] for c in _CITIES]).gather(city),
        "channel": channel,
        "language": rng.choice(["fr", "en", "de"], n, p=[0.8, 0.12, 0.08]),
        "payment_terms_days": rng.choice([30, 45, 60], n, p=[0.6, 0.25, 0.15]),
        "has_line2": rng.random(n) < 0.2,
    })
    slug = (pl.concat_str(pl.col("trade"), pl.col("name"), separator="-").str.to_lowercase()
            .str.replace_all("[éèê]", "e").str.replace_all("[àâ]", "a").str.replace_all("ç", "c")
            .str.replace_all("[^a-z0-9]+", "-"))
    return frame.select(
        customer_id=pl.format("C{}", pl.col("i").cast(pl.String).str.zfill(5)),
        legal_name=pl.concat_str("trade", "name", "form", separator=" "),
        siren="siren",
        vat_id=pl.format("FR{}{}", pl.col("vat_key").cast(pl.String).str.zfill(2), "siren"),
        address_line1=pl.concat_str(pl.col("street_no").cast(pl.String), "street", separator=" "),
        address_line2=pl.when("has_line2").then(pl.lit("Zone d'activités, bâtiment B")),
        postcode="postcode", city="city", country=pl.lit("FR"),
        email=pl.when(pl.col("channel") == "email").then(
            pl.format("factures@{}.example", slug)),
        channel="channel",
        gln=pl.when(pl.col("channel") == "edi").then("gln"),
        peppol_id=pl.when(pl.col("channel") == "peppol").then(pl.format("0009:{}", "siret")),
        language="language",
        payment_terms_days="payment_terms_days",
        brand=pl.lit(None, dtype=pl.String),
    )


def _vat_id(prefix: str, rng: np.random.Generator) -> str:
    """A VAT number with valid check digits (Germany: ISO 7064 mod 11,10; Belgium: mod 97)."""
    if prefix == "DE":
        body = "".join(str(d) for d in rng.integers(1, 10, 8))
        return f"DE{body}{mod_11_10.calc_check_digit(body)}"
    body = "0" + "".join(str(d) for d in rng.integers(0, 10, 7))
    return f"BE{body}{97 - int(body) % 97:02d}"


def _gln(rng: np.random.Generator) -> str:
    body = "40" + "".join(str(d) for d in rng.integers(0, 10, 10))
    return body + ean.calc_check_digit(body)


def _abroad(rng: np.random.Generator, customers: pl.DataFrame) -> pl.DataFrame:
    """Move about one email or print customer in eight abroad (EU or export), with a
    foreign address, language and VAT number; EDI and Peppol buyers stay French."""
    rows = customers.to_dicts()
    movable = [i for i, r in enumerate(rows) if r["channel"] in ("email", "print")]
    chosen = rng.choice(movable, min(len(movable), max(2, len(rows) // 8)), replace=False)
    for n, i in enumerate(sorted(chosen)):
        country, lang, name, street, postcode, city, prefix = _FOREIGN[n % len(_FOREIGN)]
        slug = "".join(ch for ch in name.lower().split()[0] if ch.isascii() and ch.isalnum())
        rows[i].update(legal_name=name, siren=None, country=country, language=lang,
                       address_line1=street, address_line2=None, postcode=postcode,
                       city=city, vat_id=_vat_id(prefix, rng) if prefix else None,
                       # invoices abroad carry an electronic address (BT-49) on every
                       # channel: their GLN (Peppol's EAS 0088) and an email
                       gln=rows[i]["gln"] or _gln(rng),
                       email=rows[i]["email"] or f"accounts@{slug}.example")
    return pl.DataFrame(rows, schema=customers.schema)


# Every product: the catalogue, then the untaxed services (rate 0, their own category).
_PRODUCTS = _CATALOGUE + [(d, u, c, 0, "services") for d, u, c, _, _ in _UNTAXED_SERVICES]
_GOODS = np.array([i for i, p in enumerate(_CATALOGUE) if p[4] == "goods"])
_SERVICES = np.array([i for i, p in enumerate(_CATALOGUE) if p[4] == "services"])
FRANCE, EU, EXPORT = 0, 1, 2


def _zones(customers: pl.DataFrame) -> np.ndarray:
    """Per customer: billed in France, in another EU country, or for export."""
    country = customers["country"].to_numpy()
    return np.where(country == "FR", FRANCE, np.where(np.isin(country, _EU), EU, EXPORT))


def _profiles(rng: np.random.Generator, zone: np.ndarray) -> np.ndarray:
    """Per invoice: 0 goods only, 1 services only, 2 both; exports are goods."""
    profile = rng.choice(3, len(zone), p=[0.55, 0.25, 0.2])
    return np.where(zone == EXPORT, 0, profile)


def _assortment(rng: np.random.Generator, drawn: np.ndarray, line_no: np.ndarray,
                zone: np.ndarray, profile: np.ndarray) -> np.ndarray:
    """The product of each line, as its invoice's profile allows: a mixed invoice opens
    with goods then services; some French services lines are untaxed (E, AE)."""
    goods = _GOODS[rng.integers(0, len(_GOODS), len(drawn))]
    services = _SERVICES[rng.integers(0, len(_SERVICES), len(drawn))]
    untaxed = len(_CATALOGUE) + rng.integers(0, len(_UNTAXED_SERVICES), len(drawn))
    services = np.where((zone == FRANCE) & (rng.random(len(drawn)) < 0.06), untaxed, services)
    mixed = np.where(line_no == 1, goods, np.where(line_no == 2, services, drawn))
    return np.select([profile == 0, profile == 1], [goods, services], mixed)


def _taxation(product: np.ndarray, zone: np.ndarray
              ) -> tuple[pl.Series, np.ndarray, pl.Series]:
    """(VAT category, rate in hundredths, exemption reason) of each line: standard rate in
    France unless the service is untaxed, K or AE within the EU, G for export."""
    untaxed = product - len(_CATALOGUE)
    domestic = [p[3] for p in _UNTAXED_SERVICES]
    reasons = [p[4] for p in _UNTAXED_SERVICES]
    goods = np.array([p[4] == "goods" for p in _PRODUCTS])[product]
    category = np.select(
        [zone == EU, zone == EXPORT, untaxed >= 0],
        [np.where(goods, "K", "AE"), "G", np.array(domestic)[np.maximum(untaxed, 0)]], "S")
    reason = np.select(
        [zone == EU, zone == EXPORT, untaxed >= 0],
        [np.where(goods, "VATEX-EU-IC", "VATEX-EU-AE"), "VATEX-EU-G",
         np.array(reasons)[np.maximum(untaxed, 0)]], "")
    rate = np.where(category == "S", np.array([p[3] for p in _PRODUCTS])[product], 0)
    return (pl.Series(category), rate,
            pl.Series(reason).replace("", None))


def _delivery_sites(rng: np.random.Generator, zone: np.ndarray, headers: pl.DataFrame,
                    notes: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Send about one French invoice in twelve to a site that is not the buyer's address,
    named on the invoice itself or, as often, only on its delivery notes."""
    shipped = (zone == FRANCE) & (rng.random(len(zone)) < 0.08)
    on_invoice = shipped & (rng.random(len(zone)) < 0.5)
    site = rng.integers(0, len(_SITES), len(zone))

    def columns(chosen: np.ndarray) -> list[pl.Series]:
        picked = [_SITES[i] if c else (None, None, None) for i, c in zip(site, chosen,
                                                                           strict=True)]
        return [pl.Series("ship_to_address_line1", [p[0] for p in picked], pl.String),
                pl.Series("ship_to_postcode", [p[1] for p in picked], pl.String),
                pl.Series("ship_to_city", [p[2] for p in picked], pl.String),
                pl.Series("ship_to_country", ["FR" if c else None for c in chosen], pl.String)]

    headers = headers.with_columns(columns(on_invoice))
    by_note = pl.DataFrame([pl.Series("number", headers["invoice_number"]),
                            *columns(shipped & ~on_invoice)])
    notes = notes.with_columns(number=pl.format(
        "FA2026-{}", (pl.col("delivery_note_number").str.extract(r"BL-(\d+)-").cast(pl.Int64)
                      - 90000).cast(pl.String).str.zfill(6))).join(
        by_note, on="number", how="left").drop("number")
    return headers, notes


def _line_counts(rng: np.random.Generator, n: int) -> np.ndarray:
    counts = rng.integers(1, 19, n)
    medium = rng.random(n) < 0.025
    counts[medium] = rng.integers(20, 61, medium.sum())
    long_count = max(2, round(n * 0.004)) if n >= 50 else 0
    counts[rng.choice(n, long_count, replace=False)] = rng.integers(100, 161, long_count)
    return counts


def generate_extract(out: Path | str, invoices: int, seed: int = 1,
                     defect_rate: float = 0.0, days: int = 26) -> SampleReport:
    """Write a sample extract (seven Parquet tables) to ``out``.

    Args:
        out: the extract directory to create or overwrite.
        invoices: how many invoices and credit notes in all.
        seed: the same seed gives the same bytes.
        defect_rate: share of invoices given one injected defect (0 to 0.5).
        days: the invoices are issued over this many days up to ``EXTRACT_END`` (a month's
            extract by default; 365 for a year of receivables).
    """
    if days < 1:
        raise ValueError("the invoices need at least one day to be issued on")
    if invoices < 1:
        raise ValueError("at least one invoice is needed")
    if not 0 <= defect_rate <= 0.5:
        raise ValueError("defect rate must be between 0 and 0.5")
    rng = np.random.default_rng(seed)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    # The variety of the 2026 reform (services, mixed, untaxed, foreign buyers, delivery
    # sites) draws from its own generator, so the rest is what the same seed always gave.
    variety = np.random.default_rng([seed, 2026])
    n_customers = max(12, invoices // 25)
    french_customers = _customers(rng, n_customers)
    customers = _abroad(variety, french_customers)
    n_credit = int(invoices * 0.04) if invoices >= 25 else 0
    n_inv = invoices - n_credit

    # --- invoices (sorted by number = by issue date) ---
    issue_offsets = np.sort(rng.integers(0, days, n_inv))[::-1]
    issue = np.datetime64(EXTRACT_END) - issue_offsets.astype("timedelta64[D]")
    cust_idx = rng.integers(0, n_customers, n_inv)
    terms = customers["payment_terms_days"].to_numpy()[cust_idx]
    n_lines = _line_counts(rng, n_inv)
    two_dn = rng.random(n_inv) < 0.1
    headers = pl.DataFrame({
        "k": np.arange(n_inv), "issue_date": issue,
        "due_date": issue + terms.astype("timedelta64[D]"),
        "dn_lag": rng.integers(0, 6, n_inv), "po_lag": rng.integers(5, 30, n_inv),
    }).with_columns(
        invoice_number=pl.format("FA2026-{}", (pl.col("k") + 1).cast(pl.String).str.zfill(6)),
        po_number=pl.format("PO-{}", (pl.col("k") + 70001).cast(pl.String)),
        customer_id=customers["customer_id"].gather(cust_idx),
    )

    # --- lines: one row per invoice line, vectorised ---
    total = int(n_lines.sum())
    inv_of_line = np.repeat(np.arange(n_inv), n_lines)
    starts = np.repeat(np.cumsum(n_lines) - n_lines, n_lines)
    line_no = np.arange(total) - starts + 1
    zone = _zones(customers)[cust_idx]
    product = _assortment(variety, rng.integers(0, len(_CATALOGUE), total), line_no,
                          zone[inv_of_line], _profiles(variety, zone)[inv_of_line])
    units = np.array([p[1] for p in _PRODUCTS])[product]
    price_cents = np.array([p[2] for p in _PRODUCTS])[product]
    price_4dp = price_cents * 100 + rng.integers(-5, 6, total) * 100 * (price_cents // 200)
    qty_milli = np.where(np.isin(units, ["KGM", "LTR"]), rng.integers(500, 250_000, total),
                         np.where(units == "HUR", rng.integers(1, 17, total) * 500,
                                  rng.integers(1, 25, total) * 1000))
    category, rate, reason = _taxation(product, zone[inv_of_line])
    dn_suffix = np.where(two_dn[inv_of_line] & (line_no % 2 == 0), 2, 1)
    lines = pl.DataFrame({
        "k": inv_of_line, "line_no": line_no, "product": product, "units": units,
        "qty_milli": qty_milli, "price_4dp": price_4dp, "rate": rate, "dn_suffix": dn_suffix,
        "category": category, "reason": reason,
        "nature": np.array([p[4] for p in _PRODUCTS])[product],
    })

    # --- credit notes: correct up to three lines of an earlier invoice ---
    credited = np.sort(rng.choice(n_inv, n_credit, replace=False)) if n_credit else np.array(
        [], dtype=np.int64)

    defects: list[tuple[int, str]] = []
    if defect_rate:
        candidates = np.setdiff1d(np.arange(n_inv), credited)
        n_def = min(len(candidates) // 2, max(len(DEFECT_CODES), round(invoices * defect_rate)))
        chosen = rng.choice(candidates, n_def, replace=False)
        kinds = list(DEFECT_CODES)
        defects = [(int(k), kinds[i % len(kinds)]) for i, k in enumerate(chosen)]
        spare = np.setdiff1d(candidates, chosen)
        dup_targets = iter(rng.choice(spare, len(defects), replace=False).tolist())
    qty_bump = np.zeros(total, dtype=np.int64)
    price_bump = np.zeros(total, dtype=np.int64)
    first_line = np.cumsum(n_lines) - n_lines
    header_updates: dict[int, dict[str, str]] = {}
    extra_customers: list[pl.DataFrame] = []
    ground_truth: list[tuple[int, str]] = []
    for k, kind in defects:
        if kind == "price_mismatch":
            price_bump[first_line[k]] = 10_000
        elif kind == "quantity_over_delivered":
            qty_bump[first_line[k]] = 1000
        elif kind == "unknown_po":
            header_updates[k] = {"po_number": f"PO-UNKNOWN-{k}"}
        elif kind == "unknown_customer":
            header_updates[k] = {"customer_id": f"C-UNKNOWN-{k}"}
        elif kind in ("missing_email", "invalid_siren"):
            clone = french_customers[int(cust_idx[k])].with_columns(
                customer_id=pl.lit(f"C-D{k:06d}"))
            if kind == "missing_email":
                clone = clone.with_columns(channel=pl.lit("email"),
                                           email=pl.lit(None, dtype=pl.String),
                                           gln=pl.lit(None, dtype=pl.String),
                                           peppol_id=pl.lit(None, dtype=pl.String))
            else:
                bad = clone["siren"][0][:8] + str((int(clone["siren"][0][8]) + 1) % 10)
                clone = clone.with_columns(siren=pl.lit(bad))
            extra_customers.append(clone)
            header_updates[k] = {"customer_id": f"C-D{k:06d}"}
        elif kind == "duplicate_number":
            target = next(dup_targets)
            header_updates[k] = {"invoice_number": headers["invoice_number"][target]}
            ground_truth.append((target, kind))
        ground_truth.append((k, kind))

    lines = lines.with_columns(invoiced_milli=pl.col("qty_milli") + qty_bump,
                               invoiced_price=pl.col("price_4dp") + price_bump)
    h = headers
    for column in ("invoice_number", "po_number", "customer_id"):
        updates = {k: u[column] for k, u in header_updates.items() if column in u}
        if updates:
            idx = np.array(list(updates), dtype=np.int64)
            values = h[column].to_numpy().copy()
            values[idx] = list(updates.values())
            h = h.with_columns(pl.Series(column, values, dtype=pl.String).alias(f"{column}_inv"))
        else:
            h = h.with_columns(pl.col(column).alias(f"{column}_inv"))

    line_view = lines.join(h.select("k", "invoice_number_inv", "po_number"), on="k")
    invoice_lines = line_view.select(
        invoice_number=pl.col("invoice_number_inv"),
        line_no=pl.col("line_no").cast(pl.Int64),
        sku=pl.format("ART-{}", (pl.col("product") + 1001).cast(pl.String)),
        description=pl.Series([p[0] for p in _PRODUCTS]).gather(lines["product"]),
        quantity=decimal_series("quantity", lines["invoiced_milli"].to_numpy(), 3),
        unit=pl.col("units"),
        unit_price=decimal_series("unit_price", lines["invoiced_price"].to_numpy(), 4),
        vat_rate=decimal_series("vat_rate", lines["rate"].to_numpy(), 2, precision=5),
        vat_category=lines["category"],
        vat_exemption_reason=lines["reason"],
        po_line_no=pl.col("line_no").cast(pl.Int64),
        delivery_note_number=pl.format("BL-{}-{}", (pl.col("k") + 90001).cast(pl.String),
                                       pl.col("dn_suffix").cast(pl.String)),
        item_nature=lines["nature"],
    )
    invoice_headers = h.select(
        invoice_number=pl.col("invoice_number_inv"), invoice_type=pl.lit("invoice"),
        customer_id=pl.col("customer_id_inv"), issue_date="issue_date",
        delivery_date=(pl.col("issue_date") - pl.duration(days="dn_lag")),
        due_date="due_date", currency=pl.lit("EUR"), po_number=pl.col("po_number_inv"),
        credited_invoice_number=pl.lit(None, dtype=pl.String),
    )

    purchase_orders = h.select(
        po_number="po_number", customer_id=pl.col("customer_id"),
        order_date=(pl.col("issue_date") - pl.duration(days="po_lag")),
        status=pl.lit("open"), currency=pl.lit("EUR"))
    # POs of invoices moved to a defect-only customer belong to that customer.
    moved = {k: u["customer_id"] for k, u in header_updates.items()
             if u.get("customer_id", "").startswith("C-D")}
    if moved:
        owners = purchase_orders["customer_id"].to_numpy().copy()
        owners[np.array(list(moved))] = list(moved.values())
        purchase_orders = purchase_orders.with_columns(customer_id=pl.Series(owners))
    po_lines = line_view.select(
        po_number="po_number", po_line_no=pl.col("line_no").cast(pl.Int64),
        sku=invoice_lines["sku"],
        quantity_ordered=decimal_series("q", lines["qty_milli"].to_numpy(), 3),
        unit_price=decimal_series("p", lines["price_4dp"].to_numpy(), 4),
    )
    delivery_note_lines = invoice_lines.select(
        "delivery_note_number", "po_line_no", "sku",
        quantity_delivered=decimal_series("q", lines["qty_milli"].to_numpy(), 3))
    delivery_notes = (
        line_view.select("k", "po_number", "dn_suffix").unique(["k", "dn_suffix"])
        .join(headers.select("k", "issue_date", "dn_lag"), on="k")
        .sort("k", "dn_suffix")
        .select(
            delivery_note_number=pl.format("BL-{}-{}", (pl.col("k") + 90001).cast(pl.String),
                                           pl.col("dn_suffix").cast(pl.String)),
            po_number="po_number",
            delivery_date=pl.col("issue_date") - pl.duration(days="dn_lag"),
        ))

    invoice_headers, delivery_notes = _delivery_sites(variety, zone, invoice_headers,
                                                      delivery_notes)
    if n_credit:
        credit_headers, credit_lines = _credit_notes(rng, headers, lines, invoice_lines,
                                                     credited, first_line, n_lines)
        invoice_headers = pl.concat([invoice_headers, credit_headers], how="diagonal")
        invoice_lines = pl.concat([invoice_lines, credit_lines])
    if extra_customers:
        customers = pl.concat([customers, *extra_customers])
    invoice_headers = with_header_totals(invoice_headers, invoice_lines)

    tables = {
        "customers": customers, "invoices": invoice_headers, "invoice_lines": invoice_lines,
        "purchase_orders": purchase_orders, "po_lines": po_lines,
        "delivery_notes": delivery_notes, "delivery_note_lines": delivery_note_lines,
    }
    for name, frame in tables.items():
        schema = polars_schema(name)
        _write(frame.select([pl.col(c) if c in frame.columns else pl.lit(None).alias(c)
                             for c in schema]).cast(schema), out / f"{name}.parquet")
    truth = pl.DataFrame(
        {"invoice_number": [headers["invoice_number"][k] if kind != "duplicate_number"
                            else h["invoice_number_inv"][k] for k, kind in ground_truth],
         "defect": [kind for _, kind in ground_truth],
         "expected_code": [DEFECT_CODES[kind] for _, kind in ground_truth]},
        schema={"invoice_number": pl.String, "defect": pl.String, "expected_code": pl.String})
    _write(truth.sort("invoice_number"), out / DEFECTS_FILE)
    return SampleReport(out=out, invoices=invoice_headers.height, lines=invoice_lines.height,
                        customers=customers.height, defects=truth.height)


def _credit_notes(rng: np.random.Generator, headers: pl.DataFrame, lines: pl.DataFrame,
                  invoice_lines: pl.DataFrame, credited: np.ndarray, first_line: np.ndarray,
                  n_lines: np.ndarray) -> tuple[pl.DataFrame, pl.DataFrame]:
    n = len(credited)
    take = np.minimum(n_lines[credited], rng.integers(1, 4, n))
    src = np.concatenate([np.arange(first_line[k], first_line[k] + t)
                          for k, t in zip(credited, take, strict=True)])
    cn_of_line = np.repeat(np.arange(n), take)
    cn_numbers = pl.Series([f"AV2026-{i + 1:06d}" for i in range(n)])
    lag = rng.integers(1, 10, n).astype("timedelta64[D]")
    issue = np.minimum(headers["issue_date"].to_numpy()[credited] + lag,
                       np.datetime64(EXTRACT_END))
    credit_headers = pl.DataFrame({
        "invoice_number": cn_numbers, "invoice_type": "credit_note",
        "customer_id": headers["customer_id"].gather(credited),
        "issue_date": issue, "due_date": issue,
        "delivery_date": headers.select(pl.col("issue_date") - pl.duration(days="dn_lag"))
        .to_series().gather(credited),
        "currency": "EUR", "po_number": None,
        "credited_invoice_number": headers["invoice_number"].gather(credited),
    }, schema_overrides={"po_number": pl.String})
    original = invoice_lines[src]
    returned = (lines["qty_milli"].to_numpy()[src] + 1) // 2
    credit_lines = original.with_columns(
        invoice_number=cn_numbers.gather(cn_of_line),
        line_no=pl.Series(np.arange(len(src)) - np.repeat(np.cumsum(take) - take, take) + 1),
        quantity=decimal_series("quantity", returned, 3),
        po_line_no=pl.lit(None, dtype=pl.Int64),
        delivery_note_number=pl.lit(None, dtype=pl.String),
    )
    return credit_headers, credit_lines


def with_header_totals(headers: pl.DataFrame, lines: pl.DataFrame) -> pl.DataFrame:
    """The totals an ERP prints on the header, by the same EN 16931 rules as ``money``."""
    per_rate = lines.with_columns(net=money.line_net_cents("quantity", "unit_price")).group_by(
        "invoice_number", "vat_category", "vat_rate").agg(base=pl.col("net").sum()).with_columns(
        vat=money.vat_cents("base", "vat_rate"))
    totals = per_rate.group_by("invoice_number").agg(
        net=pl.col("base").sum(), vat=pl.col("vat").sum())
    as_amount = {c: money.cents_to_text(c).cast(money.AMOUNT) for c in ("net", "vat")}
    return headers.join(totals, on="invoice_number", how="left").with_columns(
        total_net=as_amount["net"], total_vat=as_amount["vat"],
        total_gross=money.cents_to_text(pl.col("net") + pl.col("vat")).cast(money.AMOUNT),
    ).drop("net", "vat")


def _write(frame: pl.DataFrame, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    frame.write_parquet(tmp, compression="zstd", statistics=True, row_group_size=250_000)
    tmp.replace(path)
