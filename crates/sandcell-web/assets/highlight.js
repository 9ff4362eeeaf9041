// Python syntax highlighting by CodeMirror's own parser (Lezer): the code as text nodes and
// spans whose `tok-…` classes (Lezer's `classHighlighter`) the stylesheet colours, the same
// classes the notebook's editor uses. The parser tolerates unfinished code (the model's
// code as it streams in).

import { classHighlighter, highlightCode, pythonParser } from './vendor/codemirror.js';

/** The code as a fragment of text nodes and `<span class="tok-…">` elements. */
export function highlightPython(code) {
  const fragment = document.createDocumentFragment();
  highlightCode(
    code,
    pythonParser.parse(code),
    classHighlighter,
    (text, classes) => {
      if (!classes) return fragment.append(text);
      const span = document.createElement('span');
      span.className = classes;
      span.textContent = text;
      fragment.append(span);
    },
    () => fragment.append('\n'),
  );
  return fragment;
}
