// Small DOM helpers. Text always goes into the page as text nodes, never as HTML.

/**
 * Creates an element. `props`: `class`, `on<event>` listeners, anything else an
 * attribute (`true` for a boolean attribute; `null`, `undefined` and `false` are left
 * out). Children are nodes or strings (added as text), nested arrays allowed.
 */
export function h(tag, props = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value == null || value === false) continue;
    if (name === 'class') element.className = value;
    else if (name.startsWith('on')) element.addEventListener(name.slice(2), value);
    else element.setAttribute(name, value === true ? '' : value);
  }
  for (const child of children.flat(Infinity)) {
    if (child != null && child !== false) element.append(child);
  }
  return element;
}

const ICONS = {
  plus: 'M12 5v14M5 12h14',
  send: 'M12 19V5M6 11l6-6 6 6',
  stop: 'M7 7h10v10H7z',
  attach: 'M20 11.5l-7.8 7.8a5 5 0 0 1-7.1-7.1l8.2-8.2a3.3 3.3 0 0 1 4.7 4.7l-8.2 8.2a1.7 1.7 0 0 1-2.4-2.4l7.5-7.5',
  trash: 'M4 7h16M10 11v6M14 11v6M6 7l1 13h10l1-13M9 7V4h6v3',
  download: 'M12 4v11M7 10l5 5 5-5M5 20h14',
  menu: 'M4 6h16M4 12h16M4 18h16',
  close: 'M6 6l12 12M18 6L6 18',
  play: 'M8 5.5v13l10-6.5z',
  notebook: 'M6 3h12a1 1 0 0 1 1 1v16a1 1 0 0 1-1 1H6zM9 3v18M12 8h4M12 12h4',
  chat: 'M5 5h14a1 1 0 0 1 1 1v9a1 1 0 0 1-1 1H10l-5 4v-4H5a1 1 0 0 1-1-1V6a1 1 0 0 1 1-1z',
  restart: 'M4 12a8 8 0 1 0 2.4-5.7M4 4v5h5',
  key: 'M14.5 9.5a4 4 0 1 1-8 0 4 4 0 0 1 8 0zM13.5 12.5L20 19m-3-3l2-2',
  file: 'M7 3h7l5 5v13H7zM14 3v5h5',
  edit: 'M4 20h4L19 9l-4-4L4 16zM14 6l4 4',
  copy: 'M9 9h11v11H9zM5 15H4V4h11v1',
};

/** A 24×24 line icon, hidden from assistive technology (its button carries the label). */
export function icon(name) {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('class', `icon icon-${name}`);
  const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
  path.setAttribute('d', ICONS[name]);
  svg.append(path);
  return svg;
}

export function formatBytes(bytes) {
  if (bytes < 1024) return `${bytes} B`;
  const units = ['KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let unit = -1;
  do {
    value /= 1024;
    unit += 1;
  } while (value >= 1024 && unit < units.length - 1);
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

export function formatDuration(ms) {
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
}

/** Calls `draw` once in the next frame, however often it is asked for before then. */
export function onceAFrame(draw) {
  let pending = false;
  return () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      draw();
    });
  };
}

/** Grows a textarea with its content, up to its CSS max-height. */
export function autosize(textarea) {
  const resize = () => {
    textarea.style.height = 'auto';
    textarea.style.height = `${textarea.scrollHeight}px`;
  };
  textarea.addEventListener('input', resize);
  requestAnimationFrame(resize);
  return resize;
}

/**
 * Makes `element` accept dropped files: while files are dragged over it, it gets the
 * class `dragging` (the stylesheet shows a drop hint); `onFiles` receives what is dropped.
 */
export function acceptDroppedFiles(element, onFiles) {
  let depth = 0;
  const carriesFiles = (event) => event.dataTransfer?.types.includes('Files');
  element.addEventListener('dragenter', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth += 1;
    element.classList.add('dragging');
  });
  element.addEventListener('dragover', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
  });
  element.addEventListener('dragleave', (event) => {
    if (!carriesFiles(event)) return;
    depth = Math.max(0, depth - 1);
    if (depth === 0) element.classList.remove('dragging');
  });
  element.addEventListener('drop', (event) => {
    if (!carriesFiles(event)) return;
    event.preventDefault();
    depth = 0;
    element.classList.remove('dragging');
    const files = [...event.dataTransfer.files];
    if (files.length) onFiles(files);
  });
}

/** Opens the file picker and hands the chosen files to `onFiles`. */
export function chooseFiles(onFiles) {
  const input = h('input', { type: 'file', multiple: true, hidden: true });
  input.addEventListener('change', () => {
    const files = [...input.files];
    input.remove();
    if (files.length) onFiles(files);
  });
  input.addEventListener('cancel', () => input.remove());
  document.body.append(input);
  input.click();
}

/**
 * Keeps a scrolling element at its bottom while its content grows, unless the person
 * has scrolled up to read.
 */
export function followBottom(scroller, content) {
  let pinned = true;
  scroller.addEventListener('scroll', () => {
    pinned = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
  });
  new ResizeObserver(() => {
    if (pinned) scroller.scrollTop = scroller.scrollHeight;
  }).observe(content);
  return {
    toBottom() {
      pinned = true;
      scroller.scrollTop = scroller.scrollHeight;
    },
  };
}

/** Shows a message for a few seconds in the corner of the page (errors, mostly). */
export function notify(message) {
  const toast = h('div', { class: 'toast', role: 'alert' }, h('span', {}, message));
  toast.append(h('button', { type: 'button', class: 'icon-button', 'aria-label': 'Dismiss', onclick: () => toast.remove() }, icon('close')));
  document.getElementById('toasts').append(toast);
  setTimeout(() => toast.remove(), 10_000);
}
