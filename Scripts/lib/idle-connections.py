"""Opens N TCP connections to a ringlogd, pings once on each (so the server has fully set each one
up), then holds them idle until stdin closes. Prints "ready N" once all are open and answered.
Measurement aid for the memory floor in Scripts/bench-floors; loopback only."""
import socket
import struct
import sys

def crc32c(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF

def ping(request_id: int) -> bytes:
    # Request header (docs/protocol.md): magic "RL", version 1, opcode 0x02 PING, empty body.
    head = b"RL" + struct.pack("<BBIQIII", 1, 0x02, 0, request_id, 0, 0, 0)
    return head + struct.pack("<I", crc32c(head))

def main() -> None:
    host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if host not in ("127.0.0.1", "::1"):
        sys.exit("loopback only")
    connections = []
    for index in range(count):
        connection = socket.create_connection((host, port))
        connection.sendall(ping(index + 1))
        connections.append(connection)
    for connection in connections:
        response = b""
        while len(response) < 32:
            chunk = connection.recv(32 - len(response))
            if not chunk:
                sys.exit("server closed a connection")
            response += chunk
        if response[:2] != b"rl":
            sys.exit("unexpected response")
    print(f"ready {len(connections)}", flush=True)
    sys.stdin.read()

main()
