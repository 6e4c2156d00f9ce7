#!/usr/bin/env bash
# Installs the system libraries the pipeline needs, only when they are missing:
# Pango (WeasyPrint's text layout), libharfbuzz-subset0 (without it WeasyPrint
# falls back to fontTools subsetting, more than twice as slow), DejaVu fonts,
# poppler-utils (pdftotext/pdftoppm, used by tests and previews), and PostgreSQL,
# whose server the test suite starts on loopback to check the delivery journal.
set -euo pipefail

missing=()
ldconfig -p | grep -q 'libpango-1.0.so.0' || missing+=(libpango-1.0-0 libpangoft2-1.0-0)
ldconfig -p | grep -q 'libharfbuzz-subset.so.0' || missing+=(libharfbuzz-subset0)
fc-list 2>/dev/null | grep -qi 'DejaVuSans' || missing+=(fonts-dejavu-core)
command -v pdftotext >/dev/null || missing+=(poppler-utils)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing+=(postgresql)

if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
echo "Installing system packages: ${missing[*]}"
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
