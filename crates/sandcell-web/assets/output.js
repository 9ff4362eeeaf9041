// What running code produced, drawn the same way in the chat and in the notebook:
// streamed output as it comes, then the finished Execution.

import { download, fileObjectUrl, fileText, fileUrl } from './api.js';
import { formatBytes, formatDuration, h, icon, notify, onceAFrame } from './dom.js';
import { renderMarkdown } from './markdown.js';

/** The largest image file shown as a preview beside its link. */
const PREVIEW_IMAGE_BYTES = 8 * 1024 * 1024;
/** The largest CSV file whose first rows are shown beside its link (the file is read whole). */
const PREVIEW_CSV_BYTES = 256 * 1024;
const PREVIEW_CSV_ROWS = 5;

/**
 * Links to the files of one session: `file(path, label)` a download link, `image(path,
 * alt)` an image, `text(path)` the promise of its text. They fetch with the API key,
 * which plain links and images cannot send.
 */
export function sessionLinks(sessionId) {
  const images = new Map();
  const file = (path, label) => {
    const url = fileUrl(sessionId, path);
    const name = path.split('/').at(-1);
    const open = (event) => {
      event.preventDefault();
      download(url, name).catch((error) => notify(error.message));
    };
    return h('a', { href: url, download: name, class: 'file-link', onclick: open }, label ?? path);
  };
  const image = (path, alt) => {
    const url = fileUrl(sessionId, path);
    if (!images.has(url)) images.set(url, fileObjectUrl(url));
    const element = h('img', { alt: alt || path, class: 'file-image' });
    images.get(url).then(
      (objectUrl) => (element.src = objectUrl),
      () => element.replaceWith(file(path, [alt || path])),
    );
    return element;
  };
  const text = (path) => fileText(fileUrl(sessionId, path));
  return { file, image, text };
}

const STATUS = {
  error: 'Error',
  timeout: 'Timed out',
  interrupted: 'Interrupted',
  crashed: 'Python crashed',
};

/** A short account of how an execution ended. */
export function statusLabel(execution) {
  return execution.status === 'ok' ? `Ran in ${formatDuration(execution.duration_ms)}` : STATUS[execution.status] ?? execution.status;
}

/**
 * The outputs of one cell. With `listFiles` false the files an execution wrote are left
 * to the caller (the chat lists them once per turn).
 */
export class OutputArea {
  #links;
  #listFiles;
  #stream = null;

  constructor(links, { listFiles = true } = {}) {
    this.#links = links;
    this.#listFiles = listFiles;
    this.element = h('div', { class: 'outputs' });
  }

  stdout(text) {
    this.#write('stdout', text);
  }

  stderr(text) {
    this.#write('stderr', text);
  }

  result(bundle) {
    this.#stream = null;
    this.element.append(renderBundle(bundle, this.#links));
  }

  error(error) {
    this.#stream = null;
    this.element.append(renderError(error));
  }

  #files(files) {
    this.#stream = null;
    if (files.length) this.element.append(fileList(files, this.#links));
  }

  note(text) {
    this.#stream = null;
    this.element.append(h('p', { class: 'output output-note' }, text));
  }

  clear() {
    this.#stream = null;
    this.element.replaceChildren();
  }

  /**
   * Shows a finished execution in place of what streamed: a live cell and one read back
   * from a saved conversation look the same.
   */
  complete(execution) {
    this.clear();
    if (execution.restarted) this.note('Python was restarted before this ran: earlier variables are gone, files remain.');
    if (execution.stdout) this.stdout(execution.stdout);
    if (execution.stderr) this.stderr(execution.stderr);
    for (const bundle of execution.results ?? []) this.result(bundle);
    if (execution.error) this.error(execution.error);
    else if (execution.status !== 'ok') this.note(statusLabel(execution));
    if (this.#listFiles) this.#files(execution.files ?? []);
  }

  #write(name, text) {
    if (this.#stream?.name !== name) {
      const pre = h('pre', { class: `output output-${name}` });
      const stream = { name, text: '' };
      // Output can come in thousands of pieces: draw it at most once a frame.
      stream.draw = onceAFrame(() => pre.replaceChildren(ansiToNodes(collapseCarriageReturns(stream.text))));
      this.#stream = stream;
      this.element.append(pre);
    }
    this.#stream.text += text;
    this.#stream.draw();
  }
}

/** The richest form of a MIME bundle that the page can show safely. */
function renderBundle(bundle, links) {
  const text = (mime) => {
    const value = bundle[mime];
    return Array.isArray(value) ? value.join('') : typeof value === 'string' ? value : null;
  };
  // A figure's text is its title when it has one (the kernel writes "Figure: TITLE").
  const alt = text('text/plain') ?? 'Figure';
  for (const mime of ['image/png', 'image/jpeg', 'image/gif', 'image/webp']) {
    const data = text(mime);
    if (data) return imageFigure(`data:${mime};base64,${data.replace(/\s/g, '')}`, alt, mime);
  }
  const svg = text('image/svg+xml');
  // An SVG shown as an image runs no script.
  if (svg) return imageFigure(`data:image/svg+xml;charset=utf-8,${encodeURIComponent(svg)}`, alt, 'image/svg+xml');
  const html = text('text/html');
  if (html) return htmlFrame(html);
  const markdown = text('text/markdown');
  if (markdown) return h('div', { class: 'output output-markdown markdown' }, renderMarkdown(markdown, links));
  if ('application/json' in bundle) return h('pre', { class: 'output output-result' }, JSON.stringify(bundle['application/json'], null, 2));
  const plain = text('text/plain') ?? text('text/latex');
  if (plain !== null) return h('pre', { class: 'output output-result' }, ansiToNodes(plain));
  return h('p', { class: 'output output-note' }, `An output of a type this page does not show (${Object.keys(bundle).join(', ')}).`);
}

/**
 * HTML results (DataFrames, mostly) go into a frame with `sandbox=""`: no script, no
 * forms, an origin of its own, and the page's policy. That frame is what keeps the page
 * safe. Scripts, styles and event attributes are cut out of the text beforehand only so
 * that their blocking does not fill the console; the text is not parsed here, because
 * parsing it in the page would apply the page's policy to it and log the same warnings.
 */
function htmlFrame(html) {
  const cleaned = html
    .replace(/<(script|style)\b[\s\S]*?<\/\1\s*>/gi, '')
    .replace(/<\/?(script|style|link|meta|base)\b[^>]*>/gi, '')
    .replace(/<[a-z][^>]*>/gi, (tag) => tag.replace(/\s(style|on\w+)\s*=\s*("[^"]*"|'[^']*'|[^\s>]+)/gi, ''));
  const rows = (cleaned.match(/<tr[\s>]/gi) ?? []).length;
  const frame = h('iframe', { sandbox: '', class: 'output output-html', title: 'HTML output' });
  frame.srcdoc =
    `<!doctype html><html><head><meta charset="utf-8"><link rel="stylesheet" href="${new URL('/assets/frame.css', location.href)}">` +
    `</head><body>${cleaned}</body></html>`;
  // A sandboxed frame cannot report its height: estimate it from the rows.
  const captions = (cleaned.match(/<p[\s>]/gi) ?? []).length;
  frame.style.height = `${rows ? Math.min(24 + rows * 28 + captions * 30, 440) : 220}px`;
  return frame;
}

function renderError(error) {
  const traceback = (error.traceback ?? []).join('\n') || `${error.ename}: ${error.evalue}`;
  // Tracebacks with colour codes keep their colours; sandcell's kernel writes plain ones,
  // coloured here by their parts as Jupyter colours them.
  const nodes = traceback.includes('\x1b') ? ansiToNodes(traceback) : tracebackToNodes(traceback, error.ename);
  return h('pre', { class: 'output output-error' }, nodes);
}

/** A plain IPython traceback with its parts in `tb-…` spans: where, the failing line, the error. */
function tracebackToNodes(traceback, ename) {
  const fragment = document.createDocumentFragment();
  const lines = traceback.split('\n');
  lines.forEach((line, index) => {
    if (index > 0) fragment.append('\n');
    let match;
    if (ename && (line.startsWith(`${ename}:`) || line.startsWith(`${ename} `) || line === ename)) {
      const name = line.slice(0, ename.length);
      fragment.append(h('span', { class: 'tb-ename' }, name), line.slice(name.length));
    } else if ((match = line.match(/^(Cell In\s*\[\d*\]|File [^,]+)(,.*)$/))) {
      fragment.append(h('span', { class: 'tb-location' }, match[1]), match[2]);
    } else if ((match = line.match(/^(-+>|\s*\^+\s*$)(.*)$/))) {
      fragment.append(h('span', { class: 'tb-arrow' }, match[1]), match[2]);
    } else {
      fragment.append(line);
    }
  });
  return fragment;
}

const IMAGE_EXTENSIONS = { 'image/png': 'png', 'image/jpeg': 'jpg', 'image/gif': 'gif', 'image/webp': 'webp', 'image/svg+xml': 'svg' };

/** An image output: a click (or Enter) enlarges it, and it downloads under a name from its title. */
function imageFigure(src, alt, mime) {
  const extension = IMAGE_EXTENSIONS[mime];
  const title = alt.replace(/^Figure: /, '');
  const name = `${title.startsWith('<') ? 'figure' : title.replace(/[^\p{L}\p{N}._-]+/gu, '-').slice(0, 80) || 'figure'}.${extension}`;
  const image = h('img', { src, alt, tabindex: '0', title: 'Click to enlarge' });
  const enlarge = () => showEnlarged(src, alt);
  image.addEventListener('click', enlarge);
  image.addEventListener('keydown', (event) => {
    if (event.key === 'Enter' || event.key === ' ') {
      event.preventDefault();
      enlarge();
    }
  });
  const save = h('a', { class: 'figure-download', href: src, download: name }, icon('download'), `Download ${extension.toUpperCase()}`);
  return h('figure', { class: 'output output-image' }, image, h('figcaption', {}, save));
}

/** The image the size of the window, in a modal dialog that Escape, the button or a click beside it closes. */
function showEnlarged(src, alt) {
  const close = h('button', { type: 'button', class: 'icon-button image-dialog-close', 'aria-label': 'Close' }, icon('close'));
  const dialog = h('dialog', { class: 'image-dialog', 'aria-label': alt }, h('img', { src, alt }), close);
  close.addEventListener('click', () => dialog.close());
  dialog.addEventListener('click', (event) => {
    if (event.target === dialog) dialog.close();
  });
  dialog.addEventListener('close', () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

/** Links to files an execution wrote, each with its size and a preview where it has one. */
export function fileList(files, links) {
  return h(
    'ul',
    { class: 'output output-files', 'aria-label': 'Files written' },
    files.map((file) =>
      h(
        'li',
        {},
        links.file(file.path, [icon('download'), h('span', { class: 'file-name' }, file.path), h('span', { class: 'file-size' }, formatBytes(file.size))]),
        filePreview(file, links),
      ),
    ),
  );
}

/** A small image file itself, or a small CSV file's first rows; nothing for other files. */
function filePreview(file, links) {
  if (file.mime?.startsWith('image/') && file.size <= PREVIEW_IMAGE_BYTES) {
    const image = links.image(file.path, file.path);
    image.classList.add('file-preview');
    return image;
  }
  const csv = file.mime === 'text/csv' || file.path.toLowerCase().endsWith('.csv');
  if (!csv || file.size > PREVIEW_CSV_BYTES) return null;
  const table = h('table', { class: 'csv-preview', 'aria-label': `The first rows of ${file.path}` });
  links.text(file.path).then(
    (text) => {
      const rows = csvRows(text, PREVIEW_CSV_ROWS + 1);
      if (!rows.length) return table.remove();
      const [head, ...body] = rows;
      table.append(h('thead', {}, h('tr', {}, head.map((cell) => h('th', {}, cell)))), h('tbody', {}, body.map((row) => h('tr', {}, row.map((cell) => h('td', {}, cell))))));
    },
    // Gone since, or unreadable: the link stays and says so when followed.
    () => table.remove(),
  );
  return table;
}

/** The first `count` records of CSV text (RFC 4180: quoted fields, doubled quotes, line breaks in quotes). */
function csvRows(text, count) {
  const rows = [];
  let row = [];
  let field = '';
  let quoted = false;
  for (let k = 0; k < text.length && rows.length < count; k += 1) {
    const char = text[k];
    if (quoted) {
      if (char === '"' && text[k + 1] === '"') {
        field += '"';
        k += 1;
      } else if (char === '"') quoted = false;
      else field += char;
    } else if (char === '"') quoted = true;
    else if (char === ',') {
      row.push(field);
      field = '';
    } else if (char === '\n' || char === '\r') {
      if (char === '\r' && text[k + 1] === '\n') k += 1;
      row.push(field);
      rows.push(row);
      row = [];
      field = '';
    } else field += char;
  }
  if (rows.length < count && (field || row.length)) rows.push([...row, field]);
  return rows;
}

/** What a terminal shows for output with carriage returns (progress bars): each line's last rewrite. */
function collapseCarriageReturns(text) {
  if (!text.includes('\r')) return text;
  return text
    .split('\n')
    .map((line) => {
      const parts = line.replace(/\r+$/, '').split('\r');
      return parts.at(-1);
    })
    .join('\n');
}

const ANSI = /\x1b\[([\d;]*)m|\x1b\[[\d;?]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)/g;

/** Text with ANSI colour codes (IPython tracebacks) as spans with `ansi-…` classes. */
function ansiToNodes(text) {
  const fragment = document.createDocumentFragment();
  let foreground = null;
  let background = null;
  let bold = false;
  let last = 0;
  const emit = (piece) => {
    if (!piece) return;
    if (foreground === null && background === null && !bold) return fragment.append(piece);
    const classes = [foreground !== null && `ansi-fg-${foreground}`, background !== null && `ansi-bg-${background}`, bold && 'ansi-bold'];
    fragment.append(h('span', { class: classes.filter(Boolean).join(' ') }, piece));
  };
  for (const match of text.matchAll(ANSI)) {
    emit(text.slice(last, match.index));
    last = match.index + match[0].length;
    if (match[1] === undefined) continue;
    const codes = match[1] === '' ? [0] : match[1].split(';').map(Number);
    for (let k = 0; k < codes.length; k += 1) {
      const code = codes[k];
      if (code === 0) [foreground, background, bold] = [null, null, false];
      else if (code === 1) bold = true;
      else if (code === 22) bold = false;
      else if (code >= 30 && code <= 37) foreground = code - 30;
      else if (code >= 90 && code <= 97) foreground = code - 82;
      else if (code === 39) foreground = null;
      else if (code >= 40 && code <= 47) background = code - 40;
      else if (code >= 100 && code <= 107) background = code - 92;
      else if (code === 49) background = null;
      else if (code === 38 || code === 48) {
        // 256-colour (5;n) and true-colour (2;r;g;b) forms: the 16 basic colours are kept.
        const basic = codes[k + 1] === 5 && codes[k + 2] < 16 ? codes[k + 2] : null;
        if (code === 38) foreground = basic;
        else background = basic;
        k += codes[k + 1] === 5 ? 2 : 4;
      }
    }
  }
  emit(text.slice(last));
  return fragment;
}
