/* FinWise service worker: caches the app shell so a reload while offline works.
   Generated into dist/sw.js by vite.config.ts with the build's file list. */
const CACHE = 'finwise-shell-' + __CACHE_VERSION__
const SHELL = __SHELL_FILES__

self.addEventListener('install', (event) => {
  self.skipWaiting()
  event.waitUntil(caches.open(CACHE).then((c) => c.addAll(SHELL)))
})

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('finwise-shell-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  )
})

self.addEventListener('fetch', (event) => {
  const req = event.request
  if (req.method !== 'GET') return
  const url = new URL(req.url)
  if (url.origin !== self.location.origin) return
  if (req.mode === 'navigate') {
    // Network first (a new build is picked up at once), the cached shell when offline.
    event.respondWith(
      fetch(req)
        .then((res) => {
          if (res.ok && url.pathname === '/') {
            const copy = res.clone()
            caches.open(CACHE).then((c) => c.put('/', copy))
          }
          return res
        })
        .catch(() => caches.match('/', { cacheName: CACHE, ignoreVary: true }).then((r) => r || Response.error())),
    )
    return
  }
  if (SHELL.includes(url.pathname)) {
    // Cache first. `ignoreVary`: the server answers with `Vary: Origin` (its CORS layer), and the
    // page loads its module script and stylesheet in CORS mode (with an `Origin` header) while
    // `install` cached them without one; a Vary-respecting lookup never matches, and the
    // fallback to the network is exactly what fails offline. The shell files are the same bytes
    // for every origin.
    event.respondWith(caches.match(req, { cacheName: CACHE, ignoreVary: true }).then((r) => r || fetch(req)))
  }
})
