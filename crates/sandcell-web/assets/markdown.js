// A small Markdown renderer for the model's answers. It builds DOM nodes directly: text
// only ever becomes text nodes, and links keep only http(s), mailto and session-file
// targets, so nothing the model writes can become markup or script.
//
// Covers what chat answers use: paragraphs, headings, emphasis, strikethrough, inline
// code, fenced code (Python highlighted), lists (nested, ordered), block quotes, tables,
// rules, links, images of session files, hard breaks. Unclosed constructs (an answer
// still streaming) render as far as they go.

import { h, icon } from './dom.js';
import { highlightPython } from './highlight.js';

/**
 * Renders `source` into a fragment. `links.file(path)` turns a path under /mnt/data
 * (`sandbox:/mnt/data/x.csv`, as models write them) into a download link, and
 * `links.image(path, alt)` into an image; without them such paths stay text.
 */
export function renderMarkdown(source, links = {}) {
  const fragment = document.createDocumentFragment();
  renderBlocks(source.replace(/\r\n?/g, '\n').split('\n'), fragment, links);
  return fragment;
}

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$/;
const RULE = /^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$/;
const QUOTE = /^ {0,3}> ?/;
const LIST_ITEM = /^( *)([-*+]|\d{1,9}[.)])(?:([ \t]+)(.*))?$/;
const TABLE_DIVIDER = /^ *\|? *:?-+:? *(\| *:?-+:? *)*\|? *$/;

function startsBlock(line) {
  return FENCE.test(line) || HEADING.test(line) || RULE.test(line) || QUOTE.test(line) || LIST_ITEM.test(line);
}

function startsTable(lines, i) {
  const divider = lines[i + 1] ?? '';
  return lines[i].includes('|') && divider.includes('-') && TABLE_DIVIDER.test(divider);
}

function renderBlocks(lines, parent, links) {
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let match;
    if (!line.trim()) {
      i += 1;
    } else if ((match = line.match(FENCE))) {
      const [, fence, language] = match;
      const body = [];
      i += 1;
      while (i < lines.length && !new RegExp(`^ {0,3}${fence[0]}{${fence.length},}\\s*$`).test(lines[i])) {
        body.push(lines[i]);
        i += 1;
      }
      i += 1;
      parent.append(codeBlock(body.join('\n'), language.toLowerCase()));
    } else if ((match = line.match(HEADING))) {
      parent.append(h(`h${match[1].length}`, {}, renderInline(match[2] ?? '', links)));
      i += 1;
    } else if (RULE.test(line)) {
      parent.append(h('hr'));
      i += 1;
    } else if (QUOTE.test(line)) {
      const body = [];
      while (i < lines.length && QUOTE.test(lines[i])) {
        body.push(lines[i].replace(QUOTE, ''));
        i += 1;
      }
      const quote = h('blockquote');
      renderBlocks(body, quote, links);
      parent.append(quote);
    } else if (LIST_ITEM.test(line)) {
      i = renderList(lines, i, parent, links);
    } else if (startsTable(lines, i)) {
      i = renderTable(lines, i, parent, links);
    } else {
      const body = [line];
      i += 1;
      while (i < lines.length && lines[i].trim() && !startsBlock(lines[i]) && !startsTable(lines, i)) {
        body.push(lines[i]);
        i += 1;
      }
      parent.append(h('p', {}, renderInline(body.join('\n').trim(), links)));
    }
  }
}

function indentOf(line) {
  return line.match(/^ */)[0].length;
}

function renderList(lines, i, parent, links) {
  const first = lines[i].match(LIST_ITEM);
  const ordered = /\d/.test(first[2]);
  const list = h(ordered ? 'ol' : 'ul');
  if (ordered && parseInt(first[2], 10) !== 1) list.setAttribute('start', parseInt(first[2], 10));
  const baseIndent = first[1].length;
  while (i < lines.length) {
    const item = lines[i].match(LIST_ITEM);
    if (!item || item[1].length < baseIndent || item[1].length > baseIndent + 1 || /\d/.test(item[2]) !== ordered) break;
    const gap = item[3] ?? ' ';
    const contentIndent = item[1].length + item[2].length + (gap.length > 4 ? 1 : gap.length);
    const nestedIndent = Math.min(contentIndent, baseIndent + 2);
    const body = [item[4] ?? ''];
    i += 1;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) {
        // A blank line continues the item only if the next text is indented into it.
        let next = i + 1;
        while (next < lines.length && !lines[next].trim()) next += 1;
        if (next < lines.length && indentOf(lines[next]) >= nestedIndent) {
          body.push('');
          i += 1;
          continue;
        }
        break;
      }
      const indent = indentOf(line);
      if (indent >= nestedIndent) body.push(line.slice(Math.min(indent, contentIndent)));
      else if (startsBlock(line)) break;
      else body.push(line.trim()); // a lazy continuation of the item's paragraph
      i += 1;
    }
    const entry = h('li');
    renderBlocks(body, entry, links);
    list.append(entry);
  }
  parent.append(list);
  return i;
}

function tableCells(line) {
  const cells = [];
  let cell = '';
  let code = false;
  const trimmed = line.trim().replace(/^\|/, '');
  for (let i = 0; i < trimmed.length; i += 1) {
    const c = trimmed[i];
    if (c === '\\' && trimmed[i + 1] === '|') {
      cell += '|';
      i += 1;
    } else if (c === '|' && !code) {
      cells.push(cell.trim());
      cell = '';
    } else {
      if (c === '`') code = !code;
      cell += c;
    }
  }
  if (cell.trim()) cells.push(cell.trim());
  return cells;
}

function renderTable(lines, i, parent, links) {
  const header = tableCells(lines[i]);
  const aligns = tableCells(lines[i + 1]).map((cell) => {
    if (cell.startsWith(':') && cell.endsWith(':')) return 'center';
    if (cell.endsWith(':')) return 'right';
    return cell.startsWith(':') ? 'left' : null;
  });
  const row = (cells, tag) =>
    h('tr', {}, header.map((_, column) => h(tag, { class: aligns[column] && `align-${aligns[column]}` }, renderInline(cells[column] ?? '', links))));
  const body = h('tbody');
  i += 2;
  while (i < lines.length && lines[i].trim() && lines[i].includes('|')) {
    body.append(row(tableCells(lines[i]), 'td'));
    i += 1;
  }
  parent.append(h('div', { class: 'table-scroll' }, h('table', {}, h('thead', {}, row(header, 'th')), body)));
  return i;
}

/** A fenced code block with a copy button; Python is highlighted. */
function codeBlock(code, language) {
  const python = ['python', 'py', 'python3', 'ipython'].includes(language);
  const copy = h('button', { type: 'button', class: 'copy-button', 'aria-label': 'Copy code' }, icon('copy'), h('span', {}, 'Copy'));
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(code);
      copy.lastChild.textContent = 'Copied';
    } catch {
      copy.lastChild.textContent = 'Cannot copy';
    }
    setTimeout(() => (copy.lastChild.textContent = 'Copy'), 1500);
  });
  return h(
    'div',
    { class: 'code-block' },
    h('div', { class: 'code-block-head' }, h('span', {}, language || 'code'), copy),
    h('pre', {}, h('code', {}, python ? highlightPython(code) : code)),
  );
}

const PUNCTUATION = '!"#$%&\'()*+,-./:;<=>?@[\\]^_`{|}~';

/** Inline Markdown as an array of nodes. */
function renderInline(text, links = {}) {
  const nodes = [];
  let plain = '';
  const flush = () => {
    if (plain) nodes.push(document.createTextNode(plain));
    plain = '';
  };
  const push = (node) => {
    flush();
    nodes.push(node);
  };
  let i = 0;
  while (i < text.length) {
    const c = text[i];
    if (c === '\\' && text[i + 1] === '\n') {
      push(h('br'));
      i += 2;
    } else if (c === '\\' && PUNCTUATION.includes(text[i + 1] ?? 'x')) {
      plain += text[i + 1];
      i += 2;
    } else if (c === '\n') {
      if (/ {2,}$/.test(plain)) {
        plain = plain.replace(/ +$/, '');
        push(h('br'));
      } else {
        plain += '\n';
      }
      i += 1;
    } else if (c === '`') {
      const run = text.slice(i).match(/^`+/)[0];
      const end = closingBackticks(text, run.length, i + run.length);
      if (end < 0) {
        plain += run;
        i += run.length;
        continue;
      }
      let code = text.slice(i + run.length, end).replace(/\n/g, ' ');
      if (code.length > 2 && code.startsWith(' ') && code.endsWith(' ')) code = code.slice(1, -1);
      push(h('code', {}, code));
      i = end + run.length;
    } else if ((c === '[' || (c === '!' && text[i + 1] === '[')) && parseLink(text, c === '!' ? i + 1 : i)) {
      const link = parseLink(text, c === '!' ? i + 1 : i);
      push(c === '!' ? image(link, links) : anchor(link.target, renderInline(link.label, links), links));
      i = link.end;
    } else if (c === '<' && /^<(https?:\/\/|mailto:)[^\s<>]+>/i.test(text.slice(i))) {
      const target = text.slice(i + 1, text.indexOf('>', i));
      push(anchor(target, [target], links));
      i += target.length + 2;
    } else if ((c === 'h' || c === 'H') && /^https?:\/\/\S/i.test(text.slice(i, i + 9)) && !/\w/.test(text[i - 1] ?? ' ')) {
      const target = bareUrl(text.slice(i));
      push(anchor(target, [target], links));
      i += target.length;
    } else if (c === '*' || c === '_' || c === '~') {
      const run = text.slice(i).match(c === '*' ? /^\*+/ : c === '_' ? /^_+/ : /^~+/)[0];
      const span = emphasis(text, i, run, links);
      if (span) {
        push(span.node);
        i = span.end;
      } else {
        plain += run;
        i += run.length;
      }
    } else {
      plain += c;
      i += 1;
    }
  }
  flush();
  return nodes;
}

function closingBackticks(text, length, from) {
  for (let i = text.indexOf('`', from); i >= 0; i = text.indexOf('`', i)) {
    const run = text.slice(i).match(/^`+/)[0];
    if (run.length === length) return i;
    i += run.length;
  }
  return -1;
}

/** `*em*`, `**strong**`, `***both***`, `_em_`, `__strong__`, `~~struck~~`. */
function emphasis(text, start, run, links) {
  const c = run[0];
  const before = text[start - 1] ?? ' ';
  // Underscores inside words (snake_case names) are not emphasis.
  if (c === '_' && /[\p{L}\p{N}]/u.test(before)) return null;
  const sizes = c === '~' ? (run.length === 2 ? [2] : []) : [3, 2, 1].filter((size) => size <= run.length);
  for (const size of sizes) {
    const delimiter = c.repeat(size);
    const from = start + size;
    if (!text[from] || /\s/.test(text[from])) continue;
    for (let end = text.indexOf(delimiter, from + 1); end > 0; end = text.indexOf(delimiter, end + 1)) {
      if (/\s/.test(text[end - 1])) continue;
      // The closer must be the whole run there (a `**` is not the closer of a `*`)…
      if (text[end + size] === c || text[end - 1] === c) continue;
      // …and an underscore closer must not sit inside a word.
      if (c === '_' && /[\p{L}\p{N}]/u.test(text[end + size] ?? ' ')) continue;
      const inner = renderInline(text.slice(from, end), links);
      let node;
      if (c === '~') node = h('del', {}, inner);
      else if (size === 3) node = h('strong', {}, h('em', {}, inner));
      else node = h(size === 2 ? 'strong' : 'em', {}, inner);
      return { node, end: end + size };
    }
  }
  return null;
}

/** `[label](target "title")` starting at `start` (the `[`): its parts and where it ends. */
function parseLink(text, start) {
  let depth = 0;
  let close = -1;
  for (let i = start; i < text.length; i += 1) {
    if (text[i] === '\\') i += 1;
    else if (text[i] === '[') depth += 1;
    else if (text[i] === ']' && --depth === 0) {
      close = i;
      break;
    }
  }
  if (close < 0 || text[close + 1] !== '(') return null;
  let parens = 0;
  for (let i = close + 2; i < text.length; i += 1) {
    if (text[i] === '\\') i += 1;
    else if (text[i] === '(') parens += 1;
    else if (text[i] === ')' && parens-- === 0) {
      const inside = text.slice(close + 2, i).trim();
      const target = inside.startsWith('<') ? inside.slice(1, inside.indexOf('>')) : inside.split(/\s+/)[0];
      return { label: text.slice(start + 1, close), target, end: i + 1 };
    } else if (text[i] === '\n' && text[i + 1] === '\n') return null;
  }
  return null;
}

/** A bare URL, without the punctuation that ends its sentence. */
function bareUrl(text) {
  let url = text.match(/^[^\s<>]+/)[0];
  for (;;) {
    const last = url.at(-1);
    if ('.,;:!?\'"*_'.includes(last)) url = url.slice(0, -1);
    else if (last === ')' && (url.match(/\(/g) ?? []).length < (url.match(/\)/g) ?? []).length) url = url.slice(0, -1);
    else return url;
  }
}

const SESSION_FILE = /^(?:sandbox:)?\/mnt\/data\/(.+)$/;

function decodePath(path) {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

function anchor(target, label, links) {
  const file = target.match(SESSION_FILE);
  if (file && links.file) return links.file(decodePath(file[1]), label);
  if (/^(https?:|mailto:)/i.test(target)) {
    return h('a', { href: target, target: '_blank', rel: 'noopener noreferrer nofollow' }, label);
  }
  // Any other scheme (javascript:, data:, relative paths) stays plain text.
  return h('span', { class: 'link-text' }, label);
}

function image(link, links) {
  const file = link.target.match(SESSION_FILE);
  if (file && links.image) return links.image(decodePath(file[1]), link.label);
  if (/^data:image\/(png|jpeg|gif|webp);base64,/i.test(link.target)) return h('img', { src: link.target, alt: link.label });
  // Images from elsewhere are not loaded (the page's policy forbids it): link to them.
  return anchor(link.target, [link.label || link.target], links);
}
