"""`app.threads.joined`: a cancelled caller waits for its thread, so no work outlives its task."""

from __future__ import annotations

import asyncio
import contextvars
import threading

import pytest

from app.threads import Stopped, joined


def test_a_cancelled_caller_waits_for_its_thread() -> None:
    release, started = threading.Event(), threading.Event()
    finished: list[str] = []

    def work() -> str:
        started.set()
        release.wait(5)
        finished.append("done")
        return "done"

    async def main() -> None:
        task = asyncio.create_task(joined(work))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        await asyncio.sleep(0.05)
        assert not task.done(), "the cancellation must wait while the thread still runs"
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert finished == ["done"], "the thread had ended by the time the cancellation went on"

    asyncio.run(main())


def test_stoppable_work_is_told_to_stop() -> None:
    started = threading.Event()
    seen: list[bool] = []

    def work(*, stop: threading.Event) -> None:
        started.set()
        seen.append(stop.wait(5))
        raise Stopped("told to stop")

    async def main() -> None:
        task = asyncio.create_task(joined(work, stoppable=True))
        await asyncio.to_thread(started.wait, 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert seen == [True]

    asyncio.run(main())


def test_results_errors_and_contextvars_pass_through() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="unset")

    async def main() -> None:
        var.set("caller")
        assert await joined(lambda a, b: f"{a}{b}{var.get()}", 1, 2) == "12caller"
        with pytest.raises(ZeroDivisionError):
            await joined(lambda: 1 / 0)

    asyncio.run(main())
