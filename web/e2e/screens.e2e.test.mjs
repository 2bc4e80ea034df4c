// End-to-end: every screen at phone width (390 × 844) with data in it. The screens are the ones
// the nav offers (found in the page, so screens added later are included), plus login, register
// and the household list. Nothing may stick out horizontally; each screen is saved as
// e2e/screenshots/phone-<name>.png (German; the transactions and household screens also in English).
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import { apiRegister, clearScreenshots, cspViolations, ensureBuilt, launchBrowser, loginUi, newPage, screenshot, startServer, waitOnline } from './lib.mjs'

const USER = { name: 'Maximiliane Mustermann-Lüdenscheidt', email: 'maxi@example.com', password: 'phone-password-1' }
const PHONE = { width: 390, height: 844 }
let server
let browser
let M

before(async () => {
  clearScreenshots(/^phone-/)
  ensureBuilt()
  server = await startServer()
  browser = await launchBrowser()
  M = await newPage(browser, 'phone', { locale: 'de-DE', viewport: PHONE })
  await apiRegister(server.base, USER)
})

after(async () => {
  if (process.env.E2E_LOGS) console.log(M?.logs.join('\n'))
  await browser?.close()
  await server?.stop()
  assert.deepEqual(cspViolations, [])
})

const tid = (page, id) => page.getByTestId(id)

/**
 * What sticks out of the viewport sideways: the page's own scroll width, and every visible
 * element whose box begins or ends beyond it (except inside a container that scrolls sideways by design,
 * such as the nav).
 */
function overflow(page) {
  return page.evaluate(() => {
    const width = window.innerWidth
    const scrolls = (el) => {
      for (let p = el.parentElement; p; p = p.parentElement) {
        const o = getComputedStyle(p).overflowX
        if (o === 'auto' || o === 'scroll' || o === 'hidden') return true
      }
      return false
    }
    const out = []
    for (const el of document.querySelectorAll('body *')) {
      const r = el.getBoundingClientRect()
      if (r.width <= 1 || r.height <= 1 || getComputedStyle(el).visibility === 'hidden') continue
      if ((r.right > width + 0.5 || r.left < -0.5) && !scrolls(el)) {
        const what = `${el.tagName.toLowerCase()}${el.dataset.testid ? `[${el.dataset.testid}]` : ''} "${(el.textContent ?? '').trim().slice(0, 30)}"`
        out.push(`${what} spans ${Math.round(r.left)}..${Math.round(r.right)}`)
      }
    }
    return { scrollWidth: document.documentElement.scrollWidth, width, out: out.slice(0, 10) }
  })
}

async function check(name) {
  await M.page.waitForTimeout(150) // layout settled after the route change
  const o = await overflow(M.page)
  await screenshot(M.page, `phone-${name}`)
  assert.ok(o.scrollWidth <= o.width, `${name}: page is ${o.scrollWidth}px wide at ${o.width}px`)
  assert.deepEqual(o.out, [], `${name}: elements beyond the viewport's edges`)
}

async function add(testidInput, value, testidButton) {
  await tid(M.page, testidInput).fill(value)
  await tid(M.page, testidButton).click()
}

test('every screen fits a phone', async (t) => {
  await t.test('login and register', async () => {
    await M.page.goto(`${server.base}/#/login`)
    await tid(M.page, 'auth-submit').waitFor()
    await check('login')
    await tid(M.page, 'to-register').click()
    await M.page.waitForURL(/#\/register/)
    await check('register')
  })

  await t.test('households, with a long name', async () => {
    await loginUi(M.page, server.base, USER)
    await add('tenant-name', 'Haushalt Familie Mustermann-Lüdenscheidt', 'create-tenant')
    await M.page.waitForURL(/#\/accounts/)
    await waitOnline(M.page)
    await tid(M.page, 'switch-tenant').click()
    await M.page.waitForURL(/#\/tenants/)
    await tid(M.page, 'tenant-row').first().waitFor()
    await check('tenants')
    await tid(M.page, 'open-tenant').first().click()
    await M.page.waitForURL(/#\/accounts/)
  })

  await t.test('some data in every list', async () => {
    const nav = (key) => tid(M.page, `nav-${key}`).click()
    await add('group-name', 'Girokonten und Tagesgeldkonten', 'add-group')
    await add('account-name', 'Gemeinschaftskonto Sparkasse', 'add-account')
    await add('account-name', 'Kreditkarte', 'add-account')
    await tid(M.page, 'account-row').nth(1).waitFor()
    await nav('categories')
    await add('catgroup-name', 'Lebenshaltungskosten', 'add-catgroup')
    await add('category-name', 'Lebensmittel und Drogerie', 'add-category')
    await add('category-name', 'Miete', 'add-category')
    await tid(M.page, 'category-row').nth(1).waitFor()
    await nav('recipients')
    await add('item-name', 'Supermarkt am Hauptbahnhof Nord', 'add-item')
    await nav('tags')
    await add('item-name', 'Urlaub', 'add-item')
    await tid(M.page, 'item-row').first().waitFor()
    await nav('transactions')
    const tx = [
      ['42,50', 'Wocheneinkauf mit ziemlich langer Beschreibung für das Wochenende', 'Lebensmittel und Drogerie', 'Notiz: Pfand zurückgegeben'],
      ['1.234,56', 'Miete Dezember', 'Miete', ''],
      ['3,99', 'Kaffee', '', ''],
    ]
    for (const [amount, description, category, note] of tx) {
      await tid(M.page, 'tx-amount').fill(amount)
      await tid(M.page, 'tx-description').fill(description)
      if (category) await tid(M.page, 'tx-category').selectOption({ label: category })
      await tid(M.page, 'tx-note').fill(note)
      await tid(M.page, 'add-tx').click()
      await tid(M.page, 'tx-row').filter({ hasText: description }).waitFor()
    }
  })

  await t.test('every screen of the nav', async () => {
    const keys = await tid(M.page, 'main-nav').locator('a').evaluateAll((as) =>
      as.map((a) => a.dataset.testid?.replace(/^nav-/, '') ?? a.getAttribute('href').replace(/^#\//, '')),
    )
    assert.ok(keys.includes('transactions') && keys.includes('household'), `nav: ${keys}`)
    for (const key of keys) {
      await tid(M.page, 'main-nav').locator('a').nth(keys.indexOf(key)).click()
      await M.page.waitForURL(new RegExp(`#/${key}`))
      await check(key)
    }
  })

  await t.test('transactions: description and amount visible, search narrows the list', async () => {
    await tid(M.page, 'nav-transactions').click()
    for (const row of await tid(M.page, 'tx-row').all()) {
      for (const cell of ['tx-description-cell', 'tx-amount-cell', 'edit-tx', 'delete-tx']) {
        const box = await row.getByTestId(cell).boundingBox()
        assert.ok(box && box.width > 0 && box.x >= 0 && box.x + box.width <= PHONE.width, `${cell} visible: ${JSON.stringify(box)}`)
      }
    }
    await tid(M.page, 'tx-search').fill('dezember')
    await tid(M.page, 'tx-row').filter({ hasText: 'Kaffee' }).waitFor({ state: 'detached' })
    assert.equal(await tid(M.page, 'tx-row').count(), 1)
    assert.match(await tid(M.page, 'tx-filter-sum').textContent(), /-1\.234,56\s*€/)
    await check('transactions-search')
    await tid(M.page, 'tx-filter-clear').click()
  })

  await t.test('in English too', async () => {
    await tid(M.page, 'locale').selectOption('en')
    await tid(M.page, 'nav-transactions').filter({ hasText: 'Transactions' }).waitFor()
    assert.match(await tid(M.page, 'tx-amount-cell').first().textContent(), /€3\.99/)
    await check('transactions-en')
    await tid(M.page, 'nav-household').click()
    await tid(M.page, 'member-row').waitFor()
    await check('household-en')
    await tid(M.page, 'sync-toggle').click()
    await tid(M.page, 'sync-panel').waitFor()
    await check('sync-panel-en')
    await tid(M.page, 'locale').selectOption('de')
  })
})
