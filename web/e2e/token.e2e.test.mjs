// End-to-end: short-lived access tokens are refreshed (POST /token, refresh grant) before the
// socket reconnects, so syncing goes on after the first token expired.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { ensureBuilt, eventually, launchBrowser, newPage, startServer } from './lib.mjs'

let server
let browser
let P

before(async () => {
  ensureBuilt()
  server = await startServer(['--access-token-ttl', '4'])
  browser = await launchBrowser()
  P = await newPage(browser, 'T')
})

after(async () => {
  await browser?.close()
  await server?.stop()
})

test('an expired access token is refreshed before reconnecting', async () => {
  const { page, context } = P
  const email = 'token@example.com'
  const password = 'token-test-password'
  const reg = await fetch(`${server.base}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'Tokens', email, password }),
  })
  assert.equal(reg.status, 201)
  const refreshes = []
  page.on('request', (r) => r.url().endsWith('/token') && refreshes.push(r.postData()))
  await page.goto(`${server.base}/#/login`)
  await page.fill('input[name=email]', email)
  await page.fill('input[name=password]', password)
  await page.getByTestId('auth-submit').click()
  await page.waitForURL(/#\/tenants/)
  await page.getByTestId('tenant-name').fill('Kurzlebig')
  await page.getByTestId('create-tenant').click()
  await page.waitForURL(/#\/accounts/)
  const connection = () => page.getByTestId('sync-connection').textContent()
  await eventually(async () => (await connection()) === 'online', { message: 'online' })

  // let the first token expire, then force a reconnect while a change is queued (the service
  // worker is installed first: going offline during its install would fail it, and the next
  // test reloads the page offline)
  await page.waitForFunction(() => navigator.serviceWorker?.controller !== null, null, { timeout: 15_000 })
  await context.setOffline(true)
  await eventually(async () => (await connection()) === 'offline', { message: 'offline' })
  await page.getByTestId('group-name').fill('Nach Ablauf')
  await page.getByTestId('add-group').click()
  await new Promise((r) => setTimeout(r, 4500))
  await context.setOffline(false)
  await eventually(async () => (await connection()) === 'online', { message: 'online again', timeout: 20_000 })
  await eventually(async () => Number(await page.getByTestId('sync-pending').textContent()) === 0, { message: 'queue drained' })
  assert.ok(refreshes.length >= 1, 'the client used the refresh grant')
  assert.match(refreshes[0], /^grant_type=refresh_token&refresh_token=/)
})

test('a socket upgrade refused with 401 leads to a refresh and a working connection', async () => {
  const { page, context } = P
  const connection = () => page.getByTestId('sync-connection').textContent()
  // the reload below happens offline: the service worker must control the page (its shell cached)
  await page.waitForFunction(() => navigator.serviceWorker?.controller !== null, null, { timeout: 15_000 })
  await context.setOffline(true)
  await eventually(async () => (await connection()) === 'offline', { message: 'offline' })
  // a token the server refuses, although the client believes it valid for an hour
  await page.evaluate(() => {
    const s = JSON.parse(localStorage.getItem('finwise.session'))
    s.accessToken = 'not-a-valid-token'
    s.expiresAt = Date.now() + 3_600_000
    s.ttlMs = 3_600_000
    localStorage.setItem('finwise.session', JSON.stringify(s))
  })
  await page.reload()
  await page.getByTestId('sync-connection').waitFor()
  const before = await page.evaluate(() => JSON.parse(localStorage.getItem('finwise.session')).accessToken)
  assert.equal(before, 'not-a-valid-token')
  await context.setOffline(false)
  await eventually(async () => (await connection()) === 'online', { message: 'online with a refreshed token', timeout: 20_000 })
  const after = await page.evaluate(() => JSON.parse(localStorage.getItem('finwise.session')).accessToken)
  assert.notEqual(after, 'not-a-valid-token')
})
