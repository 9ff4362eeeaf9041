// The web app end to end, in the system's headless Chromium, against a running
// `sandcell serve` whose model is played by the replay server (scripts/test-web starts
// both; tests/web/conversation.json is what the model says).
//
//   SANDCELL_URL=http://127.0.0.1:PORT node app.test.mjs [MODE]
//
// MODE:
//   --units           the Markdown renderer (with a sample of the CommonMark spec's examples,
//                     commonmark/spec-sample.json) and the event-stream parser, in the page
//                     (needs only the page, not the API).
//   --chat (default)  a new chat (the config file's providers offered in the model picker):
//                     upload a CSV by drag and drop (a chip with its size; another one
//                     removed before sending), send a message, see the answer stream with
//                     its code, output, plot (enlarged) and a file to download (its first
//                     rows previewed);
//                     reload and find it all again; run a cell in the notebook view; the
//                     layout on a phone (375 px wide). Saves the conversation's id and how it
//                     looked to $SANDCELL_TEST_STATE, when set.
//   --live            (after --chat) a turn under way survives a reload and a broken
//                     connection, and shows in a second tab, where Stop ends it for both;
//                     a conversation shown again shows what the other tab did; a running
//                     notebook cell survives a reload.
//   --notebooks       a notebook saved as it is worked on: reloaded, renamed, exported,
//                     opened again from the exported file and run, deleted; the model
//                     asked about a notebook sees its variables, and the notebook counts
//                     its cells as the kernel does (In [N] as the tracebacks say); two
//                     tabs on one notebook, where the stale one shows what the other saved.
//   --after-restart   (after the server restarted on the same data directory) finds that
//                     conversation again, looking the same, and runs a cell in its session.
//   --screenshot      (after --chat) the conversation of --chat as the README shows it,
//                     written to $SANDCELL_SCREENSHOT.
//   --no-model        (a server with no model configured) the banner says how to configure
//                     one; a notebook still works.
//   --notebook        the notebook's editor: highlighting, Shift+Enter, completion from the
//                     kernel (after a dot, a DataFrame's columns, Ctrl+Space), command mode
//                     (A, B, DD, M, Y), a Markdown cell that renders and whose raw HTML does
//                     nothing, a running cell's time and its Stop button, a plot's title as
//                     its alt text and download name.
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
    // A CSV's preview arrives on its own time; the rest is compared.
    const previews = [...messages.querySelectorAll('.csv-preview')];
    previews.forEach((preview) => (preview.hidden = true));
    const text = messages.innerText.replace(/\s+/g, ' ').trim();
    previews.forEach((preview) => (preview.hidden = false));
    return {
      text,
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

/** The text in a cell's editor, line by line. */
async function cellSource(cell) {
  return (await cell.locator('.cm-line').allTextContents()).join('\n');
}

/** The Markdown cell of the saved-notebook checks, shown rendered as it was saved. */
async function expectNotes(cell) {
  await cell.locator('.cell-rendered h1').getByText('Notes').waitFor();
  assert.equal(await cell.locator('.cell-rendered p').textContent(), 'The answer.');
}

async function runCell(code, expected) {
  const editor = page.locator('.cell-editor .cm-content').last();
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
    // scripts/test-web's config file has a provider named local-vllm.
    await page.locator('#model-suggestions option[value="local-vllm:"]').waitFor({ state: 'attached' });
  });

  await check('a CSV dropped on the chat is uploaded, shown as a chip with its size', async () => {
    await dropFile('.chat-view', 'data.csv', CSV, 'text/csv');
    const chip = page.locator('.attachment[data-state="done"]', { hasText: 'data.csv' });
    await chip.waitFor();
    assert.equal(await chip.locator('.attachment-state').textContent(), `${CSV.length} B`);
    assert.match(location(), /#\/c\/.+/, 'the upload created the conversation');
  });

  await check('an attached file is removed before sending: off the message and out of the session', async () => {
    await dropFile('.chat-view', 'wrong.csv', 'a\n1\n', 'text/csv');
    await page.locator('.attachment[data-state="done"]', { hasText: 'wrong.csv' }).waitFor();
    await page.getByRole('button', { name: 'Remove wrong.csv' }).click();
    await page.locator('.attachment', { hasText: 'wrong.csv' }).waitFor({ state: 'detached' });
    const conversationId = decodeURIComponent(location().match(/#\/c\/([^/]+)/)[1]);
    const { session_id: session } = await apiGet(`/api/v1/conversations/${encodeURIComponent(conversationId)}`);
    const files = (await apiGet(`/api/v1/sessions/${encodeURIComponent(session)}/files`)).data.map((file) => file.path);
    assert.deepEqual(files, ['data.csv']);
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
    await page.locator('.tool-call[data-status="ok"]').nth(1).waitFor();
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

  await check('the CSV the code wrote is previewed by its first rows; the plot enlarges and downloads', async () => {
    const preview = page.locator('.message.assistant .turn-files .csv-preview');
    await preview.locator('td').getByText('60').waitFor();
    assert.equal(await preview.locator('th').textContent(), 'total');
    const plot = page.locator('.messages .output-image').first();
    assert.equal(await plot.locator('.figure-download').getAttribute('download'), 'figure.png', 'an untitled figure downloads as figure.png');
    await plot.locator('img').click();
    const enlarged = page.locator('dialog.image-dialog[open] img');
    await enlarged.waitFor();
    assert.ok(await enlarged.evaluate((img) => img.decode().then(() => img.naturalWidth > 0)), 'the enlarged plot is an image');
    await page.keyboard.press('Escape');
    await page.locator('dialog.image-dialog').waitFor({ state: 'detached' });
  });

  await check('the files the code wrote are listed once for the turn, after what it said', async () => {
    const turn = page.locator('.message.assistant').first();
    const links = turn.locator('.output-files a.file-link');
    const names = (await links.locator('.file-name').allTextContents()).map((path) => path.split('/').at(-1));
    assert.deepEqual(names, ['totals.csv', 'note.txt'], 'each file once, though two calls wrote totals.csv');
    assert.equal(await turn.locator('.tool-call .output-files').count(), 0, 'no call lists files of its own');
    assert.ok(await turn.evaluate((element) => element.lastElementChild.classList.contains('turn-files')), 'the list comes last');
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
    await page.locator('.tool-call[data-status="ok"]').first().waitFor();
    await page.locator('.message.assistant .markdown').getByText(ANSWER).waitFor();
    await expectPlot();
    assert.deepEqual(await transcriptSignature(), live);
  });

  await check('a cell runs in the notebook view of the same session, and is kept', async () => {
    await page.getByRole('link', { name: 'Notebook', exact: true }).click();
    await page.waitForURL(/#\/n\/.+/);
    await page.locator('.files-panel').getByText('data.csv').waitFor();
    await runCell('print(6*7)', '42');
    await page.locator('.notebook-view[data-saved="true"]').waitFor();
    await page.locator('#notebook-list a[aria-current="page"]').getByText('· Notebook').waitFor();
    await page.reload();
    await page.locator('.cell .output-stdout').getByText('42').waitFor();
    assert.match(await page.locator('.cell-editor .cm-content').first().textContent(), /print\(6\*7\)/);
    await page.getByRole('link', { name: 'Chat', exact: true }).click();
    await page.locator('.message.assistant .markdown').getByText(ANSWER).waitFor();
    await page.getByRole('link', { name: 'Notebook', exact: true }).click();
    await page.locator('.cell .output-stdout').getByText('42').waitFor();
    assert.equal(await page.locator('.cell').count(), 1, 'the same notebook again, not a new one');
  });

  await check('the layout works on a phone (375 px wide)', async () => {
    await page.setViewportSize({ width: 375, height: 740 });
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
    await page.getByRole('link', { name: 'Notebook', exact: true }).click();
    await page.locator('.cell').first().waitFor();
    const notebookOverflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
    assert.ok(notebookOverflow <= 0, `the notebook does not stick out sideways either (${notebookOverflow}px)`);
    await page.getByRole('link', { name: 'Chat' }).click();
    await page.setViewportSize({ width: 1280, height: 800 });
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
    const editor = page.locator('.cell-editor .cm-content').last();
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
    await page.locator('.cell-editor .cm-content').last().fill('# Notes\nThe answer.');
    await page.waitForFunction(() => document.querySelector('.notebook-view')?.dataset.saved === 'true');
    await page.reload();
    await page.locator('.cell .output-stdout').getByText('42').waitFor();
    assert.equal(await cellSource(page.locator('.cell').first()), 'x = 6 * 7\nprint(x)\nx');
    await expectNotes(page.locator('.cell').last());
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
    await expectNotes(page.locator('.cell').last());
    await page.locator('.cell').first().getByRole('button', { name: 'Run cell' }).click();
    await page.locator('.cell[data-status="ok"]').first().waitFor();
    // The kernel's count, as Jupyter shows it: the first cell run in this new session.
    assert.equal(await page.locator('.cell-prompt').first().textContent(), '[1]');
  });

  await check('a notebook is deleted', async () => {
    const before = (await apiGet('/api/v1/notebooks')).data.length;
    page.once('dialog', (dialog) => dialog.accept());
    await page.locator('#notebook-list').getByRole('button', { name: 'Delete “copy”' }).click();
    await page.locator('#notebook-list a', { hasText: 'copy' }).waitFor({ state: 'detached' });
    assert.equal((await apiGet('/api/v1/notebooks')).data.length, before - 1);
  });

  await check('the model is asked about a notebook and sees its variables; the two share the session', async () => {
    await page.locator('#notebook-list a', { hasText: 'Answers' }).click();
    await page.locator('.cell .output-stdout').getByText('42').waitFor();
    const notebookUrl = page.url();
    await page.getByRole('button', { name: 'Ask the model about this notebook' }).click();
    await page.waitForURL(/#\/c\/.+/);
    const message = page.getByRole('textbox', { name: 'Message' });
    await message.fill('What is x in my notebook?');
    await message.press('Enter');
    await page.locator('.tool-call .output-stdout').getByText('42').waitFor();
    await page.locator('.message.assistant .markdown').getByText('x is 42').waitFor();
    await page.getByRole('button', { name: 'Send' }).waitFor();
    // The conversation's notebook is the saved notebook itself.
    await page.getByRole('link', { name: 'Notebook', exact: true }).click();
    assert.equal(page.url(), notebookUrl);
    await page.getByRole('button', { name: 'Code cell' }).click();
    await runCell('print(x + 1)', '43');
    // Its In [N] is the kernel's: the notebook's cell was 1, the model's 2, this one 3,
    // as its traceback says.
    assert.equal(await page.locator('.cell-prompt').last().textContent(), '[3]');
    await page.getByRole('button', { name: 'Code cell' }).click();
    const editor = page.locator('.cell-editor .cm-content').last();
    await editor.fill('1 / 0');
    await editor.press('Control+Enter');
    const failed = page.locator('.cell[data-status="error"]').last();
    await failed.locator('.output-error').getByText('In[4]').first().waitFor();
    assert.equal(await failed.locator('.cell-prompt').textContent(), '[4]');
    await page.waitForFunction(() => document.querySelector('.notebook-view')?.dataset.saved === 'true');
  });

  await check('two tabs on one notebook: a stale save is refused, and the page shows what the other tab saved', async () => {
    const second = await page.context().newPage();
    const errors = watchForErrors(second);
    await second.goto(page.url());
    await second.locator('.cell .output-stdout').getByText('43').waitFor();
    await second.getByRole('button', { name: 'Code cell' }).click();
    await second.locator('.cell-editor .cm-content').last().fill('# from the second tab');
    await second.waitForFunction(() => document.querySelector('.notebook-view')?.dataset.saved === 'true');
    const cells = await second.locator('.cell').count();
    expectedErrors.push(/status of 409 \(Conflict\)/);
    // The first tab still has the notebook as it read it: its next save (a new cell) is
    // refused, and it shows what the second tab saved instead.
    await page.getByRole('button', { name: 'Code cell' }).click();
    await page.locator('.toast').getByText('changed in another tab').waitFor();
    await page.locator('.cell .cm-line').getByText('# from the second tab').waitFor();
    assert.equal(await page.locator('.cell').count(), cells);
    const id = decodeURIComponent(new URL(page.url()).hash.split('/')[2]);
    const saved = await apiGet(`/api/v1/notebooks/${encodeURIComponent(id)}`);
    assert.equal(saved.cells.length, cells);
    assert.equal(saved.cells.at(-1).source, '# from the second tab');
    await second.close();
    assert.deepEqual(errors, []);
  });
}

async function afterRestart() {
  const { conversationId, live } = JSON.parse(await readFile(STATE, 'utf8'));
  await check('the conversation is found again after a restart, looking the same', async () => {
    await open();
    await page.locator(`#conversation-list a[href="#/c/${encodeURIComponent(conversationId)}"]`).click();
    await page.locator('.tool-call[data-status="ok"]').first().waitFor();
    await expectPlot();
    assert.deepEqual(await transcriptSignature(), live);
  });
  await check('its session runs cells', async () => {
    await page.getByRole('link', { name: 'Notebook', exact: true }).click();
    await runCell('print(6*7)', '42');
  });
}

async function screenshot() {
  const { conversationId } = JSON.parse(await readFile(STATE, 'utf8'));
  const path = process.env.SANDCELL_SCREENSHOT;
  assert.ok(path, 'SANDCELL_SCREENSHOT must say where the screenshot goes');
  await check('a screenshot of a conversation with its code, output and plot', async () => {
    await open(`${BASE_URL}#/c/${encodeURIComponent(conversationId)}`);
    await page.locator('.tool-call[data-status="ok"]').first().waitFor();
    await page.locator('.message.assistant .markdown').getByText(ANSWER).waitFor();
    await expectPlot();
    await page.screenshot({ path });
    const png = await readFile(path);
    assert.equal(png.subarray(1, 4).toString(), 'PNG', 'a PNG was written');
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
        counts: Object.fromEntries(['script', 'img', 'em', 'strong', 's', 'code', 'pre', 'table', 'th', 'td', '.align-right', 'ul', 'ol', 'li ul', 'h2', 'blockquote', 'hr', 'br', '.tok-keyword', '.tok-string', '.tok-comment'].map((s) => [s, count(s)])),
      };
    }, source);

  await check('markdown: model text never becomes markup', async () => {
    const source = '<script>alert(1)</script> <img src=x onerror=alert(1)> <b>bold</b> &amp;';
    const result = await markdown(source);
    assert.equal(result.counts.script + result.counts.img, 0, result.html);
    // Raw HTML stays text; an entity is a character (CommonMark).
    assert.equal(result.text.trim(), source.replace('&amp;', '&'));
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
    assert.deepEqual([result.counts.em, result.counts.strong, result.counts.s, result.counts.code], [2, 2, 1, 1]);
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

  await check('markdown: a sample of the CommonMark spec examples renders as the spec says', async () => {
    const { examples } = JSON.parse(await readFile(new URL('./commonmark/spec-sample.json', import.meta.url), 'utf8'));
    const failures = await page.evaluate(async (examples) => {
      const { markdownToHtml } = await import('/assets/markdown.js');
      // As the spec's own test runner does: compare the parsed HTML, not its spelling
      // (`<hr />` and `<hr>`), and ignore whitespace between tags.
      const normal = (html) => {
        const template = document.createElement('template');
        template.innerHTML = html;
        return template.innerHTML.replace(/>\s+</g, '><').trim();
      };
      return examples.filter((example) => normal(markdownToHtml(example.markdown)) !== normal(example.html)).map((example) => `example ${example.example} (${example.section}): ${JSON.stringify(example.markdown)} gave ${JSON.stringify(markdownToHtml(example.markdown))}`);
    }, examples);
    assert.ok(examples.length >= 100, `${examples.length} examples`);
    assert.deepEqual(failures, []);
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

/** The notebook's editor, driven by the keyboard as a person uses it. */
async function notebook() {
  await open();
  await page.getByRole('button', { name: 'New notebook' }).click();
  const cells = page.locator('.cell');
  const cell = (index) => cells.nth(index);
  const focusedCell = () => page.evaluate(() => [...document.querySelectorAll('.cell')].indexOf(document.activeElement?.closest('.cell')));

  await check('notebook: a cell highlights Python as it is typed', async () => {
    await cell(0).locator('.cm-content').click();
    await page.keyboard.type('import os, pandas\ndf = pandas.DataFrame({"revenue": [1]})\nlabel = "total"  # why\nprint(len(label))');
    await cell(0).locator('.tok-keyword').first().waitFor();
    const classes = await cell(0).locator('.cm-content span').evaluateAll((spans) => spans.map((span) => span.className).join(' '));
    for (const kind of ['tok-keyword', 'tok-string', 'tok-comment']) assert.ok(classes.includes(kind), `${kind} in ${classes}`);
  });

  await check('notebook: Shift+Enter runs the cell and moves on to a new one', async () => {
    await page.keyboard.press('Shift+Enter');
    await cell(0).locator('.output-stdout').getByText('5').waitFor();
    assert.equal(await cell(0).getAttribute('data-status'), 'ok');
    assert.equal(await cell(0).locator('.cell-prompt').textContent(), '[1]');
    assert.equal(await cells.count(), 2);
    assert.equal(await focusedCell(), 1, 'the new cell has the focus');
  });

  await check('notebook: completion after a dot offers the kernel\'s names', async () => {
    await page.keyboard.type('os.pa');
    const list = page.locator('.cm-tooltip-autocomplete');
    await list.getByText('path', { exact: true }).waitFor();
    await page.waitForTimeout(150); // as below: a list just opened takes no key
    await page.keyboard.press('Tab'); // takes the selected match
    await list.waitFor({ state: 'detached' });
    assert.match(await cell(1).locator('.cm-content').textContent(), /^os\.pa\w+$/);
  });

  await check('notebook: completion offers a DataFrame\'s columns, and names on Ctrl+Space', async () => {
    const list = page.locator('.cm-tooltip-autocomplete');
    await page.keyboard.press('Enter');
    await page.keyboard.type('df.rev');
    await list.getByText('revenue', { exact: true }).waitFor();
    await page.keyboard.press('Escape'); // closes the list, stays in the editor
    await list.waitFor({ state: 'detached' });
    assert.equal(await focusedCell(), 1);
    await page.keyboard.press('Enter');
    await page.keyboard.type('lab');
    await page.keyboard.press('Control+Space');
    await list.getByText('label', { exact: true }).waitFor();
    // CodeMirror ignores Enter for 75 ms after a list opens, so as not to take a match by accident.
    await page.waitForTimeout(150);
    await page.keyboard.press('Enter');
    assert.match(await cell(1).locator('.cm-line').last().textContent(), /^label$/);
  });

  await check('notebook: the arrows go on to the cell before or after at the first or last line', async () => {
    for (const _ of [1, 2]) await page.keyboard.press('ArrowUp'); // up the cell's three lines
    assert.equal(await focusedCell(), 1);
    await page.keyboard.press('ArrowUp');
    assert.equal(await focusedCell(), 0);
    await page.keyboard.press('ArrowDown'); // the cursor stayed on the last line of the first cell
    assert.equal(await focusedCell(), 1);
  });

  await check('notebook: Escape, then A, B and DD add and delete cells', async () => {
    await page.keyboard.press('Escape');
    assert.equal(await focusedCell(), 1, 'command mode keeps the cell selected');
    await page.keyboard.press('a');
    assert.equal(await cells.count(), 3);
    assert.equal(await focusedCell(), 1, 'A inserts above and selects the new cell');
    await page.keyboard.press('b');
    assert.equal(await cells.count(), 4);
    assert.equal(await focusedCell(), 2, 'B inserts below');
    await page.keyboard.press('d');
    await page.keyboard.press('d');
    assert.equal(await cells.count(), 3);
    assert.equal(await focusedCell(), 2, 'the cell after the deleted one is selected');
    await page.keyboard.press('k'); // up, to the cell A made
    await page.keyboard.press('d');
    await page.keyboard.press('d');
    assert.equal(await cells.count(), 2);
    assert.match(await cell(1).locator('.cm-content').textContent(), /^os\.pa/, 'the code cell is still there');
  });

  await check('notebook: a Markdown cell renders, and raw HTML in it does nothing', async () => {
    await page.evaluate(() => delete window.pwned);
    await page.getByRole('button', { name: 'Code cell' }).click();
    await page.keyboard.press('Escape');
    await page.keyboard.press('m');
    const markdownCell = cell(2);
    assert.equal(await markdownCell.getAttribute('data-type'), 'markdown');
    await page.keyboard.press('y');
    assert.equal(await markdownCell.getAttribute('data-type'), 'code', 'Y makes it code again');
    await page.keyboard.press('m');
    assert.equal(await markdownCell.getAttribute('data-type'), 'markdown');
    await page.keyboard.press('Enter');
    await page.keyboard.type('# Notes\n\n<img src=x onerror="window.pwned=1"> [click](javascript:window.pwned=2) **bold**');
    await page.keyboard.press('Shift+Enter');
    const rendered = markdownCell.locator('.cell-rendered');
    await rendered.locator('h1').getByText('Notes').waitFor();
    assert.equal(await rendered.locator('strong').textContent(), 'bold');
    assert.equal(await rendered.locator('img').count(), 0);
    assert.equal(await rendered.locator('a').count(), 0, 'a javascript: link is no link');
    assert.ok((await rendered.textContent()).includes('<img src=x onerror="window.pwned=1">'), 'the HTML shows as text');
    assert.equal(await page.evaluate(() => window.pwned), undefined);
  });

  await check('notebook: a running cell shows its time, and its Stop button interrupts it', async () => {
    await page.getByRole('button', { name: 'Code cell' }).click();
    await page.keyboard.type('import time\ntime.sleep(60)');
    await page.keyboard.press('Control+Enter');
    const running = cells.last();
    await running.locator('.cell-status').getByText(/Running… [\d.]+ (ms|s)/).waitFor();
    await running.getByRole('button', { name: 'Stop cell' }).click();
    await running.locator('.output-error').getByText('KeyboardInterrupt').first().waitFor();
    assert.equal(await running.getAttribute('data-status'), 'interrupted');
    assert.ok(await running.locator('.output-error .tb-ename').count(), 'the traceback is coloured');
  });

  await check("notebook: a plot's alt text is its title, and it downloads as a PNG named by it", async () => {
    await page.getByRole('button', { name: 'Code cell' }).click();
    await page.keyboard.type("import matplotlib.pyplot as plt\nplt.plot([1, 3, 2])\nplt.title('Monthly totals')\nplt.show()");
    await page.keyboard.press('Control+Enter');
    const figure = cells.last().locator('.output-image');
    await figure.locator('img').waitFor();
    assert.equal(await figure.locator('img').getAttribute('alt'), 'Figure: Monthly totals');
    const [download] = await Promise.all([page.waitForEvent('download'), figure.getByText('Download PNG').click()]);
    assert.equal(download.suggestedFilename(), 'Monthly-totals.png');
    const png = await readFile(await download.path());
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
  });
}

async function main() {
  assert.ok(BASE_URL, 'SANDCELL_URL must say where sandcell serve listens');
  const modes = { '--units': units, '--chat': chat, '--live': liveTurn, '--notebooks': notebooks, '--notebook': notebook, '--after-restart': afterRestart, '--screenshot': screenshot, '--no-model': noModel };
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
