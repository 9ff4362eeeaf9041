// The notebook: cells run directly in a session, no model involved, with their outputs
// streamed and drawn as in the chat, and the session's files beside them.

import { api, ApiError } from './api.js';
import { acceptDroppedFiles, chooseFiles, formatBytes, formatDuration, h, icon, notify } from './dom.js';
import { CodeEditor } from './editor.js';
import { renderMarkdown } from './markdown.js';
import { OutputArea, sessionLinks, statusLabel } from './output.js';

/** How long after an edit a saved notebook is saved (every run is saved at once). */
const SAVE_DELAY_MS = 400;
/** A run whose stream broke off is followed again after this long, then twice as long, … */
const RECONNECT_DELAY_MS = 1000;
const RECONNECTS = 6;

/**
 * One cell: `type` 'code' (run in the session) or 'markdown' (rendered in the page).
 * `saved`: the cell as the server keeps it (`cell_type`, `source`, `outputs`, …).
 */
class Cell {
  #notebook;
  #links;
  #timer = null;
  #cancelled = false;

  constructor(notebook, links, saved = { cell_type: 'code' }) {
    this.#notebook = notebook;
    this.#links = links;
    this.type = saved.cell_type === 'markdown' ? 'markdown' : 'code';
    this.count = saved.execution_count ?? null;
    this.outputs = saved.outputs ?? []; // as Jupyter writes them
    this.executionId = saved.execution_id ?? null; // the run that may still be going
    const code = this.type === 'code';
    this.prompt = h('span', { class: 'cell-prompt', 'aria-hidden': 'true' });
    this.editor = new CodeEditor({
      value: saved.source ?? '',
      language: code ? 'python' : 'markdown',
      label: code ? 'Python code' : 'Markdown text',
      placeholder: code ? 'Python code; Shift+Enter runs it' : 'Markdown; Shift+Enter shows it',
      complete: code ? (text, cursorPos, signal) => api.complete(notebook.sessionId, text, cursorPos, signal) : null,
      onChange: () => notebook.changed(),
      keys: {
        run: () => this.run(),
        runAndAdvance: () => notebook.runAndAdvance(this),
        runAndInsert: () => notebook.runAndInsert(this),
        leave: () => notebook.commandMode(this),
        up: () => notebook.editNeighbour(this, -1),
        down: () => notebook.editNeighbour(this, 1),
      },
    });
    this.editor.element.classList.add('cell-editor');
    this.rendered = h('div', { class: 'markdown cell-rendered', hidden: true, ondblclick: () => notebook.editMode(this) });
    this.status = h('span', { class: 'cell-status', role: 'status' });
    this.output = new OutputArea(links);
    const run = h('button', { type: 'button', class: 'icon-button cell-run', 'aria-label': 'Run cell', title: 'Run (Shift+Enter)', onclick: () => this.run() }, icon('play'));
    const stop = h('button', { type: 'button', class: 'icon-button cell-stop', 'aria-label': 'Stop cell', title: 'Stop', onclick: () => this.stop() }, icon('stop'));
    const remove = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Delete cell', title: 'Delete cell', onclick: () => notebook.remove(this) }, icon('trash'));
    this.element = h(
      'div',
      { class: `cell cell-${this.type}`, 'data-status': 'idle', 'data-type': this.type, tabindex: '-1' },
      h('div', { class: 'cell-input' }, this.prompt, this.editor.element, this.rendered, h('div', { class: 'cell-actions' }, run, stop, remove)),
      h('div', { class: 'cell-footer' }, this.status),
      this.output.element,
    );
    this.element.addEventListener('focusin', () => notebook.select(this));
    this.#state('idle', this.#promptText(), '');
    if (!code && this.editor.value) this.#render();
    for (const output of this.outputs) showOutput(this.output, output);
  }

  /** The cell as the server keeps it. */
  toJSON() {
    const cell = { cell_type: this.type, source: this.editor.value };
    if (this.type === 'code') Object.assign(cell, { execution_count: this.count, outputs: this.outputs, execution_id: this.executionId });
    return cell;
  }

  /** Runs a code cell in the session (after those queued before it); shows a Markdown cell. */
  async run() {
    if (this.type === 'markdown') return this.#render();
    const code = this.editor.value;
    if (!code.trim() || ['queued', 'running'].includes(this.element.dataset.status)) return;
    this.#cancelled = false;
    this.output.clear();
    this.outputs = [];
    this.executionId = null;
    this.#state('queued', '[*]', 'Waiting…');
    await this.#notebook.enqueue(async () => {
      if (this.#cancelled) return;
      await this.#stream((handlers) => api.execute(this.#notebook.sessionId, code, handlers));
    });
    this.#notebook.refreshFiles();
  }

  /**
   * Follows the cell's run, begun before this page was opened (or in another tab), or
   * whose stream broke off (the `attempt`-th time in a row).
   */
  async follow(attempt = 0) {
    this.output.clear();
    await this.#stream((handlers) => api.followExecution(this.#notebook.sessionId, this.executionId, handlers), true, attempt);
  }

  /** Stops this cell: interrupts it while it runs, takes it out of the queue while it waits. */
  stop() {
    const status = this.element.dataset.status;
    if (status === 'running') {
      api.interrupt(this.#notebook.sessionId).catch((error) => notify(error.message));
    } else if (status === 'queued') {
      this.#cancelled = true;
      this.#state('idle', this.#promptText(), 'Not run');
    }
  }

  /** Makes the cell a code or a Markdown cell, keeping its text. */
  setType(type) {
    if (type === this.type || ['queued', 'running'].includes(this.element.dataset.status)) return this;
    const replacement = new Cell(this.#notebook, this.#links, { cell_type: type, source: this.editor.value });
    this.element.replaceWith(replacement.element);
    return replacement;
  }

  /** Shows the editor of a Markdown cell again. */
  edit() {
    this.rendered.hidden = true;
    this.editor.element.hidden = false;
  }

  async #stream(start, following = false, attempt = 0) {
    this.#state('running', '[*]', 'Running…');
    const started = performance.now();
    // A running cell shows how long it has run (here: since this page began to follow it).
    this.#timer = setInterval(() => (this.status.textContent = `Running… ${formatDuration(Math.round(performance.now() - started))}`), 100);
    let execution = null;
    let failure = null; // why the run ended without a result
    const output = this.output;
    try {
      await start({
        // Saved at once, so that a reload or another tab finds the run and follows it.
        execution: ({ id }) => {
          this.executionId = id;
          if (!following) this.#notebook.changed(true);
        },
        notice: ({ message }) => output.note(message),
        stdout: ({ text }) => output.stdout(text),
        stderr: ({ text }) => output.stderr(text),
        result: (bundle) => output.result(bundle),
        error: (error) => output.error(error),
        // The files are listed with the finished execution (`end`).
        end: (finished) => (execution = finished),
        failure: ({ error }) => (failure = error.message),
      });
    } catch (error) {
      if (following && error.status === 404) {
        // The run is no longer kept: what was saved of it stays.
        clearInterval(this.#timer);
        this.executionId = null;
        this.output.clear();
        for (const saved of this.outputs) showOutput(this.output, saved);
        this.#state('idle', this.#promptText(), '');
        this.#notebook.changed();
        return;
      }
      // Refused, or not found: said. Cut off (no answer, or a broken stream): followed again.
      if (error instanceof ApiError && error.status !== 0) failure = error.message;
    } finally {
      clearInterval(this.#timer);
    }
    if (!execution && !failure && this.executionId && attempt < RECONNECTS) {
      // The stream broke off (the network, or this page going away); the run goes on in
      // the session: follow it again, and save nothing meanwhile.
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_DELAY_MS * 2 ** attempt));
      return this.follow(attempt + 1);
    }
    if (execution) {
      // The kernel's count: the N of the tracebacks' `Cell In[N]` (none for an empty cell).
      this.count = execution.execution_count ?? null;
      this.output.complete(execution);
      this.outputs = jupyterOutputs(execution, this.count);
      this.#state(execution.status, this.#promptText(), statusLabel(execution));
    } else {
      this.output.note(failure ?? 'The connection to the server was lost before the cell finished.');
      this.#state('error', '[!]', 'Failed');
    }
    this.executionId = null;
    this.#notebook.changed(true);
  }

  #render() {
    this.rendered.replaceChildren(renderMarkdown(this.editor.value || '*Empty Markdown cell*', this.#links));
    this.editor.element.hidden = true;
    this.rendered.hidden = false;
  }

  #promptText() {
    return this.type === 'code' ? `[${this.count ?? ' '}]` : '';
  }

  #state(status, prompt, label) {
    this.element.dataset.status = status;
    this.prompt.textContent = prompt;
    this.status.textContent = label;
  }
}

/** Draws one saved output (Jupyter's shape). */
function showOutput(area, output) {
  if (output.output_type === 'stream') {
    if (output.name === 'stderr') area.stderr(output.text ?? '');
    else area.stdout(output.text ?? '');
  } else if (output.output_type === 'error') {
    area.error(output);
  } else {
    area.result(output.data ?? {});
  }
}

/** A finished execution's outputs as Jupyter writes them: the cell's value an `execute_result`. */
function jupyterOutputs(execution, count) {
  const outputs = [];
  for (const name of ['stdout', 'stderr']) {
    if (execution[name]) outputs.push({ output_type: 'stream', name, text: execution[name] });
  }
  (execution.results ?? []).forEach((data, index) => {
    if (index === execution.execute_result) outputs.push({ output_type: 'execute_result', execution_count: count, data, metadata: {} });
    else outputs.push({ output_type: 'display_data', data, metadata: {} });
  });
  const error = execution.error;
  if (error) outputs.push({ output_type: 'error', ename: error.ename, evalue: error.evalue, traceback: error.traceback });
  return outputs;
}

/**
 * The notebook of one session; `saved` when it is a notebook kept on the server (`GET /api/v1/notebooks/{id}`), which
 * it then saves on every change, each save naming the revision it changes. `hooks`:
 * `stale()` when a save was refused because the notebook was saved elsewhere (another
 * tab) meanwhile; `ask()` to start a conversation on the session.
 */
export class NotebookView {
  #links;
  #queue = Promise.resolve();
  #cells = [];
  #saveTimer = null;
  #saving = Promise.resolve();
  #unsaved = 0; // saves asked for and not yet answered
  #selected = null;
  #pendingDelete = false; // the first D of DD
  #hooks;
  #filesRequest = 0; // the latest listing of the files asked for
  #stale = false; // saved elsewhere since this page read it: it saves no more

  constructor(sessionId, saved = null, hooks = {}) {
    this.sessionId = sessionId;
    this.saved = saved && { id: saved.id, title: saved.title, revision: saved.revision };
    this.#hooks = hooks;
    this.#links = sessionLinks(sessionId);
    this.cellList = h('div', { class: 'cells' });
    this.fileList = h('ul', { class: 'file-list' });
    const intro = 'Run Python directly in a sandboxed session: a conversation on it shares its variables and files.';
    const toolbar = h(
      'div',
      { class: 'notebook-toolbar', role: 'toolbar', 'aria-label': 'Session' },
      this.#button('plus', 'Add cell', () => this.editMode(this.add())),
      this.#button('stop', 'Interrupt', () => api.interrupt(sessionId).catch((error) => notify(error.message))),
      this.#button('restart', 'Restart', () => this.#restart()),
      this.#button('attach', 'Upload files', () => chooseFiles((files) => this.upload(files))),
      ...(hooks.ask ? [this.#button('chat', 'Ask the model about this notebook', () => hooks.ask())] : []),
    );
    const files = h('aside', { class: 'files-panel', 'aria-label': 'Files in /mnt/data' }, h('h2', {}, 'Files in /mnt/data'), this.fileList);
    this.element = h(
      'section',
      { class: 'notebook-view', 'aria-label': 'Notebook' },
      h(
        'div',
        { class: 'notebook-scroll' },
        h(
          'div',
          { class: 'notebook-column' },
          h('p', { class: 'notebook-intro' }, intro),
          toolbar,
          this.cellList,
          h(
            'div',
            { class: 'add-cells' },
            h('button', { type: 'button', class: 'add-cell', onclick: () => this.editMode(this.add()) }, icon('plus'), 'Code cell'),
            h('button', { type: 'button', class: 'add-cell', onclick: () => this.editMode(this.add(undefined, { cell_type: 'markdown' })) }, icon('plus'), 'Text cell'),
          ),
        ),
        files,
      ),
      h('div', { class: 'drop-hint', 'aria-hidden': 'true' }, icon('attach'), 'Drop files to upload them'),
    );
    acceptDroppedFiles(this.element, (files) => this.upload(files));
    this.cellList.addEventListener('keydown', (event) => this.#commandKey(event));
    for (const cell of saved?.cells ?? []) this.add(undefined, cell, { save: false });
    if (!this.#cells.length) this.add(undefined, undefined, { save: false });
    this.refreshFiles();
    this.#followRuns();
  }

  get title() {
    return this.saved?.title ?? 'Notebook';
  }

  /**
   * A change to save: after a pause in typing, or `now` (a run began or ended). Saves
   * one at a time, each with every cell.
   */
  changed(now = false) {
    if (!this.saved || this.#stale) return;
    // `data-saved` says whether everything is on the server.
    this.element.dataset.saved = 'false';
    clearTimeout(this.#saveTimer);
    if (now) this.#save();
    else this.#saveTimer = setTimeout(() => this.#save(), SAVE_DELAY_MS);
  }

  #save() {
    this.#saveTimer = null;
    this.#unsaved += 1;
    const cells = this.#cells.map((cell) => cell.toJSON());
    this.#write({ cells });
  }

  /** Renames the notebook, in turn with its other saves. */
  rename(title) {
    return this.#write({ title }).then(() => (this.saved.title = title));
  }

  /** Saves `change` on the revision the last save left (after the saves before it). */
  #write(change) {
    const written = this.#saving.then(async () => {
      if (this.#stale) throw new Error('this notebook was saved in another tab');
      try {
        const info = await api.saveNotebook(this.saved.id, { ...change, revision: this.saved.revision });
        this.saved.revision = info.revision;
      } catch (error) {
        if (error.status !== 409) throw error;
        // Saved elsewhere meanwhile: what is on the server wins, and is shown instead.
        this.#stale = true;
        clearTimeout(this.#saveTimer);
        this.#hooks.stale?.();
        throw new Error('this notebook was saved in another tab');
      }
    });
    if (change.cells) {
      written.then(
        () => {
          this.#unsaved -= 1;
          if (!this.#unsaved && !this.#saveTimer) this.element.dataset.saved = 'true';
        },
        (error) => {
          this.#unsaved -= 1;
          if (!this.#stale) notify(`The notebook was not saved: ${error.message}`);
        },
      );
    }
    this.#saving = written.catch(() => {});
    return written;
  }

  /** Runs begun before the page was opened (a reload, another tab) are followed to their end. */
  async #followRuns() {
    const running = this.#cells.filter((cell) => cell.executionId);
    for (const cell of running) await this.enqueue(() => cell.follow());
  }

  activate() {
    const cell = this.#cells.find((candidate) => !candidate.editor.value) ?? this.#cells.at(-1);
    // A Markdown cell with text stays rendered, as JupyterLab opens one.
    if (cell?.type === 'markdown' && cell.editor.value) this.commandMode(cell);
    else if (cell) this.editMode(cell);
    this.refreshFiles();
  }

  /** A new cell (`saved` as the server keeps one) after `after` (at the end without it), or before `before`. */
  add(after = this.#cells.at(-1), saved = undefined, { before = null, save = true } = {}) {
    const cell = new Cell(this, this.#links, saved);
    if (before) {
      this.#cells.splice(this.#cells.indexOf(before), 0, cell);
      before.element.before(cell.element);
    } else {
      const index = after ? this.#cells.indexOf(after) + 1 : this.#cells.length;
      this.#cells.splice(index, 0, cell);
      if (after) after.element.after(cell.element);
      else this.cellList.append(cell.element);
    }
    if (save) this.changed();
    return cell;
  }

  remove(cell) {
    const index = this.#cells.indexOf(cell);
    this.#cells.splice(index, 1);
    cell.element.remove();
    if (!this.#cells.length) this.add();
    if (this.#selected === cell) this.select(this.#cells[Math.min(index, this.#cells.length - 1)]);
    this.changed();
  }

  /** The cell the keys act on. */
  select(cell) {
    if (this.#selected === cell) return;
    this.#selected?.element.classList.remove('selected');
    this.#selected = cell;
    cell.element.classList.add('selected');
  }

  /** Escape: the keys act on cells (A, B, DD, M, Y, Enter, arrows), not on the text. */
  commandMode(cell = this.#selected) {
    this.select(cell);
    this.#pendingDelete = false;
    cell.element.focus();
  }

  /** Enter: into the cell's editor. */
  editMode(cell = this.#selected) {
    this.select(cell);
    cell.edit();
    cell.editor.focus();
  }

  /** Into the editor of the cell `step` places from `cell`, if there is one. */
  editNeighbour(cell, step) {
    const next = this.#cells[this.#cells.indexOf(cell) + step];
    if (next) this.editMode(next);
  }

  /** Shift+Enter: runs the cell, then on to the next one (a new one after the last). */
  runAndAdvance(cell) {
    cell.run();
    const next = this.#cells[this.#cells.indexOf(cell) + 1];
    if (next) this.commandMode(next);
    else this.editMode(this.add(cell));
  }

  /** Alt+Enter: runs the cell and inserts a new one below. */
  runAndInsert(cell) {
    cell.run();
    this.editMode(this.add(cell));
  }

  /** The keys of command mode, as JupyterLab has them. */
  #commandKey(event) {
    const cell = this.#cells.find((candidate) => candidate.element === event.target);
    if (!cell || event.isComposing) return;
    const key = event.key;
    const plain = !event.ctrlKey && !event.metaKey && !event.altKey;
    const handled = () => event.preventDefault();
    if (key === 'Enter') {
      handled();
      if (event.shiftKey) this.runAndAdvance(cell);
      else if (event.ctrlKey || event.metaKey) cell.run();
      else if (event.altKey) this.runAndInsert(cell);
      else this.editMode(cell);
      return;
    }
    if (!plain || event.shiftKey) return;
    const index = this.#cells.indexOf(cell);
    if (key !== 'd' && key !== 'D') this.#pendingDelete = false;
    switch (key) {
      case 'a':
      case 'A':
        handled();
        return this.commandMode(this.add(null, undefined, { before: cell }));
      case 'b':
      case 'B':
        handled();
        return this.commandMode(this.add(cell));
      case 'd':
      case 'D':
        handled();
        if (!this.#pendingDelete) {
          this.#pendingDelete = true;
          return;
        }
        this.#pendingDelete = false;
        this.remove(cell);
        return this.commandMode(this.#selected);
      case 'm':
      case 'M':
      case 'y':
      case 'Y': {
        handled();
        const replacement = cell.setType(key.toLowerCase() === 'm' ? 'markdown' : 'code');
        if (replacement !== cell) {
          this.#cells[index] = replacement;
          this.changed();
        }
        return this.commandMode(replacement);
      }
      case 'ArrowUp':
      case 'k':
      case 'K':
        handled();
        return this.commandMode(this.#cells[Math.max(index - 1, 0)]);
      case 'ArrowDown':
      case 'j':
      case 'J':
        handled();
        return this.commandMode(this.#cells[Math.min(index + 1, this.#cells.length - 1)]);
      default:
    }
  }

  /** Runs `task` after every cell queued before it: a session runs one cell at a time. */
  enqueue(task) {
    const run = this.#queue.then(task);
    this.#queue = run.catch(() => {});
    return run;
  }

  async upload(files) {
    for (const file of files) {
      try {
        await api.upload(this.sessionId, file);
      } catch (error) {
        notify(`${file.name} was not uploaded: ${error.message}`);
      }
    }
    this.refreshFiles();
  }

  async refreshFiles() {
    // Lists can answer out of order: only the latest one asked for is shown.
    const request = ++this.#filesRequest;
    let files;
    try {
      files = await api.files(this.sessionId);
    } catch (error) {
      if (request === this.#filesRequest) this.fileList.replaceChildren(h('li', { class: 'file-empty' }, error.message));
      return;
    }
    if (request !== this.#filesRequest) return;
    if (!files.length) {
      this.fileList.replaceChildren(h('li', { class: 'file-empty' }, 'No files yet. Drop some here.'));
      return;
    }
    this.fileList.replaceChildren(
      ...files.map((file) =>
        h(
          'li',
          {},
          this.#links.file(file.path, [icon('download'), h('span', { class: 'file-name' }, file.path), h('span', { class: 'file-size' }, formatBytes(file.size))]),
          h('button', {
            type: 'button',
            class: 'icon-button',
            'aria-label': `Delete ${file.path}`,
            title: 'Delete',
            onclick: () => this.#deleteFile(file.path),
          }, icon('trash')),
        ),
      ),
    );
  }

  async #deleteFile(path) {
    if (!confirm(`Delete ${path} from the session?`)) return;
    try {
      await api.deleteFile(this.sessionId, path);
    } catch (error) {
      notify(error.message);
    }
    this.refreshFiles();
  }

  async #restart() {
    if (!confirm('Restart Python? Variables are lost; files stay.')) return;
    try {
      await api.restart(this.sessionId);
      notify('Python was restarted.');
    } catch (error) {
      notify(error.message);
    }
  }

  #button(iconName, label, onclick) {
    // The label hides on narrow screens; aria-label keeps the name.
    return h('button', { type: 'button', class: 'tool-button', 'aria-label': label, title: label, onclick }, icon(iconName), h('span', {}, label));
  }
}
