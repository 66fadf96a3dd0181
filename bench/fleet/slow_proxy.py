import os, socket, sys, threading, time
# Usage: slow_proxy.py SOCKET CONNECT_DELAY PER_REQUEST_DELAY: a libvirt ext transport with latency.
sock, connect_delay, rtt = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
time.sleep(connect_delay)
s = socket.socket(socket.AF_UNIX)
s.connect(sock)
def up():
    while True:
        d = os.read(0, 65536)
        if not d:
            s.shutdown(socket.SHUT_WR)
            break
        time.sleep(rtt)
        s.sendall(d)
threading.Thread(target=up, daemon=True).start()
while True:
    d = s.recv(65536)
    if not d:
        break
    os.write(1, d)
