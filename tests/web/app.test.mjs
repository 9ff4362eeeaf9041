// The web app end to end, in the system's headless Chromium, against a running
// `sandcell serve` whose model is played by the replay server (scripts/test-web starts
// both; tests/web/conversation.json is what the model says).
//
//   SANDCELL_URL=http://127.0.0.1:PORT node app.test.mjs [MODE]
//
// MODE:
//   --units           the Markdown renderer and the event-stream parser, in the page (needs
//                     only the page, not the API).
//   --chat (default)  a new chat: upload a CSV by drag and drop, send a message, see the
//                     answer stream with its code, output, plot and a file to download;
//                     reload and find it all again; run a cell in the notebook view; the
//                     layout on a narrow window. Saves the conversation's id and how it
//                     looked to $SANDCELL_TEST_STATE, when set.
//   --live            (after --chat) a turn under way survives a reload and a broken
//                     connection, and shows in a second tab, where Stop ends it for both;
//                     a conversation shown again shows what the other tab did; a running
//                     notebook cell survives a reload.
//   --notebooks       a notebook saved as it is worked on: reloaded, renamed, exported,
//                     opened again from the exported file and run, deleted.
//   --after-restart   (after the server restarted on the same data directory) finds that
//                     conversation again, looking the same, and runs a cell in its session.
//   --no-model        (a server with no model configured) the banner says how to configure
//                     one; a notebook still works.
//
// Environment: SANDCELL_URL (required), SANDCELL_TEST_STATE, SANDCELL_TEST_ARTIFACTS (a
// directory for a screenshot of the page when a step fails), CHROMIUM (default
// /usr/bin/chromium).

import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const BASE_URL = process.env.SANDCELL_URL;
const STATE = process.env.SANDCELL_TEST_STATE;
const ARTIFACTS = process.env.SANDCELL_TEST_ARTIFACTS;
const MODE = process.argv[2] ?? '--chat';

const CSV = 'month,amount\n1,10\n2,20\n3,30\n';
const QUESTION = 'What is the total amount? Plot it.';
/** What the code in conversation.json writes, and the answer's words. */
const TOTALS = 'total\n60\n';
const ANSWER = 'The total is 60';

let step = 0;
let passed = 0;
let page;
/** Console errors a step causes on purpose (the browser logs a stream that was cut). */
const expectedErrors = [];

async function check(name, body) {
  step += 1;
  try {
    await body();
    passed += 1;
    console.log(`ok ${step} - ${name}`);
  } catch (error) {
    console.log(`not ok ${step} - ${name}`);
    if (ARTIFACTS && page) {
      const file = join(ARTIFACTS, `failed-step-${step}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      console.log(`# screenshot: ${file}`);
    }
    throw error;
  }
}

/** Console errors and uncaught exceptions: the page must have none. */
function watchForErrors(target) {
  const errors = [];
  target.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  target.on('pageerror', (error) => errors.push(`exception: ${error.message}`));
  return errors;
}

/** Drops a file on `selector` as a person dragging it from their desktop would. */
async function dropFile(selector, name, content, type) {
  await page.evaluate(
    ({ selector, name, content, type }) => {
      const target = document.querySelector(selector);
      const data = new DataTransfer();
      data.items.add(new File([content], name, { type }));
      for (const kind of ['dragenter', 'dragover', 'drop']) {
        target.dispatchEvent(new DragEvent(kind, { bubbles: true, cancelable: true, dataTransfer: data }));
      }
    },
    { selector, name, content, type },
  );
}

/** What a conversation shows, to compare a live one with the same one reloaded. */
function transcriptSignature() {
  return page.evaluate(() => {
    const messages = document.querySelector('.messages');
    return {
      text: messages.innerText.replace(/\s+/g, ' ').trim(),
      calls: [...messages.querySelectorAll('.tool-call')].map((call) => call.dataset.status),
      images: messages.querySelectorAll('.output-image img').length,
    };
  });
}

async function expectPlot() {
  const plot = page.locator('.messages .output-image img').first();
  await plot.waitFor();
  assert.ok(await plot.evaluate((img) => img.decode().then(() => img.naturalWidth > 0)), 'the plot is an image');
}

async function runCell(code, expected) {
  const editor = page.locator('.cell-editor').last();
  await editor.fill(code);
  await editor.press('Control+Enter');
  const cell = page.locator('.cell').last();
  await cell.locator('.output-stdout').getByText(expected).waitFor();
  assert.equal(await cell.getAttribute('data-status'), 'ok');
}

async function chat() {
  await check('the app opens with a model chosen', async () => {
    await open();
    await page.getByRole('button', { name: 'New chat' }).click();
    await page.getByRole('textbox', { name: 'Message' }).waitFor();
    assert.notEqual(await page.locator('#model').inputValue(), '', 'the default model is filled in');
    assert.ok(await page.locator('#banner').isHidden(), 'no "configure a model" banner');
  });

  await check('a CSV dropped on the chat is uploaded', async () => {
    await dropFile('.chat-view', 'data.csv', CSV, 'text/csv');
    await page.locator('.attachment[data-state="done"]').getByText('data.csv').waitFor();
    assert.match(location(), /#\/c\/.+/, 'the upload created the conversation');
  });

  await check('the answer streams in: text, code, output, plot', async () => {
    // Record what the transcript looks like at every change, to see it arrive in pieces.
    await page.evaluate(() => {
      const messages = document.querySelector('.messages');
      window.seen = { lengths: new Set(), statuses: new Set() };
      new MutationObserver(() => {
        window.seen.lengths.add(messages.textContent.length);
        for (const call of messages.querySelectorAll('.tool-call')) window.seen.statuses.add(call.dataset.status);
      }).observe(messages, { childList: true, subtree: true, characterData: true, attributes: true });
    });
    const message = page.getByRole('textbox', { name: 'Message' });
    await message.fill(QUESTION);
    await message.press('Enter');
    await page.locator('.message.user').getByText(QUESTION).waitFor();
    await page.getByRole('button', { name: 'Stop' }).waitFor();
    await page.locator('.tool-call[data-status="ok"]').waitFor();
    await page.locator('.message.assistant .markdown').getByText(ANSWER).waitFor();
    await page.getByRole('button', { name: 'Send' }).waitFor();
    const seen = await page.evaluate(() => ({ lengths: window.seen.lengths.size, statuses: [...window.seen.statuses] }));
    assert.ok(seen.lengths > 5, `the answer arrived in pieces (${seen.lengths} states)`);
    assert.ok(seen.statuses.includes('writing') || seen.statuses.includes('running'), `the code showed while it was written or ran: ${seen.statuses}`);
    const call = page.locator('.tool-call').first();
    assert.match(await call.locator('code').textContent(), /read_csv/);
    assert.match(await call.locator('.output-stdout').textContent(), /60/);
    await expectPlot();
  });

  await check('the file the code wrote downloads with its bytes', async () => {
    const link = page.locator('.output-files a.file-link', { hasText: 'totals.csv' });
    const fetched = await link.evaluate((a) => fetch(a.href).then((response) => response.text()));
    assert.equal(fetched, TOTALS);
    const [download] = await Promise.all([page.waitForEvent('download'), link.click()]);
    assert.equal(download.suggestedFilename(), 'totals.csv');
    assert.equal(await readFile(await download.path(), 'utf8'), TOTALS);
  });

  const live = await transcriptSignature();
  const conversationId = decodeURIComponent(location().match(/#\/c\/([^/]+)/)[1]);

  await check('the conversation is listed, and after a reload looks the same', async () => {
    await page.locator(`#conversation-list a[aria-current="page"]`).waitFor();
    await page.reload();
    await page.locator('.tool-call[data-status="ok"]').waitFor();
    await page.locator('.message.assistant .markdown').getByText(ANSWER).waitFor();
    await expectPlot();
    assert.deepEqual(await transcriptSignature(), live);
  });

  await check('a cell runs in the notebook view of the same session', async () => {
    await page.getByRole('link', { name: 'Notebook', exact: true }).click();
    await page.locator('.files-panel').getByText('data.csv').waitFor();
    await runCell('print(6*7)', '42');
  });

  await check('the layout works on a narrow window', async () => {
    await page.setViewportSize({ width: 390, height: 800 });
    await page.getByRole('link', { name: 'Chat' }).click();
    await page.getByRole('textbox', { name: 'Message' }).waitFor();
    assert.ok(await page.locator('#sidebar').isHidden(), 'the sidebar is folded away');
    await page.getByRole('button', { name: 'Open sidebar' }).click();
    await page.locator('#conversation-list a[aria-current="page"]').waitFor({ state: 'visible' });
    await page.keyboard.press('Escape');
    await page.locator('#sidebar').waitFor({ state: 'hidden' });
    const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(overflow <= 0, `nothing sticks out sideways (${overflow}px)`);
    await expectPlot();
  });

  if (STATE) await writeFile(STATE, JSON.stringify({ conversationId, live }));
}

/** A GET of the API from the page, as JSON. */
async function apiGet(path) {
  return page.evaluate((path) => fetch(path).then((response) => response.json()), path);
}

/**
 * A TCP relay to the server whose connections can be cut, as a network that drops out
 * does (the browser's offline switch leaves open streams alone).
 */
async function relay() {
  const target = new URL(BASE_URL);
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(target.port), target.hostname);
    for (const [from, to] of [[client, upstream], [upstream, client]]) {
      sockets.add(from);
      from.on('error', () => to.destroy());
      from.on('close', () => {
        sockets.delete(from);
        to.destroy();
      });
      from.pipe(to);
    }
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}/`,
    cut: () => sockets.forEach((socket) => socket.destroy()),
    close: () => server.close(),
  };
}

async function liveTurn() {
  const link = await relay();
  await check('a turn under way is shown again after a reload, and followed', async () => {
    await open(link.url);
    await page.getByRole('button', { name: 'New chat' }).click();
    const message = page.getByRole('textbox', { name: 'Message' });
    await message.fill('Take your time.');
    await message.press('Enter');
    await page.locator('.tool-call .output-stdout').getByText('started').waitFor();
    await page.waitForURL(/#\/c\/.+/);
    await page.reload();
    await page.locator('.message.user').getByText('Take your time.').waitFor();
    await page.locator('.tool-call[data-status="running"] .output-stdout').getByText('started').waitFor();
    assert.match(await page.locator('.tool-call code').first().textContent(), /time\.sleep/);
    await page.getByRole('button', { name: 'Stop' }).waitFor();
  });

  await check('a broken connection is mended: the turn is drawn again and followed', async () => {
    const conversation = /^\/api\/v1\/conversations\/[^/]+$/;
    const redraw = page.waitForRequest((request) => request.method() === 'GET' && conversation.test(new URL(request.url()).pathname));
    expectedErrors.push(/Failed to load resource: net::ERR_INCOMPLETE_CHUNKED_ENCODING/);
    link.cut();
    await redraw;
    await page.locator('.tool-call[data-status="running"] .output-stdout').getByText('started').waitFor();
    assert.equal(await page.locator('.message.user').getByText('Take your time.').count(), 1, 'drawn once, not twice');
    await page.getByRole('button', { name: 'Stop' }).waitFor();
  });

  await check('a second tab shows it too, and its Stop ends the turn in both', async () => {
    const second = await page.context().newPage();
    const errors = watchForErrors(second);
    await second.goto(page.url());
    await second.locator('.tool-call .output-stdout').getByText('started').waitFor();
    await second.getByRole('button', { name: 'Stop' }).click();
    for (const tab of [second, page]) {
      await tab.locator('.tool-call[data-status="interrupted"]').waitFor();
      await tab.locator('.note').getByText('Stopped.').waitFor();
      await tab.getByRole('button', { name: 'Send' }).waitFor();
    }
    assert.deepEqual(errors, []);
  });

  await check('a conversation shown again shows what another tab did meanwhile', async () => {
    const [second] = page.context().pages().filter((tab) => tab !== page);
    const message = second.getByRole('textbox', { name: 'Message' });
    await message.fill('And now?');
    await message.press('Enter');
    await second.locator('.message.assistant .markdown').getByText('from the other tab').waitFor();
    await second.getByRole('button', { name: 'Send' }).waitFor();
    // Back to the conversation in the first tab (from another view, as from the sidebar).
    const { hash } = new URL(page.url());
    await page.getByRole('button', { name: 'New chat' }).click();
    await page.locator(`#conversation-list a[href="${hash}"]`).click();
    await page.locator('.message.user').getByText('And now?').waitFor();
    await page.locator('.message.assistant .markdown').getByText('from the other tab').waitFor();
    await second.close();
  });

  link.close();

  await check('a running notebook cell is followed after a reload', async () => {
    await open();
    await page.getByRole('button', { name: 'New notebook' }).click();
    await page.waitForURL(/#\/n\/.+/);
    const editor = page.locator('.cell-editor').last();
    await editor.fill("import time\nprint('begun', flush=True)\ntime.sleep(3)\nprint('done')");
    await editor.press('Control+Enter');
    await page.locator('.cell .output-stdout').getByText('begun').waitFor();
    await page.waitForFunction(() => document.querySelector('.notebook-view')?.dataset.saved === 'true');
    await page.reload();
    const cell = page.locator('.cell').first();
    await cell.locator('.output-stdout').getByText('begun').waitFor();
    await cell.locator('.output-stdout').getByText('done').waitFor();
    await page.locator('.cell[data-status="ok"]').waitFor();
  });
}

async function notebooks() {
  await check('a notebook is saved as it is worked on and is there after a reload', async () => {
    await open();
    await page.getByRole('button', { name: 'New notebook' }).click();
    await page.waitForURL(/#\/n\/.+/);
    await runCell('x = 6 * 7\nprint(x)\nx', '42');
    await page.getByRole('button', { name: 'Text cell' }).click();
    await page.locator('.cell-editor').last().fill('# Notes\nThe answer.');
    await page.waitForFunction(() => document.querySelector('.notebook-view')?.dataset.saved === 'true');
    await page.reload();
    await page.locator('.cell .output-stdout').getByText('42').waitFor();
    assert.equal(await page.locator('.cell-editor').first().inputValue(), 'x = 6 * 7\nprint(x)\nx');
    assert.equal(await page.locator('.cell-editor').last().inputValue(), '# Notes\nThe answer.');
    assert.equal(await page.locator('.cell-prompt').first().textContent(), '[1]');
  });

  await check('it is listed, and renamed', async () => {
    page.once('dialog', (dialog) => dialog.accept('Answers'));
    await page.locator('#notebook-list').getByRole('button', { name: /^Rename/ }).first().click();
    await page.locator('#notebook-list a', { hasText: 'Answers' }).waitFor();
    await page.locator('#title', { hasText: 'Answers' }).waitFor();
  });

  let exported;
  await check('it exports as a Jupyter notebook', async () => {
    const [download] = await Promise.all([page.waitForEvent('download'), page.getByRole('button', { name: 'Export notebook' }).click()]);
    assert.equal(download.suggestedFilename(), 'Answers.ipynb');
    exported = await readFile(await download.path(), 'utf8');
    const notebook = JSON.parse(exported);
    assert.equal(notebook.nbformat, 4);
    assert.deepEqual(notebook.cells.map((cell) => cell.cell_type), ['code', 'markdown']);
    const outputs = notebook.cells[0].outputs;
    assert.deepEqual(outputs.map((output) => output.output_type), ['stream', 'execute_result']);
    assert.equal(outputs[1].execution_count, notebook.cells[0].execution_count);
  });

  await check('the exported file opens again as a notebook, and runs', async () => {
    const [chooser] = await Promise.all([page.waitForEvent('filechooser'), page.getByRole('button', { name: 'Open .ipynb' }).click()]);
    await chooser.setFiles({ name: 'copy.ipynb', mimeType: 'application/x-ipynb+json', buffer: Buffer.from(exported) });
    await page.locator('#title', { hasText: 'copy' }).waitFor();
    await page.locator('.cell .output-stdout').getByText('42').waitFor();
    assert.equal(await page.locator('.cell-editor').last().inputValue(), '# Notes\nThe answer.');
    await page.locator('.cell').first().getByRole('button', { name: 'Run cell' }).click();
    await page.locator('.cell[data-status="ok"]').first().waitFor();
    // Counting goes on from the counts the notebook was saved with.
    assert.equal(await page.locator('.cell-prompt').first().textContent(), '[2]');
  });

  await check('a notebook is deleted', async () => {
    const before = (await apiGet('/api/v1/notebooks')).data.length;
    page.once('dialog', (dialog) => dialog.accept());
    await page.locator('#notebook-list').getByRole('button', { name: 'Delete “copy”' }).click();
    await page.locator('#notebook-list a', { hasText: 'copy' }).waitFor({ state: 'detached' });
    assert.equal((await apiGet('/api/v1/notebooks')).data.length, before - 1);
  });
}

async function afterRestart() {
  const { conversationId, live } = JSON.parse(await readFile(STATE, 'utf8'));
  await check('the conversation is found again after a restart, looking the same', async () => {
    await open();
    await page.locator(`#conversation-list a[href="#/c/${encodeURIComponent(conversationId)}"]`).click();
    await page.locator('.tool-call[data-status="ok"]').waitFor();
    await expectPlot();
    assert.deepEqual(await transcriptSignature(), live);
  });
  await check('its session runs cells', async () => {
    await page.getByRole('link', { name: 'Notebook', exact: true }).click();
    await runCell('print(6*7)', '42');
  });
}

async function noModel() {
  await check('without a model, the banner says how to configure one', async () => {
    await open();
    const { hint } = await page.evaluate(() => fetch('/api/v1/models').then((response) => response.json()));
    await page.locator('#banner').getByText(hint).waitFor();
  });
  await check('a notebook still runs cells, with an uploaded file', async () => {
    await page.getByRole('button', { name: 'Open a notebook instead' }).click();
    await page.waitForURL(/#\/n\/.+/);
    const [chooser] = await Promise.all([page.waitForEvent('filechooser'), page.getByRole('button', { name: 'Upload files' }).click()]);
    await chooser.setFiles({ name: 'data.csv', mimeType: 'text/csv', buffer: Buffer.from(CSV) });
    await page.locator('.files-panel').getByText('data.csv').waitFor();
    await runCell("print(sum(int(row.split(',')[1]) for row in open('/mnt/data/data.csv').read().split()[1:]))", '60');
    await runCell('print(6*7)', '42');
  });
}

async function open(url = BASE_URL) {
  const response = await page.goto(url);
  assert.equal(response.status(), 200, `GET ${url} answered ${response.status()}: does the server serve the web app?`);
}

function location() {
  return page.url();
}

/** The page's Markdown renderer and event-stream parser, run in the page on their own. */
async function units() {
  await open();
  const markdown = (source) =>
    page.evaluate(async (source) => {
      const { renderMarkdown } = await import('/assets/markdown.js');
      const files = [];
      const links = {
        file: (path, label) => {
          files.push(path);
          const a = document.createElement('a');
          a.append(...label);
          return a;
        },
        image: (path) => {
          files.push(path);
          return document.createElement('img');
        },
      };
      const element = document.createElement('div');
      element.append(renderMarkdown(source, links));
      const count = (selector) => element.querySelectorAll(selector).length;
      return {
        html: element.innerHTML,
        text: element.textContent,
        files,
        links: [...element.querySelectorAll('a[href]')].map((a) => ({ href: a.getAttribute('href'), rel: a.rel, target: a.target })),
        counts: Object.fromEntries(['script', 'img', 'em', 'strong', 'del', 'code', 'pre', 'table', 'th', 'td', '.align-right', 'ul', 'ol', 'li ul', 'h2', 'blockquote', 'hr', 'br', '.tok-keyword', '.tok-string', '.tok-comment'].map((s) => [s, count(s)])),
      };
    }, source);

  await check('markdown: model text never becomes markup', async () => {
    const source = '<script>alert(1)</script> <img src=x onerror=alert(1)> <b>bold</b> &amp;';
    const result = await markdown(source);
    assert.equal(result.counts.script + result.counts.img, 0, result.html);
    assert.equal(result.text, source);
  });

  await check('markdown: links keep only safe targets', async () => {
    const result = await markdown('[a](javascript:alert(1)) [b](https://example.com/x_(y)) <https://example.com> ' + 'see https://example.com/z. [c](data:text/html,x) ![d](https://example.com/d.png) [e](sandbox:/mnt/data/out%20put.csv) ![f](/mnt/data/figure_1.png)');
    assert.deepEqual(result.links.map((link) => link.href), ['https://example.com/x_(y)', 'https://example.com', 'https://example.com/z', 'https://example.com/d.png']);
    assert.ok(result.links.every((link) => link.target === '_blank' && link.rel.includes('noopener')), JSON.stringify(result.links));
    assert.deepEqual(result.files, ['out put.csv', 'figure_1.png']);
    assert.equal(result.counts.img, 1, 'only the session file is an image');
  });

  await check('markdown: emphasis, code, and snake_case names', async () => {
    const result = await markdown('a snake_case_name, *em*, **strong**, ***both***, ~~gone~~, `x * y`, 2 * 3 * 4');
    assert.ok(result.text.includes('snake_case_name'), result.text);
    assert.ok(result.text.includes('2 * 3 * 4'), result.text);
    assert.deepEqual([result.counts.em, result.counts.strong, result.counts.del, result.counts.code], [2, 2, 1, 1]);
  });

  await check('markdown: blocks', async () => {
    const result = await markdown(
      '## Title\n\nIntro line\n| a | b |\n|---|--:|\n| 1 | 2 |\n\n- one\n  - nested\n- two\n\n1. first\n2. second\n\n> quoted\n\n---\nhard  \nbreak\n\n```python\nimport os  # why\nprint("x")\n```\n\n```python\nstill streaming',
    );
    const { counts } = result;
    assert.deepEqual([counts.h2, counts.table, counts.th, counts.td, counts['.align-right']], [1, 1, 2, 2, 2], result.html);
    assert.deepEqual([counts.ul, counts['li ul'], counts.ol, counts.blockquote, counts.hr, counts.br], [2, 1, 1, 1, 1, 1], result.html);
    assert.equal(counts.pre, 2, 'an unclosed fence still shows as code');
    assert.ok(counts['.tok-keyword'] >= 1 && counts['.tok-string'] === 1 && counts['.tok-comment'] === 1, result.html);
  });

  await check('event streams: split lines, CRLF, comments, multi-line data', async () => {
    const events = await page.evaluate(async () => {
      const { SseParser } = await import('/assets/api.js');
      const parser = new SseParser();
      return [': keep-alive\r', '\nevent: text_delta\r', '\ndata: {"text":', '"a"}\r\n\r\n', 'data: one\ndata: two\n', '\nevent: end\ndata: {}\n\n'].flatMap((piece) => parser.push(piece));
    });
    assert.deepEqual(events, [
      { event: 'text_delta', data: '{"text":"a"}' },
      { event: 'message', data: 'one\ntwo' },
      { event: 'end', data: '{}' },
    ]);
  });
}

async function main() {
  assert.ok(BASE_URL, 'SANDCELL_URL must say where sandcell serve listens');
  const modes = { '--units': units, '--chat': chat, '--live': liveTurn, '--notebooks': notebooks, '--after-restart': afterRestart, '--no-model': noModel };
  assert.ok(modes[MODE], `unknown mode ${MODE}; one of ${Object.keys(modes).join(', ')}`);
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
  try {
    const context = await browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
    context.setDefaultTimeout(30_000);
    page = await context.newPage();
    const errors = watchForErrors(page);
    await modes[MODE]();
    await check('no console errors', () => assert.deepEqual(errors.filter((error) => !expectedErrors.some((expected) => expected.test(error))), []));
    console.log(`${passed} passed, 0 failed`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  console.error(error);
  console.log(`${passed} passed, 1 failed`);
  process.exit(1);
});
