#!/usr/bin/env python3
"""A small aiocoap (0.4.17) origin server for hopcore's interop tests.

Run it with the venv that scripts/setup-peers.sh creates:

    .venv/bin/python scripts/aiocoap_origin.py --bind 127.0.0.1:56832
    .venv/bin/python scripts/aiocoap_origin.py --bind 127.0.0.1:56832 --credentials server.json

Resources (all text/plain unless noted):

    GET  /hello    "Hello from aiocoap"
    POST /echo     2.04 Changed, payload (and Content-Format, if any) of the request echoed back
    PUT  /echo     same as POST
    GET  /large    4096 bytes: LARGE_PATTERN (64 bytes) repeated 64 times, so that
                   block-wise transfer (Block2) is exercised
    GET  /time     observable; a notification every second, payload "<UTC time> #<n>"
    GET  /whoami   "OSCORE: yes" or "OSCORE: no" on the first line, then "key: value"
                   lines describing the request's security context and peer
    GET  /.well-known/core

With --credentials FILE (aiocoap credentials JSON, e.g.
{":client1": {"oscore": {"basedir": "/abs/path/server-ctx/"}}}) the site is wrapped
in aiocoap.oscore_sitewrapper.OscoreSiteWrapper, exactly as aiocoap's own server
tools do (aiocoap.cli.common.server_context_from_arguments), so OSCORE-protected
requests are accepted besides plain ones. The resources themselves never require
protection: /whoami tells which it was.

Once listening, the server prints one line "READY coap://HOST:PORT" to stdout (flushed),
so a test harness can wait for it. SIGTERM/SIGINT shut it down cleanly (OSCORE
sequence numbers are persisted and the context lock is released).
"""

import argparse
import asyncio
import datetime
import logging
import signal
import sys

import aiocoap
import aiocoap.resource as resource
from aiocoap.cli.common import add_server_arguments, server_context_from_arguments
from aiocoap.numbers.contentformat import ContentFormat

HELLO = b"Hello from aiocoap"
LARGE_PATTERN = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz+/"
LARGE = LARGE_PATTERN * 64
assert len(LARGE_PATTERN) == 64 and len(LARGE) == 4096


class Hello(resource.Resource):
    async def render_get(self, request):
        return aiocoap.Message(payload=HELLO, content_format=ContentFormat.TEXT)


class Echo(resource.Resource):
    def _echo(self, request):
        kwargs = {}
        if request.opt.content_format is not None:
            kwargs["content_format"] = request.opt.content_format
        return aiocoap.Message(code=aiocoap.CHANGED, payload=request.payload, **kwargs)

    async def render_post(self, request):
        return self._echo(request)

    async def render_put(self, request):
        return self._echo(request)


class Large(resource.Resource):
    def get_link_description(self):
        return dict(**super().get_link_description(), sz=str(len(LARGE)))

    async def render_get(self, request):
        return aiocoap.Message(payload=LARGE, content_format=ContentFormat.TEXT)


class Time(resource.ObservableResource):
    """Notifies all observers once a second while there are any."""

    def __init__(self, interval=1.0):
        super().__init__()
        self.interval = interval
        self.handle = None
        self.counter = 0

    def _tick(self):
        self.counter += 1
        self.updated_state()
        self.handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def update_observation_count(self, count):
        if count and self.handle is None:
            self.handle = asyncio.get_running_loop().call_later(self.interval, self._tick)
        elif count == 0 and self.handle is not None:
            self.handle.cancel()
            self.handle = None

    async def render_get(self, request):
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        payload = "%s #%d" % (now, self.counter)
        return aiocoap.Message(payload=payload.encode("ascii"), content_format=ContentFormat.TEXT)


class WhoAmI(resource.Resource):
    async def render_get(self, request):
        remote = request.remote
        # OscoreSiteWrapper replaces the remote of an unprotected request with an
        # aiocoap.transports.oscore.OSCOREAddress carrying the security context.
        sc = getattr(remote, "security_context", None)
        lines = ["OSCORE: %s" % ("yes" if sc is not None else "no")]
        if sc is not None:
            lines.append("kid: %s" % sc.recipient_id.hex())  # the client's Sender ID
            lines.append("server-sender-id: %s" % sc.sender_id.hex())
            id_context = getattr(sc, "id_context", None)
            lines.append("id-context: %s" % (id_context.hex() if id_context else "-"))
            lines.append("algorithm: %s" % type(sc.alg_aead).__name__)
        claims = list(remote.authenticated_claims)
        lines.append("claims: %s" % (", ".join(str(c) for c in claims) if claims else "-"))
        lines.append("scheme: %s" % remote.scheme)
        lines.append("from: %s" % remote.hostinfo)
        lines.append("to: %s" % remote.hostinfo_local)
        return aiocoap.Message(
            payload=("\n".join(lines) + "\n").encode("utf8"),
            content_format=ContentFormat.TEXT,
        )


def build_site():
    root = resource.Site()
    root.add_resource(
        [".well-known", "core"], resource.WKCResource(root.get_resources_as_linkheader)
    )
    root.add_resource(["hello"], Hello())
    root.add_resource(["echo"], Echo())
    root.add_resource(["large"], Large())
    root.add_resource(["time"], Time())
    root.add_resource(["whoami"], WhoAmI())
    return root


async def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    # --bind HOST:PORT, --credentials FILE (and --tls-server-*), parsed like aiocoap's tools
    add_server_arguments(p)
    p.add_argument("-v", "--verbose", action="count", default=0, help="more logging (repeat for debug)")
    opts = p.parse_args(argv)

    logging.basicConfig(
        level=logging.DEBUG if opts.verbose >= 2 else logging.INFO if opts.verbose else logging.WARNING,
        stream=sys.stderr,
    )

    ctx = await server_context_from_arguments(build_site(), opts)

    host, port = opts.bind if opts.bind else ("::", None)
    print("READY coap://%s:%s" % (host if ":" not in host else "[%s]" % host, port or 5683), flush=True)

    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(
            sig, lambda: stop.done() or stop.set_result(None)
        )
    try:
        await stop
    finally:
        await ctx.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
