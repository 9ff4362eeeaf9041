// The notebook: cells run directly in a session, no model involved, with their outputs
// streamed and drawn as in the chat, and the session's files beside them.

import { api } from './api.js';
import { acceptDroppedFiles, autosize, chooseFiles, formatBytes, h, icon, notify } from './dom.js';
import { OutputArea, sessionLinks, statusLabel } from './output.js';

class Cell {
  #notebook;

  constructor(notebook, links) {
    this.#notebook = notebook;
    this.prompt = h('span', { class: 'cell-prompt', 'aria-hidden': 'true' }, '[ ]');
    this.editor = h('textarea', {
      class: 'cell-editor',
      rows: 1,
      spellcheck: 'false',
      autocapitalize: 'off',
      autocomplete: 'off',
      'aria-label': 'Python code',
      placeholder: 'Python code; Ctrl+Enter runs it',
    });
    autosize(this.editor);
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
      { class: 'cell', 'data-status': 'idle' },
      h('div', { class: 'cell-input' }, this.prompt, this.editor, h('div', { class: 'cell-actions' }, run, remove)),
      h('div', { class: 'cell-footer' }, this.status),
      this.output.element,
    );
  }

  async run() {
    const code = this.editor.value;
    if (!code.trim()) return;
    this.output.clear();
    this.#state('queued', '[*]', 'Waiting…');
    await this.#notebook.enqueue(async () => {
      this.#state('running', '[*]', 'Running…');
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
      this.#button('plus', 'Add cell', () => this.add().editor.focus()),
      this.#button('stop', 'Interrupt', () => api.interrupt(sessionId).catch((error) => notify(error.message))),
      this.#button('restart', 'Restart', () => this.#restart()),
      this.#button('attach', 'Upload files', () => chooseFiles((files) => this.upload(files))),
    );
    const files = h('aside', { class: 'files-panel', 'aria-label': 'Files in /mnt/data' }, h('h2', {}, 'Files in /mnt/data'), this.fileList);
    this.element = h(
      'section',
      { class: 'notebook-view', 'aria-label': 'Notebook' },
      h('div', { class: 'notebook-scroll' }, h('div', { class: 'notebook-column' }, h('p', { class: 'notebook-intro' }, intro), toolbar, this.cellList, h('button', { type: 'button', class: 'add-cell', onclick: () => this.add().editor.focus() }, icon('plus'), 'Code cell')), files),
      h('div', { class: 'drop-hint', 'aria-hidden': 'true' }, icon('attach'), 'Drop files to upload them'),
    );
    acceptDroppedFiles(this.element, (files) => this.upload(files));
    this.add();
    this.refreshFiles();
  }

  get title() {
    return this.conversation ? `${this.conversation.title || 'New chat'} · Notebook` : 'Notebook';
  }

  activate() {
    (this.#cells.find((cell) => !cell.editor.value) ?? this.#cells.at(-1))?.editor.focus({ preventScroll: true });
    this.refreshFiles();
  }

  add(after = this.#cells.at(-1)) {
    const cell = new Cell(this, this.#links);
    const index = after ? this.#cells.indexOf(after) + 1 : this.#cells.length;
    this.#cells.splice(index, 0, cell);
    if (after) after.element.after(cell.element);
    else this.cellList.append(cell.element);
    return cell;
  }

  remove(cell) {
    this.#cells.splice(this.#cells.indexOf(cell), 1);
    cell.element.remove();
    if (!this.#cells.length) this.add();
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
