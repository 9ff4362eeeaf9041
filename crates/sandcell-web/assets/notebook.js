// The notebook: cells run directly in a session, no model involved, with their outputs
// streamed and drawn as in the chat, and the session's files beside them.

import { api } from './api.js';
import { acceptDroppedFiles, chooseFiles, formatBytes, formatDuration, h, icon, notify } from './dom.js';
import { CodeEditor } from './editor.js';
import { renderMarkdown } from './markdown.js';
import { OutputArea, sessionLinks, statusLabel } from './output.js';

/** One cell: `type` 'code' (run in the session) or 'markdown' (rendered in the page). */
class Cell {
  #notebook;
  #links;
  #timer = null;
  #cancelled = false;

  constructor(notebook, links, { type = 'code', source = '' } = {}) {
    this.#notebook = notebook;
    this.#links = links;
    this.type = type;
    this.prompt = h('span', { class: 'cell-prompt', 'aria-hidden': 'true' });
    this.editor = new CodeEditor({
      value: source,
      language: type === 'code' ? 'python' : 'markdown',
      label: type === 'code' ? 'Python code' : 'Markdown text',
      placeholder: type === 'code' ? 'Python code; Shift+Enter runs it' : 'Markdown; Shift+Enter shows it',
      complete: type === 'code' ? (code, cursorPos, signal) => api.complete(notebook.sessionId, code, cursorPos, signal) : null,
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
      { class: 'cell', 'data-status': 'idle', 'data-type': type, tabindex: '-1' },
      h('div', { class: 'cell-input' }, this.prompt, this.editor.element, this.rendered, h('div', { class: 'cell-actions' }, run, stop, remove)),
      h('div', { class: 'cell-footer' }, this.status),
      this.output.element,
    );
    this.element.addEventListener('focusin', () => notebook.select(this));
    this.#state('idle', type === 'code' ? '[ ]' : '', '');
  }

  /** Runs a code cell in the session (after those queued before it); shows a Markdown cell. */
  async run() {
    if (this.type === 'markdown') return this.#render();
    const code = this.editor.value;
    if (!code.trim() || ['queued', 'running'].includes(this.element.dataset.status)) return;
    this.#cancelled = false;
    this.output.clear();
    this.#state('queued', '[*]', 'Waiting…');
    await this.#notebook.enqueue(async () => {
      if (this.#cancelled) return;
      this.#state('running', '[*]', 'Running…');
      const started = performance.now();
      // A running cell shows how long it has run.
      this.#timer = setInterval(() => (this.status.textContent = `Running… ${formatDuration(Math.round(performance.now() - started))}`), 100);
      let execution = null;
      let failure = 'The connection to the server was lost before the cell finished.';
      try {
        const output = this.output;
        await api.execute(this.#notebook.sessionId, code, {
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
        failure = error.message;
      } finally {
        clearInterval(this.#timer);
      }
      if (execution) {
        this.output.complete(execution);
        this.#state(execution.status, `[${this.#notebook.nextCount()}]`, statusLabel(execution));
      } else {
        this.output.note(failure);
        this.#state('error', '[!]', 'Failed');
      }
    });
    this.#notebook.refreshFiles();
  }

  /** Stops this cell: interrupts it while it runs, takes it out of the queue while it waits. */
  stop() {
    const status = this.element.dataset.status;
    if (status === 'running') {
      api.interrupt(this.#notebook.sessionId).catch((error) => notify(error.message));
    } else if (status === 'queued') {
      this.#cancelled = true;
      this.#state('idle', '[ ]', 'Not run');
    }
  }

  /** Makes the cell a code or a Markdown cell, keeping its text. */
  setType(type) {
    if (type === this.type || ['queued', 'running'].includes(this.element.dataset.status)) return this;
    const replacement = new Cell(this.#notebook, this.#links, { type, source: this.editor.value });
    this.element.replaceWith(replacement.element);
    return replacement;
  }

  /** Shows the editor of a Markdown cell again. */
  edit() {
    this.rendered.hidden = true;
    this.editor.element.hidden = false;
  }

  #render() {
    this.rendered.replaceChildren(renderMarkdown(this.editor.value || '*Empty Markdown cell*', this.#links));
    this.editor.element.hidden = true;
    this.rendered.hidden = false;
  }

  #state(status, prompt, label) {
    this.element.dataset.status = status;
    this.prompt.textContent = prompt;
    this.status.textContent = label;
  }
}

/** The notebook of one session; `conversation` when it is a conversation's session. */
export class NotebookView {
  #links;
  #queue = Promise.resolve();
  #count = 0;
  #cells = [];
  #selected = null;
  #pendingDelete = false; // the first D of DD

  constructor(sessionId, conversation) {
    this.sessionId = sessionId;
    this.conversation = conversation;
    this.#links = sessionLinks(sessionId);
    this.cellList = h('div', { class: 'cells' });
    this.fileList = h('ul', { class: 'file-list' });
    const intro = conversation
      ? 'Run Python directly in this conversation’s session: variables and files are shared with the chat.'
      : 'Run Python directly in a sandboxed session. No model is involved.';
    const toolbar = h(
      'div',
      { class: 'notebook-toolbar', role: 'toolbar', 'aria-label': 'Session' },
      this.#button('plus', 'Add cell', () => this.editMode(this.add())),
      this.#button('stop', 'Interrupt', () => api.interrupt(sessionId).catch((error) => notify(error.message))),
      this.#button('restart', 'Restart', () => this.#restart()),
      this.#button('attach', 'Upload files', () => chooseFiles((files) => this.upload(files))),
    );
    const files = h('aside', { class: 'files-panel', 'aria-label': 'Files in /mnt/data' }, h('h2', {}, 'Files in /mnt/data'), this.fileList);
    this.element = h(
      'section',
      { class: 'notebook-view', 'aria-label': 'Notebook' },
      h('div', { class: 'notebook-scroll' }, h('div', { class: 'notebook-column' }, h('p', { class: 'notebook-intro' }, intro), toolbar, this.cellList, h('button', { type: 'button', class: 'add-cell', onclick: () => this.editMode(this.add()) }, icon('plus'), 'Code cell')), files),
      h('div', { class: 'drop-hint', 'aria-hidden': 'true' }, icon('attach'), 'Drop files to upload them'),
    );
    acceptDroppedFiles(this.element, (files) => this.upload(files));
    this.cellList.addEventListener('keydown', (event) => this.#commandKey(event));
    this.add();
    this.refreshFiles();
  }

  get title() {
    return this.conversation ? `${this.conversation.title || 'New chat'} · Notebook` : 'Notebook';
  }

  activate() {
    const cell = this.#cells.find((candidate) => !candidate.editor.value) ?? this.#cells.at(-1);
    if (cell) this.editMode(cell);
    this.refreshFiles();
  }

  /** A new cell after `after` (at the end without it), or before `before`. */
  add(after = this.#cells.at(-1), { before = null, type = 'code', source = '' } = {}) {
    const cell = new Cell(this, this.#links, { type, source });
    if (before) {
      this.#cells.splice(this.#cells.indexOf(before), 0, cell);
      before.element.before(cell.element);
    } else {
      const index = after ? this.#cells.indexOf(after) + 1 : this.#cells.length;
      this.#cells.splice(index, 0, cell);
      if (after) after.element.after(cell.element);
      else this.cellList.append(cell.element);
    }
    return cell;
  }

  remove(cell) {
    const index = this.#cells.indexOf(cell);
    this.#cells.splice(index, 1);
    cell.element.remove();
    if (!this.#cells.length) this.add();
    if (this.#selected === cell) this.select(this.#cells[Math.min(index, this.#cells.length - 1)]);
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
        return this.commandMode(this.add(null, { before: cell }));
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
        if (replacement !== cell) this.#cells[index] = replacement;
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
