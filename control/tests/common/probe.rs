//! The L4 endpoints of the truth tables with real traffic (NetworkPolicy, AdminNetworkPolicy,
//! security groups; kernel and DPDK pods): a server answering its name on TCP and UDP 80/81,
//! and a prober that tries many `ip/proto/port` targets at once.

use std::path::Path;

/// Every pod's server: its name on TCP and UDP ports 80 and 81.
pub const SERVER: &str = r#"
import socket, sys, threading
name = sys.argv[1].encode()
def tcp(port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port))
    s.listen(256)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(name)
        except OSError:
            pass
        c.close()
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("0.0.0.0", port))
    while True:
        _, peer = s.recvfrom(2048)
        s.sendto(name, peer)
for p in (80, 81):
    threading.Thread(target=tcp, args=(p,), daemon=True).start()
    threading.Thread(target=udp, args=(p,), daemon=True).start()
threading.Event().wait()
"#;

/// Probes every `ip/proto/port` argument at once; prints `target 1|0` per line.
pub const PROBER: &str = r#"
import socket, sys, threading
timeout = float(sys.argv[1])
targets = sys.argv[2:]
res = {}
def probe(t):
    ip, proto, port = t.split("/")
    ok = False
    try:
        if proto == "tcp":
            s = socket.create_connection((ip, int(port)), timeout=timeout)
            s.settimeout(timeout)
            ok = len(s.recv(64)) > 0
        else:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.settimeout(timeout)
            s.sendto(b"x", (ip, int(port)))
            ok = len(s.recvfrom(64)[0]) > 0
        s.close()
    except OSError:
        ok = False
    res[t] = ok
ths = [threading.Thread(target=probe, args=(t,)) for t in targets]
for t in ths:
    t.start()
for t in ths:
    t.join()
for t in targets:
    print(t, 1 if res[t] else 0)
"#;

/// Writes `server.py` and `prober.py` into `dir`.
pub fn write_scripts(dir: &Path) {
    std::fs::write(dir.join("server.py"), SERVER).unwrap();
    std::fs::write(dir.join("prober.py"), PROBER).unwrap();
}
