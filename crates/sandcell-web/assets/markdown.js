// Markdown for the model's answers, Markdown outputs and the notebook's Markdown cells:
// markdown-it (CommonMark, plus tables, strikethrough and bare links) with raw HTML off,
// its output cleaned by DOMPurify, then parsed in an inert document where links and
// images are checked before anything reaches the page. Links keep only http(s), mailto
// and session-file targets; images load only from session files and `data:` URLs
// (anything else becomes a link: the page's policy forbids other origins anyway).

import DOMPurify from './vendor/dompurify.js';
import MarkdownIt from './vendor/markdown-it.js';
import { h, icon } from './dom.js';
import { highlightPython } from './highlight.js';

const markdownIt = new MarkdownIt('default', { html: false, linkify: true, typographer: false });
// Table cells align with a class, not a `style` attribute, which the page's policy blocks.
markdownIt.core.ruler.push('align_with_class', (state) => {
  const visit = (tokens) => {
    for (const token of tokens) {
      const style = token.attrGet?.('style');
      const align = style?.match(/^text-align:(left|right|center)$/);
      if (align) {
        token.attrs = token.attrs.filter(([name]) => name !== 'style');
        token.attrJoin('class', `align-${align[1]}`);
      }
      if (token.children) visit(token.children);
    }
  };
  visit(state.tokens);
});

const purifier = DOMPurify();
const PURIFY = {
  RETURN_DOM_FRAGMENT: true,
  USE_PROFILES: { html: true },
  FORBID_TAGS: ['style', 'form', 'input', 'button', 'textarea', 'select'],
  FORBID_ATTR: ['style'],
  // DOMPurify's own list, less the schemes the page never links to, plus `sandbox:` (how
  // models name session files); checkLink and checkImage decide what each becomes.
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto|sandbox):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
};

/** Markdown `source` as HTML text, the way markdown-it writes it (for tests and tools). */
export function markdownToHtml(source) {
  return markdownIt.render(source);
}

/**
 * Renders `source` into a fragment. `links.file(path, label)` turns a path under
 * /mnt/data (`sandbox:/mnt/data/x.csv`, as models write them) into a download link, and
 * `links.image(path, alt)` into an image; without them such paths stay text.
 */
export function renderMarkdown(source, links = {}) {
  // An inert fragment: nothing in it loads or runs until it is checked.
  const fragment = purifier.sanitize(markdownIt.render(source), PURIFY);
  for (const element of fragment.querySelectorAll('a, img')) {
    if (element.localName === 'img') checkImage(element, links);
    else checkLink(element, links);
  }
  for (const code of fragment.querySelectorAll('pre > code')) code.parentElement.replaceWith(codeBlock(code));
  // Adopted, not copied: the copy buttons and session images keep their listeners.
  return document.adoptNode(fragment);
}

const SESSION_FILE = /^(?:sandbox:)?\/mnt\/data\/(.+)$/;
const SAFE_LINK = /^(https?:|mailto:)/i;
const SAFE_IMAGE = /^data:image\/(png|jpeg|gif|webp);base64,/i;

function decodePath(path) {
  try {
    return decodeURIComponent(path);
  } catch {
    return path;
  }
}

function checkLink(anchor, links) {
  const target = anchor.getAttribute('href') ?? '';
  const file = target.match(SESSION_FILE);
  if (file && links.file) return anchor.replaceWith(links.file(decodePath(file[1]), [...anchor.childNodes]));
  if (SAFE_LINK.test(target)) {
    for (const name of [...anchor.getAttributeNames()]) if (name !== 'href') anchor.removeAttribute(name);
    anchor.target = '_blank';
    anchor.rel = 'noopener noreferrer nofollow';
    return;
  }
  // Any other scheme (javascript:, data:, relative paths) stays plain text.
  anchor.replaceWith(h('span', { class: 'link-text' }, [...anchor.childNodes]));
}

function checkImage(image, links) {
  const target = image.getAttribute('src') ?? '';
  const alt = image.getAttribute('alt') ?? '';
  const file = target.match(SESSION_FILE);
  if (file && links.image) return image.replaceWith(links.image(decodePath(file[1]), alt));
  if (SAFE_IMAGE.test(target)) return;
  // Images from elsewhere are not loaded: a link to them (checked like any other) instead.
  const anchor = image.ownerDocument.createElement('a');
  anchor.setAttribute('href', target);
  anchor.textContent = alt || target;
  image.replaceWith(anchor);
  checkLink(anchor, links);
}

/** A fenced or indented code block: highlighted when it is Python, with a copy button. */
function codeBlock(code) {
  const language = (code.className.match(/\blanguage-(\S+)/)?.[1] ?? '').toLowerCase();
  const text = code.textContent.replace(/\n$/, '');
  const python = ['python', 'py', 'python3', 'ipython'].includes(language);
  const copy = h('button', { type: 'button', class: 'copy-button', 'aria-label': 'Copy code' }, icon('copy'), h('span', {}, 'Copy'));
  copy.addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(text);
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
    h('pre', {}, h('code', {}, python ? highlightPython(text) : text)),
  );
}
