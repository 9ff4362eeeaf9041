// The chat: a conversation's messages, the model's code and its outputs, as they stream
// and as they are read back from the saved records (both drawn by the same Transcript
// methods, so a reloaded conversation looks like the live one), and the composer.

import { api, ApiError } from './api.js';
import { acceptDroppedFiles, autosize, chooseFiles, followBottom, formatBytes, formatDuration, h, icon, notify, onceAFrame } from './dom.js';
import { highlightPython } from './highlight.js';
import { renderMarkdown } from './markdown.js';
import { fileList, OutputArea, sessionLinks, statusLabel } from './output.js';

/** How long to wait before reconnecting to a turn whose stream broke off (then twice as long, …). */
const RECONNECT_DELAY_MS = 1000;

/** One call of the model's `python` tool: its code as it is written, then its outputs. */
class ToolCall {
  code = '';
  finished = false;

  constructor(links) {
    this.status = h('span', { class: 'tool-status' }, 'Writing code…');
    this.codeElement = h('code');
    this.details = h(
      'details',
      { class: 'tool-code', open: true },
      h('summary', {}, h('span', { class: 'tool-label' }, 'Python'), this.status),
      h('pre', {}, this.codeElement),
    );
    this.output = new OutputArea(links, { listFiles: false });
    this.element = h('div', { class: 'tool-call', 'data-status': 'writing' }, this.details, this.output.element);
    this.draw = onceAFrame(() => this.codeElement.replaceChildren(highlightPython(this.code)));
  }

  appendCode(text) {
    this.code += text;
    this.draw();
  }

  /** The complete code; it runs now. */
  run(code) {
    this.code = code;
    this.draw();
    this.status.textContent = 'Running…';
    this.element.dataset.status = 'running';
  }

  /** The finished execution. The code folds away; the outputs stay in view. */
  complete(execution) {
    this.output.complete(execution);
    this.status.textContent = statusLabel(execution);
    this.element.dataset.status = execution.status;
    this.details.open = false;
    this.finished = true;
  }

  /** The call did not run (cancelled, or not valid); `content` is what the model was told. */
  notRun(content) {
    this.output.clear();
    this.output.note(content);
    this.status.textContent = 'Not run';
    this.element.dataset.status = 'not-run';
    this.details.open = false;
    this.finished = true;
  }
}

/** The messages of one conversation. */
class Transcript {
  #links;
  #calls = new Map();
  #turn = null; // the element of the assistant's current turn
  #text = null; // the Markdown block text is being added to
  #turnFiles = new Map(); // path → the latest state of each file the turn's code wrote
  #filesElement = null; // their one list

  constructor(links) {
    this.#links = links;
    this.element = h('div', { class: 'messages', role: 'log', 'aria-label': 'Messages' });
  }

  get isEmpty() {
    return !this.element.firstChild;
  }

  user(text) {
    this.#endTurn();
    this.element.append(h('div', { class: 'message user' }, h('div', { class: 'bubble' }, text)));
  }

  textDelta(text) {
    if (!this.#text) {
      const element = h('div', { class: 'markdown' });
      const block = { source: '', element };
      block.draw = onceAFrame(() => element.replaceChildren(renderMarkdown(block.source, this.#links)));
      this.#text = block;
      this.#assistantTurn().append(element);
    }
    this.#text.source += text;
    this.#text.draw();
  }

  /** The answer's whole text, which the deltas already showed if the model streamed it. */
  finalText(text) {
    if (!this.#text) return this.textDelta(text);
    this.#text.source = text;
    this.#text.draw();
  }

  /** A call's finished execution; the files it wrote join the turn's one list. */
  executed(callId, execution) {
    this.call(callId).complete(execution);
    const files = execution.files ?? [];
    if (!files.length) return;
    for (const file of files) this.#turnFiles.set(file.path, file);
    const list = h('div', { class: 'turn-files' }, fileList([...this.#turnFiles.values()], this.#links));
    if (this.#filesElement) this.#filesElement.replaceWith(list);
    else this.#assistantTurn().append(list);
    this.#filesElement = list;
  }

  /** The latest call with this id. */
  call(callId) {
    return this.#calls.get(callId) ?? this.writing(callId);
  }

  /**
   * The call whose code is being written: a new one unless it has begun already. Ids can
   * repeat (some providers send none, and they are made up per step as `call_0`…), so a
   * finished call never takes more code.
   */
  writing(callId) {
    const existing = this.#calls.get(callId);
    if (existing && !existing.finished) return existing;
    const call = new ToolCall(this.#links);
    this.#calls.set(callId, call);
    this.#assistantTurn().append(call.element);
    this.#text = null;
    return call;
  }

  note(text, kind = 'info') {
    this.#endTurn();
    this.element.append(h('p', { class: `note note-${kind}`, role: kind === 'error' ? 'alert' : null }, text));
  }

  /** How a turn ended (the `end` event). */
  end(outcome, message) {
    if (outcome === 'cancelled') this.note(message ?? 'Stopped.');
    else if (outcome === 'step_limit') this.note(message ?? 'The model reached its step limit for this turn.', 'warning');
    else if (outcome !== 'answered') this.note(message ?? 'The turn failed.', 'error');
    this.#endTurn();
  }

  /** Forgets everything drawn. */
  clear() {
    this.element.replaceChildren();
    this.#calls.clear();
    this.#endTurn();
  }

  /** Draws saved records (`GET /api/v1/conversations/{id}`). */
  replay(records) {
    for (const record of records) {
      if (record.type === 'user') this.user(record.text);
      else if (record.type === 'note') this.note(record.text);
      else if (record.type === 'assistant') {
        if (record.text) this.textDelta(record.text);
        for (const call of record.tool_calls ?? []) this.writing(call.id).appendCode(codeOf(call.arguments));
      } else if (record.type === 'tool') {
        const call = this.call(record.call_id);
        if (!call.code) call.appendCode(record.code);
        if (record.execution) this.executed(record.call_id, record.execution);
        else call.notRun(record.content);
      }
    }
    this.#endTurn();
  }

  #assistantTurn() {
    if (!this.#turn) {
      this.#turn = h('div', { class: 'message assistant' });
      this.element.append(this.#turn);
    }
    return this.#turn;
  }

  #endTurn() {
    // The files are listed after everything else the turn showed.
    if (this.#filesElement) this.#turn?.append(this.#filesElement);
    this.#filesElement = null;
    this.#turnFiles.clear();
    this.#turn = null;
    this.#text = null;
  }
}

/** The code of a recorded call: its arguments are `{"code": "…"}` as the model wrote them. */
function codeOf(argumentsJson) {
  try {
    const parsed = JSON.parse(argumentsJson);
    return typeof parsed?.code === 'string' ? parsed.code : argumentsJson;
  } catch {
    return argumentsJson;
  }
}

/** A conversation (or, before its first message or upload, the start of one). */
export class ChatView {
  #app;
  #links = null;
  #creating = null;
  #uploads = [];
  #drawnRecords = 0; // how many records the last drawing from the server had

  /** `conversationId` null: a new chat, created on its first message or upload. */
  constructor(app, conversationId) {
    this.#app = app;
    this.conversation = null;
    this.model = app.defaultModel;
    this.busy = false;
    const links = {
      file: (...args) => this.#links.file(...args),
      image: (...args) => this.#links.image(...args),
      text: (...args) => this.#links.text(...args),
    };
    this.transcript = new Transcript(links);
    this.working = h('div', { class: 'working', hidden: true }, h('span', { class: 'dots', 'aria-hidden': 'true' }, h('i'), h('i'), h('i')), h('span', { class: 'working-label' }, ''));
    this.intro = h(
      'div',
      { class: 'intro' },
      h('h2', {}, 'What should we look into?'),
      h('p', {}, 'Ask in plain words. The model writes Python and runs it in a sandboxed session; drop data files here to upload them to /mnt/data.'),
    );
    const column = h('div', { class: 'chat-column' }, this.intro, this.transcript.element, this.working);
    const scroller = h('div', { class: 'chat-scroll' }, column);
    this.scroll = followBottom(scroller, column);
    this.composer = this.#composer();
    this.element = h('section', { class: 'chat-view', 'aria-label': 'Chat' }, scroller, this.composer, h('div', { class: 'drop-hint', 'aria-hidden': 'true' }, icon('attach'), 'Drop files to upload them'));
    acceptDroppedFiles(this.element, (files) => this.upload(files));
    this.loaded = conversationId ? this.#load(conversationId) : Promise.resolve();
  }

  get title() {
    return this.conversation ? this.conversation.title || 'New chat' : 'New chat';
  }

  activate() {
    this.textarea.focus({ preventScroll: true });
    this.refresh();
  }

  /**
   * Catches up with what another tab did while this one was idle: a turn it began (then
   * followed from here too), or one that ended meanwhile.
   */
  async refresh() {
    if (this.busy || !this.conversation) return;
    const conversation = await api.conversation(this.conversation.id).catch(() => null);
    if (!conversation || this.busy) return;
    if (conversation.turn || (conversation.records ?? []).length !== this.#drawnRecords) this.#draw(conversation);
  }

  #composer() {
    this.attachments = h('ul', { class: 'attachments', 'aria-label': 'Uploaded files' });
    this.textarea = h('textarea', { rows: 1, placeholder: 'Ask about your data…', 'aria-label': 'Message', enterkeyhint: 'send' });
    const resize = autosize(this.textarea);
    this.textarea.addEventListener('keydown', (event) => {
      if (event.key === 'Enter' && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        this.send().then(resize);
      }
    });
    this.sendButton = h('button', { type: 'submit', class: 'send-button', 'aria-label': 'Send', title: 'Send' }, icon('send'));
    const attach = h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Upload files', title: 'Upload files', onclick: () => chooseFiles((files) => this.upload(files)) }, icon('attach'));
    const form = h(
      'form',
      { class: 'composer' },
      this.attachments,
      h('div', { class: 'composer-box' }, attach, this.textarea, this.sendButton),
      h('p', { class: 'composer-hint' }, 'Enter to send, Shift+Enter for a new line. Code runs in a sandboxed session.'),
    );
    form.addEventListener('submit', (event) => {
      event.preventDefault();
      if (this.busy) this.stop();
      else this.send().then(resize);
    });
    return form;
  }

  async #load(conversationId) {
    try {
      const conversation = await api.conversation(conversationId);
      this.#adopt(conversation);
      this.#draw(conversation);
    } catch (error) {
      this.transcript.note(`This conversation cannot be opened: ${error.message}`, 'error');
      this.composer.hidden = true;
    }
    this.#showIntro();
    requestAnimationFrame(() => this.scroll.toBottom());
  }

  #adopt(conversation) {
    this.conversation = conversation;
    this.model = conversation.model ?? this.model;
    this.#links = sessionLinks(conversation.session_id);
  }

  #showIntro() {
    this.intro.hidden = !this.transcript.isEmpty;
  }

  /** Creates the conversation behind a new chat, once. */
  async #ensureConversation() {
    if (this.conversation) return;
    this.#creating ??= api.createConversation(this.model.trim() || undefined).then(
      (conversation) => {
        this.#adopt(conversation);
        this.#app.adopted(this);
      },
      (error) => {
        this.#creating = null;
        throw error;
      },
    );
    await this.#creating;
  }

  async upload(files) {
    try {
      await this.#ensureConversation();
    } catch (error) {
      notify(error.message);
      return;
    }
    for (const file of files) {
      const state = h('span', { class: 'attachment-state' }, 'Uploading…');
      const remove = h('button', { type: 'button', class: 'icon-button', 'aria-label': `Remove ${file.name}`, title: 'Remove' }, icon('close'));
      const chip = h('li', { class: 'attachment', 'data-state': 'uploading' }, icon('file'), h('span', { class: 'attachment-name' }, file.name), state, remove);
      this.attachments.append(chip);
      // Resolves with whether the file is in the session.
      const upload = api.upload(this.conversation.session_id, file).then(
        () => {
          chip.dataset.state = 'done';
          state.textContent = formatBytes(file.size);
          return true;
        },
        (error) => {
          chip.dataset.state = 'failed';
          state.textContent = 'Failed';
          notify(`${file.name} was not uploaded: ${error.message}`);
          return false;
        },
      );
      this.#uploads.push(upload);
      remove.addEventListener('click', () => this.#removeAttachment(chip, upload, file.name));
    }
  }

  /** Takes an attached file back before the message is sent: out of the session, and off the message. */
  async #removeAttachment(chip, upload, name) {
    chip.dataset.state = 'removing';
    this.#uploads = this.#uploads.filter((pending) => pending !== upload);
    try {
      if (await upload) await api.deleteFile(this.conversation.session_id, name);
      chip.remove();
    } catch (error) {
      chip.dataset.state = 'done';
      notify(`${name} was not removed: ${error.message}`);
    }
  }

  async send() {
    const text = this.textarea.value.trim();
    if (!text || this.busy) return;
    this.#setBusy(true);
    try {
      await this.#ensureConversation();
      await Promise.all(this.#uploads);
    } catch (error) {
      notify(error.message);
      this.#setBusy(false);
      return;
    }
    this.#uploads = [];
    this.attachments.replaceChildren();
    this.textarea.value = '';
    const model = this.model.trim();
    const newModel = model && model !== this.conversation.model ? model : undefined;
    this.transcript.user(text);
    this.#showIntro();
    this.scroll.toBottom();
    try {
      let lost = false;
      try {
        lost = !(await api.sendMessage(this.conversation.id, text, newModel, this.#handlers()));
        if (newModel) this.conversation.model = newModel;
      } catch (error) {
        if (!(error instanceof ApiError)) throw error;
        // Refused before the turn began: the message was not taken; give it back.
        this.transcript.element.lastChild.remove();
        this.textarea.value = text;
        this.#showIntro();
        notify(error.message);
      }
      if (lost) await this.#redraw();
    } catch {
      // The stream broke off (the network, a laptop asleep): the turn goes on regardless.
      await this.#redraw();
    } finally {
      this.#setBusy(false);
      this.#app.conversationsChanged();
    }
  }

  /**
   * Draws the conversation as the server has it. A turn under way (the page opened after
   * a reload, in a second tab, or after a lost connection) shows what came before it from
   * the records and the turn itself from its events, so far and then live; the promise
   * resolves when the turn has ended.
   */
  #draw({ records = [], turn }) {
    this.#drawnRecords = records.length;
    this.transcript.clear();
    this.transcript.replay(turn ? records.slice(0, turn.records_before) : records);
    this.#showIntro();
    return turn ? this.#follow(turn) : Promise.resolve();
  }

  /** Shows the turn under way from its start and follows it to its end. */
  async #follow(turn) {
    this.transcript.user(turn.text);
    this.#setBusy(true);
    try {
      let lost = false;
      try {
        lost = !(await api.followTurn(this.conversation.id, this.#handlers()));
      } catch (error) {
        // 409: it ended before it could be followed, and is all in the records now.
        if (error instanceof ApiError && error.status !== 409 && error.status !== 0) throw error;
        lost = true;
      }
      if (lost) await this.#redraw();
    } catch (error) {
      this.transcript.end('error', `The answer cannot be followed: ${error.message}`);
    } finally {
      this.#setBusy(false);
      this.#app.conversationsChanged();
    }
  }

  /**
   * After a lost connection: draws the conversation again from the server, following
   * its turn if one is still under way; tries for about a minute.
   */
  async #redraw() {
    for (let delay = RECONNECT_DELAY_MS; delay <= 32 * RECONNECT_DELAY_MS; delay *= 2) {
      await new Promise((resolve) => setTimeout(resolve, delay));
      let conversation;
      try {
        conversation = await api.conversation(this.conversation.id);
      } catch {
        continue;
      }
      return this.#draw(conversation);
    }
    this.transcript.end('error', 'The connection to the server was lost; reload the page to see the rest of the answer.');
  }

  async stop() {
    if (!this.busy || !this.conversation) return;
    this.#working('Stopping…');
    try {
      await api.cancel(this.conversation.id);
    } catch (error) {
      notify(error.message);
    }
  }

  /** What each event of a turn (`event:` of the stream) does. */
  #handlers() {
    const t = this.transcript;
    const handlers = {
      text_delta: ({ text }) => t.textDelta(text),
      code_delta: ({ call_id, text }) => t.writing(call_id).appendCode(text),
      code: ({ call_id, code }) => t.writing(call_id).run(code),
      stdout: ({ call_id, text }) => t.call(call_id).output.stdout(text),
      stderr: ({ call_id, text }) => t.call(call_id).output.stderr(text),
      result: ({ call_id, data }) => t.call(call_id).output.result(data),
      error: ({ call_id, error }) => t.call(call_id).output.error(error),
      execution: ({ call_id, execution }) => t.executed(call_id, execution),
      final: ({ text }) => t.finalText(text),
      end: ({ outcome, message }) => t.end(outcome, message),
    };
    const clearingStatus = Object.fromEntries(
      Object.entries(handlers).map(([event, handle]) => [
        event,
        (data) => {
          this.#working('');
          handle(data);
        },
      ]),
    );
    clearingStatus.retrying = ({ attempt, delay_ms, reason }) =>
      this.#working(`${reason} Trying again in ${formatDuration(delay_ms)} (attempt ${attempt}).`);
    return clearingStatus;
  }

  #working(label) {
    this.working.lastChild.textContent = label;
  }

  #setBusy(busy) {
    this.busy = busy;
    this.working.hidden = !busy;
    this.#working('');
    this.transcript.element.setAttribute('aria-busy', busy);
    this.sendButton.replaceChildren(icon(busy ? 'stop' : 'send'));
    this.sendButton.setAttribute('aria-label', busy ? 'Stop' : 'Send');
    this.sendButton.title = busy ? 'Stop' : 'Send';
    this.sendButton.classList.toggle('stop', busy);
  }
}
