"""The accredited platform (PA) of the French 2026 reform: AFNOR XP Z12-013 Flow and
Directory APIs, as a plain client (delivery wires it in)."""

from pipeline.platform.client import (
    DirectoryAddress,
    DirectoryCompany,
    FlowSummary,
    PlatformAuthError,
    PlatformClient,
    PlatformRejected,
    PlatformUnavailable,
    TFlowProfile,
    TFlowSyntax,
    TProcessingRule,
)

__all__ = ["PlatformClient", "PlatformRejected", "PlatformUnavailable", "PlatformAuthError",
           "FlowSummary", "DirectoryAddress", "DirectoryCompany", "TFlowSyntax",
           "TFlowProfile", "TProcessingRule"]
