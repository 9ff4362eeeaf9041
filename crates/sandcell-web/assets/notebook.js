// The notebook: cells run directly in a session, no model involved, with their outputs
// streamed and drawn as in the chat, and the session's files beside them.

import { api, ApiError } from './api.js';
import { acceptDroppedFiles, autosize, chooseFiles, formatBytes, h, icon, notify } from './dom.js';
import { renderMarkdown } from './markdown.js';
import { OutputArea, sessionLinks, statusLabel } from './output.js';

/** How long after an edit a saved notebook is saved (every run is saved at once). */
const SAVE_DELAY_MS = 400;
/** A run whose stream broke off is followed again after this long, then twice as long, … */
const RECONNECT_DELAY_MS = 1000;
const RECONNECTS = 6;

class Cell {
  #notebook;
  #links;

  /** `saved`: the cell as the server keeps it (`cell_type`, `source`, `outputs`, …). */
  constructor(notebook, links, saved = { cell_type: 'code' }) {
    this.#notebook = notebook;
    this.#links = links;
    this.type = saved.cell_type === 'markdown' ? 'markdown' : 'code';
    this.count = saved.execution_count ?? null;
    this.outputs = saved.outputs ?? []; // as Jupyter writes them
    this.executionId = saved.execution_id ?? null; // the run that may still be going
    const markdown = this.type === 'markdown';
    this.prompt = h('span', { class: 'cell-prompt', 'aria-hidden': 'true' }, markdown ? '' : this.#promptText());
    this.editor = h('textarea', {
      class: 'cell-editor',
      rows: 1,
      spellcheck: markdown ? 'true' : 'false',
      autocapitalize: 'off',
      autocomplete: 'off',
      'aria-label': markdown ? 'Markdown text' : 'Python code',
      placeholder: markdown ? 'Markdown text; Ctrl+Enter shows it' : 'Python code; Ctrl+Enter runs it',
    });
    this.editor.value = saved.source ?? '';
    autosize(this.editor);
    this.editor.addEventListener('input', () => this.#notebook.changed());
    this.editor.addEventListener('keydown', (event) => {
      if (event.key !== 'Enter' || event.isComposing) return;
      if (event.ctrlKey || event.metaKey) {
        event.preventDefault();
        this.run();
      } else if (event.shiftKey) {
        event.preventDefault();
        this.run();
        this.#notebook.focusAfter(this);
      }
    });
    this.status = h('span', { class: 'cell-status', role: 'status' });
    this.output = new OutputArea(links);
    const run = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Run cell', title: 'Run (Ctrl+Enter)', onclick: () => this.run() }, icon('play'));
    const remove = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Delete cell', title: 'Delete cell', onclick: () => this.#notebook.remove(this) }, icon('trash'));
    this.element = h(
      'div',
      { class: `cell cell-${this.type}`, 'data-status': 'idle' },
      h('div', { class: 'cell-input' }, this.prompt, this.editor, h('div', { class: 'cell-actions' }, run, remove)),
      h('div', { class: 'cell-footer' }, this.status),
      this.output.element,
    );
    if (markdown && this.editor.value) this.#renderMarkdown();
    for (const output of this.outputs) showOutput(this.output, output);
  }

  /** The cell as the server keeps it. */
  toJSON() {
    const cell = { cell_type: this.type, source: this.editor.value };
    if (this.type === 'code') Object.assign(cell, { execution_count: this.count, outputs: this.outputs, execution_id: this.executionId });
    return cell;
  }

  async run() {
    const code = this.editor.value;
    if (this.type === 'markdown') {
      this.#renderMarkdown();
      return;
    }
    if (!code.trim()) return;
    this.output.clear();
    this.outputs = [];
    this.executionId = null;
    this.#state('queued', '[*]', 'Waiting…');
    await this.#notebook.enqueue(async () => {
      this.count = this.#notebook.nextCount();
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

  async #stream(start, following = false, attempt = 0) {
    this.#state('running', '[*]', 'Running…');
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
        this.executionId = null;
        this.output.clear();
        for (const saved of this.outputs) showOutput(this.output, saved);
        this.#state('idle', this.#promptText(), '');
        this.#notebook.changed();
        return;
      }
      // Refused, or not found: said. Cut off (no answer, or a broken stream): followed again.
      if (error instanceof ApiError && error.status !== 0) failure = error.message;
    }
    if (!execution && !failure && this.executionId && attempt < RECONNECTS) {
      // The stream broke off (the network, or this page going away); the run goes on in
      // the session: follow it again, and save nothing meanwhile.
      await new Promise((resolve) => setTimeout(resolve, RECONNECT_DELAY_MS * 2 ** attempt));
      return this.follow(attempt + 1);
    }
    if (execution) {
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

  #renderMarkdown() {
    this.output.clear();
    this.output.element.append(h('div', { class: 'markdown' }, renderMarkdown(this.editor.value, this.#links)));
  }

  #promptText() {
    return `[${this.count ?? ' '}]`;
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
 * The notebook of one session; `conversation` when it is a conversation's session,
 * `saved` when it is a notebook kept on the server (`GET /api/v1/notebooks/{id}`), which
 * it then saves on every change.
 */
export class NotebookView {
  #links;
  #queue = Promise.resolve();
  #count = 0;
  #cells = [];
  #saveTimer = null;
  #saving = Promise.resolve();
  #unsaved = 0; // saves asked for and not yet answered

  constructor(sessionId, conversation, saved = null) {
    this.sessionId = sessionId;
    this.conversation = conversation;
    this.saved = saved && { id: saved.id, title: saved.title };
    this.#links = sessionLinks(sessionId);
    this.cellList = h('div', { class: 'cells' });
    this.fileList = h('ul', { class: 'file-list' });
    const intro = conversation
      ? 'Run Python directly in this conversation’s session: variables and files are shared with the chat.'
      : 'Run Python directly in a sandboxed session. No model is involved.';
    const toolbar = h(
      'div',
      { class: 'notebook-toolbar', role: 'toolbar', 'aria-label': 'Session' },
      this.#button('plus', 'Add cell', () => this.add().editor.focus()),
      this.#button('stop', 'Interrupt', () => api.interrupt(sessionId).catch((error) => notify(error.message))),
      this.#button('restart', 'Restart', () => this.#restart()),
      this.#button('attach', 'Upload files', () => chooseFiles((files) => this.upload(files))),
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
            h('button', { type: 'button', class: 'add-cell', onclick: () => this.add().editor.focus() }, icon('plus'), 'Code cell'),
            h('button', { type: 'button', class: 'add-cell', onclick: () => this.add(undefined, { cell_type: 'markdown' }).editor.focus() }, icon('plus'), 'Text cell'),
          ),
        ),
        files,
      ),
      h('div', { class: 'drop-hint', 'aria-hidden': 'true' }, icon('attach'), 'Drop files to upload them'),
    );
    acceptDroppedFiles(this.element, (files) => this.upload(files));
    for (const cell of saved?.cells ?? []) this.add(undefined, cell, false);
    this.#count = Math.max(0, ...this.#cells.map((cell) => cell.count ?? 0));
    if (!this.#cells.length) this.add(undefined, undefined, false);
    this.refreshFiles();
    this.#followRuns();
  }

  get title() {
    if (this.saved) return this.saved.title;
    return this.conversation ? `${this.conversation.title || 'New chat'} · Notebook` : 'Notebook';
  }

  /**
   * A change to save: after a pause in typing, or `now` (a run began or ended). Saves
   * one at a time, each with every cell.
   */
  changed(now = false) {
    if (!this.saved) return;
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
    this.#saving = this.#saving.then(() =>
      api.saveNotebook(this.saved.id, { cells }).then(
        () => {
          this.#unsaved -= 1;
          if (!this.#unsaved && !this.#saveTimer) this.element.dataset.saved = 'true';
        },
        (error) => {
          this.#unsaved -= 1;
          notify(`The notebook was not saved: ${error.message}`);
        },
      ),
    );
  }

  /** Runs begun before the page was opened (a reload, another tab) are followed to their end. */
  async #followRuns() {
    const running = this.#cells.filter((cell) => cell.executionId);
    for (const cell of running) await this.enqueue(() => cell.follow());
  }

  activate() {
    (this.#cells.find((cell) => !cell.editor.value) ?? this.#cells.at(-1))?.editor.focus({ preventScroll: true });
    this.refreshFiles();
  }

  add(after = this.#cells.at(-1), saved = undefined, save = true) {
    const cell = new Cell(this, this.#links, saved);
    const index = after ? this.#cells.indexOf(after) + 1 : this.#cells.length;
    this.#cells.splice(index, 0, cell);
    if (after) after.element.after(cell.element);
    else this.cellList.append(cell.element);
    if (save) this.changed();
    return cell;
  }

  remove(cell) {
    this.#cells.splice(this.#cells.indexOf(cell), 1);
    cell.element.remove();
    if (!this.#cells.length) this.add();
    this.changed();
  }

  /** Shift+Enter: on to the next cell, a new one after the last. */
  focusAfter(cell) {
    const next = this.#cells[this.#cells.indexOf(cell) + 1] ?? this.add(cell);
    next.editor.focus();
  }

  /** Runs `task` after every cell queued before it: a session runs one cell at a time. */
  enqueue(task) {
    const run = this.#queue.then(task);
    this.#queue = run.catch(() => {});
    return run;
  }

  nextCount() {
    this.#count += 1;
    return this.#count;
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
    let files;
    try {
      files = await api.files(this.sessionId);
    } catch (error) {
      this.fileList.replaceChildren(h('li', { class: 'file-empty' }, error.message));
      return;
    }
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
