/**
 * What the status bar and its popover say, from the quota service's `GET /api/v1/me`
 * (docs/openapi.yaml, schema UserStatus). Pure functions: no DOM, no clock (`now` is a
 * parameter), so `npm test` checks them with node's own test runner.
 */

export interface IResourceUsage {
  resource: string;
  unit: string; // "GiB-hours"
  used: number;
  limit: number | null; // null: unlimited
  remaining: number | null;
  percent_used: number | null;
  state: string; // ok | near | over | none | unlimited
  window_seconds: number;
  burn_per_hour: number;
  runs_out_at: string | null;
  retry_at: string | null;
}

export interface IWarning {
  acted_at: string;
  servername: string;
  action: string; // warn | stop
  resource?: string;
  message: string;
}

export interface IMe {
  username: string;
  at: string;
  resources: { [name: string]: IResourceUsage }; // in the service's display order
  servers: { servername: string }[];
  runs_out_at: string | null;
  warnings?: IWarning[];
  recent_sessions?: { servername: string; started_at: string; running: boolean }[];
}

const LABELS: { [name: string]: string } = { cpu: 'CPU', memory: 'Memory', gpu: 'GPU' };

export function label(resource: string): string {
  return LABELS[resource] ?? resource;
}

/** "GiB-hours" -> "GiB-h" (the status bar is narrow). */
export function compactUnit(unit: string): string {
  return unit.replace(/-hours$/, '-h');
}

/** 42 for 41.7, 4.2 for 4.17, 0.35 for 0.349: two significant figures below 10. */
export function compactNumber(value: number): string {
  if (!isFinite(value)) {
    return String(value);
  }
  const magnitude = Math.abs(value);
  if (magnitude >= 10 || magnitude === 0) {
    return String(Math.round(value));
  }
  if (magnitude >= 1) {
    return String(Math.round(value * 10) / 10);
  }
  return String(Number(value.toPrecision(2)));
}

export function limited(me: IMe): IResourceUsage[] {
  return Object.values(me.resources).filter(r => r.limit !== null);
}

/** A zero budget that is not being used: the resource is simply not in this user's quota. */
function notIncluded(r: IResourceUsage): boolean {
  return r.limit === 0 && r.used === 0 && !r.burn_per_hour;
}

/** The limited resources worth a place in the status bar and the popover. */
export function shown(me: IMe): IResourceUsage[] {
  return limited(me).filter(r => !notIncluded(r));
}

/** "GPU" for the resources whose budget is zero (the popover names them once). */
export function excluded(me: IMe): string[] {
  return limited(me)
    .filter(notIncluded)
    .map(r => label(r.resource));
}

/** "Memory: 42 / 60 GiB-h · GPU: 1.5 / 8 GPU-h"; "Quota: unlimited" without a limit. */
export function statusText(me: IMe): string {
  const items = shown(me).map(
    r =>
      `${label(r.resource)}: ${compactNumber(r.used)} / ${compactNumber(r.limit as number)} ${compactUnit(r.unit)}`
  );
  return items.length ? items.join(' · ') : 'Quota: unlimited';
}

/** The worst state of the limited resources: over > near > ok. */
export function worstState(me: IMe): string {
  const states = new Set(shown(me).map(r => (r.state === 'none' ? 'over' : r.state)));
  return states.has('over') ? 'over' : states.has('near') ? 'near' : 'ok';
}

/** "3 h 20 min", "45 min", "2 d 4 h", "under a minute". */
export function duration(seconds: number): string {
  if (seconds < 60) {
    return 'under a minute';
  }
  const minutes = Math.floor(seconds / 60);
  const days = Math.floor(minutes / 1440);
  const hours = Math.floor((minutes % 1440) / 60);
  const rest = minutes % 60;
  if (days > 0) {
    return hours ? `${days} d ${hours} h` : `${days} d`;
  }
  if (hours > 0) {
    return rest ? `${hours} h ${rest} min` : `${hours} h`;
  }
  return `${rest} min`;
}

/** A time as the user's locale writes it, with "in 3 h" after it. */
export function when(iso: string, now: Date, locale?: string, relative = true): string {
  const at = new Date(iso);
  const text = at.toLocaleString(locale, {
    weekday: 'short',
    day: 'numeric',
    month: 'short',
    hour: '2-digit',
    minute: '2-digit'
  });
  const seconds = (at.getTime() - now.getTime()) / 1000;
  return relative && seconds > 0 ? `${text} (in ${duration(seconds)})` : text;
}

export interface IPopoverLine {
  resource: string;
  used: string; // "42 / 60 GiB-hours (70 %)"
  remaining: string; // "18 GiB-hours left"
  comesBack: string; // when quota returns
  state: string;
}

/** One line per limited resource for the popover. */
export function resourceLines(me: IMe, now: Date, locale?: string): IPopoverLine[] {
  return shown(me).map(r => {
    const percent = r.percent_used === null ? '' : ` (${Math.round(r.percent_used)} %)`;
    const windowText = duration(r.window_seconds);
    const comesBack = r.retry_at
      ? `Used up: room again ${when(r.retry_at, now, locale)} if your servers stop now.`
      : `Usage leaves the ${windowText} window gradually: each hour used comes back ${windowText} later.`;
    return {
      resource: label(r.resource),
      used: `${compactNumber(r.used)} / ${compactNumber(r.limit as number)} ${r.unit}${percent}`,
      remaining: `${compactNumber(r.remaining ?? 0)} ${r.unit} left`,
      comesBack,
      state: r.state
    };
  });
}

/** How long this server can keep running at its current size (with the user's others). */
export function runningText(me: IMe, serverName: string, now: Date, locale?: string): string {
  const running = me.servers.length;
  const mine = me.servers.some(s => s.servername === serverName);
  if (!me.runs_out_at) {
    if (!mine && running === 0) {
      return 'The quota service does not see this server running yet.';
    }
    return 'At its current size this server can keep running: its quota does not run out.';
  }
  const seconds = Math.max(0, (new Date(me.runs_out_at).getTime() - now.getTime()) / 1000);
  const until = when(me.runs_out_at, now, locale, false);
  if (seconds === 0) {
    return 'Your quota is used up: the server may be stopped.';
  }
  const subject =
    running > 1
      ? `With your ${running} running servers at their current sizes, this one`
      : 'At its current size this server';
  return `${subject} can keep running about ${duration(seconds)}, until ${until}.`;
}

/**
 * The enforcer's actions about this server that the user has not been shown, oldest first:
 * its warnings (recorded per user, they concern every running server, this one included)
 * and a stop of this server. `seen` holds the acted_at of those already notified; `since`
 * leaves out what happened before this server's session.
 */
export function newWarnings(
  me: IMe,
  serverName: string,
  seen: Set<string>,
  since: Date | null
): IWarning[] {
  return (me.warnings ?? [])
    .filter(w => w.action === 'warn' || (w.action === 'stop' && w.servername === serverName))
    .filter(w => !seen.has(w.acted_at))
    .filter(w => since === null || new Date(w.acted_at).getTime() >= since.getTime())
    .sort((a, b) => a.acted_at.localeCompare(b.acted_at));
}

/** When this server's session started, as the ledger recorded it (null: not seen yet). */
export function sessionStart(me: IMe, serverName: string): Date | null {
  const session = (me.recent_sessions ?? []).find(
    s => s.running && s.servername === serverName
  );
  return session ? new Date(session.started_at) : null;
}

/** Whether a response body has the shape this extension reads (else: "unavailable"). */
export function isMe(body: unknown): body is IMe {
  const me = body as IMe;
  return (
    typeof me === 'object' &&
    me !== null &&
    typeof me.resources === 'object' &&
    me.resources !== null &&
    Array.isArray(me.servers)
  );
}
