// Portcullis console: a little progressive enhancement. Every page works
// without it; with it, the sessions list and the reviews inbox refresh
// themselves when the gateway says something changed (server-sent
// events), and terminal recordings play in place.
'use strict';

// Replaces the element marked data-live with the same element of a fresh
// copy of the page. Skipped while someone is typing in it (a half-written
// reason is not thrown away); a notice offers the refresh instead.
async function refresh(region) {
  const typing = region.contains(document.activeElement) ||
    [...region.querySelectorAll('textarea, input[type=text]')].some((f) => f.value !== '');
  if (typing) {
    const notice = document.getElementById('stale');
    if (notice) notice.hidden = false;
    return;
  }
  const resp = await fetch(location.href, { credentials: 'same-origin', headers: { Accept: 'text/html' } });
  if (!resp.ok) return;
  const doc = new DOMParser().parseFromString(await resp.text(), 'text/html');
  const fresh = doc.getElementById(region.id);
  if (fresh) {
    region.replaceWith(fresh);
    document.body.dataset.refreshed = String(Number(document.body.dataset.refreshed || 0) + 1);
  }
}

function follow() {
  const region = document.querySelector('[data-live]');
  if (!region || !window.EventSource) return;
  const source = new EventSource(region.dataset.live);
  const id = region.id;
  source.addEventListener(region.dataset.event, () => refresh(document.getElementById(id)));
  source.addEventListener('open', () => { document.body.dataset.following = 'yes'; });
}

function players() {
  if (!window.AsciinemaPlayer) return;
  for (const el of document.querySelectorAll('[data-cast]')) {
    const button = el.querySelector('button');
    if (!button) continue;
    button.addEventListener('click', () => {
      const url = el.dataset.cast;
      button.remove();
      window.AsciinemaPlayer.create(url, el, { fit: 'width', autoPlay: true, controls: true, terminalFontSize: '14px' });
      el.dataset.playing = 'yes';
    });
  }
}

// Users picked from the list fill in their groups.
function principals() {
  const user = document.getElementById('user');
  const groups = document.getElementById('groups');
  const list = document.getElementById('known-users');
  if (!user || !groups || !list) return;
  user.addEventListener('change', () => {
    const option = [...list.options].find((o) => o.value === user.value);
    if (option && groups.value === '') groups.value = option.dataset.groups || '';
  });
}

follow();
players();
principals();
