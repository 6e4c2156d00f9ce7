"""Delivery channels: a formatter (what goes out) plus a transport (how bytes move)."""

from pipeline.channels.base import (
    Formatted,
    Formatter,
    Outgoing,
    make_formatters,
    make_transports,
    transport_name,
)

__all__ = ["Formatted", "Formatter", "Outgoing", "make_formatters", "make_transports",
           "transport_name"]
