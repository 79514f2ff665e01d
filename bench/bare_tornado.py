"""Reference for bench/api.py: a bare Tornado handler returning a constant JSON body."""

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


async def main(port: int) -> None:
    app = tornado.web.Application([(r"/api/users/(.*)", Constant)])
    app.listen(port, "127.0.0.1")
    await asyncio.Event().wait()


if __name__ == "__main__":
    uvloop.run(main(int(sys.argv[1])))
