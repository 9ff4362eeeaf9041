// The sandcell HTTP API as the page uses it: every route in one place, JSON errors turned
// into exceptions carrying the server's message, Server-Sent Event streams read from
// `fetch` (POST bodies rule out EventSource), and the optional API key.

const KEY_STORAGE = 'sandcell.apiKey';

/** The API key, kept in localStorage and sent as `Authorization: Bearer`. */
export const apiKey = {
  get() {
    try {
      return localStorage.getItem(KEY_STORAGE) ?? '';
    } catch {
      return '';
    }
  },
  set(key) {
    try {
      if (key) localStorage.setItem(KEY_STORAGE, key);
      else localStorage.removeItem(KEY_STORAGE);
    } catch {
      // Storage can be disabled; the key then lasts until the page is closed.
    }
  },
};

/** An error answer (`{"error": {"code", "message"}}`), or no answer at all (status 0). */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let unauthorized = () => {};

/** `handler(message)` runs whenever the server answers 401. */
export function onUnauthorized(handler) {
  unauthorized = handler;
}

async function request(method, path, { json, body, accept, signal } = {}) {
  const headers = {};
  const key = apiKey.get();
  if (key) headers.Authorization = `Bearer ${key}`;
  if (accept) headers.Accept = accept;
  if (json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(json);
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === 'AbortError') throw error;
    throw new ApiError(0, 'unreachable', 'The server cannot be reached. Is sandcell serve still running?');
  }
  if (!response.ok) throw await errorOf(response);
  return response;
}

async function errorOf(response) {
  let code = `http_${response.status}`;
  let message = `The server answered ${response.status} ${response.statusText}.`;
  try {
    const { error } = await response.json();
    if (error?.message) {
      code = error.code ?? code;
      message = error.message;
    }
  } catch {
    // Not a JSON error body: keep the status line.
  }
  if (response.status === 401) unauthorized(message);
  return new ApiError(response.status, code, message);
}

async function json(method, path, body) {
  const response = await request(method, path, { json: body });
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

/** Every item of a list (`{"data": [...], "next"}`), following its pages. */
async function all(path) {
  const items = [];
  let after = null;
  do {
    const query = after === null ? '' : `?after=${encodeURIComponent(after)}`;
    const page = await json('GET', `${path}${query}`);
    items.push(...page.data);
    after = page.next;
  } while (after !== null && after !== undefined);
  return items;
}

/**
 * Sends the request (a POST with `body`, or a GET when `body` is undefined) and reads the
 * answer as Server-Sent Events, calling `handlers[event](data)` with each event's JSON
 * data; events without a handler are skipped. Resolves when the stream ends, with
 * whether an `end` event came (a stream cut short has none).
 */
async function stream(path, body, handlers) {
  const method = body === undefined ? 'GET' : 'POST';
  const response = await request(method, path, { json: body, accept: 'text/event-stream' });
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  const parser = new SseParser();
  let ended = false;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return ended;
    for (const { event, data } of parser.push(value)) {
      ended ||= event === 'end';
      const handler = handlers[event];
      if (handler) handler(parseData(data));
    }
  }
}

function parseData(data) {
  try {
    return JSON.parse(data);
  } catch {
    return data;
  }
}

/** An incremental parser of the `text/event-stream` format. */
export class SseParser {
  #buffer = '';
  #event = '';
  #data = [];

  /** Takes the next piece of the stream; returns the events it completed. */
  push(text) {
    // A CR at the end may be the first half of a CRLF: keep it for the next piece.
    const source = this.#buffer + text;
    const held = source.endsWith('\r') ? '\r' : '';
    const lines = (held ? source.slice(0, -1) : source).split(/\r\n|\r|\n/);
    this.#buffer = lines.pop() + held;
    const events = [];
    for (const line of lines) {
      if (line === '') {
        if (this.#data.length) events.push({ event: this.#event || 'message', data: this.#data.join('\n') });
        this.#event = '';
        this.#data = [];
        continue;
      }
      if (line.startsWith(':')) continue;
      const colon = line.indexOf(':');
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? '' : line.slice(colon + 1);
      if (value.startsWith(' ')) value = value.slice(1);
      if (field === 'event') this.#event = value;
      else if (field === 'data') this.#data.push(value);
    }
    return events;
  }
}

const id = encodeURIComponent;

/** The URL of a file in a session's working directory (a path relative to /mnt/data). */
export function fileUrl(sessionId, path) {
  const relative = path.replace(/^(sandbox:)?\/mnt\/data\//, '');
  return `/api/v1/sessions/${id(sessionId)}/files/${relative.split('/').map(id).join('/')}`;
}

/** Downloads `url` as a file named `name`, with the API key if there is one. */
export async function download(url, name) {
  const blob = await (await request('GET', url)).blob();
  const objectUrl = URL.createObjectURL(blob);
  const link = Object.assign(document.createElement('a'), { href: objectUrl, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(objectUrl), 60_000);
}

/** A session file's text (a preview of a small one). */
export async function fileText(url) {
  return (await request('GET', url)).text();
}

/** A session file as a `blob:` URL, for images (an `<img>` cannot send the API key). */
export async function fileObjectUrl(url) {
  return URL.createObjectURL(await (await request('GET', url)).blob());
}

export const api = {
  models: () => json('GET', '/api/v1/models'),

  conversations: () => all('/api/v1/conversations'),
  conversation: (conversationId) => json('GET', `/api/v1/conversations/${id(conversationId)}`),
  /** A new conversation, in a new session or in `sessionId` (a notebook's, shared with it). */
  createConversation: (model, sessionId) => json('POST', '/api/v1/conversations', { ...(model && { model }), ...(sessionId && { session_id: sessionId }) }),
  deleteConversation: (conversationId) => json('DELETE', `/api/v1/conversations/${id(conversationId)}`),
  /** Streams the turn's AgentEvents, then `end`. */
  sendMessage: (conversationId, text, model, handlers) =>
    stream(`/api/v1/conversations/${id(conversationId)}/messages`, model ? { text, model } : { text }, handlers),
  /** Follows the turn under way (the conversation's `turn`) from its start; 404 when none is. */
  followTurn: (conversationId, handlers) => stream(`/api/v1/conversations/${id(conversationId)}/events`, undefined, handlers),
  cancel: (conversationId) => json('POST', `/api/v1/conversations/${id(conversationId)}/cancel`),
  notebookUrl: (conversationId) => `/api/v1/conversations/${id(conversationId)}/notebook`,

  createSession: () => json('POST', '/api/v1/sessions', {}),
  session: (sessionId) => json('GET', `/api/v1/sessions/${id(sessionId)}`),
  /**
   * Streams `execution` (its id), `notice` (Python was restarted first), `stdout`,
   * `stderr`, `result`, `error`, `files`, then `end` (the Execution), or `failure` (an
   * error body) instead of `end`.
   */
  execute: (sessionId, code, handlers) => stream(`/api/v1/sessions/${id(sessionId)}/execute`, { code }, handlers),
  /** Follows an execution (running or kept) from its start, with the events of `execute`. */
  followExecution: (sessionId, executionId, handlers) =>
    stream(`/api/v1/sessions/${id(sessionId)}/executions/${id(executionId)}/events`, undefined, handlers),
  interrupt: (sessionId) => json('POST', `/api/v1/sessions/${id(sessionId)}/interrupt`),
  /**
   * What IPython's completer offers at `cursorPos` (in code points) of `code`: Jupyter's
   * complete_reply, `{matches, cursor_start, cursor_end}`. Refused (409) while a cell runs.
   */
  complete: async (sessionId, code, cursorPos, signal) =>
    (await request('POST', `/api/v1/sessions/${id(sessionId)}/complete`, { json: { code, cursor_pos: cursorPos }, signal })).json(),
  restart: (sessionId) => json('POST', `/api/v1/sessions/${id(sessionId)}/restart`),

  notebooks: () => all('/api/v1/notebooks'),
  notebook: (notebookId) => json('GET', `/api/v1/notebooks/${id(notebookId)}`),
  createNotebook: (notebook) => json('POST', '/api/v1/notebooks', notebook),
  /**
   * Saves what `change` gives: `title`, `session_id`, `cells` (every cell), and the
   * `revision` it changes (409 when the notebook was saved since). Answers its info.
   */
  saveNotebook: (notebookId, change) => json('PATCH', `/api/v1/notebooks/${id(notebookId)}`, change),
  deleteNotebook: (notebookId) => json('DELETE', `/api/v1/notebooks/${id(notebookId)}`),
  importNotebook: (name, notebook) => json('POST', '/api/v1/notebooks/import', { name, notebook }),
  ipynbUrl: (notebookId) => `/api/v1/notebooks/${id(notebookId)}/ipynb`,

  /** The files in the session's /mnt/data: `[{path, size, mime, modified}]`. */
  files: (sessionId) => all(`/api/v1/sessions/${id(sessionId)}/files`),
  upload: (sessionId, file) => request('PUT', fileUrl(sessionId, file.name), { body: file }),
  deleteFile: (sessionId, path) => request('DELETE', fileUrl(sessionId, path)),
};
