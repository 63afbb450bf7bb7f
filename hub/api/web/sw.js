// The service worker: the app shell and the orders opened recently stay on the device.
//
// 1. The shell (the page, its script, styles) is cached when the worker installs; a page load
//    without a network gets it from there.
// 2. Reads of the API (GET /api/v1/...) go to the network first; the answer is kept, and given back
//    when the network is away (so an order opened before opens again offline). The event stream is
//    never cached.
// 3. Writes are never cached or replayed here: the page queues them (queue.js) and uploads them.
// 4. Logging out empties the kept answers, and so does the page when another person logs in here.

const SHELL = "orderhub-shell-v1";
const DATA = "orderhub-data-v1";
const SHELL_FILES = ["/", "/static/app.js", "/static/queue.js", "/static/style.css", "/static/manifest.json"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(SHELL_FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(self.clients.claim());
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (url.origin !== location.origin) return;
  if (request.method === "DELETE" && url.pathname === "/api/v1/auth/session") {
    event.respondWith(caches.delete(DATA).then(() => fetch(request)));
    return;
  }
  if (request.method !== "GET" || url.pathname.endsWith("/events")) return;
  if (request.mode === "navigate") {
    // every screen is the same shell; the print page is the server's own
    if (url.pathname.endsWith("/print")) return;
    event.respondWith(fetch(request).catch(() => caches.match("/", { cacheName: SHELL })));
    return;
  }
  if (url.pathname.startsWith("/api/v1/")) {
    event.respondWith(fetch(request).then((response) => {
      if (response.ok) {
        const copy = response.clone();
        caches.open(DATA).then((cache) => cache.put(request, copy));
      }
      return response;
    }).catch(() => caches.match(request, { cacheName: DATA }).then((kept) => kept || Promise.reject(new TypeError("offline")))));
    return;
  }
  if (url.pathname.startsWith("/static/")) {
    event.respondWith(fetch(request).catch(() => caches.match(request, { cacheName: SHELL })));
  }
});
