// Exercises page.html's script in plain node (no browser) with a minimal fake DOM:
// launch data from the fragment / Telegram.WebApp / sessionStorage / query, theme params,
// 401 (no retry), 502, 503 + Retry-After and network failure (retry), retry, late SDK, new user. Run: node ingress/src/miniapp/testdata/page_harness.js

const fs = require('fs');
const html = fs.readFileSync(require('path').join(__dirname, '..', 'page.html'), 'utf8');
const script = html.match(/<script>([\s\S]*?)<\/script>/)[1];
const ids = [...html.matchAll(/id="([^"]+)"/g)].map(m => m[1]);
const dataT = [...html.matchAll(/data-t="([^"]+)"/g)].map(m => m[1]);

function run({hash = '', search = '', telegram = null, sdk = 'error', respond, store = null}) {
  return new Promise(resolve => {
    const els = {};
    const mk = (id) => ({id, textContent: '', attrs: {}, setAttribute(k, v) { this.attrs[k] = v; }, getAttribute(k) { return this.attrs[k]; }});
    ids.forEach(id => els[id] = mk(id));
    const tEls = dataT.map(k => { const e = mk(''); e.attrs['data-t'] = k; return e; });
    const styleProps = {};
    const calls = [];
    const win = {};
    if (telegram) win.Telegram = telegram;
    const document = {
      body: mk('body'),
      documentElement: {lang: 'en', style: {setProperty(k, v) { styleProps[k] = v; }}},
      getElementById: id => els[id],
      querySelectorAll: () => tEls,
      createElement: () => ({}),
      head: {appendChild(s) { calls.push('sdk:' + s.src); setTimeout(() => { if (sdk === 'error') s.onerror(); else { win.Telegram = sdk; s.onload(); } }, 20); }},
    };
    const fetch = (url, opts) => { calls.push(['fetch', url, opts.headers.Authorization]); return Promise.resolve(respond(url, opts)); };
    const sessionStorage = {getItem: k => (store && store[k]) || null};
    const location = {hash, search};
    const fn = new Function('window', 'document', 'location', 'fetch', 'sessionStorage', 'AbortController', 'setTimeout', 'clearTimeout', 'URLSearchParams', script);
    fn(win, document, location, fetch, sessionStorage, AbortController, setTimeout, clearTimeout, URLSearchParams);
    setTimeout(() => resolve({els, body: document.body, styleProps, calls, lang: document.documentElement.lang, tEls}), 3000);
  });
}
const okResp = (lang) => ({ok: true, status: 200, json: () => Promise.resolve({ok: true,
  user: {id: 42, first_name: 'Ann', last_name: null, username: 'ann', language_code: lang, first_seen: 1700000000000, last_seen: 1, messages: 7, start_payload: null},
  bot: {users_total: 2, users_new_24h: 1, users_active_24h: 1, updates_handled: 99, queue_depth: 3}})});
const INIT = 'query_id=Q&user=%7B%22id%22%3A42%2C%22language_code%22%3A%22ru%22%7D&auth_date=1&hash=ab';
const assert = require('assert');
(async () => {
  // 1. fragment, as Telegram passes it (value URL-encoded once more), theme params, SDK fails.
  const frag = '#tgWebAppData=' + encodeURIComponent(INIT) + '&tgWebAppVersion=7.0&tgWebAppThemeParams=' +
    encodeURIComponent(JSON.stringify({bg_color: '#112233', text_color: '#ffffff', evil: 'red;}x{'}));
  let r = await run({hash: frag, respond: () => okResp('en')});
  assert.deepStrictEqual(r.calls.find(c => c[0] === 'fetch'), ['fetch', '/api/me', 'tma ' + INIT]);
  assert.strictEqual(r.body.attrs['data-state'], 'ready');
  assert.strictEqual(r.els.app.attrs['data-state'], 'ready');
  assert.strictEqual(r.els.name.textContent, 'Ann @ann');
  assert.strictEqual(r.els.messages.textContent, '7');
  assert.strictEqual(r.els['users-total'].textContent, '2');
  assert.strictEqual(r.els['updates-handled'].textContent, '99');
  assert.strictEqual(r.els['queue-depth'].textContent, '3');
  assert.strictEqual(r.els.status.textContent, '');
  assert.strictEqual(r.els.error.textContent, '');
  assert.match(r.els['first-seen'].textContent, /2023/);
  assert.deepStrictEqual(r.styleProps, {'--tg-theme-bg-color': '#112233', '--tg-theme-text-color': '#ffffff'});
  console.log('1 ok', r.els['first-seen'].textContent);

  // 2. Telegram.WebApp present with initData: preferred, ready/expand called; ru labels.
  const seen = [];
  const wa = {initData: 'from=sdk', themeParams: {button_color: '#abcdef'}, ready: () => seen.push('ready'), expand: () => seen.push('expand'), onEvent: () => seen.push('on')};
  r = await run({hash: frag, telegram: {WebApp: wa}, respond: () => okResp('ru')});
  assert.strictEqual(r.calls.find(c => c[0] === 'fetch')[2], 'tma from=sdk');
  assert.deepStrictEqual(seen, ['ready', 'expand', 'on']);
  assert.strictEqual(r.styleProps['--tg-theme-button-color'], '#abcdef');
  assert.strictEqual(r.lang, 'ru');
  assert.strictEqual(r.els.status.textContent, '');
  assert.strictEqual(r.tEls.find(e => e.attrs['data-t'] === 'fs').textContent, 'Впервые');
  console.log('2 ok', r.tEls.map(e => e.textContent).join('|'));

  // 3. No launch data, SDK fails: what to do, in words, and no retry (it cannot help).
  r = await run({respond: () => { throw new Error('no fetch expected'); }});
  assert.strictEqual(r.body.attrs['data-state'], 'error');
  assert.strictEqual(r.els['error-title'].textContent, 'Session expired or invalid');
  assert.strictEqual(r.els.error.textContent, 'Open the app again from the bot.');
  assert.strictEqual(r.els['error-detail'].textContent, 'No launch data');
  assert.strictEqual(r.els.retry.hidden, true);
  assert.strictEqual(r.els.status.textContent, '');
  assert.ok(!r.calls.some(c => c[0] === 'fetch'));
  console.log('3 ok', r.els.error.textContent);

  // 4. 401 from the server: a message for people, the server's reason as the detail, no
  // retry; in the language of the (unverified) launch data: INIT says ru.
  const r401 = () => ({ok: false, status: 401, json: () => Promise.resolve({ok: false, error: 'initData has expired'})});
  r = await run({hash: frag, respond: r401});
  assert.strictEqual(r.body.attrs['data-state'], 'error');
  assert.strictEqual(r.lang, 'ru');
  assert.strictEqual(r.els['error-title'].textContent, 'Сеанс истёк или недействителен');
  assert.strictEqual(r.els.error.textContent, 'Откройте приложение заново из чата с ботом.');
  assert.strictEqual(r.els['error-detail'].textContent, 'initData has expired');
  assert.strictEqual(r.els.retry.hidden, true);
  assert.strictEqual(r.tEls.find(e => e.attrs['data-t'] === 'retry').textContent, 'Повторить');
  const fragEn = '#tgWebAppData=' + encodeURIComponent(INIT.replace('%22ru%22', '%22en%22'));
  r = await run({hash: fragEn, respond: r401});
  assert.strictEqual(r.lang, 'en');
  assert.strictEqual(r.els['error-title'].textContent, 'Session expired or invalid');
  assert.strictEqual(r.els.error.textContent, 'Open the app again from the bot.');
  assert.strictEqual(r.els['error-detail'].textContent, 'initData has expired');
  assert.strictEqual(r.els.retry.hidden, true);
  console.log('4 ok');

  // 5. Non-JSON 502 and network failure: retry offered.
  r = await run({hash: fragEn, respond: () => ({ok: false, status: 502, json: () => Promise.reject(new Error('x'))})});
  assert.strictEqual(r.els['error-title'].textContent, "Couldn't load statistics");
  assert.strictEqual(r.els.error.textContent, 'Could not reach the server.');
  assert.strictEqual(r.els['error-detail'].textContent, 'HTTP 502');
  assert.strictEqual(r.els.retry.hidden, false);
  r = await run({hash: frag, respond: () => Promise.reject(new TypeError('Failed to fetch'))});
  assert.strictEqual(r.els['error-title'].textContent, 'Не удалось загрузить статистику');
  assert.strictEqual(r.els.error.textContent, 'Сервер недоступен.');
  assert.strictEqual(r.els['error-detail'].textContent, '');
  assert.strictEqual(r.els.retry.hidden, false);
  console.log('5 ok');

  // 5b. 503 with Retry-After: the hint, the server's reason, retry offered; retrying goes
  // back to loading (the stats stay hidden until data arrives) and then shows the data.
  const busy = 'statistics are temporarily unavailable (storage not answering); try again shortly';
  const r503 = (ra) => ({ok: false, status: 503, headers: {get: k => (k === 'Retry-After' ? ra : null)},
    json: () => Promise.resolve({ok: false, error: busy})});
  let n = 0;
  r = await run({hash: fragEn, respond: () => (n++ === 0 ? r503('5') : okResp('en'))});
  assert.strictEqual(r.body.attrs['data-state'], 'error');
  assert.strictEqual(r.els['error-title'].textContent, "Couldn't load statistics");
  assert.strictEqual(r.els.error.textContent, 'Statistics are temporarily unavailable. Try again in 5 s.');
  assert.strictEqual(r.els['error-detail'].textContent, busy);
  assert.strictEqual(r.els.retry.hidden, false);
  r.els.retry.onclick();
  assert.strictEqual(r.body.attrs['data-state'], 'loading');
  assert.strictEqual(r.els.status.textContent, 'Loading…');
  await new Promise(done => setTimeout(done, 50));
  assert.strictEqual(r.body.attrs['data-state'], 'ready');
  assert.strictEqual(r.els.messages.textContent, '7');
  assert.strictEqual(r.els.error.textContent, '');
  assert.strictEqual(n, 2);
  r = await run({hash: frag, respond: () => r503('5')});
  assert.strictEqual(r.els.error.textContent, 'Статистика временно недоступна. Повторите через 5 с.');
  r = await run({hash: fragEn, respond: () => r503(null)});
  assert.strictEqual(r.els.error.textContent, 'Statistics are temporarily unavailable.');
  assert.strictEqual(r.els.retry.hidden, false);
  console.log('5b ok');

  // 6. No data at first; SDK loads late and provides it.
  const late = {initData: 'late=1', themeParams: {}, ready() {}, expand() {}, onEvent() {}};
  r = await run({sdk: {WebApp: late}, respond: () => okResp('en')});
  assert.strictEqual(r.calls.find(c => c[0] === 'fetch')[2], 'tma late=1');
  assert.strictEqual(r.body.attrs['data-state'], 'ready');
  console.log('6 ok');

  // 7. sessionStorage (Telegram SDK's saved params after a reload) and query string.
  r = await run({store: {'__telegram__initParams': JSON.stringify({tgWebAppData: 'stored=1'})}, respond: () => okResp('en')});
  assert.strictEqual(r.calls.find(c => c[0] === 'fetch')[2], 'tma stored=1');
  r = await run({search: '?tgWebAppData=' + encodeURIComponent(INIT), respond: () => okResp('en')});
  assert.strictEqual(r.calls.find(c => c[0] === 'fetch')[2], 'tma ' + INIT);
  // new user: first_seen null
  r = await run({hash: frag, respond: () => ({ok: true, status: 200, json: () => Promise.resolve({ok: true, user: {first_name: 'Bo', first_seen: null, messages: 0}, bot: {}})})});
  assert.match(r.els['first-seen'].textContent, /send \/start/);
  assert.strictEqual(r.els.messages.textContent, '0');
  assert.strictEqual(r.els['users-total'].textContent, '—');
  console.log('7 ok');
})().catch(e => { console.error(e); process.exit(1); });
