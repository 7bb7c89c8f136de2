"""What a cell believes of the proxy in front of it, and which cell answered.

The edge (``reelm edge config``) connects to the cells from an address they list in
``forwarded_allow_ips`` and writes X-Forwarded-For, X-Forwarded-Proto and the country header
itself. A cell believes those headers from such a peer only: X-Forwarded-* through uvicorn's
ProxyHeadersMiddleware, and the country header by dropping it from any other peer here, before
the forwarded address replaces the peer's (after which the peer could no longer be told).
"""

from __future__ import annotations

import ipaddress

from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from reelm.config import Settings

CELL_HEADER = "X-Reelm-Cell"
# The answer of a process holding every region (the single-machine mode).
ALL_REGIONS = "all"


class CellFront:
    """Outermost middleware: the forwarded headers believed from trusted proxies only, and
    every answer marked with the cell that gave it (``X-Reelm-Cell: us``, or ``all``), which
    tells an operator, and the edge's tests, where a request was served."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        proxies = settings.forwarded_allow_ips
        self.networks = [ipaddress.ip_network(p, strict=False) for p in proxies]
        self.app = app
        if proxies:
            # uvicorn types its own ASGI callables; Starlette's are the same protocol.
            forwarded = ProxyHeadersMiddleware(app, trusted_hosts=list(proxies))  # type: ignore[arg-type]
            self.app = forwarded  # type: ignore[assignment]
        self.country = settings.country_header.lower().encode("latin-1")
        # The single-machine mode with no proxy configured believes the country header from
        # any client (the demo, one machine, no edge). A cell, or any process told of its
        # proxies, believes it from those proxies only.
        self.country_from_anyone = not proxies and settings.cell is None
        self.cell = (settings.cell or ALL_REGIONS).encode()

    def trusted(self, scope: Scope) -> bool:
        client = scope.get("client")
        if not client:
            return False
        try:
            peer = ipaddress.ip_address(client[0])
        except ValueError:
            return False
        return any(peer in network for network in self.networks)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if not self.country_from_anyone and not self.trusted(scope):
            scope = {**scope, "headers": [h for h in scope["headers"] if h[0] != self.country]}
        cell = self.cell

        async def marked(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"x-reelm-cell", cell)]
            await send(message)

        await self.app(scope, receive, marked)
