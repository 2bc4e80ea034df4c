// Helpers for the end-to-end tests: the real server binary, Debian's chromium, a WebSocket probe.
import { spawn, spawnSync } from 'node:child_process'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statSync } from 'node:fs'
import { tmpdir } from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { chromium } from 'playwright-core'
import WebSocket from 'ws'

export const WEB_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
export const DIST_DIR = path.join(WEB_DIR, 'dist')
export const SHOTS_DIR = path.join(WEB_DIR, 'e2e', 'screenshots')
const REPO_DIR = path.resolve(WEB_DIR, '..')

function newestMtime(dir) {
  let newest = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    newest = Math.max(newest, e.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs)
  }
  return newest
}

/** Builds web/dist when it is missing or older than the sources (the server serves it at `/`). */
export function ensureBuilt() {
  const index = path.join(DIST_DIR, 'index.html')
  const fresh =
    existsSync(index) &&
    existsSync(path.join(DIST_DIR, 'sw.js')) &&
    statSync(index).mtimeMs >= Math.max(newestMtime(path.join(WEB_DIR, 'src')), statSync(path.join(WEB_DIR, 'index.html')).mtimeMs)
  if (fresh) return
  const r = spawnSync('npx', ['vite', 'build'], { cwd: WEB_DIR, stdio: 'inherit' })
  if (r.status !== 0) throw new Error('vite build failed')
}

/** Starts `finwise serve` on a free port with a fresh data dir; resolves with its base URL. */
export async function startServer(extraArgs = [], { dataDir, port = 0 } = {}) {
  const bin = process.env.FINWISE_BIN ?? path.join(REPO_DIR, 'target', 'debug', 'finwise')
  if (!existsSync(bin)) throw new Error(`server binary not found: ${bin} (cargo build -p finwise-cli, or set FINWISE_BIN)`)
  const ownDir = !dataDir
  dataDir ??= mkdtempSync(path.join(tmpdir(), 'finwise-e2e-'))
  const child = spawn(bin, ['serve', '--addr', `127.0.0.1:${port}`, '--data-dir', dataDir, '--web-dir', DIST_DIR, ...extraArgs], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, RUST_LOG: process.env.RUST_LOG ?? 'warn' },
  })
  let log = ''
  child.stderr.on('data', (d) => (log += d))
  const base = await new Promise((resolve, reject) => {
    let out = ''
    const timer = setTimeout(() => reject(new Error(`server did not start:\n${out}\n${log}`)), 20_000)
    child.stdout.on('data', (d) => {
      out += d
      const m = out.match(/listening on (http:\/\/127\.0\.0\.1:\d+)/)
      if (m) {
        clearTimeout(timer)
        resolve(m[1])
      }
    })
    child.on('exit', (code) => reject(new Error(`server exited with ${code}:\n${out}\n${log}`)))
  })
  return {
    base,
    dataDir,
    port: Number(new URL(base).port),
    log: () => log,
    /** Stops the server; its data dir is removed unless `keepData`. */
    async stop({ keepData = false } = {}) {
      if (child.exitCode === null) {
        child.kill('SIGTERM')
        await new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', r)))
      }
      if (ownDir && !keepData) rmSync(dataDir, { recursive: true, force: true })
    },
  }
}

export async function launchBrowser() {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM_PATH ?? '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  })
  // The browser tests depend on the browser's behaviour (offline emulation, service workers):
  // every run says which one it used.
  console.log(`browser: Chromium ${browser.version()} (${process.env.CHROMIUM_PATH ?? '/usr/bin/chromium'})`)
  return browser
}

/** Console messages about the server's Content-Security-Policy: the app must cause none. */
export const cspViolations = []

/**
 * A new browser context and page. The browser's language decides the app's (German unless
 * `locale` says otherwise; `en-GB` for English), `viewport` its size.
 */
export async function newPage(browser, name, { locale = 'de-DE', viewport = { width: 1280, height: 860 } } = {}) {
  const context = await browser.newContext({ viewport, locale })
  const page = await context.newPage()
  page.setDefaultTimeout(15_000)
  const logs = []
  page.on('console', (m) => {
    logs.push(`[${name}] ${m.type()}: ${m.text()}`)
    if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(`[${name}] ${m.text()}`)
  })
  page.on('pageerror', (e) => logs.push(`[${name}] pageerror: ${e.message}`))
  return { name, context, page, logs }
}

/**
 * Removes the screenshots of earlier runs (each test file clears its own): the files of
 * `screenshots/<what>` when `what` is a folder name, else the files of `screenshots/` whose names
 * `what` matches.
 */
export function clearScreenshots(what = /./) {
  const [dir, match] = typeof what === 'string' ? [path.join(SHOTS_DIR, what), /./] : [SHOTS_DIR, what]
  mkdirSync(dir, { recursive: true })
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    if (e.isFile() && match.test(e.name)) rmSync(path.join(dir, e.name), { force: true })
  }
}

/** Saves a full-page screenshot as `screenshots/<name>.png` (`name` may name a folder: `planning/budget`). */
export async function screenshot(page, name) {
  const file = path.join(SHOTS_DIR, `${name}.png`)
  mkdirSync(path.dirname(file), { recursive: true })
  await page.screenshot({ path: file, fullPage: true })
}

/** REST login from Node, for the WebSocket probe. */
export async function apiLogin(base, email, password) {
  const res = await fetch(`${base}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username_or_email: email, password }),
  })
  if (!res.ok) throw new Error(`login ${res.status}`)
  return res.json()
}

/** Opens a socket of the tenant and asks the server for its `data_status_response`. */
export async function serverStatus(base, token, tenantId) {
  const ws = new WebSocket(`${base.replace('http', 'ws')}/ws_finwise/ws/${tenantId}?token=${encodeURIComponent(token)}`)
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no data_status_response')), 10_000)
      ws.on('error', reject)
      ws.on('message', (raw) => {
        const m = JSON.parse(raw.toString())
        if (m.type === 'status' && m.status === 'online') {
          ws.send(JSON.stringify({ type: 'data_status_request', tenant_id: tenantId, entity_types: null }))
        } else if (m.type === 'data_status_response') {
          clearTimeout(timer)
          resolve(m)
        }
      })
    })
  } finally {
    ws.close()
  }
}

/** Polls `fn` until it returns a truthy value. */
export async function eventually(fn, { timeout = 15_000, interval = 250, message = 'condition' } = {}) {
  const end = Date.now() + timeout
  let last
  for (;;) {
    try {
      last = await fn()
      if (last) return last
    } catch (e) {
      last = e
    }
    if (Date.now() > end) throw new Error(`timed out waiting for ${message}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`)
    await new Promise((r) => setTimeout(r, interval))
  }
}

/** Registers a user over REST (`{name, email, password}`). */
export async function apiRegister(base, user) {
  const res = await fetch(`${base}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(user),
  })
  if (!res.ok) throw new Error(`register ${res.status}: ${await res.text()}`)
}

/** Logs in through the app's form; ends on the household list. */
export async function loginUi(page, base, user) {
  await page.goto(`${base}/#/login`)
  await page.fill('input[name=email]', user.email)
  await page.fill('input[name=password]', user.password)
  await page.getByTestId('auth-submit').click()
  await page.waitForURL(/#\/tenants/)
}

/** Waits until the page's sync indicator says online. */
export async function waitOnline(page, label = 'online') {
  await eventually(async () => (await page.getByTestId('sync-connection').textContent()) === 'online', { message: label, timeout: 30_000 })
}

/**
 * The steps of one browser test file: each step a subtest; after a failure the later steps are
 * skipped, and the failing one prints the pages' last log lines and the server's log tail and
 * leaves a screenshot of each page, `<prefix>FAILED-<step>-<page name>`. `pages` and `server`
 * are read when a step fails (the test creates them in `before`).
 */
export function stepper({ pages, server, prefix = '' }) {
  let failed = false
  return async function step(t, name, fn) {
    await t.test(name, { skip: failed && 'an earlier step failed' }, async () => {
      try {
        await fn()
      } catch (e) {
        failed = true
        for (const p of pages()) {
          if (!p) continue
          console.log(p.logs.slice(-40).join('\n'))
          await screenshot(p.page, `${prefix}FAILED-${name.replace(/\W+/g, '-')}-${p.name}`).catch(() => {})
        }
        console.log('server log tail:\n' + (server()?.log().slice(-3000) ?? ''))
        throw e
      }
    })
  }
}
