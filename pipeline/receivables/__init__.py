"""Receivables: the money that comes in after the invoice (bank statements, matching,
aging, dunning). Built on the same ledger database as the delivery journal."""
