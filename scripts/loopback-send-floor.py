#!/usr/bin/env python3
# Usage: python3 scripts/loopback-send-floor.py [SOCKETS=1000] [ROUNDS=200] (docs/PERFORMANCE.md, "Fan-out")
# Kernel floor of one fan-out delivery on loopback: one send() of a small frame per socket,
# 1000 sockets, receivers drained by a separate process (epoll). Reports the sender's
# system CPU per send (what the kernel charges the sending process, including loopback's
# receive path that runs in the sender's context) and user CPU.
import os, socket, sys, time, select
N = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
ROUNDS = int(sys.argv[2]) if len(sys.argv) > 2 else 200
MSG = b"\x81\x7e\x00\x96" + b"x" * 150  # a WebSocket text frame header + 150 bytes
lst = socket.socket(); lst.bind(("127.0.0.1", 0)); lst.listen(N)
port = lst.getsockname()[1]
r, w = os.pipe()
pid = os.fork()
if pid == 0:  # receivers
    os.close(r)
    socks = []
    for _ in range(N):
        s = socket.create_connection(("127.0.0.1", port)); s.setblocking(False); socks.append(s)
    os.write(w, b"1")
    ep = select.epoll()
    for s in socks: ep.register(s.fileno(), select.EPOLLIN)
    byfd = {s.fileno(): s for s in socks}
    want = N * ROUNDS * len(MSG); got = 0
    while got < want:
        for fd, _ in ep.poll(1):
            try: got += len(byfd[fd].recv(65536))
            except BlockingIOError: pass
    os._exit(0)
os.close(w)
conns = [lst.accept()[0] for _ in range(N)]
for c in conns: c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
os.read(r, 1)
t0 = os.times(); w0 = time.time()
for _ in range(ROUNDS):
    for c in conns: c.send(MSG)
    time.sleep(0.002)
t1 = os.times(); w1 = time.time()
os.waitpid(pid, 0)
sends = N * ROUNDS
print(f"{sends} sends: sender system CPU {1e6*(t1.system-t0.system)/sends:.2f} us/send, user {1e6*(t1.user-t0.user)/sends:.2f} us/send (Python), wall {w1-w0:.1f} s")
