// Drives Debian's Chromium (headless, through playwright-core) through
// the web console for the end-to-end tests in tests/e2e/console.rs.
//
//   node console.mjs SCENARIO
//
// The Rust test runs the gateway, PostgreSQL and the clients; this script
// is only the browser. They talk in lines: the script prints
// `STEP name [json]` when it reaches a point the test waits for, and
// reads a line from stdin where it waits for the test. Settings come in
// the environment: CONSOLE (the gateway's base URL), TOKEN, and per
// scenario more. Screenshots go to SCREENSHOTS.
import { chromium } from 'playwright-core';
import { createInterface } from 'node:readline';
import { createServer } from 'node:http';
import { mkdirSync } from 'node:fs';

const env = (name) => {
  const v = process.env[name];
  if (v === undefined) throw new Error(`${name} is not set`);
  return v;
};
const base = env('CONSOLE');
const shots = env('SCREENSHOTS');
const scenario = process.argv[2];
mkdirSync(shots, { recursive: true });

const stdin = createInterface({ input: process.stdin });
const lines = stdin[Symbol.asyncIterator]();
const step = (name, data) => console.log(`STEP ${name}${data === undefined ? '' : ' ' + JSON.stringify(data)}`);
const waitForTest = async () => (await lines.next()).value;

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
context.setDefaultTimeout(20000);
const page = await context.newPage();
const shot = (name, p = page) => p.screenshot({ path: `${shots}/${scenario}-${name}.png`, fullPage: true });

async function signIn(token, next = '/sessions') {
  await page.goto(`${base}/login?next=${encodeURIComponent(next)}`);
  await page.getByLabel('Token').fill(token);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.waitForSelector('#signed-in-as');
  return page.textContent('#signed-in-as');
}

const scenarios = {
  // Token sign-in, what a signed-out browser sees, and a bad token.
  async 'token-login'() {
    await page.goto(`${base}/sessions`);
    step('signed-out-url', page.url());
    await page.getByLabel('Token').fill('not-a-token');
    await page.getByRole('button', { name: 'Sign in' }).click();
    step('bad-token', await page.textContent('#login-message'));
    await shot('refused');
    step('signed-in-as', await signIn(env('TOKEN')));
    await shot('sessions');
    const cookies = await context.cookies();
    step('cookies', cookies.map((c) => ({ name: c.name, httpOnly: c.httpOnly, secure: c.secure, sameSite: c.sameSite })));
    // 360 px wide: everything still fits (no sideways scrolling of the page).
    await page.setViewportSize({ width: 360, height: 800 });
    await page.goto(`${base}/sessions`);
    await shot('sessions-360px');
    step('overflow', await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth));
  },

  // Sign-in through the OIDC issuer's own login form.
  async 'oidc-login'() {
    await page.goto(`${base}/login?next=/reviews`);
    await page.click('#oidc-login');
    await page.waitForSelector('input[name=login]');
    await page.fill('input[name=login]', env('OIDC_USER'));
    await page.fill('input[name=password]', env('OIDC_PASSWORD'));
    await page.click('button');
    await page.waitForSelector('#signed-in-as');
    await shot('signed-in');
    step('signed-in-as', { who: await page.textContent('#signed-in-as'), url: page.url() });
  },

  // The sessions list gains a live row while psql runs, without a reload.
  async 'live-session'() {
    await signIn(env('TOKEN'));
    await page.waitForFunction(() => document.body.dataset.following === 'yes');
    await page.evaluate(() => { window.stillTheSamePage = true; });
    step('watching');
    const row = await page.waitForSelector('tr[data-live-session]');
    const id = await row.getAttribute('data-session');
    const same = await page.evaluate(() => window.stillTheSamePage === true);
    await shot('live');
    step('seen', { id, same, text: await row.textContent() });
    await waitForTest();
    // The test ended psql: the mark goes, again without a reload.
    await page.waitForSelector(`tr[data-session="${id}"]:not([data-live-session])`);
    step('ended', { same: await page.evaluate(() => window.stillTheSamePage === true) });
  },

  // A held statement shows up in the inbox; approve it with a reason.
  async approve() {
    await signIn(env('TOKEN'), '/reviews');
    await page.waitForFunction(() => document.body.dataset.following === 'yes');
    step('watching');
    const card = await page.waitForSelector('[data-review]');
    await shot('inbox');
    const id = await card.getAttribute('data-review');
    step('review', { id, statement: await page.textContent(`#review-${id} .statement`), card: await card.textContent() });
    // The test checks that nothing ran yet.
    await waitForTest();
    await page.fill(`#reason-${id}`, 'checked the ticket');
    await page.click(`#review-${id} button[value=approve]`);
    await page.waitForSelector('#message');
    await shot('approved');
    step('decided', await page.textContent('#message'));
  },

  // The requester tries to approve their own statement.
  async 'self-approval'() {
    await signIn(env('TOKEN'), '/reviews');
    const card = await page.waitForSelector('[data-review]');
    const id = await card.getAttribute('data-review');
    await page.click(`#review-${id} button[value=approve]`);
    await page.waitForSelector('#message');
    await shot('refused');
    step('refused', { id, message: await page.textContent('#message') });
  },

  // A what-if, for the test to compare with `portcullis policy check`.
  async 'what-if'() {
    await signIn(env('TOKEN'), '/policy');
    await page.getByLabel('User', { exact: true }).fill(env('WHATIF_USER'));
    await page.getByLabel('Groups (comma-separated)').fill(env('WHATIF_GROUPS'));
    await page.getByLabel('Connection').selectOption(env('WHATIF_CONNECTION'));
    await page.getByLabel('Statement').fill(env('WHATIF_SQL'));
    await page.getByRole('button', { name: 'Decide' }).click();
    await page.waitForSelector('#check-text');
    await shot('decided');
    step('decision', {
      outcome: await page.textContent('#outcome'),
      text: await page.textContent('#check-text'),
      pairs: await page.$$eval('#pairs tbody tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent.trim()))),
    });
  },

  // An SSH recording plays in the terminal player.
  async replay() {
    await signIn(env('TOKEN'), `/sessions/${env('SESSION')}`);
    await page.click('[data-cast] button');
    await page.waitForSelector('[data-cast] .ap-term, [data-cast] .ap-terminal, [data-cast] pre');
    const marker = env('MARKER');
    await page.waitForFunction((m) => document.querySelector('[data-cast]').textContent.includes(m), marker, { timeout: 20000 });
    await shot('played');
    step('played', await page.textContent('[data-cast]'));
  },

  // A page on another origin of the same site posts the kill form with
  // the victim's cookie but without the CSRF token; then the console's
  // own button does the same with it.
  async csrf() {
    await signIn(env('TOKEN'));
    const target = `${base}/sessions/${env('SESSION')}/kill`;
    const evil = createServer((req, res) => {
      res.setHeader('content-type', 'text/html');
      res.end(`<!doctype html><form id="f" method="post" action="${target}"><input type="hidden" name="csrf" value="guess"></form><script>document.getElementById('f').submit()</script>`);
    });
    await new Promise((r) => evil.listen(0, '127.0.0.1', r));
    const answer = page.waitForResponse((r) => r.url() === target);
    await page.goto(`http://127.0.0.1:${evil.address().port}/`);
    const response = await answer;
    await page.waitForLoadState();
    await shot('forged');
    step('forged', { status: response.status(), body: await page.textContent('body') });
    evil.close();
    await waitForTest();
    await page.goto(`${base}/sessions/${env('SESSION')}`);
    await page.click('#kill');
    await page.waitForSelector('#state');
    await shot('killed');
    step('killed', await page.textContent('#state'));
  },
};

try {
  const run = scenarios[scenario];
  if (!run) throw new Error(`no scenario ${scenario}`);
  await run();
  step('done');
} catch (e) {
  await shot('failure').catch(() => {});
  console.log(`FAILED ${e.stack || e}`);
  process.exitCode = 1;
} finally {
  await browser.close();
  stdin.close();
}
