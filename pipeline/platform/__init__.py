"""The accredited platform (PA) of the French 2026 reform: AFNOR XP Z12-013 Flow and
Directory APIs, as a plain client (delivery wires it in), and ``client_for`` the settings."""

from pipeline.platform.client import (
    DirectoryAddress,
    FlowSummary,
    PlatformAuthError,
    PlatformClient,
    PlatformRejected,
    PlatformUnavailable,
    TFlowProfile,
    TFlowSyntax,
    TProcessingRule,
)
from pipeline.settings import PlatformSettings

__all__ = ["client_for", "PlatformClient", "PlatformRejected", "PlatformUnavailable",
           "PlatformAuthError", "FlowSummary", "DirectoryAddress",
           "TFlowSyntax", "TFlowProfile", "TProcessingRule"]


def client_for(settings: PlatformSettings) -> PlatformClient:
    """A client of the configured platform.

    Raises:
        ValueError: the platform is only partly configured.
    """
    url, token_url, client_id, secret = (settings.url, settings.token_url, settings.client_id,
                                         settings.client_secret)
    if not (url and token_url and client_id and secret):
        missing = [name for name, value in (("url", url), ("token_url", token_url),
                                            ("client_id", client_id), ("client_secret", secret))
                   if not value]
        raise ValueError("[pa] needs " + ", ".join(missing) + " (the secret from "
                         "INVOICES_PA__CLIENT_SECRET)")
    return PlatformClient(url, settings.directory_url or url, token_url, client_id,
                          secret.get_secret_value(), timeout_s=settings.timeout_s,
                          retries=settings.retries)
