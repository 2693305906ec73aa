"""bench/pubsub_slixmpp.py: the slixmpp side of the `pubsub` benchmark (bench/pubsub.sh).

    /usr/bin/python3 bench/pubsub_slixmpp.py host port domain pubsub_jid ca_file \
        pub_jid pub_pw sub_jid sub_pw node N W

The same work as bench/pubsub_ref.c (see there for the details), written as a slixmpp user would:
two ClientXMPP objects on one asyncio loop, the xep_0060 plugin for the requests and its
pubsub_publish event for notifications, xep_0198 because the other two clients use stream
management too, and W coroutines each awaiting its publish before taking the next item. TLS is
required and verified against ca_file (the name checked is the JIDs' domain). Prints

    impl=slixmpp window=W items=N items_per_s= p50_ms= p99_ms= cpu_s= maxrss_kib= connect_s=

and exits 1 (reason on stderr) unless every item was published and notified exactly once.
Environment: PUBSUB_DEADLINE seconds for the whole run (default 300).
"""
import asyncio
import logging
import math
import os
import resource
import sys
import time
import xml.etree.ElementTree as ET

import slixmpp
from slixmpp.plugins.xep_0004 import Form

NS_BENCH = "urn:sacmrun:bench:pubsub"
PADDING = "0123456789abcdef" * 8  # 128 bytes: about 200 with the element around it


class Failed(Exception):
    pass


def client(jid, password, ca_file):
    c = slixmpp.ClientXMPP(jid, password)
    c.ca_certs = ca_file
    c.register_plugin("xep_0060")
    c.register_plugin("xep_0198")
    return c


async def connect(c, host, port):
    bound = asyncio.get_running_loop().create_future()
    c.add_event_handler("session_start", lambda _: bound.done() or bound.set_result(True))
    c.add_event_handler("failed_auth", lambda _: bound.done() or bound.set_exception(Failed("authentication failed")))
    c.add_event_handler("connection_failed", lambda e: bound.done() or bound.set_exception(Failed(str(e))))
    c.connect((host, port), force_starttls=True, disable_starttls=False)
    await bound


async def run(args, deadline):
    host, port, _, pubsub_jid, ca_file, pub_jid, pub_pw, sub_jid, sub_pw, node, n, window = args
    pub, sub = client(pub_jid, pub_pw, ca_file), client(sub_jid, sub_pw, ca_file)
    t_connect = time.monotonic()
    await asyncio.gather(connect(pub, host, port), connect(sub, host, port))
    connect_s = time.monotonic() - t_connect

    config = Form()
    config.add_field(var="pubsub#persist_items", value="0")
    config.add_field(var="pubsub#max_items", value="10")
    await pub["xep_0060"].create_node(pubsub_jid, node, config=config)

    seen = bytearray(n)
    latency_ms = []
    counts = {"acked": 0, "duplicates": 0}
    all_notified = asyncio.get_running_loop().create_future()

    def fail(why):  # slixmpp swallows what a handler raises: end the run through the future
        if not all_notified.done():
            all_notified.set_exception(Failed(why))

    def on_publish(msg):
        arrived = time.monotonic()
        if msg["from"] != pubsub_jid or msg["pubsub_event"]["items"]["node"] != node:
            return
        payload = msg["pubsub_event"]["items"]["item"]["payload"]
        if payload is None or payload.tag != "{%s}bench" % NS_BENCH:
            return fail("a notification without a bench payload")
        seq = int(payload.get("seq"))
        if not 1 <= seq <= n:
            return fail("a notification for item %d, not one of 1..%d" % (seq, n))
        if seen[seq - 1]:
            counts["duplicates"] += 1
            return
        seen[seq - 1] = 1
        latency_ms.append((arrived - float(payload.get("t"))) * 1e3)
        if len(latency_ms) == n and not all_notified.done():
            all_notified.set_result(True)

    sub.add_event_handler("pubsub_publish", on_publish)
    await sub["xep_0060"].subscribe(pubsub_jid, node, bare=False)

    next_seq = 0

    async def publisher():
        nonlocal next_seq
        while next_seq < n:
            next_seq += 1
            seq = next_seq
            payload = ET.Element("{%s}bench" % NS_BENCH, seq=str(seq), t="%.9f" % time.monotonic())
            payload.text = PADDING
            await pub["xep_0060"].publish(pubsub_jid, node, id="i%d" % seq, payload=payload)
            counts["acked"] += 1

    t_first, cpu_first = time.monotonic(), time.process_time()
    await asyncio.gather(*(publisher() for _ in range(min(window, n))))
    await asyncio.wait_for(all_notified, max(1.0, deadline - (time.monotonic() - t_connect)))
    t_last, cpu_last = time.monotonic(), time.process_time()

    try:  # measuring is over; a refused delete only leaves a node behind
        await pub["xep_0060"].delete_node(pubsub_jid, node)
    except slixmpp.exceptions.IqError as e:
        print("pubsub_slixmpp.py: deleting node %s refused: %s" % (node, e), file=sys.stderr)
    await asyncio.gather(pub.disconnect(), sub.disconnect())

    if len(latency_ms) != n or counts["acked"] != n or counts["duplicates"]:
        raise Failed("%d of %d notifications, %d acknowledged, %d duplicates"
                     % (len(latency_ms), n, counts["acked"], counts["duplicates"]))
    latency_ms.sort()

    def percentile(p):  # nearest rank, as the other two clients
        return latency_ms[min(n, max(1, math.ceil(p * n))) - 1]

    print("impl=slixmpp window=%d items=%d items_per_s=%.1f p50_ms=%.3f p99_ms=%.3f cpu_s=%.3f "
          "maxrss_kib=%d connect_s=%.4f"
          % (window, n, n / (t_last - t_first), percentile(0.50), percentile(0.99), cpu_last - cpu_first,
             resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, connect_s))


def main(argv):
    if len(argv) != 13:
        print("usage: pubsub_slixmpp.py host port domain pubsub_jid ca_file pub_jid pub_pw sub_jid sub_pw "
              "node N W", file=sys.stderr)
        return 2
    args = argv[1:]
    try:
        args[1], args[10], args[11] = int(args[1]), int(args[10]), int(args[11])
    except ValueError:
        print("pubsub_slixmpp.py: port, N and W must be whole numbers", file=sys.stderr)
        return 2
    deadline = float(os.environ.get("PUBSUB_DEADLINE", "300"))
    logging.basicConfig(level=logging.ERROR)
    try:
        asyncio.run(asyncio.wait_for(run(args, deadline), deadline))
    except (Failed, slixmpp.exceptions.IqError, slixmpp.exceptions.IqTimeout, asyncio.TimeoutError) as e:
        print("pubsub_slixmpp.py: %s" % (e or type(e).__name__), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
