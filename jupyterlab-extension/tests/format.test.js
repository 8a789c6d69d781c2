// The status bar's wording, on a body shaped as GET /api/v1/me returns it
// (docs/openapi.yaml, UserStatus). Run: npm test (node's own test runner; no extra packages).
const test = require('node:test');
const assert = require('node:assert/strict');
const f = require('../lib-test/format.js');

const NOW = new Date('2026-11-20T12:00:00Z');
const memory = {
  resource: 'memory', unit: 'GiB-hours', used: 52.0, limit: 60, remaining: 8.0,
  percent_used: 86.67, state: 'near', window_seconds: 2592000, running: 4, running_unit: 'GiB',
  burn_per_hour: 4, runs_out_at: '2026-11-20T14:00:00Z', retry_at: null
};
const me = {
  username: 'dana', at: NOW.toISOString(), running_servers: 1,
  resources: {
    cpu: { ...memory, resource: 'cpu', unit: 'CPU-hours', used: 3.456, limit: null,
      remaining: null, percent_used: null, state: 'unlimited', runs_out_at: null },
    memory
  },
  servers: [{ servername: '', memory: 4 }],
  runs_out_at: '2026-11-20T14:00:00Z',
  recent_sessions: [{ servername: '', started_at: '2026-11-20T11:00:00Z', running: true }],
  warnings: [
    { acted_at: '2026-11-20T09:00:00Z', servername: '', action: 'warn', message: 'old' },
    { acted_at: '2026-11-20T11:30:00Z', servername: '', action: 'warn', message: 'new' },
    { acted_at: '2026-11-20T11:40:00Z', servername: 'other', action: 'stop', message: 'x' },
    { acted_at: '2026-11-20T11:50:00Z', servername: '', action: 'stop_failed', message: 'y' },
    { acted_at: '2026-11-20T11:55:00Z', servername: '', action: 'stop', message: 'stopped' }
  ]
};

test('status text: limited resources only, compact', () => {
  assert.equal(f.statusText(me), 'Memory: 52 / 60 GiB-h');
  const two = { ...me, resources: { ...me.resources, gpu: { ...memory, resource: 'gpu',
    unit: 'GPU-hours', used: 1.54, limit: 8 } } };
  assert.equal(f.statusText(two), 'Memory: 52 / 60 GiB-h · GPU: 1.5 / 8 GPU-h');
  assert.equal(f.statusText({ ...me, resources: { cpu: me.resources.cpu } }), 'Quota: unlimited');
});

test('a zero budget nobody uses is not shown, but named in the popover', () => {
  const gpu = { ...memory, resource: 'gpu', unit: 'GPU-hours', used: 0, limit: 0, remaining: 0,
    percent_used: 0, state: 'none', burn_per_hour: 0 };
  const withGpu = { ...me, resources: { ...me.resources, gpu } };
  assert.equal(f.statusText(withGpu), 'Memory: 52 / 60 GiB-h');
  assert.equal(f.worstState(withGpu), 'near');
  assert.deepEqual(f.excluded(withGpu), ['GPU']);
  const used = { ...me, resources: { gpu: { ...gpu, used: 1, burn_per_hour: 1 } } };
  assert.equal(f.statusText(used), 'GPU: 1 / 0 GPU-h');
  assert.equal(f.worstState(used), 'over');
});

test('compact numbers', () => {
  assert.equal(f.compactNumber(41.7), '42');
  assert.equal(f.compactNumber(4.17), '4.2');
  assert.equal(f.compactNumber(0.349), '0.35');
  assert.equal(f.compactNumber(0), '0');
});

test('worst state', () => {
  assert.equal(f.worstState(me), 'near');
  const over = { ...me, resources: { memory: { ...memory, state: 'over' } } };
  assert.equal(f.worstState(over), 'over');
  const none = { ...me, resources: { memory: { ...memory, limit: 0, state: 'none' } } };
  assert.equal(f.worstState(none), 'over');
});

test('durations', () => {
  assert.equal(f.duration(30), 'under a minute');
  assert.equal(f.duration(45 * 60), '45 min');
  assert.equal(f.duration(3 * 3600 + 20 * 60), '3 h 20 min');
  assert.equal(f.duration(2 * 86400 + 4 * 3600), '2 d 4 h');
  assert.equal(f.duration(30 * 86400), '30 d');
});

test('popover lines: used, left, when quota comes back', () => {
  const [line] = f.resourceLines(me, NOW, 'en-GB');
  assert.equal(line.resource, 'Memory');
  assert.equal(line.used, '52 / 60 GiB-hours (87 %)');
  assert.equal(line.remaining, '8 GiB-hours left');
  assert.match(line.comesBack, /30 d window gradually/);
  const spent = { ...me, resources: { memory: { ...memory, used: 61, remaining: 0,
    state: 'over', retry_at: '2026-11-21T12:00:00Z' } } };
  assert.match(f.resourceLines(spent, NOW, 'en-GB')[0].comesBack, /room again .*\(in 1 d\)/);
});

test('how long this server can keep running', () => {
  assert.match(f.runningText(me, '', NOW, 'en-GB'), /^At its current size this server can keep running about 2 h, until /);
  const two = { ...me, servers: [{ servername: '' }, { servername: 'big' }] };
  assert.match(f.runningText(two, '', NOW, 'en-GB'), /With your 2 running servers/);
  assert.match(f.runningText({ ...me, runs_out_at: null }, '', NOW), /does not run out/);
  assert.match(f.runningText({ ...me, runs_out_at: '2026-11-20T11:00:00Z' }, '', NOW), /used up/);
});

test('new warnings: the user\'s warnings and this server\'s stop, this session, not seen', () => {
  const since = f.sessionStart(me, '');
  assert.deepEqual(since, new Date('2026-11-20T11:00:00Z'));
  const fresh = f.newWarnings(me, '', new Set(), since);
  assert.deepEqual(fresh.map(w => w.message), ['new', 'stopped']);
  const seen = new Set(['2026-11-20T11:30:00Z', '2026-11-20T11:55:00Z']);
  assert.deepEqual(f.newWarnings(me, '', seen, since), []);
  // a named server: the user-level warning, not the default server's stop
  assert.deepEqual(f.newWarnings(me, 'other', new Set(), since).map(w => w.message), ['new', 'x']);
  assert.equal(f.sessionStart(me, 'nope'), null);
});

test('shape check', () => {
  assert.ok(f.isMe(me));
  assert.ok(!f.isMe({ resources: [] , servers: null }));
  assert.ok(!f.isMe(null));
  assert.ok(!f.isMe({ message: 'x' }));
});
