// End-to-end test of the Control Panel against a real `iron up` (control serving
// dashboard/dist at `/`, a proxy, a mock upstream), driven with playwright-core and Debian's
// chromium. Plain node script: exits 0 on success, 1 on the first failed check.
//
// Env: IRON_URL (control base URL), IRON_PROXY_URL (agent base URL), IRON_ADMIN_KEY,
// IRON_VIEWER_KEY, IRON_ARTIFACTS (screenshots; default dashboard/artifacts),
// CHROMIUM_PATH (default /usr/bin/chromium), IRON_E2E_LIVE_MS (live-update bound, 2000).

import { mkdirSync } from 'node:fs'
import { join } from 'node:path'
import { chromium } from 'playwright-core'

const env = (name, fallback) => {
  const v = process.env[name] ?? fallback
  if (v === undefined || v === '') {
    console.error(`e2e: set ${name}`)
    process.exit(2)
  }
  return v
}
const IRON_URL = env('IRON_URL').replace(/\/$/, '')
const PROXY_URL = env('IRON_PROXY_URL').replace(/\/$/, '')
const ADMIN_KEY = env('IRON_ADMIN_KEY')
const VIEWER_KEY = env('IRON_VIEWER_KEY')
const ARTIFACTS = env('IRON_ARTIFACTS', join(import.meta.dirname ?? '.', '..', 'artifacts'))
const CHROMIUM = env('CHROMIUM_PATH', '/usr/bin/chromium')
const LIVE_MS = Number(env('IRON_E2E_LIVE_MS', '2000'))
const STEP_MS = 15_000

mkdirSync(ARTIFACTS, { recursive: true })

const figures = {}
const consoleProblems = []
/** Responses the scenario provokes on purpose (each logs "Failed to load resource"). */
const expectedFailures = []

function check(cond, msg) {
  if (!cond) throw new Error(`check failed: ${msg}`)
  console.log(`ok - ${msg}`)
}

function watchConsole(page, label) {
  page.on('console', (msg) => {
    if (msg.type() !== 'error' && msg.type() !== 'warning') return
    const text = msg.text()
    const url = msg.location()?.url ?? ''
    const m = /status of (\d{3})/.exec(text)
    if (m && expectedFailures.some((e) => e.status === Number(m[1]) && url.includes(e.path))) return
    consoleProblems.push(`[${label}] console.${msg.type()}: ${text} ${url}`)
  })
  page.on('pageerror', (err) => consoleProblems.push(`[${label}] pageerror: ${err.message}`))
}

/** Every form control has a label and every button an accessible name. */
async function a11y(page, name) {
  const bad = await page.evaluate(() => {
    const out = []
    for (const el of document.querySelectorAll('input, select, textarea')) {
      if (el.type === 'hidden') continue
      if (el.labels?.length === 0 && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby'))
        out.push(`unlabelled ${el.tagName.toLowerCase()}#${el.id}`)
    }
    for (const b of document.querySelectorAll('button, a[href]')) {
      if (!(b.textContent ?? '').trim() && !b.getAttribute('aria-label')) out.push(`nameless ${b.outerHTML.slice(0, 80)}`)
    }
    return out
  })
  check(bad.length === 0, `${name}: labelled inputs and named buttons ${bad.length ? JSON.stringify(bad) : ''}`)
}

async function shot(page, name) {
  await a11y(page, name)
  await page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true })
}

const tid = (page, id) => page.getByTestId(id)

async function signIn(page, key) {
  await page.goto(`${IRON_URL}/`)
  await page.waitForURL(/\/signin/, { timeout: STEP_MS })
  await tid(page, 'signin-key').fill(key)
  await tid(page, 'signin-submit').click()
  await tid(page, 'nav-overview').waitFor({ timeout: STEP_MS })
}

async function chat(token) {
  const r = await fetch(`${PROXY_URL}/v1/chat/completions`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ model: 'gpt-4o-mini', messages: [{ role: 'user', content: 'hi' }] }),
  })
  const text = await r.text()
  return { status: r.status, text }
}

const num = async (locator, attr) => Number((await locator.getAttribute(attr)) || '0')

/** Polls the DOM (no reload) until `pred` holds, at most `ms` after `t0`; returns the ms
 * elapsed since `t0` or throws. */
async function within(page, t0, ms, what, pred) {
  for (;;) {
    if (await pred()) return Date.now() - t0
    if (Date.now() - t0 > ms) throw new Error(`check failed: ${what} within ${ms} ms`)
    await page.waitForTimeout(50)
  }
}

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] })
  try {
    // ---- admin ---------------------------------------------------------------------
    const adminCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    const page = await adminCtx.newPage()
    watchConsole(page, 'admin')
    expectedFailures.push({ status: 401, path: '/v1/session' }) // GET before sign-in
    await page.goto(`${IRON_URL}/`)
    await tid(page, 'signin-key').waitFor({ timeout: STEP_MS })
    check((await page.getByLabel('API key').count()) === 1, 'sign-in field is labelled')
    await shot(page, '01-signin')
    await tid(page, 'signin-key').fill(ADMIN_KEY)
    await tid(page, 'signin-submit').click()
    await tid(page, 'nav-overview').waitFor({ timeout: STEP_MS })
    check((await tid(page, 'session-role').innerText()).includes('admin'), 'header shows the admin role')
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage }) + JSON.stringify({ ...sessionStorage }))
    check(!stored.includes(ADMIN_KEY), 'the API key is not in web storage')

    // Create a project with a $1 budget.
    const name = `e2e-${Date.now().toString(36)}`
    await tid(page, 'nav-projects').click()
    await tid(page, 'project-name').fill(name)
    await tid(page, 'project-budget').fill('1')
    await tid(page, 'create-project').click()
    await page.waitForURL(/\/projects\/prj_/, { timeout: STEP_MS })
    const projectId = decodeURIComponent(new URL(page.url()).pathname.split('/').pop())
    await tid(page, `budget-bar-${projectId}`).waitFor({ timeout: STEP_MS })
    check((await tid(page, 'budget-limit').innerText()) === '$1.00', `project ${projectId} has a $1 budget`)
    await shot(page, '02-project-detail')

    // Mint a token; read it once.
    await tid(page, 'project-tokens-link').click()
    // Keyboard: the dialog takes focus, Tab stays inside, Escape closes it.
    await tid(page, 'mint-token').click()
    await tid(page, 'mint-dialog').waitFor({ timeout: STEP_MS })
    for (let i = 0; i < 8; i++) await page.keyboard.press('Tab')
    check(await page.evaluate(() => Boolean(document.activeElement?.closest('dialog'))), 'focus stays inside the mint dialog')
    await page.keyboard.press('Escape')
    await tid(page, 'mint-dialog').waitFor({ state: 'detached', timeout: STEP_MS })
    check(true, 'Escape closes the mint dialog')
    await tid(page, 'mint-token').click()
    await tid(page, 'mint-name').fill('e2e')
    await tid(page, 'mint-submit').click()
    const tokenInput = tid(page, 'minted-token-value')
    await tokenInput.waitFor({ timeout: STEP_MS })
    const token = await tokenInput.inputValue()
    check(token.startsWith('ic_'), 'minted token is shown')
    await shot(page, '03-minted-dialog')
    await tid(page, 'mint-done').click()
    await tokenInput.waitFor({ state: 'detached', timeout: STEP_MS })
    check(!(await page.content()).includes(token), 'token is gone from the page after the dialog closes')
    const notice = await tid(page, 'tokens-notice').innerText()
    const tokenId = /tok_[0-9A-Za-z]+/.exec(notice)?.[0]
    check(Boolean(tokenId), `token id ${tokenId} listed`)
    await tid(page, `revoke-${tokenId}`).waitFor({ timeout: STEP_MS })
    await shot(page, '04-tokens')

    // Overview before traffic.
    await tid(page, 'nav-overview').click()
    const bar = tid(page, `budget-bar-${projectId}`)
    await bar.waitFor({ timeout: STEP_MS })
    const today = tid(page, 'overview-spend-today')
    const rpm = tid(page, 'overview-requests-per-minute')
    await page.waitForFunction(() => document.querySelector('[data-testid="overview-spend-today"]')?.getAttribute('data-microdollars') !== '', null, { timeout: STEP_MS })
    const before = {
      spent: await num(bar, 'data-spent-microdollars'),
      today: await num(today, 'data-microdollars'),
      rpm: await num(rpm, 'data-value'),
    }
    const url0 = page.url()
    let navigations = 0
    page.on('framenavigated', (f) => {
      if (f === page.mainFrame()) navigations++
    })

    // Five requests through the proxy.
    for (let i = 0; i < 5; i++) {
      const r = await chat(token)
      check(r.status === 200, `proxy request ${i + 1} → 200 (${r.status} ${r.status === 200 ? '' : r.text.slice(0, 200)})`)
    }
    const sent = Date.now()
    figures.bar_update_ms = await within(page, sent, LIVE_MS, 'budget bar shows the new spend', async () => (await num(bar, 'data-spent-microdollars')) > before.spent)
    figures.overview_update_ms = await within(page, sent, LIVE_MS, 'overview spend today and requests/min rise', async () =>
      (await num(today, 'data-microdollars')) > before.today && (await num(rpm, 'data-value')) > before.rpm,
    )
    check(navigations === 0 && page.url() === url0, 'no reload or navigation happened')
    figures.spent_microdollars = await num(bar, 'data-spent-microdollars')
    console.log(`ok - live update after the last proxy response: budget bar ${figures.bar_update_ms} ms, overview ${figures.overview_update_ms} ms`)
    await shot(page, '05-overview')

    // Revoke in the UI; the proxy then refuses the token.
    await tid(page, 'nav-tokens').click()
    await page.getByLabel('Project').selectOption(projectId)
    await tid(page, `revoke-${tokenId}`).click()
    await tid(page, 'confirm-yes').click()
    await page.waitForFunction((id) => document.querySelector(`[data-testid="token-status-${id}"]`)?.textContent === 'revoked', tokenId, { timeout: STEP_MS })
    check(true, 'token shows as revoked')
    const t0 = Date.now()
    let last
    for (;;) {
      last = await chat(token)
      if (last.status === 401 || Date.now() - t0 > 5000) break
      await new Promise((r) => setTimeout(r, 100))
    }
    figures.revoke_to_401_ms = Date.now() - t0
    check(last.status === 401, `proxy refuses the revoked token with 401 (after ${figures.revoke_to_401_ms} ms)`)

    // Other pages, with screenshots.
    await tid(page, 'nav-projects').click()
    await tid(page, `budget-bar-${projectId}`).waitFor({ timeout: STEP_MS })
    await shot(page, '06-projects')
    await tid(page, 'nav-providers').click()
    await page.getByRole('heading', { name: 'Providers' }).waitFor({ timeout: STEP_MS })
    await page.waitForSelector('[data-testid="providers-table"], .empty', { timeout: STEP_MS })
    await shot(page, '07-providers')
    await tid(page, 'nav-usage').click()
    await tid(page, 'usage-table').waitFor({ timeout: STEP_MS })
    check((await tid(page, 'usage-csv').getAttribute('href')).startsWith('/v1/usage?format=csv'), 'CSV export link')
    await shot(page, '08-usage')
    await tid(page, 'nav-audit').click()
    const row = (action, target) => page.locator(`[data-testid="audit-row-${action}"][data-target="${target}"]`)
    await row('project.create', projectId).waitFor({ timeout: STEP_MS })
    await row('token.mint', tokenId).waitFor({ timeout: STEP_MS })
    await row('token.revoke', tokenId).waitFor({ timeout: STEP_MS })
    check(true, 'audit log lists project.create, token.mint and token.revoke')
    await shot(page, '09-audit')
    await tid(page, 'signout').click()
    await tid(page, 'signin-key').waitFor({ timeout: STEP_MS })
    await adminCtx.close()

    // ---- viewer --------------------------------------------------------------------
    const viewerCtx = await browser.newContext({ viewport: { width: 1280, height: 900 } })
    const vpage = await viewerCtx.newPage()
    watchConsole(vpage, 'viewer')
    await signIn(vpage, VIEWER_KEY)
    check((await tid(vpage, 'session-role').innerText()).includes('viewer'), 'header shows the viewer role')
    await tid(vpage, 'nav-projects').click()
    await tid(vpage, `budget-bar-${projectId}`).waitFor({ timeout: STEP_MS })
    check((await tid(vpage, 'create-project').count()) === 0, 'viewer: no create-project button')
    await tid(vpage, 'nav-tokens').click()
    await vpage.getByLabel('Project').selectOption(projectId)
    await tid(vpage, `token-row-${tokenId}`).waitFor({ timeout: STEP_MS })
    check((await tid(vpage, 'mint-token').count()) === 0, 'viewer: no mint button')
    check((await vpage.locator('[data-testid^="revoke-"]').count()) === 0, 'viewer: no revoke buttons')
    await shot(vpage, '10-viewer-tokens')
    await tid(vpage, 'nav-providers').click()
    await vpage.waitForSelector('[data-testid="providers-table"], .empty', { timeout: STEP_MS })
    check((await vpage.locator('[data-testid^="rotate-"], [data-testid^="delete-provider-"], [data-testid="add-provider"]').count()) === 0, 'viewer: no provider actions')
    // Deep link (history URL served as index.html), read-only detail.
    await vpage.goto(`${IRON_URL}/projects/${projectId}`)
    await tid(vpage, `budget-bar-${projectId}`).waitFor({ timeout: STEP_MS })
    check(Number(await tid(vpage, `budget-bar-${projectId}`).getAttribute('data-spent-microdollars')) > 0, 'viewer: deep link to the project shows its spend')
    check((await vpage.locator('[data-testid="save-budget"], [data-testid="save-policy"], [data-testid="reset-policy"]').count()) === 0, 'viewer: no budget or policy edits')
    expectedFailures.push({ status: 403, path: `/v1/projects/${projectId}/tokens` })
    const status = await vpage.evaluate(async (id) => {
      const r = await fetch(`/v1/projects/${id}/tokens`, {
        method: 'POST',
        credentials: 'same-origin',
        headers: { 'content-type': 'application/json' },
        body: '{}',
      })
      return r.status
    }, projectId)
    check(status === 403, `viewer: POST /v1/projects/${projectId}/tokens from the page → ${status}`)
    await viewerCtx.close()
  } finally {
    await browser.close()
  }
  if (consoleProblems.length) {
    for (const p of consoleProblems) console.error(p)
    throw new Error(`${consoleProblems.length} browser console error(s)/warning(s)`)
  }
  check(true, 'no browser console errors or warnings')
  console.log(`figures ${JSON.stringify(figures)}`)
}

main().then(
  () => {
    console.log('dashboard e2e: PASS')
    process.exit(0)
  },
  (err) => {
    console.error(`dashboard e2e: FAIL: ${err?.stack ?? err}`)
    if (consoleProblems.length) console.error(consoleProblems.join('\n'))
    process.exit(1)
  },
)
