"""The accredited-platform transport: deposit each invoice on the PA (AFNOR XP Z12-013).

A deposit the PA acknowledges (202) is ``deposited``: the platform now owns delivering it to
the buyer's platform, and says how that went through lifecycle statuses (``pipeline.platform
.lifecycle``). Before the first deposit for a buyer, its electronic address is looked up in
the Directory and kept for the run: a buyer the Directory does not know is reported and
nothing is deposited. A rejection (400, 422) is terminal with the PA's reason codes;
throttling (429) and unavailability (503) are waited out by the client after the PA's
``Retry-After``. A deposit whose answer was lost may have been stored, and the PA does not
refuse a second one with the same tracking id: it is left *in doubt*, and a run that re-sends
what was in doubt first looks the tracking id up, so the invoice is never deposited twice.
"""

from __future__ import annotations

from pipeline.channels.transports.base import (
    Parcel,
    TerminalDeliveryError,
    TransientDeliveryError,
    TransportReceipt,
    register_transport,
)
from pipeline.errors import PipelineError
from pipeline.platform import (
    DirectoryAddress,
    PlatformAuthError,
    PlatformRejected,
    PlatformUnavailable,
    TFlowProfile,
    TFlowSyntax,
    client_for,
)
from pipeline.settings import PlatformSettings

__all__ = ["PlatformTransport", "PlatformInDoubtError"]

SYNTAX: TFlowSyntax = "Factur-X"
PROFILE: TFlowProfile = "CIUS"  # the EN 16931 profile (XP Z12-013 3.10)


class PlatformInDoubtError(TransientDeliveryError):
    """The deposit may have been stored by the PA: look it up before sending it again."""

    in_doubt = True


@register_transport("platform")
class PlatformTransport:
    """Deposits each parcel (one invoice's Factur-X) as one flow; ``partner`` is the
    buyer's SIREN."""

    name = "platform"

    def __init__(self, settings: PlatformSettings, look_up_first: bool = False) -> None:
        self.client = client_for(settings)
        self.look_up_first = look_up_first
        """Re-sending what a stopped run left in doubt: find an earlier deposit first."""
        self.addresses: dict[str, DirectoryAddress | None] = {}

    def address(self, siren: str) -> DirectoryAddress | None:
        """The buyer's electronic address, asked once per buyer and run."""
        if siren not in self.addresses:
            self.addresses[siren] = self.client.directory_address(siren)
        return self.addresses[siren]

    def deliver(self, parcel: Parcel) -> TransportReceipt:
        """Deposit the parcel; ``deposited`` with the PA's flow id."""
        tracking_id = parcel.numbers[0]
        if self.look_up_first:
            earlier = self._earlier(tracking_id)
            if earlier:
                return TransportReceipt("deposited", f"flow {earlier} (deposited earlier, "
                                        "found by its tracking id)")
        try:
            address = self.address(parcel.partner)
            if address is None:
                raise TerminalDeliveryError(
                    f"buyer SIREN {parcel.partner} has no electronic address in the "
                    "platform's directory: not deposited (ask the buyer to register with a "
                    "platform, then re-run)")
            flow_id = self.client.deposit(parcel.data, parcel.name, tracking_id, SYNTAX,
                                          PROFILE, "B2B")
        except PlatformRejected as exc:
            raise TerminalDeliveryError(f"rejected by the platform: {exc}") from exc
        except PlatformAuthError as exc:
            raise TerminalDeliveryError(str(exc)) from exc
        except PlatformUnavailable as exc:
            if exc.in_doubt:
                raise PlatformInDoubtError(str(exc)) from exc
            raise TransientDeliveryError(str(exc)) from exc
        return TransportReceipt("deposited", f"flow {flow_id}; the buyer receives at "
                                             f"{address.electronic_address}")

    def _earlier(self, tracking_id: str) -> str | None:
        """The flow id of an earlier deposit of this invoice the platform accepted, if any.

        Raises:
            PlatformInDoubtError: the platform could not be asked: the invoice stays in
                doubt (depositing it now could make a second flow).
        """
        try:
            found = [f for f in self.client.find_deposits(tracking_id) if f.ack_status != "Error"]
        except PipelineError as exc:
            raise PlatformInDoubtError(f"could not check whether {tracking_id} was deposited "
                                       f"earlier, so it stays in doubt: {exc}") from exc
        return found[0].flow_id if found else None

    def close(self) -> None:
        """Close the HTTP connections."""
        self.client.close()
