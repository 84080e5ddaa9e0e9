#!/bin/sh
# Serves HTTP on the ports a peer probes (stratus.serve_ports=P+P…,
# default 8080) until some client asks for /done, or for
# stratus.serve_secs (default 600) at most. Each answer names this host,
# so a probe can tell who answered.
exec python3 - <<'PYTHON'
import http.server, os, socket, socketserver, threading

ports = [int(p) for p in os.environ.get("STRATUS_SERVE_PORTS", "8080").split("+")]
limit = float(os.environ.get("STRATUS_SERVE_SECS", "600"))
done = threading.Event()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = ("served-by %s port %d\n" % (socket.gethostname(), self.server.server_port)).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print("SERVE %s %s from %s" % (self.server.server_port, self.path, self.client_address[0]), flush=True)
        if self.path == "/done":
            done.set()

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    allow_reuse_address = True
    daemon_threads = True


for port in ports:
    server = Server(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
print("SERVE listening " + " ".join(map(str, ports)), flush=True)
print("SERVE stopped " + ("done" if done.wait(limit) else "timeout"), flush=True)
PYTHON
