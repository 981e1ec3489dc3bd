// The notification center's live parts. The page works without this file: it adds the event
// stream (GET /events), actions without a reload, colours (a strict CSP forbids inline styles, so
// colours travel as data-color and are applied here), relative times and desktop notifications.
'use strict';
(function () {
  var body = document.body;
  var list = document.getElementById('list');
  if (!list) return;
  var csrf = body.dataset.csrf;
  var baseTitle = body.dataset.title;
  var badge = document.getElementById('badge');
  var live = document.getElementById('live');
  var status = document.getElementById('status');
  var empty = document.getElementById('empty');
  var lang = document.documentElement.lang || 'en';
  var queue = Promise.resolve();

  function say(text) {
    // Re-setting the same text would not be announced again.
    live.textContent = '';
    setTimeout(function () { live.textContent = text; }, 30);
  }

  function setCounter(n) {
    if (typeof n !== 'number') return;
    badge.textContent = String(n);
    badge.hidden = n <= 0;
    badge.setAttribute('aria-label', n + ' ' + (badge.getAttribute('aria-label') || '').replace(/^\d+ /, ''));
    document.title = n > 0 ? '(' + n + ') ' + baseTitle : baseTitle;
  }

  function colour(root) {
    root.querySelectorAll('[data-color]').forEach(function (el) {
      var c = el.dataset.color;
      if (!/^#[0-9a-f]{3}([0-9a-f]{3})?$/i.test(c)) return;
      if (el.classList.contains('attach')) el.style.borderLeftColor = c;
      else if (el.tagName === 'HR') el.style.borderTopColor = c;
      else el.style.color = c;
    });
    root.querySelectorAll('hr[data-size]').forEach(function (el) {
      var s = parseInt(el.dataset.size, 10);
      if (s > 0) el.style.maxWidth = s + 'px';
    });
  }

  var rtf = window.Intl && Intl.RelativeTimeFormat ? new Intl.RelativeTimeFormat(lang, { numeric: 'auto' }) : null;
  function times(root) {
    root.querySelectorAll('.meta time').forEach(function (el) {
      var d = new Date(el.getAttribute('datetime'));
      if (isNaN(d)) return;
      el.title = d.toLocaleString(lang);
      if (!rtf) return;
      var s = Math.round((d - Date.now()) / 1000);
      var a = Math.abs(s);
      el.textContent = a < 60 ? rtf.format(0, 'second') : a < 3600 ? rtf.format(Math.round(s / 60), 'minute')
        : a < 86400 ? rtf.format(Math.round(s / 3600), 'hour') : rtf.format(Math.round(s / 86400), 'day');
    });
  }

  function enhance(root) { colour(root); times(root); }

  function item(id) { return document.getElementById('n-' + id); }

  function setRead(el, read) {
    if (!el || el.classList.contains('confirm')) return;
    el.classList.toggle('read', read);
    el.classList.toggle('unread', !read);
    var b = el.querySelector('button.toggle');
    if (b) {
      b.value = read ? 'unread' : 'read';
      b.textContent = read ? b.dataset.unread : b.dataset.read;
    }
  }

  function removeItem(el) {
    if (!el) return;
    var next = el.nextElementSibling || el.previousElementSibling;
    var hadFocus = el.contains(document.activeElement);
    el.remove();
    if (hadFocus && next) next.querySelector('button, a, summary').focus();
    empty.hidden = list.children.length > 0;
  }

  // --- actions -------------------------------------------------------------------------------
  document.addEventListener('submit', function (e) {
    var form = e.target;
    if (!form.classList || !form.classList.contains('act') || !window.fetch) return;
    e.preventDefault();
    var data = new URLSearchParams(new FormData(form));
    if (e.submitter && e.submitter.name) data.set(e.submitter.name, e.submitter.value);
    var action = data.get('action');
    var id = data.get('id');
    fetch('/center/action', {
      method: 'POST', credentials: 'same-origin', body: data,
      headers: { 'Accept': 'application/json' }
    }).then(function (r) { return r.json(); }).then(function (res) {
      if (!res.ok) { say(body.dataset.tFailed); return; }
      var el = item(id);
      if (action === 'read' || action === 'unread') setRead(el, action === 'read');
      else if (action === 'read_all') list.querySelectorAll('.item.unread').forEach(function (x) { setRead(x, true); });
      else if (action === 'delete' || action === 'confirm') removeItem(el);
      else if (action === 'answer') { form.reset(); }
      var msg = res.result && res.result.result_message;
      say(Array.isArray(msg) && msg.length ? msg.join(' ') : body.dataset.tDone);
      setCounter(res.counter);
    }).catch(function () { say(body.dataset.tFailed); });
  });

  // --- the event stream ----------------------------------------------------------------------
  var replacing = {}; // tag -> element kept in place until its replacement arrives

  function fetchItem(id) {
    return fetch('/center/item/' + encodeURIComponent(id), { credentials: 'same-origin' }).then(function (r) {
      if (!r.ok) return null;
      return r.text().then(function (html) {
        var t = document.createElement('template');
        t.innerHTML = html; // our own server's rendering, escaped there
        return t.content.firstElementChild;
      });
    });
  }

  function desktop(el) {
    if (!document.hidden || !('Notification' in window) || Notification.permission !== 'granted') return;
    try {
      new Notification(el.dataset.sender || body.dataset.tSystem, { body: el.dataset.plain || '', tag: 'imnotify-' + el.dataset.id });
    } catch (err) { /* some browsers allow it only from a service worker */ }
  }

  function onAdd(d) {
    if (!d || !d.id || item(d.id)) return;
    return fetchItem(d.id).then(function (el) {
      if (!el || item(d.id)) return;
      enhance(el);
      var old = d.notify_tag && replacing[d.notify_tag];
      if (old && old.parentNode) {
        old.replaceWith(el);
        delete replacing[d.notify_tag];
      } else {
        // Newest first, after the confirmations (im.notify.get's order).
        var confirm = el.classList.contains('confirm');
        var first = confirm ? list.firstElementChild : list.querySelector('.item:not(.confirm)');
        list.insertBefore(el, first);
      }
      empty.hidden = true;
      say(body.dataset.tNew + ': ' + (el.dataset.plain || '').slice(0, 140));
      desktop(el);
    });
  }

  function onDelete(d) {
    Object.keys((d && d.id) || {}).forEach(function (id) {
      var el = item(id);
      if (!el) return;
      var tag = el.dataset.tag;
      if (tag) {
        // A TAG replace sends the delete before the add: keep the place for a moment.
        el.hidden = true;
        el.removeAttribute('id');
        replacing[tag] = el;
        setTimeout(function () {
          if (replacing[tag] === el) { delete replacing[tag]; removeItem(el); }
        }, 3000);
      } else {
        removeItem(el);
      }
    });
  }

  function onRead(d, read) {
    ((d && d.list) || []).forEach(function (id) { setRead(item(id), read); });
  }

  var handlers = {
    notifyAdd: onAdd,
    notifyDelete: onDelete,
    notifyRead: function (d) { onRead(d, true); },
    notifyUnread: function (d) { onRead(d, false); },
    notifyConfirm: function (d) { if (d) removeItem(item(d.id)); },
    notifyAnswer: function () {}
  };

  if (window.EventSource) {
    var es = new EventSource('/events');
    Object.keys(handlers).forEach(function (name) {
      es.addEventListener(name, function (ev) {
        var d;
        try { d = JSON.parse(ev.data); } catch (err) { return; }
        queue = queue.then(function () { return handlers[name](d); }).catch(function () {}).then(function () {
          if (d) setCounter(d.counter);
        });
      });
    });
    es.onopen = function () { status.textContent = body.dataset.tLive; status.className = 'status on'; };
    es.onerror = function () { status.textContent = body.dataset.tOffline; status.className = 'status off'; };
  }

  // --- desktop notifications -----------------------------------------------------------------
  var dbtn = document.getElementById('desktop');
  var dstate = document.getElementById('desktop-state');
  function desktopState() {
    if (!('Notification' in window)) { dbtn.hidden = true; dstate.textContent = body.dataset.tDesktopUnsupported; return; }
    var p = Notification.permission;
    dbtn.hidden = p !== 'default';
    dstate.textContent = p === 'granted' ? body.dataset.tDesktopOn : p === 'denied' ? body.dataset.tDesktopDenied : '';
  }
  if (dbtn) {
    dbtn.addEventListener('click', function () {
      var r = Notification.requestPermission(desktopState);
      if (r && r.then) r.then(desktopState);
    });
    desktopState();
  }

  enhance(document);
  setInterval(function () { times(document); }, 30000);
})();
