// End-to-end: the real server binary serving web/dist, two Chromium contexts on one tenant.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import {
  apiLogin, clearScreenshots, cspViolations, ensureBuilt, eventually, launchBrowser, newPage, screenshot, serverStatus, startServer,
  stepper,
} from './lib.mjs'

const USER = { name: 'Erika', email: 'erika@example.com', password: 'correct-horse-battery' }
let server
let browser
let A
let B
let tenantId

before(async () => {
  clearScreenshots(/^(\d\d-|FAILED-(?!household-))/) // its own: household-* and phone-* belong to other files
  ensureBuilt()
  server = await startServer()
  browser = await launchBrowser()
  A = await newPage(browser, 'A')
  B = await newPage(browser, 'B')
})

after(async () => {
  if (process.env.E2E_LOGS) for (const p of [A, B]) if (p) console.log(p.logs.join('\n'))
  await browser?.close()
  await server?.stop()
  await server?.cleanup?.stop()
  // the app works under the server's CSP without a single violation (service worker included)
  assert.deepEqual(cspViolations, [])
})

const step = stepper({ pages: () => [A, B], server: () => server, prefix: '' })

const tid = (page, id) => page.getByTestId(id)
/** Opens a screen by its nav entry (`Accounts` → `nav-accounts`: the labels follow the locale, the test ids do not). */
const nav = (page, label) => tid(page, `nav-${label.toLowerCase()}`).click()
const rowWith = (page, rowId, text) => tid(page, rowId).filter({ hasText: text }).first()

async function login(page) {
  await page.goto(`${server.base}/#/login`)
  await page.fill('input[name=email]', USER.email)
  await page.fill('input[name=password]', USER.password)
  await tid(page, 'auth-submit').click()
  await page.waitForURL(/#\/tenants/)
}

async function localDigest(page) {
  return page.evaluate(() => globalThis.__finwise.localDigest())
}

async function pendingCount(page) {
  return Number(await tid(page, 'sync-pending').textContent())
}

/** What the page has queued: `entityType operationType [fields]` per entry. */
async function queued(page) {
  const q = await page.evaluate(() => globalThis.__finwise.queue())
  return q.map((e) => `${e.entityType} ${e.operationType} ${JSON.stringify(e.fields ?? null)}`)
}

async function setOnline(p, online) {
  await p.context.setOffline(!online)
  const want = online ? 'online' : 'offline'
  await eventually(async () => (await tid(p.page, 'sync-connection').textContent()) === want, { message: `${p.name} ${want}`, timeout: 30_000 })
}

async function addNamed(page, tab, name) {
  await nav(page, tab)
  await tid(page, 'item-name').fill(name)
  await tid(page, 'add-item').click()
  await rowWith(page, 'item-row', name).waitFor()
}

async function rename(row, name) {
  await row.getByTestId('rename').click()
  // the open editor is the only rename input on the page (the row no longer shows the old text)
  const input = row.page().getByTestId('rename-input')
  await input.fill(name)
  await input.press('Enter')
}

/** Both browsers and the server agree: same tenant digest, nothing queued. */
async function assertConverged(label) {
  const session = await apiLogin(server.base, USER.email, USER.password)
  await eventually(
    async () => {
      if ((await pendingCount(A.page)) !== 0 || (await pendingCount(B.page)) !== 0) return false
      const s = await serverStatus(server.base, session.access_token, tenantId)
      const [a, b] = [await localDigest(A.page), await localDigest(B.page)]
      return a === s.tenant_digest && b === s.tenant_digest ? s : false
    },
    { timeout: 20_000, interval: 500, message: `digests to converge (${label})` },
  )
}

test('two browsers sync one tenant live, offline, and after a reload', async (t) => {
  await step(t, 'register, log in and create a tenant (A)', async () => {
    await A.page.goto(`${server.base}/`)
    await A.page.waitForURL(/#\/login/)
    await screenshot(A.page, '01-login')
    await tid(A.page, 'to-register').click()
    await A.page.fill('input[name=name]', USER.name)
    await A.page.fill('input[name=email]', USER.email)
    await A.page.fill('input[name=password]', USER.password)
    await tid(A.page, 'auth-submit').click()
    await A.page.waitForURL(/#\/login/)
    await login(A.page)
    await tid(A.page, 'tenant-name').fill('Haushalt')
    await tid(A.page, 'create-tenant').click()
    await A.page.waitForURL(/#\/accounts/)
    await eventually(async () => (await tid(A.page, 'sync-connection').textContent()) === 'online', { message: 'A online' })
    tenantId = await A.page.evaluate(() => globalThis.__finwise.tenantId)
    assert.match(tenantId, /^[0-9a-f-]{36}$/)
  })

  await step(t, 'the second browser logs in and opens the same tenant (B)', async () => {
    await login(B.page)
    await rowWith(B.page, 'tenant-row', 'Haushalt').waitFor()
    await screenshot(B.page, '02-tenants')
    await rowWith(B.page, 'tenant-row', 'Haushalt').getByTestId('open-tenant').click()
    await B.page.waitForURL(/#\/accounts/)
    await eventually(async () => (await tid(B.page, 'sync-connection').textContent()) === 'online', { message: 'B online' })
  })

  await step(t, 'changes in A appear live in B and vice versa', async () => {
    await tid(A.page, 'group-name').fill('Girokonten')
    await tid(A.page, 'add-group').click()
    await rowWith(B.page, 'group-card', 'Girokonten').waitFor()
    await tid(A.page, 'account-name').fill('Girokonto')
    await tid(A.page, 'add-account').click()
    await tid(A.page, 'account-name').fill('Sparbuch')
    await tid(A.page, 'add-account').click()
    await rowWith(B.page, 'account-row', 'Girokonto').waitFor()
    await rowWith(B.page, 'account-row', 'Sparbuch').waitFor()

    await nav(B.page, 'Categories')
    await tid(B.page, 'catgroup-name').fill('Ausgaben')
    await tid(B.page, 'add-catgroup').click()
    await tid(B.page, 'category-name').fill('Lebensmittel')
    await tid(B.page, 'add-category').click()
    await rowWith(B.page, 'category-row', 'Lebensmittel').waitFor()
    await addNamed(B.page, 'Recipients', 'Supermarkt')
    await addNamed(B.page, 'Tags', 'Urlaub')
    await addNamed(B.page, 'Tags', 'Fixkosten')
    await addNamed(B.page, 'Tags', 'Reisen')

    await nav(A.page, 'Tags')
    await rowWith(A.page, 'item-row', 'Urlaub').waitFor()
    await nav(A.page, 'Categories')
    await rowWith(A.page, 'category-row', 'Lebensmittel').waitFor()
    await screenshot(A.page, '03-categories')

    await nav(A.page, 'Transactions')
    await tid(A.page, 'tx-recipient').selectOption({ label: 'Supermarkt' })
    await tid(A.page, 'tx-category').selectOption({ label: 'Lebensmittel' })
    await tid(A.page, 'tx-amount').fill('42,50')
    await tid(A.page, 'tx-description').fill('Wocheneinkauf')
    await tid(A.page, 'add-tx').click()
    await tid(A.page, 'tx-type').selectOption('INCOME')
    await tid(A.page, 'tx-amount').fill('1000')
    await tid(A.page, 'tx-description').fill('Gehalt')
    await tid(A.page, 'add-tx').click()
    await rowWith(A.page, 'tx-row', 'Gehalt').waitFor()
    await screenshot(A.page, '04-transactions')

    await nav(B.page, 'Accounts')
    await eventually(async () => (await rowWith(B.page, 'account-row', 'Girokonto').getByTestId('account-balance').textContent()).includes('957,50'), {
      message: 'balance 957,50 in B',
    })
    await screenshot(B.page, '05-accounts')
    // editing a transaction in A changes the balance in B
    await rowWith(A.page, 'tx-row', 'Wocheneinkauf').getByTestId('edit-tx').click()
    await tid(A.page, 'tx-amount').fill('40')
    await tid(A.page, 'add-tx').click()
    await eventually(async () => (await rowWith(B.page, 'account-row', 'Girokonto').getByTestId('account-balance').textContent()).includes('960,00'), {
      message: 'balance 960,00 in B after the edit',
    })
    await nav(B.page, 'Tags')
    await screenshot(B.page, '05b-tags')
    await nav(B.page, 'Accounts')
    await assertConverged('after live edits')
  })

  await step(t, 'B goes offline, edits and deletes, reloads offline, and syncs when back online', async () => {
    // the service worker must control the page before the network goes away
    await B.page.waitForFunction(() => navigator.serviceWorker?.controller !== null, null, { timeout: 15_000 })
    await B.context.setOffline(true)
    await eventually(async () => (await tid(B.page, 'sync-connection').textContent()) === 'offline', { message: 'B offline' })

    await rename(rowWith(B.page, 'account-row', 'Girokonto'), 'Girokonto (B offline)')
    await rowWith(B.page, 'account-row', 'Girokonto (B offline)').waitFor()
    await rowWith(B.page, 'account-row', 'Sparbuch').getByTestId('delete-account').click()
    await nav(B.page, 'Tags')
    await rowWith(B.page, 'item-row', 'Urlaub').getByTestId('delete-item').click()
    await rowWith(B.page, 'item-row', 'Urlaub').waitFor({ state: 'detached' })
    // a conflicting edit: B renames a tag offline, A renames the same tag later (newer updated_at)
    await rename(rowWith(B.page, 'item-row', 'Fixkosten'), 'Fixkosten (B)')
    await rowWith(B.page, 'item-row', 'Fixkosten (B)').waitFor()
    // delete vs. a later edit: B deletes a tag offline that A renames afterwards
    await rowWith(B.page, 'item-row', 'Reisen').getByTestId('delete-item').click()
    await rowWith(B.page, 'item-row', 'Reisen').waitFor({ state: 'detached' })
    await nav(B.page, 'Transactions')
    await tid(B.page, 'tx-amount').fill('7,25')
    await tid(B.page, 'tx-description').fill('Offline-Kaffee')
    await tid(B.page, 'add-tx').click()
    await rowWith(B.page, 'tx-row', 'Offline-Kaffee').waitFor()
    assert.equal(await pendingCount(B.page), 6)

    // meanwhile A keeps working online
    await nav(A.page, 'Recipients')
    await addNamed(A.page, 'Recipients', 'Bäckerei')
    await rename(rowWith(A.page, 'item-row', 'Supermarkt'), 'Supermarkt Nord')
    await rowWith(A.page, 'item-row', 'Supermarkt Nord').waitFor()
    await nav(A.page, 'Tags')
    await rename(rowWith(A.page, 'item-row', 'Fixkosten'), 'Fixkosten (A)')
    await rowWith(A.page, 'item-row', 'Fixkosten (A)').waitFor()
    await rename(rowWith(A.page, 'item-row', 'Reisen'), 'Reisen 2026')
    await rowWith(A.page, 'item-row', 'Reisen 2026').waitFor()

    // reload while offline: the shell comes from the service worker, the data from IndexedDB
    await B.page.reload()
    await rowWith(B.page, 'tx-row', 'Offline-Kaffee').waitFor()
    // (a socket attempt may show 'connecting' for a moment until the browser refuses it)
    await eventually(async () => (await tid(B.page, 'sync-connection').textContent()) === 'offline', { message: 'B offline after reload' })
    assert.equal(await pendingCount(B.page), 6)
    await screenshot(B.page, '06-offline-after-reload')
    assert.equal(await rowWith(B.page, 'tx-row', 'Supermarkt Nord').count(), 0)

    await B.context.setOffline(false)
    await eventually(async () => (await tid(B.page, 'sync-connection').textContent()) === 'online', { message: 'B back online' })
    await eventually(async () => (await pendingCount(B.page)) === 0, { message: 'B queue drained' })
    await rowWith(B.page, 'tx-row', 'Supermarkt Nord').waitFor()

    await nav(A.page, 'Accounts')
    await rowWith(A.page, 'account-row', 'Girokonto (B offline)').waitFor()
    await rowWith(A.page, 'account-row', 'Sparbuch').waitFor({ state: 'detached' })
    await nav(A.page, 'Tags')
    await rowWith(A.page, 'item-row', 'Urlaub').waitFor({ state: 'detached' })
    // B's older rename lost on the server (applied: false); B received A's version
    await nav(B.page, 'Tags')
    await rowWith(B.page, 'item-row', 'Fixkosten (A)').waitFor()
    assert.equal(await rowWith(A.page, 'item-row', 'Fixkosten (B)').count(), 0)
    // B's older delete lost against A's later rename: the tag is back in B, renamed
    await rowWith(B.page, 'item-row', 'Reisen 2026').waitFor()
    assert.equal(await rowWith(A.page, 'item-row', 'Reisen 2026').count(), 1)
    await nav(A.page, 'Transactions')
    await rowWith(A.page, 'tx-row', 'Offline-Kaffee').waitFor()
    await assertConverged('after the offline round trip')
  })

  await step(t, 'the server restarts; both browsers reconnect and sync what was made meanwhile', async () => {
    const first = server
    await first.stop({ keepData: true })
    await eventually(async () => (await tid(A.page, 'sync-connection').textContent()) !== 'online', { message: 'A notices' })
    await nav(A.page, 'Recipients')
    await addNamed(A.page, 'Recipients', 'Während des Neustarts')
    assert.ok((await pendingCount(A.page)) >= 1)
    server = await startServer([], { dataDir: first.dataDir, port: first.port })
    server.cleanup = first
    for (const p of [A, B]) {
      await eventually(async () => (await tid(p.page, 'sync-connection').textContent()) === 'online', { message: 'reconnected', timeout: 40_000 })
    }
    await nav(B.page, 'Recipients')
    await rowWith(B.page, 'item-row', 'Während des Neustarts').waitFor({ timeout: 20_000 })
    await assertConverged('after the server restart')
  })

  await step(t, 'a change the server refuses shows up as failed, and can be discarded', async () => {
    await nav(A.page, 'Accounts')
    await tid(A.page, 'account-name').fill('Zu lange Notiz')
    await tid(A.page, 'account-note').fill('x'.repeat(70_000))
    await tid(A.page, 'add-account').click()
    await eventually(async () => (await tid(A.page, 'sync-failed').count()) > 0 && (await tid(A.page, 'sync-failed').textContent()) === '1', {
      message: 'failed entry in the indicator',
    })
    const entry = tid(A.page, 'failed-entry')
    assert.match(await entry.textContent(), /validation_error/)
    await screenshot(A.page, '07-failed-change')
    // B never sees the refused account
    assert.equal(await rowWith(B.page, 'account-row', 'Zu lange Notiz').count(), 0)
    await entry.getByTestId('discard-failed').click()
    await tid(A.page, 'sync-failed').waitFor({ state: 'detached' })
    await rowWith(A.page, 'account-row', 'Zu lange Notiz').waitFor({ state: 'detached' })
    await assertConverged('after discarding the refused change')
  })

  await step(t, 'both offline: A changes a transaction\'s note, B its category; both edits survive (field-level merge)', async () => {
    await nav(B.page, 'Categories')
    await tid(B.page, 'category-name').fill('Haushalt')
    await tid(B.page, 'add-category').click()
    await rowWith(B.page, 'category-row', 'Haushalt').waitFor()
    await nav(A.page, 'Transactions')
    await nav(B.page, 'Transactions')
    await assertConverged('before the offline edits')
    await setOnline(A, false)
    await setOnline(B, false)

    // A edits only the note, later B edits only the category: with whole-entity LWW, B's newer
    // version would erase A's note
    await rowWith(A.page, 'tx-row', 'Wocheneinkauf').getByTestId('edit-tx').click()
    await tid(A.page, 'tx-note').fill('Für das Wochenende')
    await tid(A.page, 'add-tx').click()
    await rowWith(A.page, 'tx-row', 'Für das Wochenende').waitFor()
    await rowWith(B.page, 'tx-row', 'Wocheneinkauf').getByTestId('edit-tx').click()
    await tid(B.page, 'tx-category').selectOption({ label: 'Haushalt' })
    await tid(B.page, 'add-tx').click()
    await rowWith(B.page, 'tx-row', 'Wocheneinkauf').getByTestId('tx-category-cell').filter({ hasText: 'Haushalt' }).waitFor()
    // each queued one update that names only the field its user changed
    assert.deepEqual(await queued(A.page), ['Transaction update ["note"]'])
    assert.deepEqual(await queued(B.page), ['Transaction update ["categoryId"]'])

    await setOnline(A, true)
    await eventually(async () => (await pendingCount(A.page)) === 0, { message: 'A queue drained' })
    await setOnline(B, true)
    for (const p of [A, B]) {
      const row = rowWith(p.page, 'tx-row', 'Wocheneinkauf')
      await eventually(
        async () =>
          (await row.getByTestId('tx-note-cell').textContent()) === 'Für das Wochenende' &&
          (await row.getByTestId('tx-category-cell').textContent()) === 'Haushalt',
        { message: `both edits in ${p.name}` },
      )
    }
    await screenshot(B.page, '08-field-merge')
    await assertConverged('after the field-level merge')
  })
})
