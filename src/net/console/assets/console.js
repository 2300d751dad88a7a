// The hookgate admin console. Polls /api/status (and, with a store,
// /api/events?state=dead) and renders with textContent only: nothing the
// server sends is ever parsed as HTML. Served from the binary under a CSP
// that allows this script, the style sheet and same-origin fetch, nothing else.
// The chart of forwarded vs rejected requests is drawn (as SVG elements) from
// the totals this page keeps from one refresh to the next.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  // ?refresh=N: refresh every N seconds (1 to 60; default 5).
  const REFRESH_S = Number(new URLSearchParams(window.location.search).get('refresh'));
  const REFRESH_MS = (Number.isInteger(REFRESH_S) && REFRESH_S >= 1 && REFRESH_S <= 60
    ? REFRESH_S : 5) * 1000;
  const DEAD_LIMIT = 20;
  const CHART_SPAN_MS = 10 * 60 * 1000; // the page keeps this much
  // The chart's time axis: the first of these that holds what the page has kept.
  const CHART_SPANS_MS = [30e3, 60e3, 120e3, 300e3, CHART_SPAN_MS];
  const CERT_WARN_SECONDS = 14 * 86400;
  const SVG_NS = $('chart-svg').namespaceURI;

  let tokenRequired = false;
  let actionHeader = 'X-Hookgate-Action';
  let timer = null;
  let shownDead = '';
  // The chart's data: the totals over all routes at each refresh, of this process.
  let samples = [];
  let samplesOf = null; // the process they count (its started_at)

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

  function perMinute(count, seconds) {
    const rate = (count * 60) / seconds;
    return rate >= 10 || rate === 0 ? rate.toFixed(0) : rate.toFixed(1);
  }

  // The last minute's cell: requests per minute, then what they came to.
  function lastMinute(m) {
    const box = el('div');
    // No rate over less than a second (right after the start): the counts only.
    box.appendChild(el('span', m.per_second === null ? '–'
      : `${perMinute(m.requests, m.seconds)}/min`, 'main'));
    box.appendChild(el('div',
      `${m.forwarded} forwarded, ${m.rejected} rejected in ${duration(m.seconds)}`, 'small muted'));
    return box;
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
      tr.appendChild(cell(lastMinute(r.last_minute), 'num rate'));
      const sig = cell(r.signature_failures, 'num sig');
      if (r.last_minute.signature_failures > 0) {
        sig.appendChild(el('div', `${r.last_minute.signature_failures} in the last minute`, 'small'));
      }
      sig.classList.add(r.last_minute.signature_failures > 0 ? 'bad'
        : r.signature_failures > 0 ? 'warn' : 'quiet');
      tr.appendChild(sig);
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
    const subject = $('certificate');
    const expiry = $('cert-expiry');
    if (!c) {
      subject.textContent = 'none here (TLS terminated in front)';
      subject.className = 'muted';
      expiry.textContent = '–';
      expiry.className = 'muted';
      return;
    }
    const names = c.names.length ? ` (${c.names.join(', ')})` : '';
    subject.textContent = `${c.subject || 'no subject'}${names}`;
    subject.className = '';
    expiry.textContent = c.expires_in_seconds < 0
      ? `EXPIRED ${when(c.not_after)}`
      : `${when(c.not_after)} (in ${duration(c.expires_in_seconds)})`;
    // Red under 14 days: cert-manager renews 30 days ahead, so something failed.
    expiry.className = c.expires_in_seconds < CERT_WARN_SECONDS ? 'bad' : '';
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

  // --- the chart: forwarded vs rejected per minute, from the page's samples ---

  function keepSample(s) {
    if (s.started_at !== samplesOf) { // first refresh, or the process restarted
      samples = [];
      samplesOf = s.started_at;
    }
    let forwarded = 0;
    let rejected = 0;
    for (const r of s.routes) {
      forwarded += r.forwarded;
      rejected += r.rejected;
    }
    samples.push({ at: s.now, forwarded, rejected });
    while (samples.length > 2 && samples[1].at <= s.now - CHART_SPAN_MS) samples.shift();
  }

  function svg(tag, attrs, text) {
    const e = document.createElementNS(SVG_NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  }

  // The smallest of 1, 2, 5, 10, 20, 50… that is at least v.
  function niceCeil(v) {
    let step = 1;
    for (;;) {
      for (const m of [1, 2, 5]) if (step * m >= v) return step * m;
      step *= 10;
    }
  }

  function renderChart() {
    const box = $('chart-svg');
    const [W, H, LEFT, TOP, BOTTOM] = [640, 140, 44, 8, 20];
    const plotW = W - LEFT - 4;
    const plotH = H - TOP - BOTTOM;
    const intervals = [];
    for (let i = 1; i < samples.length; i += 1) {
      const [a, b] = [samples[i - 1], samples[i]];
      const minutes = (b.at - a.at) / 60000;
      if (minutes <= 0) continue;
      intervals.push({
        from: a.at,
        to: b.at,
        forwarded: Math.max(0, b.forwarded - a.forwarded) / minutes,
        rejected: Math.max(0, b.rejected - a.rejected) / minutes,
      });
    }
    show('chart-empty', intervals.length === 0);
    if (intervals.length === 0) {
      box.replaceChildren();
      return;
    }
    const end = samples[samples.length - 1].at;
    const span = CHART_SPANS_MS.find((ms) => ms >= end - samples[0].at) || CHART_SPAN_MS;
    const spanText = span < 60e3 ? `${span / 1000} s` : `${span / 60e3} min`;
    $('chart-span').textContent = spanText;
    const start = end - span;
    const top = niceCeil(Math.max(1, ...intervals.map((i) => Math.max(i.forwarded, i.rejected))));
    const x = (t) => LEFT + (plotW * (Math.max(t, start) - start)) / span;
    const y = (v) => TOP + plotH - (plotH * v) / top;
    const step = (key) => {
      let d = '';
      for (const i of intervals) {
        d += `${d ? 'L' : 'M'}${x(i.from).toFixed(1)},${y(i[key]).toFixed(1)}`;
        d += `H${x(i.to).toFixed(1)}`;
      }
      return d;
    };
    const parts = [
      svg('rect', { class: 'plot', x: LEFT, y: TOP, width: plotW, height: plotH }),
      svg('line', { class: 'grid', x1: LEFT, x2: LEFT + plotW, y1: y(top / 2), y2: y(top / 2) }),
      svg('text', { class: 'axis', x: LEFT - 4, y: TOP + 10, 'text-anchor': 'end' }, `${top}/min`),
      svg('text', { class: 'axis', x: LEFT - 4, y: TOP + plotH, 'text-anchor': 'end' }, '0'),
      svg('text', { class: 'axis', x: LEFT, y: H - 4 }, `−${spanText}`),
      svg('text', { class: 'axis', x: LEFT + plotW, y: H - 4, 'text-anchor': 'end' }, 'now'),
    ];
    // Light bars under the lines: one per refresh, forwarded and rejected side by side.
    for (const i of intervals) {
      const [x0, x1] = [x(i.from), x(i.to)];
      const w = Math.max(0.5, (x1 - x0) / 2 - 0.5);
      for (const [key, dx] of [['forwarded', 0], ['rejected', w]]) {
        if (i[key] > 0) {
          parts.push(svg('rect', {
            class: `bar ${key}`, x: (x0 + dx).toFixed(1), y: y(i[key]).toFixed(1),
            width: w.toFixed(1), height: (TOP + plotH - y(i[key])).toFixed(1),
          }));
        }
      }
    }
    parts.push(svg('path', { class: 'line forwarded', d: step('forwarded') }));
    parts.push(svg('path', { class: 'line rejected', d: step('rejected') }));
    const last = intervals[intervals.length - 1];
    box.setAttribute('aria-label', `forwarded ${last.forwarded.toFixed(1)}/min, `
      + `rejected ${last.rejected.toFixed(1)}/min at the last refresh`);
    box.replaceChildren(...parts);
  }

  function renderStatus(s) {
    $('version').textContent = s.version;
    $('uptime').textContent = duration(s.uptime_seconds);
    $('ready').textContent = s.ready ? 'yes' : 'no (starting or draining)';
    $('ready').className = s.ready ? 'good' : 'bad';
    $('updated').textContent = when(s.now);
    renderCertificate(s.certificate);
    renderRoutes(s.routes);
    keepSample(s);
    renderChart();
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

  $('refresh-every').textContent = `${REFRESH_MS / 1000} s`;
  refresh();
})();
