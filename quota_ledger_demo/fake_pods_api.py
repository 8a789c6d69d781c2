"""The pods endpoints' wire protocol: paginated lists and watch streams.

Served by `quota_ledger_demo.fake_apiserver.FakeApiServer`; semantics follow
https://kubernetes.io/docs/reference/using-api/api-concepts/.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
from collections.abc import Callable
from typing import Any, Protocol

from aiohttp import web

from quota_ledger_demo.fake_store import Pod, PodStore, ResourceVersionExpired, StoreEvent

DROP, CLOSE = "drop", "close"  # control messages for open watch streams
Matcher = Callable[[Pod | None], bool]


class WatchServer(Protocol):
    """What a watch stream reads of the `FakeApiServer` that serves it (named, not imported:
    the server imports these handlers)."""

    store: PodStore
    streams: set[asyncio.Queue]
    bookmark_interval_seconds: float
    default_watch_timeout_seconds: float
    drop_after_events_count: int | None
    watch_seconds_cap: float | None


def status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    """A metav1.Status body, as every API error carries."""
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    }


def error_response(code: int, reason: str, message: str) -> web.Response:
    return web.json_response(status_body(code, reason, message), status=code)


def as_bool(value: str | None) -> bool:
    # kubernetes_asyncio sends Python's str(True) = "True"; Go's strconv.ParseBool accepts it.
    return (value or "").strip().lower() in {"true", "1", "t"}


def with_kind(pod: Pod) -> Pod:
    # List items carry no kind/apiVersion on the wire; single objects and watch events do.
    return {"kind": "Pod", "apiVersion": "v1", **pod}


def list_pods(store: PodStore, query: Any, matches: Matcher) -> web.Response:
    """A (possibly paginated) PodList, consistent at one resourceVersion across pages.
    https://kubernetes.io/docs/reference/using-api/api-concepts/#retrieving-large-results-sets-in-chunks
    """
    try:
        limit = max(0, int(query.get("limit") or 0))
    except ValueError:
        return error_response(400, "BadRequest", f"invalid limit: {query.get('limit')!r}")
    requested_rv = query.get("resourceVersion") or ""
    start_after = ""
    try:
        if token := query.get("continue"):
            try:
                decoded = json.loads(base64.urlsafe_b64decode(token.encode()))
                snapshot_rv, start_after = int(decoded["rv"]), decoded["start"]
            except (ValueError, KeyError, TypeError, binascii.Error):
                return error_response(400, "BadRequest", "continue key is not valid")
        elif requested_rv not in {"", "0"} and int(requested_rv) > store.resource_version:
            return error_response(
                504,
                "Timeout",
                f"Too large resource version: {requested_rv}, current: {store.resource_version}",
            )
        elif requested_rv not in {"", "0"} and limit:
            snapshot_rv = int(requested_rv)  # resourceVersionMatch=Exact semantics
        else:
            snapshot_rv = store.resource_version
        state = store.snapshot(snapshot_rv)
    except ResourceVersionExpired as exc:
        message = (
            "The provided continue parameter is too old to display a consistent list "
            "result. You can start a new list without the continue parameter."
            if query.get("continue")
            else str(exc)
        )
        return error_response(410, "Expired", message)
    except ValueError:
        return error_response(400, "BadRequest", f"invalid resource version: {requested_rv!r}")
    keys = [k for k in sorted(state) if "/".join(k) > start_after and matches(state[k])]
    page = keys[:limit] if limit else keys
    metadata: dict[str, Any] = {"resourceVersion": str(snapshot_rv)}
    if len(page) < len(keys):
        token_data = {"v": "meta.k8s.io/v1", "rv": snapshot_rv, "start": "/".join(page[-1])}
        metadata["continue"] = base64.urlsafe_b64encode(json.dumps(token_data).encode()).decode()
        if not query.get("labelSelector") and not query.get("fieldSelector"):
            metadata["remainingItemCount"] = len(keys) - len(page)
    body = {
        "kind": "PodList",
        "apiVersion": "v1",
        "metadata": metadata,
        "items": [state[k] for k in page],
    }
    return web.json_response(body)


async def watch_pods(
    server: WatchServer, request: web.Request, matches: Matcher
) -> web.StreamResponse:
    """Stream watch events as JSON lines.
    https://kubernetes.io/docs/reference/using-api/api-concepts/#semantics-for-watch

    * resourceVersion absent or "0": synthetic ADDED for every matching pod, then changes
      (the real server does this for both; "0" may start from a slightly stale cache).
    * resourceVersion N: replay history after N, then changes; N older than the kept
      history: one ERROR event (410 Expired) on a 200 response, then a clean end.
    * Changes are filtered per selector as the watch cache does: a pod that starts matching
      arrives as ADDED, one that stops matching as DELETED.
    """
    query = request.query
    requested_rv = query.get("resourceVersion") or "0"
    timeout_seconds = float(query.get("timeoutSeconds") or server.default_watch_timeout_seconds)
    if server.watch_seconds_cap is not None:
        timeout_seconds = min(timeout_seconds, server.watch_seconds_cap)
    bookmarks = as_bool(query.get("allowWatchBookmarks"))
    # Subscribe and read the backlog with no await in between, so no event is missed.
    queue: asyncio.Queue = asyncio.Queue()
    unsubscribe = server.store.subscribe(queue.put_nowait)
    server.streams.add(queue)
    try:
        backlog: list[tuple[str, Pod]] = []
        error: dict[str, Any] | None = None
        try:
            start_rv = int(requested_rv)
            if start_rv == 0:
                start_rv = server.store.resource_version
                snapshot = server.store.snapshot(start_rv)
                backlog = [("ADDED", snapshot[k]) for k in sorted(snapshot) if matches(snapshot[k])]
            else:
                backlog = filter_events(server.store.events_since(start_rv), matches)
            # Every event up to now is in the backlog (or filtered out); a future start_rv is
            # kept so that later events up to it are skipped, as the real server waits for it.
            progress_rv = max(start_rv, server.store.resource_version)
        except ResourceVersionExpired as exc:
            error = status_body(410, "Expired", str(exc))
        except ValueError:
            return error_response(400, "BadRequest", f"invalid resource version: {requested_rv!r}")
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        if error is not None:
            await _send(response, "ERROR", error)
            await response.write_eof()
            return response
        return await _stream(
            server,
            request,
            response,
            queue,
            backlog,
            matches,
            progress_rv,
            timeout_seconds,
            bookmarks,
        )
    finally:
        unsubscribe()
        server.streams.discard(queue)


def filter_events(events: list[StoreEvent], matches: Matcher) -> list[tuple[str, Pod]]:
    out = []
    for event in events:
        was, now = matches(event.prev), matches(event.obj)
        if event.type == "DELETED":
            if was:
                out.append(("DELETED", event.obj))
        elif was and now:
            out.append(("MODIFIED", event.obj))
        elif now:
            out.append(("ADDED", event.obj))
        elif was:
            out.append(("DELETED", event.obj))
    return out


async def _send(response: web.StreamResponse, event_type: str, obj: Pod) -> None:
    line = json.dumps({"type": event_type, "object": obj}, separators=(",", ":")) + "\n"
    await response.write(line.encode())


async def _stream(
    server: WatchServer,
    request: web.Request,
    response: web.StreamResponse,
    queue: asyncio.Queue,
    backlog: list[tuple[str, Pod]],
    matches: Matcher,
    progress_rv: int,
    timeout_seconds: float,
    bookmarks: bool,
) -> web.StreamResponse:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_seconds
    next_bookmark_at = loop.time() + server.bookmark_interval_seconds
    sent_events = 0
    pending = list(backlog)
    while True:
        for event_type, obj in pending:
            limit = server.drop_after_events_count
            if limit is not None and sent_events >= limit:
                return await _abort(request, response)
            await _send(response, event_type, with_kind(obj))
            sent_events += 1
            progress_rv = max(progress_rv, int(obj["metadata"]["resourceVersion"]))
            if limit is not None and sent_events >= limit:
                return await _abort(request, response)
        now = loop.time()
        if now >= deadline:
            if bookmarks:  # the real server sends a last bookmark just before timing out
                await _bookmark(server.store, response, queue, progress_rv)
            await response.write_eof()
            return response
        if bookmarks and now >= next_bookmark_at:
            await _bookmark(server.store, response, queue, progress_rv)
            next_bookmark_at = now + server.bookmark_interval_seconds
        wait_until = min(deadline, next_bookmark_at) if bookmarks else deadline
        try:
            async with asyncio.timeout(max(0.0, wait_until - now)):
                item = await queue.get()
        except TimeoutError:
            pending = []
            continue
        if item == DROP:
            return await _abort(request, response)
        if item == CLOSE:
            # the client may already be gone (server shutting down under it): that is fine
            with contextlib.suppress(ConnectionResetError):
                await response.write_eof()
            return response
        if item.rv <= progress_rv:
            pending = []  # already sent in the backlog
            continue
        pending = filter_events([item], matches)
        progress_rv = max(progress_rv, item.rv)


async def _bookmark(
    store: PodStore, response: web.StreamResponse, queue: asyncio.Queue, progress_rv: int
) -> None:
    # With nothing queued, everything up to the store's current version has been handled.
    rv = store.resource_version if queue.empty() else progress_rv
    obj = {"kind": "Pod", "apiVersion": "v1", "metadata": {"resourceVersion": str(rv)}}
    await _send(response, "BOOKMARK", obj)


async def _abort(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Reset the TCP connection without the terminating chunk: a broken stream, not an end.
    Events already written are flushed first (abort() would discard the send buffer)."""
    transport = request.transport
    if transport is not None:
        for _ in range(100):
            if transport.get_write_buffer_size() == 0:
                break
            await asyncio.sleep(0.01)
        transport.abort()
    return response
