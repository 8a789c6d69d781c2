"""In-memory pod store behind the fake API server: resourceVersions, event history, selectors.

The store mimics what etcd plus the kube-apiserver watch cache give a client:

* one global, monotonic resourceVersion (an integer rendered as a string) bumped by every change;
* a bounded history of change events, so a watch can resume from an older version until that
  version is compacted away (then the client gets 410 Expired);
* consistent snapshots "as of" a resourceVersion, which paginated lists need.

See https://kubernetes.io/docs/reference/using-api/api-concepts/#efficient-detection-of-changes
and https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions.
Everything here is synchronous and does no I/O; the HTTP layer is `quota_ledger_demo.fake_apiserver`.
"""

from __future__ import annotations

import copy
import re
import secrets
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

Pod = dict[str, Any]
PodChange = Pod | Callable[[Pod], Pod | None]


def format_time(moment_at: datetime) -> str:
    """RFC 3339 with second precision and `Z`, as the API server renders metav1.Time."""
    return moment_at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ResourceVersionExpired(Exception):
    """The requested resourceVersion is older than the history kept (etcd compaction)."""

    def __init__(self, requested_rv: int, oldest_rv: int) -> None:
        # Same text as the real watch cache: "too old resource version: <asked> (<oldest - 1>)".
        super().__init__(f"too old resource version: {requested_rv} ({oldest_rv})")
        self.requested_rv = requested_rv
        self.oldest_rv = oldest_rv


class SelectorError(ValueError):
    """A label or field selector the API server would reject with 400 Bad Request."""


@dataclass(frozen=True)
class StoreEvent:
    """One change: `obj` is the object after the change (the last state for DELETED),
    `prev` the object before it (None for ADDED). Both carry their own resourceVersion."""

    type: str
    rv: int
    obj: Pod
    prev: Pod | None


def _key(pod: Pod) -> tuple[str, str]:
    meta = pod["metadata"]
    return meta["namespace"], meta["name"]


class PodStore:
    """Pods keyed by (namespace, name) with a global resourceVersion and a bounded history."""

    def __init__(self, *, history_limit: int = 1000, first_rv: int = 1000) -> None:
        self.history_limit = history_limit
        self.resource_version = first_rv
        # Watches may resume from any RV >= compacted_rv; older ones get 410.
        self.compacted_rv = first_rv
        self._pods: dict[tuple[str, str], Pod] = {}
        self._history: deque[StoreEvent] = deque()
        self._listeners: list[Callable[[StoreEvent], None]] = []

    # --- reading -------------------------------------------------------------------------

    def pods(self) -> list[Pod]:
        """Deep copies of all current pods, ordered like etcd keys (namespace, then name)."""
        return [copy.deepcopy(self._pods[k]) for k in sorted(self._pods)]

    def get(self, namespace: str, name: str) -> Pod | None:
        pod = self._pods.get((namespace, name))
        return copy.deepcopy(pod) if pod is not None else None

    def check_not_expired(self, rv: int) -> None:
        if rv < self.compacted_rv:
            raise ResourceVersionExpired(rv, self.compacted_rv)

    def events_since(self, rv: int) -> list[StoreEvent]:
        """Events with resourceVersion > rv, oldest first; raises ResourceVersionExpired."""
        self.check_not_expired(rv)
        return [event for event in self._history if event.rv > rv]

    def snapshot(self, rv: int) -> dict[tuple[str, str], Pod]:
        """The pods as they were at resourceVersion `rv` (undoes newer events)."""
        self.check_not_expired(rv)
        state = dict(self._pods)
        for event in reversed(self._history):
            if event.rv <= rv:
                break
            key = _key(event.obj)
            if event.prev is None:
                state.pop(key, None)
            else:
                state[key] = event.prev
        return state

    # --- listening -----------------------------------------------------------------------

    def subscribe(self, listener: Callable[[StoreEvent], None]) -> Callable[[], None]:
        """Call `listener` synchronously for every future event; returns the unsubscriber."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    # --- writing -------------------------------------------------------------------------

    def compact(self, keep_events: int = 0) -> None:
        """Forget all but the newest `keep_events` events, like etcd compaction."""
        while len(self._history) > keep_events:
            self.compacted_rv = self._history.popleft().rv
        if keep_events == 0:
            self.compacted_rv = self.resource_version

    def _record(self, event_type: str, obj: Pod, prev: Pod | None) -> StoreEvent:
        event = StoreEvent(event_type, int(obj["metadata"]["resourceVersion"]), obj, prev)
        self._history.append(event)
        while len(self._history) > self.history_limit:
            self.compacted_rv = self._history.popleft().rv
        for listener in list(self._listeners):
            listener(event)
        return event

    def _bump(self, pod: Pod) -> Pod:
        self.resource_version += 1
        pod["metadata"]["resourceVersion"] = str(self.resource_version)
        return pod

    def create_pod(self, pod: Pod) -> Pod:
        """Store a new pod (fills namespace, uid, creationTimestamp, generateName); returns it."""
        pod = copy.deepcopy(pod)
        pod.pop("kind", None)
        pod.pop("apiVersion", None)
        meta = pod.setdefault("metadata", {})
        meta.setdefault("namespace", "default")
        if not meta.get("name"):
            if not meta.get("generateName"):
                raise ValueError("pod needs metadata.name or metadata.generateName")
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        if _key(pod) in self._pods:
            raise ValueError(f'pods "{meta["name"]}" already exists')
        meta.setdefault("uid", str(uuid.uuid4()))
        meta.setdefault("creationTimestamp", format_time(datetime.now(UTC)))
        meta.setdefault("generation", 1)
        self._bump(pod)
        self._pods[_key(pod)] = pod
        self._record("ADDED", pod, None)
        return copy.deepcopy(pod)

    def update_pod(self, namespace: str, name: str, change: PodChange) -> Pod:
        """Replace a pod by `change` (a dict, or a function of a copy returning the new pod or
        None after mutating in place). Identity fields are kept; raises KeyError if absent."""
        prev = self._pods.get((namespace, name))
        if prev is None:
            raise KeyError(f'pods "{name}" not found in namespace "{namespace}"')
        if callable(change):
            draft = copy.deepcopy(prev)
            new = change(draft)
            pod = draft if new is None else copy.deepcopy(new)
        else:
            pod = copy.deepcopy(change)
        pod.pop("kind", None)
        pod.pop("apiVersion", None)
        meta = pod.setdefault("metadata", {})
        for field in ("name", "namespace", "uid", "creationTimestamp"):
            meta[field] = prev["metadata"][field]
        self._bump(pod)
        self._pods[(namespace, name)] = pod
        self._record("MODIFIED", pod, prev)
        return copy.deepcopy(pod)

    def delete_pod(
        self,
        namespace: str,
        name: str,
        *,
        grace: bool = False,
        grace_period_seconds: int = 30,
        at: datetime | None = None,
    ) -> Pod:
        """Delete a pod. With `grace`, first a MODIFIED that sets deletionTimestamp
        (= at + grace period, as the API server does) unless already set, then DELETED."""
        if (namespace, name) not in self._pods:
            raise KeyError(f'pods "{name}" not found in namespace "{namespace}"')
        if grace and "deletionTimestamp" not in self._pods[(namespace, name)]["metadata"]:
            deleting_at = (at or datetime.now(UTC)) + timedelta(seconds=grace_period_seconds)

            def mark(pod: Pod) -> None:
                pod["metadata"]["deletionTimestamp"] = format_time(deleting_at)
                pod["metadata"]["deletionGracePeriodSeconds"] = grace_period_seconds

            self.update_pod(namespace, name, mark)
        prev = self._pods.pop((namespace, name))
        # The DELETED event carries the last state with the deletion's own resourceVersion.
        pod = self._bump(copy.deepcopy(prev))
        self._record("DELETED", pod, prev)
        return copy.deepcopy(pod)


# --- selectors ---------------------------------------------------------------------------
# https://kubernetes.io/docs/concepts/overview/working-with-objects/labels/#label-selectors

Predicate = Callable[[Pod], bool]
_SET_TERM = re.compile(r"^\s*([^\s!=()]+)\s+(in|notin)\s+\(([^()]*)\)\s*$")
_EQ_TERM = re.compile(r"^\s*([^\s!=()]+)\s*(==|=|!=)\s*([^\s!=()]*)\s*$")
_EXISTS_TERM = re.compile(r"^\s*(!?)\s*([^\s!=()]+)\s*$")


def _split_terms(selector: str) -> list[str]:
    """Split on commas outside parentheses (`a in (x,y),b=c` is two terms)."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += char == "("
        depth -= char == ")"
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    terms.append(current)
    return [t for t in terms if t.strip()]


def _labels(pod: Pod) -> dict[str, str]:
    return pod.get("metadata", {}).get("labels") or {}


def parse_label_selector(selector: str | None) -> Predicate:
    """Equality (`k=v`, `k==v`, `k!=v`), existence (`k`, `!k`) and set (`k in (a,b)`,
    `k notin (a,b)`) terms, AND-ed by commas. `!=` and `notin` match pods without the key."""
    preds: list[Predicate] = []
    for term in _split_terms(selector or ""):
        if m := _SET_TERM.match(term):
            key, op, values = m[1], m[2], {v.strip() for v in m[3].split(",") if v.strip()}
            if op == "in":
                preds.append(lambda p, k=key, vs=values: _labels(p).get(k) in vs)
            else:
                preds.append(lambda p, k=key, vs=values: _labels(p).get(k) not in vs)
        elif m := _EQ_TERM.match(term):
            key, op, value = m[1], m[2], m[3]
            if op == "!=":
                preds.append(lambda p, k=key, v=value: _labels(p).get(k) != v)
            else:
                preds.append(lambda p, k=key, v=value: _labels(p).get(k) == v)
        elif m := _EXISTS_TERM.match(term):
            negate, key = m[1] == "!", m[2]
            preds.append(lambda p, k=key, n=negate: (k in _labels(p)) != n)
        else:
            raise SelectorError(f"unable to parse requirement: {term!r}")
    return lambda pod: all(pred(pod) for pred in preds)


# Field selectors the real API server supports for pods (others are rejected with 400);
# see https://kubernetes.io/docs/concepts/overview/working-with-objects/field-selectors/
POD_SELECTABLE_FIELDS = frozenset(
    {
        "metadata.name",
        "metadata.namespace",
        "spec.nodeName",
        "spec.restartPolicy",
        "spec.schedulerName",
        "spec.serviceAccountName",
        "spec.hostNetwork",
        "status.phase",
        "status.podIP",
        "status.nominatedNodeName",
    }
)


def _field_value(pod: Pod, path: str) -> str:
    value: Any = pod
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def parse_field_selector(selector: str | None) -> Predicate:
    """`field=value`, `field==value`, `field!=value`, AND-ed by commas."""
    preds: list[Predicate] = []
    for term in _split_terms(selector or ""):
        m = _EQ_TERM.match(term)
        if not m:
            raise SelectorError(f"invalid field selector: {term!r}")
        path, op, value = m[1], m[2], m[3]
        if path not in POD_SELECTABLE_FIELDS:
            raise SelectorError(f'field label not supported: "{path}"')
        if op == "!=":
            preds.append(lambda p, f=path, v=value: _field_value(p, f) != v)
        else:
            preds.append(lambda p, f=path, v=value: _field_value(p, f) == v)
    return lambda pod: all(pred(pod) for pred in preds)
