#!/usr/bin/env python3
"""Observe a CoAP resource with aiocoap and stop after N notifications.

Exists because `aiocoap-client --observe` in aiocoap 0.4.17 prints only the
initial response, never a notification, and then hangs forever (it cancels the
observation right after the first response; upstream issue chrysn/aiocoap#395).

Run it with the venv that scripts/setup-peers.sh creates:

    .venv/bin/python scripts/aiocoap_observe.py coap://127.0.0.1:56832/time --count 3
    .venv/bin/python scripts/aiocoap_observe.py URI --count 3 --credentials client.json
    .venv/bin/python scripts/aiocoap_observe.py URI --count 3 --proxy coap://127.0.0.1:56833

Output, one line per message on stdout (flushed), payload decoded as UTF-8 with
newlines escaped as \\n:

    response 2.05 obs=0 <payload>          the response to the registration
    notification 2.05 obs=17 <payload>     one per notification

Exit status: 0 once --count notifications arrived; 1 if the registration
response is an error or lacks Observe, the observation ends early, or
--timeout (default 30 s) expires; 2 on usage errors.
"""

import argparse
import asyncio
import json
import sys

import aiocoap
import aiocoap.proxy.client


def line(kind, msg):
    payload = msg.payload.decode("utf-8", "replace").replace("\\", "\\\\").replace("\n", "\\n")
    print("%s %s obs=%s %s" % (kind, msg.code.dotted, msg.opt.observe, payload), flush=True)


async def observe(opts):
    ctx = await aiocoap.Context.create_client_context()
    try:
        if opts.credentials:
            with open(opts.credentials, "rb") as f:
                ctx.client_credentials.load_from_dict(json.load(f))
        iface = ctx if not opts.proxy else aiocoap.proxy.client.ProxyForwarder(opts.proxy, ctx)
        req = aiocoap.Message(code=aiocoap.GET, uri=opts.uri, observe=0)
        requester = iface.request(req)
        first = await requester.response
        line("response", first)
        if not first.code.is_successful() or first.opt.observe is None:
            print("error: registration not accepted", file=sys.stderr)
            return 1
        n = 0
        async for notification in requester.observation:
            line("notification", notification)
            n += 1
            if n >= opts.count:
                requester.observation.cancel()
                return 0
        print("error: observation ended after %d notification(s)" % n, file=sys.stderr)
        return 1
    finally:
        await ctx.shutdown()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("uri")
    p.add_argument("--count", type=int, default=3, help="notifications to wait for (default 3)")
    p.add_argument("--timeout", type=float, default=30.0, help="give up after this many seconds")
    p.add_argument("--credentials", help="aiocoap client credentials JSON (OSCORE)")
    p.add_argument("--proxy", help="forward proxy URI, e.g. coap://127.0.0.1:56833")
    opts = p.parse_args()
    try:
        rc = asyncio.run(asyncio.wait_for(observe(opts), opts.timeout))
    except asyncio.TimeoutError:
        print("error: timeout after %s s" % opts.timeout, file=sys.stderr)
        rc = 1
    except aiocoap.error.Error as e:
        print("error: %s" % (e,), file=sys.stderr)
        rc = 1
    sys.exit(rc)


if __name__ == "__main__":
    main()
