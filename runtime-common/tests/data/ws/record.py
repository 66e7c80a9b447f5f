"""Records what a real MQTT-over-WebSocket client writes, for the
link's split properties (src/link/prop_split.rs).

    python3 record.py OUT LISTEN_PORT BROKER_PORT

listens on 127.0.0.1:LISTEN_PORT, forwards each connection to a broker's
`protocol websockets` listener on 127.0.0.1:BROKER_PORT, and appends
every byte the client sends to OUT. Point one client at LISTEN_PORT,
let it finish, then stop this with Ctrl-C."""

import socket
import sys
import threading


def pipe(src, dst, record=None):
    while data := src.recv(65536):
        if record:
            record.write(data)
            record.flush()
        dst.sendall(data)
    dst.shutdown(socket.SHUT_WR)


def main():
    out, listen_port, broker_port = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    server = socket.create_server(("127.0.0.1", listen_port))
    with open(out, "wb") as record:
        while True:
            client, _ = server.accept()
            broker = socket.create_connection(("127.0.0.1", broker_port))
            threading.Thread(target=pipe, args=(broker, client), daemon=True).start()
            threading.Thread(target=pipe, args=(client, broker, record), daemon=True).start()


if __name__ == "__main__":
    main()
