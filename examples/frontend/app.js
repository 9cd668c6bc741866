// A learner's tracks, live. Reads who the token belongs to (GET /api/v1/me), their progress on
// every track (GET /api/v1/users/{id}/progress), then follows each track's event stream.
// EventSource cannot send an Authorization header, so each stream is opened with a stream
// ticket minted with the token (POST …/progress/stream-ticket): one ticket per connection.

const params = new URLSearchParams(location.search);
const form = document.getElementById('login');
const apiInput = document.getElementById('api');
const tokenInput = document.getElementById('token');
const statusLine = document.getElementById('status');
const tracks = document.getElementById('tracks');
const cardTemplate = document.getElementById('track-card');

// every (re)load of the list starts a generation; streams of an older one stop reconnecting
let generation = 0;
const open = new Set();

apiInput.value = params.get('api') || 'http://127.0.0.1:8080';
if (params.has('token')) {
  tokenInput.value = params.get('token');
  // keep the token out of the address bar and the history
  params.delete('token');
  history.replaceState(null, '', `${location.pathname}?${params}`);
}
form.addEventListener('submit', (event) => {
  event.preventDefault();
  show();
});
if (tokenInput.value) show();

function setStatus(text, isError = false) {
  statusLine.textContent = text;
  statusLine.classList.toggle('error', isError);
}

/** Calls the API with the bearer token; a refusal throws with the API's own message. */
async function call(url, token, init = {}) {
  const response = await fetch(url, {
    ...init,
    headers: { Authorization: `Bearer ${token}` },
  });
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).message;
    } catch {
      // not a JSON error: keep the status text
    }
    throw new Error(`${response.status} ${message}`);
  }
  return response.json();
}

async function show() {
  const current = ++generation;
  for (const source of open) source.close();
  open.clear();
  tracks.replaceChildren();
  const api = apiInput.value.replace(/\/+$/, '');
  const token = tokenInput.value.trim();
  setStatus('Loading…');
  try {
    const me = await call(`${api}/api/v1/me`, token);
    const { progress } = await call(`${api}/api/v1/users/${me.user_id}/progress`, token);
    if (current !== generation) return;
    setStatus(progress.length
      ? `${progress.length} track${progress.length === 1 ? '' : 's'} of learner ${me.user_id}`
      : `Learner ${me.user_id} has not started a track yet.`);
    for (const snapshot of progress) {
      update(snapshot);
      follow(api, token, snapshot.user_id, snapshot.track_id, current, 0);
    }
  } catch (error) {
    setStatus(`Could not load progress: ${error.message}`, true);
  }
}

/** Follows one track's stream; after an error, reconnects with a new ticket, backing off. */
async function follow(api, token, userId, trackId, current, failures) {
  const base = `${api}/api/v1/users/${userId}/tracks/${trackId}/progress`;
  const card = cardFor(trackId);
  const retry = () => {
    card.dataset.live = 'false';
    if (current !== generation) return;
    const delay = Math.min(30_000, 1000 * 2 ** failures);
    setTimeout(() => follow(api, token, userId, trackId, current, failures + 1), delay);
  };
  let ticket;
  try {
    ({ ticket } = await call(`${base}/stream-ticket`, token, { method: 'POST' }));
  } catch (error) {
    setStatus(`Live updates paused: ${error.message}`, true);
    return retry();
  }
  if (current !== generation) return;
  const source = new EventSource(`${base}/stream?ticket=${encodeURIComponent(ticket)}`);
  open.add(source);
  source.onopen = () => {
    card.dataset.live = 'true';
    failures = 0;
  };
  source.addEventListener('progress', (event) => update(JSON.parse(event.data)));
  source.addEventListener('erased', () => {
    // the learner's progress was erased: nothing more will come, so no reconnecting
    source.close();
    open.delete(source);
    card.dataset.live = 'false';
    setStatus('This progress was erased.', true);
  });
  source.onerror = () => {
    // EventSource would retry with the same ticket, which is spent: mint a new one instead
    source.close();
    open.delete(source);
    retry();
  };
}

function cardFor(trackId) {
  let card = tracks.querySelector(`[data-track="${CSS.escape(trackId)}"]`);
  if (!card) {
    card = cardTemplate.content.firstElementChild.cloneNode(true);
    card.dataset.track = trackId;
    card.dataset.version = '0';
    card.querySelector('.title').textContent = `Track ${trackId.slice(0, 8)}`;
    card.querySelector('.title').title = trackId;
    tracks.append(card);
  }
  return card;
}

/** Shows a snapshot unless the card already shows a newer one: version is the order. */
function update(progress) {
  const card = cardFor(progress.track_id);
  if (progress.version <= Number(card.dataset.version)) return;
  card.dataset.version = String(progress.version);
  card.dataset.status = progress.status;

  const percent = Math.round(progress.percent_complete);
  const bar = card.querySelector('.bar');
  bar.setAttribute('aria-valuenow', String(percent));
  bar.querySelector('.fill').style.width = `${percent}%`;

  const done = progress.completed_unit_ids;
  const total = Math.max(progress.total_units, done.length);
  card.querySelector('.summary').textContent =
    `${done.length} of ${total} units (${percent}%)` +
    (progress.status === 'completed' ? ' · completed' : '');

  // the snapshot names completed units and the current one; the rest are still ahead
  const units = done.map((id) => unitItem(id, 'done'));
  const currentId = progress.current_unit_id;
  if (currentId && !done.includes(currentId)) units.push(unitItem(currentId, 'current'));
  while (units.length < total) units.push(unitItem(null, 'ahead'));
  card.querySelector('.units').replaceChildren(...units);
}

function unitItem(id, state) {
  const item = document.createElement('li');
  item.className = state;
  item.textContent = id ? id.slice(0, 8) : '·';
  item.title = id ? `${state} unit ${id}` : 'a unit ahead';
  return item;
}
