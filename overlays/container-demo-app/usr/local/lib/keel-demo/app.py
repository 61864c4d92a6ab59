#!/usr/bin/python3
"""The Keel demo's application tier: a small list of items kept in PostgreSQL.

Every answer says which machine and which container served it, so a person (or the test)
sees the load balancer spread requests and move them after a machine dies. Stateless: any
number of instances share the database.

Configuration (environment): DB_ADDR (host:port of PostgreSQL), DB_PASSWORD, MACHINE (the
host's name, from the unit's %H), INSTANCE (the unit's %i), PORT (default 8080).
"""

import html
import json
import os
import socket
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import psycopg2

MACHINE = os.environ.get("MACHINE", "unknown")
INSTANCE = os.environ.get("INSTANCE", "")
CONTAINER = socket.gethostname()
PORT = int(os.environ.get("PORT", "8080"))

_local = threading.local()


def log(message):
    print(message, file=sys.stderr, flush=True)


def connect():
    """A connection for this thread, made (again) when there is none or it broke."""
    conn = getattr(_local, "conn", None)
    if conn is not None and not conn.closed:
        return conn
    host, _, port = os.environ.get("DB_ADDR", "").rpartition(":")
    conn = psycopg2.connect(
        host=host,
        port=int(port or 5432),
        user="postgres",
        password=os.environ.get("DB_PASSWORD", ""),
        dbname="postgres",
        connect_timeout=3,
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute(
            "CREATE TABLE IF NOT EXISTS items ("
            " id serial PRIMARY KEY, text text NOT NULL,"
            " machine text NOT NULL, created timestamptz NOT NULL DEFAULT now())"
        )
    _local.conn = conn
    return conn


def query(sql, args=()):
    """Runs sql, retrying once on a broken connection (the database restarted)."""
    for attempt in (1, 2):
        try:
            with connect().cursor() as cur:
                cur.execute(sql, args)
                return cur.fetchall() if cur.description else []
        except psycopg2.OperationalError:
            _local.conn = None
            if attempt == 2:
                raise
    return []


def who():
    return {"machine": MACHINE, "container": CONTAINER, "instance": INSTANCE}


PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Keel demo</title>
<style>
body {{ font-family: sans-serif; max-width: 40em; margin: 2em auto; color: #222; }}
.served {{ background: #eef6ee; border: 1px solid #9c9; padding: .6em 1em; }}
li small {{ color: #777; }}
</style></head>
<body>
<h1>Keel demo: items</h1>
<p class="served" id="served">Served by machine <b id="machine">{machine}</b>,
container <b id="container">{container}</b> (app@{instance}).</p>
<form method="post" action="/items">
<input name="text" placeholder="a new item" required maxlength="200">
<button type="submit">Add</button>
</form>
<h2>{count} items</h2>
<ul id="items">
{items}
</ul>
<p><small>Reload to see another instance answer. The items live in PostgreSQL on one
machine; the application runs on several, behind nginx.</small></p>
</body></html>
"""


class Handler(BaseHTTPRequestHandler):
    server_version = "keel-demo-app"

    def log_message(self, fmt, *args):
        log("%s %s" % (self.address_string(), fmt % args))

    def send(self, status, body, content_type):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        self.send_header("X-Served-By", "%s/%s" % (MACHINE, CONTAINER))
        self.end_headers()
        self.wfile.write(data)

    def send_json(self, status, value):
        self.send(status, json.dumps(value) + "\n", "application/json")

    def items(self):
        rows = query("SELECT id, text, machine FROM items ORDER BY id")
        return [{"id": r[0], "text": r[1], "machine": r[2]} for r in rows]

    def do_GET(self):
        path = urllib.parse.urlparse(self.path).path
        try:
            if path == "/":
                items = self.items()
                listed = "\n".join(
                    "<li>%s <small>(added on %s)</small></li>"
                    % (html.escape(i["text"]), html.escape(i["machine"]))
                    for i in items
                )
                page = PAGE.format(count=len(items), items=listed,
                                   **{k: html.escape(v) for k, v in who().items()})
                self.send(200, page, "text/html; charset=utf-8")
            elif path == "/api/whoami":
                self.send_json(200, who())
            elif path == "/api/items":
                self.send_json(200, dict(who(), items=self.items()))
            elif path == "/health":
                query("SELECT 1")
                self.send_json(200, dict(who(), database="ok"))
            else:
                self.send_json(404, {"error": "no such page"})
        except psycopg2.Error as e:
            self.send_json(503, dict(who(), error="database: %s" % str(e).strip()))

    def do_POST(self):
        path = urllib.parse.urlparse(self.path).path
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace")
        if self.headers.get("Content-Type", "").startswith("application/json"):
            text = str(json.loads(body or "{}").get("text", ""))
        else:
            text = urllib.parse.parse_qs(body).get("text", [""])[0]
        text = text.strip()[:200]
        if path not in ("/items", "/api/items") or not text:
            self.send_json(400, {"error": "POST /items with a text"})
            return
        try:
            query("INSERT INTO items (text, machine) VALUES (%s, %s)", (text, MACHINE))
        except psycopg2.Error as e:
            self.send_json(503, dict(who(), error="database: %s" % str(e).strip()))
            return
        if path == "/items":
            self.send_response(303)
            self.send_header("Location", "/")
            self.send_header("Content-Length", "0")
            self.end_headers()
        else:
            self.send_json(201, dict(who(), text=text))


def main():
    # The database may still be starting: wait for it, so the first requests find the table.
    deadline = time.time() + 120
    while True:
        try:
            query("SELECT 1")
            break
        except psycopg2.Error as e:
            if time.time() > deadline:
                log("database not reachable yet (%s); serving anyway" % str(e).strip())
                break
            time.sleep(2)
    server = ThreadingHTTPServer(("0.0.0.0", PORT), Handler)
    server.daemon_threads = True
    log("app@%s serving on :%d (machine %s, container %s)" % (INSTANCE, PORT, MACHINE, CONTAINER))
    server.serve_forever()


if __name__ == "__main__":
    main()
