"""Free 127.0.0.1 ports for the multi-process (multi-worker) tests."""

import socket


def free_ports(count):
    """`count` distinct ports that were free a moment ago."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def free_consecutive_ports(count, attempts=50):
    """The first of `count` consecutive free ports (Slurm's resolver numbers tasks from a base)."""
    for _ in range(attempts):
        base = free_ports(1)[0]
        sockets = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
        return base
    raise RuntimeError(f"No {count} consecutive free ports found.")
