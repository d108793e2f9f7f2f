"""A small HTTP hook service for the hook tests, speaking SFTPGo's hook
protocol: POST /auth (external auth), GET /connect (post-connect),
POST /login (post-login, recorded). Prints its port, then serves.

usage: hook_server.py HOME_ROOT RECORD_FILE [CERT_FILE KEY_FILE]
(with a certificate and key it serves HTTPS)
"""
import json
import sys
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

HOME, RECORD = sys.argv[1], sys.argv[2]
STEPS = {}


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, status, body=b""):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urllib.parse.urlparse(self.path)
        q = urllib.parse.parse_qs(url.query)
        if url.path == "/connect":
            ip = q.get("ip", [""])[0]
            self.reply(403 if ip == "127.0.0.2" else 200)
        else:
            self.reply(404)

    def do_POST(self):
        url = urllib.parse.urlparse(self.path)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"{}")
        if url.path == "/auth":
            if body.get("username") == "web" and body.get("password") == "web-pw" \
                    and body.get("protocol") == "SSH" and body.get("ip"):
                user = {"username": "web", "home_dir": HOME + "/web",
                        "permissions": {"/": ["*"]}}
                self.reply(200, json.dumps(user).encode())
            else:
                self.reply(401)
        elif url.path == "/pre":
            q = urllib.parse.parse_qs(url.query)
            if q.get("protocol") != ["SSH"] or not q.get("login_method"):
                self.reply(400)
            elif body.get("username") == "frozen":
                self.reply(200, b'{"status": 0}')
            else:
                self.reply(204)
        elif url.path == "/ki":
            # Rounds by step; the request id must stay the same.
            step, rid = body.get("step"), body.get("request_id")
            if step == 1:
                STEPS[rid] = 1
                reply = {"questions": ["Password: "], "check_password": 1}
            elif step == 2 and STEPS.get(rid) == 1 and body.get("answers") == ["OK"]:
                STEPS[rid] = 2
                reply = {"instruction": "one-time code", "questions": ["Code: "], "echos": [True]}
            elif step == 3 and STEPS.get(rid) == 2:
                reply = {"auth_result": 1 if body.get("answers") == ["424242"] else -1}
            else:
                reply = {"auth_result": -1}
            self.reply(200, json.dumps(reply).encode())
        elif url.path == "/login":
            q = urllib.parse.parse_qs(url.query)
            with open(RECORD, "a") as f:
                f.write("%s %s %s\n" % (q["status"][0], q["login_method"][0], body.get("username")))
            self.reply(200)
        else:
            self.reply(404)


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
if len(sys.argv) > 4:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[3], sys.argv[4])
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
print(server.server_address[1], flush=True)
server.serve_forever()
