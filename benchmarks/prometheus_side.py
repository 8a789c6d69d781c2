"""The Prometheus half: backfill a real Prometheus with the trace as kube-state-metrics would
have exposed it, and answer the quota questions the peer's way and a careful operator's way.

The peer is 2i2c-org/jupyterhub-usage-quotas, ``src/jupyterhub_usage_quotas/manager.py``:

* ``write_promql``: the configured metric (their docs and examples use
  ``kube_pod_container_resource_requests{resource='memory'}``) gets
  ``namespace='<hub_namespace>', node!='', pod=~'jupyter-<safe_slug(user)>.*'`` spliced into
  its braces, then ``[<window>d:]`` appended — a raw subquery at the default resolution
  (the global evaluation interval, 1m).
* ``get_usage``: one ``/api/v1/query`` (``client.py`` ``PrometheusClient.query``, aiohttp),
  flatten every series' ``values``, multiply each by ``prometheus_scrape_interval`` (60) /
  3600; ``aggregate_usage`` sums them (bytes-hours; memory limits are compared in bytes,
  ``UNIT_SUFFIXES["G"] = 1024**3``).
* ``metrics.py`` ``MetricsExporter.update_usage_quota_metrics``: the all-users numbers are
  one ``get_usage`` per user, in sequence.

The peer selects users by pod-name regex; ``_group_on_annotation`` (the
``kube_pod_annotations`` join on ``namespace, pod``) exists there but ``get_usage`` does not
use it. The careful operator below joins on the annotation instead and sums server-side.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.request
from collections import defaultdict
from pathlib import Path

import aiohttp

from benchmarks.trace import EVAL_AT_MS, GIB, WINDOW_MS, Pod, ScrapeModel

REQUESTS = "kube_pod_container_resource_requests"
ANNOTATIONS = "kube_pod_annotations"
USER_LABEL = "annotation_hub_jupyter_org_username"
# kube-state-metrics' resource/unit labels for what we charge
KSM_RESOURCE = {
    "memory": ("memory", "byte"),
    "cpu": ("cpu", "core"),
    "gpu": ("nvidia_com_gpu", "integer"),
}
SECONDS_TO_HOURS = 60**2  # the peer's self.seconds_to_hours
RESOURCES = ("memory", "cpu", "gpu")
# Each query's limit: at 5,000 users the all-users [30d:60s] subquery does not finish
# (it grew to 12 GiB, or crawled toward the server's 30 min limit), and the run must go on.
DEFAULT_QUERY_TIMEOUT_SECONDS = 300.0
# The client waits this much longer than Prometheus' own evaluation limit, so a query that
# times out is reported by Prometheus (errorType "timeout") unless the server does not answer.
CLIENT_GRACE_SECONDS = 30.0


class QueryTimeout(TimeoutError):
    """A query that did not finish within its limit: recorded as a timeout, not a failure."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"timed out after {seconds:g} s")


def _ts(ms: int) -> str:
    return f"{ms // 1000}.{ms % 1000:03d}"  # OpenMetrics timestamps are seconds


def _lines(head: str, timestamps: list[str]) -> str:
    """One sample line per timestamp, built by str.join (tens of millions at 5,000 users)."""
    return head + ("\n" + head).join(timestamps) + "\n"


def write_openmetrics(pods: list[Pod], model: ScrapeModel, path: Path, eval_at_ms: int) -> int:
    """Stream every sample a 60 s scrape of kube-state-metrics would have stored; return count.

    Families are written one after the other (OpenMetrics wants a family's samples together)
    and each series in time order (the TSDB appender rejects out-of-order samples).
    promtool does not read gzip, so this is plain text, written pod by pod.
    """
    n_samples = 0
    # Scrapes fall on one grid, so a trace has only ~50k distinct instants: format each once.
    lo_ms = min((p.started_at_ms for p in pods), default=eval_at_ms)
    grid = range(
        lo_ms + (model.phase_ms - lo_ms) % model.interval_ms, eval_at_ms + 1, model.interval_ms
    )
    ts_text = {t: _ts(t) for t in grid}.__getitem__
    with path.open("w", buffering=4 * 1024 * 1024) as out:
        out.write(f"# HELP {REQUESTS} The number of requested request resource by a container.\n")
        out.write(f"# TYPE {REQUESTS} gauge\n")
        for pod in pods:
            scrapes = list(map(ts_text, model.pod_scrapes_ms(pod, eval_at_ms)))
            if not scrapes:
                continue
            base = (
                f'{REQUESTS}{{namespace="{pod.namespace}",pod="{pod.pod_name}",uid="{pod.pod_uid}",'
                f'container="notebook",node="{pod.node}",'
            )
            values = {
                "memory": str(pod.memory_bytes),
                "cpu": str(pod.cpu_millicores / 1000),
                "gpu": str(pod.gpu_count),
            }
            for ours, (resource, unit) in KSM_RESOURCE.items():
                if ours == "gpu" and pod.gpu_count == 0:
                    continue  # KSM only exposes resources the container actually requests
                head = f'{base}resource="{resource}",unit="{unit}"}} {values[ours]} '
                out.write(_lines(head, scrapes))
                n_samples += len(scrapes)
        out.write(f"# HELP {ANNOTATIONS} Kubernetes annotations converted to Prometheus labels.\n")
        out.write(f"# TYPE {ANNOTATIONS} gauge\n")
        for pod in pods:
            scrapes = list(map(ts_text, model.pod_scrapes_ms(pod, eval_at_ms)))
            if not scrapes:
                continue
            head = (
                f'{ANNOTATIONS}{{namespace="{pod.namespace}",pod="{pod.pod_name}",'
                f'uid="{pod.pod_uid}",{USER_LABEL}="{pod.username}"}} 1 '
            )
            out.write(_lines(head, scrapes))
            n_samples += len(scrapes)
        out.write("# EOF\n")
    return n_samples


def ensure_prometheus() -> None:
    """Install Debian's prometheus (2.42) if missing; never start its service."""
    if shutil.which("prometheus") and shutil.which("promtool"):
        return
    if os.geteuid() != 0:
        raise SystemExit(
            "prometheus is not installed and we are not root: apt-get install prometheus"
        )
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    # policy-rc.d would be the Debian way to stop the service starting; without systemd the
    # postinst cannot start it anyway.
    subprocess.run(["apt-get", "install", "-y", "-qq", "prometheus"], check=True, env=env)


def backfill(openmetrics_path: Path, data_dir: Path) -> float:
    """promtool blocks from the file; 744h blocks make it seconds instead of minutes."""
    started = time.perf_counter()
    subprocess.run(
        [
            "promtool", "tsdb", "create-blocks-from", "openmetrics",
            "--max-block-duration=744h", "--quiet",
            str(openmetrics_path), str(data_dir),
        ],
        check=True,
    )  # fmt: skip
    return time.perf_counter() - started


def backfilled_server(pods: list[Pod], model: ScrapeModel, workdir: Path):
    """Install if needed, write the samples, backfill, start: (server, (samples, MB, s, version))."""
    ensure_prometheus()
    path = workdir / "trace.om"
    started = time.perf_counter()
    n_samples = write_openmetrics(pods, model, path, EVAL_AT_MS)
    size_mb = path.stat().st_size / 1e6
    print(
        f"openmetrics: {n_samples} samples, {size_mb:.0f} MB in {time.perf_counter() - started:.1f}s"
    )
    backfill_seconds = backfill(path, workdir / "tsdb")
    path.unlink()  # gigabytes at 5,000 users; the blocks hold it now
    print(f"promtool backfill: {backfill_seconds:.1f}s")
    server = PrometheusServer(workdir / "tsdb", workdir)
    server.start()
    return server, (n_samples, size_mb, backfill_seconds, prometheus_version())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PrometheusServer:
    """Our own Prometheus process on a loopback port and a private data dir, no scrape targets."""

    def __init__(
        self, data_dir: Path, workdir: Path, memory_limit_bytes: int | None = None
    ) -> None:
        self.data_dir = data_dir
        # the watchdog's limit (below): half the machine's memory, at most 16 GiB
        self.memory_limit_bytes = memory_limit_bytes or min(
            16 * 1024**3, os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") // 2
        )
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_path = workdir / "prometheus.yml"
        # 1m evaluation interval = the default subquery resolution the peer's [30d:] uses.
        self.config_path.write_text("global:\n  scrape_interval: 1m\n  evaluation_interval: 1m\n")
        self.log_path = workdir / "prometheus.log"
        self.process: subprocess.Popen | None = None
        # pid -> why the watchdog killed that process. Keyed by process: a reason is only
        # ever read for the process whose query failed, never carried over to the next one.
        self.killed_for: dict[int, str] = {}

    def _watch_memory(self, process: subprocess.Popen, limit_bytes: int) -> None:
        # The machine is shared: a query that would take all its memory is killed here and
        # reported as failed, before the kernel's OOM killer picks someone else's process.
        status = Path(f"/proc/{process.pid}/status")
        while process.poll() is None:
            try:
                rss_kib = int(status.read_text().split("VmRSS:")[1].split()[0])
            except (OSError, IndexError, ValueError):
                rss_kib = 0
            if rss_kib * 1024 > limit_bytes:
                # the reason first: whoever sees this process gone then finds why
                self.killed_for[process.pid] = (
                    f"Prometheus killed at {rss_kib / 1024**2:.1f} GiB resident memory"
                )
                process.kill()
                return
            time.sleep(0.2)

    def restart(self) -> None:
        """A fresh process (heap and caches as after a deploy) for the next measurement."""
        self.stop()
        self.start()

    def ready(self, timeout_seconds: float = 5) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=timeout_seconds) as r:
                return r.status == 200
        except OSError:
            return False

    def recover(self) -> str | None:
        """After a failed query: a server that answers again, and why the query failed if the
        watchdog killed the server.

        The process may be dying and not yet reaped when the query's connection drops (after
        a SIGKILL ``poll()`` still says running for a moment), or alive but not answering: so
        a server counts as up only if it answers ``/-/ready``; otherwise it is stopped (waited
        for, killed if it hangs) and started again. The reason is read after the process is
        gone, so a kill that raced the failed query is not missed."""
        process = self.process
        up = process is not None and process.poll() is None and self.ready()
        if not up:
            self.stop()
        why = self.killed_for.pop(process.pid, None) if process is not None else None
        if not up:
            self.start()  # the blocks are on disk: start-up takes seconds
        return why

    def start(self, timeout_seconds: float = 120) -> None:
        args = [
            "prometheus",
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.data_dir}",
            # Above the 35-day trace, or the backfilled blocks are deleted at start-up.
            "--storage.tsdb.retention.time=60d",
            f"--web.listen-address=127.0.0.1:{self.port}",
            # A live server writes a staleness marker when a pod's series vanishes from a
            # scrape, so a sample is visible only until the next scrape. Backfilled blocks
            # carry no markers; a lookback of one scrape interval gives the same visibility
            # (the default 5m would stretch every pod by up to 5 minutes).
            "--query.lookback-delta=1m",
            "--query.max-samples=1000000000",
            "--query.timeout=30m",
        ]
        log = self.log_path.open("w")
        # Go keeps freed heap; a soft limit below the watchdog's makes it collect instead, as
        # an operator sizing Prometheus would set it.
        env = {**os.environ, "GOMEMLIMIT": "10GiB"}
        self.process = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, env=env)
        threading.Thread(
            target=self._watch_memory, args=(self.process, self.memory_limit_bytes), daemon=True
        ).start()
        deadline = time.monotonic() + timeout_seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.3)
        raise RuntimeError(f"prometheus not ready after {timeout_seconds}s; see {self.log_path}")

    def stop(self) -> None:
        """Stop the process and wait until it is gone (the next one opens the same TSDB)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class PromQueries:
    """The three Prometheus-side methods, sharing one aiohttp session (as the peer's client)."""

    def __init__(
        self,
        url: str,
        *,
        eval_at_ms: int = EVAL_AT_MS,
        window_ms: int = WINDOW_MS,
        scrape_interval_seconds: int = 60,
        namespace: str = "hub",
        query_timeout_seconds: float = DEFAULT_QUERY_TIMEOUT_SECONDS,
    ) -> None:
        self.query_url = f"{url}/api/v1/query"
        # The peer queries "now"; our data is historical, so every query pins time=eval_at.
        self.time = _ts(eval_at_ms)
        self.window_days = window_ms // 86_400_000
        self.scrape_interval_seconds = scrape_interval_seconds
        self.namespace = namespace
        self.query_timeout_seconds = query_timeout_seconds
        self.session: aiohttp.ClientSession | None = None

    async def __aenter__(self) -> PromQueries:
        # the limit is per query (query()), not aiohttp's default 5 minutes for the session
        self.session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None))
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.session is not None
        await self.session.close()

    async def query(self, promql: str) -> dict:
        """One instant query, limited to ``query_timeout_seconds``: Prometheus stops
        evaluating it then (the API's ``timeout`` parameter, capped by ``--query.timeout``,
        https://prometheus.io/docs/prometheus/latest/querying/api/#instant-queries) and
        answers errorType "timeout"; the client gives up a little later in case the server
        does not answer at all. Either way: QueryTimeout."""
        assert self.session is not None
        limit = self.query_timeout_seconds
        params = {"query": promql, "time": self.time, "timeout": f"{limit:g}s"}
        try:
            async with self.session.get(
                self.query_url,
                params=params,
                timeout=aiohttp.ClientTimeout(total=limit + CLIENT_GRACE_SECONDS),
            ) as response:
                try:
                    data = await response.json(content_type=None)
                except ValueError:
                    response.raise_for_status()
                    raise
        except TimeoutError:  # asyncio's, which aiohttp raises for ClientTimeout
            raise QueryTimeout(limit) from None
        if data.get("errorType") == "timeout":
            raise QueryTimeout(limit)
        if data.get("status") != "success":
            raise RuntimeError(f"prometheus: {data}")
        return data

    # --- the peer: manager.py write_promql + get_usage + aggregate_usage -----------------

    def peer_promql(self, username: str, resource: str = "memory") -> str:
        ksm_resource, _unit = KSM_RESOURCE[resource]
        # their configured metric, with their label splice (re.sub on the first "{...}")
        metric = f"{REQUESTS}{{resource='{ksm_resource}'}}"
        metric = metric.replace(
            "}", f", namespace='{self.namespace}', node!='', pod=~'jupyter-{username}.*'}}", 1
        )
        return f"{metric}[{self.window_days}d:]"

    async def peer_user_usage(
        self, username: str, resource: str = "memory"
    ) -> tuple[float, set[str]]:
        """Resource-hours (memory in GiB-hours) the peer computes, and the pod uids it saw."""
        response = await self.query(self.peer_promql(username, resource))
        series = response["data"]["result"]
        # get_usage: flatten all series' values; value × scrape interval / 3600 each
        data = [d for s in series for d in s["values"]]
        per_sample = [float(d[1]) * self.scrape_interval_seconds / SECONDS_TO_HOURS for d in data]
        used = sum(per_sample)  # aggregate_usage
        if resource == "memory":
            used /= GIB  # the peer compares bytes-hours against limit × 1024**3
        return used, {s["metric"].get("uid", "") for s in series}

    async def peer_every_user(self, usernames: list[str], resources) -> tuple[dict, set[str]]:
        """Untimed accuracy pass: {user: {resource: hours}} and every pod uid returned."""
        usage: dict[str, dict[str, float]] = {u: {} for u in usernames}
        seen: set[str] = set()
        for resource in resources:
            for u in usernames:
                usage[u][resource], uids = await self.peer_user_usage(u, resource)
                seen |= uids
        return usage, seen

    async def peer_report(self, usernames: list[str]) -> dict[str, float]:
        """metrics.py: one get_usage per user, one after the other."""
        return {u: (await self.peer_user_usage(u))[0] for u in usernames}

    # --- a careful operator: exact username via the annotation, summed server-side --------

    def _range(self, raw: bool) -> str:
        # [30d:60s] is the subquery form PromQL quota recipes use; [30d] reads the stored
        # samples directly — the same count, without evaluating 43,200 steps per series.
        return (
            f"[{self.window_days}d]"
            if raw
            else f"[{self.window_days}d:{self.scrape_interval_seconds}s]"
        )

    def _joined(self, requests_selector: str, annotation_selector: str, by: str, raw: bool) -> str:
        # Sum each pod's samples first, then attach the username by uid: joining inside the
        # subquery would evaluate the join at all 43,200 steps. The annotation range is one
        # step longer than the window so a pod whose only counted sample is the window's first
        # step still finds its annotation.
        annotations_range = f"{self.window_days * 1440 + 1}m"
        return (
            f"sum by ({by}) ("
            f"sum_over_time({REQUESTS}{{{requests_selector}}}{self._range(raw)})"
            f" * on (namespace, pod, uid) group_left({USER_LABEL})"
            f" max by (namespace, pod, uid, {USER_LABEL}) "
            f"(max_over_time({ANNOTATIONS}{{{annotation_selector}}}[{annotations_range}]))"
            f") * {self.scrape_interval_seconds} / 3600"
        )

    def careful_user_promql(self, username: str, raw: bool = False) -> str:
        # KubeSpawner names pods jupyter-<user> or jupyter-<user>--<server>; the regex narrows
        # the series to read, the annotation join makes the username exact.
        return self._joined(
            f"namespace='{self.namespace}', pod=~'jupyter-{username}(--.+)?'",
            f"namespace='{self.namespace}', {USER_LABEL}='{username}'",
            "resource",
            raw,
        )

    def careful_report_promql(self, raw: bool = False) -> str:
        return self._joined(
            f"namespace='{self.namespace}'",
            f"namespace='{self.namespace}', {USER_LABEL}!=''",
            f"{USER_LABEL}, resource",
            raw,
        )

    @staticmethod
    def _hours(resource_label: str, value: float) -> tuple[str, float]:
        ours = {"memory": "memory", "cpu": "cpu", "nvidia_com_gpu": "gpu"}[resource_label]
        return ours, value / GIB if ours == "memory" else value

    async def careful_user_usage(self, username: str, raw: bool = False) -> dict[str, float]:
        response = await self.query(self.careful_user_promql(username, raw))
        out = {"memory": 0.0, "cpu": 0.0, "gpu": 0.0}
        for s in response["data"]["result"]:
            ours, hours = self._hours(s["metric"]["resource"], float(s["value"][1]))
            out[ours] = hours
        return out

    async def careful_report(self, raw: bool = False) -> dict[str, dict[str, float]]:
        response = await self.query(self.careful_report_promql(raw))
        out: dict[str, dict[str, float]] = defaultdict(
            lambda: {"memory": 0.0, "cpu": 0.0, "gpu": 0.0}
        )
        for s in response["data"]["result"]:
            ours, hours = self._hours(s["metric"]["resource"], float(s["value"][1]))
            out[s["metric"][USER_LABEL]][ours] = hours
        return dict(out)

    async def careful_seen_uids(self, raw: bool = False) -> set[str]:
        """Untimed diagnostic: the pods the careful method has any sample of. A raw range one
        step longer than the window holds exactly the samples the [30d:60s] subquery counts
        (those in (eval_at − 30d − 60s, eval_at]; none falls on the minute boundary) and is
        much cheaper to evaluate than the subquery itself."""
        window = f"[{self.window_days}d]" if raw else f"[{self.window_days * 1440 + 1}m]"
        response = await self.query(
            f"group by (uid) (count_over_time({REQUESTS}{{resource='memory'}}{window}))"
        )
        return {s["metric"]["uid"] for s in response["data"]["result"]}


async def accuracy_pass(q: PromQueries, results, server: PrometheusServer) -> None:
    """Untimed: every user, every Prometheus method, scored into ``results`` (a
    vs_prometheus.Results) against the ground truth and the sampling model."""
    users, short_uids, model = results.users, results.short_uids, results.model_hours
    # one query per user and resource: at 5,000 users only memory, the peer's one resource
    peer_resources = RESOURCES if len(users) <= 1000 else ("memory",)
    peer: dict = {}
    try:
        peer, peer_seen = await q.peer_every_user(users, peer_resources)
    except Exception as exc:  # noqa: BLE001 - a query that cannot finish is a result
        results.notes.append(f"peer, every user's usage: {failure(exc, server.recover())}.")
    else:
        results.add_accuracy("peer", peer, short_uids - peer_seen, peer_resources)
    careful: dict = {}
    for method, raw in (("careful PromQL", False), ("careful, raw [30d]", True)):
        try:
            answer = await q.careful_report(raw=raw)
            seen = await q.careful_seen_uids(raw)
        except Exception as exc:  # noqa: BLE001 - a query that cannot finish is a result
            results.notes.append(f"{method}, all users: {failure(exc, server.recover())}.")
            continue
        careful = answer if not raw else careful  # the subquery is what the model predicts
        results.add_accuracy(method, answer, short_uids - seen)

    def largest_gap(measured: dict, among: list[str]) -> float:
        return max(abs(measured.get(u, {}).get(r, 0) - float(model.get(u, {}).get(r, 0)))
                   for u in among for r in RESOURCES if u not in measured or r in measured[u])  # fmt: skip

    if careful:
        results.notes.append(
            "Prometheus' sums equal the sampling model's prediction for every user (largest "
            f"difference {largest_gap(careful, users):.1e} resource-hours): the error is "
            "sampling's, not this setup's."
        )
    # the peer's pod=~'jupyter-<user>.*' also matches users whose name starts with <user>
    prefixed = {u for u in users if any(o != u and o.startswith(u) for o in users)}
    others = [u for u in users if u not in prefixed]
    if peer:
        results.notes.append(
            f"{len(prefixed)} usernames are a prefix of another user's (like `kim` and `kim7`); "
            "the peer's `pod=~'jupyter-<user>.*'` charges them for the other user's pods too, "
            f"which makes its worst errors. For the other {len(others)} users its numbers equal "
            "the sampling model's (largest difference "
            f"{largest_gap(peer, others):.1e} resource-hours)."
        )
    results.queries = (q.peer_promql(users[0]), q.careful_user_promql(users[0]),
                       q.careful_report_promql(), q.careful_report_promql(raw=True))  # fmt: skip


def failure(exc: BaseException, killed_for: str | None = None) -> str:
    """How a failed query reads in the results: "timed out after 300 s" for a timeout, the
    watchdog's reason when it killed the server, else the error."""
    if killed_for:
        return f"the query failed ({killed_for})"
    if isinstance(exc, QueryTimeout):
        return f"the query {exc}"
    return f"the query failed ({type(exc).__name__}: {exc})"


def prometheus_version() -> str:
    first = subprocess.run(["prometheus", "--version"], capture_output=True, text=True).stdout
    return first.splitlines()[0] if first else "unknown"
