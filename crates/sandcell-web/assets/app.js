// The page: the sidebar of conversations and notebooks, the header (view switch, model,
// export), the routes between views (`#/` a new chat, `#/c/ID` a conversation,
// `#/c/ID/notebook` the saved notebook on its session (made on first visit), `#/n/ID` a saved notebook, `#/s/ID` a
// session's notebook alone) and the API key dialog.

import { api, apiKey, download, onUnauthorized } from './api.js';
import { ChatView } from './chat.js';
import { chooseFiles, h, icon, notify } from './dom.js';
import { NotebookView } from './notebook.js';

const $ = (id) => document.getElementById(id);

class App {
  #models = null; // `GET /api/v1/models`, once listed
  #modelsError = null; // why they could not be
  #conversations = [];
  #chats = new Map(); // conversation id → ChatView, kept so that a running turn survives navigation
  #notebooks = new Map(); // session id → NotebookView, kept with their cells
  #savedNotebooks = []; // `GET /api/v1/notebooks`
  #saved = new Map(); // notebook id → the promise of its NotebookView
  #draft = null; // the new chat, until its conversation exists
  #view = null;
  #route = 0;

  get defaultModel() {
    return this.#models?.default ?? '';
  }

  async start() {
    this.#decorate();
    this.#wire();
    onUnauthorized((message) => this.#askForKey(message));
    await Promise.all([this.#loadModels(), this.conversationsChanged(), this.notebooksChanged()]);
    window.addEventListener('hashchange', () => this.#navigate());
    await this.#navigate();
  }

  /** A new chat's conversation now exists. */
  adopted(chat) {
    const { id } = chat.conversation;
    this.#chats.set(id, chat);
    if (this.#draft === chat) this.#draft = null;
    if (this.#view === chat) history.replaceState(null, '', `#/c/${encodeURIComponent(id)}`);
    this.#renderHeader();
    this.conversationsChanged();
  }

  /** Reloads the conversation list (titles are set by the server after a first message). */
  async conversationsChanged() {
    try {
      this.#conversations = await api.conversations();
    } catch (error) {
      $('conversation-list').replaceChildren(h('li', { class: 'conversations-empty' }, `The conversations cannot be listed: ${error.message}`));
      return;
    }
    for (const conversation of this.#conversations) {
      const chat = this.#chats.get(conversation.id);
      if (chat?.conversation) chat.conversation.title = conversation.title;
    }
    this.#renderList();
    this.#renderHeader();
    this.#renderModelSuggestions();
  }

  /** Reloads the list of saved notebooks. */
  async notebooksChanged() {
    try {
      this.#savedNotebooks = await api.notebooks();
    } catch (error) {
      notify(`The notebooks cannot be listed: ${error.message}`);
      return;
    }
    this.#renderList();
  }

  #decorate() {
    $('new-chat').prepend(icon('plus'));
    $('new-notebook').prepend(icon('notebook'));
    $('open-notebook').prepend(icon('attach'));
    $('key-button').prepend(icon('key'));
    $('export').prepend(icon('download'));
    $('chat-tab').prepend(icon('chat'));
    $('notebook-tab').prepend(icon('notebook'));
    $('open-sidebar').append(icon('menu'));
    $('close-sidebar').append(icon('close'));
  }

  #wire() {
    $('new-chat').addEventListener('click', () => {
      if (location.hash === '#/') this.#view?.activate();
      location.hash = '#/';
    });
    $('new-notebook').addEventListener('click', () => this.#newNotebook());
    $('open-notebook').addEventListener('click', () => chooseFiles((files) => this.#importNotebooks(files)));
    $('key-button').addEventListener('click', () => this.#askForKey(null));
    $('export').addEventListener('click', () => this.#exportNotebook());
    $('model').addEventListener('input', (event) => {
      if (this.#view instanceof ChatView) this.#view.model = event.target.value;
      this.#renderBanner();
    });
    $('open-sidebar').addEventListener('click', () => this.#sidebar(true));
    $('close-sidebar').addEventListener('click', () => this.#sidebar(false));
    $('scrim').addEventListener('click', () => this.#sidebar(false));
    // Back to this tab: the conversation may have moved on in another.
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible' && this.#view instanceof ChatView) this.#view.refresh();
    });
    document.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && document.body.classList.contains('sidebar-open')) this.#sidebar(false);
    });
    $('key-form').addEventListener('submit', () => {
      apiKey.set($('key-input').value.trim());
      location.reload();
    });
    $('key-forget').addEventListener('click', () => {
      apiKey.set('');
      location.reload();
    });
    $('key-cancel').addEventListener('click', () => $('key-dialog').close());
  }

  async #loadModels() {
    try {
      this.#models = await api.models();
    } catch (error) {
      // A missing key has its own dialog.
      if (error.status !== 401) this.#modelsError = `The models cannot be listed: ${error.message}`;
      return;
    }
    // The conversations, listed at the same time, may have drawn the picker first.
    this.#renderModelSuggestions();
  }

  async #navigate() {
    const route = ++this.#route;
    let parts;
    try {
      parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
    } catch {
      parts = [];
    }
    if (parts[0] === 'c' && parts[1]) {
      const chat = this.#chat(parts[1]);
      if (parts[2] !== 'notebook') return this.#show(chat);
      await chat.loaded;
      if (route !== this.#route) return; // navigated elsewhere meanwhile
      if (!chat.conversation) return this.#show(chat); // it shows why it could not load
      let notebook;
      try {
        notebook = await this.#notebookOf(chat.conversation);
      } catch (error) {
        notify(`The conversation's notebook cannot be opened: ${error.message}`);
        if (route === this.#route) history.replaceState(null, '', `#/c/${encodeURIComponent(parts[1])}`);
        return route === this.#route && this.#show(chat);
      }
      if (route !== this.#route) return;
      history.replaceState(null, '', `#/n/${encodeURIComponent(notebook.id)}`);
      return this.#navigate();
    }
    if (parts[0] === 's' && parts[1]) return this.#show(this.#notebook(parts[1]));
    if (parts[0] === 'n' && parts[1]) {
      let view;
      try {
        view = await this.#savedNotebook(parts[1]);
      } catch (error) {
        this.#saved.delete(parts[1]);
        notify(`This notebook cannot be opened: ${error.message}`);
        if (route === this.#route) location.hash = '#/';
        return;
      }
      if (route === this.#route) this.#show(view);
      return;
    }
    if (location.hash !== '#/') history.replaceState(null, '', '#/');
    this.#draft ??= new ChatView(this, null);
    this.#show(this.#draft);
  }

  #chat(id) {
    if (!this.#chats.has(id)) {
      const chat = new ChatView(this, id);
      this.#chats.set(id, chat);
      chat.loaded.then(() => {
        if (this.#view !== chat) return;
        this.#renderHeader();
        this.#renderList();
      });
    }
    return this.#chats.get(id);
  }

  #notebook(sessionId) {
    if (!this.#notebooks.has(sessionId)) this.#notebooks.set(sessionId, new NotebookView(sessionId));
    return this.#notebooks.get(sessionId);
  }

  /**
   * The saved notebook on a conversation's session, made now if there is none yet: what
   * the person types there after the model stopped is kept like any notebook.
   */
  async #notebookOf(conversation) {
    const onSession = () => this.#savedNotebooks.find((notebook) => notebook.session_id === conversation.session_id);
    await this.notebooksChanged(); // another tab may have made it
    let notebook = onSession();
    if (!notebook) {
      notebook = await api.createNotebook({ title: `${conversation.title || 'New chat'} · Notebook`, session_id: conversation.session_id });
      await this.notebooksChanged();
    }
    return notebook;
  }

  /** A saved notebook's view, with a session of its own (a new one if its session is gone). */
  #savedNotebook(id) {
    if (!this.#saved.has(id)) {
      const view = (async () => {
        const notebook = await api.notebook(id);
        if (!notebook.session_id) {
          const session = await api.createSession();
          const saved = await api.saveNotebook(id, { session_id: session.id, revision: notebook.revision });
          notebook.session_id = session.id;
          notebook.revision = saved.revision;
        }
        return new NotebookView(notebook.session_id, notebook, {
          stale: () => this.#savedElsewhere(id),
          ask: () => this.#askAbout(notebook.session_id),
        });
      })();
      this.#saved.set(id, view);
    }
    return this.#saved.get(id);
  }

  /** The notebook was saved in another tab: what that tab saved is shown instead. */
  #savedElsewhere(id) {
    this.#saved.delete(id);
    notify('This notebook was changed in another tab; it is shown as saved there.');
    if (this.#view?.saved?.id === id) this.#navigate();
  }

  /** A conversation on a notebook's session (the model sees its variables and files), or the one it has. */
  async #askAbout(sessionId) {
    try {
      const session = await api.session(sessionId);
      const conversation = session.conversation_id ? { id: session.conversation_id } : await api.createConversation(this.defaultModel, sessionId);
      await this.conversationsChanged();
      location.hash = `#/c/${encodeURIComponent(conversation.id)}`;
    } catch (error) {
      notify(error.message);
    }
  }

  #show(view) {
    this.#view = view;
    $('view').replaceChildren(view.element);
    view.activate();
    this.#sidebar(false);
    this.#renderHeader();
    this.#renderList();
  }

  #renderHeader() {
    const view = this.#view;
    if (!view) return;
    // A saved notebook on a conversation's session switches to that conversation.
    const conversation = view.conversation ?? (view.saved ? this.#conversations.find((candidate) => candidate.session_id === view.sessionId) : null);
    const isChat = view instanceof ChatView;
    $('title').textContent = view.title;
    document.title = `${view.title} · sandcell`;
    $('view-switch').hidden = !conversation;
    if (conversation) {
      const base = `#/c/${encodeURIComponent(conversation.id)}`;
      // A conversation whose session has a saved notebook opens as that notebook.
      const notebook = this.#savedNotebooks.find((candidate) => candidate.session_id === conversation.session_id);
      $('chat-tab').href = base;
      $('notebook-tab').href = notebook ? `#/n/${encodeURIComponent(notebook.id)}` : `${base}/notebook`;
      for (const [tab, active] of [[$('chat-tab'), isChat], [$('notebook-tab'), !isChat]]) {
        if (active) tab.setAttribute('aria-current', 'page');
        else tab.removeAttribute('aria-current');
      }
    }
    $('model-picker').hidden = !isChat;
    if (isChat) $('model').value = view.model;
    $('export').hidden = !conversation && !view.saved;
    this.#renderBanner();
  }

  /** Without a model there is no chat: say how to configure one, and offer the notebook. */
  #renderBanner() {
    const banner = $('banner');
    const view = this.#view;
    const known = this.#models || this.#modelsError;
    banner.hidden = !known || !(view instanceof ChatView) || Boolean(view.model.trim());
    if (banner.hidden) return;
    const explanation = this.#modelsError ?? [h('strong', {}, 'No model is configured. '), this.#models.hint || 'Type one as provider:model above.'];
    banner.replaceChildren(
      h('p', {}, explanation),
      h('button', { type: 'button', class: 'tool-button', onclick: () => this.#newNotebook() }, icon('notebook'), 'Open a notebook instead'),
    );
  }

  #renderList() {
    const list = $('conversation-list');
    const currentNotebook = this.#view?.saved?.id;
    const notebooks = this.#savedNotebooks.length
      ? [h('li', { class: 'conversation-group' }, h('h2', {}, 'Notebooks'), h('ul', { id: 'notebook-list' }, this.#savedNotebooks.map((notebook) => this.#notebookItem(notebook, currentNotebook))))]
      : [];
    if (!this.#conversations.length) {
      list.replaceChildren(...notebooks, h('li', { class: 'conversations-empty' }, 'No conversations yet.'));
      return;
    }
    const groups = new Map();
    for (const conversation of this.#conversations) {
      const group = dayGroup(conversation.updated_at ?? conversation.created_at);
      if (!groups.has(group)) groups.set(group, []);
      groups.get(group).push(conversation);
    }
    const current = this.#view?.conversation?.id;
    list.replaceChildren(
      ...notebooks,
      ...[...groups].map(([group, conversations]) =>
        h('li', { class: 'conversation-group' }, h('h2', {}, group), h('ul', {}, conversations.map((conversation) => this.#listItem(conversation, current)))),
      ),
    );
  }

  #listItem(conversation, current) {
    const title = conversation.title || 'New chat';
    return h(
      'li',
      { class: 'conversation' },
      h('a', { href: `#/c/${encodeURIComponent(conversation.id)}`, 'aria-current': conversation.id === current ? 'page' : null, title }, title),
      h('button', { type: 'button', class: 'icon-button', 'aria-label': `Delete “${title}”`, title: 'Delete', onclick: () => this.#delete(conversation) }, icon('trash')),
    );
  }

  #notebookItem(notebook, current) {
    return h(
      'li',
      { class: 'conversation notebook-item' },
      h('a', { href: `#/n/${encodeURIComponent(notebook.id)}`, 'aria-current': notebook.id === current ? 'page' : null, title: notebook.title }, notebook.title),
      h('button', { type: 'button', class: 'icon-button', 'aria-label': `Rename “${notebook.title}”`, title: 'Rename', onclick: () => this.#renameNotebook(notebook) }, icon('edit')),
      h('button', { type: 'button', class: 'icon-button', 'aria-label': `Delete “${notebook.title}”`, title: 'Delete', onclick: () => this.#deleteNotebook(notebook) }, icon('trash')),
    );
  }

  async #renameNotebook(notebook) {
    const title = prompt('Rename the notebook', notebook.title)?.trim();
    if (!title || title === notebook.title) return;
    // An open notebook renames itself, in turn with its saves (each names its revision).
    const view = await this.#saved.get(notebook.id)?.catch(() => null);
    try {
      if (view) await view.rename(title);
      else await api.saveNotebook(notebook.id, { title });
    } catch (error) {
      notify(error.message);
      return;
    }
    await this.notebooksChanged();
    this.#renderHeader();
  }

  async #deleteNotebook(notebook) {
    if (!confirm(`Delete “${notebook.title}” and its session’s files?`)) return;
    try {
      await api.deleteNotebook(notebook.id);
    } catch (error) {
      notify(error.message);
      return;
    }
    this.#saved.delete(notebook.id);
    if (this.#view?.saved?.id === notebook.id) location.hash = '#/';
    this.notebooksChanged();
  }

  async #importNotebooks(files) {
    let opened = null;
    for (const file of files) {
      try {
        let notebook;
        try {
          notebook = JSON.parse(await file.text());
        } catch {
          throw new Error('it is not a Jupyter notebook (not JSON)');
        }
        opened = await api.importNotebook(file.name, notebook);
      } catch (error) {
        notify(`${file.name} cannot be opened: ${error.message}`);
      }
    }
    await this.notebooksChanged();
    if (opened) location.hash = `#/n/${encodeURIComponent(opened.id)}`;
  }

  #renderModelSuggestions() {
    // The config file's providers come as `NAME:`, for the model's name to follow.
    const providers = (this.#models?.providers ?? []).map((provider) => `${provider}:`);
    const models = new Set([this.#models?.default, ...this.#conversations.map((conversation) => conversation.model), ...providers].filter(Boolean));
    $('model-suggestions').replaceChildren(...[...models].map((model) => h('option', { value: model })));
  }

  async #delete(conversation) {
    if (!confirm(`Delete “${conversation.title || 'New chat'}” and its session’s files?`)) return;
    try {
      await api.deleteConversation(conversation.id);
    } catch (error) {
      notify(error.message);
      return;
    }
    this.#chats.delete(conversation.id);
    this.#notebooks.delete(conversation.session_id);
    if (this.#view?.conversation?.id === conversation.id) location.hash = '#/';
    this.conversationsChanged();
  }

  async #newNotebook() {
    try {
      const notebook = await api.createNotebook({});
      await this.notebooksChanged();
      location.hash = `#/n/${encodeURIComponent(notebook.id)}`;
    } catch (error) {
      notify(error.message);
    }
  }

  async #exportNotebook() {
    const saved = this.#view?.saved;
    if (saved) {
      try {
        await download(api.ipynbUrl(saved.id), `${fileName(saved.title)}.ipynb`);
      } catch (error) {
        notify(error.message);
      }
      return;
    }
    const conversation = this.#view?.conversation;
    if (!conversation) return;
    const name = fileName(conversation.title || 'conversation');
    try {
      await download(api.notebookUrl(conversation.id), `${name}.ipynb`);
    } catch (error) {
      notify(error.message);
    }
  }

  #askForKey(message) {
    const dialog = $('key-dialog');
    if (dialog.open) return;
    $('key-dialog-message').textContent = `${message ?? 'The key this server was started with.'} It is kept in this browser only.`;
    $('key-input').value = apiKey.get();
    dialog.showModal();
  }

  #sidebar(open) {
    document.body.classList.toggle('sidebar-open', open);
    $('scrim').hidden = !open;
    $('open-sidebar').setAttribute('aria-expanded', open);
  }
}

/** A title as a file name. */
function fileName(title) {
  return title.replace(/[^\p{L}\p{N}._-]+/gu, '-').slice(0, 80);
}

function dayGroup(timestamp) {
  const date = new Date(timestamp);
  if (Number.isNaN(date.getTime())) return 'Earlier';
  const today = new Date();
  today.setHours(0, 0, 0, 0);
  const days = (today - date) / 86_400_000;
  if (days <= 0) return 'Today';
  if (days <= 1) return 'Yesterday';
  if (days <= 7) return 'Previous 7 days';
  return 'Earlier';
}

new App().start();
