// browser.mjs: the doctor's page in a real headless Chromium (Debian's /usr/bin/chromium driven
// by playwright-core), through nginx and a real `pneumo serve`. Run by tests/browser.sh:
//   node tests/browser.mjs URL TOKEN IMAGE SCREENSHOT_DIR
// Prints one `ok`/`FAIL` line per check and exits 1 if any failed.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { chromium } from 'playwright-core';

const [url, token, image, shots] = process.argv.slice(2);
const origin = new URL(url).origin;
let fails = 0;
const ok = (cond, msg) => {
  console.log(`${cond ? 'ok  ' : 'FAIL'} ${msg}`);
  if (!cond) fails++;
  return cond;
};
const sha = createHash('sha256').update(readFileSync(image)).digest('hex');

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox'],
});
let page;
const problems = [];
try {
  // The stack's certificate comes from its own local CA, which this browser does not know.
  const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
  page = await context.newPage();
  const outside = [];
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(origin + '/') && !u.startsWith('blob:') && !u.startsWith('data:')) outside.push(u);
  });
  page.on('console', (m) => { if (m.type() === 'error') problems.push(m.text()); });
  page.on('pageerror', (e) => problems.push(e.message));
  const focused = () => page.evaluate(() => document.activeElement?.id || document.activeElement?.className || '');

  await page.goto(url, { waitUntil: 'networkidle' });
  ok(await page.locator('.notice').isVisible() &&
     /not a diagnosis/i.test(await page.locator('.notice').innerText()), 'decision-support notice visible');
  ok(await page.locator('#token').isVisible(), 'sign-in form shown');
  ok((await focused()) === 'token', 'token field has the focus');

  // A wrong token is refused with a readable message, by keyboard only.
  await page.keyboard.type('pn_wrong');
  await page.keyboard.press('Enter');
  await page.locator('#signin-error').filter({ hasText: /not accepted/ }).waitFor({ timeout: 10000 });
  ok(true, 'wrong token refused (401) with a message');
  await page.screenshot({ path: join(shots, 'signin.png') });

  await page.fill('#token', token);
  await page.keyboard.press('Tab');
  ok((await focused()) === 'signin-button', 'Tab reaches the sign-in button');
  await page.keyboard.press('Enter');
  await page.locator('#workspace').waitFor({ state: 'visible', timeout: 10000 });
  ok(await page.evaluate(() => !!sessionStorage.getItem('pneumo.token')), 'token kept in sessionStorage');
  ok((await focused()) === 'files', 'file picker has the focus after sign-in');

  // Every main control is reachable with Tab.
  const reached = new Set();
  await page.locator('body').focus();
  for (let i = 0; i < 12; i++) {
    await page.keyboard.press('Tab');
    reached.add(await focused());
  }
  for (const id of ['signout', 'files', 'refresh']) ok(reached.has(id), `Tab reaches #${id}`);
  await page.focus('#files');
  ok(await page.evaluate(() => getComputedStyle(document.querySelector('.drop')).outlineStyle !== 'none'),
     'the focused file picker shows a focus ring');

  // Upload one real X-ray and a broken file.
  await page.setInputFiles('#files', [
    { name: basename(image), mimeType: 'image/jpeg', buffer: readFileSync(image) },
    { name: 'broken.png', mimeType: 'image/png', buffer: Buffer.from('this is not a PNG image') },
    { name: 'truncated.jpeg', mimeType: 'image/jpeg', buffer: readFileSync(image).subarray(0, 3000) },
  ]);
  const good = page.locator('.card', { hasText: basename(image) });
  await good.locator('.label').waitFor({ state: 'visible', timeout: 60000 });
  const label = await good.locator('.label').innerText();
  const raw = await good.locator('.raw').innerText();
  ok((label === 'Pneumonia suspected' && raw === 'PNEUMONIA') || (label === 'No pneumonia detected' && raw === 'NORMAL'),
     `result in words: "${label}" (label ${raw})`);
  const prob = await good.locator('.prob').innerText();
  ok(/Probability of pneumonia ([<>]\s)?\d+\.\d\s%, (above|below|at) the decision threshold of \d+\.\d\s%/.test(prob),
     `probability: "${prob}"`);
  const width = await good.locator('.fill').evaluate((e) => e.getBoundingClientRect().width);
  ok(width >= 0 && Number.isFinite(width), `probability bar drawn (${width.toFixed(0)} px)`);
  ok((await good.locator('.model').innerText()).length > 0, 'model shown');
  ok(/computed now|from cache/.test(await good.locator('.cached').innerText()), 'cached or not shown');
  ok(await page.locator('#results').getAttribute('aria-live') === 'polite', 'results are an aria-live region');

  for (const [name, want] of [['broken.png', /not a JPEG or PNG image/], ['truncated.jpeg', /could not be read/]]) {
    const card = page.locator('.card', { hasText: name });
    await card.locator('.status.error').waitFor({ timeout: 30000 });
    const text = await card.locator('.status').innerText();
    ok(want.test(text), `${name}: "${text}"`);
  }

  // The heat map toggle, by keyboard: Tab-reachable button, Space presses it.
  const toggle = good.locator('.toggle');
  await toggle.focus();
  await page.keyboard.press('Space');
  const heat = good.locator('.heatmap');
  await heat.waitFor({ state: 'visible', timeout: 30000 });
  const natural = await heat.evaluate((img) => img.naturalWidth);
  ok(natural > 0, `heat map rendered (naturalWidth ${natural})`);
  ok(/^blob:/.test(await heat.getAttribute('src')), 'heat map shown through a blob: URL');
  ok(await toggle.getAttribute('aria-pressed') === 'true', 'toggle says pressed');

  // Drag and drop: the same X-ray dropped on the zone is answered from the cache.
  const drop = await page.evaluateHandle((b64) => {
    const dt = new DataTransfer();
    const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    dt.items.add(new File([bytes], 'dropped.jpeg', { type: 'image/jpeg' }));
    return dt;
  }, readFileSync(image).toString('base64'));
  await page.dispatchEvent('#drop', 'drop', { dataTransfer: drop });
  const dropped = page.locator('.card', { hasText: 'dropped.jpeg' });
  await dropped.locator('.label').waitFor({ state: 'visible', timeout: 60000 });
  ok(/from cache/.test(await dropped.locator('.cached').innerText()), 'dropped file analysed, answered from the cache');

  // The history table gets the new row.
  await page.locator(`#history td[title="${sha}"]`).first().waitFor({ timeout: 10000 });
  ok(true, 'history table has the uploaded image');

  await page.evaluate(() => window.scrollTo(0, 0)); // the sticky notice at the top of the shot
  await page.screenshot({ path: join(shots, 'page.png'), fullPage: true });
  await page.setViewportSize({ width: 768, height: 1024 });
  ok(await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth),
     'no horizontal scrolling at tablet width (768 px)');
  await page.evaluate(() => window.scrollTo(0, 0));
  await page.screenshot({ path: join(shots, 'page-tablet.png'), fullPage: true });

  // A token the server no longer accepts sends the doctor back to sign in, saying why.
  await page.evaluate(() => sessionStorage.setItem('pneumo.token', 'pn_revoked'));
  await page.reload();
  await page.locator('#signin-error').filter({ hasText: /no longer valid/ }).waitFor({ timeout: 10000 });
  ok(await page.locator('#signin').isVisible(), 'a refused session token returns to sign-in');
  await page.fill('#token', token);
  await page.press('#token', 'Enter');
  await page.locator('#workspace').waitFor({ state: 'visible', timeout: 10000 });

  await page.click('#signout');
  await page.locator('#signin').waitFor({ state: 'visible' });
  ok(await page.evaluate(() => !sessionStorage.getItem('pneumo.token')), 'sign out forgets the token');

  ok(outside.length === 0, `no request left ${origin}${outside.length ? ': ' + outside.join(' ') : ''}`);
  // The broken upload's 400 is logged by Chromium as a failed resource; anything else (a CSP
  // violation, a script error) is a failure.
  const unexpected = problems.filter((p) => !/status of (400|401|415)/.test(p));
  ok(unexpected.length === 0, `no console errors or CSP violations${unexpected.length ? ': ' + unexpected.join(' | ') : ''}`);
} catch (err) {
  ok(false, `browser run: ${err.message.split('\n')[0]}`);
  if (problems.length) console.log(`console: ${problems.join(' | ')}`);
  await page.screenshot({ path: join(shots, 'failure.png'), fullPage: true }).catch(() => {});
  console.log(`screenshot of the failure: ${join(shots, 'failure.png')}`);
} finally {
  await browser.close();
}
process.exit(fails ? 1 : 0);
