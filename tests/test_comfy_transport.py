"""How events and calls travel between the worker and its ComfyUI: the event inbox handed from the
socket's thread to a job's event loop, and the HTTP client that never goes through a proxy."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from comfy_worker.comfy.client import ComfyClient, ComfyUnavailable
from comfy_worker.comfy.events import Event, Inbox
from comfy_worker_dev.emulator import EmulatorHandle


def test_a_burst_from_another_thread_arrives_whole_in_order_with_one_wake_up() -> None:
    async def main() -> tuple[list[Event], int]:
        loop = asyncio.get_running_loop()
        inbox = Inbox(loop)
        wakes = 0
        original = loop.call_soon_threadsafe

        def counting(callback, *args, **kwargs):  # type: ignore[no-untyped-def]
            nonlocal wakes
            wakes += 1
            return original(callback, *args, **kwargs)

        loop.call_soon_threadsafe = counting  # type: ignore[method-assign]
        pusher = threading.Thread(target=lambda: [inbox.push(Event("executing", {"n": i})) for i in range(50)])
        pusher.start()
        pusher.join()
        batch = await inbox.next_batch(5.0)
        return batch, wakes

    batch, wakes = asyncio.run(main())
    assert [e.data["n"] for e in batch] == list(range(50))
    assert wakes == 1


def test_nothing_arrives_within_the_timeout_gives_an_empty_batch() -> None:
    async def main() -> tuple[list[Event], float]:
        inbox = Inbox(asyncio.get_running_loop())
        started = time.monotonic()
        return await inbox.next_batch(0.2), time.monotonic() - started

    batch, waited = asyncio.run(main())
    assert batch == []
    assert 0.19 <= waited < 2.0


def test_a_waiting_job_wakes_as_soon_as_an_event_comes() -> None:
    async def main() -> tuple[list[Event], float]:
        inbox = Inbox(asyncio.get_running_loop())
        threading.Timer(0.05, inbox.push, args=(Event("execution_start"),)).start()
        started = time.monotonic()
        return await inbox.next_batch(10.0), time.monotonic() - started

    batch, waited = asyncio.run(main())
    assert [e.type for e in batch] == ["execution_start"]
    assert waited < 5.0


def test_events_pushed_while_the_job_handles_a_batch_come_in_the_next_one() -> None:
    async def main() -> list[list[str]]:
        inbox = Inbox(asyncio.get_running_loop())
        inbox.push(Event("a"))
        first = await inbox.next_batch(1.0)
        inbox.push(Event("b"))  # the wake-up of "a" already ran: this one needs its own
        inbox.push(Event("c"))
        second = await inbox.next_batch(1.0)
        return [[e.type for e in first], [e.type for e in second]]

    assert asyncio.run(main()) == [["a"], ["b", "c"]]


def test_a_cancelled_wait_leaves_the_inbox_usable() -> None:
    async def main() -> list[Event]:
        inbox = Inbox(asyncio.get_running_loop())
        waiting = asyncio.ensure_future(inbox.next_batch(10.0))
        await asyncio.sleep(0.01)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        inbox.push(Event("late"))
        return await inbox.next_batch(1.0)

    assert [e.type for e in asyncio.run(main())] == ["late"]


def test_calls_to_comfyui_ignore_proxy_settings_meant_for_downloads(emu: EmulatorHandle,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    # A proxy that does not exist: any call routed through it would fail.
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    client = ComfyClient(emu.url, timeout=5)
    assert "system" in client.system_stats()
    assert client.history("no-such-prompt") is None
    client.close()


def test_an_unreachable_comfyui_is_a_typed_failure() -> None:
    client = ComfyClient("http://127.0.0.1:9", timeout=2)
    with pytest.raises(ComfyUnavailable, match="GET /system_stats"):
        client.system_stats()
