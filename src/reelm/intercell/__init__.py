"""The inter-cell protocol: the few things that must cross from one region's cell to another's
(notifications to a user elsewhere, for now), authenticated cell to cell with HTTP message
signatures (RFC 9421) under each cell's Ed25519 identity key, idempotent, retried from the
sender's queue until acknowledged, and counted in the sending region's transparency log.

``deliver`` is the single entry point (reelm.intercell.delivery); ``receive`` the receiver's
(reelm.intercell.receiver, behind ``PUT /cell/v1/deliveries/{id}``)."""

from reelm.intercell.delivery import deliver, is_local

__all__ = ["deliver", "is_local"]
