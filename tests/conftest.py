"""Shared fixtures: generated extracts, settings pointing at a temporary home."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pipeline.ingest import ExtractBundle, load_extract
from pipeline.sample import generate_extract
from pipeline.settings import PROJECT_ROOT, Settings
from tests.pa_server import pa_platform, pa_server  # noqa: F401
from tests.prefect_server import prefect_api  # noqa: F401  (fixtures for every module)
from tests.s3_server import s3_client, s3_endpoint  # noqa: F401

SAMPLE_EXTRACT = PROJECT_ROOT / "sample_data" / "extract"
INVOICES_CLI = Path(os.environ.get("VIRTUAL_ENV", PROJECT_ROOT / ".venv")) / "bin" / "invoices"


@pytest.fixture(scope="session")
def clean_extract(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated extract with no defect."""
    out = tmp_path_factory.mktemp("clean") / "extract"
    generate_extract(out, 60, seed=11)
    return out


@pytest.fixture(scope="session")
def clean_bundle(clean_extract: Path) -> ExtractBundle:
    """The clean extract, ingested."""
    return load_extract(clean_extract)


@pytest.fixture()
def settings(tmp_path: Path) -> Settings:
    """Settings with a fresh home directory and serial rendering."""
    return Settings(home=tmp_path / "home", render={"workers": 1, "batch_size": 10})


@pytest.fixture(scope="session")
def sample_docs():
    """Documents of the committed sample extract (accepted invoices and credit notes)."""
    from pipeline.workshop import sample_documents
    return sample_documents(Settings())


@pytest.fixture(scope="session")
def generated_docs(tmp_path_factory: pytest.TempPathFactory):
    """Documents of a clean 1,000-invoice generated extract: goods, services and mixed,
    French, intra-EU and export buyers, standard-rated, exempt and reverse-charge lines."""
    from pipeline.workshop import sample_documents
    extract = tmp_path_factory.mktemp("g1000") / "extract"
    generate_extract(extract, 1000, seed=77)
    return sample_documents(Settings(), extract)
