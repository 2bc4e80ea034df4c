// End-to-end: sharing a household. Two users in two browser contexts (the owner's in German, the
// partner's in English) against the real server: invitation, live edits, roles, the server's
// membership rules shown as messages, removal while online, deletion.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import {
  apiRegister, clearScreenshots, cspViolations, ensureBuilt, eventually, launchBrowser, loginUi, newPage, screenshot, startServer, waitOnline,
  stepper,
} from './lib.mjs'

const OWNER = { name: 'Olga', email: 'olga@example.com', password: 'owner-password-1' }
const PARTNER = { name: 'Paul', email: 'paul@example.com', password: 'partner-password-1' }
let server
let browser
let O // owner, German
let P // partner, English
let tenantId

before(async () => {
  clearScreenshots(/^(FAILED-)?household-/)
  ensureBuilt()
  server = await startServer()
  browser = await launchBrowser()
  O = await newPage(browser, 'owner', { locale: 'de-DE' })
  P = await newPage(browser, 'partner', { locale: 'en-GB' })
  for (const p of [O, P]) p.page.on('dialog', (d) => void d.accept()) // the confirm() of remove and leave
  await apiRegister(server.base, OWNER)
  await apiRegister(server.base, PARTNER)
})

after(async () => {
  if (process.env.E2E_LOGS) for (const p of [O, P]) if (p) console.log(p.logs.join('\n'))
  await browser?.close()
  await server?.stop()
  assert.deepEqual(cspViolations, [])
})

const step = stepper({ pages: () => [O, P], server: () => server, prefix: 'household-' })

const tid = (page, id) => page.getByTestId(id)
const rowWith = (page, rowId, text) => tid(page, rowId).filter({ hasText: text }).first()
const nav = (page, key) => tid(page, `nav-${key}`).click()
/** A REST call with the page's own session (what the app itself would send). */
const pageFetch = (page, path, method = 'GET') =>
  page.evaluate(
    async ([path, method]) => {
      const token = JSON.parse(localStorage.getItem('finwise.session') ?? 'null')?.accessToken
      const res = await fetch(path, { method, headers: { Authorization: `Bearer ${token}` } })
      return { status: res.status, body: await res.text() }
    },
    [path, method],
  )

async function roleOf(page, name) {
  const row = rowWith(page, 'member-row', name)
  return (await row.getByTestId('member-role-select').count()) ? row.getByTestId('member-role-select').inputValue() : row.getByTestId('member-role').textContent()
}

test('a household shared by two users', async (t) => {
  await step(t, 'the owner creates and renames a household', async () => {
    await loginUi(O.page, server.base, OWNER)
    await tid(O.page, 'tenant-name').fill('WG')
    await tid(O.page, 'create-tenant').click()
    await O.page.waitForURL(/#\/accounts/)
    await waitOnline(O.page, 'owner online')
    tenantId = await O.page.evaluate(() => globalThis.__finwise.tenantId)
    await nav(O.page, 'household')
    await rowWith(O.page, 'member-row', OWNER.name).getByTestId('member-you').waitFor()
    assert.equal(await roleOf(O.page, OWNER.name), 'owner')
    await tid(O.page, 'household-name').fill('WG Sonnenweg')
    await tid(O.page, 'rename-household').click()
    await tid(O.page, 'household-info').filter({ hasText: 'Umbenannt' }).waitFor()
    await tid(O.page, 'active-tenant').filter({ hasText: 'WG Sonnenweg' }).waitFor()
  })

  await step(t, 'inviting an unknown e-mail says so; the partner is invited as a member', async () => {
    await tid(O.page, 'invite-email').fill('nobody@example.com')
    await tid(O.page, 'invite-submit').click()
    await tid(O.page, 'household-error').filter({ hasText: 'niemand registriert' }).waitFor()
    await tid(O.page, 'invite-email').fill(PARTNER.email)
    await tid(O.page, 'invite-role').selectOption('member')
    await tid(O.page, 'invite-submit').click()
    await tid(O.page, 'household-info').filter({ hasText: `${PARTNER.email} ist jetzt Mitglied` }).waitFor()
    assert.equal(await roleOf(O.page, PARTNER.name), 'member')
    await screenshot(O.page, 'household-owner')
  })

  await step(t, 'the partner sees the household, edits it, and the owner sees the edit live', async () => {
    await nav(O.page, 'accounts')
    await tid(O.page, 'group-name').fill('Gemeinsam')
    await tid(O.page, 'add-group').click()
    await tid(O.page, 'account-name').fill('Gemeinschaftskonto')
    await tid(O.page, 'add-account').click()
    await rowWith(O.page, 'account-row', 'Gemeinschaftskonto').waitFor()
    await nav(O.page, 'transactions')

    await loginUi(P.page, server.base, PARTNER)
    await rowWith(P.page, 'tenant-row', 'WG Sonnenweg').getByTestId('open-tenant').click()
    await P.page.waitForURL(/#\/accounts/)
    await waitOnline(P.page, 'partner online')
    await rowWith(P.page, 'account-row', 'Gemeinschaftskonto').waitFor()
    await nav(P.page, 'transactions')
    await tid(P.page, 'tx-amount').fill('23.40')
    await tid(P.page, 'tx-description').fill('Pizza from Paul')
    await tid(P.page, 'add-tx').click()
    const row = rowWith(O.page, 'tx-row', 'Pizza from Paul')
    await row.waitFor()
    assert.match(await row.getByTestId('tx-amount-cell').textContent(), /-23,40\s*€/)
  })

  await step(t, 'a member is offered no owner actions; a forced removal shows the server’s rule', async () => {
    await nav(P.page, 'household')
    await rowWith(P.page, 'member-row', PARTNER.name).getByTestId('member-you').waitFor()
    await rowWith(P.page, 'member-row', OWNER.name).waitFor()
    assert.equal(await tid(P.page, 'remove-member').count(), 0)
    assert.equal(await tid(P.page, 'invite-form').count(), 0)
    assert.equal(await tid(P.page, 'delete-household').count(), 0)
    await tid(P.page, 'owner-only-hint').waitFor()
    assert.equal((await roleOf(P.page, OWNER.name)).trim(), 'Owner')

    // Forced: the partner's screen still shows owner controls from when they were an owner.
    await nav(O.page, 'household')
    await rowWith(O.page, 'member-row', PARTNER.name).getByTestId('member-role-select').selectOption('owner')
    await tid(O.page, 'household-info').filter({ hasText: 'Eigentümer' }).waitFor()
    await P.page.reload()
    const removeOwner = rowWith(P.page, 'member-row', OWNER.name).getByTestId('remove-member')
    await removeOwner.waitFor()
    await rowWith(O.page, 'member-row', PARTNER.name).getByTestId('member-role-select').selectOption('member')
    await tid(O.page, 'household-info').filter({ hasText: 'Mitglied' }).waitFor()
    await removeOwner.click()
    await tid(P.page, 'household-error').filter({ hasText: 'Only an owner can do this' }).waitFor()
    // the screen then shows what the server says now: no owner controls any more
    await eventually(async () => (await tid(P.page, 'remove-member').count()) === 0, { message: 'controls gone' })
    assert.equal(await roleOf(O.page, OWNER.name), 'owner') // nothing was removed
    const forced = await pageFetch(P.page, `/tenants/${tenantId}/members/${await ownerId()}`, 'DELETE')
    assert.equal(forced.status, 403)
  })

  await step(t, 'the last owner cannot leave and is told why', async () => {
    await tid(O.page, 'leave-household').click()
    await tid(O.page, 'household-error').filter({ hasText: 'mindestens einen Eigentümer' }).waitFor()
    await tid(O.page, 'active-tenant').waitFor() // still in the household
    assert.match(O.page.url(), /#\/household/)
  })

  await step(t, 'the owner removes the partner: the partner is told, taken out, and refused', async () => {
    await nav(P.page, 'transactions')
    await rowWith(P.page, 'tx-row', 'Pizza from Paul').waitFor()
    const sockets = []
    P.page.on('websocket', (ws) => sockets.push(ws.url()))
    await rowWith(O.page, 'member-row', PARTNER.name).getByTestId('remove-member').click()
    await tid(O.page, 'household-info').filter({ hasText: `${PARTNER.name} wurde entfernt` }).waitFor()
    await eventually(async () => (await rowWith(O.page, 'member-row', PARTNER.name).count()) === 0, { message: 'partner gone from the list' })

    const banner = tid(P.page, 'access-lost')
    await banner.filter({ hasText: 'You were removed from the household “WG Sonnenweg”' }).waitFor()
    await P.page.waitForURL(/#\/tenants/)
    await screenshot(P.page, 'household-removed')
    await eventually(async () => (await rowWith(P.page, 'tenant-row', 'WG Sonnenweg').count()) === 0, { message: 'household gone from the list' })
    // the local copy is deleted
    const dbs = await P.page.evaluate(async () => (await indexedDB.databases()).map((d) => d.name))
    assert.ok(!dbs.some((n) => n.includes(tenantId)), `local database still there: ${dbs}`)
    // the server refuses the partner now
    const res = await pageFetch(P.page, `/tenants/${tenantId}/members`)
    assert.equal(res.status, 403)
    assert.match(res.body, /not a member/)
    // and the app does not try to reconnect to it
    await new Promise((r) => setTimeout(r, 4000))
    assert.deepEqual(sockets, [])
    // a reload does not bring it back either
    await P.page.reload()
    await tid(P.page, 'tenants-error').or(P.page.getByRole('heading', { name: 'Your households' })).first().waitFor()
    assert.equal(await rowWith(P.page, 'tenant-row', 'WG Sonnenweg').count(), 0)
  })

  await step(t, 'a member may leave', async () => {
    await tid(O.page, 'invite-email').fill(PARTNER.email)
    await tid(O.page, 'invite-submit').click()
    await rowWith(O.page, 'member-row', PARTNER.name).waitFor()
    await P.page.reload()
    await rowWith(P.page, 'tenant-row', 'WG Sonnenweg').getByTestId('open-tenant').click()
    await waitOnline(P.page, 'partner back')
    await nav(P.page, 'household')
    await tid(P.page, 'leave-household').click()
    await P.page.waitForURL(/#\/tenants/)
    await eventually(async () => (await rowWith(P.page, 'tenant-row', 'WG Sonnenweg').count()) === 0, { message: 'left' })
    assert.equal(await tid(P.page, 'access-lost').count(), 0) // leaving is the partner's own doing: no alarm
    await O.page.reload()
    await rowWith(O.page, 'member-row', OWNER.name).waitFor()
    assert.equal(await rowWith(O.page, 'member-row', PARTNER.name).count(), 0)
  })

  await step(t, 'deleting needs the typed name; the member still inside is told', async () => {
    await tid(O.page, 'invite-email').fill(PARTNER.email)
    await tid(O.page, 'invite-submit').click()
    await rowWith(O.page, 'member-row', PARTNER.name).waitFor()
    await P.page.reload()
    await rowWith(P.page, 'tenant-row', 'WG Sonnenweg').getByTestId('open-tenant').click()
    await waitOnline(P.page, 'partner back')

    await tid(O.page, 'delete-confirm').fill('WG')
    assert.equal(await tid(O.page, 'delete-household').isDisabled(), true)
    await tid(O.page, 'delete-confirm').fill('WG Sonnenweg')
    await tid(O.page, 'delete-household').click()
    await O.page.waitForURL(/#\/tenants/)
    await eventually(async () => (await rowWith(O.page, 'tenant-row', 'WG Sonnenweg').count()) === 0, { message: 'deleted for the owner' })
    assert.equal(await tid(O.page, 'access-lost').count(), 0) // the owner's own deletion is no news to them

    await tid(P.page, 'access-lost').filter({ hasText: 'The household “WG Sonnenweg” was deleted' }).waitFor()
    await P.page.waitForURL(/#\/tenants/)
    assert.equal(await rowWith(P.page, 'tenant-row', 'WG Sonnenweg').count(), 0)
  })
})

async function ownerId() {
  const res = await fetch(`${server.base}/login`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ username_or_email: OWNER.email, password: OWNER.password }),
  })
  return (await res.json()).uuid
}
