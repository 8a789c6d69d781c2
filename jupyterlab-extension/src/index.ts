/**
 * quota-ledger in JupyterLab: "Memory: 42 / 60 GiB-h" in the status bar, a popover with
 * the details, and a notification when the enforcer warns about this server.
 *
 * The numbers come from this package's server extension (`<base_url>quota-ledger/me`),
 * which asks the quota service's `GET /api/v1/me` with the single-user server's own
 * JupyterHub token: the browser never holds a token, and the service answers for the
 * token's owner only.
 */

import { JupyterFrontEnd, JupyterFrontEndPlugin } from '@jupyterlab/application';
import { Notification } from '@jupyterlab/apputils';
import { PageConfig, URLExt } from '@jupyterlab/coreutils';
import { ServerConnection } from '@jupyterlab/services';
import { IStatusBar, showPopup, Popup } from '@jupyterlab/statusbar';
import { Widget } from '@lumino/widgets';

import {
  excluded,
  IMe,
  isMe,
  newWarnings,
  resourceLines,
  runningText,
  sessionStart,
  statusText,
  worstState
} from './format';

const PLUGIN_ID = 'quota-ledger-jupyterlab:status';
const REFRESH_MS = 60_000;

interface IConfig {
  quota_page_url: string;
  server_name: string;
  user: string;
}

interface IFetched {
  me: IMe | null;
  error: string | null;
}

async function getJson(path: string): Promise<{ status: number; body: any }> {
  const settings = ServerConnection.makeSettings();
  const url = URLExt.join(settings.baseUrl, 'quota-ledger', path);
  const response = await ServerConnection.makeRequest(url, {}, settings);
  let body: any = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { status: response.status, body };
}

function element(tag: string, className: string, text?: string): HTMLElement {
  const node = document.createElement(tag);
  node.className = className;
  if (text !== undefined) {
    node.textContent = text; // never innerHTML: every value is text
  }
  return node;
}

class QuotaStatus extends Widget {
  constructor(
    private config: IConfig,
    private onData: (me: IMe) => void
  ) {
    super();
    this.addClass('jp-QuotaLedger-status');
    this.node.title = 'Your compute quota (click for details)';
    this.node.textContent = 'Quota: …';
    this.node.addEventListener('click', () => this.togglePopup());
  }

  get latest(): IFetched {
    return this.fetched;
  }

  async refresh(): Promise<IFetched> {
    try {
      const { status, body } = await getJson('me');
      if (status === 200 && isMe(body)) {
        this.fetched = { me: body, error: null };
        this.onData(body);
      } else if (status === 200) {
        this.fetched = { me: null, error: 'the quota service answered in an unknown format' };
      } else {
        const reason = (body && (body.message || body.reason)) || `HTTP ${status}`;
        this.fetched = { me: null, error: String(reason) };
      }
    } catch (exc) {
      this.fetched = { me: null, error: `the server did not answer (${exc})` };
    }
    this.render();
    return this.fetched;
  }

  private render(): void {
    const { me, error } = this.fetched;
    this.removeClass('jp-mod-near');
    this.removeClass('jp-mod-over');
    this.removeClass('jp-mod-unavailable');
    if (me) {
      this.node.textContent = statusText(me);
      this.node.title = 'Your compute quota (click for details)';
      const state = worstState(me);
      if (state !== 'ok') {
        this.addClass(`jp-mod-${state}`);
      }
    } else {
      this.node.textContent = 'Quota unavailable';
      this.addClass('jp-mod-unavailable');
      this.node.title = `Quota unavailable: ${error}`;
    }
    if (this.popup && !this.popup.isDisposed) {
      this.fillBody(this.popupBody);
    }
  }

  private togglePopup(): void {
    if (this.popup && !this.popup.isDisposed) {
      this.popup.dispose();
      return;
    }
    this.popupBody = new Widget();
    this.popupBody.addClass('jp-QuotaLedger-popover');
    this.fillBody(this.popupBody);
    this.popup = showPopup({ body: this.popupBody, anchor: this, align: 'left' });
    void this.refresh();
  }

  private fillBody(body: Widget): void {
    const node = body.node;
    node.textContent = '';
    const { me, error } = this.fetched;
    node.appendChild(element('h3', 'jp-QuotaLedger-title', 'Your compute quota'));
    if (!me) {
      node.appendChild(
        element('p', 'jp-QuotaLedger-error', `Quota unavailable: ${error ?? 'loading…'}`)
      );
    } else {
      const now = new Date();
      const lines = resourceLines(me, now);
      if (!lines.length) {
        node.appendChild(element('p', 'jp-QuotaLedger-line', 'No limits apply to you.'));
      }
      for (const line of lines) {
        const row = element('div', `jp-QuotaLedger-resource jp-mod-${line.state}`);
        row.appendChild(element('div', 'jp-QuotaLedger-name', `${line.resource}: ${line.used}`));
        row.appendChild(element('div', 'jp-QuotaLedger-remaining', line.remaining));
        row.appendChild(element('div', 'jp-QuotaLedger-back', line.comesBack));
        node.appendChild(row);
      }
      const none = excluded(me);
      if (none.length) {
        node.appendChild(
          element('p', 'jp-QuotaLedger-excluded', `Not in your quota: ${none.join(', ')}.`)
        );
      }
      node.appendChild(
        element('p', 'jp-QuotaLedger-running', runningText(me, this.config.server_name, now))
      );
    }
    const link = element('a', 'jp-QuotaLedger-link', 'Open the quota page') as HTMLAnchorElement;
    link.href = this.config.quota_page_url;
    link.target = '_blank';
    link.rel = 'noopener noreferrer';
    node.appendChild(link);
  }

  private fetched: IFetched = { me: null, error: 'loading…' };
  private popup: Popup | null = null;
  private popupBody: Widget = new Widget();
}

/** Notify once per warning (kept across reloads in localStorage). */
class WarningNotifier {
  constructor(private config: IConfig) {
    this.key = `quota-ledger:notified:${config.user}:${config.server_name}`;
    try {
      this.seen = new Set(JSON.parse(window.localStorage.getItem(this.key) || '[]'));
    } catch {
      this.seen = new Set();
    }
  }

  check(me: IMe): void {
    // warnings from this server's session only: an older session's are not about this one
    const since = sessionStart(me, this.config.server_name) ?? this.loadedAt;
    for (const warning of newWarnings(me, this.config.server_name, this.seen, since)) {
      this.seen.add(warning.acted_at);
      const notify = warning.action === 'stop' ? Notification.error : Notification.warning;
      notify(warning.message, {
        autoClose: false,
        actions: [
          {
            label: 'Quota page',
            callback: () => window.open(this.config.quota_page_url, '_blank', 'noopener')
          }
        ]
      });
    }
    try {
      window.localStorage.setItem(this.key, JSON.stringify([...this.seen].slice(-50)));
    } catch {
      // storage full or disabled: at worst a warning is shown again after a reload
    }
  }

  private key: string;
  private seen: Set<string>;
  private loadedAt = new Date(Date.now() - REFRESH_MS * 2);
}

const plugin: JupyterFrontEndPlugin<void> = {
  id: PLUGIN_ID,
  description: 'Your compute quota in the status bar (quota-ledger)',
  autoStart: true,
  optional: [IStatusBar],
  activate: async (app: JupyterFrontEnd, statusBar: IStatusBar | null) => {
    if (!statusBar) {
      return;
    }
    let config: IConfig;
    try {
      const { status, body } = await getJson('config');
      if (status !== 200 || !body) {
        console.warn(`quota-ledger: no configuration (HTTP ${status}); status bar item off`);
        return;
      }
      config = body as IConfig;
    } catch (exc) {
      console.warn('quota-ledger: server extension not reachable; status bar item off', exc);
      return;
    }
    if (!config.server_name) {
      config.server_name = PageConfig.getOption('hubServerName') || '';
    }
    const notifier = new WarningNotifier(config);
    const item = new QuotaStatus(config, me => notifier.check(me));
    statusBar.registerStatusItem(PLUGIN_ID, { item, align: 'left', rank: 50 });
    await item.refresh();
    // every minute, and whenever the popover opens
    window.setInterval(() => void item.refresh(), REFRESH_MS);
  }
};

export default plugin;
