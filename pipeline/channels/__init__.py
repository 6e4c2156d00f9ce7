"""Delivery channels, chosen by the customer's ``channel`` column."""

from pipeline.channels.base import Channel, ChannelResult, Outgoing, Receipt, make_channels

__all__ = ["Channel", "ChannelResult", "Outgoing", "Receipt", "make_channels"]
