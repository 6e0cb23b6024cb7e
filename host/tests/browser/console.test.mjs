// The console in a real browser: Debian's Chromium driven by playwright-core. Run by
// host/tests/console.rs against a running host, which posts orders meanwhile; every check
// waits for its condition (with a timeout), none sleeps. Exits non-zero on the first failure.
//
// Environment (set by console.rs):
//   CONSOLE_URL      the console, e.g. http://127.0.0.1:20123/
//   EXPECT_STAGES    the configuration's stages, comma-separated
//   RATE_STAGE       a stage whose rate must rise while orders flow
//   POISON_KEY       the key of an event the pipeline dead-letters
//   ROLLBACK_STAGE   a stage swapped to ROLLED_FROM (its previous version: ROLLED_TO)
//   ROLLED_FROM, ROLLED_TO
//   TRACE_KEY        an order that went all the way through
//   SCREENSHOT       where to save the screenshot of the console under load
import { chromium } from 'playwright-core';

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set (host/tests/console.rs sets it)`);
  return value;
};
const CHECK_TIMEOUT = 60_000;
const started = Date.now();
const step = (what) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)} s] ${what}`);

/** Awaits `work`; a failure names what was awaited and what the page showed instead. */
async function within(what, work, shown) {
  try {
    return await work;
  } catch (error) {
    const seen = shown ? await shown().catch((e) => `cannot tell: ${e.message}`) : '';
    throw new Error(`${what}: ${String(error.message).split('\n')[0]}${seen ? `; the page shows ${seen}` : ''}`);
  }
}

// The whole run may not take longer than this, whatever hangs.
setTimeout(() => {
  console.error('console.test.mjs: gave up after 240 s');
  process.exit(2);
}, 240_000).unref();

const browser = await chromium.launch({ executablePath: '/usr/bin/chromium', headless: true });
let failed = false;
let page;
try {
  page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  const errors = [];
  page.on('pageerror', (error) => errors.push(error.message));
  // Rollback and replay ask before they act.
  page.on('dialog', (dialog) => dialog.accept());
  await page.goto(env('CONSOLE_URL'));

  step('the topology shows every stage of the configuration');
  const stages = env('EXPECT_STAGES').split(',');
  const drawnStages = () => page.locator('#topology g.stage').evaluateAll((boxes) => boxes.map((b) => b.getAttribute('data-stage')));
  for (const stage of stages) {
    await within(
      `stage ${stage} drawn`,
      page.locator(`#topology g.stage[data-stage="${stage}"]`).waitFor({ state: 'visible', timeout: CHECK_TIMEOUT }),
      async () => `stages [${await drawnStages()}]`,
    );
  }
  const drawn = await drawnStages();
  if (drawn.length !== stages.length) throw new Error(`the topology draws stages ${drawn}, the configuration has ${stages}`);

  const rateStage = env('RATE_STAGE');
  step(`the rate shown on stage ${rateStage} rises while orders flow`);
  const rate = page.locator(`#topology g.stage[data-stage="${rateStage}"] .rate`);
  const before = await rate.getAttribute('data-value');
  await within(
    `a rate above 0 on stage ${rateStage}`,
    page.waitForFunction(
      (stage) => {
        const node = document.querySelector(`#topology g.stage[data-stage="${stage}"] .rate`);
        return node && Number(node.getAttribute('data-value')) > 0;
      },
      rateStage,
      { timeout: CHECK_TIMEOUT, polling: 250 },
    ),
    async () => `rate '${await rate.textContent()}', '${await page.locator('#metrics-status').textContent()}' `
      + `(${await page.locator('#metrics-status').getAttribute('title')})`,
  );
  const shown = await rate.textContent();
  step(`  ${rateStage}: rate ${before || '(none)'} -> ${shown} ev/s`);
  if (Number.isNaN(Number(shown))) throw new Error(`the rate shows '${shown}', not a number`);
  const pill = await page.locator('#metrics-status').textContent();
  if (pill !== 'metrics live') throw new Error(`the metrics status says '${pill}'`);

  const poison = env('POISON_KEY');
  step(`the poison event ${poison} appears in the dead-letter table`);
  const row = page.locator(`#dlq tr.letter[data-key="${poison}"]`).first();
  const letterKeys = () => page.locator('#dlq tr.letter').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-key')));
  await within(
    `a dead letter of key ${poison}`,
    row.waitFor({ state: 'visible', timeout: CHECK_TIMEOUT }),
    async () => `letters of keys [${await letterKeys()}], '${await page.locator('#dlq-message').textContent()}'`,
  );
  const id = await row.getAttribute('data-id');
  await row.locator('td.reason').click();
  const envelope = page.locator('#envelope');
  await envelope.waitFor({ state: 'visible', timeout: CHECK_TIMEOUT });
  const text = await envelope.textContent();
  for (const expected of [id, poison, '"stage": "warehouse"', '"original_event"']) {
    if (!text.includes(expected)) throw new Error(`the envelope shown lacks ${expected}: ${text}`);
  }
  step(`  dead letter ${id}: replaying it from the page`);
  await row.locator('button.replay').click();
  await within(
    `dead letter ${id} gone from the pending list after its replay`,
    page.locator(`#dlq tr.letter[data-id="${id}"]`).waitFor({ state: 'detached', timeout: CHECK_TIMEOUT }),
    async () => `'${await page.locator('#dlq-message').textContent()}'`,
  );
  const said = await page.locator('#dlq-message').textContent();
  if (!said.includes('replayed 1')) throw new Error(`after the replay the page says '${said}'`);
  step(`  no longer pending: '${said}'`);

  const stage = env('ROLLBACK_STAGE');
  const from = env('ROLLED_FROM');
  const to = env('ROLLED_TO');
  step(`a rollback of ${stage} from the page changes the version shown`);
  const version = page.locator(`#plugins tr[data-stage="${stage}"] td.version`);
  const versionShown = async () => `version ${await version.getAttribute('data-version')}, `
    + `'${await page.locator('#plugins-message').textContent()}'`;
  await within(
    `${stage} at version ${from} before the rollback`,
    page.waitForFunction(
      ([s, v]) => document.querySelector(`#plugins tr[data-stage="${s}"] td.version`)?.getAttribute('data-version') === v,
      [stage, from],
      { timeout: CHECK_TIMEOUT, polling: 250 },
    ),
    versionShown,
  );
  await page.locator(`#plugins tr[data-stage="${stage}"] button.rollback`).click();
  await within(
    `${stage} back at version ${to} in the table and the topology`,
    page.waitForFunction(
      ([s, v]) => document.querySelector(`#plugins tr[data-stage="${s}"] td.version`)?.getAttribute('data-version') === v
        && document.querySelector(`#topology g.stage[data-stage="${s}"] .version`)?.getAttribute('data-version') === v,
      [stage, to],
      { timeout: CHECK_TIMEOUT, polling: 250 },
    ),
    versionShown,
  );
  step(`  ${stage}: ${from} -> ${await version.getAttribute('data-version')} ('${await page.locator('#plugins-message').textContent()}')`);

  const key = env('TRACE_KEY');
  step(`a key lookup shows the timeline of ${key}`);
  await page.fill('#trace-key', key);
  await page.click('#trace-form button');
  await within(
    `the timeline of ${key}`,
    page.waitForFunction(() => document.querySelectorAll('#trace table.timeline tbody tr').length > 0, null, {
      timeout: CHECK_TIMEOUT,
      polling: 250,
    }),
    async () => `'${await page.locator('#trace-message').textContent()}'`,
  );
  const topics = await page.locator('#trace table.timeline tbody tr td:nth-child(4)').allTextContents();
  // 13 events of the flow and 1–7 OrderStatus documents (a latest-per-key topic).
  if (topics.length < 14 || topics[0] !== 'OrderReceived' || !topics.includes('NotificationDelivered')
      || !topics.includes('OrderStatus')) {
    throw new Error(`the timeline of ${key} shows ${topics}`);
  }
  step(`  ${topics.length} events, ${await page.locator('#trace p.total').textContent()}`);

  // The screenshot: the envelope of the letter the replay dead-lettered again, under load.
  const again = page.locator(`#dlq tr.letter[data-key="${poison}"]`).first();
  await again.waitFor({ state: 'visible', timeout: CHECK_TIMEOUT });
  await again.locator('td.reason').click();
  await envelope.waitFor({ state: 'visible', timeout: CHECK_TIMEOUT });
  const screenshot = env('SCREENSHOT');
  await page.screenshot({ path: screenshot, fullPage: true });
  step(`screenshot: ${screenshot}`);
  if (errors.length) throw new Error(`the page threw: ${errors.join('; ')}`);

  step('the token left the address bar; a tab without it is refused and says how to get in');
  if (page.url().includes('token=')) throw new Error(`the address still shows the token: ${page.url()}`);
  const stranger = await browser.newPage();
  await stranger.goto(env('CONSOLE_URL').replace(/#.*$/, ''));
  await within(
    'the sign-in note on a page without the token',
    stranger.locator('#auth-note').waitFor({ state: 'visible', timeout: CHECK_TIMEOUT }),
  );
  const plugins = await stranger.locator('#plugins tbody').textContent();
  if (plugins.includes('sha256')) throw new Error(`a page without the token shows plugins: ${plugins}`);
  await stranger.close();
} catch (error) {
  failed = true;
  console.error(`FAILED: ${error.message}`);
  if (page && process.env.SCREENSHOT) {
    const path = process.env.SCREENSHOT.replace(/\.png$/, '-failed.png');
    await page.screenshot({ path, fullPage: true }).catch(() => {});
    console.error(`the page as it was: ${path}`);
  }
} finally {
  await browser.close();
}
process.exit(failed ? 1 : 0);
