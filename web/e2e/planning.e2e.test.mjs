// End-to-end: the planning screens (budget, planned transactions, rules, transfers, reports) in two
// browsers of one user and tenant against the real server; what the server stores is read back over
// a WebSocket and checked against 0.4's shapes.
import { after, before, test } from 'node:test'
import assert from 'node:assert/strict'
import WebSocket from 'ws'
import {
  apiLogin, clearScreenshots, cspViolations, ensureBuilt, eventually, launchBrowser, newPage, screenshot, serverStatus, startServer,
  stepper,
} from './lib.mjs'

const USER = { name: 'Max', email: 'max@example.com', password: 'correct-horse-battery' }
let server
let browser
let A
let B
let tenantId

before(async () => {
  clearScreenshots('planning')
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
  assert.deepEqual(cspViolations, [])
})

const step = stepper({ pages: () => [A, B], server: () => server, prefix: 'planning/' })

const tid = (page, id) => page.getByTestId(id)
const nav = (page, path) => page.locator(`nav a[href="#${path}"]`).click()
const rowWith = (page, rowId, text) => tid(page, rowId).filter({ hasText: text }).first()
const text = async (loc) => ((await loc.textContent()) ?? '').replace(/\s+/g, ' ').trim()
/** "1.234,50 €" (de) → 1234.5 */
const euros = (s) => Number(s.replace(/[^\d,-]/g, '').replace(',', '.'))
const ymd = (d) => d.toISOString().slice(0, 10)
const todayStr = () => new Date().toLocaleDateString('sv') // local YYYY-MM-DD, as the app's today()

/** What the server stores for the tenant (`request_initial_data`, full). */
async function serverData() {
  const { access_token } = await apiLogin(server.base, USER.email, USER.password)
  const ws = new WebSocket(`${server.base.replace('http', 'ws')}/ws_finwise/ws/${tenantId}?token=${encodeURIComponent(access_token)}`)
  try {
    return await new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no initial_data_load')), 10_000)
      ws.on('error', reject)
      ws.on('message', (raw) => {
        const m = JSON.parse(raw.toString())
        if (m.type === 'status' && m.status === 'online') ws.send(JSON.stringify({ type: 'request_initial_data', tenant_id: tenantId }))
        else if (m.event_type === 'initial_data_load') {
          clearTimeout(timer)
          resolve(m.payload)
        }
      })
    })
  } finally {
    ws.close()
  }
}

async function assertConverged(label) {
  const { access_token } = await apiLogin(server.base, USER.email, USER.password)
  await eventually(
    async () => {
      const pending = async (p) => Number(await tid(p.page, 'sync-pending').textContent())
      if ((await pending(A)) !== 0 || (await pending(B)) !== 0) return false
      const s = await serverStatus(server.base, access_token, tenantId)
      const [a, b] = await Promise.all([A, B].map((p) => p.page.evaluate(() => globalThis.__finwise.localDigest())))
      return a === s.tenant_digest && b === s.tenant_digest
    },
    { timeout: 20_000, interval: 500, message: `digests to converge (${label})` },
  )
}

async function balanceOf(page, account) {
  return euros(await text(rowWith(page, 'account-row', account).getByTestId('account-balance')))
}

/** The chart's drawn data (read back from the Chart.js instance). */
async function chartSeries(page, id) {
  const raw = await tid(page, id).getAttribute('data-series')
  return raw ? JSON.parse(raw) : null
}
function seriesValue(series, label, dataset = 0) {
  const i = series?.labels.indexOf(label) ?? -1
  return i < 0 ? undefined : series.datasets[dataset].data[i]
}

async function shots(name) {
  await screenshot(A.page, `planning/${name}`)
  // the same screen at phone width (a third device of the user): nothing may be wider than the viewport
  const ctx = await browser.newContext({ viewport: { width: 390, height: 844 }, locale: 'de-DE', storageState: await A.context.storageState() })
  try {
    const page = await ctx.newPage()
    await page.goto(A.page.url())
    await eventually(async () => (await page.getByTestId('sync-connection').textContent()) === 'online', { message: 'phone online' })
    await page.waitForTimeout(500)
    // the screen's own content (main; the shared header is another screen's concern)
    const overflow = await page.evaluate(() => {
      let worst = { by: 0, what: '' }
      for (const el of document.querySelectorAll('main *')) {
        const r = el.getBoundingClientRect()
        const by = Math.ceil(r.right - window.innerWidth)
        if (r.width > 0 && by > worst.by) worst = { by, what: `${el.tagName}.${el.className}`.slice(0, 80) }
      }
      return worst
    })
    await screenshot(page, `planning/${name}-390`)
    assert.equal(overflow.by, 0, `${name}: ${overflow.what} reaches ${overflow.by}px past a 390px screen`)
  } finally {
    await ctx.close()
  }
}

test('planning screens sync between two browsers', async (t) => {
  await step(t, 'one user, one tenant, two browsers', async () => {
    await A.page.goto(`${server.base}/#/register`)
    await A.page.fill('input[name=name]', USER.name)
    await A.page.fill('input[name=email]', USER.email)
    await A.page.fill('input[name=password]', USER.password)
    await tid(A.page, 'auth-submit').click()
    await A.page.waitForURL(/#\/login/)
    for (const p of [A, B]) {
      if (p === B) await p.page.goto(`${server.base}/#/login`)
      await p.page.fill('input[name=email]', USER.email)
      await p.page.fill('input[name=password]', USER.password)
      await tid(p.page, 'auth-submit').click()
      await p.page.waitForURL(/#\/tenants/)
      if (p === A) {
        await tid(A.page, 'tenant-name').fill('Planung')
        await tid(A.page, 'create-tenant').click()
      } else {
        await rowWith(B.page, 'tenant-row', 'Planung').getByTestId('open-tenant').click()
      }
      await p.page.waitForURL(/#\/accounts/)
      await eventually(async () => (await tid(p.page, 'sync-connection').textContent()) === 'online', { message: `${p.name} online` })
    }
    tenantId = await A.page.evaluate(() => globalThis.__finwise.tenantId)
  })

  await step(t, 'accounts: an opening balance is a RECONCILE transaction and shows in the other browser', async () => {
    await tid(A.page, 'group-name').fill('Girokonten')
    await tid(A.page, 'add-group').click()
    await rowWith(A.page, 'group-card', 'Girokonten').waitFor()
    await tid(A.page, 'account-name').fill('Girokonto')
    await tid(A.page, 'account-opening').fill('1.000,00')
    await tid(A.page, 'add-account').click()
    await rowWith(A.page, 'account-row', 'Girokonto').waitFor()
    await tid(A.page, 'account-name').fill('Sparbuch')
    await tid(A.page, 'account-type').selectOption('spar')
    await tid(A.page, 'add-account').click()
    await eventually(async () => (await balanceOf(B.page, 'Girokonto')) === 1000, { message: 'opening balance in B' })
    assert.equal(await text(rowWith(B.page, 'account-row', 'Sparbuch').getByTestId('account-type-label')), 'Sparkonto')
    assert.equal(euros(await text(tid(B.page, 'total-balance'))), 1000)
    const data = await eventually(async () => {
      const d = await serverData()
      return d.transactions.length === 1 ? d : false
    }, { message: 'the opening balance on the server' })
    const giro = data.accounts.find((a) => a.name === 'Girokonto')
    assert.deepEqual(
      (({ accountId, type, amount, isReconciliation, reconciled }) => ({ accountId, type, amount, isReconciliation, reconciled }))(data.transactions[0]),
      { accountId: giro.id, type: 'RECONCILE', amount: 1000, isReconciliation: true, reconciled: true },
    )
    assert.equal(giro.balance, 0) // 0.4 never maintains the stored balance
    await shots('accounts')
  })

  await step(t, 'a budget set in A appears live in B (a linked CATEGORYTRANSFER pair from Verfügbare Mittel)', async () => {
    await nav(A.page, '/categories')
    await tid(A.page, 'catgroup-name').fill('Ausgaben')
    await tid(A.page, 'add-catgroup').click()
    for (const c of ['Lebensmittel', 'Miete']) {
      await tid(A.page, 'category-name').fill(c)
      await tid(A.page, 'add-category').click()
      await rowWith(A.page, 'category-row', c).waitFor()
    }
    await nav(A.page, '/budget')
    await nav(B.page, '/budget')
    await rowWith(B.page, 'budget-row', 'Lebensmittel').waitFor()
    const input = rowWith(A.page, 'budget-row', 'Lebensmittel').getByTestId('budget-input')
    await input.fill('300')
    await input.press('Enter')
    const rowB = rowWith(B.page, 'budget-row', 'Lebensmittel')
    await eventually(async () => (await rowB.getByTestId('budget-input').inputValue()) === '300', { message: 'budget 300 in B' })
    assert.equal(euros(await text(rowB.getByTestId('budget-available'))), 300)
    await eventually(async () => euros(await text(tid(B.page, 'available-funds'))) === -300, { message: 'available funds in B' })

    const d = await serverData()
    const cats = Object.fromEntries(d.categories.map((c) => [c.name, c]))
    assert.ok(cats['Verfügbare Mittel'], 'the available-funds category was created')
    const legs = d.transactions.filter((x) => x.type === 'CATEGORYTRANSFER')
    assert.equal(legs.length, 2)
    const [src, dst] = legs.sort((a, b) => a.amount - b.amount)
    assert.deepEqual([src.categoryId, src.amount, src.toCategoryId, src.counterTransactionId], [cats['Verfügbare Mittel'].id, -300, cats.Lebensmittel.id, dst.id])
    assert.deepEqual([dst.categoryId, dst.amount, dst.toCategoryId, dst.counterTransactionId], [cats.Lebensmittel.id, 300, cats['Verfügbare Mittel'].id, src.id])
    assert.equal(dst.accountId, '')
    assert.equal(dst.isCategoryTransfer, true)
    assert.match(dst.date, /-(28|29|30|31)$/) // dated the month's last day

    // B lowers it; A follows; the accounts are untouched by budget transfers
    const inputB = rowB.getByTestId('budget-input')
    await inputB.fill('250')
    await inputB.press('Enter')
    await eventually(async () => (await input.inputValue()) === '250', { message: 'budget 250 in A' })
    // month navigation: next month has no budget yet, but the available amount carries over
    await tid(A.page, 'month-next').click()
    const next = rowWith(A.page, 'budget-row', 'Lebensmittel')
    await eventually(async () => (await next.getByTestId('budget-input').inputValue()) === '0', { message: 'next month budget 0' })
    assert.equal(euros(await text(next.getByTestId('budget-available'))), 250)
    await tid(A.page, 'month-today').click()
    await shots('budget')
  })

  await step(t, 'a planned transaction created in A appears in B with its next due dates; edits and deletes follow', async () => {
    await nav(A.page, '/planning')
    await nav(B.page, '/planning')
    const first = new Date()
    first.setUTCDate(1)
    first.setUTCMonth(first.getUTCMonth() + 1)
    const start = ymd(first)
    await tid(A.page, 'plan-name').fill('Miete Wohnung')
    await tid(A.page, 'plan-account').selectOption({ label: 'Girokonto' })
    await tid(A.page, 'plan-category').selectOption({ label: 'Miete' })
    await tid(A.page, 'plan-amount').fill('-900')
    await tid(A.page, 'plan-start').fill(start)
    await tid(A.page, 'plan-pattern').selectOption('MONTHLY')
    await tid(A.page, 'save-plan').click()
    const rowB = rowWith(B.page, 'plan-row', 'Miete Wohnung')
    await rowB.waitFor()
    const due = (await rowB.getByTestId('plan-row-due').getAttribute('data-dates')).split(',')
    const months = [0, 1, 2].map((i) => {
      const d = new Date(first)
      d.setUTCMonth(d.getUTCMonth() + i)
      return ymd(d)
    })
    assert.deepEqual(due, months)
    assert.equal(euros(await text(rowB.getByTestId('plan-row-amount'))), -900)

    const plan = (await serverData()).planning_transactions[0]
    assert.deepEqual(
      (({ name, amount, startDate, recurrencePattern, recurrenceEndType, weekendHandling, transactionType, isActive, amountType }) =>
        ({ name, amount, startDate, recurrencePattern, recurrenceEndType, weekendHandling, transactionType, isActive, amountType }))(plan),
      { name: 'Miete Wohnung', amount: -900, startDate: start, recurrencePattern: 'MONTHLY', recurrenceEndType: 'NEVER', weekendHandling: 'NONE', transactionType: 'EXPENSE', isActive: true, amountType: 'EXACT' },
    )
    // B edits it to end after two times; A shows two due dates only
    await rowB.getByTestId('edit-plan').click()
    await tid(B.page, 'plan-endtype').selectOption('COUNT')
    await tid(B.page, 'plan-count').fill('2')
    await tid(B.page, 'save-plan').click()
    const rowA = rowWith(A.page, 'plan-row', 'Miete Wohnung')
    await eventually(async () => (await rowA.getByTestId('plan-row-due').getAttribute('data-dates')) === months.slice(0, 2).join(','), { message: 'edited plan in A' })
    // the budget screen forecasts it
    await nav(B.page, '/budget')
    await tid(B.page, 'month-next').click()
    await eventually(async () => euros(await text(rowWith(B.page, 'budget-row', 'Miete').getByTestId('budget-forecast'))) === -900, { message: 'forecast in budget' })
    await tid(B.page, 'month-today').click()
    // A books the first occurrence: a real EXPENSE linked to the plan; the plan moves on in B
    await rowA.getByTestId('book-plan').click()
    await nav(B.page, '/planning')
    await eventually(async () => (await rowWith(B.page, 'plan-row', 'Miete Wohnung').getByTestId('plan-row-due').getAttribute('data-dates')) === months[1], { message: 'plan moved on in B' })
    const booked = await eventually(async () => (await serverData()).transactions.find((x) => x.planningTransactionId === plan.id), { message: 'booked plan on the server' })
    assert.deepEqual(
      (({ type, amount, date, description, accountId }) => ({ type, amount, date, description, accountId }))(booked),
      { type: 'EXPENSE', amount: -900, date: months[0], description: 'Miete Wohnung', accountId: plan.accountId },
    )
    await shots('planning')
    // a second plan, deleted in B, disappears in A
    await tid(A.page, 'plan-name').fill('Einmalig')
    await tid(A.page, 'plan-amount').fill('-10')
    await tid(A.page, 'plan-pattern').selectOption('ONCE')
    await tid(A.page, 'save-plan').click()
    await nav(B.page, '/planning')
    await rowWith(B.page, 'plan-row', 'Einmalig').getByTestId('delete-plan').click()
    await eventually(async () => (await tid(A.page, 'plan-row').count()) === 1, { message: 'plan deleted in A' })

    // a transfer plan keeps a linked counter plan (0.4); B sees one row; deleting it removes both
    await tid(A.page, 'plan-name').fill('Sparrate')
    await tid(A.page, 'plan-account').selectOption({ label: 'Girokonto' })
    await tid(A.page, 'plan-transfer-to').selectOption({ label: 'Sparbuch' })
    await tid(A.page, 'plan-amount').fill('100')
    await tid(A.page, 'plan-start').fill(start)
    await tid(A.page, 'plan-pattern').selectOption('MONTHLY')
    await tid(A.page, 'save-plan').click()
    const sparB = rowWith(B.page, 'plan-row', 'Sparrate')
    await eventually(async () => (await sparB.count()) === 1 && /Girokonto → Sparbuch/.test(await text(sparB)), { message: 'transfer plan in B' })
    assert.equal(await tid(B.page, 'plan-row').count(), 2)
    const linked = await eventually(async () => {
      const ps = (await serverData()).planning_transactions.filter((x) => x.name.startsWith('Sparrate'))
      return ps.length === 2 && ps.every((x) => x.counterPlanningTransactionId) ? ps : false
    }, { message: 'transfer plan and counter plan on the server' })
    const [main, counter] = linked.sort((a, b) => a.amount - b.amount)
    assert.deepEqual([main.amount, main.transactionType, main.counterPlanningTransactionId], [-100, 'ACCOUNTTRANSFER', counter.id])
    assert.deepEqual([counter.amount, counter.name, counter.accountId, counter.transferToAccountId, counter.counterPlanningTransactionId], [100, 'Sparrate (Gegenbuchung)', main.transferToAccountId, main.accountId, main.id])
    await sparB.getByTestId('delete-plan').click()
    await eventually(async () => (await serverData()).planning_transactions.length === 1, { message: 'both transfer plans deleted' })
  })

  await step(t, 'the spending chart in B updates when A adds transactions; a rule made in A sets the category', async () => {
    await nav(B.page, '/reports')
    await tid(B.page, 'chart-spending').waitFor()
    assert.deepEqual((await chartSeries(B.page, 'chart-spending')).labels, [])

    await nav(A.page, '/transactions')
    await tid(A.page, 'tx-account').selectOption({ label: 'Girokonto' })
    await tid(A.page, 'tx-category').selectOption({ label: 'Lebensmittel' })
    await tid(A.page, 'tx-amount').fill('42,50')
    await tid(A.page, 'tx-description').fill('Wocheneinkauf')
    await tid(A.page, 'add-tx').click()
    await eventually(async () => seriesValue(await chartSeries(B.page, 'chart-spending'), 'Lebensmittel') === 42.5, { message: 'spending 42,50 in B' })

    // a rule: description contains "REWE" → category Miete (deliberately not the form's choice)
    await nav(A.page, '/rules')
    await tid(A.page, 'rule-name').fill('REWE ist Miete')
    await tid(A.page, 'rule-condition-value').fill('REWE')
    await tid(A.page, 'rule-action-value').selectOption({ label: 'Miete' })
    await tid(A.page, 'save-rule').click()
    await rowWith(A.page, 'rule-row', 'REWE ist Miete').waitFor()
    const rule = await eventually(async () => (await serverData()).automation_rules[0], { message: 'rule on the server' })
    assert.deepEqual(rule.conditions, [{ type: 'DESCRIPTION_CONTAINS', operator: 'contains', value: 'REWE' }])
    assert.equal(rule.actions[0].type, 'SET_CATEGORY')
    assert.equal(rule.stage, 'DEFAULT')
    assert.equal(rule.isActive, true)
    await shots('rules')

    await nav(A.page, '/transactions')
    await tid(A.page, 'tx-category').selectOption({ label: 'Lebensmittel' })
    await tid(A.page, 'tx-amount').fill('7,50')
    await tid(A.page, 'tx-description').fill('REWE Markt')
    await tid(A.page, 'add-tx').click()
    await eventually(async () => {
      const s = await chartSeries(B.page, 'chart-spending')
      return seriesValue(s, 'Miete') === 7.5 && seriesValue(s, 'Lebensmittel') === 42.5
    }, { message: 'the rule moved 7,50 to Miete in B' })

    // disabled in B, the rule no longer applies to A's next transaction
    await nav(B.page, '/rules')
    await rowWith(B.page, 'rule-row', 'REWE ist Miete').getByTestId('toggle-rule').click()
    await eventually(async () => (await rowWith(A.page, 'rule-row', 'REWE ist Miete').count()) >= 0 && !(await serverData()).automation_rules[0].isActive, { message: 'rule disabled' })
    await nav(A.page, '/rules')
    await eventually(async () => (await rowWith(A.page, 'rule-row', 'REWE ist Miete').getByTestId('toggle-rule').getAttribute('aria-pressed')) === 'false', { message: 'A sees it disabled' })
    await nav(A.page, '/transactions')
    await tid(A.page, 'tx-category').selectOption({ label: 'Lebensmittel' })
    await tid(A.page, 'tx-amount').fill('10')
    await tid(A.page, 'tx-description').fill('REWE nochmal')
    await tid(A.page, 'add-tx').click()
    await nav(B.page, '/reports')
    await eventually(async () => {
      const s = await chartSeries(B.page, 'chart-spending')
      return seriesValue(s, 'Lebensmittel') === 52.5 && seriesValue(s, 'Miete') === 7.5
    }, { message: 'spending after the disabled rule' })
    const budget = await chartSeries(B.page, 'chart-budget')
    assert.equal(seriesValue(budget, 'Lebensmittel', 0), 250)
    assert.equal(seriesValue(budget, 'Lebensmittel', 1), 52.5)
    const bal = await chartSeries(B.page, 'chart-balances')
    const giro = bal.datasets.find((d) => d.label === 'Girokonto')
    assert.equal(giro.data.at(-1), 1000 - 42.5 - 7.5 - 10)
    await nav(A.page, '/reports')
    await tid(A.page, 'chart-spending').waitFor()
    await shots('reports')
  })

  await step(t, 'a transfer shows on both accounts with opposite signs; balances agree; edit and delete move both legs', async () => {
    await nav(A.page, '/transfers')
    await tid(A.page, 'transfer-from').selectOption({ label: 'Girokonto' })
    await tid(A.page, 'transfer-to').selectOption({ label: 'Sparbuch' })
    await tid(A.page, 'transfer-amount').fill('200')
    await tid(A.page, 'book-transfer').click()
    await rowWith(A.page, 'transfer-row', 'Sparbuch').waitFor()

    await nav(B.page, '/accounts')
    const giroBefore = 1000 - 42.5 - 7.5 - 10
    await eventually(async () => (await balanceOf(B.page, 'Sparbuch')) === 200 && (await balanceOf(B.page, 'Girokonto')) === giroBefore - 200, { message: 'transfer balances in B' })
    assert.equal(euros(await text(tid(B.page, 'total-balance'))), giroBefore)
    assert.equal(euros(await text(rowWith(B.page, 'group-card', 'Girokonten').getByTestId('group-balance'))), giroBefore)

    const d = await serverData()
    const acc = Object.fromEntries(d.accounts.map((a) => [a.name, a.id]))
    const legs = d.transactions.filter((x) => x.type === 'ACCOUNTTRANSFER').sort((a, b) => a.amount - b.amount)
    assert.equal(legs.length, 2)
    assert.deepEqual([legs[0].accountId, legs[0].amount, legs[0].transferToAccountId, legs[0].counterTransactionId], [acc.Girokonto, -200, acc.Sparbuch, legs[1].id])
    assert.deepEqual([legs[1].accountId, legs[1].amount, legs[1].transferToAccountId, legs[1].counterTransactionId], [acc.Sparbuch, 200, acc.Girokonto, legs[0].id])
    assert.equal(legs[0].date, todayStr())

    // both legs in the transaction list of B with opposite signs
    await nav(B.page, '/transactions')
    const amounts = await tid(B.page, 'tx-row').filter({ hasText: /Girokonto|Sparbuch/ }).getByTestId('tx-amount-cell').allTextContents()
    assert.ok(amounts.map(euros).includes(-200) && amounts.map(euros).includes(200), `transfer legs in B: ${amounts}`)

    // B edits the amount; A's accounts follow on both sides
    await nav(B.page, '/transfers')
    await rowWith(B.page, 'transfer-row', 'Sparbuch').getByTestId('edit-transfer').click()
    await tid(B.page, 'transfer-amount').fill('150')
    await tid(B.page, 'book-transfer').click()
    await nav(A.page, '/accounts')
    await eventually(async () => (await balanceOf(A.page, 'Sparbuch')) === 150 && (await balanceOf(A.page, 'Girokonto')) === giroBefore - 150, { message: 'edited transfer in A' })
    await shots('transfers-accounts')
    await nav(A.page, '/transfers')
    await shots('transfers')

    // A deletes it: both legs go in B
    await rowWith(A.page, 'transfer-row', 'Sparbuch').getByTestId('delete-transfer').click()
    await nav(B.page, '/accounts')
    await eventually(async () => (await balanceOf(B.page, 'Sparbuch')) === 0 && (await balanceOf(B.page, 'Girokonto')) === giroBefore, { message: 'deleted transfer in B' })
    assert.equal((await serverData()).transactions.filter((x) => x.type === 'ACCOUNTTRANSFER').length, 0)
    await assertConverged('end')
  })

  await step(t, 'income in an income category moves into the budget, and back when it is deleted', async () => {
    await nav(A.page, '/categories')
    const groupForm = A.page.locator('form').filter({ has: tid(A.page, 'catgroup-name') })
    await tid(A.page, 'catgroup-name').fill('Einnahmen')
    await groupForm.locator('input[type=checkbox]').check()
    await tid(A.page, 'add-catgroup').click()
    await A.page.locator('[data-testid=category-group] option', { hasText: 'Einnahmen' }).waitFor({ state: 'attached' })
    await tid(A.page, 'category-group').selectOption({ label: 'Einnahmen' })
    await tid(A.page, 'category-name').fill('Gehalt')
    await tid(A.page, 'add-category').click()
    await rowWith(A.page, 'category-row', 'Gehalt').waitFor()
    await nav(A.page, '/transactions')
    await tid(A.page, 'tx-type').selectOption('INCOME')
    await tid(A.page, 'tx-category').selectOption({ label: 'Gehalt' })
    await tid(A.page, 'tx-amount').fill('2000')
    await tid(A.page, 'tx-description').fill('Lohn November')
    await tid(A.page, 'add-tx').click()
    await nav(B.page, '/budget')
    await eventually(async () => euros(await text(tid(B.page, 'available-funds'))) === 1750, { message: 'income available to budget in B' })
    const d = await serverData()
    const cat = Object.fromEntries(d.categories.map((c) => [c.name, c.id]))
    const moved = d.transactions.filter((x) => x.type === 'CATEGORYTRANSFER' && Math.abs(x.amount) === 2000).sort((a, b) => a.amount - b.amount)
    assert.deepEqual(moved.map((x) => [x.categoryId, x.amount, x.toCategoryId]), [[cat.Gehalt, -2000, cat['Verfügbare Mittel']], [cat['Verfügbare Mittel'], 2000, cat.Gehalt]])
    await rowWith(A.page, 'tx-row', 'Lohn November').getByTestId('delete-tx').click()
    await eventually(async () => euros(await text(tid(B.page, 'available-funds'))) === -250, { message: 'income taken back in B' })
    await assertConverged('after income')
  })

  await step(t, 'editing an account with another actual balance books a reconciliation of the difference', async () => {
    await nav(B.page, '/accounts')
    await rowWith(B.page, 'account-row', 'Sparbuch').getByTestId('edit-account').click()
    await tid(B.page, 'edit-account-type').selectOption('tagesgeld')
    await tid(B.page, 'edit-account-balance').fill('25,50')
    await tid(B.page, 'save-account').click()
    await nav(A.page, '/accounts')
    const row = rowWith(A.page, 'account-row', 'Sparbuch')
    await eventually(async () => (await balanceOf(A.page, 'Sparbuch')) === 25.5, { message: 'reconciled balance in A' })
    assert.equal(await text(row.getByTestId('account-type-label')), 'Tagesgeld')
    const d = await serverData()
    const spar = d.accounts.find((a) => a.name === 'Sparbuch')
    assert.equal(spar.accountType, 'tagesgeld')
    const rec = d.transactions.filter((x) => x.type === 'RECONCILE' && x.accountId === spar.id)
    assert.deepEqual(rec.map((x) => x.amount), [25.5])
    await assertConverged('after reconcile')
  })

  await step(t, 'the screens speak English too', async () => {
    await tid(B.page, 'locale').selectOption('en')
    await nav(B.page, '/budget')
    await B.page.getByRole('heading', { name: 'Budget' }).waitFor()
    assert.match(await text(rowWith(B.page, 'budget-row', 'Lebensmittel').getByTestId('budget-available')), /^€/)
    await nav(B.page, '/planning')
    await B.page.getByRole('heading', { name: 'Planned transactions' }).waitFor()
    await screenshot(B.page, 'planning/planning-en')
    await tid(B.page, 'locale').selectOption('de')
  })
})
