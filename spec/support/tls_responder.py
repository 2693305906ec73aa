"""A TLS server that answers with exact bytes, for the HTTP client's specs (spec/http_client_spec.lua).

Real servers (sacm.http, nginx) answer only well-formed HTTP; this one sends what they will not:
bodies delimited by the connection's end (with and without TLS close_notify), interim responses,
malformed status lines, chunked bodies of any size, no answer at all, and a kept-alive connection
closed under the client's next request.

    python3 tls_responder.py CERT KEY PORT_FILE

Listens on 127.0.0.1 (a free port, written to PORT_FILE once listening) until killed. The
request path picks the answer (see ANSWERS); anything else is 404.
"""
import os
import socket
import ssl
import sys
import threading


def chunked(body, size):
    out = b""
    for i in range(0, len(body), size):
        part = body[i:i + size]
        out += b"%x;ext=1\r\n" % len(part) + part + b"\r\n"
    return out + b"0\r\nX-Trailer: t\r\n\r\n"


BIG = bytes(range(256)) * 4096  # 1 MiB

# path -> (response bytes, how the connection ends: "notify" (close_notify, then close),
# "cut" (TCP close without close_notify), "hold" (never answer, never close), "drop-next" (keep
# the connection, and close it without an answer when the next request comes))
ANSWERS = {
    "/close-delimited": (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n" + BIG, "notify"),
    "/http10": (b"HTTP/1.0 200 OK\r\n\r\nold style", "notify"),
    "/truncated": (b"HTTP/1.1 200 OK\r\n\r\npart of a body", "cut"),
    "/short": (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nnot 100 bytes", "notify"),
    "/chunked": (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked(BIG, 7000), "notify"),
    "/interim": (b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                 b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSet-Cookie: a=1\r\nSet-Cookie: b=2\r\n\r\nfinal", "notify"),
    "/malformed": (b"HTTP/1.1 2x0 Strange\r\nContent-Length: 0\r\n\r\n", "notify"),
    "/nothing": (b"", "notify"),
    # (Connection: close: a 304 is complete at its head, so the client could keep the connection)
    "/not-modified": (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 1234\r\nETag: \"v1\"\r\n"
                      b"Connection: close\r\n\r\n", "hold"),
    "/silent": (b"", "hold"),
    # the body is the connection's number: "connection 3" (see serve)
    "/keep-then-drop": (None, "drop-next"),
    "/keep-alive-timeout": (b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nKeep-Alive: timeout=1, max=5\r\n\r\nok",
                            "drop-next"),
}


def read_head(conn):
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        data += chunk
    return data


def serve(conn, number):
    try:
        data = read_head(conn)
        if data is None:
            return
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        path = line.split(" ")[1] if line.count(" ") >= 2 else "/"
        answer, end = ANSWERS.get(path, (b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n", "notify"))
        if answer is None:
            body = b"connection %d" % number
            answer = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body
        conn.sendall(answer)
        if end == "drop-next":
            read_head(conn)  # then close, as a server whose idle timeout ran out just then
        elif end == "hold":
            threading.Event().wait()
        elif end == "notify":
            conn.unwrap()  # sends close_notify and waits for the peer's (or its close)
    except (OSError, ssl.SSLError):
        pass
    finally:
        conn.close()  # without unwrap(): no close_notify


def main():
    cert, key, port_file = sys.argv[1:4]
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    with open(port_file + ".tmp", "w") as f:
        f.write(str(listener.getsockname()[1]))
    os.rename(port_file + ".tmp", port_file)
    number = 0
    while True:
        raw, _ = listener.accept()
        number += 1
        try:
            conn = ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            continue
        threading.Thread(target=serve, args=(conn, number), daemon=True).start()


if __name__ == "__main__":
    main()
