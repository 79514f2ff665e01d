"""Reference for bench/api.py and bench/push.py: bare Tornado handlers answering a constant JSON
body (GET /api/users/{id}; POST /api/push/{id}, which reads the body and does nothing with it)."""

from __future__ import annotations

import asyncio
import sys

import tornado.web
import uvloop

BODY = b'{"cloud_id":"002738","status":"ok","total_events_logged":1234}'


class Constant(tornado.web.RequestHandler):
    def get(self, _: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(BODY)


class Sink(tornado.web.RequestHandler):
    def post(self, _: str) -> None:
        self.set_header("Content-Type", "application/json")
        self.finish(b'{"count":1,"written":1,"duplicates":0,"ignored":0}' if self.request.body else b"{}")


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/api/users/(.*)", Constant), (r"/api/push/(.*)", Sink)])
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
