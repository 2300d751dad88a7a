// The hookgate admin console. Polls /api/status (and, with a store,
// /api/events?state=dead) and renders with textContent only: nothing the
// server sends is ever parsed as HTML. Served from the binary under a CSP
// that allows this script, the style sheet and same-origin fetch, nothing else.
'use strict';

(() => {
  const REFRESH_MS = 5000;
  const DEAD_LIMIT = 20;
  const $ = (id) => document.getElementById(id);

  let tokenRequired = false;
  let actionHeader = 'X-Hookgate-Action';
  let timer = null;
  let shownDead = '';

  // --- small DOM helpers (text only) ---

  function el(tag, text, className) {
    const e = document.createElement(tag);
    if (text !== undefined && text !== null) e.textContent = String(text);
    if (className) e.className = className;
    return e;
  }

  function cell(content, className) {
    const td = el('td', null, className);
    if (content instanceof Node) td.appendChild(content);
    else td.textContent = content === undefined || content === null ? '' : String(content);
    return td;
  }

  function show(id, visible) {
    $(id).hidden = !visible;
  }

  // --- formatting ---

  function duration(seconds) {
    if (seconds === null || seconds === undefined) return '–';
    let s = Math.max(0, Math.floor(seconds));
    const d = Math.floor(s / 86400); s -= d * 86400;
    const h = Math.floor(s / 3600); s -= h * 3600;
    const m = Math.floor(s / 60); s -= m * 60;
    if (d > 0) return `${d} d ${h} h`;
    if (h > 0) return `${h} h ${m} min`;
    if (m > 0) return `${m} min ${s} s`;
    return `${s} s`;
  }

  function latency(seconds) {
    if (seconds === null || seconds === undefined) return '–';
    if (seconds >= 1) return `${seconds.toFixed(2)} s`;
    const ms = seconds * 1000;
    return `${ms < 10 ? ms.toFixed(2) : ms.toFixed(1)} ms`;
  }

  function when(unixMs) {
    if (unixMs === null || unixMs === undefined) return '–';
    return new Date(unixMs).toISOString().replace('T', ' ').replace(/\.\d+Z$/, ' UTC');
  }

  const GOOD = new Set(['forwarded', 'ping', 'acknowledged', 'duplicate', 'queued']);
  const SERVER = new Set(['upstream_error_status', 'upstream_unavailable', 'upstream_timeout',
    'store_unavailable', 'internal_error']);

  function outcomeClass(outcome) {
    if (GOOD.has(outcome)) return 'good';
    if (SERVER.has(outcome)) return 'bad';
    return 'warn';
  }

  // --- rendering ---

  function renderRoutes(routes) {
    const rows = routes.map((r) => {
      const tr = el('tr');
      tr.dataset.route = r.name;
      tr.appendChild(cell(r.shadow ? `${r.name} (shadow)` : r.name, 'name'));
      tr.appendChild(cell(r.path === null ? 'no route matched' : el('code', r.path)));
      tr.appendChild(cell(r.total, 'num total'));
      const chips = el('div', null, 'outcomes');
      for (const [outcome, count] of Object.entries(r.outcomes)) {
        const chip = el('span', null, `outcome ${outcomeClass(outcome)}`);
        chip.dataset.outcome = outcome;
        chip.appendChild(el('span', outcome, 'label'));
        chip.appendChild(el('span', count, 'count'));
        chips.appendChild(chip);
      }
      tr.appendChild(cell(chips));
      tr.appendChild(cell(latency(r.latency_seconds.p50), 'num p50'));
      tr.appendChild(cell(latency(r.latency_seconds.p99), 'num p99'));
      tr.appendChild(cell(latency(r.upstream_latency_seconds.p50), 'num'));
      tr.appendChild(cell(latency(r.upstream_latency_seconds.p99), 'num'));
      return tr;
    });
    $('routes').tBodies[0].replaceChildren(...rows);
  }

  function renderCertificate(c) {
    const dd = $('certificate');
    if (!c) {
      dd.textContent = 'none here (TLS terminated in front)';
      dd.className = 'muted';
      return;
    }
    const days = c.expires_in_seconds / 86400;
    dd.textContent = c.expires_in_seconds < 0
      ? `EXPIRED ${when(c.not_after)}`
      : `expires ${when(c.not_after)} (in ${duration(c.expires_in_seconds)})`;
    dd.className = c.expires_in_seconds < 0 ? 'bad' : days < 14 ? 'warn' : '';
  }

  function reloadText(r) {
    const parts = [];
    if (r.tls_reloaded) parts.push('new certificate');
    if (r.secrets_reloaded.length) parts.push(`new secrets for ${r.secrets_reloaded.join(', ')}`);
    if (r.admin_token_reloaded) parts.push('new admin token');
    for (const e of r.errors) parts.push(`refused: ${e}`);
    return parts.join('; ');
  }

  function renderReloads(reloads) {
    $('reload-checked').textContent = reloads.checked_at === null
      ? (reloads.interval_seconds > 0
        ? `Files are checked every ${reloads.interval_seconds} s and on SIGHUP.`
        : 'Files are checked on SIGHUP.')
      : `Files last checked ${when(reloads.checked_at)}.`;
    const rows = reloads.recent.map((r) => {
      const tr = el('tr');
      tr.appendChild(cell(when(r.at)));
      tr.appendChild(cell(r.result, r.result === 'ok' ? 'good' : 'bad'));
      tr.appendChild(cell(reloadText(r)));
      return tr;
    });
    $('reloads').tBodies[0].replaceChildren(...rows);
    show('reloads', rows.length > 0);
    show('no-reloads', rows.length === 0);
  }

  function renderQueue(store) {
    show('store-problem', !store.up);
    $('store-problem').textContent = store.up ? '' : `The store does not answer: ${store.error}`;
    const rows = store.routes.map((q) => {
      const tr = el('tr');
      tr.dataset.route = q.route;
      tr.appendChild(cell(q.route));
      tr.appendChild(cell(q.pending, 'num'));
      tr.appendChild(cell(q.delivered, 'num'));
      tr.appendChild(cell(q.dead, q.dead > 0 ? 'num bad' : 'num'));
      tr.appendChild(cell(duration(q.oldest_pending_age_seconds), 'num'));
      return tr;
    });
    $('queue').tBodies[0].replaceChildren(...rows);
  }

  function actionButton(label, action, id, danger) {
    const b = el('button', label, danger ? 'danger' : '');
    b.type = 'button';
    b.dataset.action = action;
    if (danger) {
      // Drop deletes: the first click asks, the second (within 4 s) does it.
      let armed = null;
      b.addEventListener('click', () => {
        if (armed === null) {
          b.textContent = `Confirm ${label.toLowerCase()}`;
          armed = setTimeout(() => { armed = null; b.textContent = label; }, 4000);
          return;
        }
        clearTimeout(armed);
        armed = null;
        act(id, action, b);
      });
    } else {
      b.addEventListener('click', () => act(id, action, b));
    }
    return b;
  }

  function renderDead(list) {
    const signature = JSON.stringify(list.events);
    if (signature === shownDead) return; // keep a half-confirmed Drop as it is
    shownDead = signature;
    const rows = list.events.map((e) => {
      const tr = el('tr');
      tr.dataset.id = e.id;
      tr.appendChild(cell(el('code', e.id)));
      tr.appendChild(cell(e.route));
      tr.appendChild(cell(e.event));
      tr.appendChild(cell(e.attempts, 'num'));
      tr.appendChild(cell(e.last_error === null ? '–' : e.last_error));
      tr.appendChild(cell(when(e.received_at)));
      const buttons = el('div');
      buttons.appendChild(actionButton('Replay', 'replay', e.id, false));
      buttons.appendChild(actionButton('Drop', 'drop', e.id, true));
      tr.appendChild(cell(buttons));
      return tr;
    });
    $('dead').tBodies[0].replaceChildren(...rows);
    show('dead', rows.length > 0);
    show('no-dead', rows.length === 0);
  }

  function renderStatus(s) {
    $('version').textContent = s.version;
    $('uptime').textContent = duration(s.uptime_seconds);
    $('ready').textContent = s.ready ? 'yes' : 'no (starting or draining)';
    $('ready').className = s.ready ? 'good' : 'bad';
    $('updated').textContent = when(s.now);
    renderCertificate(s.certificate);
    renderRoutes(s.routes);
    renderReloads(s.reloads);
    tokenRequired = s.actions.token_required;
    actionHeader = s.actions.header;
    show('token-box', tokenRequired);
    show('store', s.store !== null);
    show('no-store', s.store === null);
    if (s.store !== null) renderQueue(s.store);
  }

  // --- data ---

  async function getJson(path) {
    const r = await fetch(path, { cache: 'no-store', headers: { Accept: 'application/json' } });
    if (!r.ok) throw new Error(`${path} answered HTTP ${r.status}`);
    return r.json();
  }

  async function refresh() {
    clearTimeout(timer);
    try {
      const status = await getJson('/api/status');
      renderStatus(status);
      if (status.store !== null && status.store.up) {
        renderDead(await getJson(`/api/events?state=dead&limit=${DEAD_LIMIT}`));
      }
      show('problem', false);
    } catch (e) {
      $('problem').textContent = `Cannot refresh: ${e.message}. Showing the last data.`;
      show('problem', true);
    } finally {
      timer = setTimeout(refresh, REFRESH_MS);
    }
  }

  async function act(id, action, button) {
    const result = $('action-result');
    const headers = {};
    headers[actionHeader] = '1';
    if (tokenRequired) {
      const token = $('token').value.trim();
      if (!token) {
        result.textContent = 'Type the admin token first.';
        result.className = 'result bad';
        $('token').focus();
        return;
      }
      headers.Authorization = `Bearer ${token}`;
    }
    button.disabled = true;
    try {
      const r = await fetch(`/api/events/${encodeURIComponent(id)}/${action}`, {
        method: 'POST', headers, cache: 'no-store',
      });
      const body = await r.json().catch(() => ({}));
      if (r.ok) {
        result.textContent = `${action === 'replay' ? 'Replayed' : 'Dropped'} ${id}.`;
        result.className = 'result good';
      } else {
        result.textContent = `${action} ${id}: ${body.message || `HTTP ${r.status}`}`;
        result.className = 'result bad';
      }
    } catch (e) {
      result.textContent = `${action} ${id}: ${e.message}`;
      result.className = 'result bad';
    } finally {
      button.disabled = false;
      shownDead = '';
      refresh();
    }
  }

  refresh();
})();
